"""Per-pixel change kernels and thresholds.

Kernels are pure functions on (bands, rows, cols) arrays with an explicit
validity mask (True = valid); they run the same on a whole image, a window or
a Dask block. Scores are float32.

References
----------
Malila, W. A. (1980). Change vector analysis: an approach for detecting forest
changes with Landsat. LARS Symposia, 385.

Otsu, N. (1979). A threshold selection method from gray-level histograms. IEEE
Transactions on Systems, Man, and Cybernetics, 9(1), 62-66.
https://doi.org/10.1109/TSMC.1979.4310076

Kittler, J., & Illingworth, J. (1986). Minimum error thresholding. Pattern
Recognition, 19(1), 41-47. https://doi.org/10.1016/0031-3203(86)90030-0
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import InputError

__all__ = ["difference", "log_ratio", "cva", "change_score", "robust_scale",
           "Threshold", "threshold_otsu", "threshold_kittler", "threshold_chi2", "choose_threshold",
           "change_mask", "shadow_like", "local_correlation"]

_METHODS = ("cva", "difference", "log_ratio")
_THRESHOLDS = ("chi2", "otsu", "kittler")


def _check(before: np.ndarray, after: np.ndarray) -> None:
    if before.shape != after.shape:
        raise InputError(f"before and after must have the same shape, got {before.shape} and {after.shape}.")
    if before.ndim != 3:
        raise InputError(f"Kernels take (bands, rows, cols) arrays, got {before.ndim} dimensions.")


def difference(before: np.ndarray, after: np.ndarray, *, out: np.ndarray | None = None) -> np.ndarray:
    """Band-wise ``after - before`` as float32.

    Examples
    --------
    >>> difference(np.ones((1, 1, 2)), np.full((1, 1, 2), 3.0)).tolist()
    [[[2.0, 2.0]]]
    """
    _check(before, after)
    return np.subtract(after, before, out=out, dtype=np.float32)


def log_ratio(before: np.ndarray, after: np.ndarray, *, eps: float = 1.0) -> np.ndarray:
    """Band-wise ``log((after + eps) / (before + eps))``, float32; invariant to a common gain."""
    _check(before, after)
    a = np.add(after, eps, dtype=np.float32)
    b = np.add(before, eps, dtype=np.float32)
    np.divide(a, b, out=a)
    return np.log(a, out=a)


def robust_scale(diff: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """Per-band robust standard deviation (1.4826 × MAD) of a difference image."""
    flat = diff.reshape(diff.shape[0], -1)
    if valid is not None:
        flat = flat[:, np.asarray(valid).ravel()]
    if flat.shape[1] == 0:
        return np.ones(diff.shape[0], dtype=np.float32)
    med = np.median(flat, axis=1, keepdims=True)
    mad = 1.4826 * np.median(np.abs(flat - med), axis=1)
    return np.maximum(mad, 1e-6).astype(np.float32)


def cva(before: np.ndarray, after: np.ndarray, *, scale: np.ndarray | None = None,
        valid: np.ndarray | None = None) -> np.ndarray:
    """Change vector analysis magnitude, standardised per band.

    ``sqrt(mean_b ((after_b - before_b) / scale_b) ** 2)``: with ``scale`` the
    no-change spread of each band's difference, a no-change pixel scores
    about 1 whatever the band count; 0 where invalid.

    Parameters
    ----------
    before, after : ndarray, shape (bands, rows, cols)
    scale : ndarray, shape (bands,), optional
        Per-band no-change standard deviation; :func:`robust_scale` of the
        difference when omitted.
    valid : ndarray of bool, shape (rows, cols), optional

    Returns
    -------
    ndarray, float32, shape (rows, cols)

    Examples
    --------
    >>> b = np.zeros((2, 1, 1)); a = np.array([[[3.0]], [[4.0]]])
    >>> round(float(cva(b, a, scale=np.array([1.0, 1.0]))[0, 0]), 4)   # sqrt((9 + 16) / 2)
    3.5355
    """
    _check(before, after)
    d = difference(before, after)
    if scale is None:
        scale = robust_scale(d, valid)
    d /= np.asarray(scale, dtype=np.float32)[:, None, None]
    np.square(d, out=d)
    out = d.mean(axis=0)
    np.sqrt(out, out=out)
    if valid is not None:
        out[~np.asarray(valid)] = 0
    return out


def change_score(before: np.ndarray, after: np.ndarray, *, method: str = "cva",
                 scale: np.ndarray | None = None, valid: np.ndarray | None = None) -> np.ndarray:
    """Per-pixel change score by ``method`` (``cva``, ``difference``, ``log_ratio``).

    ``difference`` and ``log_ratio`` return the standardised magnitude across
    bands like ``cva`` but on their own transform of the data.
    """
    if method not in _METHODS:
        raise InputError(f"Unknown change method '{method}'; choose one of {', '.join(_METHODS)}.")
    if method == "log_ratio":
        lr = log_ratio(before, after)
        s = robust_scale(lr, valid) if scale is None else scale
        return cva(np.zeros_like(lr), lr, scale=s, valid=valid)
    return cva(before, after, scale=scale, valid=valid)


def shadow_like(before: np.ndarray, after: np.ndarray, *, dark: float, angle_deg: float = 6.0,
                ratio: tuple[float, float] = (0.2, 0.8)) -> np.ndarray:
    """Pixels whose change is a darkening or brightening with the same colour.

    A shadow (of a building moving with the sun, or of a cloud) scales all
    bands by about the same factor: the spectral angle between ``before`` and
    ``after`` stays small while brightness changes by a factor in ``ratio``
    (or its inverse), and the darker of the two states is below ``dark``.
    Such changes are illumination, not construction.
    """
    _check(before, after)
    before = np.asarray(before, dtype=np.float32)
    after = np.asarray(after, dtype=np.float32)
    bb = before.mean(axis=0)
    ba = after.mean(axis=0)
    dot = np.einsum("bij,bij->ij", before, after)
    na = np.sqrt(np.einsum("bij,bij->ij", after, after))
    nb = np.sqrt(np.einsum("bij,bij->ij", before, before))
    cosang = dot / np.maximum(na * nb, 1e-6)
    same_colour = cosang >= np.cos(np.radians(angle_deg))
    r = ba / np.maximum(bb, 1e-6)
    lo, hi = ratio
    scaled = ((r >= lo) & (r <= hi)) | ((r >= 1 / hi) & (r <= 1 / lo))
    return same_colour & scaled & (np.minimum(ba, bb) < dark)


def local_correlation(a: np.ndarray, b: np.ndarray, *, size: int = 5) -> np.ndarray:
    """Local Pearson correlation of two images' band means in ``size`` × ``size`` windows.

    Illumination changes (a shadow moving with the sun) darken the ground but
    keep its texture, so the correlation stays high; a new roof replaces the
    texture and the correlation drops. Returns float32 in [-1, 1] (0 where
    either window is flat).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> ground = rng.normal(1000, 50, (1, 32, 32))
    >>> float(local_correlation(ground, 0.4 * ground)[16, 16]) > 0.99
    True
    """
    from scipy.ndimage import uniform_filter

    x = np.asarray(a, dtype=np.float32)
    y = np.asarray(b, dtype=np.float32)
    if x.ndim == 3:
        x = x.mean(axis=0)
        y = y.mean(axis=0)
    mx = uniform_filter(x, size, mode="nearest")
    my = uniform_filter(y, size, mode="nearest")
    cxy = uniform_filter(x * y, size, mode="nearest") - mx * my
    vx = np.maximum(uniform_filter(x * x, size, mode="nearest") - mx * mx, 0)
    vy = np.maximum(uniform_filter(y * y, size, mode="nearest") - my * my, 0)
    den = np.sqrt(vx * vy)
    out = np.where(den > 1e-6, cxy / np.maximum(den, 1e-6), 0.0).astype(np.float32)
    return np.clip(out, -1, 1, out=out)


@dataclass(frozen=True)
class Threshold:
    """A threshold on a change score and how it was chosen."""

    value: float
    method: str

    def to_dict(self) -> dict:
        return {"value": round(float(self.value), 6), "method": self.method}


def _hist(values: np.ndarray, bins: int):
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    if v.size < 2 or v.min() == v.max():
        raise InputError("Cannot choose a threshold: the scores are constant or empty.")
    hist, edges = np.histogram(v, bins=bins, range=(v.min(), np.quantile(v, 0.9999)))
    return hist.astype(np.float64), 0.5 * (edges[1:] + edges[:-1])


def threshold_otsu(values: np.ndarray, *, bins: int = 512) -> float:
    """Otsu's threshold (maximum between-class variance) of a sample of scores."""
    hist, centres = _hist(values, bins)
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centres) / np.maximum(w0, 1e-12)
    m1 = (np.sum(hist * centres) - np.cumsum(hist * centres)) / np.maximum(w1, 1e-12)
    between = w0 * w1 * (m0 - m1) ** 2
    return float(centres[int(np.argmax(between[:-1]))])


def threshold_kittler(values: np.ndarray, *, bins: int = 512) -> float:
    """Kittler–Illingworth minimum-error threshold (two Gaussians of unequal variance)."""
    hist, c = _hist(values, bins)
    p = hist / hist.sum()
    w0 = np.cumsum(p)
    w1 = 1 - w0
    m0 = np.cumsum(p * c) / np.maximum(w0, 1e-12)
    m1 = (np.sum(p * c) - np.cumsum(p * c)) / np.maximum(w1, 1e-12)
    v0 = np.cumsum(p * c ** 2) / np.maximum(w0, 1e-12) - m0 ** 2
    v1 = (np.sum(p * c ** 2) - np.cumsum(p * c ** 2)) / np.maximum(w1, 1e-12) - m1 ** 2
    ok = (w0 > 1e-6) & (w1 > 1e-6) & (v0 > 1e-12) & (v1 > 1e-12)
    j = np.full(c.shape, np.inf)
    j[ok] = 1 + w0[ok] * np.log(v0[ok]) + w1[ok] * np.log(v1[ok]) - 2 * (
        w0[ok] * np.log(w0[ok]) + w1[ok] * np.log(w1[ok]))
    return float(c[int(np.argmin(j))])


def threshold_chi2(n_bands: int, *, alpha: float = 1e-3) -> float:
    """Score above which a pixel is changed at significance ``alpha``.

    Under no change a standardised :func:`cva` score ``s`` satisfies
    ``n_bands * s**2 ~ chi2(n_bands)``.

    Examples
    --------
    >>> round(threshold_chi2(1, alpha=0.05), 3)
    1.96
    """
    from scipy.stats import chi2

    return float(np.sqrt(chi2.isf(alpha, n_bands) / n_bands))


def choose_threshold(values: np.ndarray, *, method: str = "chi2", n_bands: int = 1,
                     alpha: float = 1e-3) -> Threshold:
    """Pick a threshold on standardised scores by ``method`` (chi2, otsu or kittler)."""
    if method not in _THRESHOLDS:
        raise InputError(f"Unknown threshold '{method}'; choose one of {', '.join(_THRESHOLDS)}.")
    if method == "chi2":
        return Threshold(threshold_chi2(n_bands, alpha=alpha), f"chi2(alpha={alpha:g})")
    if method == "otsu":
        return Threshold(threshold_otsu(values), "otsu")
    return Threshold(threshold_kittler(values), "kittler")


def change_mask(score: np.ndarray, *, threshold: float, valid: np.ndarray | None = None) -> np.ndarray:
    """``score > threshold`` where valid."""
    m = np.asarray(score) > threshold
    if valid is not None:
        m &= np.asarray(valid)
    return m
