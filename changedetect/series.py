"""The series of one window: every date read, normalised, with its texture and what is usable.

:func:`fit_series_model` measures, once per run on samples spread over the
site, what every later window needs: each scene's radiometric normalisation to
the baseline, the noise of one observation per channel, the brightness below
which a state can be a shadow, and the F threshold of a step.
:func:`read_series` then reads any window of every date with them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import ndimage as ndi

from .detect import robust_scale
from .errors import EmptyDataError
from .masks import shadow_level, texture, transients
from .radiometry import Normalization, apply_normalization, fit_normalization
from .stack import Stack

__all__ = ["SeriesModel", "fit_series_model", "read_series", "f_threshold", "pixel_block",
           "sample_windows", "VALID_EROSION_PX"]

#: Valid data is eroded by this many pixels on every date: resampling at a nodata edge and the
#: texture window must not make a change.
VALID_EROSION_PX = 4


@dataclass(frozen=True)
class SeriesModel:
    """Per-run statistics for reading and judging series (fitted on samples).

    Attributes
    ----------
    norms : tuple of Normalization
        Per scene, onto the first acquisition's radiometry.
    noise : ndarray, (bands + 1,) float32
        Standard deviation of one observation per channel (texture last).
    dark : float
        Brightness below which a state can be a shadow.
    flagged : tuple of bool
        Per scene: could not be co-registered (not used for the noise estimate).
    min_fstat : float
        F threshold of a step (:func:`f_threshold`).
    ndvi_bands : (int, int) or None
        (red, nir) channel indices, when the stack has both.
    skipped : tuple of bool
        Per scene: flagged and left out (``on_registration_failure="skip"``).
    transient_sigma : float
        See :func:`changedetect.masks.transients`.
    transient_max_hole : int
        Largest hole (pixels) under a cloud that is unusable too.
    """

    norms: tuple[Normalization, ...]
    noise: np.ndarray
    dark: float
    flagged: tuple[bool, ...]
    min_fstat: float
    ndvi_bands: tuple[int, int] | None = None
    skipped: tuple[bool, ...] = ()
    transient_sigma: float = 3.0
    transient_max_hole: int = 0


def f_threshold(alpha: float, n_dates: int, n_channels: int) -> float:
    """F statistic a step must reach at significance ``alpha`` (two segments against the spread within).

    Examples
    --------
    >>> round(f_threshold(0.01, 8, 5), 3)
    3.699
    """
    from scipy.stats import f as f_dist

    return float(f_dist.isf(alpha, n_channels, n_channels * max(n_dates - 2, 1)))


def sample_windows(stack: Stack, *, size: int = 512, n: int = 16):
    """Up to ``n`` full-resolution windows spread over the grid, for statistics.

    A grid no larger than the sample is read whole; windows never overlap.
    """
    from rasterio.windows import Window

    if stack.width * stack.height <= n * size * size:
        return [Window(0, 0, stack.width, stack.height)]
    size = min(size, stack.width, stack.height)
    k = max(1, int(math.sqrt(n)))
    rows = np.unique(np.linspace(0, stack.height - size, k).round().astype(int))
    cols = np.unique(np.linspace(0, stack.width - size, k).round().astype(int))
    return [Window(int(c), int(r), size, size) for r in rows for c in cols]


def _read_sample(stack: Stack, i: int, windows) -> tuple[np.ndarray, np.ndarray]:
    with stack.open_warped(i) as read:
        parts = [read(w) for w in windows]
    return (np.concatenate([p[0] for p in parts], axis=2),
            np.concatenate([p[1] for p in parts], axis=1))


def fit_series_model(stack: Stack, flagged: Sequence[bool], *, alpha: float, skip_flagged: bool = False,
                     transient_sigma: float = 3.0, transient_fill_m2: float = 0.0) -> tuple[SeriesModel, dict]:
    """Normalisation, noise, shadow level and F threshold of a run, from samples of the site.

    Returns the model and its statistics for the run record.

    Raises
    ------
    EmptyDataError
        The first image has almost no valid pixel, or another overlaps it on
        fewer than 100.
    """
    windows = sample_windows(stack)
    base, bv = _read_sample(stack, 0, windows)
    if bv.sum() < 100:
        raise EmptyDataError(f"{stack.scenes[0].path} has almost no valid pixel over the site; "
                             "choose another first image or check its nodata value.")
    norms: list[Normalization] = [Normalization(np.ones(stack.count), np.zeros(stack.count),
                                                int(bv.sum()), np.zeros(stack.count))]
    pair_scales = []
    for t in range(1, len(stack)):
        img, v = _read_sample(stack, t, windows)
        both = v & bv
        if both.sum() < 100:
            raise EmptyDataError(f"{stack.scenes[t].path} overlaps the first image on fewer than 100 "
                                 "valid pixels; remove it or check its footprint and nodata value.")
        norm = fit_normalization(base, img, valid=both)
        norms.append(norm)
        x = apply_normalization(img, norm)
        if not flagged[t]:
            d = np.concatenate([x - base, (texture(x) - texture(base))[None]])
            pair_scales.append(robust_scale(d, both))
    # the difference of two observations has sqrt(2) times one observation's noise
    noise = (np.median(np.array(pair_scales), axis=0) / np.sqrt(2) if pair_scales
             else np.ones(stack.count + 1)).astype(np.float32)
    dark = shadow_level(base, bv)
    n = len(stack)
    min_f = f_threshold(alpha, n, stack.count + 1)
    red_i, nir_i = stack.band_index("red"), stack.band_index("nir")
    model = SeriesModel(norms=tuple(norms), noise=noise, dark=dark, flagged=tuple(flagged),
                        min_fstat=min_f, skipped=tuple(bool(f) and skip_flagged for f in flagged),
                        ndvi_bands=(red_i, nir_i) if red_i is not None and nir_i is not None else None,
                        transient_sigma=transient_sigma,
                        transient_max_hole=int(transient_fill_m2 / stack.pixel_size ** 2))
    stats = {"noise_sigma": [round(float(x), 4) for x in noise],
             "shadow_dark_level": round(dark, 3),
             "normalization": {stack.scenes[t].name: norms[t].to_dict() for t in range(n)}}
    return model, stats


def read_series(stack: Stack, model: SeriesModel, window, *, halo: int = 3, with_transients: bool = False):
    """Normalised images (plus a texture channel) and usability of every date over one window.

    Returns ``images`` (dates, bands + 1, rows, cols) float32 — the last channel
    is the local texture — and ``usable`` (dates, rows, cols) bool: valid data
    (eroded by :data:`VALID_EROSION_PX` so resampling and texture edges do not
    count), a scene that is not left out, and not a transient (cloud, cloud
    shadow; see :func:`changedetect.masks.transients`). With
    ``with_transients``, the transients are returned as a third array. The
    window is read with a ``halo`` so that the texture is the same whatever
    the window.
    """
    from rasterio.windows import Window

    n = len(stack)
    c0, r0 = max(0, int(window.col_off) - halo), max(0, int(window.row_off) - halo)
    c1 = min(stack.width, int(window.col_off + window.width) + halo)
    r1 = min(stack.height, int(window.row_off + window.height) + halo)
    outer = Window(c0, r0, c1 - c0, r1 - r0)
    crop = (slice(int(window.row_off) - r0, int(window.row_off + window.height) - r0),
            slice(int(window.col_off) - c0, int(window.col_off + window.width) - c0))
    h, w = int(window.height), int(window.width)
    nb = stack.count
    images = np.empty((n, nb + 1, h, w), dtype=np.float32)
    usable = np.empty((n, h, w), dtype=bool)
    for t in range(n):
        data, v = stack.read(t, outer)
        apply_normalization(data, model.norms[t], out=data)
        images[t, :nb] = data[(slice(None),) + crop]
        images[t, nb] = texture(data)[crop]
        if model.skipped and model.skipped[t]:
            v[:] = False
        elif not v.all():
            v = ndi.binary_erosion(v, iterations=VALID_EROSION_PX, border_value=1)
        usable[t] = v[crop]
    nir = stack.band_index("nir")
    trans = transients(images[:, :nb], usable, noise=model.noise[:nb], sigma=model.transient_sigma,
                       max_hole=model.transient_max_hole, skip_up=() if nir is None else (nir,))
    usable &= ~trans
    return (images, usable, trans) if with_transients else (images, usable)


def pixel_block(stack: Stack, *, block: int, memory_mb: int) -> int:
    """Block side of the per-pixel stage: ``block``, smaller when many dates would not fit.

    A block holds every date's bands plus a texture channel in float32, and the
    step fit needs about three times that; the side is cut so that this stays
    within ``memory_mb``, so memory follows the budget whatever the number of
    dates (the cost stays linear in it).
    """
    per_pixel = 3 * len(stack) * (stack.count + 1) * 4
    side = int(math.sqrt(memory_mb * 2**20 / per_pixel))
    return max(64, min(block, side // 16 * 16))
