"""Masks: which observations are usable and which changes are light, not construction.

* texture: :func:`local_std`, :func:`texture` (the pipeline's texture channel);
* clouds and shadows in one image: :func:`cloud_mask`, :func:`shadow_like`,
  :func:`illumination_mask`, :func:`local_correlation`;
* in a series: :func:`transients` (something that came and went: a cloud, its
  shadow), :func:`illumination_change` (a step that is a shadow) and
  :func:`green_both_sides` (a step of vegetation in season).

All are vectorised over pixels and take ``(bands, rows, cols)`` images, or
``(dates, bands, rows, cols)`` series.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import ndimage as ndi

from . import portable
from .arrays import check_pair
from .errors import InputError

__all__ = ["local_std", "texture", "greyness", "TEXTURE_SIZE", "shadow_level", "SHADOW_QUANTILE",
           "cloud_mask", "shadow_like", "illumination_mask", "local_correlation", "correlation_threshold",
           "transients", "illumination_change", "green_both_sides"]

#: Side (pixels) of the window of the texture channel: large enough for the pattern of
#: bare ground and rubble, small enough to stay inside a house.
TEXTURE_SIZE = 5


def local_std(image: np.ndarray, size: int = TEXTURE_SIZE) -> np.ndarray:
    """Standard deviation in ``size`` x ``size`` windows over the last two axes (edges repeated).

    Examples
    --------
    >>> g = np.zeros((7, 7)); g[:, 4:] = 10.0
    >>> local_std(g)[3].round(2).tolist()
    [0.0, 0.0, 4.0, 4.9, 4.9, 4.0, 0.0]
    """
    m = ndi.uniform_filter(image, size=size, axes=(-2, -1), mode="nearest")
    m2 = ndi.uniform_filter(image * image, size=size, axes=(-2, -1), mode="nearest")
    return np.sqrt(np.maximum(m2 - m * m, 0))


#: A state darker than this quantile of an image's brightness can be a shadow.
SHADOW_QUANTILE = 0.3


def shadow_level(image: np.ndarray, valid: np.ndarray, quantile: float = SHADOW_QUANTILE) -> float:
    """Brightness (band mean) below which a state can be a shadow: a low quantile of ``image``'s.

    One rule for the series model, the pair method and :func:`illumination_mask`.

    Examples
    --------
    >>> img = np.arange(10, dtype=np.float32).reshape(1, 1, 10)
    >>> round(shadow_level(img, np.ones((1, 10), bool)), 2)
    2.7
    """
    return float(np.quantile(image.mean(axis=0, dtype=np.float32)[valid], quantile))


def greyness(image: np.ndarray, rgb) -> np.ndarray:
    """1 - saturation of the visible bands ``rgb`` (red, green, blue indices), smoothed over 3 px.

    Roofs, concrete, asphalt and rubble of them are grey; vegetation, soil and
    water are coloured. Float32 in [0, 1].

    Examples
    --------
    >>> img = np.zeros((3, 20, 20), np.float32)
    >>> img[:, :, :10] = 500.0                                  # grey
    >>> img[:, :, 10:] = np.array([300.0, 500.0, 200.0])[:, None, None]    # green
    >>> g = greyness(img, (0, 1, 2))
    >>> round(float(g[10, 2]), 2), round(float(g[10, 17]), 2)
    (1.0, 0.4)
    """
    vis = np.asarray(image, np.float32)[list(rgb)]
    mx, mn = vis.max(axis=0), vis.min(axis=0)
    floor = np.float32(1e-3 * max(float(np.mean(mx)), 1e-6))
    sat = (mx - mn) / (np.abs(mx) + floor)
    g = portable.gaussian_filter(1.0 - np.clip(sat, 0, 1), 3.0, mode="nearest")
    return np.clip(g, 0, 1).astype(np.float32)


def texture(images: np.ndarray, *, size: int = TEXTURE_SIZE) -> np.ndarray:
    """Local standard deviation of the band mean: roofs are flat, rubble and ground are not.

    ``images`` is (..., bands, rows, cols); the result drops the band axis.
    """
    return local_std(images.mean(axis=-3), size)


def cloud_mask(image: np.ndarray, *, valid: np.ndarray | None = None, bright: float = 1.6,
               max_saturation: float = 0.25, max_texture: float = 0.04, min_pixels: int = 400,
               edge_bright: float = 1.25, edge_saturation: float = 0.35, grow: int = 2,
               visible: slice | tuple = slice(0, 3)) -> np.ndarray:
    """Clouds in one image: bright, white and smooth cores, large, with their soft edges.

    Rules, on the band mean ``L`` and the ``visible`` bands (the first three):

    1. core: ``L >= bright`` × the median of ``L`` over valid pixels, white or
       grey (saturation ``(max - min) / max <= max_saturation``) and smooth
       (standard deviation of ``L`` in 5 × 5 windows ``<= max_texture`` × ``L``:
       clouds are soft, roofs have edges and fittings);
    2. large: a core region must hold at least ``min_pixels`` pixels;
    3. edges: a cloud's thin, semi-transparent edge shows the ground through
       it, so it is neither bright nor smooth enough for rule 1; the mask
       extends from a core over connected pixels with ``L >= edge_bright`` ×
       the median and saturation ``<= edge_saturation`` (hysteresis), then
       grows by ``grow`` pixels.

    Rule 2 keeps single white roofs out; a white roof larger than
    ``min_pixels`` on flat ground can still be taken for a cloud, which is why
    a time series, where a cloud comes and goes, is the stronger test (the
    transient rule of :mod:`changedetect.pipeline`).

    Returns
    -------
    ndarray of bool, (rows, cols)
    """
    img = np.asarray(image, dtype=np.float32)
    if img.ndim != 3:
        raise InputError("cloud_mask takes a (bands, rows, cols) image.")
    v = np.ones(img.shape[1:], bool) if valid is None else np.asarray(valid, bool)
    if not v.any():
        return np.zeros(img.shape[1:], bool)
    lum = img.mean(axis=0)
    vis = img[visible] if img.shape[0] >= 3 else img
    mx, mn = vis.max(axis=0), vis.min(axis=0)
    sat = (mx - mn) / np.maximum(mx, 1e-6)
    tex = local_std(lum, 5)
    med = float(np.median(lum[v]))
    core = v & (lum >= bright * med) & (sat <= max_saturation) & (tex <= max_texture * np.maximum(lum, 1e-6))
    lab, n = ndi.label(core)
    if n == 0:
        return core
    sizes = np.bincount(lab.ravel(), minlength=n + 1)
    big = sizes >= min_pixels
    big[0] = False
    core = big[lab]
    if not core.any():
        return core
    edge = v & (lum >= edge_bright * med) & (sat <= edge_saturation) | core
    lab, n = ndi.label(edge)
    hit = np.zeros(n + 1, bool)
    hit[np.unique(lab[core])] = True
    hit[0] = False
    out = hit[lab]
    if grow > 0:
        out = ndi.binary_dilation(out, iterations=grow)
    return out & v


def shadow_like(before: np.ndarray, after: np.ndarray, *, dark: float, angle_deg: float = 6.0,
                ratio: tuple[float, float] = (0.2, 0.8)) -> np.ndarray:
    """Pixels whose change is a darkening or brightening with the same colour.

    A shadow (of a building moving with the sun, or of a cloud) scales all
    bands by about the same factor: the spectral angle between ``before`` and
    ``after`` stays below ``angle_deg`` while brightness changes by a factor
    in ``ratio`` (or its inverse), and the darker of the two states is below
    ``dark``. Such changes are illumination, not construction.

    Examples
    --------
    >>> before = np.full((3, 1, 2), 1000.0)
    >>> after = before.copy(); after[:, 0, 0] *= 0.45; after[:, 0, 1] = [300, 900, 1500]
    >>> shadow_like(before, after, dark=600.0).tolist()
    [[True, False]]
    """
    check_pair(before, after)
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


def illumination_mask(before: np.ndarray, after: np.ndarray, *, valid: np.ndarray | None = None,
                      dark_quantile: float = SHADOW_QUANTILE, dark: float | None = None,
                      min_correlation: float = 0.5,
                      clouds: bool = True, shadows: bool = True, visible=None,
                      cloud_contrast: float = 1.3) -> np.ndarray:
    """Changes that are illumination, not construction: clouds, cloud shadows, moving shadows.

    A pixel is masked when it is under a cloud in one image
    (:func:`cloud_mask`) and at least ``cloud_contrast`` times brighter there
    than in the other, or when its change is a same-colour darkening or
    brightening into a dark state (:func:`shadow_like`, with ``dark`` the
    ``dark_quantile`` of the before image's brightness, or ``dark`` when
    given, e.g. measured once over a whole scene) while the ground's
    texture still shows through (:func:`local_correlation` of at least
    ``min_correlation``): a shadow darkens the ground, a new dark roof replaces it.
    """
    check_pair(before, after, valid)
    v = np.ones(before.shape[1:], bool) if valid is None else np.asarray(valid, bool)
    if not v.any():
        return np.zeros(before.shape[1:], bool)
    lum = before.mean(axis=0, dtype=np.float32)
    m = np.zeros(before.shape[1:], bool)
    if shadows:
        if dark is None:
            dark = shadow_level(before, v, dark_quantile)
        m |= shadow_like(before, after, dark=dark) & (local_correlation(before, after) >= min_correlation)
    if clouds:
        # a cloud is there in one image only: it must also be much brighter than the other
        # image (bright bare soil, concrete or snow seen in both are not clouds)
        vis = slice(0, 3) if visible is None else list(visible)
        la = after.mean(axis=0, dtype=np.float32)
        m |= cloud_mask(before, valid=v, visible=vis) & (lum >= cloud_contrast * np.maximum(la, 1e-6))
        m |= cloud_mask(after, valid=v, visible=vis) & (la >= cloud_contrast * np.maximum(lum, 1e-6))
    return m & v


def local_correlation(a: np.ndarray, b: np.ndarray, *, size: int = 5,
                      bands: bool = False) -> np.ndarray:
    """Local Pearson correlation of two images' band means in ``size`` × ``size`` windows.

    Illumination changes (a shadow moving with the sun) darken the ground but
    keep its texture, so the correlation stays high; a new roof replaces the
    texture and the correlation drops. Returns float32 in [-1, 1] (0 where
    either window is flat).

    With ``bands``, of their bands together: each band is centred on its own
    mean in the window and the covariances and variances are summed over the
    bands, so a change of colour breaks the pattern as much as one of
    brightness, while light (a factor on every band) and haze (an offset) keep it.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> ground = rng.normal(1000, 50, (1, 32, 32))
    >>> float(local_correlation(ground, 0.4 * ground)[16, 16]) > 0.99
    True
    """
    uniform_filter = ndi.uniform_filter
    x = np.asarray(a, dtype=np.float32)
    y = np.asarray(b, dtype=np.float32)
    if x.ndim == 3 and not bands:
        x = x.mean(axis=0)
        y = y.mean(axis=0)
    if x.ndim == 2:
        x, y = x[None], y[None]
    ax = (-2, -1)
    mx = uniform_filter(x, size, mode="nearest", axes=ax)
    my = uniform_filter(y, size, mode="nearest", axes=ax)
    cxy = (uniform_filter(x * y, size, mode="nearest", axes=ax) - mx * my).sum(axis=0)
    vx = np.maximum(uniform_filter(x * x, size, mode="nearest", axes=ax) - mx * mx, 0).sum(axis=0)
    vy = np.maximum(uniform_filter(y * y, size, mode="nearest", axes=ax) - my * my, 0).sum(axis=0)
    den = np.sqrt(vx * vy)
    out = np.where(den > 1e-6, cxy / np.maximum(den, 1e-6), 0.0).astype(np.float32)
    return np.clip(out, -1, 1, out=out)


def correlation_threshold(alpha: float, n: int) -> float:
    """The Pearson correlation of ``n`` pairs that is significantly positive at ``alpha`` (one-sided).

    A correlation over ``n`` pixels is significant when its t statistic
    ``r sqrt(n - 2) / sqrt(1 - r²)`` exceeds Student's quantile with ``n - 2``
    degrees of freedom. Infinite (nothing is significant) below 4 pairs.

    Examples
    --------
    >>> round(correlation_threshold(0.01, 25), 3), round(correlation_threshold(0.01, 9), 3)
    (0.462, 0.75)
    """
    from scipy.stats import t as t_dist

    if n < 4:
        return math.inf
    q = float(t_dist.isf(alpha, n - 2))
    return q / math.sqrt(n - 2 + q * q)


def transients(images: np.ndarray, usable: np.ndarray, *, noise: np.ndarray, sigma: float = 3.0,
               max_hole: int = 0, skip_up: Sequence[int] = ()) -> np.ndarray:
    """Observations hidden by something that comes and goes: a cloud or its shadow.

    An observation is a transient when it is brighter than both adjacent usable
    dates by ``sigma`` noise standard deviations (of a difference) in every band
    but those in ``skip_up``, or darker in every band. A thin cloud pulls every
    band towards its own grey: it brightens the visible bands but can darken
    vegetation's near-infrared, which is why the pipeline passes the
    near-infrared in ``skip_up``; a shadow darkens every band. It must also
    stand out from the nearer side by half the step between the two sides (a
    new roof brighter on its first date than later by another gain is no
    cloud). Dates are taken in order and a transient is no neighbour for the
    next date, so the clear date after a cloud is compared with the date before
    the cloud. A lasting change is never a transient: after it, the pixel stays
    in its new state.

    A roof that appears just after a cloudy date can be as bright as the cloud,
    so only the ground around it is a transient: holes of up to ``max_hole``
    pixels in a date's transients, enclosed by a ring at least 7 px thick (a
    cloud, not the thin outline a misregistered scene draws around a
    building), are filled, so the roof is skipped on the cloudy date instead
    of dated there.

    Parameters
    ----------
    images : ndarray, (dates, bands, rows, cols)
    usable : ndarray of bool, (dates, rows, cols)
    noise : ndarray, (bands,)
        Noise standard deviation of one observation per band.
    sigma : float
        Smallest difference, in noise standard deviations of a difference.
    max_hole : int
        Largest hole (pixels) to fill; 0 fills none.
    skip_up : sequence of int
        Bands not required to brighten under a cloud (the near-infrared).

    Returns
    -------
    ndarray of bool, (dates, rows, cols)

    Examples
    --------
    Blue, green, red, NIR of one pixel: grass, a thin cloud on date 2 (the NIR
    drops), grass, then a dark new roof from date 4:

    >>> grass, cloud, roof = [300, 500, 350, 2500], [1800, 1900, 1850, 2300], [200, 210, 220, 230]
    >>> px = np.array([grass, grass, cloud, grass, roof, roof, roof], float)[:, :, None, None]
    >>> ok = np.ones((7, 1, 1), bool)
    >>> np.flatnonzero(transients(px, ok, noise=np.full(4, 20.0), skip_up=[3])[:, 0, 0]).tolist()
    [2]
    >>> np.flatnonzero(transients(px, ok, noise=np.full(4, 20.0))[:, 0, 0]).tolist()
    []
    """
    n, nb = images.shape[:2]
    s = (np.asarray(noise, np.float32) * np.float32(np.sqrt(2)))[:, None, None]
    skip = set(int(b) for b in skip_up)
    keep = [b for b in range(nb) if b not in skip] or list(range(nb))
    use = usable.copy()
    for t in range(1, n - 1):
        zp = (images[t] - images[t - 1]) / s
        zn = (images[t] - images[t + 1]) / s
        # it must also stand out from the nearer side by half the step between the sides:
        # a new roof a few sigma brighter on its first date than later (another gain, a
        # blurrier scene) stands out far less than it stepped up from the ground
        half = 0.5 * np.abs(zp[keep] - zn[keep]).mean(axis=0)
        up = (np.all(zp[keep] > sigma, axis=0) & np.all(zn[keep] > sigma, axis=0)
              & (np.minimum(zp[keep], zn[keep]).mean(axis=0) > half))
        down = (np.all(zp < -sigma, axis=0) & np.all(zn < -sigma, axis=0)
                & (np.minimum(-zp, -zn).mean(axis=0) > 0.5 * np.abs(zp - zn).mean(axis=0)))
        use[t] &= ~((up | down) & use[t - 1] & use[t + 1])
    found = usable & ~use
    _fill_holes(found, usable, max_hole)
    return found


def _fill_holes(found: np.ndarray, usable: np.ndarray, max_hole: int, *, thick: int = 3) -> None:
    """Add to each date's mask (in place) the usable holes in it of at most ``max_hole`` pixels.

    Only holes enclosed by transients at least ``2 * thick + 1`` pixels thick count:
    a cloud all around a roof, not the thin outline of a building that a scene left a
    few pixels off draws on that date (that roof is not hidden).
    """
    if max_hole <= 0:
        return
    for t in range(found.shape[0]):
        if not found[t].any():
            continue
        wide = ndi.binary_erosion(found[t], iterations=thick, border_value=1)
        if not wide.any():
            continue
        holes = ndi.binary_fill_holes(wide) & ~found[t]
        if holes.any():
            lab, k = ndi.label(holes)
            small = np.bincount(lab.ravel(), minlength=k + 1) <= max_hole
            small[0] = False
            found[t] |= small[lab] & usable[t]


def illumination_change(before: np.ndarray, after: np.ndarray, *, n_before: np.ndarray,
                        n_after: np.ndarray, dark: float, min_correlation: float = 0.5,
                        min_texture_kept: float = 0.5) -> np.ndarray:
    """Steps of a series that are light, not construction: a shadow came or went.

    ``before`` and ``after`` are the means of each side of every pixel's step,
    (bands + 1, rows, cols), texture last (:class:`changedetect.timeline.PixelSteps`).
    A step is illumination when all bands darkened or brightened by a similar
    factor into a dark state (:func:`shadow_like`) and either the dark side is
    a single observation (the baseline's long winter shadows), or the ground
    still shows through it: its pattern correlates with the lit state
    (:func:`local_correlation` >= ``min_correlation``) and its texture relative
    to its brightness is kept (a shadow scales both by one factor: the dark
    side keeps at least ``min_texture_kept`` of the lit side's). A flat roof
    replaced by rubble of the same colour correlates through faint texture,
    but keeps a small share of the rubble's relative texture.
    """
    spectral_b, spectral_a = before[:-1], after[:-1]
    shadow = shadow_like(spectral_b, spectral_a, dark=dark)
    lum_b, lum_a = spectral_b.mean(axis=0), spectral_a.mean(axis=0)
    single_dark = np.where(lum_a < lum_b, n_after == 1, n_before == 1)
    textured = local_correlation(spectral_b, spectral_a) >= min_correlation
    rel_b = before[-1] / np.maximum(lum_b, 1e-6)
    rel_a = after[-1] / np.maximum(lum_a, 1e-6)
    kept = np.where(lum_a < lum_b, rel_a / np.maximum(rel_b, 1e-6), rel_b / np.maximum(rel_a, 1e-6))
    textured &= kept >= min_texture_kept
    return shadow & (single_dark | textured)


def green_both_sides(images: np.ndarray, usable: np.ndarray, first: np.ndarray, bands: tuple[int, int],
                     max_ndvi: float) -> np.ndarray:
    """Pixels green (NDVI > ``max_ndvi``) on at least one usable date before and one after their step.

    Vegetation, not construction: a roof built on grass is never green after
    it; ground left by a demolition was never green before it; grass and trees
    in season are green on both sides. ``bands`` are the (red, nir) channels,
    ``first`` the date index of every pixel's step (-1: none).
    """
    red, nir = images[:, bands[0]], images[:, bands[1]]
    green = ((nir - red) > max_ndvi * np.maximum(nir + red, 1e-6)) & usable
    after = np.arange(images.shape[0])[:, None, None] >= first[None]
    return (green & ~after).any(axis=0) & (green & after).any(axis=0) & (first >= 0)
