"""Per-building change for given footprints.

Analysts often have the buildings already: an OpenStreetMap extract, a cadastre,
footprints digitised by hand. Given such footprints, the question becomes "did
this building change, and between which two acquisitions?". For every footprint
and every date this module gives change statistics (mean and largest score,
the share of changed pixels), a status, and for the building as a whole the
date bracket of its change, its kind and a confidence.

* :func:`read_footprints` reads a GeoPackage, GeoJSON or Shapefile in any CRS,
  keeps its polygons, gives each one a ``building_id`` and reprojects it onto
  the stack's CRS, with an error that names the file and the fix when it cannot.
* :func:`footprint_mask` rasterises one footprint onto a window of the grid.
* :func:`building_change` is the per-building computation, a pure function of
  the normalised image series of a window, so it can be checked by hand and
  used in a notebook on any array.

* :func:`footprint_table` reads the footprints' windows of every date from
  the stack, block by block, and calls :func:`building_change` for each one;
  :func:`attach_building_ids` gives detected changes the id of the footprint
  they fall on. The pipeline (:func:`changedetect.detect_changes` with
  ``Config(buildings=...)``) runs both.

Statuses
--------
``unchanged``
    The building's series has no significant step on this date's side.
``changed``
    From the first date of a significant step onwards (new construction on an
    empty footprint, or a modification of a standing building).
``demolished``
    From the first date on which a standing building is gone.
``not_observable``
    Fewer than half of the footprint's pixels hold usable data on that date
    (outside the imagery, nodata, cloud, a scene that failed registration).
    Such a date is skipped by the dating, never counted as "unchanged".
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import ndimage as ndi

from .confidence import confidence as change_confidence, extent_form
from .coregister import registration_errors, registration_term
from .detect import threshold_otsu_exact
from .detector import hysteresis
from .errors import CRSError, InputError, NoOverlapError, UnreadableFileError
from .objects import outline_edges, polygonize
from .series import SeriesModel, read_series
from .stack import Stack, area_m2
from .timeline import masked_mean, series_change

__all__ = ["ID_COLUMNS", "STATUSES", "read_footprints", "open_footprints", "footprint_mask", "BuildingChange",
           "building_change", "step_significance", "noise_floor", "population_thresholds",
           "describe_decision", "footprint_kind", "footprint_windows", "footprint_table", "attach_building_ids"]

#: Columns tried, in order, for the building id when none is named.
ID_COLUMNS = ("building_id", "id", "Id", "ID", "osm_id", "osm_way_id", "fid")
#: Pixels 2 or more from a footprint's edge it needs for its kind to be judged from its outline.
_MIN_INTERIOR = 4
#: Status of a building on one date (see the module docstring).
STATUSES = ("unchanged", "changed", "demolished", "not_observable")


def read_footprints(path: str | os.PathLike, crs, *, id_column: str | None = None):
    """Read building footprints and reproject them onto ``crs``.

    Parameters
    ----------
    path : path-like
        Any vector file GDAL reads (GeoPackage, GeoJSON, Shapefile, ...), in any CRS.
    crs : CRS-like
        The stack's CRS.
    id_column : str, optional
        Column holding the building ids. By default the first of
        :data:`ID_COLUMNS` present is used; without one, ids are ``bld-00001``,
        ... in file order.

    Returns
    -------
    geopandas.GeoDataFrame
        Columns ``building_id`` (str, unique) and ``geometry`` (polygons), in
        ``crs``, in file order. Points and lines are dropped (with a count in the
        log); invalid polygons are repaired.

    Raises
    ------
    UnreadableFileError
        Missing or unreadable file.
    CRSError
        The file has no CRS.
    InputError
        No polygon, an unknown ``id_column``, or duplicate ids.
    """
    import logging

    import geopandas as gpd
    import shapely

    log = logging.getLogger(__name__)
    p = os.fspath(path)
    if not os.path.exists(p):
        raise UnreadableFileError(f"Footprint file {p} does not exist; check the --buildings path.")
    try:
        gdf = gpd.read_file(p, engine="pyogrio")
    except Exception as exc:  # pyogrio raises several error types for unreadable files
        raise UnreadableFileError(
            f"Cannot read footprints from {p} ({exc}); give a GeoPackage, GeoJSON or Shapefile "
            "with building polygons.") from None
    if len(gdf) == 0:
        raise InputError(f"Footprint file {p} holds no feature; give a file with building polygons.")
    if gdf.crs is None:
        raise CRSError(f"Footprint file {p} has no CRS; assign the one it was drawn in, e.g. "
                       f"`ogr2ogr -a_srs EPSG:4326 fixed.gpkg {p}`.")
    if id_column is not None and id_column not in gdf.columns:
        raise InputError(f"Footprint file {p} has no column {id_column!r}; its columns are "
                         f"{[c for c in gdf.columns if c != 'geometry']}.")
    col = id_column or next((c for c in ID_COLUMNS if c in gdf.columns), None)
    geoms = gdf.geometry.values
    ok = ~(shapely.is_missing(geoms) | shapely.is_empty(geoms))
    geoms = np.where(ok, shapely.make_valid(np.where(ok, geoms, shapely.Point())), None)
    polygons = np.array([_polygonal(g) for g in geoms], dtype=object)
    keep = np.array([g is not None for g in polygons])
    if not keep.any():
        raise InputError(f"Footprint file {p} holds no polygon ({len(gdf)} features of other types); "
                         "give building outlines as polygons.")
    if not keep.all():
        log.info("%s: %d features that are not polygons were ignored", p, int((~keep).sum()))
    if col is None:
        ids = np.array([f"bld-{i + 1:05d}" for i in range(len(gdf))], dtype=object)
    else:
        if gdf[col].isna().any():
            raise InputError(f"Footprint file {p}: column {col!r} is empty for "
                             f"{int(gdf[col].isna().sum())} features; fill it or choose another "
                             "--building-id-column.")
        ids = gdf[col].map(_id_text).to_numpy(dtype=object)
    ids = ids[keep]
    uniq, counts = np.unique(ids.astype(str), return_counts=True)
    if (counts > 1).any():
        dup = uniq[counts > 1]
        raise InputError(f"Footprint file {p}: building ids in column {col!r} are not unique "
                         f"({len(dup)} repeated, e.g. {list(dup[:3])}); choose another "
                         "--building-id-column or remove the duplicates.")
    out = gpd.GeoDataFrame({"building_id": ids.astype(str)}, geometry=list(polygons[keep]),
                           crs=gdf.crs)
    return out.to_crs(crs) if out.crs != crs else out


def _id_text(v) -> str:
    """Ids as text; a float that holds an integer (1234.0 from a Shapefile) prints as one."""
    if isinstance(v, (float, np.floating)) and float(v).is_integer():
        return str(int(v))
    return str(v)


def _polygonal(g):
    """The polygonal part of a geometry, or None."""
    import shapely

    if g is None:
        return None
    if g.geom_type in ("Polygon", "MultiPolygon"):
        return g
    if g.geom_type == "GeometryCollection":
        parts = [x for x in g.geoms if x.geom_type in ("Polygon", "MultiPolygon")]
        return shapely.union_all(parts) if parts else None
    return None


def footprint_mask(geom, transform, shape: tuple[int, int]) -> np.ndarray:
    """Pixels of a window covered by a footprint (their centres inside it).

    A footprint so small or thin that no pixel centre falls inside it gets
    every pixel it touches, so no building is silently empty.

    Examples
    --------
    >>> from affine import Affine
    >>> from shapely.geometry import box
    >>> m = footprint_mask(box(1, -3, 3, -1), Affine(1, 0, 0, 0, -1, 0), (4, 4))
    >>> m.astype(int)
    array([[0, 0, 0, 0],
           [0, 1, 1, 0],
           [0, 1, 1, 0],
           [0, 0, 0, 0]])
    """
    from rasterio.features import rasterize

    m = rasterize([(geom, 1)], out_shape=shape, transform=transform, fill=0, dtype="uint8")
    if not m.any():
        m = rasterize([(geom, 1)], out_shape=shape, transform=transform, fill=0, dtype="uint8",
                      all_touched=True)
    return m.astype(bool)


@dataclass(frozen=True)
class BuildingChange:
    """The change of one footprint across the series (see :func:`building_change`).

    Attributes
    ----------
    status : str
        ``changed``, ``demolished``, ``unchanged``, or ``not_observable`` when
        fewer than ``1 + persistence`` dates were observable.
    kind : str or None
        ``new``, ``modified`` or ``demolished`` for a change, else None.
    first_present, last_absent : int or None
        Date indices of the change's bracket (None without a change).
    score : float
        Net step of the footprint's mean series, in noise standard deviations.
    fstat : float
        F statistic of the step fit.
    confidence : float
        0–1, from the step's significance and cleanliness, its persistence,
        the share of the footprint that changed, and registration (0 without
        a change).
    changed_fraction : float
        Share of the footprint's pixels whose own series has a significant
        step (``change_mask``).
    change_mask : ndarray of bool
        Those pixels, on the window.
    n_observations : int
        Dates on which the footprint was observable.
    n_before, n_after : int
        Of those, the ones that support each side of the change: before
        ``first_present`` and in the final state (0 and 0 without a change).
    date_status : tuple of str
        Status on every date.
    mean_score, max_score, date_changed_fraction, valid_fraction : ndarray, (dates,)
        Per date: the mean and largest per-pixel score over the footprint's usable
        pixels (distance of that date's observation from the state before the
        change, in noise sigmas; NaN when not observable), the share of them at
        or above ``min_magnitude``, and the share of the footprint's pixels that
        were usable.
    """

    status: str
    kind: str | None
    first_present: int | None
    last_absent: int | None
    score: float
    fstat: float
    confidence: float
    changed_fraction: float
    change_mask: np.ndarray
    n_observations: int
    date_status: tuple[str, ...]
    mean_score: np.ndarray
    max_score: np.ndarray
    date_changed_fraction: np.ndarray
    valid_fraction: np.ndarray
    n_before: int = 0
    n_after: int = 0


def building_change(images: np.ndarray, usable: np.ndarray, footprint: np.ndarray, *,
                    scale: np.ndarray, min_magnitude: float = 14.0, min_fstat: float = 0.0,
                    persistence: int = 2, min_valid: float = 0.8, min_changed_share: float = 0.3,
                    n_spectral: int | None = None, max_gain: float = 1.25, max_angle_deg: float = 2.0,
                    changed_pixels: np.ndarray | None = None, footprint_pixels: int | None = None,
                    registration_rmse_px: float | Sequence[float] = 0.0,
                    registration_flagged: Sequence[bool] | None = None,
                    min_score: float | None = None, min_significance: float = 0.0) -> BuildingChange:
    """Change statistics, status per date and dated change of one footprint.

    The footprint's mean series (over its usable pixels, on dates where at least
    ``min_valid`` of it is usable) is fitted with one or two steps
    (:func:`changedetect.timeline.series_change`). The building changed when
    the net step reaches ``min_magnitude / 2`` noise sigmas (a mean over many
    pixels is far less noisy than one pixel, as for detected objects) and its
    F statistic reaches ``min_fstat``, and the step is either as large as
    ``min_magnitude``, or covers ``min_changed_share`` of the footprint, or
    makes a building appear or disappear (see below). Its kind comes from the outline: a
    footprint with a sharp outline on both sides of the step is a standing
    building that was modified; one whose outline appears is new, one whose
    outline fades is demolished.

    Parameters
    ----------
    images : ndarray, shape (dates, bands, rows, cols)
        Radiometrically normalised series over a window holding the footprint
        with a margin of a few pixels (the outline test looks just outside it).
    usable : ndarray of bool, shape (dates, rows, cols)
    footprint : ndarray of bool, shape (rows, cols)
        The footprint's pixels inside the grid.
    scale : ndarray, shape (bands,)
        Noise standard deviation of one observation, per band.
    min_magnitude, min_fstat, persistence :
        As in :class:`changedetect.config.Config`: the per-pixel change
        threshold (sigmas), the F threshold, and the usable dates the changed
        state must hold.
    min_valid : float
        Share of the footprint that must be usable for a date to be observed.
        A partly hidden footprint is not used: the hidden part's edge (a
        cloud's soft rim, haze) usually spoils the visible part too.
    min_changed_share : float
        Share of the footprint whose own pixels must have changed
        (``change_mask``) for a step smaller than ``min_magnitude`` to count:
        a building changes as a whole or in a large part (a new roof, an
        annex), while radiometry and shadows move a few pixels or all of
        them a little.
    changed_pixels : ndarray of bool, optional
        The pipeline's per-pixel change map on the window; restricted to the
        footprint it is the building's change mask. Without it the mask holds
        the pixels whose score on every observed date of the final state
        reaches ``min_magnitude``.
    n_spectral : int, optional
        The first ``n_spectral`` bands are spectral (the pipeline appends a
        texture channel); all of them by default.
    max_gain, max_angle_deg : float
        A standing building (``modified``) whose mean spectrum only scaled by
        less than ``max_gain`` (either way) while keeping its direction within
        ``max_angle_deg`` is not reported: such a change looks the same as
        haze, a sun angle on a pitched roof or a normalisation error at the
        bright end.
    footprint_pixels : int, optional
        Pixels of the whole footprint when part of it lies outside the grid
        (the shares are of the whole footprint); ``footprint.sum()`` by default.
    registration_rmse_px : float or sequence of float
        Registration residual of every scene (the worse of the two around the
        step is used), or one value for all; NaN where unknown.
    registration_flagged : sequence of bool, optional
        Scenes kept on their georeferencing alone (their ``registration_rmse_px``
        is then the estimated error); see
        :func:`changedetect.coregister.registration_term`.
    min_score : float, optional
        The site's own threshold on the step (noise sigmas), from the population
        of its footprints (:func:`population_thresholds`). When given, a
        building also changed when its step reaches it, its F statistic reaches
        ``min_fstat`` and ``min_significance``, and the step is significant
        against observation noise (:func:`noise_floor`): it stands out of its
        site, whatever the sensor noise says. The rules above still hold (a
        small step that covers most of a footprint, or makes its outline come
        or go, is a change); the kind and the check on modified buildings are
        the same.
    min_significance : float
        With ``min_score``: the site's threshold on the step's significance
        against the footprint's own scatter between dates, as -log10 of the
        F test's p-value (:func:`step_significance`).

    Returns
    -------
    BuildingChange

    Examples
    --------
    A 4 x 4 footprint, one band with noise sigma 1, bare (0) on dates 0-1 and
    covered by a roof (30) from date 2 on:

    >>> img = np.zeros((5, 1, 8, 8)); img[2:, 0, 2:6, 2:6] = 30.0
    >>> fp = np.zeros((8, 8), bool); fp[2:6, 2:6] = True
    >>> c = building_change(img, np.ones((5, 8, 8), bool), fp, scale=np.array([1.0]))
    >>> c.status, c.first_present, c.last_absent, c.date_status
    ('changed', 2, 1, ('unchanged', 'unchanged', 'changed', 'changed', 'changed'))
    >>> c.mean_score.tolist(), c.changed_fraction
    ([0.0, 0.0, 30.0, 30.0, 30.0], 1.0)
    """
    images = np.asarray(images, dtype=np.float32)
    usable = np.asarray(usable, bool)
    fp = np.asarray(footprint, bool)
    n_t = images.shape[0]
    if images.ndim != 4 or usable.shape != (n_t,) + images.shape[2:] or fp.shape != images.shape[2:]:
        raise InputError("building_change needs images (dates, bands, rows, cols), usable "
                         "(dates, rows, cols) and a footprint (rows, cols) on the same window.")
    total = int(footprint_pixels if footprint_pixels is not None else fp.sum())
    n_spectral = images.shape[1] if n_spectral is None else int(n_spectral)
    inv = (1.0 / np.asarray(scale, dtype=np.float32))[:, None]
    px = images[:, :, fp]                                  # (dates, bands, pixels)
    u = usable[:, fp]                                      # (dates, pixels)
    n_use = u.sum(axis=1)
    valid_fraction = n_use / max(total, 1)
    observed = (valid_fraction >= min_valid) & (n_use > 0)
    n_obs = int(observed.sum())
    # centre every pixel on its own usable mean before averaging: a date on which only part of
    # the footprint is usable (a cloud edge, a nodata wedge) then measures the same thing as the
    # others, instead of the mean of a different set of pixels (a pad and a roof, roof and shadow)
    own = masked_mean(px, u)
    series = masked_mean(px - own[None], u, over="pixels") + own.mean(axis=1)[None]
    ch = series_change(series, observed, scale=np.asarray(scale), min_after=persistence) \
        if n_obs >= 1 + persistence else None
    n_px = float(np.mean(n_use[observed])) if n_obs else 0.0

    def site_says(c) -> bool:
        return (min_score is not None and c is not None and c.fstat >= min_fstat
                and c.magnitude >= max(min_score, noise_floor(c.n_before, c.n_after, n_px, series.shape[1]))
                and step_significance(c.fstat, n_obs, series.shape[1]) >= min_significance)

    def steps_enough(c) -> bool:
        return c is not None and c.fstat >= min_fstat and (c.magnitude >= 0.5 * min_magnitude or site_says(c))

    stepped = steps_enough(ch)

    def scores(before_t):
        """Per-pixel distance of every date from the mean of the ``before_t`` dates, in sigmas."""
        w = u & before_t[:, None]
        base = masked_mean(px, w)
        d = np.sqrt(np.sum(((px - base[None]) * inv[None]) ** 2, axis=1))    # (dates, pixels)
        return d, u & w.any(axis=0)[None]

    steps = np.arange(n_t)
    # the state before the step (or the building's usual state when it has none)
    before_t = observed & (steps < ch.first_present) if stepped else observed
    d, ok = scores(before_t)
    if stepped and ch.steps == 2:
        # an intermediate state (a cleared pad, walls) dates the start of construction only
        # when it covers most of the footprint; a part of it (a shadow that comes and goes
        # with the seasons) must not move the date: then one step is fitted
        mid = observed & (steps >= ch.first_present) & (steps < ch.completed)
        share = np.mean([(d[t][ok[t]] >= min_magnitude).mean() for t in np.flatnonzero(mid)
                         if ok[t].any()] or [0.0])
        if share < 0.6:
            ch = series_change(series, observed, scale=np.asarray(scale), min_after=persistence,
                               alpha_extra=0.0)
            stepped = steps_enough(ch)
            before_t = observed & (steps < ch.first_present) if stepped else observed
            d, ok = scores(before_t)
    if changed_pixels is not None:
        mask = np.asarray(changed_pixels, bool) & fp
    elif stepped:
        # pixels beyond min_magnitude on every observed date of the final state
        after_t = observed & (steps >= ch.completed)
        mask = np.zeros_like(fp)
        mask[fp] = np.all((d >= min_magnitude) | ~u | ~after_t[:, None], axis=0) & u[after_t].any(axis=0)
    else:
        mask = np.zeros_like(fp)
    kind, built = None, (0.0, 0.0)
    # a footprint only a few pixels across (a house in 4-5 m imagery) has no interior, so no
    # outline to judge: its kind cannot be told from its appearance (it stays None), and only
    # a step as large as min_magnitude counts
    outlined = int(ndi.binary_erosion(fp, iterations=2).sum()) >= _MIN_INTERIOR
    if stepped and outlined:
        kind, built = footprint_kind(images, usable, fp, before_t, observed & (steps >= ch.completed), scale)
    # a step counts when it is large, or covers a good part of the footprint, or when a
    # building appears or disappears (its outline comes or goes: rubble can look like a roof)
    appears = kind in ("new", "demolished") and max(built) >= 2.0 and max(built) >= 2.0 * min(built)
    site = stepped and site_says(ch)
    changed = stepped and (site or ch.magnitude >= min_magnitude
                           or (outlined and (appears or mask.sum() >= min_changed_share * max(total, 1))))
    if changed and kind == "modified":
        # a standing building whose roof only got brighter or darker in every band alike, by
        # less than max_gain, cannot be told from haze, sun angle or normalisation error
        b_spec, a_spec = (masked_mean(px[:, :n_spectral], u & m[:, None], over="all")
                          for m in (before_t, observed & (steps >= ch.completed)))
        # float64 sums, not a float32 BLAS dot: the same last bit on every CPU
        b_spec, a_spec = b_spec.astype(np.float64), a_spec.astype(np.float64)
        nb_, na_ = math.sqrt(float(np.sum(b_spec * b_spec))), math.sqrt(float(np.sum(a_spec * a_spec)))
        cos = float(np.sum(b_spec * a_spec)) / max(nb_ * na_, 1e-12)
        gain = na_ / max(nb_, 1e-12)
        if cos >= math.cos(math.radians(max_angle_deg)) and abs(math.log(max(gain, 1e-12))) < math.log(max_gain):
            changed = False
    if stepped and not changed:
        before_t = observed
        d, ok = scores(before_t)
        if changed_pixels is None:
            mask = np.zeros_like(fp)
    with np.errstate(invalid="ignore"):
        cnt = ok.sum(axis=1)
        seen = observed & (cnt > 0)
        mean_score = np.where(seen, np.sum(np.where(ok, d, 0), axis=1) / np.maximum(cnt, 1), np.nan)
        max_score = np.where(seen, np.max(np.where(ok, d, -np.inf), axis=1, initial=-np.inf), np.nan)
        date_frac = np.where(seen, np.sum(ok & (d >= min_magnitude), axis=1) / np.maximum(cnt, 1), np.nan)
    if not changed:
        kind = None
    changed_fraction = float(mask.sum() / max(total, 1))

    statuses = []
    for t in range(n_t):
        if not observed[t]:
            statuses.append("not_observable")
        elif changed and t >= ch.first_present:
            statuses.append("demolished" if kind == "demolished" else "changed")
        else:
            statuses.append("unchanged")
    if n_obs < 1 + persistence:
        status = "not_observable"
    elif changed:
        status = "demolished" if kind == "demolished" else "changed"
    else:
        status = "unchanged"
    confidence = 0.0
    if changed:
        rm = np.broadcast_to(np.asarray(registration_rmse_px, dtype=np.float64), (n_t,))
        fl = np.zeros(n_t, bool) if registration_flagged is None else np.asarray(registration_flagged, bool)
        ends = [ch.last_absent, ch.first_present]
        reg = registration_term([float(v) for v in rm[ends]], [bool(v) for v in fl[ends]])
        # with the site's threshold, significance is measured from it as from min_magnitude / 2
        reference = (2.0 * max(min_score, noise_floor(ch.n_before, ch.n_after, n_px, series.shape[1]))
                     if site else min_magnitude)
        confidence = change_confidence(ch.magnitude, ch.fstat, ch.n_after, min_magnitude=reference,
                                       min_fstat=min_fstat, persistence=persistence, registration=reg,
                                       form=extent_form(changed_fraction))
    return BuildingChange(
        status=status, kind=kind,
        first_present=int(ch.first_present) if changed else None,
        last_absent=int(ch.last_absent) if changed else None,
        score=float(ch.magnitude) if ch is not None else 0.0,
        fstat=float(ch.fstat) if ch is not None else 0.0,
        confidence=float(confidence), changed_fraction=changed_fraction, change_mask=mask,
        n_observations=n_obs, date_status=tuple(statuses),
        n_before=int(ch.n_before) if changed else 0, n_after=int(ch.n_after) if changed else 0,
        mean_score=mean_score.astype(np.float64), max_score=max_score.astype(np.float64),
        date_changed_fraction=date_frac.astype(np.float64),
        valid_fraction=valid_fraction.astype(np.float64))


def step_significance(fstat: float, n_observations: int, n_channels: int) -> float:
    """-log10 of the p-value of a footprint's step F statistic, with its own degrees of freedom.

    The F test of a step (:func:`changedetect.series.f_threshold`) has
    ``n_channels`` and ``n_channels * (n_observations - 2)`` degrees of
    freedom, so the same F means less on a footprint seen on 4 dates than on
    one seen on 25; the p-value puts footprints seen on different numbers of
    dates on one scale. Infinite for two dates (no scatter to test against).

    >>> round(step_significance(20.0, 25, 4), 1)
    11.1
    """
    from scipy.stats import f as f_dist

    if n_observations < 3:
        return math.inf
    return float(-f_dist.logsf(max(fstat, 0.0), n_channels, n_channels * (n_observations - 2)) / math.log(10))


def noise_floor(n_before: int, n_after: int, n_pixels: float, n_bands: int, *, alpha: float = 1e-3) -> float:
    """Smallest step of a footprint's mean series that noise alone reaches with probability ``alpha``.

    With white noise of one sigma per band and pixel, the mean of ``n_pixels``
    pixels over ``n_before`` and ``n_after`` dates differs between the two
    states by a vector whose squared length, in sigmas, is chi-square with
    ``n_bands`` degrees of freedom times ``(1/n_before + 1/n_after) / n_pixels``.
    Real footprints always exceed it (their dates differ by far more than
    sensor noise); it keeps a site where nothing but noise differs from having
    its quietest footprints split by :func:`population_thresholds`.

    >>> round(noise_floor(1, 1, 100, 3), 3)
    0.57
    """
    from scipy.stats import chi2

    if n_before < 1 or n_after < 1 or n_pixels <= 0:
        return math.inf
    return math.sqrt(float(chi2.isf(alpha, n_bands)) * (1.0 / n_before + 1.0 / n_after) / n_pixels)


#: Observable footprints a site needs for its own thresholds (:func:`population_thresholds`).
POPULATION_MIN = 20


def population_thresholds(scores, fstats, n_observations, n_channels: int, *,
                          min_count: int = POPULATION_MIN):
    """The site's own thresholds on the footprints' steps: (score, significance), or None with too few.

    A building's step is measured in observation-noise sigmas, but what
    separates a changed building from a standing one on real imagery is not
    sensor noise: two sensors, view angles, seasons and roof glare move every
    footprint of a site, unchanged or not. The footprints of the site are their
    own reference: Otsu's threshold over their step sizes (a two-class split of
    the population, as the per-footprint baseline of the field does, computed
    exactly: :func:`changedetect.detect.threshold_otsu_exact`) is the score threshold. With
    three or more dates a footprint's step also has an F statistic, the step against the
    footprint's own scatter between dates; Otsu's threshold over its
    significance (:func:`step_significance`, -log10 p, one scale whatever the
    number of dates a footprint was seen on) is the second threshold (0 for
    two dates, where F is not defined). ``min_count`` observable footprints
    are needed; with fewer, None, and each footprint is judged on its own
    (:func:`building_change` without ``min_score``).

    >>> rng = np.random.default_rng(0)
    >>> s = np.r_[rng.normal(2, 0.5, 90), rng.normal(12, 2, 10)]
    >>> thr, sig = population_thresholds(s, np.full(100, np.inf), np.full(100, 2), 4)
    >>> 4 < thr < 10, sig
    (True, 0.0)
    """
    scores = np.asarray(scores, dtype=np.float64)
    n_obs = np.asarray(n_observations)
    ok = np.isfinite(scores) & (n_obs >= 2)
    if int(ok.sum()) < min_count:
        return None
    thr = threshold_otsu_exact(scores[ok])
    series = ok & (n_obs >= 3)
    sig = 0.0
    if int(series.sum()) >= min_count:
        sig = threshold_otsu_exact([step_significance(float(f), int(n), n_channels)
                           for f, n in zip(np.asarray(fstats, dtype=np.float64)[series], n_obs[series])])
    return float(thr), float(sig)


def describe_decision(rule: dict) -> str:
    """One sentence, for the console and the report, on how a run's footprints were judged.

    ``rule`` is the run record's ``footprint_decision``.

    >>> describe_decision({"rule": "per footprint", "observable": 7, "min_observable": 20})
    'Judged one by one: 7 observable footprints are too few for thresholds of their own site (it takes 20).'
    """
    if rule.get("rule") == "site thresholds":
        sig = rule.get("significance_threshold")
        also = f" and its own F test's p-value is at most 10^-{sig:.1f}" if sig else ""
        return (f"Judged against this site's {rule.get('observable')} observable footprints: changed "
                f"where the step is at least {rule.get('score_threshold', 0):.2f} noise sigmas{also} "
                f"(Otsu's split of the site's footprints), or by the rules of one footprint. A split always "
                f"finds a site's most-changed footprints: rank them by score and check the borderline ones.")
    return (f"Judged one by one: {rule.get('observable', 0)} observable footprints are too few for "
            f"thresholds of their own site (it takes {rule.get('min_observable', POPULATION_MIN)}).")


def footprint_kind(images, usable, fp, before_t, after_t, scale) -> tuple[str, tuple[float, float]]:
    """``new``, ``modified`` or ``demolished`` from how built the footprint looks before and after.

    Returns the kind and the two "built" measures (before, after).

    A standing building has a sharp outline around a smooth roof; bare ground,
    a construction pad or rubble has no stronger gradient on the footprint's
    outline than inside it. "Built" is the outline's mean gradient over the
    interior's (plus the gradient of noise) reaching 2. The footprint must
    have an interior (pixels 2 or more from its edge). Built on both sides
    of the step: the building stood all along and was modified; built only
    after: new; built only before (or less built after): demolished.

    This is not the rule of a detected region
    (:func:`changedetect.objects.appearance`), on purpose: a region's outline is
    where its pixels changed, so whether that outline gets sharper or weaker
    tells its kind; a given footprint's outline is drawn whether or not a
    building stands there, so the question is whether it looks built (outline
    over interior) on each side of the step.
    """
    def composite(sel):
        return masked_mean(images, usable & sel[:, None, None])

    # gradient of pure observation noise in the band mean (Sobel / 8: about 0.54 sigma)
    noise = 0.54 * float(np.sqrt(np.mean(np.square(scale)) / len(scale)))
    inner = ndi.binary_erosion(fp, iterations=2)

    def built(img):
        g = img.mean(axis=0)
        grad = np.hypot(ndi.sobel(g, 0), ndi.sobel(g, 1)) / 8.0
        ring, _ = outline_edges(img, fp)
        return float(np.mean(ring)) / (float(np.mean(grad[inner])) + noise) if ring.size else 0.0

    b, a = built(composite(before_t)), built(composite(after_t))
    if b >= 2.0 and a >= 2.0:
        return "modified", (b, a)
    return ("demolished" if a < b else "new"), (b, a)


def open_footprints(path, stack: Stack, *, id_column: str | None = None):
    """Read the footprints in ``path`` onto the stack's CRS; none of them on the imagery is an error.

    Raises
    ------
    NoOverlapError
        No footprint falls on the imagery (the message gives both extents).
    """
    from rasterio.transform import array_bounds
    from shapely.geometry import box

    fps = read_footprints(path, stack.crs, id_column=id_column)
    extent = box(*array_bounds(stack.height, stack.width, stack.transform))
    if not fps.intersects(extent).any():
        fb = fps.total_bounds
        raise NoOverlapError(
            f"None of the {len(fps)} footprints in {path} falls on the imagery "
            f"(footprints span {fb.round(1).tolist()}, imagery {list(np.round(extent.bounds, 1))} in "
            f"{stack.crs.to_string()}); check that the file covers this site and that its CRS is right.")
    return fps


def footprint_windows(footprints, stack: Stack, margin: int):
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


def footprint_table(stack: Stack, model: SeriesModel, footprints, regs, step_path, *, min_magnitude: float,
                    persistence: int, block: int, progress=None, halo: int = 128, stats: dict | None = None):
    """Change statistics of every given footprint, read block by block.

    Footprints are grouped by the block of the grid holding their centre; each
    group's windows are read together once (a footprint far larger than a block
    is read on its own), so memory follows the block size, not the grid. The
    change masks come from the per-pixel stage's step raster (``first_path``),
    read with a ``halo`` for the hysteresis, not from a second step fit.

    With :data:`POPULATION_MIN` or more observable footprints, the site also
    decides: every footprint is measured once, the thresholds come from the
    whole population (:func:`population_thresholds`), and the footprints whose
    step reaches the score threshold are judged again with them (their windows
    are read a second time; below it the site's rule cannot apply). ``stats``,
    when given, receives the thresholds used.
    Returns the per-building records, the per-date rows and the change-mask polygons.
    """
    import rasterio
    from rasterio.windows import Window

    dates = stack.dates
    rmse, unregistered = registration_errors(regs)
    margin = 4
    wins = footprint_windows(footprints, stack, margin)
    h, w = stack.shape
    blk = block
    centre = np.stack([(wins[:, 0] + wins[:, 1]) // 2, (wins[:, 2] + wins[:, 3]) // 2], axis=1)
    key = np.clip(centre[:, 0] // blk, 0, None) * (w // blk + 2) + np.clip(centre[:, 1] // blk, 0, None)
    inside = (wins[:, 1] > 0) & (wins[:, 0] < h) & (wins[:, 3] > 0) & (wins[:, 2] < w)
    records: list = [None] * len(footprints)
    date_rows: list = [None] * len(footprints)
    ids = footprints["building_id"].tolist()
    geoms = footprints.geometry.values

    def unobservable(i):
        records[i] = {"building_id": ids[i], "status": "not_observable", "kind": None,
                      "last_absent": None, "first_present": None, "confidence": 0.0, "score": 0.0, "fstat": 0.0,
                      "changed_fraction": 0.0, "changed_area_m2": 0.0,
                      "area_m2": round(area_m2(geoms[i], stack.crs), 2), "n_observations": 0,
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
    step_ds = rasterio.open(step_path)

    def measure(members, bounds, min_score=None, min_significance=0.0):
        """Read one group's window and judge each of ``members`` on it."""
        r0, r1, c0, c1 = bounds
        window = Window(c0, r0, c1 - c0, r1 - r0)
        images, usable = read_series(stack, model, window)
        # the per-pixel change map, weak pixels kept where they join strong ones of the same
        # date (as for objects); the halo lets the hysteresis see past the window's edge
        g0, g1 = max(0, r0 - halo), min(h, r1 + halo)
        f0, f1 = max(0, c0 - halo), min(w, c1 + halo)
        keep, _ = hysteresis(*step_ds.read(window=Window(f0, g0, f1 - f0, g1 - g0)))
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
                                 fp, scale=model.noise, min_magnitude=min_magnitude,
                                 min_fstat=model.min_fstat, persistence=persistence,
                                 changed_pixels=changed_px[sl], footprint_pixels=int(full.sum()),
                                 registration_rmse_px=rmse, registration_flagged=unregistered,
                                 n_spectral=stack.count, min_score=min_score,
                                 min_significance=min_significance)
            px_area = area_m2(geoms[i], stack.crs) / max(int(full.sum()), 1)
            scores[i] = ch.score if ch.status != "not_observable" else math.nan
            records[i] = {
                "building_id": ids[i], "status": ch.status, "kind": ch.kind,
                "last_absent": None if ch.last_absent is None else dates[ch.last_absent].isoformat(),
                "first_present": None if ch.first_present is None else dates[ch.first_present].isoformat(),
                "confidence": round(ch.confidence, 3), "score": round(ch.score, 3), "fstat": round(ch.fstat, 3),
                "changed_fraction": round(ch.changed_fraction, 4),
                "changed_area_m2": round(float(ch.change_mask.sum()) * px_area, 2),
                "area_m2": round(area_m2(geoms[i], stack.crs), 2), "n_observations": ch.n_observations,
                "n_before": ch.n_before, "n_after": ch.n_after}
            date_rows[i] = [{"building_id": ids[i], "date": d.isoformat(), "status": ch.date_status[t],
                             "mean_score": round(float(ch.mean_score[t]), 3),
                             "max_score": round(float(ch.max_score[t]), 3),
                             "changed_fraction": round(float(ch.date_changed_fraction[t]), 4),
                             "valid_fraction": round(float(ch.valid_fraction[t]), 4)}
                            for t, d in enumerate(dates)]
            mask_rows[i] = None
            if ch.change_mask.any():
                geom = polygonize(ch.change_mask, stack.window_transform(Window(b0, a0, b1 - b0, a1 - a0)))
                mask_rows[i] = {"building_id": ids[i], "area_m2": round(area_m2(geom, stack.crs), 2),
                                "geometry": geom}

    mask_rows: list = [None] * len(footprints)
    # each footprint's step, unrounded; NaN without a fitted series (too few usable dates): such a
    # footprint is not part of the site's population
    scores = np.full(len(footprints), np.nan)
    total = sum(len(m) for m, _ in jobs)
    done = 0
    for members, bounds in jobs:
        measure(members, bounds)
        done += len(members)
        if progress is not None:
            progress("buildings", done, total)
    # the site's own thresholds, from all its footprints; then the footprints past them are judged
    # again (below them the site's rule cannot apply, so their answer stays as it is)
    thresholds = population_thresholds(scores, [r["fstat"] for r in records],
                                       [r["n_observations"] for r in records], stack.count + 1)
    if thresholds is not None:
        score_thr, sig_thr = thresholds
        for members, bounds in jobs:
            todo = [i for i in members if scores[i] >= score_thr]
            if todo:
                measure(todo, bounds, min_score=score_thr, min_significance=sig_thr)
    if stats is not None:
        stats.update(rule="site thresholds" if thresholds is not None else "per footprint",
                     observable=int(np.isfinite(scores).sum()),
                     min_observable=POPULATION_MIN,
                     score_threshold=None if thresholds is None else round(thresholds[0], 4),
                     significance_threshold=None if thresholds is None else round(thresholds[1], 4))
    step_ds.close()
    masks = [m for m in mask_rows if m is not None]
    return records, [r for rows in date_rows for r in rows], masks


def attach_building_ids(changes, footprints) -> None:
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
