"""Dating changes across the whole stack.

Every date is compared with the baseline (the first acquisition), so a change
is a *step* in a series: absent up to some date, present from the next one on.
Two rules use all dates rather than consecutive pairs only:

* per pixel, :func:`first_persistent` finds the first acquisition from which
  the pixel stays changed in every following *usable* acquisition (cloud,
  nodata and failed registration are skipped, not counted either way), with at
  least ``persistence`` usable observations;
* per object, :func:`step_fit` fits the best two-segment step to the share of
  the object's pixels that are changed on each usable date, which dates a
  gradual construction (pad, walls, roof) consistently and cannot be moved by
  one bad date.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import InputError

__all__ = ["first_persistent", "Step", "step_fit"]


def first_persistent(changed: np.ndarray, usable: np.ndarray, *, persistence: int = 2) -> np.ndarray:
    """Index of the first date from which each pixel stays changed.

    Parameters
    ----------
    changed, usable : ndarray of bool, shape (dates, rows, cols)
        Whether each pixel differs from the baseline (date 0) on each date, and
        whether that observation can be used at all.
    persistence : int
        Fewest usable changed observations from the first one on.

    Returns
    -------
    ndarray, int16, shape (rows, cols)
        The date index, or -1 where the pixel never changes persistently.

    Examples
    --------
    >>> c = np.array([0, 0, 1, 0, 1, 1], bool)[:, None, None]
    >>> u = np.array([1, 1, 1, 0, 1, 1], bool)[:, None, None]   # date 3 is cloudy
    >>> int(first_persistent(c, u)[0, 0])
    2
    >>> u[3] = True                                               # not cloudy: it did not persist
    >>> int(first_persistent(c, u)[0, 0])
    4
    """
    changed = np.asarray(changed, bool)
    usable = np.asarray(usable, bool)
    if changed.shape != usable.shape or changed.ndim != 3:
        raise InputError("changed and usable must be (dates, rows, cols) arrays of one shape.")
    hit = changed & usable
    ok = changed | ~usable
    stays = np.logical_and.accumulate(ok[::-1], axis=0)[::-1]
    cand = stays & hit
    cand[0] = False
    n_after = np.cumsum(hit[::-1], axis=0, dtype=np.int16)[::-1]
    cand &= n_after >= persistence
    first = np.argmax(cand, axis=0).astype(np.int16)
    first[~cand.any(axis=0)] = -1
    return first


@dataclass(frozen=True)
class Step:
    """A dated step in one object's series.

    Attributes
    ----------
    first_present : int
        Index of the first date on the changed side.
    last_absent : int
        Index of the last usable date before it.
    before, after : float
        Mean of the series on each side.
    n_before, n_after : int
        Usable observations on each side.
    persistence : float
        Share of the usable dates after the step whose value is above the
        midpoint between ``before`` and ``after``.
    """

    first_present: int
    last_absent: int
    before: float
    after: float
    n_before: int
    n_after: int
    persistence: float


def step_fit(series: np.ndarray, usable: np.ndarray) -> Step | None:
    """Best least-squares two-segment step (rising) in a series over usable dates.

    Parameters
    ----------
    series : ndarray, shape (dates,)
        E.g. the share of an object's pixels that differ from the baseline.
    usable : ndarray of bool, shape (dates,)

    Returns
    -------
    Step or None
        None when fewer than two usable dates or no rising step.

    Examples
    --------
    >>> s = np.array([0.0, 0.1, 0.05, 0.9, 0.3, 0.95, 1.0])
    >>> u = np.array([1, 1, 1, 1, 0, 1, 1], bool)
    >>> st = step_fit(s, u)
    >>> st.first_present, st.last_absent, st.n_after
    (3, 2, 3)
    """
    series = np.asarray(series, dtype=np.float64)
    idx = np.flatnonzero(np.asarray(usable, bool))
    if idx.size < 2:
        return None
    x = series[idx]
    n = x.size
    c1 = np.cumsum(x)
    c2 = np.cumsum(x * x)
    k = np.arange(1, n)                       # split: x[:k] before, x[k:] after
    s_b, q_b = c1[k - 1], c2[k - 1]
    s_a, q_a = c1[-1] - s_b, c2[-1] - q_b
    sse = (q_b - s_b ** 2 / k) + (q_a - s_a ** 2 / (n - k))
    rising = (s_a / (n - k)) > (s_b / k)
    if not rising.any():
        return None
    sse = np.where(rising, sse, np.inf)
    best = int(np.argmin(sse))               # first minimum: earliest equally good split
    kk = best + 1
    before, after = float(x[:kk].mean()), float(x[kk:].mean())
    mid = 0.5 * (before + after)
    return Step(first_present=int(idx[kk]), last_absent=int(idx[kk - 1]), before=before,
                after=after, n_before=kk, n_after=n - kk,
                persistence=float(np.mean(x[kk:] > mid)))
