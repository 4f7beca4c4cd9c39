"""Change between two co-registered images: normalisation, kernel, threshold, cleanup.

:func:`detect_pair` is the two-image workflow of the classic literature, on
arrays: relative radiometric normalisation (:mod:`changedetect.radiometry`),
a per-pixel change kernel and an automatic threshold
(:mod:`changedetect.detect`), masks for clouds and moving shadows, and a
morphological cleanup with a minimum mapping unit. Its defaults were chosen
by pooled pixel F1 on labelled real pairs (LEVIR-CD, DSIFN-CD, OSCD;
``benchmarks/accuracy_pairs.py``, figures in ``benchmarks/README.md``).

The time-series pipeline (:func:`changedetect.pipeline.detect_changes`) uses
the same normalisation and masks, with a step model over every date instead
of one pair.

Examples
--------
>>> rng = np.random.default_rng(0)
>>> from scipy import ndimage as ndi
>>> ground = ndi.gaussian_filter(rng.normal(0, 60, (3, 128, 128)), (0, 2, 2)) + 900
>>> before = ground + rng.normal(0, 4, ground.shape)
>>> after = 1.2 * ground + 40 + rng.normal(0, 4, ground.shape)     # other sensor, no change
>>> after[:, 40:60, 70:100] = np.array([1500.0, 1480.0, 1450.0])[:, None, None]  # a new grey roof
>>> r = detect_pair(before, after)
>>> roof = np.zeros((128, 128), bool); roof[40:60, 70:100] = True
>>> near = ndi.binary_dilation(roof, iterations=10)       # 5 m at 0.5 m pixels
>>> int(r.mask[roof].mean() > 0.85), int(r.mask[~near].sum()), int(r.mask[near & ~roof].sum() < 600)
(1, 0, 1)

Nothing away from the roof is a change. The new walls roughen the ground
next to them (the roughening channel, :func:`roughening`), so the change
may reach a few pixels past the roof's edge.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from . import detect, masks, portable
from .arrays import check_pair, sample_pixels
from .detector import PixelChange, SeriesWindow
from .errors import EmptyDataError, InputError
from .objects import clean_mask
from .radiometry import normalize

__all__ = ["PairConfig", "PairResult", "PairStatistics", "PairDetector", "detect_pair", "drop_elongated",
           "roughening", "roughening_scale", "ROUGHENING_M"]

#: Ground scale (metres) of the pair detector's roughening channel (:attr:`PairConfig.roughening`).
ROUGHENING_M = 2.0


def roughening_scale(pixel_size: float) -> float:
    """The roughening channel's scale in pixels for a grid of ``pixel_size`` metres; 0 (off) when coarser.

    :data:`ROUGHENING_M` over the pixel size. Rubble, a torn roof, debris are
    a texture finer than a house; pixels coarser than that scale do not
    resolve it (at 10 m a pixel is a house or more), and there the channel
    would read land-cover patterns instead, so it is off.

    Examples
    --------
    >>> roughening_scale(0.5), roughening_scale(2.0), roughening_scale(10.0)
    (4.0, 1.0, 0.0)
    """
    scale = ROUGHENING_M / float(pixel_size)
    return scale if scale >= 1.0 else 0.0


_NORMALIZATIONS = ("irmad", "zscore", "histogram", "none")
_KERNELS = ("irmad", "cva", "log_ratio", "pca_kmeans", "structural", "combined")


@dataclass(frozen=True)
class PairConfig:
    """Parameters of :func:`detect_pair` (recorded with every result).

    Attributes
    ----------
    normalization : {"zscore", "irmad", "histogram", "none"}
        ``zscore`` (default): each image, each band, in its own robust units
        ``(x - median) / (IQR / 1.349)``, which also equalises the bands'
        weights in the kernel. ``irmad``: ``after`` mapped onto ``before`` by
        IR-MAD pseudo-invariant pixels and orthogonal regression (Canty &
        Nielsen 2008). ``histogram``: quantile matching. ``none``.
    kernel : {"irmad", "cva", "log_ratio", "pca_kmeans", "structural", "combined"}
        Per-pixel change score.
    threshold : {"otsu", "kittler", "gmm", "chi2"}
        How the score is cut (``chi2``: significance ``alpha``, only for an
        unweighted IR-MAD or CVA score, else Otsu, and the record says so; for
        ``pca_kmeans`` the k-means decision is used whatever this says).
    alpha : float
        Significance of the ``chi2`` rule.
    presmooth : float
        Standard deviation (pixels) of a Gaussian applied to both images before
        the kernel: co-registration residuals and resampling speckle at edges
        stop counting as change. 0 turns it off.
    smooth : float
        Standard deviation (pixels) of a Gaussian applied to the score before
        thresholding: change is a region, not a speckle; 0 turns it off.
    adapt : float
        When most of a scene changed (a whole estate built), the size of the
        spectral change says little about *where* the construction is. The
        score is raised to ``min(1, adapt * rho)``, ``rho`` the mean band-wise
        correlation of the two (pre-smoothed) images, so it flattens on
        decorrelated pairs and the prior decides. 0 turns it off; so does a
        run without the ``built`` prior (nothing would be left to decide).
    prior : {"built", "none"}
        ``built``: we look for *new construction*, so the score is weighted by
        how much the after state looks like an artificial surface: grey (low
        saturation of the ``rgb`` bands, smoothed over 3 px) raised to
        ``gamma``. Changes to vegetation, water or coloured soil lose weight.
    gamma : float
        Strength of the ``built`` prior.
    delta : float
        With the ``built`` prior, also weight by ``(1 - greyness before) ** delta``:
        what was grey already (roads, old roofs) is not new construction.
    rgb : (int, int, int) or None
        Indices of the red, green and blue bands (needed by the ``built``
        prior and the cloud mask); None when the images have no visible bands.
    nir : int or None
        Index of the near-infrared band; when given, pixels vegetated at both
        dates (NDVI above ``max_ndvi``) are never change (seasons, crops).
    max_ndvi : float
        NDVI above which a pixel counts as vegetated.
    mask_shadows : bool
        Drop changes that are shadows moving with the sun or cloud shadows: a
        same-colour darkening into a dark state with the ground's texture
        still showing (:func:`changedetect.masks.illumination_mask`).
    mask_clouds : bool
        Also drop clouds (:func:`changedetect.masks.cloud_mask`: bright, grey,
        smooth, large, and much brighter than in the other image). Off by
        default: on a single pair of visible-band images a large new grey
        roof passes the same tests (on LEVIR-CD the rule masked up to 19 % of
        a tile, nearly all of it new buildings). In a time series clouds are
        caught as transients instead.
    cloud_band : int or None
        A band that sees clouds and haze far better than the ground (Sentinel-2
        B01, coastal aerosol; or a cirrus band). It is left out of the kernel
        and used for a second cloud rule: the band is ``cloud_delta`` (data
        units) brighter than at the other date, over connected regions of at
        least ``cloud_min_pixels``, grown by 5 pixels. Applies whatever
        ``mask_clouds`` says.
    cloud_delta : float
        In the cloud band's units (400 = 0.04 reflectance for Sentinel-2 L1C).
    cloud_min_pixels : int
        Smallest connected region the cloud-band rule accepts as a cloud.
    min_pixels : int
        Minimum mapping unit, in pixels, after cleanup.
    radius : int
        Radius of the morphological opening/closing of the cleanup.
    max_elongation : float
        Drop changed regions whose principal axes differ by more than this
        ratio (roads, kerbs, field edges); 0 keeps every shape.
    roughening : float
        Scale (pixels, the standard deviation of a Gaussian) of a second
        channel for what the ``built`` prior cannot see, a roof replaced by
        rubble: :func:`roughening` (the rise of local gradient energy, each
        image in its own robust units), where positive, weighted by the
        before image's greyness squared (a built surface before), and cut by
        its own Otsu threshold; its pixels join the change mask. A change in
        colour alone does not move it, a demolished house or a torn roof does
        (xBD Joplin, destroyed houses at least half covered by the mask: 54 of
        83 with it, 6 with the colour score alone). 4 pixels is 2 m at 0.5 m:
        :class:`PairDetector` sets it from the grid's pixel size
        (:func:`roughening_scale`: 2 m, off for pixels coarser than 2 m, which
        do not resolve rubble). 0 turns it off.
    """

    normalization: str = "zscore"
    kernel: str = "cva"
    threshold: str = "otsu"
    alpha: float = 1e-3
    presmooth: float = 1.0
    smooth: float = 1.0
    adapt: float = 2.0
    prior: str = "built"
    gamma: float = 4.0
    delta: float = 0.0
    rgb: tuple[int, int, int] | None = (0, 1, 2)
    nir: int | None = None
    max_ndvi: float = 0.3
    mask_shadows: bool = True
    mask_clouds: bool = False
    cloud_band: int | None = None
    cloud_delta: float = 400.0
    cloud_min_pixels: int = 300
    min_pixels: int = 0
    radius: int = 0
    max_elongation: float = 4.0
    roughening: float = 4.0

    def __post_init__(self):
        for name, allowed in (("normalization", _NORMALIZATIONS), ("kernel", _KERNELS),
                              ("threshold", detect.THRESHOLDS), ("prior", ("built", "none"))):
            if getattr(self, name) not in allowed:
                raise InputError(f"{name}={getattr(self, name)!r} is not valid; choose one of "
                                 f"{', '.join(allowed)}.")
        if not 0 < self.alpha < 0.5:
            raise InputError(f"alpha={self.alpha} must be between 0 and 0.5.")
        if min(self.smooth, self.presmooth, self.gamma, self.min_pixels, self.radius, self.roughening) < 0:
            raise InputError("presmooth, smooth, gamma, min_pixels, radius and roughening cannot be "
                             "negative.")
        if self.rgb is not None:
            object.__setattr__(self, "rgb", tuple(int(b) for b in self.rgb))
            if len(self.rgb) != 3:
                raise InputError(f"rgb={self.rgb} must name three bands (red, green, blue).")
        if self.rgb is None and self.prior == "built":
            raise InputError("prior='built' needs the visible bands: give rgb=(red, green, blue) or "
                             "prior='none'.")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class PairResult:
    """What :func:`detect_pair` found.

    Attributes
    ----------
    mask : ndarray of bool, (rows, cols)
        Changed pixels after thresholding, masks and cleanup.
    score : ndarray, float32, (rows, cols)
        The (smoothed) change score that was thresholded.
    threshold : Threshold
        Its value and the rule that chose it.
    masked : ndarray of bool, (rows, cols)
        Pixels excluded as illumination (clouds, shadows) or invalid.
    normalization : dict
        The fitted normalisation (gains, offsets, invariant pixels) or method.
    config : PairConfig
    """

    mask: np.ndarray
    score: np.ndarray
    threshold: detect.Threshold
    masked: np.ndarray
    normalization: dict
    config: PairConfig = field(default_factory=PairConfig)
    statistics: "PairStatistics | None" = None

    def to_dict(self) -> dict:
        """JSON-ready record (no arrays)."""
        return {"config": self.config.to_dict(), "threshold": self.threshold.to_dict(),
                "normalization": self.normalization, "changed_pixels": int(self.mask.sum()),
                "masked_pixels": int(self.masked.sum())}


@dataclass(frozen=True)
class PairStatistics:
    """What :func:`detect_pair` measures on a pair as a whole, to judge every window of it alike.

    Given back to :func:`detect_pair` (``statistics=``), a window of the pair is
    normalised, weighted, masked and thresholded with the whole scene's
    figures instead of its own, so the answer does not depend on how the scene
    is cut into windows (see :class:`PairDetector`). Fields that a
    configuration does not use are None.

    Attributes
    ----------
    zscore_before, zscore_after : (ndarray, ndarray) or None
        Per band median and robust sigma of each image (``normalization="zscore"``).
    exponent : float
        The decorrelation exponent of the score (``adapt``).
    dark : float or None
        Brightness below which a darkening can be a shadow (``mask_shadows``).
    threshold : detect.Threshold
        The cut of the score.
    rough_threshold : detect.Threshold or None
        The cut of the roughening channel (None: off, or nothing roughened).
    """

    zscore_before: tuple | None
    zscore_after: tuple | None
    exponent: float
    dark: float | None
    threshold: detect.Threshold
    rough_threshold: detect.Threshold | None = None


def _score(before, after, after_n, valid, config: PairConfig):
    """The change score and the statistic its chi2 rule refers to."""
    k = config.kernel
    if k == "irmad":
        return detect.irmad(before, after, valid=valid).chi2, "chi2"
    if k == "cva":
        scale = np.ones(before.shape[0]) if config.normalization == "zscore" else None
        return detect.cva(before, after_n, valid=valid, scale=scale), "cva"
    if k == "log_ratio":
        return detect.change_score(before, after_n, method="log_ratio", valid=valid), "cva"
    if k == "pca_kmeans":
        return detect.pca_kmeans(before, after_n, valid=valid), "kmeans"
    if k == "structural":
        return detect.structural(before, after, valid=valid), "structural"
    # combined: spectral significance (IR-MAD) scaled by structural evidence
    chi = detect.irmad(before, after, valid=valid).chi2
    st = detect.structural(before, after, valid=valid)
    return chi * (2.0 * st), "combined"


def _zscore(image: np.ndarray, valid: np.ndarray, fixed: tuple[np.ndarray, np.ndarray] | None = None):
    """Per band ``(x - median) / (IQR / 1.349)`` over valid pixels: each image in its own robust units.

    ``fixed`` (median, sigma) per band: those of the whole scene, instead of this window's.
    Returns the record, the image in those units and the (median, sigma) used.
    """
    if fixed is not None:
        med, sd = (np.asarray(a, np.float64) for a in fixed)
    else:
        idx = sample_pixels(valid, image.shape[1:], 1 << 20)
        flat = image.reshape(image.shape[0], -1)[:, idx].astype(np.float64)
        med = np.median(flat, axis=1)
        q1, q3 = np.percentile(flat, [25, 75], axis=1)
        sd = np.maximum((q3 - q1) / 1.349, 1e-6)
    out = ((image - med[:, None, None].astype(np.float32)) / sd[:, None, None].astype(np.float32))
    rec = {"median": [round(float(m), 4) for m in med], "sigma": [round(float(x), 4) for x in sd]}
    return rec, out.astype(np.float32), (med, sd)


def _winsorise(x: np.ndarray, k: float = 3.0) -> np.ndarray:
    """Clip each row to median ± k robust sigmas: the change itself must not decide how
    correlated the rest of the scene is."""
    med = np.median(x, axis=1, keepdims=True)
    q1, q3 = np.percentile(x, [25, 75], axis=1, keepdims=True)
    sd = np.maximum((q3 - q1) / 1.349, 1e-12)
    return np.clip(x, med - k * sd, med + k * sd)


def _mean_band_correlation(a: np.ndarray, b: np.ndarray, valid: np.ndarray) -> float:
    """Mean over bands of the correlation of two images, winsorised at 3 robust sigmas
    (regular sample of valid pixels)."""
    idx = sample_pixels(valid, a.shape[1:], 1 << 18)
    x = _winsorise(a.reshape(a.shape[0], -1)[:, idx].astype(np.float64))
    y = _winsorise(b.reshape(b.shape[0], -1)[:, idx].astype(np.float64))
    x -= x.mean(axis=1, keepdims=True)
    y -= y.mean(axis=1, keepdims=True)
    den = np.sqrt((x * x).sum(axis=1) * (y * y).sum(axis=1))
    r = np.where(den > 0, (x * y).sum(axis=1) / np.maximum(den, 1e-300), 0.0)
    return float(r.mean())


def _cloud_band_mask(b0: np.ndarray, b1: np.ndarray, valid: np.ndarray, config: PairConfig) -> np.ndarray:
    from scipy import ndimage as ndi

    out = np.zeros(b0.shape, bool)
    for x, o in ((b0, b1), (b1, b0)):
        m = valid & ((x.astype(np.float32) - o.astype(np.float32)) > config.cloud_delta)
        lab, n = ndi.label(m)
        if n:
            sizes = np.bincount(lab.ravel(), minlength=n + 1)
            big = sizes >= config.cloud_min_pixels
            big[0] = False
            out |= big[lab]
    if out.any():
        out = ndi.binary_dilation(out, structure=_disk(5))
    return out & valid


def _disk(r: int) -> np.ndarray:
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    return (xx * xx + yy * yy) <= r * r


def drop_elongated(mask: np.ndarray, max_ratio: float) -> np.ndarray:
    """Remove 8-connected regions whose inertia axes differ by more than ``max_ratio`` (vectorised)."""
    from scipy import ndimage as ndi

    lab, n = ndi.label(mask, structure=np.ones((3, 3), bool))
    if n == 0:
        return mask
    rr, cc = np.nonzero(lab)
    k = lab[rr, cc]
    cnt = np.bincount(k, minlength=n + 1).astype(np.float64)
    c = np.maximum(cnt, 1)
    mr = np.bincount(k, rr, n + 1) / c
    mc = np.bincount(k, cc, n + 1) / c
    dr, dc = rr - mr[k], cc - mc[k]
    srr = np.bincount(k, dr * dr, n + 1) / c + 1 / 12
    scc = np.bincount(k, dc * dc, n + 1) / c + 1 / 12
    src = np.bincount(k, dr * dc, n + 1) / c
    tr, det = srr + scc, srr * scc - src * src
    disc = np.sqrt(np.maximum(tr * tr / 4 - det, 0))
    l1, l2 = tr / 2 + disc, np.maximum(tr / 2 - disc, 1e-12)
    keep = np.sqrt(l1 / l2) <= max_ratio
    keep[0] = False
    return keep[lab]


def roughening(before: np.ndarray, after: np.ndarray, sigma: float) -> np.ndarray:
    """How much rougher each pixel's surroundings got, over ``sigma`` pixels (log gradient energy).

    The gradient energy of each image's band mean (Sobel magnitude over 8,
    lightly smoothed at a quarter of ``sigma``) is compared as
    ``log(1 + E_after) - log(1 + E_before)``, and that difference is smoothed
    by a Gaussian of ``sigma``. Give each image in its own robust units
    (z-scores), so that a gain between sensors does not count. A flat roof
    replaced by rubble, a torn roof, a plot of debris get rougher (positive);
    a new roof on rough ground gets smoother (negative); a roof repainted does
    neither. Smoothing the difference rather than each energy keeps a new
    wall's edge from roughening a ring around a new roof: its outer side got
    rougher and its inside smoother, and the two cancel.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> before = np.zeros((3, 40, 40), np.float32)
    >>> after = before.copy()
    >>> after[:, 10:30, 10:30] = rng.normal(0, 1, (3, 20, 20))      # rubble on a flat roof
    >>> r = roughening(before, after, 2.0)
    >>> bool(r[20, 20] > 0.1), bool(abs(r[1, 1]) < 1e-3), bool(roughening(after, before, 2.0)[20, 20] < -0.1)
    (True, True, True)
    """
    from scipy import ndimage as ndi

    def energy(img):
        lum = np.asarray(img, np.float32).mean(axis=0)
        gx, gy = ndi.sobel(lum, 0), ndi.sobel(lum, 1)
        g = np.sqrt(gx * gx + gy * gy) / np.float32(8)
        return portable.log(np.float32(1) + portable.gaussian_filter(g, sigma / 4, mode="nearest"))

    return portable.gaussian_filter(energy(after) - energy(before), sigma, mode="nearest").astype(np.float32)


def _ndvi(image: np.ndarray, config: PairConfig) -> np.ndarray:
    red = np.asarray(image[config.rgb[0]], np.float32)
    nir = np.asarray(image[config.nir], np.float32)
    return (nir - red) / np.maximum(np.abs(nir + red), np.float32(1e-6))


def detect_pair(before: np.ndarray, after: np.ndarray, *, valid: np.ndarray | None = None,
                config: PairConfig | None = None, statistics: PairStatistics | None = None) -> PairResult:
    """Changed pixels between two co-registered images.

    Parameters
    ----------
    before, after : ndarray, shape (bands, rows, cols)
        Any real dtype and band count (RGB 8-bit, 4-band 16-bit, 13-band
        Sentinel-2), on one grid.
    valid : ndarray of bool, shape (rows, cols), optional
        Pixels valid in both images (nodata excluded); never reported as change.
    config : PairConfig, optional
        Defaults as documented there.
    statistics : PairStatistics, optional
        The whole scene's (``PairResult.statistics`` of a run on a sample of
        it): a window of the scene is then judged with them, not its own.

    Returns
    -------
    PairResult

    Raises
    ------
    InputError
        Shapes differ or are not (bands, rows, cols).
    EmptyDataError
        Too few valid pixels to fit the statistics.
    """
    from scipy import ndimage as ndi

    config = config or PairConfig()
    check_pair(np.asarray(before), np.asarray(after), valid)
    before = np.asarray(before, dtype=np.float32)
    after = np.asarray(after, dtype=np.float32)
    v = np.ones(before.shape[1:], bool) if valid is None else np.asarray(valid, bool)
    nb = before.shape[0]
    if not v.all():
        if v.sum() < 100:
            raise EmptyDataError(f"Only {int(v.sum())} pixels are valid in both images: nothing to compare.")
        # invalid pixels (nodata, junk) take each band's valid median, so that no filter,
        # statistic or mask below can carry their values into valid pixels
        before, after = before.copy(), after.copy()
        scene = (None, None) if statistics is None else (statistics.zscore_before, statistics.zscore_after)
        for img, z in zip((before, after), scene):
            # the scene's medians when known, so that a window's fill does not depend on the window
            med = np.median(img[:, v], axis=1) if z is None else np.asarray(z[0], np.float32)
            img[:, ~v] = med[:, None]
    for name, idx in (("rgb", config.rgb or ()), ("nir", () if config.nir is None else (config.nir,))):
        if any(not 0 <= i < nb for i in idx):
            raise InputError(f"{name} band index out of range for {nb}-band images; set PairConfig({name}=...).")
    rgb_ok = config.rgb is not None and nb >= 3
    if config.cloud_band is not None:
        if not 0 <= config.cloud_band < nb:
            raise InputError(f"cloud_band={config.cloud_band} is out of range for {nb}-band images.")
        cloudy = _cloud_band_mask(before[config.cloud_band], after[config.cloud_band], v, config)
        keep = [b for b in range(nb) if b != config.cloud_band]
        remap = {b: i for i, b in enumerate(keep)}
        config_k = dataclasses.replace(
            config, cloud_band=None,
            rgb=None if config.rgb is None else tuple(remap[b] for b in config.rgb),
            nir=None if config.nir is None else remap[config.nir])
        r = detect_pair(before[keep], after[keep], valid=v & ~cloudy, config=config_k, statistics=statistics)
        masked = r.masked | cloudy
        return dataclasses.replace(r, masked=masked, config=config,
                                   normalization={**r.normalization, "cloud_band_pixels": int(cloudy.sum())})
    if config.normalization in ("irmad", "histogram"):
        after_n, norm_rec = normalize(before, after, valid=v, method=config.normalization)
    elif config.normalization == "zscore":
        zb, before_n, fixed_b = _zscore(before, v, None if statistics is None else statistics.zscore_before)
        za, after_n, fixed_a = _zscore(after, v, None if statistics is None else statistics.zscore_after)
        fixed = (fixed_b, fixed_a)
        norm_rec = {"method": "zscore", "before": zb, "after": za}
    else:
        after_n = after
        norm_rec = {"method": "none"}
    if config.normalization != "zscore":
        fixed = (None, None)
    # masks and priors look at radiometry: the before image and the after image in its units
    look_b, look_a = before, (after if config.normalization == "zscore" else after_n)
    if config.normalization == "zscore":
        before = before_n

    def smoothed(img):
        if config.presmooth <= 0:
            return img
        return portable.gaussian_filter(img, (0, config.presmooth, config.presmooth), mode="nearest")

    kb, kan = smoothed(before), smoothed(after_n)
    # only the gain-blind kernels read the un-normalised after image: smooth it only for them
    ka = None
    if config.kernel in ("irmad", "structural", "combined"):
        ka = kan if after_n is after else smoothed(after)
    score, statistic = _score(kb, ka, kan, v, config)
    if config.smooth > 0:
        score = portable.gaussian_filter(score, config.smooth, mode="nearest")
    exponent = 1.0
    # flattening leaves the decision to the prior: without one it would leave nothing (a pair
    # that is anti-correlated, rho <= 0, would get a constant score and no threshold)
    prior = config.prior == "built" and rgb_ok
    if config.adapt > 0 and prior and statistic in ("cva", "chi2", "combined"):
        if statistics is None:
            rho = _mean_band_correlation(kb, kan, v)
            exponent = float(min(1.0, config.adapt * max(rho, 0.0)))
            norm_rec["band_correlation"] = round(rho, 4)
        else:
            exponent = statistics.exponent
        if exponent < 1.0:
            score = portable.power(np.maximum(score, 0).astype(np.float32), exponent)
            statistic = "weighted"
    norm_rec["score_exponent"] = round(exponent, 4)
    if prior:
        # portable.power, not **: NumPy's float32 power rounds differently on AVX-512
        score = score * portable.power(masks.greyness(look_a, config.rgb), config.gamma)
        if config.delta > 0:
            score = score * portable.power(1 - masks.greyness(look_b, config.rgb), config.delta)
        if statistic != "kmeans":                       # a positive weight keeps the k-means sign
            statistic = "weighted"
    masked = ~v
    if config.nir is not None and rgb_ok:
        masked = masked | ((_ndvi(look_b, config) > config.max_ndvi) & (_ndvi(look_a, config) > config.max_ndvi))
    dark = None
    if config.mask_shadows:
        dark = (statistics.dark if statistics is not None and statistics.dark is not None
                else masks.shadow_level(look_b, v))
    if config.mask_shadows or config.mask_clouds:
        ill = masks.illumination_mask(look_b, look_a, valid=v, clouds=config.mask_clouds and rgb_ok,
                                       shadows=config.mask_shadows, dark=dark,
                                       visible=config.rgb if rgb_ok else None)
        # smoothing spreads a masked change over its edges: grow the mask as far
        reach = int(np.ceil(2.0 * np.hypot(config.presmooth, config.smooth)))
        if reach > 0 and ill.any():
            ill = ndi.binary_dilation(ill, structure=_disk(reach)) & v
        masked = masked | ill
    use = ~masked
    if statistics is not None:
        thr = statistics.threshold
    elif statistic == "kmeans":
        thr = detect.Threshold(0.0, "kmeans")
    elif config.threshold == "chi2" and statistic in ("chi2", "cva"):
        thr = detect.choose_threshold(score, method="chi2", n_bands=nb, alpha=config.alpha,
                                      statistic=statistic)
    else:
        rule = "otsu" if config.threshold == "chi2" else config.threshold
        thr = detect.choose_threshold(score, method=rule, valid=use & (score > 0))
        if rule != config.threshold:
            thr = detect.Threshold(thr.value, f"otsu (chi2 does not apply to a {statistic} score)")
    mask = (score > thr.value) & use
    rough_thr = None
    if config.roughening > 0:
        rough = np.maximum(roughening(before, after_n, config.roughening), np.float32(0))
        if prior:                                # a built surface before: grey
            rough *= portable.power(masks.greyness(look_b, config.rgb), 2.0)
        if statistics is not None:
            rough_thr = statistics.rough_threshold
        elif np.count_nonzero(use & (rough > 0)) >= 100:
            rough_thr = detect.choose_threshold(rough, method="otsu", valid=use & (rough > 0))
        if rough_thr is not None:
            rm = (rough > rough_thr.value) & use
            mask |= rm
    if config.min_pixels or config.radius:
        mask = clean_mask(mask, min_pixels=config.min_pixels, radius=config.radius) & use
    if config.max_elongation > 0:
        mask = drop_elongated(mask, config.max_elongation)
    stats = PairStatistics(zscore_before=fixed[0], zscore_after=fixed[1], exponent=exponent, dark=dark,
                           threshold=thr, rough_threshold=rough_thr)
    return PairResult(mask=mask, score=score.astype(np.float32, copy=False), threshold=thr, masked=masked,
                      statistics=stats,
                      normalization=norm_rec, config=config)


class PairDetector:
    """:func:`detect_pair` as the per-pixel stage of a run: the first acquisition against the last.

    The default for a run of two acquisitions (``Config(detector="auto")``):
    there the series model has one observation on each side of every step and
    nothing to estimate the noise of a step from, while the pair method's
    normalisation, score, priors and threshold were chosen on labelled real
    pairs. Its statistics (each image's robust band units, the score's
    decorrelation exponent, the shadow level and the threshold) are measured
    once on a sample of the whole scene (:meth:`fit`, which the pipeline calls
    before the first window), so every window is judged alike and the answer
    does not depend on the block size. Band roles come from the stack: the
    ``built`` prior needs red, green and blue; NIR, when there, masks what is
    vegetated at both dates. A changed pixel is dated at the last acquisition.
    """

    name = "pair"
    #: Context around a window: the pre- and post-smoothing, the texture and shadow windows and
    #: the growth of the shadow mask reach less than 16 px; twice that for a margin. :meth:`fit`
    #: widens it when the roughening channel's Gaussian (4 sigma, 2 m) reaches further (pixels
    #: finer than 0.3 m).
    halo = 32

    def __init__(self, config):
        self.statistics: PairStatistics | None = None

    @staticmethod
    def _setup(window: SeriesWindow):
        roles = window.band_roles
        rgb = tuple(roles.index(r) for r in ("red", "green", "blue")) if all(
            r in roles for r in ("red", "green", "blue")) else None
        # shapes are the object stage's (on whole regions): no elongation rule on a window's pieces
        config = PairConfig(rgb=rgb, nir=window.band("nir") if rgb else None,
                            prior="built" if rgb else "none", max_elongation=0.0,
                            roughening=roughening_scale(window.pixel_size))
        x = window.images[:, :-1]                  # the spectral bands, not the texture channel
        return config, x[0], x[-1], window.usable[0] & window.usable[-1]

    def fit(self, sample: SeriesWindow) -> None:
        """Measure the pair's statistics on a sample of the whole scene."""
        config, before, after, valid = self._setup(sample)
        self.halo = max(type(self).halo, int(np.ceil(4 * config.roughening)) + 4)
        self.statistics = detect_pair(before, after, valid=valid, config=config).statistics

    def to_dict(self) -> dict:
        """The fitted statistics, for the run record."""
        st = self.statistics
        if st is None:
            return {}
        z = {k: None if v is None else {"median": [round(float(m), 4) for m in v[0]],
                                        "sigma": [round(float(x), 4) for x in v[1]]}
             for k, v in (("before", st.zscore_before), ("after", st.zscore_after))}
        return {"zscore": z, "score_exponent": round(st.exponent, 4),
                "shadow_dark_level": None if st.dark is None else round(st.dark, 4),
                "threshold": st.threshold.to_dict(),
                "roughening_threshold": None if st.rough_threshold is None else st.rough_threshold.to_dict()}

    def detect(self, window: SeriesWindow) -> PixelChange:
        config, before, after, valid = self._setup(window)
        first = np.full(window.shape, -1, np.int32)
        if valid.sum() < 100:
            return PixelChange(first, np.zeros(window.shape, bool))
        mask = detect_pair(before, after, valid=valid, config=config, statistics=self.statistics).mask
        first[mask] = len(window.dates) - 1
        return PixelChange(first, mask)
