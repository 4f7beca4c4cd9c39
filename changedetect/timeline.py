"""Dating changes across the whole stack.

A change is a *step* in a series: one state up to some acquisition, another
from the next one on, and it stays (persistence). Both rules here use every
usable acquisition at once, not consecutive pairs, so one cloudy, hazy or
misregistered date can neither create a change nor move it; unusable
observations (cloud, nodata, failed registration) are skipped, not counted as
"changed" or "unchanged":

* per pixel, :func:`step_change` fits the best two-segment step to the
  multiband series, vectorised over pixels, linear in the number of dates;
* per object, :func:`series_change` fits one or two steps to the object's mean
  series, so a gradual construction (bare ground, pad, roof) is dated at its
  start, ``[last_absent, first_present]``; :func:`date_region` dates a
  detected region with it, or with the date its pixels agree on;
* :func:`masked_mean` is the mean of usable observations, over dates (a
  composite) or over pixels (a region's series).

Which observations are usable (clouds and their shadows, a transient in the
series) is decided in :mod:`changedetect.masks`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .errors import InputError

__all__ = ["PixelSteps", "step_change", "SeriesChange", "series_change", "masked_mean", "date_region"]


@dataclass(frozen=True)
class PixelSteps:
    """Per-pixel best step across all dates (see :func:`step_change`).

    Attributes
    ----------
    first_present, last_absent : ndarray, int16, (rows, cols)
        Date indices around the best step; -1 where no step could be fitted.
    magnitude : ndarray, float32, (rows, cols)
        Size of the step: Euclidean norm over bands of the difference of the
        two segments' means, in noise standard deviations.
    fstat : ndarray, float32, (rows, cols)
        Variance explained by the step relative to what is left within the two
        segments (an F statistic): large for a clean step, small for a series
        that merely fluctuates (seasons, soil moisture, haze).
    n_before, n_after : ndarray, int16, (rows, cols)
        Usable observations on each side.
    before, after : ndarray, float32, (bands, rows, cols)
        Mean of each segment.
    """

    first_present: np.ndarray
    last_absent: np.ndarray
    magnitude: np.ndarray
    fstat: np.ndarray
    n_before: np.ndarray
    n_after: np.ndarray
    before: np.ndarray
    after: np.ndarray


def step_change(images: np.ndarray, usable: np.ndarray, *, scale: np.ndarray,
                min_before: int = 1, min_after: int = 2) -> PixelSteps:
    """Fit the best two-segment step to every pixel's multiband series.

    For each pixel, every split of its usable acquisitions into an earlier and
    a later segment is tried; the one with the smallest within-segment sum of
    squares (bands standardised by ``scale``) wins. Cost is linear in the
    number of dates and vectorised over pixels.

    Parameters
    ----------
    images : ndarray, shape (dates, bands, rows, cols)
        Radiometrically normalised series.
    usable : ndarray of bool, shape (dates, rows, cols)
        Observations to use (clouds, nodata and failed registrations excluded).
    scale : ndarray, shape (bands,)
        Noise standard deviation of one observation, per band.
    min_before, min_after : int
        Fewest usable observations on each side of a step (``min_after`` is
        the persistence rule).

    Returns
    -------
    PixelSteps

    Examples
    --------
    >>> x = np.array([10, 11, 9, 10, 30, 31, 29], np.float32).reshape(7, 1, 1, 1)
    >>> s = step_change(x, np.ones((7, 1, 1), bool), scale=np.array([1.0]))
    >>> int(s.first_present[0, 0]), int(s.last_absent[0, 0]), round(float(s.magnitude[0, 0]), 1)
    (4, 3, 20.0)
    """
    images = np.asarray(images)
    usable = np.asarray(usable, bool)
    if images.ndim != 4 or usable.shape != (images.shape[0],) + images.shape[2:]:
        raise InputError("step_change needs images (dates, bands, rows, cols) and usable "
                         "(dates, rows, cols).")
    n_t, n_b, h, w = images.shape
    u = usable.astype(np.float32)
    n = u.sum(axis=0)
    inv = (1.0 / np.asarray(scale, dtype=np.float32))[:, None, None]
    # centre each pixel's series on its usable mean, in noise units (float32 stays accurate)
    mean = np.einsum("tbij,tij->bij", images, u) / np.maximum(n, 1)
    z = (images - mean) * inv
    z *= u[:, None]
    ss_tot = np.einsum("tbij,tbij->ij", z, z)
    best = np.full((h, w), np.inf, dtype=np.float32)
    k_best = np.full((h, w), -1, dtype=np.int16)
    cs = np.zeros((n_b, h, w), dtype=np.float32)
    cn = np.zeros((h, w), dtype=np.float32)
    total = z.sum(axis=0)
    for k in range(1, n_t):
        cs += z[k - 1]
        cn += u[k - 1]
        na = n - cn
        ok = (cn >= min_before) & (na >= min_after) & (u[k] > 0)
        # with centred data, SSE = ss_tot - |S_b|^2 / n_b - |S_a|^2 / n_a
        sa = total - cs
        explained = (np.einsum("bij,bij->ij", cs, cs) / np.maximum(cn, 1)
                     + np.einsum("bij,bij->ij", sa, sa) / np.maximum(na, 1))
        sse = ss_tot - explained
        better = ok & (sse < best)
        best[better] = sse[better]
        k_best[better] = k
    found = k_best >= 0
    # segment means for the winning split (one pass over dates)
    after_mask = (np.arange(n_t)[:, None, None] >= k_best[None]) & found[None] & usable
    before_mask = (np.arange(n_t)[:, None, None] < k_best[None]) & found[None] & usable
    nb_ = before_mask.sum(axis=0)
    na_ = after_mask.sum(axis=0)
    before = np.einsum("tbij,tij->bij", images, before_mask.astype(np.float32)) / np.maximum(nb_, 1)
    after = np.einsum("tbij,tij->bij", images, after_mask.astype(np.float32)) / np.maximum(na_, 1)
    d = (after - before) * inv
    magnitude = np.sqrt(np.sum(d * d, axis=0)).astype(np.float32)
    dof = np.maximum(n - 2, 1)
    explained = ss_tot - np.where(found, best, ss_tot)
    fstat = (explained * dof / np.maximum(np.where(found, best, 1.0), 1e-6)).astype(np.float32)
    idx = np.arange(n_t)[:, None, None]
    last = np.where(before_mask, idx, -1).max(axis=0).astype(np.int16)
    magnitude[~found] = 0
    fstat[~found] = 0
    return PixelSteps(first_present=np.where(found, k_best, -1).astype(np.int16), last_absent=last,
                      magnitude=magnitude, fstat=fstat, n_before=nb_.astype(np.int16),
                      n_after=na_.astype(np.int16), before=before.astype(np.float32),
                      after=after.astype(np.float32))


@dataclass(frozen=True)
class SeriesChange:
    """The change found in one object's multiband series (see :func:`series_change`).

    Attributes
    ----------
    first_present, last_absent : int
        Date indices: the first acquisition in which anything of the change is
        visible (a cleared pad counts) and the last usable one before it.
    completed : int
        First acquisition of the final, stable state (== ``first_present``
        when the change happened in one step).
    magnitude : float
        Net change from the first to the final state, in noise standard
        deviations (Euclidean over bands).
    fstat : float
        Variance explained by the fitted steps against what is left (F).
    n_before, n_after : int
        Usable observations before ``first_present`` and in the final state.
    steps : int
        1 or 2.
    """

    first_present: int
    last_absent: int
    completed: int
    magnitude: float
    fstat: float
    n_before: int
    n_after: int
    steps: int


def series_change(series: np.ndarray, usable: np.ndarray, *, scale: np.ndarray,
                  min_after: int = 2, alpha_extra: float = 0.05,
                  min_lead: int = 2) -> SeriesChange | None:
    """Fit one or two steps to a short multiband series and describe the net change.

    Construction is often gradual: bare ground, then a cleared pad or walls,
    then the roof. One step fitted to such a series leaves the intermediate
    state as unexplained variance; two steps (three segments) explain it. The
    two-step model is used only when the extra step is significant (an F test
    at ``alpha_extra``). The final segment must hold ``min_after`` usable
    observations (persistence), and the first two together ``min_lead``: with
    3, a difference between two lone dates at the start of a series (winter
    and spring) is not taken for a pad, since nothing tells it from a season.
    Cost is quadratic in the number of dates, for one object.

    Parameters
    ----------
    series : ndarray, shape (dates, bands)
    usable : ndarray of bool, shape (dates,)
    scale : ndarray, shape (bands,)
        Noise standard deviation of one observation, per band.

    Returns
    -------
    SeriesChange or None
        None when there are too few usable dates.

    Examples
    --------
    >>> s = np.array([[0.0], [0.2], [10.0], [10.3], [20.0], [20.1], [19.8]])
    >>> c = series_change(s, np.ones(7, bool), scale=np.array([1.0]))
    >>> c.steps, c.first_present, c.completed, round(c.magnitude)
    (2, 2, 4, 20)
    """
    from scipy.stats import f as f_dist

    idx = np.flatnonzero(np.asarray(usable, bool))
    n = idx.size
    if n < 1 + min_after:
        return None
    z = np.asarray(series, dtype=np.float64)[idx] / np.asarray(scale, dtype=np.float64)
    nb = z.shape[1]
    z = z - z.mean(axis=0)
    c1 = np.vstack([np.zeros(nb), np.cumsum(z, axis=0)])          # prefix sums, (n+1, B)
    c2 = np.concatenate([[0.0], np.cumsum(np.sum(z * z, axis=1))])  # prefix sum of |z|^2

    def sse(i, j):  # segment [i, j) of the usable series, vectorised over i, j arrays
        s = c1[j] - c1[i]
        return (c2[j] - c2[i]) - np.sum(s * s, axis=-1) / np.maximum(j - i, 1)

    ss_tot = float(c2[n])
    k = np.arange(1, n - min_after + 1)
    one = sse(0, k) + sse(k, n)
    b1 = int(np.argmin(one))
    best1 = (float(one[b1]), int(k[b1]))
    best2 = None
    if n >= 2 + min_after:
        k1, k2 = np.meshgrid(np.arange(1, n), np.arange(1, n), indexing="ij")
        ok = (k2 > k1) & (k2 >= min_lead) & (k2 <= n - min_after)
        if ok.any():
            k1, k2 = k1[ok], k2[ok]
            two = sse(0, k1) + sse(k1, k2) + sse(k2, n)
            b2 = int(np.argmin(two))
            best2 = (float(two[b2]), int(k1[b2]), int(k2[b2]))
    steps = 1
    if best2 is not None and n - 3 > 0:
        f_extra = (best1[0] - best2[0]) * (n - 3) / max(best2[0], 1e-9) / nb
        if f_extra > f_dist.isf(alpha_extra, nb, nb * (n - 3)):
            steps = 2
    if steps == 1:
        sse_, ka = best1
        kb = ka
        dof = max(n - 2, 1)
    else:
        sse_, ka, kb = best2
        dof = max(n - 3, 1)
    first_mean = (c1[ka] - c1[0]) / ka
    last_mean = (c1[n] - c1[kb]) / (n - kb)
    step = last_mean - first_mean
    magnitude = math.sqrt(float(np.sum(step * step)))          # not BLAS's norm: CPU-independent
    fstat = float((ss_tot - sse_) * dof / max(sse_, 1e-9) / steps)
    return SeriesChange(first_present=int(idx[ka]), last_absent=int(idx[ka - 1]),
                        completed=int(idx[kb]), magnitude=magnitude, fstat=fstat,
                        n_before=int(ka), n_after=int(n - kb), steps=steps)



def masked_mean(values: np.ndarray, usable: np.ndarray, *, over: str = "dates") -> np.ndarray:
    """Mean of the usable observations: over dates, over pixels, or over both.

    ``values`` is (dates, bands, ...) and ``usable`` (dates, ...) bool; an
    empty mean is 0.

    * ``over="dates"``: per pixel, a composite (bands, ...), float32;
    * ``over="pixels"``: per date, a region's series (dates, bands) of
      (dates, bands, pixels) values, in float64;
    * ``over="all"``: one spectrum (bands,) of (dates, bands, pixels) values.

    Examples
    --------
    >>> v = np.array([[[1.0, 3.0]], [[5.0, 7.0]]], np.float32)       # 2 dates, 1 band, 2 pixels
    >>> u = np.array([[True, False], [True, True]])
    >>> masked_mean(v, u).tolist(), masked_mean(v, u, over="pixels").tolist()
    ([[3.0, 7.0]], [[1.0], [6.0]])
    """
    if over == "dates":
        u = usable.astype(np.float32)
        sub = "tbij,tij->bij" if values.ndim == 4 else "tbp,tp->bp"
        return np.einsum(sub, values, u) / np.maximum(u.sum(axis=0), 1)
    if over == "pixels":
        return (np.einsum("tbp,tp->tb", values, usable.astype(np.float32))
                / np.maximum(usable.sum(axis=1), 1)[:, None])
    if over == "all":
        return np.einsum("tbp,tp->b", values, usable.astype(np.float32)) / max(int(usable.sum()), 1)
    raise InputError(f"masked_mean over={over!r}: choose dates, pixels or all.")


def date_region(images: np.ndarray, usable: np.ndarray, region: np.ndarray, pixel_dates: np.ndarray, *,
                noise: np.ndarray, min_fstat: float, config, ndvi_bands: tuple[int, int] | None = None):
    """The change of one region: the step of its mean series, else the date its pixels agree on.

    The mean series of the region is fitted with one or two steps
    (:func:`series_change`). A change that is mostly one of texture (a roof
    replaced by rubble of the same colour) barely moves the region's mean, but
    every pixel of it stepped on the same date: when the mean's step is weak
    (below ``config.min_magnitude``) or absent, and at least
    ``config.min_date_agreement`` of the region's changed pixels
    (``pixel_dates``: the per-pixel stage's date index, -1 where unchanged)
    share another date (while its mean still moved by a quarter of
    ``min_magnitude``), the region is dated there and its score is the median
    step of its pixels on that date. An intermediate state that is green (NDVI
    above ``config.max_ndvi`` in ``ndvi_bands`` (red, nir): grass or crops in
    season, which a monthly series sees for months) does not date the change:
    one step is fitted instead.

    Parameters
    ----------
    images : ndarray, (dates, bands, rows, cols)
    usable : ndarray of bool, (dates, rows, cols)
    region : ndarray of bool, (rows, cols)
    pixel_dates : ndarray of int, (rows, cols)
    noise : ndarray, (bands,)
    min_fstat : float
    config : changedetect.Config
        ``min_magnitude``, ``persistence``, ``min_lead``, ``min_date_agreement``, ``max_ndvi``.

    Returns
    -------
    (SeriesChange or None, ndarray of bool, str)
        The change (None: no clean step), the dates on which at least half of
        the region is usable, and how it was dated (or why not).
    """
    obj = region
    n_use = usable[:, obj].sum(axis=1)
    use_t = n_use >= 0.5 * obj.sum()
    series = masked_mean(images[:, :, obj], usable[:, obj], over="pixels")
    ch = series_change(series, use_t, scale=noise, min_after=config.persistence, min_lead=config.min_lead)
    if ch is not None and ch.steps == 2 and ndvi_bands is not None:
        # a green intermediate state is grass or crops in season (a monthly series sees a
        # whole spring), not a cleared pad or walls: date the change with one step
        red, nir = ndvi_bands
        mid = use_t & (np.arange(len(use_t)) >= ch.first_present) & (np.arange(len(use_t)) < ch.completed)
        m = series[mid].mean(axis=0)
        if (m[nir] - m[red]) > config.max_ndvi * max(m[nir] + m[red], 1e-6):
            ch = series_change(series, use_t, scale=noise, min_after=config.persistence, alpha_extra=0.0)
    c = pixel_dates[obj]
    c = c[c >= 0]
    if ch is not None and c.size and int(use_t.sum()) == 2:
        # one acquisition on each side: no spread of observations to judge the step against, so
        # the per-pixel detector's decision stands (the pair detector's threshold was set on the
        # pair itself); the noise sigma of a two-date run is the scene's typical difference, and
        # a region had to move by half min_magnitude of those to pass, which real houses do not
        return ch, use_t, "the detector's decision (one acquisition on each side)"
    counts = np.bincount(c, minlength=len(use_t)) if c.size else np.zeros(len(use_t), int)
    k = int(np.argmax(counts))
    agree = counts[k] / max(c.size, 1)
    passed = ch is not None and ch.magnitude >= 0.5 * config.min_magnitude and ch.fstat >= min_fstat
    # a clear step of the mean, or one on the date the pixels agree on, dates the region
    if passed and (ch.magnitude >= config.min_magnitude or agree < config.min_date_agreement
                   or k in (ch.first_present, ch.completed)):
        return ch, use_t, "mean series"
    why = ("too few usable dates" if ch is None else
           f"net change {ch.magnitude:.1f} sigma, F {ch.fstat:.1f}")
    if ch is None or ch.magnitude < 0.25 * config.min_magnitude or c.size == 0:
        return None, use_t, why
    before_t = np.flatnonzero(use_t[:k])
    after_t = np.flatnonzero(use_t[k:]) + k
    if agree < config.min_date_agreement or before_t.size < 1 or after_t.size < config.persistence:
        return None, use_t, f"{why}; pixels agree on a date at {agree:.0%}"
    steps = step_change(images[:, :, obj][:, :, None], usable[:, obj][:, None],
                        scale=noise, min_before=1, min_after=config.persistence)
    mags = steps.magnitude[0][steps.first_present[0] == k]
    fst = steps.fstat[0][steps.first_present[0] == k]
    magnitude = float(np.median(mags)) if mags.size else 0.0
    fstat = float(np.median(fst)) if fst.size else 0.0
    ch = SeriesChange(first_present=k, last_absent=int(before_t[-1]), completed=k,
                      magnitude=magnitude, fstat=fstat, n_before=int(before_t.size),
                      n_after=int(after_t.size), steps=1)
    return ch, use_t, f"pixel dates ({agree:.0%} agree; mean series: {why})"
