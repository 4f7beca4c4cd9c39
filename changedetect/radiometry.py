"""Relative radiometric normalisation of one scene to another.

Per band, a gain and an offset are fitted by orthogonal (total least squares)
regression on pseudo-invariant pixels: pixels whose standardised multiband
difference is small, selected iteratively (a chi-square cut, as the no-change
probability of IR-MAD is used in Canty & Nielsen 2008). Orthogonal regression
is symmetric in the two images, unlike ordinary least squares, so noise in the
target does not bias the gain towards zero.

References
----------
Canty, M. J., & Nielsen, A. A. (2008). Automatic radiometric normalization of
multitemporal satellite imagery with the iteratively re-weighted MAD
transformation. Remote Sensing of Environment, 112(3), 1025-1036.
https://doi.org/10.1016/j.rse.2007.07.013
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import EmptyDataError, InputError

__all__ = ["Normalization", "fit_normalization", "apply_normalization", "orthogonal_regression"]


@dataclass(frozen=True)
class Normalization:
    """Per-band linear map ``gain * target + offset`` onto the reference's radiometry.

    Attributes
    ----------
    gain, offset : ndarray, shape (bands,)
    n_invariant : int
        Pseudo-invariant pixels used in the final fit.
    rmse : ndarray, shape (bands,)
        Orthogonal residual on those pixels, in reference units.
    """

    gain: np.ndarray
    offset: np.ndarray
    n_invariant: int
    rmse: np.ndarray

    def to_dict(self) -> dict:
        """JSON-ready record."""
        return {"gain": [round(float(g), 6) for g in self.gain],
                "offset": [round(float(o), 4) for o in self.offset],
                "n_invariant": int(self.n_invariant),
                "rmse": [round(float(r), 4) for r in self.rmse]}


def orthogonal_regression(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Total least squares line ``y = slope * x + intercept``.

    Examples
    --------
    >>> x = np.array([0.0, 1.0, 2.0, 3.0])
    >>> orthogonal_regression(x, 2 * x + 1)
    (2.0, 1.0)
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    mx, my = x.mean(), y.mean()
    sxx = np.mean((x - mx) ** 2)
    syy = np.mean((y - my) ** 2)
    sxy = np.mean((x - mx) * (y - my))
    if abs(sxy) < 1e-12 * max(sxx, syy, 1e-300):
        slope = 1.0
    else:
        slope = (syy - sxx + np.sqrt((syy - sxx) ** 2 + 4 * sxy ** 2)) / (2 * sxy)
    return float(round(slope, 12)), float(round(my - slope * mx, 9))


def fit_normalization(reference: np.ndarray, target: np.ndarray, *,
                      valid: np.ndarray | None = None, iterations: int = 4,
                      keep: float = 0.5, max_pixels: int = 250_000) -> Normalization:
    """Fit per-band gain and offset that bring ``target`` to ``reference``'s radiometry.

    Parameters
    ----------
    reference, target : ndarray, shape (bands, rows, cols)
        Co-registered images.
    valid : ndarray of bool, shape (rows, cols), optional
        Pixels valid in both images.
    iterations : int
        Rounds of invariant-pixel selection.
    keep : float
        Share of the valid pixels kept as invariant in each round (those with
        the smallest standardised difference).
    max_pixels : int
        Fit on at most this many valid pixels, taken at a regular stride
        (deterministic); more adds time, not accuracy.

    Returns
    -------
    Normalization

    Raises
    ------
    EmptyDataError
        Fewer than 100 valid pixels.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> ref = rng.uniform(100, 1000, (2, 50, 50))
    >>> tgt = (ref - 20) / 1.5
    >>> n = fit_normalization(ref, tgt)
    >>> np.round(n.gain, 3).tolist(), np.round(n.offset, 2).tolist()
    ([1.5, 1.5], [20.0, 20.0])
    """
    reference = np.asarray(reference)
    target = np.asarray(target)
    if reference.shape != target.shape or reference.ndim != 3:
        raise InputError(f"fit_normalization needs two (bands, rows, cols) arrays of one shape, got "
                         f"{reference.shape} and {target.shape}.")
    if valid is None:
        valid = np.ones(reference.shape[1:], bool)
    idx = np.flatnonzero(valid.ravel())
    if idx.size > max_pixels:
        idx = idx[:: -(-idx.size // max_pixels)]
    r = reference.reshape(reference.shape[0], -1)[:, idx].astype(np.float64)
    t = target.reshape(target.shape[0], -1)[:, idx].astype(np.float64)
    if r.shape[1] < 100:
        raise EmptyDataError("Fewer than 100 pixels are valid in both images: cannot normalise.")
    nb = r.shape[0]
    sel = _consensus(r, t)
    gain, offset = np.ones(nb), np.zeros(nb)
    for _ in range(iterations):
        for b in range(nb):
            gain[b], offset[b] = orthogonal_regression(t[b, sel], r[b, sel])
        diff = gain[:, None] * t + offset[:, None] - r
        med = np.median(diff[:, sel], axis=1, keepdims=True)
        mad = 1.4826 * np.median(np.abs(diff[:, sel] - med), axis=1, keepdims=True)
        z2 = np.sum(((diff - med) / np.maximum(mad, 1e-9)) ** 2, axis=0)
        sel = z2 <= np.quantile(z2, keep)
    for b in range(nb):
        gain[b], offset[b] = orthogonal_regression(t[b, sel], r[b, sel])
    res = (gain[:, None] * t[:, sel] + offset[:, None] - r[:, sel]) / np.sqrt(1 + gain[:, None] ** 2)
    return Normalization(gain=gain, offset=offset, n_invariant=int(sel.sum()),
                         rmse=np.sqrt(np.mean(res ** 2, axis=1)))


def _consensus(r: np.ndarray, t: np.ndarray, *, trials: int = 300, n_sample: int = 20_000,
               seed: int = 0) -> np.ndarray:
    """Initial invariant set by RANSAC, so clouds, haze banks or a changed quarter of the
    scene cannot drag the first fit (and the selection that follows it) astray.

    A model is the per-band line through two random pixels; its support is the
    number of pixels within a tolerance in every band at once.
    """
    rng = np.random.default_rng(seed)
    n = r.shape[1]
    sub = np.arange(0, n, max(1, n // n_sample))
    rs, ts = r[:, sub], t[:, sub]
    iqr_r = np.subtract(*np.percentile(rs, [75, 25], axis=1))
    iqr_t = np.subtract(*np.percentile(ts, [75, 25], axis=1))
    tol = (0.1 * np.maximum(iqr_r, 1e-6))[:, None]
    best, best_n = None, -1
    for _ in range(trials):
        i, j = rng.choice(sub.size, 2, replace=False)
        dt = ts[:, i] - ts[:, j]
        if np.any(np.abs(dt) < 0.5 * iqr_t):
            continue
        gain = (rs[:, i] - rs[:, j]) / dt
        if np.any((gain < 0.25) | (gain > 4.0)):
            continue
        offset = rs[:, i] - gain * ts[:, i]
        inl = np.all(np.abs(gain[:, None] * ts + offset[:, None] - rs) < tol, axis=0)
        if inl.sum() > best_n:
            best, best_n = (gain, offset), int(inl.sum())
    if best is None or best_n < 20:
        return np.ones(n, bool)
    gain, offset = best
    return np.all(np.abs(gain[:, None] * t + offset[:, None] - r) < tol, axis=0)


def apply_normalization(image: np.ndarray, norm: Normalization, *,
                        out: np.ndarray | None = None) -> np.ndarray:
    """``gain * image + offset`` per band, float32, in place when ``out is image``."""
    if out is None:
        out = np.empty(image.shape, dtype=np.float32)
    g = norm.gain.astype(np.float32)[:, None, None]
    o = norm.offset.astype(np.float32)[:, None, None]
    np.multiply(image, g, out=out)
    np.add(out, o, out=out)
    return out
