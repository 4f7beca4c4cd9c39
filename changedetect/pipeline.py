"""The end-to-end run: images in, dated change polygons and a run record out.

``detect_changes`` runs the stages of DESIGN.md in order — stack, co-registration,
radiometric normalisation, per-pixel change, objects, dating, export — with one
:class:`Config`. Pixels are processed block by block; every output is written
to a staging folder and moved into place only when the whole run succeeded.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import logging
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from scipy import ndimage as ndi

from . import __version__
from .config import Config
from .coregister import Registration, coregister, registration_errors, registration_term
from .detect import local_correlation, robust_scale, shadow_like
from .errors import EmptyDataError
from .io import is_unreferenced, sha256_file, write_text
from .objects import (ShapeLimits, appearance, clean_mask, core_fraction, label_objects, object_shape, polygonize,
                      regularize, shape_filter)
from .provenance import cpu_dispatch, versions
from .radiometry import Normalization, apply_normalization, fit_normalization
from .stack import Stack, check_not_empty, open_stack
from .timeline import SeriesChange, series_change, step_change, transients
from .vector import buildings_to_frames, export, export_buildings, to_geodataframe

__all__ = ["Config", "Result", "detect_changes"]

log = logging.getLogger(__name__)
log.addHandler(logging.NullHandler())

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class Result:
    """What a run produced.

    Attributes
    ----------
    changes : geopandas.GeoDataFrame
        One row per change, DESIGN.md schema, in the stack's CRS.
    registrations : tuple of Registration
        Per scene, in date order.
    run : dict
        The run record (also written as run.json).
    outputs : dict
        Output name to path (empty when no ``out_dir`` was given).
    buildings : geopandas.GeoDataFrame or None
        With ``Config.buildings``: one row per footprint (in the stack's CRS),
        ``building_id``, ``status`` (``unchanged``, ``changed``, ``demolished``,
        ``not_observable``), ``kind``, ``last_absent``, ``first_present``,
        ``confidence``, ``score``, ``changed_fraction``, ``changed_area_m2``,
        ``area_m2``, ``n_observations``.
    building_dates : pandas.DataFrame or None
        One row per footprint and date: ``building_id``, ``date``, ``status``,
        ``mean_score``, ``max_score``, ``changed_fraction``, ``valid_fraction``.
    building_masks : geopandas.GeoDataFrame or None
        Each footprint's change mask as polygons (``building_id``, ``area_m2``):
        the pixels of the footprint whose own series has a significant step.
    """

    changes: object
    registrations: tuple[Registration, ...]
    run: dict
    outputs: dict = field(default_factory=dict)
    buildings: object = None
    building_dates: object = None
    building_masks: object = None


def _sample_windows(stack: Stack, *, size: int = 512, n: int = 16):
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


@dataclass(frozen=True)
class _Model:
    """Per-run statistics the per-pixel stage needs (fitted on samples)."""

    norms: tuple[Normalization, ...]
    noise: np.ndarray            # per-band noise sigma of one observation
    dark: float                  # brightness below which a state can be a shadow
    flagged: tuple[bool, ...]    # could not be co-registered (not used for the noise estimate)
    min_fstat: float
    ndvi_bands: tuple[int, int] | None = None   # (red, nir) indices, when the stack has them
    skipped: tuple[bool, ...] = ()              # flagged and left out (on_registration_failure="skip")


def _texture(images: np.ndarray, *, size: int = 5) -> np.ndarray:
    """Local standard deviation of the band mean: roofs are flat, rubble and ground are not."""
    g = images.mean(axis=-3)
    m = ndi.uniform_filter(g, size=size, axes=(-2, -1), mode="nearest")
    m2 = ndi.uniform_filter(g * g, size=size, axes=(-2, -1), mode="nearest")
    return np.sqrt(np.maximum(m2 - m * m, 0))


def _read_series(stack: Stack, model: _Model, window, config: Config, *, halo: int = 3,
                 with_transients: bool = False):
    """Normalised images (plus a texture channel) and usability of every date over one window.

    Returns ``images`` (dates, bands + 1, rows, cols) float32 — the last channel
    is the local texture — and ``usable`` (dates, rows, cols) bool: valid data
    (eroded by 4 px so resampling and texture edges do not count), a registered scene, and
    not a transient (cloud, cloud shadow; see :func:`transients`). With
    ``with_transients``, the transients are returned as a third array.
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
        images[t, nb] = _texture(data)[crop]
        if model.skipped and model.skipped[t]:
            v[:] = False
        elif not v.all():
            v = ndi.binary_erosion(v, iterations=4, border_value=1)  # resampling + texture window
        usable[t] = v[crop]
    nir = stack.band_index("nir")
    trans = transients(images[:, :nb], usable, noise=model.noise[:nb], sigma=config.transient_sigma,
                       max_hole=int(config.transient_fill_m2 / stack.pixel_size ** 2),
                       skip_up=() if nir is None else (nir,))
    usable &= ~trans
    return (images, usable, trans) if with_transients else (images, usable)


def _first_date_clouded(stack: Stack, model: _Model, config: Config, win, obj: np.ndarray,
                        images: np.ndarray, usable: np.ndarray, ch) -> bool:
    """Whether the first date of a change is a cloud around the object, not the change.

    A cloud as bright and grey as a construction pad, on the date before the pad, is no
    transient over the pad (the pad is as bright the next date), so the change would be
    dated at the cloud. Two signs together tell it: the object is brighter on that date
    than in its final state (by ``transient_sigma`` noise sigmas), and the ground 6-20 m
    around it is mostly a transient on that date (at least half of its valid pixels).
    """
    from rasterio.windows import Window

    k = ch.first_present
    nb = stack.count
    after = usable[ch.completed:, obj].any(axis=1)
    if not usable[k][obj].any() or not after.any():
        return False
    s = model.noise[:nb] * np.sqrt(2)
    final = [images[t, :nb][:, obj & usable[t]].mean(axis=1)
             for t in range(ch.completed, len(usable)) if (obj & usable[t]).any()]
    now = images[k, :nb][:, obj & usable[k]].mean(axis=1)
    if ((now - np.mean(final, axis=0)) / s).mean() <= config.transient_sigma:
        return False
    px = stack.pixel_size
    near, far = int(math.ceil(6.0 / px)), int(math.ceil(20.0 / px))
    r0, c0 = int(win.row_off), int(win.col_off)
    R0, C0 = max(0, r0 - far), max(0, c0 - far)
    R1 = min(stack.height, r0 + int(win.height) + far)
    C1 = min(stack.width, c0 + int(win.width) + far)
    _, use2, trans = _read_series(stack, model, Window(C0, R0, C1 - C0, R1 - R0), config,
                                  with_transients=True)
    whole = np.zeros(use2.shape[1:], bool)
    whole[r0 - R0:r0 - R0 + obj.shape[0], c0 - C0:c0 - C0 + obj.shape[1]] = obj
    d = ndi.distance_transform_edt(~whole)
    ring = (d > near) & (d <= far)
    valid = (use2[k] | trans[k]) & ring
    return bool(valid.sum() >= 100 and (trans[k] & ring).sum() >= 0.5 * valid.sum())


#: Offset of the date code of a *weak* changed pixel in the per-pixel step raster.
_WEAK = 1024


def _pixel_steps(images, usable, model: _Model, config: Config):
    """Best step per pixel and whether it counts as a change.

    Returns ``steps`` and ``changed``. A *strong* pixel has a step of at least
    ``min_magnitude`` sigma; a *weak* one reaches ``weak_fraction`` of it with the
    same F test. Weak pixels only count where they join strong ones of the same
    date (hysteresis, see :func:`_candidates`): a demolished roof whose rubble has
    the roof's colour, or a roof close to the ground's colour, changes only a
    little per pixel, but all of it on the date the strong part (its vanished or
    new shadow, its outline) changed. To keep the caller's one-raster write, the
    ``first_present`` of a weak pixel is offset by ``_WEAK``.
    """
    steps = step_change(images, usable, scale=model.noise, min_before=1,
                        min_after=config.persistence)
    clean = steps.fstat >= model.min_fstat
    strong = (steps.magnitude >= config.min_magnitude) & clean
    weak = (steps.magnitude >= config.weak_fraction * config.min_magnitude) & clean & ~strong
    # illumination, not construction: all bands darker by a similar factor (a shadow) on one
    # side, with either the ground's texture still showing through, or only one observation
    # on the dark side (the baseline's long winter shadows)
    before, after = steps.before[:-1], steps.after[:-1]        # spectral bands only
    shadow = shadow_like(before, after, dark=model.dark)
    single_dark = np.where(after.mean(axis=0) < before.mean(axis=0),
                           steps.n_after == 1, steps.n_before == 1)
    # the ground still shows through a shadow: its pattern correlates with the lit state and
    # its texture, relative to its brightness, is kept (a shadow scales both by one factor);
    # a flat roof replaced by rubble of the same colour correlates through faint texture, but
    # keeps a small share of the rubble's relative texture
    textured = local_correlation(before, after) >= 0.5
    lum_b, lum_a = before.mean(axis=0), after.mean(axis=0)
    rel_b = steps.before[-1] / np.maximum(lum_b, 1e-6)
    rel_a = steps.after[-1] / np.maximum(lum_a, 1e-6)
    kept = np.where(lum_a < lum_b, rel_a / np.maximum(rel_b, 1e-6), rel_b / np.maximum(rel_a, 1e-6))
    textured &= kept >= 0.5
    illumination = shadow & (single_dark | textured)
    strong &= ~illumination
    weak &= ~illumination
    if model.ndvi_bands is not None:
        # vegetation, not construction: green (NDVI above max_ndvi) on some date on both sides
        # of its step. A roof built on grass is never green after; ground left by a
        # demolition was never green before; grass and trees in season are green on both sides.
        veg = _green_both_sides(images, usable, steps.first_present, model.ndvi_bands,
                                config.max_ndvi)
        strong &= ~veg
        weak &= ~veg
    if weak.any():
        code = np.where(weak, steps.first_present + _WEAK, steps.first_present).astype(np.int16)
        steps = dataclasses.replace(steps, first_present=code)
    return steps, strong | weak


def _green_both_sides(images, usable, first, bands, max_ndvi):
    """Pixels green (NDVI > ``max_ndvi``) on at least one usable date before and one after their step."""
    red, nir = images[:, bands[0]], images[:, bands[1]]
    green = ((nir - red) > max_ndvi * np.maximum(nir + red, 1e-6)) & usable
    after = np.arange(images.shape[0])[:, None, None] >= first[None]
    return (green & ~after).any(axis=0) & (green & after).any(axis=0) & (first >= 0)


def _hysteresis(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Changed pixels of a window of the step raster, weak ones kept where they join strong ones.

    ``codes`` holds a pixel's date index (strong), date + ``_WEAK`` (weak) or -1.
    A weak pixel is kept when it is 8-connected, through pixels of the same date,
    to a strong pixel of that date, or when its group reaches the window's
    edge (it may join a strong pixel outside; :func:`_candidates` checks whole
    regions). Returns the kept mask and the strong mask.
    """
    strong = (codes >= 0) & (codes < _WEAK)
    weak = codes >= _WEAK
    if not weak.any():
        return strong, strong
    keep = strong.copy()
    dates = np.where(weak, codes - _WEAK, codes)
    for d in np.unique(dates[weak]):
        group = (dates == d) & (strong | weak)
        lab, n = ndi.label(group, structure=np.ones((3, 3), bool))
        ok = np.zeros(n + 1, bool)
        ok[np.unique(lab[strong & (dates == d)])] = True
        edge = np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]])
        ok[np.unique(edge)] = True
        ok[0] = False
        keep |= ok[lab]
    return keep, strong


def _pixel_block(stack: Stack, config: Config) -> int:
    """Block size of the per-pixel stage: ``config.block``, smaller when many dates would not fit.

    A block holds every date's bands plus a texture channel in float32, and the
    step fit needs about three times that; the side is cut so that this stays
    within ``config.memory_mb``, so memory follows the budget whatever the number
    of dates (the cost stays linear in it).
    """
    per_pixel = 3 * len(stack) * (stack.count + 1) * 4
    side = int(math.sqrt(config.memory_mb * 2**20 / per_pixel))
    return max(64, min(config.block, side // 16 * 16))


def _change_count(images, usable, steps, changed, model: _Model, config: Config) -> np.ndarray:
    """How many lasting changes each pixel's series holds (0-3), uint8.

    A changed pixel counts its best step, plus one for a further significant step
    (same magnitude, F and persistence rules) inside the segment before it and
    one inside the segment after it: a building put up and later demolished
    counts 2. Each segment is fitted with the same linear-time step model.
    """
    count = changed.astype(np.uint8)
    if not changed.any():
        return count
    # only the changed pixels, as a (dates, bands, n, 1) series: usually a small share
    x = images[:, :, changed][..., None]
    u = usable[:, changed][..., None]
    k = (steps.first_present[changed].astype(np.int32) % _WEAK)[:, None]
    t = np.arange(images.shape[0])[:, None, None]
    extra = np.zeros(k.shape, np.uint8)
    for side in (t < k[None], t >= k[None]):
        seg = step_change(x, u & side, scale=model.noise, min_before=1, min_after=config.persistence)
        extra += ((seg.magnitude >= config.min_magnitude) & (seg.fstat >= model.min_fstat)).astype(np.uint8)
    count[changed] += extra[:, 0]
    return count


def _write_pixel_products(stack: Stack, first_path: Path, count_path: Path, folder: Path, *,
                          block: int = 1024, halo: int = 128) -> dict[str, Path]:
    """``first_change.tif`` and ``change_count.tif`` from the per-pixel rasters, block by block.

    The pixels are those of the change map after hysteresis (weak pixels kept where
    they join strong ones of the same date), read with a halo so that blocks agree.
    """
    import rasterio

    epoch = _dt.date(1970, 1, 1)
    days = np.array([(d - epoch).days for d in stack.dates], dtype=np.int32)
    tags = {"DATES": ",".join(d.isoformat() for d in stack.dates),
            "UNITS": "days since 1970-01-01 of the first acquisition showing the change; -1: none"}
    out_first, out_count = folder / "first_change.tif", folder / "change_count.tif"
    profile = dict(driver="GTiff", width=stack.width, height=stack.height, count=1, crs=stack.crs,
                   transform=stack.transform, tiled=True, blockxsize=256, blockysize=256,
                   compress="deflate")
    with rasterio.open(first_path) as codes_ds, rasterio.open(count_path) as count_ds, \
            rasterio.open(out_first, "w", dtype="int32", nodata=-1, **profile) as f_dst, \
            rasterio.open(out_count, "w", dtype="uint8", **profile) as c_dst:
        f_dst.update_tags(**tags)
        f_dst.set_band_description(1, "first_change_days_since_1970")
        c_dst.update_tags(DATES=tags["DATES"], UNITS="lasting changes in the pixel's series")
        c_dst.set_band_description(1, "change_count")
        for inner, outer in stack.windows(block=block, halo=halo):
            codes = codes_ds.read(1, window=outer)
            keep, _ = _hysteresis(codes)
            sl = (slice(int(inner.row_off - outer.row_off), int(inner.row_off - outer.row_off + inner.height)),
                  slice(int(inner.col_off - outer.col_off), int(inner.col_off - outer.col_off + inner.width)))
            keep, codes = keep[sl], codes[sl]
            first = np.where(keep, days[np.clip(codes % _WEAK, 0, len(days) - 1)], -1).astype(np.int32)
            f_dst.write(first, 1, window=inner)
            c_dst.write(np.where(keep, count_ds.read(1, window=inner), 0).astype(np.uint8), 1,
                        window=inner)
    return {"first_change.tif": out_first, "change_count.tif": out_count}


def _fit_model(stack: Stack, config: Config, flagged: Sequence[bool]) -> tuple[_Model, dict]:
    from scipy.stats import f as f_dist

    windows = _sample_windows(stack)
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
            d = np.concatenate([x - base, (_texture(x) - _texture(base))[None]])
            pair_scales.append(robust_scale(d, both))
    # the difference of two observations has sqrt(2) times one observation's noise
    noise = (np.median(np.array(pair_scales), axis=0) / np.sqrt(2) if pair_scales
             else np.ones(stack.count + 1)).astype(np.float32)
    dark = float(np.quantile(base.mean(axis=0)[bv], 0.3))
    n = len(stack)
    min_f = float(f_dist.isf(config.alpha, stack.count + 1, (stack.count + 1) * max(n - 2, 1)))
    red_i, nir_i = stack.band_index("red"), stack.band_index("nir")
    model = _Model(norms=tuple(norms), noise=noise, dark=dark, flagged=tuple(flagged),
                   min_fstat=min_f,
                   skipped=tuple(bool(f) and config.on_registration_failure == "skip" for f in flagged),
                   ndvi_bands=(red_i, nir_i) if red_i is not None and nir_i is not None else None)
    stats = {"thresholds": {"min_magnitude_sigma": config.min_magnitude,
                            "min_fstat": round(min_f, 4),
                            "fstat_alpha": config.alpha},
             "noise_sigma": [round(float(x), 4) for x in noise],
             "shadow_dark_level": round(dark, 3),
             "normalization": {stack.scenes[t].name: norms[t].to_dict() for t in range(n)}}
    return model, stats


def _area_m2(geom, crs) -> float:
    if crs is not None and getattr(crs, "is_geographic", False):
        from pyproj import Geod

        return float(abs(Geod(ellps="WGS84").geometry_area_perimeter(geom)[0]))
    return float(geom.area)


def _candidates(first_path: Path, stack: Stack, config: Config, *, block: int = 1024,
                halo: int = 128):
    """Cleaned, connected regions of changed pixels, read window by window.

    Yields ``(r0, c0, mask)``: the region's bounding box origin on the grid and
    its boolean mask. Each block labels its window grown by ``halo``; a region
    belongs to the block that holds its first pixel in raster order, so it is
    yielded once, and a region that reaches the window's edge is re-read in a
    window grown around it until it is whole. Memory follows the block and the largest region, not
    the grid. Weak changed pixels join a region only through strong ones of the same date
    (:func:`_hysteresis`); a region without a strong pixel is not yielded.
    """
    import rasterio
    from rasterio.windows import Window

    px = stack.pixel_size
    min_pixels = max(1, int(math.ceil(config.min_area_m2 / (px * px))))
    radius = max(1, int(round(config.min_width_m / px / 2)))
    height, width = stack.shape
    with rasterio.open(first_path) as ds:

        def labelled(r0, r1, c0, c1):
            a = ds.read(1, window=Window(c0, r0, c1 - c0, r1 - r0))
            keep, strong = _hysteresis(a)
            return label_objects(clean_mask(keep, min_pixels=min_pixels, radius=radius))[0], strong

        # cleaning (an opening) can detach a region from the window's edge by up to its
        # radius: a region that close to an inner edge may continue outside the window
        near = 2 * radius + 2

        def cut(box, win):
            return ((win[0] > 0 and box[0] <= win[0] + near)
                    or (win[1] < height and box[1] >= win[1] - near)
                    or (win[2] > 0 and box[2] <= win[2] + near)
                    or (win[3] < width and box[3] >= win[3] - near))

        def owns(inner, box, obj):
            # the region's first pixel in raster order: a pixel of the region, so the block
            # whose inner window holds it always sees (part of) the region
            r, c = box[0], box[2] + int(np.argmax(obj[0]))
            return (inner.row_off <= r < inner.row_off + inner.height
                    and inner.col_off <= c < inner.col_off + inner.width)

        seen: set = set()
        for inner, outer in stack.windows(block=block, halo=halo):
            win = (int(outer.row_off), int(outer.row_off + outer.height),
                   int(outer.col_off), int(outer.col_off + outer.width))
            labels, strong = labelled(*win)
            for lab, sl in enumerate(ndi.find_objects(labels), start=1):
                if sl is None:
                    continue
                box = (win[0] + sl[0].start, win[0] + sl[0].stop,
                       win[2] + sl[1].start, win[2] + sl[1].stop)
                obj = labels[sl] == lab
                has_strong = bool(strong[sl][obj].any())
                if not owns(inner, box, obj):
                    continue                      # another block's region
                grown = win
                while cut(box, grown) and grown != (0, height, 0, width):
                    seed = np.argwhere(obj)[0] + (box[0], box[2])
                    grown = (max(0, box[0] - halo), min(height, box[1] + halo),
                             max(0, box[2] - halo), min(width, box[3] + halo))
                    lab2, strong2 = labelled(*grown)
                    which = lab2[seed[0] - grown[0], seed[1] - grown[2]]
                    if which == 0:            # weak pixels that joined no strong ones after all
                        has_strong = False
                        break
                    sl2 = ndi.find_objects((lab2 == which).astype(np.int8))[0]
                    box = (grown[0] + sl2[0].start, grown[0] + sl2[0].stop,
                           grown[2] + sl2[1].start, grown[2] + sl2[1].stop)
                    obj = lab2[sl2] == which
                    has_strong = bool(strong2[sl2][obj].any())
                # a region that only looked separate inside the window (a U joined outside
                # it) is whole now: yield it once, from the block that owns its first pixel
                key = (box, int(obj.sum()))
                if has_strong and owns(inner, box, obj) and key not in seen:
                    seen.add(key)
                    yield box[0], box[2], obj


def _flip_fraction(lum: np.ndarray, usable: np.ndarray, k: int) -> float:
    """Share of a region's usable observations that sit on the wrong side of its step.

    ``lum`` (dates, pixels) is brightness, the step is between dates ``k - 1`` and
    ``k``. Per pixel, an observation before the step that is closer to the pixel's
    after level, or after the step and closer to its before level, has flipped. A
    roof, once built, is there on every later date; the ground under a shadow that
    moves with the sun is dark on some dates and lit on others, so its pixels flip.
    """
    u = usable.astype(np.float32)
    side = (np.arange(lum.shape[0]) >= k)[:, None]
    nb = np.maximum((u * ~side).sum(axis=0), 1)
    na = np.maximum((u * side).sum(axis=0), 1)
    lb = (lum * u * ~side).sum(axis=0) / nb
    la = (lum * u * side).sum(axis=0) / na
    mid = 0.5 * (lb + la)
    up = la > lb
    closer_after = np.where(up, lum > mid, lum < mid)
    flipped = np.where(side, ~closer_after, closer_after) & usable
    return float(flipped.sum() / max(usable.sum(), 1))


def _region_change(images, usable, obj, codes, model: _Model, config: Config):
    """The change of one region: the step of its mean series, else the date its pixels agree on.

    The mean series of the region is fitted with one or two steps
    (:func:`~changedetect.timeline.series_change`). A change that is mostly one
    of texture (a roof replaced by rubble of the same colour) barely moves the
    region's mean, but every pixel of it stepped on the same date: when the
    mean's step is weak (below ``min_magnitude``) or absent, and at least
    ``min_date_agreement`` of the region's pixels share another date (while
    its mean still moved by a quarter of ``min_magnitude``), the region is dated
    there and its score is the median step of its pixels on that date. An
    intermediate state that is green (NDVI above ``max_ndvi``: grass or crops in
    season, which a monthly series sees for months) does not date the change:
    one step is fitted instead. Returns ``(change, use_t, how)`` or
    ``(None, use_t, reason)``.
    """
    n_use = usable[:, obj].sum(axis=1)
    use_t = n_use >= 0.5 * obj.sum()
    series = (np.einsum("tbp,tp->tb", images[:, :, obj], usable[:, obj].astype(np.float32))
              / np.maximum(n_use, 1)[:, None])
    ch = series_change(series, use_t, scale=model.noise, min_after=config.persistence,
                       min_lead=config.min_lead)
    if ch is not None and ch.steps == 2 and model.ndvi_bands is not None:
        # a green intermediate state is grass or crops in season (a monthly series sees a
        # whole spring), not a cleared pad or walls: date the change with one step
        red, nir = model.ndvi_bands
        mid = use_t & (np.arange(len(use_t)) >= ch.first_present) & (np.arange(len(use_t)) < ch.completed)
        m = series[mid].mean(axis=0)
        if (m[nir] - m[red]) > config.max_ndvi * max(m[nir] + m[red], 1e-6):
            ch = series_change(series, use_t, scale=model.noise, min_after=config.persistence,
                               alpha_extra=0.0)
    c = codes[obj]
    c = np.where(c >= _WEAK, c - _WEAK, c)
    c = c[c >= 0]
    counts = np.bincount(c, minlength=len(use_t)) if c.size else np.zeros(len(use_t), int)
    k = int(np.argmax(counts))
    agree = counts[k] / max(c.size, 1)
    passed = (ch is not None and ch.magnitude >= 0.5 * config.min_magnitude
              and ch.fstat >= model.min_fstat)
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
                        scale=model.noise, min_before=1, min_after=config.persistence)
    mags = steps.magnitude[0][steps.first_present[0] == k]
    fst = steps.fstat[0][steps.first_present[0] == k]
    magnitude = float(np.median(mags)) if mags.size else 0.0
    fstat = float(np.median(fst)) if fst.size else 0.0
    ch = SeriesChange(first_present=k, last_absent=int(before_t[-1]), completed=k,
                      magnitude=magnitude, fstat=fstat, n_before=int(before_t.size),
                      n_after=int(after_t.size), steps=1)
    return ch, use_t, f"pixel dates ({agree:.0%} agree; mean series: {why})"


def _objects(stack: Stack, model: _Model, first_path: Path, regs, config: Config,
             progress: Progress | None) -> list[dict]:
    """Date, classify and outline every candidate region; drop those that are not construction.

    Every region that is dropped is logged (``DEBUG``) with the reason: no clean
    step, vegetation on the built side, an unchanged structure, an illumination
    change (a shadow), or a shape filter (:func:`~changedetect.objects.shape_filter`).
    """
    import rasterio
    from rasterio.windows import Window

    px = stack.pixel_size
    dates = stack.dates
    rmse, unregistered = registration_errors(regs)
    records = []
    margin = 6
    red_i, nir_i = stack.band_index("red"), stack.band_index("nir")
    ndvi_bands = (red_i, nir_i) if red_i is not None and nir_i is not None else None
    core_px = max(1, int(round(config.min_core_width_m / px)))
    limits = ShapeLimits(min_area=config.min_area_m2, max_elongation=config.max_elongation,
                         min_rectangularity=config.min_rectangularity,
                         min_solidity=config.min_solidity, min_width=config.min_width_m)
    n = 0
    with rasterio.open(first_path) as codes_ds:
        for lab, (top, left, region) in enumerate(_candidates(first_path, stack, config), start=1):
            n = lab
            if progress is not None:
                progress("objects", lab, 0)
            r0, r1 = max(0, top - margin), min(stack.height, top + region.shape[0] + margin)
            c0, c1 = max(0, left - margin), min(stack.width, left + region.shape[1] + margin)
            win = Window(c0, r0, c1 - c0, r1 - r0)
            where = f"region {lab} at rows {r0}-{r1} cols {c0}-{c1}"
            obj = np.zeros((r1 - r0, c1 - c0), bool)
            obj[top - r0:top - r0 + region.shape[0], left - c0:left - c0 + region.shape[1]] = region
            images, usable = _read_series(stack, model, win, config)
            codes = codes_ds.read(1, window=win)
            ch, use_t, how = _region_change(images, usable, obj, codes, model, config)
            if ch is not None and _first_date_clouded(stack, model, config, win, obj, images,
                                                      usable, ch):
                hidden = dates[ch.first_present]
                usable = usable.copy()
                usable[ch.first_present][obj] = False
                ch, use_t, how = _region_change(images, usable, obj, codes, model, config)
                how = f"{how}; {hidden} skipped: a cloud around it, brighter than the result"
            if ch is None:
                log.debug("%s dropped: no clean step (%s)", where, how)
                continue
            k, last, magnitude, fstat = ch.first_present, ch.last_absent, ch.magnitude, ch.fstat
            before_t = [t for t in range(k) if use_t[t]]
            after_t = [t for t in range(ch.completed, len(dates)) if use_t[t]]
            before = _masked_mean(images[before_t], usable[before_t])
            after = _masked_mean(images[after_t], usable[after_t])
            g0 = images[before_t[0], :-1].mean(axis=0)
            noise_grad = float(np.median(np.hypot(ndi.sobel(g0, 0), ndi.sobel(g0, 1)) / 8)) + 1e-6
            app = appearance(before[:-1], after[:-1], obj, noise=noise_grad,
                             texture=(before[-1], after[-1]))
            kind = app.kind
            flips = _flip_fraction(images[:, :-1][:, :, obj].mean(axis=1), usable[:, obj], k)
            feats = (f"flips {flips:.2f}, "f"kind {kind}, outline contrast {app.contrast:+.2f}, texture contrast "
                     f"{app.texture_contrast:+.2f}, outline sharp before/after {app.sharp_before:.2f}/"
                     f"{app.sharp_after:.2f}, both {app.sharp_both:.2f}, colour angle {app.angle_deg:.1f} deg, dark/bright "
                     f"{app.brightness_ratio:.2f}, relative texture kept {app.texture_kept:.2f}, "
                     f"ground pattern r {app.pattern_r:.2f}, step {magnitude:.1f} sigma by {how}")
            # the built side of a change (after a construction, before a demolition) is not
            # vegetation: a change whose built side is green is trees or a field in season
            if ndvi_bands is not None:
                built = after if kind != "demolished" else before
                red, nir = built[ndvi_bands[0]][obj], built[ndvi_bands[1]][obj]
                ndvi = float(np.mean((nir - red) / np.maximum(nir + red, 1e-6)))
                if ndvi > config.max_ndvi:
                    log.debug("%s dropped: NDVI %.2f on the built side (%s)", where, ndvi, feats)
                    continue
            if kind == "none":
                log.debug("%s dropped: no structure appeared nor disappeared, the outline is not "
                          "sharper and the inside neither flatter nor rougher (%s)", where, feats)
                continue
            if app.unchanged_structure(config.min_outline_contrast):
                log.debug("%s dropped: the outline is as sharp before as after, the same structure "
                          "changed in brightness only (%s)", where, feats)
                continue
            if app.is_shadow(flips, max_angle_deg=config.shadow_max_angle,
                             min_flips=config.shadow_min_flips):
                log.debug("%s dropped: a shadow moving with the sun, the ground darkened or lit by "
                          "one factor on some dates only (%s)", where, feats)
                continue
            geom = polygonize(obj, stack.window_transform(win))
            if geom is None:
                continue
            raw = object_shape(geom)
            reason = shape_filter(raw, limits)
            core = core_fraction(obj, core_px)
            if reason is None and core < config.min_core_fraction:
                reason = (f"thin: {core:.0%} of it is wider than {config.min_core_width_m:g} m "
                          f"(< {config.min_core_fraction:.0%})")
            if reason:
                log.debug("%s dropped: %s (%s)", where, reason, feats)
                continue
            geom = regularize(geom, min_fill=config.rectangle_fill, cell=px)
            pair = (rmse[last], rmse[k])
            reg_rmse = max(pair) if all(math.isfinite(v) for v in pair) else float("nan")
            registration = registration_term(pair, (unregistered[last], unregistered[k]))
            # confidence: significance of the step, its persistence, registration and shape
            significance = 1.0 - math.exp(-max(0.0, magnitude / (0.5 * config.min_magnitude) - 1.0))
            clean = fstat / (fstat + 4.0 * model.min_fstat)
            persistence = min(1.0, ch.n_after / max(config.persistence + 1, 1))
            shape_term = 0.5 + 0.25 * min(1.0, raw.rectangularity) + 0.25 * min(1.0, raw.solidity)
            conf = significance * (0.5 + 0.5 * clean) * persistence * registration * shape_term
            log.debug("%s kept: %s", where, feats)
            records.append({
                "geometry": geom, "kind": kind,
                "last_absent": dates[last].isoformat(),
                "first_present": dates[k].isoformat(),
                "area_m2": round(_area_m2(geom, stack.crs), 2),
                "confidence": round(float(conf), 3),
                "score": round(magnitude, 3),
                "registration_rmse_px": round(float(reg_rmse), 4),
                "n_observations": int(use_t.sum()),
                "n_before": int(ch.n_before), "n_after": int(ch.n_after),
                "building_id": None,
                "_order": (dates[k], -geom.centroid.y, geom.centroid.x),
            })
    if progress is not None:
        progress("objects", n, n)
    log.info("%d candidate regions, %d kept as changes", n, len(records))
    records.sort(key=lambda r: r["_order"])
    for i, r in enumerate(records, start=1):
        r["change_id"] = f"chg-{i:04d}"
        r.pop("_order")
    return records


def _masked_mean(images: np.ndarray, usable: np.ndarray) -> np.ndarray:
    """Per-pixel mean over dates of usable observations, (bands, rows, cols)."""
    u = usable.astype(np.float32)
    return np.einsum("tbij,tij->bij", images, u) / np.maximum(u.sum(axis=0), 1)


def _footprint_windows(footprints, stack: Stack, margin: int):
    """Per footprint: its pixel window on the grid, unclipped (row0, row1, col0, col1), grown by ``margin``."""
    inv = ~stack.transform
    b = footprints.geometry.bounds.to_numpy()
    corners = [inv * (x, y) for x, y in ((b[:, 0], b[:, 1]), (b[:, 2], b[:, 3]),
                                          (b[:, 0], b[:, 3]), (b[:, 2], b[:, 1]))]
    cols = np.array([c for c, _ in corners])
    rows = np.array([r for _, r in corners])
    return np.stack([np.floor(rows.min(0)) - margin, np.ceil(rows.max(0)) + margin,
                     np.floor(cols.min(0)) - margin, np.ceil(cols.max(0)) + margin],
                    axis=1).astype(np.int64)


def _building_change_table(stack: Stack, model: _Model, footprints, regs, config: Config,
                           first_path: Path, progress: Progress | None, *, halo: int = 128):
    """Change statistics of every given footprint, read block by block.

    Footprints are grouped by the block of the grid holding their centre; each
    group's windows are read together once (a footprint far larger than a block
    is read on its own), so memory follows the block size, not the grid. The
    change masks come from the per-pixel stage's step raster (``first_path``),
    read with a ``halo`` for the hysteresis, not from a second step fit.
    Returns the per-building records, the per-date rows and the change-mask polygons.
    """
    import rasterio
    from rasterio.windows import Window

    from .buildings import building_change, footprint_mask

    dates = stack.dates
    rmse, unregistered = registration_errors(regs)
    margin = 4
    wins = _footprint_windows(footprints, stack, margin)
    h, w = stack.shape
    blk = _pixel_block(stack, config)      # every date of a group's window within the memory budget
    centre = np.stack([(wins[:, 0] + wins[:, 1]) // 2, (wins[:, 2] + wins[:, 3]) // 2], axis=1)
    key = np.clip(centre[:, 0] // blk, 0, None) * (w // blk + 2) + np.clip(centre[:, 1] // blk, 0, None)
    inside = (wins[:, 1] > 0) & (wins[:, 0] < h) & (wins[:, 3] > 0) & (wins[:, 2] < w)
    records: list = [None] * len(footprints)
    date_rows: list = [None] * len(footprints)
    masks: list = []
    ids = footprints["building_id"].tolist()
    geoms = footprints.geometry.values

    def unobservable(i):
        records[i] = {"building_id": ids[i], "status": "not_observable", "kind": None,
                      "last_absent": None, "first_present": None, "confidence": 0.0, "score": 0.0,
                      "changed_fraction": 0.0, "changed_area_m2": 0.0,
                      "area_m2": round(_area_m2(geoms[i], stack.crs), 2), "n_observations": 0,
                      "n_before": 0, "n_after": 0}
        date_rows[i] = [{"building_id": ids[i], "date": d.isoformat(), "status": "not_observable",
                         "mean_score": float("nan"), "max_score": float("nan"),
                         "changed_fraction": float("nan"), "valid_fraction": 0.0} for d in dates]

    for i in np.flatnonzero(~inside):
        unobservable(int(i))
    groups: dict[int, list[int]] = {}
    for i in np.flatnonzero(inside):
        groups.setdefault(int(key[i]), []).append(int(i))
    # a group is read as one window unless that window is much larger than a block
    jobs = []
    for k in sorted(groups):
        members = groups[k]
        r0, r1 = max(0, wins[members, 0].min()), min(h, wins[members, 1].max())
        c0, c1 = max(0, wins[members, 2].min()), min(w, wins[members, 3].max())
        if (r1 - r0) * (c1 - c0) <= 4 * blk * blk or len(members) == 1:
            jobs.append((members, (int(r0), int(r1), int(c0), int(c1))))
        else:
            for i in members:
                jobs.append(([i], (int(max(0, wins[i, 0])), int(min(h, wins[i, 1])),
                                   int(max(0, wins[i, 2])), int(min(w, wins[i, 3])))))
    done = 0
    codes_ds = rasterio.open(first_path)
    for members, (r0, r1, c0, c1) in jobs:
        window = Window(c0, r0, c1 - c0, r1 - r0)
        images, usable = _read_series(stack, model, window, config)
        # the per-pixel change map, weak pixels kept where they join strong ones of the same
        # date (as for objects); the halo lets the hysteresis see past the window's edge
        g0, g1 = max(0, r0 - halo), min(h, r1 + halo)
        f0, f1 = max(0, c0 - halo), min(w, c1 + halo)
        keep, _ = _hysteresis(codes_ds.read(1, window=Window(f0, g0, f1 - f0, g1 - g0)))
        changed_px = keep[r0 - g0:r1 - g0, c0 - f0:c1 - f0]
        for i in members:
            wr0, wr1, wc0, wc1 = (int(v) for v in wins[i])
            # rasterise on the unclipped window, so a footprint partly off the grid keeps its size
            full = footprint_mask(geoms[i], stack.window_transform(Window(wc0, wr0, wc1 - wc0, wr1 - wr0)),
                                  (wr1 - wr0, wc1 - wc0))
            a0, a1, b0, b1 = max(wr0, r0), min(wr1, r1), max(wc0, c0), min(wc1, c1)
            fp = full[a0 - wr0:a1 - wr0, b0 - wc0:b1 - wc0]
            if not fp.any():
                unobservable(i)
                continue
            sl = (slice(a0 - r0, a1 - r0), slice(b0 - c0, b1 - c0))
            ch = building_change(images[(slice(None), slice(None)) + sl], usable[(slice(None),) + sl],
                                 fp, scale=model.noise, min_magnitude=config.min_magnitude,
                                 min_fstat=model.min_fstat, persistence=config.persistence,
                                 changed_pixels=changed_px[sl], footprint_pixels=int(full.sum()),
                                 registration_rmse_px=rmse, registration_flagged=unregistered,
                                 n_spectral=stack.count)
            px_area = _area_m2(geoms[i], stack.crs) / max(int(full.sum()), 1)
            records[i] = {
                "building_id": ids[i], "status": ch.status, "kind": ch.kind,
                "last_absent": None if ch.last_absent is None else dates[ch.last_absent].isoformat(),
                "first_present": None if ch.first_present is None else dates[ch.first_present].isoformat(),
                "confidence": round(ch.confidence, 3), "score": round(ch.score, 3),
                "changed_fraction": round(ch.changed_fraction, 4),
                "changed_area_m2": round(float(ch.change_mask.sum()) * px_area, 2),
                "area_m2": round(_area_m2(geoms[i], stack.crs), 2), "n_observations": ch.n_observations,
                "n_before": ch.n_before, "n_after": ch.n_after}
            date_rows[i] = [{"building_id": ids[i], "date": d.isoformat(), "status": ch.date_status[t],
                             "mean_score": round(float(ch.mean_score[t]), 3),
                             "max_score": round(float(ch.max_score[t]), 3),
                             "changed_fraction": round(float(ch.date_changed_fraction[t]), 4),
                             "valid_fraction": round(float(ch.valid_fraction[t]), 4)}
                            for t, d in enumerate(dates)]
            if ch.change_mask.any():
                geom = polygonize(ch.change_mask, stack.window_transform(Window(b0, a0, b1 - b0, a1 - a0)))
                masks.append({"building_id": ids[i], "area_m2": round(_area_m2(geom, stack.crs), 2),
                              "geometry": geom})
        done += len(members)
        if progress is not None:
            progress("buildings", done, int(inside.sum()))
    codes_ds.close()
    return records, [r for rows in date_rows for r in rows], masks


def _attach_building_ids(changes, footprints) -> None:
    """Give each detected change the id of the footprint it mostly falls on (in place).

    A change belongs to a footprint when their overlap covers at least half of
    either: an annex on a mapped building, or a mapped building found as a change.
    """
    if len(changes) == 0 or len(footprints) == 0:
        return
    import shapely

    tree = shapely.STRtree(footprints.geometry.values)
    out = []
    for g in changes.geometry.values:
        best, best_ov = None, 0.0
        for j in tree.query(g, predicate="intersects"):
            f = footprints.geometry.values[j]
            ov = shapely.area(shapely.intersection(g, f))
            if ov >= 0.5 * min(g.area, f.area) and ov > best_ov:
                best, best_ov = footprints["building_id"].iloc[j], ov
        out.append(best)
    changes["building_id"] = out


def detect_changes(images: Sequence[str | os.PathLike], out_dir: str | os.PathLike | None = None, *,
                   config: Config | None = None, manifest: str | os.PathLike | None = None,
                   progress: Progress | None = None) -> Result:
    """Detect and date construction in a series of images of one site.

    Parameters
    ----------
    images : sequence of path-like
        Two or more georeferenced rasters with dates in their names, tags or
        ``manifest``.
    out_dir : path-like, optional
        Where to write ``changes.gpkg``/``.geojson``/``.kml`` and ``run.json``.
        Nothing is written there unless the whole run succeeds.
    config : Config, optional
        Parameters; defaults are the recommended ones.
    manifest : path-like, optional
        CSV with ``path,date`` columns.
    progress : callable, optional
        Called as ``progress(stage, done, total)``; ``total`` is 0 while it is
        not known yet (objects are found as the grid is scanned).

    Returns
    -------
    Result

    Raises
    ------
    ChangeDetectError
        Any input or processing problem, with a message saying how to fix it.
    """
    config = config or Config()
    timings: dict[str, float] = {}
    t0 = time.perf_counter()

    def mark(stage: str, since: float) -> float:
        now = time.perf_counter()
        timings[stage] = round(now - since, 3)
        return now

    if out_dir is not None:
        _check_out_dir(Path(out_dir), config.overwrite)
    stack = open_stack(images, manifest=manifest, reference=config.reference, bands=config.bands,
                       pixel_size=config.pixel_size)
    for i in range(len(stack)):
        check_not_empty(stack, i)
    footprints = None
    if config.buildings is not None:
        footprints = _open_footprints(stack, config)
    t = mark("open", t0)
    warnings: list[str] = []
    georeferenced = not is_unreferenced(stack.crs)
    if not georeferenced:
        msg = (f"The images are not georeferenced: they are on a local grid of {stack.pixel_size:g} m "
               "pixels from the reference image's upper-left corner (--pixel-size). Areas and lengths "
               "hold if that pixel size is right; positions are not on Earth (no KML; GeoJSON in "
               "local metres).")
        log.warning(msg)
        warnings.append(msg)
    guessed = [s.name for s in stack.scenes if s.band_source.startswith("guess")]
    if guessed:
        msg = (f"{len(guessed)} of {len(stack)} images declare no band roles (no band descriptions, "
               f"no colour interpretation), e.g. {guessed[0]}: their 4 bands are read as blue, "
               "green, red, NIR. If that is wrong, give --bands (e.g. --bands red,green,blue,nir).")
        log.warning(msg)
        warnings.append(msg)
    requested = config
    if len(stack) <= config.persistence:
        # a change after the last-but-`persistence` date could never be reported: with a
        # pair (or a short series) every change would be silently dropped
        config = dataclasses.replace(config, persistence=len(stack) - 1)
        msg = (f"Only {len(stack)} acquisitions: persistence lowered from {requested.persistence} "
               f"to {config.persistence}, so a change seen in the last image alone is reported; "
               "add later acquisitions to confirm such changes.")
        log.warning(msg)
        warnings.append(msg)
    # a change first seen on date k needs `persistence` acquisitions from k on: the last
    # persistence - 1 intervals can never hold a reported change; say which
    dates = [s.date.isoformat() for s in stack.scenes]
    n_dates, p = len(dates), config.persistence
    unexamined = [{"last_absent": dates[k - 1], "first_present": dates[k],
                   "reason": f"persistence {p}: a change must be seen in {p} acquisitions, "
                             f"{n_dates - k} follow"} for k in range(max(1, n_dates - p + 1), n_dates)]
    if unexamined:
        spans = ", ".join(f"{u['last_absent']} .. {u['first_present']}" for u in unexamined)
        msg = (f"{len(unexamined)} interval{'s' if len(unexamined) > 1 else ''} at the end of the "
               f"series cannot hold a reported change ({spans}): persistence {p} needs a change "
               f"to be seen in {p} acquisitions. Add later acquisitions, or lower --persistence "
               "to report changes seen in fewer.")
        log.warning(msg)
        warnings.append(msg)

    def reg_progress(done, total, name):
        if progress is not None:
            progress("co-registration", done, total)

    stack, regs = coregister(stack, method=config.coregister,
                             on_failure=config.on_registration_failure, progress=reg_progress,
                             seed=config.seed)
    t = mark("coregister", t)

    model, stats = _fit_model(stack, config, [r.flagged for r in regs])
    t = mark("normalise", t)

    # per-pixel products (first-change date, change count) wait here until the outputs move
    products_dir = Path(tempfile.mkdtemp(prefix="changedetect-products-"))
    try:
        with tempfile.TemporaryDirectory(prefix="changedetect-") as scratch:
            # per pixel, the date index of its step (-1: none) and its number of changes, kept on
            # disk, not in memory
            first_path = Path(scratch) / "first_present.tif"
            count_path = Path(scratch) / "count.tif"
            import rasterio

            block = _pixel_block(stack, config)
            blocks = list(stack.windows(block=block))
            # the change count refits every changed pixel's segments: only when it is written
            counting = out_dir is not None and config.pixel_products
            profile = dict(driver="GTiff", width=stack.width, height=stack.height, count=1,
                           crs=stack.crs, transform=stack.transform, tiled=True, blockxsize=256,
                           blockysize=256, compress="deflate")
            with rasterio.open(first_path, "w", dtype="int16", **profile) as dst, \
                    rasterio.open(count_path, "w", dtype="uint8", **profile) as cnt:
                for b, (inner, _) in enumerate(blocks, start=1):
                    images, usable = _read_series(stack, model, inner, config)
                    steps, changed = _pixel_steps(images, usable, model, config)
                    dst.write(np.where(changed, steps.first_present, -1).astype(np.int16), 1,
                              window=inner)
                    if counting:
                        cnt.write(_change_count(images, usable, steps, changed, model, config), 1,
                                  window=inner)
                    if progress is not None:
                        progress("pixels", b, len(blocks))
            t = mark("pixels", t)
            records = _objects(stack, model, first_path, regs, config, progress)
            t = mark("objects", t)
            products = {}
            if counting:
                products = _write_pixel_products(stack, first_path, count_path, products_dir)
                t = mark("pixel_products", t)
            if footprints is not None:
                building_tables = _building_change_table(stack, model, footprints, regs, config,
                                                         first_path, progress)
        changes = to_geodataframe(records, crs=stack.crs)
        buildings = building_dates = building_masks = None
        if footprints is not None:
            buildings, building_dates, building_masks = buildings_to_frames(footprints, *building_tables,
                                                                            crs=stack.crs)
            _attach_building_ids(changes, footprints)
            t = mark("buildings", t)

        run = {
            "changedetect": __version__,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "inputs": [{"name": s.name, "path": str(Path(s.path).resolve()), "sha256": s.sha256,
                        "date": s.date.isoformat(), "date_source": s.date_source,
                        "date_precision": s.date_precision,
                        "crs": s.crs.to_string(), "transform": list(s.transform)[:6],
                        "width": s.width, "height": s.height, "bands": s.count, "dtype": s.dtype,
                        "nodata": s.nodata, "bands_read": list(s.bands),
                        "band_roles": list(s.band_roles), "alpha_band": s.alpha,
                        "mask_band": s.has_mask, "band_roles_source": s.band_source}
                       for s in stack.scenes],
            "manifest": None if manifest is None else {"path": str(Path(manifest).resolve()),
                                                       "sha256": sha256_file(manifest)},
            "reference": stack.scenes[stack.reference].name,
            "baseline": stack.scenes[0].name,
            "grid": {"crs": stack.crs.to_string(), "transform": list(stack.transform)[:6],
                     "note": stack.grid_note or None, "georeferenced": georeferenced,
                     "width": stack.width, "height": stack.height},
            "parameters": dataclasses.asdict(requested),
            "effective_parameters": dataclasses.asdict(config),
            "warnings": warnings,
            "unexamined_intervals": unexamined,
            "versions": versions(),
            "cpu": cpu_dispatch(),
            "registration": {r.scene: r.to_dict() for r in regs},
            **stats,
            "n_changes": int(len(changes)),
            "changes_by_kind": {k: int(v) for k, v in changes["kind"].value_counts().sort_index().items()},
            "timings_s": timings,
        }
        if footprints is not None:
            run["buildings"] = {
                "path": str(Path(config.buildings).resolve()), "sha256": sha256_file(config.buildings),
                "n": int(len(buildings)),
                "by_status": {k: int(v) for k, v in buildings["status"].value_counts().sort_index().items()},
                "changes_on_footprints": int(changes["building_id"].notna().sum())}
        outputs: dict = {}
        if out_dir is not None:
            outputs = _write_outputs(Path(out_dir), changes, run, config, stack, regs, progress,
                                     buildings=(buildings, building_dates, building_masks),
                                     rasters=products)
        timings["total"] = round(time.perf_counter() - t0, 3)
        return Result(changes=changes, registrations=regs, run=run, outputs=outputs, buildings=buildings,
                      building_dates=building_dates, building_masks=building_masks)
    finally:
        shutil.rmtree(products_dir, ignore_errors=True)


def _open_footprints(stack: Stack, config: Config):
    """Read ``config.buildings`` onto the stack's CRS; none of them on the imagery is an error."""
    from rasterio.transform import array_bounds
    from shapely.geometry import box

    from .buildings import read_footprints
    from .errors import NoOverlapError

    fps = read_footprints(config.buildings, stack.crs, id_column=config.building_id_column)
    extent = box(*array_bounds(stack.height, stack.width, stack.transform))
    if not fps.intersects(extent).any():
        fb = fps.total_bounds
        raise NoOverlapError(
            f"None of the {len(fps)} footprints in {config.buildings} falls on the imagery "
            f"(footprints span {fb.round(1).tolist()}, imagery {list(np.round(extent.bounds, 1))} in "
            f"{stack.crs.to_string()}); check that the file covers this site and that its CRS is right.")
    return fps


_STAGING = ".changedetect-staging-"


def _is_earlier_run(folder: Path) -> bool:
    try:
        return "changedetect" in json.loads((folder / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, TypeError):
        return False


def _check_out_dir(out_dir: Path, overwrite: bool) -> None:
    """Refuse, before any work, an output folder that holds an earlier run (unless ``overwrite``)."""
    from .errors import OutputError, OutputExistsError

    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"--out {out_dir} is a file, not a folder. Choose a folder.")
    entries = sorted(p.name for p in out_dir.iterdir()) if out_dir.is_dir() else []
    if not entries:
        return
    shown = ", ".join(entries[:4]) + (", ..." if len(entries) > 4 else "")
    if not overwrite:
        raise OutputExistsError(
            f"The output folder {out_dir} is not empty ({len(entries)} entries: {shown}). Choose "
            "another --out, or add --overwrite to replace the earlier run there as a whole.")
    if not _is_earlier_run(out_dir):
        raise OutputExistsError(
            f"The output folder {out_dir} holds files ({shown}) but no run.json of changedetect: "
            "--overwrite only replaces an earlier run, it does not empty other folders. Choose "
            "another --out.")


def _write_outputs(out_dir: Path, changes, run: dict, config: Config, stack, regs, progress, *,
                   buildings=(None, None, None), rasters: dict | None = None) -> dict:
    """Write the whole set into a staging folder beside ``out_dir``, then swap it in.

    ``out_dir`` is either absent, empty, or (with ``overwrite``) an earlier run,
    which is moved aside and deleted only once the new set is in place: no
    file of it survives, and a failure leaves it as it was.
    """
    from .coregister import save_registered
    from .errors import OutputError

    _check_out_dir(out_dir, config.overwrite)        # again: the folder may have changed meanwhile
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}{_STAGING}", dir=out_dir.parent))
    except OSError as exc:
        raise OutputError(f"Cannot create the output folder {out_dir}: {exc.strerror}. "
                          "Choose another --out.") from None
    try:
        written = export(changes, staging, formats=config.formats)
        if buildings[0] is not None:
            written.update(export_buildings(*buildings, staging, formats=config.formats))
        for name, path in (rasters or {}).items():
            shutil.move(str(path), staging / name)
            written[name] = staging / name
        run["outputs"] = {p.name: sha256_file(p) for p in written.values()}
        registered = {}
        if config.save_registered:
            def reg_progress(done, total, name):
                if progress is not None:
                    progress("registered", done, total)
            registered = save_registered(stack, regs, staging / ".registered", block=max(config.block, 1024),
                                         progress=reg_progress)
            run["registered"] = {"folder": str(Path(config.save_registered).resolve()),
                                 "files": {name: sha256_file(p) for name, p in registered.items()}}
        write_text(staging / "run.json", json.dumps(run, indent=2, default=str) + "\n")
        final = {}
        if registered:
            target = Path(config.save_registered)
            target.mkdir(parents=True, exist_ok=True)
            for name, p in registered.items():
                os.replace(p, target / name)
                final[name] = target / name
        shutil.rmtree(staging / ".registered", ignore_errors=True)
        names = sorted(p.name for p in staging.iterdir())
        old = None
        try:
            if out_dir.is_dir() and any(out_dir.iterdir()):
                old = out_dir.parent / f".{out_dir.name}.replaced-{os.getpid()}"
                shutil.rmtree(old, ignore_errors=True)
                os.replace(out_dir, old)
            elif out_dir.is_dir():
                out_dir.rmdir()
            os.replace(staging, out_dir)
        except OSError as exc:
            if old is not None and not out_dir.exists():
                os.replace(old, out_dir)             # put the earlier run back
            raise OutputError(f"Cannot move the results into {out_dir}: {exc.strerror}. "
                              "Choose another --out.") from None
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        final.update({name: out_dir / name for name in names})
        return final
    finally:
        shutil.rmtree(staging, ignore_errors=True)
