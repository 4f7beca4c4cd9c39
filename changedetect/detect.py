"""Per-pixel change kernels of a pair and their thresholds.

Kernels are pure functions on ``(bands, rows, cols)`` arrays (any real dtype,
any band count) with an optional validity mask ``valid`` of shape
``(rows, cols)`` (True = valid in both images). They run the same on a whole
image, a window or a Dask block, return float32, set invalid pixels to 0 (no
change) and never let an invalid pixel influence a valid one. The cheap kernels
work through the image in row chunks that stay in the CPU cache and write into
``out=`` when it is given, so they run at about the speed of a memory copy
(``benchmarks/kernels.py``).

=====================  ==========================================  ===========================
kernel                 what it measures                            invariant to
=====================  ==========================================  ===========================
:func:`difference`     ``after - before`` per band                 a common offset
:func:`ratio`          ``(after + eps) / (before + eps)``          a common gain (eps = 0)
:func:`log_ratio`      ``log((after + eps) / (before + eps))``     a common gain (eps = 0)
:func:`cva`            magnitude (and direction) of the            a common offset; a common
                       standardised change vector                  gain with the default scale
:func:`irmad`          IR-MAD chi-square and no-change p-value     any per-band gain and offset
                                                                   of either image
:func:`pca_kmeans`     PCA of difference neighbourhoods, k-means   as :func:`cva`
:func:`structural`     loss of local gradient correlation          a positive gain and offset
                                                                   of either image
=====================  ==========================================  ===========================

Thresholds: :func:`threshold_otsu`, :func:`threshold_kittler`,
:func:`threshold_gmm` (data-driven) and :func:`threshold_chi2` (significance);
:func:`choose_threshold` returns the value with the rule that chose it, for the
run record.

References
----------
Singh, A. (1989). Digital change detection techniques using remotely-sensed
data. International Journal of Remote Sensing, 10(6), 989-1003.
https://doi.org/10.1080/01431168908903939

Malila, W. A. (1980). Change vector analysis: an approach for detecting forest
changes with Landsat. LARS Symposia, 385.

Bovolo, F., Marchesi, S., & Bruzzone, L. (2012). A framework for automatic and
unsupervised detection of multiple changes in multitemporal images. IEEE
Transactions on Geoscience and Remote Sensing, 50(6), 2196-2212.
https://doi.org/10.1109/TGRS.2011.2171493

Nielsen, A. A. (2007). The regularized iteratively reweighted MAD method for
change detection in multi- and hyperspectral data. IEEE Transactions on Image
Processing, 16(2), 463-478. https://doi.org/10.1109/TIP.2006.888195

Celik, T. (2009). Unsupervised change detection in satellite images using
principal component analysis and k-means clustering. IEEE Geoscience and
Remote Sensing Letters, 6(4), 772-776. https://doi.org/10.1109/LGRS.2009.2025059

Wang, Z., Bovik, A. C., Sheikh, H. R., & Simoncelli, E. P. (2004). Image
quality assessment: from error visibility to structural similarity. IEEE
Transactions on Image Processing, 13(4), 600-612.
https://doi.org/10.1109/TIP.2003.819861

Otsu, N. (1979). A threshold selection method from gray-level histograms. IEEE
Transactions on Systems, Man, and Cybernetics, 9(1), 62-66.
https://doi.org/10.1109/TSMC.1979.4310076

Kittler, J., & Illingworth, J. (1986). Minimum error thresholding. Pattern
Recognition, 19(1), 41-47. https://doi.org/10.1016/0031-3203(86)90030-0

Bruzzone, L., & Prieto, D. F. (2000). Automatic analysis of the difference image
for unsupervised change detection. IEEE Transactions on Geoscience and Remote
Sensing, 38(3), 1171-1182. https://doi.org/10.1109/36.843009

Bazi, Y., Bruzzone, L., & Melgani, F. (2005). An unsupervised approach based on
the generalized Gaussian model to automatic change detection in multitemporal
SAR images. IEEE Transactions on Geoscience and Remote Sensing, 43(4), 874-887.
https://doi.org/10.1109/TGRS.2004.842441
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from . import portable
from .arrays import check_pair, out_array, run_rows, sample_pixels, take_pixels, zero_invalid
from .errors import InputError
from .mad import IRMAD, fit_irmad

__all__ = ["difference", "ratio", "log_ratio", "cva", "CVA", "robust_scale",
           "irmad", "pca_kmeans", "structural", "change_score", "METHODS", "THRESHOLDS",
           "Threshold", "threshold_otsu", "threshold_otsu_exact", "threshold_kittler", "threshold_gmm",
           "threshold_chi2",
           "choose_threshold", "change_mask"]

#: Change kernels of :func:`change_score`.
METHODS = ("cva", "difference", "log_ratio", "irmad", "pca_kmeans", "structural")
#: Threshold rules of :func:`choose_threshold`.
THRESHOLDS = ("chi2", "otsu", "kittler", "gmm")

# pixels per chunk of the streaming kernels: a (bands, chunk) float32 temporary stays in
# a 1 MiB L2 cache with few enough ufunc calls (measured best in benchmarks/kernels.py)
_CHUNK_PIXELS = 1 << 16


# --------------------------------------------------------------------------- simple kernels


def difference(before: np.ndarray, after: np.ndarray, *, valid: np.ndarray | None = None,
               out: np.ndarray | None = None, threads: int | None = None) -> np.ndarray:
    """Band-wise ``after - before`` as float32 (0 where invalid).

    Antisymmetric and invariant to an offset common to both images.
    Image differencing as reviewed by Singh (1989).

    Examples
    --------
    >>> difference(np.ones((1, 1, 2)), np.full((1, 1, 2), 3.0)).tolist()
    [[[2.0, 2.0]]]
    """
    check_pair(before, after, valid)
    out = out_array(out, before.shape)
    b, rows, cols = before.shape

    def work(sl, buf):
        np.subtract(after[:, sl], before[:, sl], out=out[:, sl], dtype=np.float32, casting="unsafe")

    run_rows(rows, cols * b, work, lambda step: None, threads, chunk_pixels=1 << 18)
    return zero_invalid(out, valid)


def ratio(before: np.ndarray, after: np.ndarray, *, eps: float = 1.0,
          valid: np.ndarray | None = None, out: np.ndarray | None = None,
          threads: int | None = None) -> np.ndarray:
    """Band-wise ``(after + eps) / (before + eps)`` as float32 (1 where invalid).

    Image ratioing (Singh 1989): a multiplicative change (illumination, a
    gain) is a constant ratio. :func:`log_ratio` makes it symmetric. Meant
    for non-negative radiometry: where ``before + eps`` is 0 the ratio is
    infinite (or NaN for 0 / 0), where it is negative so is the ratio.

    Examples
    --------
    >>> ratio(np.full((1, 1, 2), 3.0), np.full((1, 1, 2), 7.0)).tolist()
    [[[2.0, 2.0]]]
    """
    check_pair(before, after, valid)
    out = out_array(out, before.shape)
    b, rows, cols = before.shape
    e = np.float32(eps)

    def work(sl, buf):
        o = out[:, sl]
        t = buf[0][:, : sl.stop - sl.start]
        np.add(before[:, sl], e, out=t, dtype=np.float32, casting="unsafe")
        np.add(after[:, sl], e, out=o, dtype=np.float32, casting="unsafe")
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
            np.divide(o, t, out=o)

    run_rows(rows, cols * b, work, lambda step: (np.empty((b, step, cols), np.float32),), threads,
              chunk_pixels=1 << 18)
    if valid is not None:
        inv = ~np.asarray(valid, bool)
        if inv.any():
            out[:, inv] = 1
    return out


_LOG_MAX = np.float32(math.log(float(np.finfo(np.float32).max)))


def log_ratio(before: np.ndarray, after: np.ndarray, *, eps: float = 1.0,
              valid: np.ndarray | None = None, out: np.ndarray | None = None,
              threads: int | None = None) -> np.ndarray:
    """Band-wise ``log((after + eps) / (before + eps))`` as float32 (0 where invalid).

    The ratio is the classic operator for multiplicative differences (SAR,
    illumination): with ``eps = 0`` it is invariant to a gain common to both
    images and antisymmetric. ``eps`` keeps zero-valued pixels finite; choose it
    small against the data's values (1 DN for integer imagery). Values at or
    below ``-eps`` are clipped to the smallest positive float.
    The log-ratio operator of SAR change detection (Bazi, Bruzzone & Melgani
    2005) turns multiplicative changes into additive, symmetric ones.

    Row chunks (cache-sized, shared among ``threads``, default every core)
    go through add, divide and NumPy's ``log`` in place. An earlier version
    replaced ``log`` by a hand-written range reduction and series: on one
    AVX-512 machine it was 1.8x slower than the plain NumPy expression, and
    this version is 2x faster than it on both the AVX2 and the AVX-512 path
    (``benchmarks/kernels.py`` prints both). NumPy's AVX2 and AVX-512 loops give the same bits;
    its baseline loop (CPUs without AVX2) may differ in the last bit. This
    kernel is not used by :func:`~changedetect.pipeline.detect_changes`.

    Examples
    --------
    >>> float(log_ratio(np.full((1, 1, 1), 9.0), np.full((1, 1, 1), 99.0), eps=1.0)[0, 0, 0])
    2.302585...
    """
    check_pair(before, after, valid)
    out = out_array(out, before.shape)
    b, rows, cols = before.shape
    tiny = np.float32(np.finfo(np.float32).tiny)
    e = np.float32(eps)

    def work(sl, buf):
        o = out[:, sl]
        t = buf[0][:, :sl.stop - sl.start]
        np.add(after[:, sl], e, out=o, dtype=np.float32, casting="unsafe")
        np.add(before[:, sl], e, out=t, dtype=np.float32, casting="unsafe")
        np.maximum(o, tiny, out=o)
        np.maximum(t, tiny, out=t)
        with np.errstate(over="ignore"):        # huge / tiny -> inf -> log = inf, clipped below
            np.divide(o, t, out=o)
        np.log(o, out=o)
        np.minimum(o, _LOG_MAX, out=o)          # as the float32 ratio can reach: ~88.7

    def buffers(step):
        return (np.empty((b, step, cols), np.float32),)

    run_rows(rows, cols * b, work, buffers, threads)
    return zero_invalid(out, valid)


def robust_scale(diff: np.ndarray, valid: np.ndarray | None = None, *,
                 max_pixels: int = 1 << 20) -> np.ndarray:
    """Per-band robust standard deviation (1.4826 × MAD) of a difference image.

    Computed on at most ``max_pixels`` valid pixels taken at a regular stride.

    Examples
    --------
    >>> d = np.array([[[-1.0, 0.0, 1.0, 1000.0, -1.0, 0.0, 1.0]]])
    >>> [round(float(s), 3) for s in robust_scale(d)]      # the outlier does not count
    [1.483]
    """
    if diff.ndim == 2:
        diff = diff[None]
    idx = sample_pixels(valid, diff.shape[1:], max_pixels)
    if idx.size == 0:
        return np.ones(diff.shape[0], dtype=np.float32)
    flat = take_pixels(diff, idx)
    med = np.median(flat, axis=1, keepdims=True)
    mad = 1.4826 * np.median(np.abs(flat - med), axis=1)
    return np.maximum(mad, 1e-6).astype(np.float32)


@dataclass(frozen=True)
class CVA:
    """Change vector analysis of a pair (see :func:`cva`).

    Attributes
    ----------
    magnitude : ndarray, float32, (rows, cols)
        ``sqrt(mean_b (d_b / scale_b) ** 2)``: about 1 for a no-change pixel.
    direction : ndarray, float32, (rows, cols) or None
        Angle in radians (0..pi) between the standardised change vector and
        the all-bands-equal diagonal: 0 is a uniform brightening (cloud, new
        bright roof on dark ground), pi a uniform darkening (shadow), pi/2 a
        change of colour.
    scale : ndarray, (bands,)
        The per-band no-change standard deviation used.
    """

    magnitude: np.ndarray
    direction: np.ndarray | None
    scale: np.ndarray


def cva(before: np.ndarray, after: np.ndarray, *, scale: np.ndarray | None = None,
        valid: np.ndarray | None = None, direction: bool = False,
        out: np.ndarray | None = None, threads: int | None = None) -> np.ndarray | CVA:
    """Change vector analysis: magnitude (and direction) of the standardised change.

    With ``d_b = (after_b - before_b) / scale_b`` the magnitude is
    ``sqrt(mean_b d_b ** 2)``: with ``scale`` the no-change spread of each band,
    a no-change pixel scores about 1 whatever the band count, and
    ``n_bands * magnitude ** 2`` follows chi2(n_bands) (see
    :func:`threshold_chi2`). The direction is the compressed-CVA angle of
    Bovolo et al. (2012) against the all-bands diagonal, which tells a uniform
    darkening (shadow) from a change of material.

    Parameters
    ----------
    before, after : ndarray, shape (bands, rows, cols)
    scale : ndarray, shape (bands,), optional
        Per-band no-change standard deviation; :func:`robust_scale` of the
        difference (on a regular sample of valid pixels) when omitted, which
        makes the magnitude invariant to a gain common to both images.
    valid : ndarray of bool, shape (rows, cols), optional
    direction : bool
        Also return the direction (a :class:`CVA` record).
    out : ndarray, float32, shape (rows, cols), optional
        Where to write the magnitude.
    threads : int, optional
        Workers sharing the row chunks (default: every core).

    Returns
    -------
    ndarray (magnitude) or CVA

    Examples
    --------
    >>> b = np.zeros((2, 1, 1)); a = np.array([[[3.0]], [[4.0]]])
    >>> round(float(cva(b, a, scale=np.array([1.0, 1.0]))[0, 0]), 4)   # sqrt((9 + 16) / 2)
    3.5355
    >>> c = cva(b, -a, scale=np.array([4.0, 4.0 * 4 / 3]), direction=True)
    >>> round(float(c.direction[0, 0]), 4)                               # uniform darkening
    3.1416
    """
    check_pair(before, after, valid)
    nb, rows, cols = before.shape
    if scale is None:
        idx = sample_pixels(valid, (rows, cols), 1 << 20)
        d = take_pixels(after, idx) - take_pixels(before, idx)
        scale = robust_scale(d[:, None, :])
    inv = (1.0 / np.asarray(scale, dtype=np.float64)).astype(np.float32)
    if inv.shape != (nb,):
        raise InputError(f"scale must have one value per band ({nb}), got shape {inv.shape}.")
    mag = out_array(out, (rows, cols))
    dirn = np.empty((rows, cols), np.float32) if direction else None
    inv2 = (inv * inv / nb).astype(np.float32)      # mean of squares as one matrix product

    def work(sl, buf):
        n = sl.stop - sl.start
        d = buf[0][:, :n]
        np.subtract(after[:, sl], before[:, sl], out=d, dtype=np.float32, casting="unsafe")
        flat = d.reshape(nb, -1)
        m = mag[sl]
        if direction:
            # cos(angle) = sum_b d_b / (sqrt(nb) * |d|), d standardised
            s = dirn[sl]
            portable.combine_bands(inv[None], flat, out=s.reshape(1, -1))
        np.square(d, out=d)
        portable.combine_bands(inv2[None], flat, out=m.reshape(1, -1))
        np.sqrt(m, out=m)
        if direction:
            t = buf[1][:n]
            np.multiply(m, np.float32(nb), out=t)          # sqrt(nb) * |d| = nb * rms
            np.maximum(t, np.float32(1e-30), out=t)
            np.divide(s, t, out=s)
            np.clip(s, -1, 1, out=s)
            s[...] = portable.arccos(s)

    run_rows(rows, cols, work, lambda step: (np.empty((nb, step, cols), np.float32),
                                              np.empty((step, cols), np.float32)), threads,
              chunk_pixels=_CHUNK_PIXELS)
    zero_invalid(mag, valid)
    if not direction:
        return mag
    zero_invalid(dirn, valid)
    return CVA(magnitude=mag, direction=dirn, scale=np.asarray(scale, np.float32))


# --------------------------------------------------------------------------- IR-MAD


def irmad(before: np.ndarray, after: np.ndarray, *, valid: np.ndarray | None = None,
          max_iter: int = 50, tol: float = 1e-4, variates: bool = False,
          max_pixels: int = 1 << 19) -> IRMAD:
    """Iteratively reweighted MAD change detection (Nielsen 2007) of a pair.

    :func:`fit_irmad` then :meth:`MADTransform.apply`. Change is where the
    chi-square is improbable under no change: ``result.pvalue < alpha``, or
    ``result.chi2 > threshold_chi2(bands, alpha=alpha, statistic="chi2")``.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(100, 10, (3, 64, 64))
    >>> y = 2.0 * x + 50 + rng.normal(0, 1, x.shape)       # new gain and offset, no change
    >>> y[:, :8, :8] += 60                                  # a changed block
    >>> r = irmad(x, y)
    >>> bool((r.pvalue[:8, :8] < 1e-3).mean() > 0.9), bool((r.pvalue[16:, 16:] < 1e-3).mean() < 0.01)
    (True, True)
    """
    t = fit_irmad(before, after, valid=valid, max_iter=max_iter, tol=tol, max_pixels=max_pixels)
    return t.apply(before, after, valid=valid, variates=variates)


# --------------------------------------------------------------------------- PCA-k-means


def pca_kmeans(before: np.ndarray, after: np.ndarray, *, block: int = 3, energy: float = 0.9,
               scale: np.ndarray | None = None, valid: np.ndarray | None = None,
               max_pixels: int = 1 << 18, iterations: int = 50) -> np.ndarray:
    """PCA-k-means change score (Celik 2009) of a pair.

    The difference image (the :func:`cva` magnitude, so any band count works)
    is cut into non-overlapping ``block`` × ``block`` blocks whose principal
    components (those holding ``energy`` of the variance) span a feature
    space; every pixel's neighbourhood is projected onto it (one correlation
    filter per component, so memory does not grow with the window) and the
    features are split into two clusters by k-means. The change cluster is the
    one with the larger mean difference.

    Returns
    -------
    ndarray, float32, (rows, cols)
        ``|f - c_nochange|^2 - |f - c_change|^2`` scaled by the squared
        distance between the centres: positive where the pixel is closer to the
        change centre (threshold 0 is the k-means decision); 0 where invalid.
    """
    from scipy import ndimage as ndi

    check_pair(before, after, valid)
    if block < 2 or iterations < 1:
        raise InputError("pca_kmeans needs block >= 2 and iterations >= 1.")
    d = cva(before, after, scale=scale, valid=valid)
    rows, cols = d.shape
    h = block
    mu = float(d[np.asarray(valid, bool)].mean()) if valid is not None and np.any(valid) else float(d.mean())
    hb, wb = rows // h, cols // h
    if hb * wb < 4:
        raise InputError(f"pca_kmeans needs an image of at least {2 * h}×{2 * h} pixels.")
    blocks = (d[: hb * h, : wb * h].reshape(hb, h, wb, h).transpose(0, 2, 1, 3).reshape(-1, h * h)
              .astype(np.float64))
    if valid is not None:
        vb = np.asarray(valid, bool)[: hb * h, : wb * h].reshape(hb, h, wb, h).all(axis=(1, 3)).ravel()
        if vb.sum() >= 4:
            blocks = blocks[vb]
    blocks -= mu
    cov = np.einsum("ni,nj->ij", blocks, blocks) / blocks.shape[0]
    ev, vec = portable.eigh(cov)
    ev, vec = ev[::-1], vec[:, ::-1]
    s = int(np.searchsorted(np.cumsum(ev) / max(ev.sum(), 1e-30), energy) + 1)
    s = min(max(s, 1), h * h)
    vec = vec[:, :s] * np.sign(vec[:, :s].sum(axis=0) + 1e-30)
    dc = d - np.float32(mu)
    feats = np.empty((s, rows, cols), np.float32)
    for k in range(s):
        ndi.correlate(dc, vec[:, k].reshape(h, h).astype(np.float32), output=feats[k], mode="reflect")
    # k-means (k = 2) on a regular sample; deterministic start at the feature means of the
    # lowest and highest differences
    idx = sample_pixels(valid, (rows, cols), max_pixels)
    f = feats.reshape(s, -1)[:, idx].T.astype(np.float64)
    dv = d.ravel()[idx]
    lo, hi = np.quantile(dv, [0.5, 0.99])
    c0 = f[dv <= lo].mean(axis=0)
    c1 = f[dv >= hi].mean(axis=0) if np.any(dv >= hi) else f.max(axis=0)
    for _ in range(iterations):
        lab = np.sum((f - c1) ** 2, axis=1) < np.sum((f - c0) ** 2, axis=1)
        if lab.all() or not lab.any():
            break
        n0, n1 = f[~lab].mean(axis=0), f[lab].mean(axis=0)
        if np.allclose(n0, c0) and np.allclose(n1, c1):
            break
        c0, c1 = n0, n1
    if lab.any() and (~lab).any() and dv[lab].mean() < dv[~lab].mean():
        c0, c1 = c1, c0                              # the change cluster has the larger difference
    # |f-c0|^2 - |f-c1|^2 = 2 f.(c1-c0) + |c0|^2 - |c1|^2, linear in f
    g = (2 * (c1 - c0)).astype(np.float32)
    k0 = np.float32(portable.dot(c0, c0) - portable.dot(c1, c1))
    norm = np.float32(max(float(portable.dot(c1 - c0, c1 - c0)), 1e-30))
    score = portable.combine_bands(g[None], feats.reshape(s, -1)).reshape(rows, cols)
    score += k0
    score /= norm
    return zero_invalid(score.astype(np.float32, copy=False), valid)


# --------------------------------------------------------------------------- structure


def structural(before: np.ndarray, after: np.ndarray, *, size: int = 7,
               valid: np.ndarray | None = None, floor: float = 0.1,
               threads: int | None = None) -> np.ndarray:
    """Loss of local structure: the two images' gradient fields stop agreeing.

    On the band means, Sobel gradients ``g1``, ``g2`` are compared over a
    ``size`` × ``size`` window (sums ``S12 = sum g1.g2``, ``S11``, ``S22``)::

        r        = S12 / sqrt(S11 S22)                       # gradient correlation
        evidence = max(S11 / (S11 + c1), S22 / (S22 + c2))   # texture in either image
        score    = evidence * (1 - r) / 2

    with ``c_i = floor`` × image i's median gradient energy. The same edges and
    texture seen darker or brighter (the ground under a moving shadow, a roof
    under haze) give ``r`` near 1 and a score near 0; unrelated texture, or
    texture replaced by a flat roof (and the reverse), give about 0.5;
    inverted contrast up to 1; two flat windows carry no evidence and score 0.
    Like the structure term of SSIM (Wang et al. 2004) it ignores brightness
    and contrast: the score is exactly invariant to a positive gain and any
    offset of either image (``c_i`` scales with the image), and symmetric.
    Row blocks, grown by the filters' reach, are shared among ``threads``
    (default: every core); the medians come from a regular sample of at most
    a million valid pixels.

    Returns
    -------
    ndarray, float32, (rows, cols), in [0, 1]; 0 where invalid.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> g = rng.normal(1000, 50, (1, 32, 32))
    >>> float(structural(g, 0.4 * g + 30)[16, 16]) < 0.05                # shadow: same texture
    True
    >>> bool(structural(g, rng.normal(1000, 50, (1, 32, 32)))[16, 16] > 0.3)
    True
    """
    from scipy import ndimage as ndi

    check_pair(before, after, valid)
    x = before.mean(axis=0, dtype=np.float32)
    y = after.mean(axis=0, dtype=np.float32)
    v = None
    if valid is not None:
        v = np.asarray(valid, bool)
        if not v.all() and v.any():                 # invalid pixels must not shape valid edges
            x = np.where(v, x, np.float32(x[v].mean()))
            y = np.where(v, y, np.float32(y[v].mean()))
    rows, cols = x.shape
    s11 = np.empty((rows, cols), np.float32)
    s22 = np.empty((rows, cols), np.float32)
    s12 = np.empty((rows, cols), np.float32)
    halo = size // 2 + 1                            # Sobel's 1 px plus the window's half-width

    def sums(sl, buf):
        # rows sl of the windowed gradient sums, from rows sl grown by the halo: the same
        # values as on the whole image (mode="nearest" only acts at the image's own edges)
        r0, r1 = max(0, sl.start - halo), min(rows, sl.stop + halo)
        inner = slice(sl.start - r0, sl.stop - r0)
        gx1, gy1 = ndi.sobel(x[r0:r1], axis=1, mode="nearest"), ndi.sobel(x[r0:r1], axis=0, mode="nearest")
        gx2, gy2 = ndi.sobel(y[r0:r1], axis=1, mode="nearest"), ndi.sobel(y[r0:r1], axis=0, mode="nearest")
        for out, (p, q, u, w) in ((s12, (gx1, gx2, gy1, gy2)), (s11, (gx1, gx1, gy1, gy1)),
                                  (s22, (gx2, gx2, gy2, gy2))):
            prod = p * q
            prod += u * w
            out[sl] = ndi.uniform_filter(prod, size, mode="nearest")[inner]

    run_rows(rows, cols, sums, lambda step: None, threads, chunk_pixels=1 << 17)
    idx = sample_pixels(v if v is not None and v.any() else None, (rows, cols), 1 << 20)
    c1 = np.float32(max(floor * float(np.median(s11.ravel()[idx])), 1e-30))
    c2 = np.float32(max(floor * float(np.median(s22.ravel()[idx])), 1e-30))

    def finish(sl, buf):
        a11, a22, r = s11[sl], s22[sl], s12[sl]
        ev = a11 / (a11 + c1)
        np.maximum(ev, a22 / (a22 + c2), out=ev)      # texture present in either image
        den = np.sqrt(a11 * a22)
        np.maximum(den, np.float32(1e-30), out=den)
        np.divide(r, den, out=r)
        np.clip(r, -1, 1, out=r)
        np.subtract(1.0, r, out=r)
        r *= np.float32(0.5)
        r *= ev

    run_rows(rows, cols, finish, lambda step: None, threads, chunk_pixels=1 << 16)
    return zero_invalid(s12, valid)


def change_score(before: np.ndarray, after: np.ndarray, *, method: str = "cva",
                 scale: np.ndarray | None = None, valid: np.ndarray | None = None) -> np.ndarray:
    """A per-pixel change score by ``method``.

    ``cva`` / ``difference``: standardised change magnitude; ``log_ratio``: the
    same on log-ratios; ``irmad``: IR-MAD chi-square; ``pca_kmeans``: signed
    k-means margin; ``structural``: loss of gradient correlation.
    """
    if method not in METHODS:
        raise InputError(f"Unknown change method '{method}'; choose one of {', '.join(METHODS)}.")
    if method == "log_ratio":
        lr = log_ratio(before, after, valid=valid)
        s = robust_scale(lr, valid) if scale is None else scale
        return cva(np.zeros_like(lr), lr, scale=s, valid=valid)
    if method == "irmad":
        return irmad(before, after, valid=valid).chi2
    if method == "pca_kmeans":
        return pca_kmeans(before, after, scale=scale, valid=valid)
    if method == "structural":
        return structural(before, after, valid=valid)
    return cva(before, after, scale=scale, valid=valid)


# --------------------------------------------------------------------------- thresholds


@dataclass(frozen=True)
class Threshold:
    """A threshold on a change score and how it was chosen."""

    value: float
    method: str

    def to_dict(self) -> dict:
        return {"value": round(float(self.value), 6), "method": self.method}


def _hist(values: np.ndarray, bins: int, max_pixels: int = 1 << 22):
    v = np.asarray(values).ravel()
    if v.size > max_pixels:
        v = v[:: -(-v.size // max_pixels)]
    v = v.astype(np.float64)
    v = v[np.isfinite(v)]
    if v.size < 2 or v.min() == v.max():
        raise InputError("Cannot choose a threshold: the scores are constant or empty.")
    hi = np.quantile(v, 0.9999)
    if hi <= v.min():
        hi = v.max()
    hist, edges = np.histogram(v, bins=bins, range=(v.min(), hi))
    return hist.astype(np.float64), 0.5 * (edges[1:] + edges[:-1])


def threshold_otsu(values: np.ndarray, *, bins: int = 512) -> float:
    """Otsu's threshold (maximum between-class variance) of a sample of scores.

    Otsu (1979), computed by :func:`skimage.filters.threshold_otsu` on the
    histogram of a regular sample of at most 4 M scores, spanning them up to
    their 99.99th percentile, so a handful of extreme pixels cannot set the
    bin width.

    Examples
    --------
    >>> v = np.r_[np.zeros(100), np.ones(100) * 10]
    >>> 0 < threshold_otsu(v) < 10
    True
    """
    from skimage.filters import threshold_otsu as otsu

    return float(otsu(hist=_hist(values, bins)))


def threshold_otsu_exact(values: np.ndarray) -> float:
    """Otsu's threshold computed exactly over a small sample (a site's footprints, not its pixels).

    The midpoint of the split of the sorted values with the largest
    between-class variance. :func:`threshold_otsu` works on a histogram, as it
    must for millions of pixels, and so puts the threshold at the first bin of
    an empty gap, on the edge of the lower class; here it is in the gap's
    middle. Cost: one sort.

    >>> threshold_otsu_exact(np.r_[np.full(50, 1.0), np.full(5, 9.0)])
    5.0
    >>> threshold_otsu_exact(np.full(30, 2.0))            # nothing to split: no value passes
    inf
    """
    x = np.sort(np.asarray(values, dtype=np.float64))
    n = x.size
    if n < 2 or x[0] == x[-1]:
        return math.inf
    k = np.arange(1, n)                                    # class 0 = x[:k]
    c = np.cumsum(x)
    m0, m1 = c[:-1] / k, (c[-1] - c[:-1]) / (n - k)
    between = (k / n) * (1.0 - k / n) * (m0 - m1) ** 2
    best = int(np.argmax(between))
    return float(0.5 * (x[best] + x[best + 1]))


def threshold_kittler(values: np.ndarray, *, bins: int = 512) -> float:
    """Kittler–Illingworth minimum-error threshold (two Gaussians of unequal variance).

    Kittler & Illingworth (1986)."""
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


def threshold_gmm(values: np.ndarray, *, bins: int = 512, iterations: int = 200) -> float:
    """Threshold between the two components of a Gaussian mixture fitted by EM.

    The EM-based difference-image analysis of Bruzzone & Prieto (2000).

    EM runs on the histogram (deterministic, independent of the pixel
    count), started from Otsu's split; the threshold is where the two weighted
    component densities cross between the means (the Bayes decision).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> v = np.r_[rng.normal(0, 1, 9000), rng.normal(8, 1, 1000)]
    >>> 3.0 < threshold_gmm(v) < 5.5
    True
    """
    hist, c = _hist(values, bins)
    p = hist / hist.sum()
    t = threshold_otsu(values, bins=bins)
    lo = c <= t
    pi = np.array([p[lo].sum(), p[~lo].sum()])
    mu = np.array([(p * c)[lo].sum() / max(pi[0], 1e-12), (p * c)[~lo].sum() / max(pi[1], 1e-12)])
    var = np.array([(p * (c - mu[0]) ** 2)[lo].sum() / max(pi[0], 1e-12),
                    (p * (c - mu[1]) ** 2)[~lo].sum() / max(pi[1], 1e-12)])
    floor = (c[1] - c[0]) ** 2
    var = np.maximum(var, floor)
    for _ in range(iterations):
        dens = pi[:, None] * np.exp(-0.5 * (c[None] - mu[:, None]) ** 2 / var[:, None]) / np.sqrt(
            2 * np.pi * var[:, None])
        resp = dens / np.maximum(dens.sum(axis=0), 1e-300)
        wk = resp * p[None]
        nk = wk.sum(axis=1)
        if np.any(nk < 1e-9):
            break
        new_mu = (wk * c[None]).sum(axis=1) / nk
        var = np.maximum((wk * (c[None] - new_mu[:, None]) ** 2).sum(axis=1) / nk, floor)
        done = np.allclose(new_mu, mu, rtol=1e-7, atol=1e-12)
        mu, pi = new_mu, nk
        if done:
            break
    order = np.argsort(mu)
    mu, var, pi = mu[order], var[order], pi[order]
    between = (c > mu[0]) & (c < mu[1])
    if not between.any():
        return t
    cb = c[between]
    d0 = pi[0] * np.exp(-0.5 * (cb - mu[0]) ** 2 / var[0]) / np.sqrt(var[0])
    d1 = pi[1] * np.exp(-0.5 * (cb - mu[1]) ** 2 / var[1]) / np.sqrt(var[1])
    cross = np.flatnonzero(d1 >= d0)
    return float(cb[cross[0]] if cross.size else cb[-1])


def threshold_chi2(n_bands: int, *, alpha: float = 1e-3, statistic: str = "cva") -> float:
    """Score above which a pixel is changed at significance ``alpha``.

    ``statistic="cva"``: a standardised :func:`cva` magnitude ``s`` with
    ``n_bands * s**2 ~ chi2(n_bands)`` under no change. ``statistic="chi2"``:
    the IR-MAD chi-square itself.

    Examples
    --------
    >>> round(threshold_chi2(1, alpha=0.05), 3)
    1.96
    >>> round(threshold_chi2(4, alpha=0.01, statistic="chi2"), 3)
    13.277
    """
    from scipy.stats import chi2

    if statistic not in ("cva", "chi2"):
        raise InputError(f"statistic={statistic!r}: choose 'cva' or 'chi2'.")
    if not 0 < alpha < 1:
        raise InputError(f"alpha={alpha} must be between 0 and 1.")
    q = float(chi2.isf(alpha, n_bands))
    return q if statistic == "chi2" else float(np.sqrt(q / n_bands))


def choose_threshold(values: np.ndarray, *, method: str = "chi2", n_bands: int = 1,
                     alpha: float = 1e-3, statistic: str = "cva",
                     valid: np.ndarray | None = None) -> Threshold:
    """Pick a threshold on scores by ``method`` (chi2, otsu, kittler or gmm).

    Data-driven rules look only at valid pixels.
    """
    if method not in THRESHOLDS:
        raise InputError(f"Unknown threshold '{method}'; choose one of {', '.join(THRESHOLDS)}.")
    if method == "chi2":
        return Threshold(threshold_chi2(n_bands, alpha=alpha, statistic=statistic),
                         f"chi2(alpha={alpha:g}, bands={n_bands})")
    v = np.asarray(values)
    if valid is not None:
        v = v[np.asarray(valid, bool)]
    fn = {"otsu": threshold_otsu, "kittler": threshold_kittler, "gmm": threshold_gmm}[method]
    return Threshold(fn(v), method)


def change_mask(score: np.ndarray, *, threshold: float, valid: np.ndarray | None = None) -> np.ndarray:
    """``score > threshold`` where valid."""
    m = np.asarray(score) > threshold
    if valid is not None:
        m &= np.asarray(valid)
    return m


# --------------------------------------------------------------------------- clouds and shadows

