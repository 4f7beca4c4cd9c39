"""The end-to-end run: images in, dated change polygons and a run record out.

``detect_changes`` runs the stages of DESIGN.md in order, with one
:class:`~changedetect.config.Config`:

1. :func:`~changedetect.stack.open_stack` — the dated scenes on one grid;
2. :func:`~changedetect.coregister.coregister` — every scene onto the reference;
3. :func:`~changedetect.series.fit_series_model` — normalisation to the
   baseline, noise, thresholds;
4. the per-pixel stage — a :class:`~changedetect.detector.Detector` over every
   block of the grid, its answer kept on disk as the step raster;
5. :func:`~changedetect.objects.extract_objects` — regions dated, judged, outlined;
6. :func:`~changedetect.buildings.footprint_table` — with given footprints;
7. :mod:`~changedetect.output` — the files, swapped into place only when the
   whole run succeeded, and ``run.json``.

Pixels are processed block by block, so memory follows the block, not the grid.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .buildings import attach_building_ids, footprint_table, open_footprints
from .config import Config
from .coregister import Registration, coregister
from .detector import AUTO, PixelChange, SeriesWindow, change_count, check_answer, get_detector, resolve
from .io import is_unreferenced, raster_profile
from .objects import extract_objects
from .output import check_out_dir, run_record, write_outputs, write_pixel_products
from .series import fit_series_model, pixel_block, read_series, sample_windows
from .stack import Stack, check_not_empty, open_stack
from .vector import buildings_to_frames, to_geodataframe

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


def _notes(stack: Stack, config: Config) -> tuple[Config, list[str], list[dict]]:
    """What the user must know before trusting the run: the warnings, the configuration that runs, the
    intervals that cannot hold a reported change."""
    warnings: list[str] = []

    def warn(msg):
        log.warning(msg)
        warnings.append(msg)

    if is_unreferenced(stack.crs):
        warn(f"The images are not georeferenced: they are on a local grid of {stack.pixel_size:g} m "
             "pixels from the reference image's upper-left corner (--pixel-size). Areas and lengths "
             "hold if that pixel size is right; positions are not on Earth (no KML; GeoJSON in "
             "local metres).")
    guessed = [s.name for s in stack.scenes if s.band_source.startswith("guess")]
    if guessed:
        warn(f"{len(guessed)} of {len(stack)} images declare no band roles (no band descriptions, "
             f"no colour interpretation), e.g. {guessed[0]}: their 4 bands are read as blue, "
             "green, red, NIR. If that is wrong, give --bands (e.g. --bands red,green,blue,nir).")
    requested = config
    if len(stack) <= config.persistence:
        # a change after the last-but-`persistence` date could never be reported: with a
        # pair (or a short series) every change would be silently dropped
        config = dataclasses.replace(config, persistence=len(stack) - 1)
        warn(f"Only {len(stack)} acquisitions: persistence lowered from {requested.persistence} "
             f"to {config.persistence}, so a change seen in the last image alone is reported; "
             "add later acquisitions to confirm such changes.")
    # a change first seen on date k needs `persistence` acquisitions from k on: the last
    # persistence - 1 intervals can never hold a reported change; say which
    dates = [s.date.isoformat() for s in stack.scenes]
    n_dates, p = len(dates), config.persistence
    unexamined = [{"last_absent": dates[k - 1], "first_present": dates[k],
                   "reason": f"persistence {p}: a change must be seen in {p} acquisitions, "
                             f"{n_dates - k} follow"} for k in range(max(1, n_dates - p + 1), n_dates)]
    if unexamined:
        spans = ", ".join(f"{u['last_absent']} .. {u['first_present']}" for u in unexamined)
        warn(f"{len(unexamined)} interval{'s' if len(unexamined) > 1 else ''} at the end of the "
             f"series cannot hold a reported change ({spans}): persistence {p} needs a change "
             f"to be seen in {p} acquisitions. Add later acquisitions, or lower --persistence "
             "to report changes seen in fewer.")
    return config, warnings, unexamined


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
        check_out_dir(Path(out_dir), config.overwrite)
    # a missing plugin or model file stops the run before any work
    early = get_detector(config.detector, config) if config.detector != AUTO else None
    stack = open_stack(images, manifest=manifest, reference=config.reference, bands=config.bands,
                       pixel_size=config.pixel_size)
    for i in range(len(stack)):
        check_not_empty(stack, i)
    footprints = None
    if config.buildings is not None:
        footprints = open_footprints(config.buildings, stack, id_column=config.building_id_column)
    requested = config
    config, warnings, unexamined = _notes(stack, config)
    detector = (early if early is not None and config is requested
                else get_detector(resolve(config.detector, len(stack)), config))
    t = mark("open", t0)

    def reg_progress(done, total, name):
        if progress is not None:
            progress("co-registration", done, total)

    stack, regs = coregister(stack, method=config.coregister, on_failure=config.on_registration_failure,
                             progress=reg_progress, seed=config.seed)
    t = mark("coregister", t)
    model, stats = fit_series_model(stack, [r.flagged for r in regs], alpha=config.alpha,
                                    skip_flagged=config.on_registration_failure == "skip",
                                    transient_sigma=config.transient_sigma,
                                    transient_fill_m2=config.transient_fill_m2)
    stats = {"thresholds": {"min_magnitude_sigma": config.min_magnitude, "min_fstat": round(model.min_fstat, 4),
                            "fstat_alpha": config.alpha}, "detector": detector.name, **stats}
    if callable(getattr(detector, "fit", None)):         # statistics of the whole scene, once
        detector.fit(_sample(stack, model, memory_mb=config.memory_mb))
        if callable(getattr(detector, "to_dict", None)):
            stats["detector_fit"] = detector.to_dict()
    t = mark("normalise", t)
    block = pixel_block(stack, block=config.block, memory_mb=config.memory_mb)

    # per-pixel products (first-change date, change count) wait here until the outputs move
    products_dir = Path(tempfile.mkdtemp(prefix="changedetect-products-"))
    try:
        with tempfile.TemporaryDirectory(prefix="changedetect-") as scratch:
            # the per-pixel stage's answer (date index and strength of every pixel) and the change
            # count, kept on disk, not in memory
            step_path, count_path = Path(scratch) / "steps.tif", Path(scratch) / "count.tif"
            counting = out_dir is not None and config.pixel_products
            _pixel_stage(stack, model, detector, config, step_path, count_path, block=block,
                         counting=counting, progress=progress)
            t = mark("pixels", t)
            records = extract_objects(stack, model, step_path, regs, config, progress)
            stats["confidence_terms"] = {r["change_id"]: r["confidence_terms"] for r in records}
            t = mark("objects", t)
            products = {}
            if counting:
                products = write_pixel_products(stack, step_path, count_path, products_dir)
                t = mark("pixel_products", t)
            if footprints is not None:
                tables = footprint_table(stack, model, footprints, regs, step_path,
                                         min_magnitude=config.min_magnitude,
                                         persistence=config.persistence, block=block, progress=progress,
                                         stats=stats.setdefault("footprint_decision", {}))
        changes = to_geodataframe(records, crs=stack.crs)
        buildings = building_dates = building_masks = None
        if footprints is not None:
            buildings, building_dates, building_masks = buildings_to_frames(footprints, *tables, crs=stack.crs)
            attach_building_ids(changes, footprints)
            t = mark("buildings", t)
        run = run_record(stack, regs, requested=requested, config=config, manifest=manifest,
                         warnings=warnings, unexamined=unexamined, stats=stats, changes=changes,
                         buildings=buildings, timings=timings)
        outputs: dict = {}
        if out_dir is not None:
            evidence = ({r["change_id"]: r["usable_dates"] for r in records} if config.evidence else None)
            outputs = write_outputs(Path(out_dir), changes, run, config, stack, regs, progress,
                                    buildings=(buildings, building_dates, building_masks), rasters=products,
                                    evidence=evidence)
        timings["total"] = round(time.perf_counter() - t0, 3)
        return Result(changes=changes, registrations=regs, run=run, outputs=outputs, buildings=buildings,
                      building_dates=building_dates, building_masks=building_masks)
    finally:
        shutil.rmtree(products_dir, ignore_errors=True)


def _sample(stack: Stack, model, *, memory_mb: int, size: int = 256) -> SeriesWindow:
    """Windows spread over the site, side by side in one :class:`SeriesWindow`, for a detector's ``fit``.

    Up to 16 windows of ``size`` pixels (the whole grid when it is smaller),
    as many as fit a third of the memory budget with every date; the
    ``transform`` is the first window's.
    """
    per_window = size * size * len(stack) * (stack.count + 1) * 4 * 3
    n = int(max(1, min(16, memory_mb * 2**20 // per_window)))
    windows = sample_windows(stack, size=size, n=n)
    parts = [read_series(stack, model, w) for w in windows]
    return SeriesWindow(images=np.concatenate([p[0] for p in parts], axis=-1),
                        usable=np.concatenate([p[1] for p in parts], axis=-1), dates=tuple(stack.dates),
                        band_roles=stack.band_roles, noise=model.noise, dark=model.dark,
                        transform=stack.window_transform(windows[0]), crs=stack.crs, pixel_size=stack.pixel_size)


def _pixel_stage(stack: Stack, model, detector, config: Config, step_path: Path, count_path: Path, *,
                 block: int, counting: bool, progress: Progress | None) -> None:
    """Run the detector over every block; write its answer (date, strength) and the change count."""
    import rasterio

    halo = int(getattr(detector, "halo", 0) or 0)
    blocks = list(stack.windows(block=block, halo=halo))
    grid = dict(crs=stack.crs, transform=stack.transform)
    with rasterio.open(step_path, "w", **raster_profile(stack.width, stack.height, 2, "int32", **grid)) as dst, \
            rasterio.open(count_path, "w", **raster_profile(stack.width, stack.height, 1, "uint8", **grid)) as cnt:
        for b, (inner, outer) in enumerate(blocks, start=1):
            images, usable = read_series(stack, model, outer)
            window = SeriesWindow(images=images, usable=usable, dates=tuple(stack.dates), band_roles=stack.band_roles,
                                  noise=model.noise, dark=model.dark, transform=stack.window_transform(outer),
                                  crs=stack.crs, pixel_size=stack.pixel_size)
            answer = check_answer(detector.detect(window), window, detector.name)
            if halo:                                     # the detector's context, cropped off again
                sl = (slice(int(inner.row_off - outer.row_off), int(inner.row_off - outer.row_off + inner.height)),
                      slice(int(inner.col_off - outer.col_off), int(inner.col_off - outer.col_off + inner.width)))
                answer = PixelChange(answer.first_present[sl], answer.strong[sl],
                                     None if answer.weak is None else answer.weak[sl])
                images, usable = images[(Ellipsis,) + sl], usable[(Ellipsis,) + sl]
            date, strength = answer.codes()
            dst.write(np.stack([date, strength.astype(np.int32)]), window=inner)
            if counting:
                cnt.write(change_count(images, usable, answer.first_present, answer.changed, noise=model.noise,
                                       min_magnitude=config.min_magnitude, min_fstat=model.min_fstat,
                                       persistence=config.persistence), 1, window=inner)
            if progress is not None:
                progress("pixels", b, len(blocks))
