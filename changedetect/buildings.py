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

A site of 20 or more footprints is its own reference (sensors, view angles and
seasons move every footprint, changed or not): its footprints' net changes
give the score threshold (:func:`population_thresholds`) and the confidence
(:func:`site_mixture`), and the ground between its buildings says which of
them look built, before and after (:func:`outline_contrast`,
:func:`site_offsets`, :func:`site_looks`): "is there still a roof" is blind
to the sensor's colours, and tells a roof turned to rubble (demolished) from
one under a tarp (modified).

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
from .portable import exp, gaussian_filter, log
from .series import SeriesModel, read_series
from .stack import Stack, area_m2
from .timeline import masked_mean, series_change

__all__ = ["ID_COLUMNS", "STATUSES", "read_footprints", "open_footprints", "footprint_mask", "BuildingChange",
           "building_change", "step_significance", "noise_floor", "population_thresholds", "SiteMixture",
           "site_mixture", "describe_decision", "footprint_kind", "Outline", "has_interior", "footprint_outline",
           "band_gradient", "gradient_noise", "outline_contrast", "offset_grid", "null_placements",
           "built_pvalues", "site_offsets", "site_looks", "footprint_windows", "footprint_table",
           "attach_building_ids"]

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
        Net change of the footprint's mean series, in noise standard deviations: from its
        first state to its last, each the mean of ``persistence`` observed dates
        (``first_state``, ``last_state``; one each for two or three dates).
    fstat : float
        F statistic of the step fit.
    confidence : float
        0–1 (0 without a change). Judged against its site (``mixture``): the
        probability that a footprint of this net change is one of the site's
        changed ones, times the support of its step. Alone: from the step's
        significance and cleanliness, its persistence, the share of the
        footprint that changed, and registration.
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
    first_state, last_state : tuple of int
        The observed dates whose means are the first and the last state (``score``).
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
    first_state: tuple[int, ...] = ()
    last_state: tuple[int, ...] = ()


def building_change(images: np.ndarray, usable: np.ndarray, footprint: np.ndarray, *,
                    scale: np.ndarray, min_magnitude: float = 14.0, min_fstat: float = 0.0,
                    persistence: int = 2, min_valid: float = 0.8, min_changed_share: float = 0.3,
                    n_spectral: int | None = None, max_gain: float = 1.25, max_angle_deg: float = 2.0,
                    changed_pixels: np.ndarray | None = None, footprint_pixels: int | None = None,
                    registration_rmse_px: float | Sequence[float] = 0.0,
                    registration_flagged: Sequence[bool] | None = None,
                    min_score: float | None = None, min_significance: float = 0.0,
                    looks: tuple[float, float] | None = None,
                    mixture: "SiteMixture | None" = None) -> BuildingChange:
    """Change statistics, status per date and dated change of one footprint.

    The footprint's mean series (over its usable pixels, on dates where at least
    ``min_valid`` of it is usable) is fitted with one or two steps
    (:func:`changedetect.timeline.series_change`). The building changed when
    the step reaches ``min_magnitude / 2`` noise sigmas (a mean over many
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
        The site's own threshold on the net change (noise sigmas; ``score``:
        from the first state to the last, each the mean of ``persistence``
        observed dates), from the population of its footprints
        (:func:`population_thresholds`). When given, a building also changed
        when its net change reaches it, its step's F statistic reaches
        ``min_fstat`` and ``min_significance``, and the net change is
        significant against observation noise (:func:`noise_floor`): it stands
        out of its site, whatever the sensor noise says. The rules above still
        hold (a small step that covers most of a footprint, or makes its
        outline come or go, is a change); the kind and the check on modified
        buildings are the same. A footprint that flickers (glare on every other
        date) has a step but no net change.
    min_significance : float
        With ``min_score``: a threshold on the step's significance against the
        footprint's own scatter between dates, as -log10 of the F test's p-value
        (:func:`step_significance`); 0 (none) by default, and in the pipeline.
    looks : (float, float), optional
        How built the footprint looks in its first and last state, by its site
        (:func:`site_looks`: the share of the same shapes laid on the site's
        ground that are as sharply outlined). :data:`BUILT_ALPHA` or less looks
        built, :data:`GROUND_SHARE` or more like plain ground. When given, the
        kind of a change comes from them (built then not: demolished; not then
        built: new; built both times: modified; neither: as without them), and
        a footprint that looks built in one state and like plain ground in the
        other changed even when its net change is small (rubble of the roof's
        own colour), provided the step passes ``min_fstat`` and the net change
        its noise floor.
    mixture : SiteMixture, optional
        The site's two groups by net change (:func:`site_mixture`). When given,
        the confidence of a change is the probability that a footprint of its net
        change belongs to the changed group, times the support of its step
        (each side seen on ``persistence + 1`` dates or more counts fully, as
        for every confidence; fully too when ``looks`` shows the building come
        or go), halved at most by a scene kept on its georeferencing alone.

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
    # the net change: from the first state to the last, each the mean of `persistence` observed dates
    # (the fewest that make a state), whatever happened in between
    k = max(1, min(persistence, n_obs // 2))
    seen_t = np.flatnonzero(observed)
    first_state, last_state = (seen_t[:k], seen_t[-k:]) if n_obs >= 2 else (seen_t[:0], seen_t[:0])
    net = 0.0
    if n_obs >= 2:
        dz = ((series[last_state].mean(axis=0) - series[first_state].mean(axis=0))
              / np.asarray(scale, np.float64))
        net = math.sqrt(float(np.sum(dz * dz)))
    floor = noise_floor(k, k, n_px, series.shape[1])
    outlined = has_interior(fp)
    # how built the footprint looks in its first and last state, by its site's ground (p-values): the
    # kind of a change; and a building that looks built in one state and like plain ground in the other
    # appeared or went, even with a small net change
    look, plain = None, False
    if looks is not None and outlined and all(np.isfinite(looks)):
        is_built = tuple(float(v) <= BUILT_ALPHA for v in looks)
        is_ground = tuple(float(v) >= GROUND_SHARE for v in looks)
        look = {(True, False): "demolished", (False, True): "new", (True, True): "modified"}.get(is_built)
        plain = (is_built[0] and is_ground[1]) or (is_ground[0] and is_built[1])

    def site_says(c) -> bool:
        return (min_score is not None and c is not None and c.fstat >= min_fstat
                and net >= max(min_score, floor)
                and step_significance(c.fstat, n_obs, series.shape[1]) >= min_significance)

    def looks_changed(c) -> bool:
        # built in one state and plain ground in the other, with a step and a net change beyond noise
        return plain and c is not None and c.fstat >= min_fstat and net >= floor

    def steps_enough(c) -> bool:
        return c is not None and c.fstat >= min_fstat and (c.magnitude >= 0.5 * min_magnitude or site_says(c)
                                                           or looks_changed(c))

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
    if stepped and look is not None:
        kind = look
    elif stepped and outlined:
        kind, built = footprint_kind(images, usable, fp, before_t, observed & (steps >= ch.completed), scale)
    # a step counts when it is large, or covers a good part of the footprint, or when a
    # building appears or disappears (its outline comes or goes: rubble can look like a roof)
    appears = (looks is None and kind in ("new", "demolished") and max(built) >= 2.0
               and max(built) >= 2.0 * min(built))
    site = stepped and site_says(ch)
    changed = stepped and (site or ch.magnitude >= min_magnitude or looks_changed(ch)
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
        if mixture is not None:
            # judged against its site: how likely a footprint of this net change is one of the site's
            # changed ones, times the support of the step: each side counts fully when seen on one more
            # date than persistence asks (as for every confidence), or when the outline, an evidence of
            # its own, shows the building come or go. The site's footprints carry the same
            # misregistration as this one, so the mixture already holds it; only a scene kept on its
            # georeferencing caps the confidence
            support = 1.0 if kind in ("new", "demolished") and kind == look else \
                min(1.0, ch.n_before / (persistence + 1)) * min(1.0, ch.n_after / (persistence + 1))
            confidence = (mixture.posterior(net) * support
                          * (reg if any(bool(fl[e]) for e in ends) else 1.0))
        else:
            confidence = change_confidence(ch.magnitude, ch.fstat, ch.n_after, min_magnitude=min_magnitude,
                                           min_fstat=min_fstat, persistence=persistence, registration=reg,
                                           form=extent_form(changed_fraction))
    return BuildingChange(
        status=status, kind=kind,
        first_present=int(ch.first_present) if changed else None,
        last_absent=int(ch.last_absent) if changed else None,
        score=float(net) if ch is not None else 0.0,
        fstat=float(ch.fstat) if ch is not None else 0.0,
        confidence=float(confidence), changed_fraction=changed_fraction, change_mask=mask,
        n_observations=n_obs, date_status=tuple(statuses),
        n_before=int(ch.n_before) if changed else 0, n_after=int(ch.n_after) if changed else 0,
        mean_score=mean_score.astype(np.float64), max_score=max_score.astype(np.float64),
        date_changed_fraction=date_frac.astype(np.float64),
        valid_fraction=valid_fraction.astype(np.float64),
        first_state=tuple(int(t) for t in first_state), last_state=tuple(int(t) for t in last_state))


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
    """The site's own thresholds on the footprints' scores: (score, significance), or None with too few.

    A building's net change (``score``) is measured in observation-noise sigmas, but what
    separates a changed building from a standing one on real imagery is not
    sensor noise: two sensors, view angles, seasons and roof glare move every
    footprint of a site, unchanged or not. The footprints of the site are their
    own reference: Otsu's threshold over their scores (a two-class split of
    the population, as the per-footprint baseline of the field does, computed
    exactly: :func:`changedetect.detect.threshold_otsu_exact`) is the score threshold. With
    three or more dates a footprint's step also has an F statistic, the step against the
    footprint's own scatter between dates; Otsu's threshold over its
    significance (:func:`step_significance`, -log10 p, one scale whatever the
    number of dates a footprint was seen on) is the second threshold (0 for
    two dates, where F is not defined); :func:`footprint_table` does not use it
    any more (the net change of a footprint that flickers is small already,
    and the threshold cost recall on SpaceNet 7). ``min_count`` observable footprints
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


@dataclass(frozen=True)
class SiteMixture:
    """Two normal components fitted to the log net changes of a site's footprints (see :func:`site_mixture`).

    Attributes
    ----------
    weights, means, sigmas : tuple of float
        Of the unchanged (first) and the changed (second) component, on log scores.
    """

    weights: tuple[float, float]
    means: tuple[float, float]
    sigmas: tuple[float, float]

    def _densities(self, x: np.ndarray) -> np.ndarray:
        w, m, s = (np.asarray(v, np.float64) for v in (self.weights, self.means, self.sigmas))
        z = (np.asarray(x, np.float64)[..., None] - m) / s
        return w / s * exp(-0.5 * z * z)

    def posterior(self, score) -> np.ndarray:
        """Probability that footprints of this net change belong to the site's changed group.

        Never lower for a larger change: the component posterior is made
        non-decreasing (a broad unchanged component would otherwise win again
        far above the changed one).
        """
        s = np.atleast_1d(np.asarray(score, np.float64))
        x = log(np.maximum(s, 1e-12))
        hi = max(float(np.max(x)), self.means[1])
        lo = min(float(np.min(x)), self.means[0])
        grid = np.linspace(lo, hi, 512)
        d = self._densities(grid)
        p = np.maximum.accumulate(d[:, 1] / np.maximum(d.sum(axis=1), 1e-300))
        out = np.interp(x, grid, p)
        return out if np.ndim(score) else float(out[0])


def site_mixture(scores, *, threshold: float, iterations: int = 200,
                 min_count: int = POPULATION_MIN) -> SiteMixture | None:
    """The site's two groups of footprints by net change, as a mixture: what a footprint's score means.

    Otsu's threshold (``threshold``, :func:`population_thresholds`) splits the
    site's footprints in two; a mixture of two normal distributions of the log
    net change, started from that split and fitted by expectation-maximisation,
    says how likely a footprint of a given change is to belong to the changed
    group (:meth:`SiteMixture.posterior`): the confidence of the site's
    decisions. None with fewer than ``min_count`` footprints on either side
    of the threshold, or when a component collapses.

    >>> rng = np.random.default_rng(0)
    >>> s = np.r_[np.exp(rng.normal(0, 0.5, 900)), np.exp(rng.normal(2.5, 0.3, 100))]
    >>> m = site_mixture(s, threshold=5.0)
    >>> [round(float(v), 2) for v in m.posterior(np.array([1.0, 5.0, 20.0, 200.0]))]
    [0.0, 0.45, 1.0, 1.0]
    """
    s = np.asarray(scores, np.float64)
    s = s[np.isfinite(s) & (s > 0)]
    x = log(s)
    hi = x >= math.log(threshold)
    if int(hi.sum()) < min_count or int((~hi).sum()) < min_count:
        return None
    r = hi.astype(np.float64)
    for _ in range(iterations):
        w = np.array([np.mean(1.0 - r), np.mean(r)])
        m = np.array([np.sum((1.0 - r) * x), np.sum(r * x)]) / np.maximum(w * len(x), 1e-300)
        v = (np.array([np.sum((1.0 - r) * (x - m[0]) ** 2), np.sum(r * (x - m[1]) ** 2)])
             / np.maximum(w * len(x), 1e-300))
        if (w * len(x) < 2).any() or (v <= 1e-12).any() or m[1] <= m[0]:
            return None
        mix = SiteMixture(tuple(map(float, w)), tuple(map(float, m)), tuple(float(math.sqrt(a)) for a in v))
        d = mix._densities(x)
        new = d[:, 1] / np.maximum(d.sum(axis=1), 1e-300)
        if np.max(np.abs(new - r)) < 1e-9:
            break
        r = new
    return mix


def describe_decision(rule: dict) -> str:
    """One sentence, for the console and the report, on how a run's footprints were judged.

    ``rule`` is the run record's ``footprint_decision``.

    >>> describe_decision({"rule": "per footprint", "observable": 7, "min_observable": 20})
    'Judged one by one: 7 observable footprints are too few for thresholds of their own site (it takes 20).'
    """
    looks = ""
    if rule.get("looks_judged"):
        alpha = rule.get("built_alpha", BUILT_ALPHA)
        looks = (f" Of {rule['looks_judged']} footprints with an inside, those that look built (an outline "
                 f"sharper than all but {alpha:.0%} of the same shapes laid on the ground between them) "
                 f"in one state and not in the other appeared or went; those that look built in both were "
                 f"at most modified.")
    if rule.get("rule") == "site thresholds":
        return (f"Judged against this site's {rule.get('observable')} observable footprints: changed "
                f"where the net change from the first state to the last is at least "
                f"{rule.get('score_threshold', 0):.2f} noise sigmas (Otsu's split of the site's footprints), "
                f"or by the rules of one footprint.{looks} A split always finds a site's most-changed "
                f"footprints: rank them by confidence and check the borderline ones.")
    return (f"Judged one by one: {rule.get('observable', 0)} observable footprints are too few for "
            f"thresholds of their own site (it takes {rule.get('min_observable', POPULATION_MIN)}).{looks}")


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

    noise = gradient_noise(scale, len(scale))
    inner = _interior(fp)

    def built(img):
        g = img.mean(axis=0)
        grad = np.hypot(ndi.sobel(g, 0), ndi.sobel(g, 1)) / 8.0
        ring, _ = outline_edges(img, fp)
        return float(np.mean(ring)) / (float(np.mean(grad[inner])) + noise) if ring.size else 0.0

    b, a = built(composite(before_t)), built(composite(after_t))
    if b >= 2.0 and a >= 2.0:
        return "modified", (b, a)
    return ("demolished" if a < b else "new"), (b, a)



# --------------------------------------------------------------------------- does it look built?

#: Largest offset, in metres, searched between the given footprints and the roofs of each date: footprints
#: drawn on another image or map (OpenStreetMap is often metres off), residual misregistration, and the
#: relief displacement of roofs, which differs between view angles.
OFFSET_M = 4.0
#: Significance of the test "this footprint looks built": its outline contrast is reached by at most this
#: share of the same shapes laid on the site's ground between buildings.
BUILT_ALPHA = 0.05
#: A footprint looks like plain ground when at least this share of the laid shapes (the ground's upper
#: quartile) is as sharply outlined: a damaged roof, a tarp, debris on a standing slab sit between
#: "built" and "ground", and only a clear case of either makes a change without a large net change.
GROUND_SHARE = 0.25


@dataclass(frozen=True)
class Outline:
    """Where a footprint's edge and interior lie on a window (see :func:`footprint_outline`).

    Attributes
    ----------
    ring : ndarray of int, (2, n)
        Rows and columns of the pixels within one pixel of the footprint's edge, on both sides.
    normal : ndarray of float32, (2, n)
        Unit normal of the edge at those pixels (row and column components).
    inner : ndarray of int, (2, m)
        Rows and columns of the interior: pixels two or more from the edge.
    """

    ring: np.ndarray
    normal: np.ndarray
    inner: np.ndarray

    def moved(self, dy: int, dx: int) -> "Outline":
        """The same outline ``dy`` rows and ``dx`` columns away."""
        d = np.array([[dy], [dx]])
        return Outline(self.ring + d, self.normal, self.inner + d)


def _interior(fp: np.ndarray) -> np.ndarray:
    """The footprint's pixels two or more from its edge."""
    return ndi.binary_erosion(np.asarray(fp, bool), iterations=2)


def has_interior(fp: np.ndarray) -> bool:
    """Whether a footprint has the :data:`_MIN_INTERIOR` inside pixels its outline can be judged against.

    >>> fp = np.zeros((10, 10), bool); fp[2:8, 2:8] = True
    >>> has_interior(fp), has_interior(fp[:, :6])
    (True, False)
    """
    return int(_interior(fp).sum()) >= _MIN_INTERIOR


def footprint_outline(fp: np.ndarray) -> Outline | None:
    """The edge (with its normal) and the interior of a footprint mask; None without an interior.

    A footprint needs :data:`_MIN_INTERIOR` pixels two or more from its edge for its outline to
    be told from its inside (a house a few pixels across in 4-5 m imagery has none).

    >>> fp = np.zeros((10, 10), bool); fp[2:8, 2:8] = True
    >>> o = footprint_outline(fp)
    >>> top = (o.ring[0] == 2) & (o.ring[1] == 4)          # the middle of the top edge
    >>> o.ring.shape[1], o.inner.shape[1], o.normal[:, top].ravel().astype(float).round(1).tolist()
    (44, 4, [1.0, 0.1])
    """
    fp = np.asarray(fp, bool)
    inner = _interior(fp)
    if int(inner.sum()) < _MIN_INTERIOR:
        return None
    din = ndi.distance_transform_edt(fp)
    dout = ndi.distance_transform_edt(~fp)
    ring = ((din > 0) & (din <= 1.0)) | ((dout > 0) & (dout <= 1.0))
    # the normal: gradient of the smoothed signed distance to the edge, pointing inwards
    sd = gaussian_filter((din - dout).astype(np.float64), 1.0, mode="nearest")
    gy, gx = np.gradient(sd)
    rr, cc = np.nonzero(ring)
    ny, nx = gy[rr, cc], gx[rr, cc]
    norm = np.sqrt(ny * ny + nx * nx)
    norm[norm == 0] = 1.0
    return Outline(np.stack([rr, cc]), np.stack([ny / norm, nx / norm]).astype(np.float32),
                   np.stack(np.nonzero(inner)))


def band_gradient(image: np.ndarray, n_spectral: int) -> np.ndarray:
    """Gradient (rows, columns) of the mean of the spectral bands of one image (bands, rows, cols).

    Sobel / 8: a unit step between two pixels gives 0.5 on each of them.
    """
    g = np.asarray(image[:n_spectral], np.float32).mean(axis=0)
    return np.stack([ndi.sobel(g, 0), ndi.sobel(g, 1)]) / np.float32(8.0)


def gradient_noise(scale, n_spectral: int) -> float:
    """Gradient (:func:`band_gradient`) of pure observation noise in the band mean: about 0.54 sigma."""
    s = np.asarray(scale, np.float64)[:n_spectral]
    return 0.54 * math.sqrt(float(np.mean(s * s)) / n_spectral)


def outline_contrast(grad: np.ndarray, ok: np.ndarray, outline: Outline, shifts, *, noise: float,
                     min_valid: float = 0.8) -> np.ndarray:
    """How built a footprint looks on one image, with the footprint moved by each of ``shifts``.

    A standing building has a sharp edge along its outline and a smoother roof
    inside; bare ground, rubble or a lawn has no stronger gradient across the
    outline than inside it. The contrast is the log of the mean gradient across
    the edge (projected on its normal, so debris and trees crossing it count
    little) over the interior's mean gradient plus that of noise. Blind to
    gains and offsets of the radiometry, and measured with the footprint where
    each image shows it (``shifts``: row and column offsets, (n, 2)).

    Parameters
    ----------
    grad : ndarray, (2, rows, cols)
        :func:`band_gradient` of the image.
    ok : ndarray of bool, (rows, cols)
        Pixels whose gradient can be trusted (usable, and usable neighbours).
    outline : Outline
        On the same window.
    shifts : array_like of int, (n, 2)
    noise : float
        :func:`gradient_noise`.
    min_valid : float
        Share of the edge and interior pixels that must be ``ok`` (else NaN).

    Returns
    -------
    ndarray of float64, (n,)
        Log contrast per shift; NaN where the footprint falls off the window or on unusable pixels.
    """
    shifts = np.asarray(shifts, dtype=np.int64).reshape(-1, 2)
    h, w = ok.shape

    def take(pix):
        r = pix[0][None, :] + shifts[:, :1]
        c = pix[1][None, :] + shifts[:, 1:]
        inside = (r >= 0) & (r < h) & (c >= 0) & (c < w)
        r, c = np.clip(r, 0, h - 1), np.clip(c, 0, w - 1)
        return r, c, inside & ok[r, c]

    r, c, good = take(outline.ring)
    across = np.abs(grad[0][r, c] * outline.normal[0] + grad[1][r, c] * outline.normal[1]).astype(np.float64)
    ri, ci, good_i = take(outline.inner)
    gi = grad[:, ri, ci].astype(np.float64)
    inner = np.sqrt(gi[0] * gi[0] + gi[1] * gi[1])
    n_e, n_i = good.sum(axis=1), good_i.sum(axis=1)
    edge = np.sum(np.where(good, across, 0.0), axis=1) / np.maximum(n_e, 1)
    inside = np.sum(np.where(good_i, inner, 0.0), axis=1) / np.maximum(n_i, 1)
    valid = (n_e >= min_valid * good.shape[1]) & (n_i >= min_valid * good_i.shape[1]) & (edge > 0)
    out = np.full(len(shifts), np.nan)
    if valid.any():
        out[valid] = log(edge[valid] / (inside[valid] + noise))
    return out


def offset_grid(radius: int) -> np.ndarray:
    """Every row and column offset within ``radius`` (a square), nearest first (ties: row, column).

    >>> offset_grid(1)[:5].tolist()
    [[0, 0], [-1, 0], [0, -1], [0, 1], [1, 0]]
    """
    g = np.array([(dy, dx) for dy in range(-radius, radius + 1) for dx in range(-radius, radius + 1)])
    order = np.lexsort((g[:, 1], g[:, 0], g[:, 0] ** 2 + g[:, 1] ** 2))
    return g[order]


def null_placements(outline: Outline, reach: int, *, count: int = 8) -> np.ndarray:
    """Offsets that may lay a footprint's shape on the ground around it, nearest first.

    A grid of offsets half the shape's smaller side apart, out to twice its
    larger side plus ``reach``, leaving out those that would overlap the
    footprint itself; the caller keeps the first ``count`` that fall on free
    ground (:func:`footprint_table`), so that dense rows of houses still have
    their lanes and yards as reference.

    >>> fp = np.zeros((30, 30), bool); fp[12:18, 12:18] = True      # 8 px with its outer ring
    >>> null_placements(footprint_outline(fp), 2)[:4].tolist()
    [[-8, 0], [0, -8], [0, 8], [8, 0]]
    """
    pix = np.concatenate([outline.ring, outline.inner], axis=1)
    h = int(pix[0].max() - pix[0].min()) + 1
    w = int(pix[1].max() - pix[1].min()) + 1
    step = max(2, min(h, w) // 2)
    far = 2 * max(h, w) + reach
    g = np.arange(-(far // step) * step, far + 1, step)
    dy, dx = (a.ravel() for a in np.meshgrid(g, g, indexing="ij"))
    clear = (np.abs(dy) >= h) | (np.abs(dx) >= w)
    dy, dx = dy[clear], dx[clear]
    order = np.lexsort((dx, dy, dy * dy + dx * dx))
    return np.stack([dy[order], dx[order]], axis=1)


def built_pvalues(contrast, null) -> np.ndarray:
    """Share of the ground (``null``: the same shapes laid on it) as sharply outlined as each footprint.

    ``(1 + #{null >= c}) / (1 + n)``; NaN where the contrast is NaN.

    >>> built_pvalues([0.0, 5.0, np.nan], [1.0, 2.0, 3.0]).tolist()
    [1.0, 0.25, nan]
    """
    null = np.sort(np.asarray(null, np.float64)[np.isfinite(null)])
    c = np.asarray(contrast, np.float64)
    p = (1.0 + len(null) - np.searchsorted(null, c, side="left")) / (1.0 + len(null))
    return np.where(np.isfinite(c), p, np.nan)


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
    net change reaches the score threshold are judged again with them (their windows
    are read a second time; below it the site's rule cannot apply).

    With :data:`POPULATION_MIN` or more footprints that have an interior, the
    site also says which of them look built in their first and last states
    (:func:`site_looks`): each date's offset between the footprints and its
    roofs is found from all of them, and a footprint looks built when its
    outline contrast (:func:`outline_contrast`) is reached by at most
    :data:`BUILT_ALPHA` of the same shapes laid on the ground between
    buildings. Those footprints are judged again with that verdict: a building
    that looks built in one state and not in the other appeared or went, one
    that looks built in both was at most modified. ``stats``, when given,
    receives the thresholds and offsets used.
    Returns the per-building records, the per-date rows and the change-mask polygons.
    """
    import rasterio
    from rasterio.windows import Window

    dates = stack.dates
    n_t = len(dates)
    rmse, unregistered = registration_errors(regs)
    radius = max(1, math.ceil(OFFSET_M / stack.pixel_size))
    shifts = offset_grid(radius)
    margin = 4 + radius
    wins = footprint_windows(footprints, stack, margin)
    # the window read for a footprint also holds its shape laid on the ground around it
    size = np.stack([wins[:, 1] - wins[:, 0], wins[:, 3] - wins[:, 2]], axis=1) - 2 * margin
    reach = np.concatenate([wins[:, :2] + np.array([-1, 1]) * (size[:, :1] + radius + 2),
                            wins[:, 2:] + np.array([-1, 1]) * (size[:, 1:] + radius + 2)], axis=1)
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

    def clip(win):
        return (int(max(0, win[0])), int(min(h, win[1])), int(max(0, win[2])), int(min(w, win[3])))

    # a group is read as one window unless that window is much larger than a block
    jobs = []
    for k in sorted(groups):
        members = groups[k]
        r0, r1, c0, c1 = clip((reach[members, 0].min(), reach[members, 1].max(),
                               reach[members, 2].min(), reach[members, 3].max()))
        if (r1 - r0) * (c1 - c0) <= 4 * blk * blk or len(members) == 1:
            jobs.append((members, (r0, r1, c0, c1)))
        else:
            for i in members:
                jobs.append(([i], clip(reach[i])))
    step_ds = rasterio.open(step_path)
    tree = None
    noise_g = gradient_noise(model.noise, stack.count)

    def occupied(bounds):
        """Pixels of a window on or next to any footprint (the ground laid shapes must avoid)."""
        nonlocal tree
        import shapely
        from rasterio.features import rasterize

        r0, r1, c0, c1 = bounds
        transform = stack.window_transform(Window(c0, r0, c1 - c0, r1 - r0))
        if tree is None:
            tree = shapely.STRtree(geoms)
        x0, y1 = transform * (0, 0)
        x1, y0 = transform * (c1 - c0, r1 - r0)
        near = tree.query(shapely.box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)))
        m = rasterize([(geoms[j], 1) for j in near], out_shape=(r1 - r0, c1 - c0), transform=transform,
                      fill=0, dtype="uint8", all_touched=True) if len(near) else np.zeros((r1 - r0, c1 - c0))
        return ndi.binary_dilation(m.astype(bool), iterations=1)

    # per footprint: its outline on its group's window, its first and last states, and the site's verdict
    # (a site with fewer footprints on the imagery than a population has none)
    judge_looks = int(inside.sum()) >= POPULATION_MIN
    outlines: dict[int, tuple] = {}
    states: dict[int, tuple] = {}
    looks: dict[int, tuple] = {}
    offset_sum = np.zeros((n_t, len(shifts)))
    offset_n = np.zeros((n_t, len(shifts)), np.int64)
    offset_wins = np.zeros((n_t, len(shifts)), np.int64)
    offset_pairs = np.zeros((n_t, len(shifts)), np.int64)

    def measure(members, bounds, min_score=None, mixture=None, first=False):
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
                                 looks=looks.get(i), mixture=mixture)
            if first and judge_looks:
                # a footprint cut by the grid's edge has no whole outline to judge
                o = footprint_outline(fp) if int(full.sum()) == int(fp.sum()) else None
                if o is not None and ch.status != "not_observable":
                    outlines[i] = o.moved(a0 - r0, b0 - c0)
                    states[i] = (ch.first_state, ch.last_state)
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
        if first:
            # each date's contrast of every outlined footprint at every offset: where the roofs are
            mine = [i for i in members if i in outlines]
            for t in range(n_t):
                todo = [i for i in mine if t in states[i][0] or t in states[i][1]]
                if not todo:
                    continue
                grad, ok = _gradient_of(images[t], usable[t], stack.count)
                for i in todo:
                    v = outline_contrast(grad, ok, outlines[i], shifts, noise=noise_g)
                    good = np.isfinite(v)
                    offset_sum[t] += np.where(good, v, 0.0)
                    offset_n[t] += good
                    if good[0]:                   # the first offset is none: which offsets do better
                        offset_wins[t] += good & (v > v[0])
                        offset_pairs[t] += good

    def look_again(members, bounds, offsets):
        """Outline contrast of each outlined member in its first and last states, and of its laid shapes."""
        r0, r1, c0, c1 = bounds
        images, usable = read_series(stack, model, Window(c0, r0, c1 - c0, r1 - r0))
        taken = occupied(bounds)
        mine = [i for i in members if i in outlines]
        need = sorted({t for i in mine for s in states[i] for t in s})
        own = {i: [[], []] for i in mine}
        ground = {i: [[], []] for i in mine}
        places = {}
        for i in mine:
            o = outlines[i]
            keep = []
            for p in null_placements(o, radius + 2):
                moved = o.moved(*p)
                pix = np.concatenate([moved.ring, moved.inner], axis=1)
                if (pix.min(axis=1) >= radius + 1).all() and pix[0].max() < r1 - r0 - radius - 1 \
                        and pix[1].max() < c1 - c0 - radius - 1 and not taken[pix[0], pix[1]].any():
                    keep.append(moved)
                    if len(keep) == 8:
                        break
            places[i] = keep
        for t in need:
            grad, ok = _gradient_of(images[t], usable[t], stack.count)
            off = offsets[t][None]
            for i in mine:
                for side in (0, 1):
                    if t in states[i][side]:
                        own[i][side].append(
                            float(outline_contrast(grad, ok, outlines[i], off, noise=noise_g)[0]))
                        ground[i][side].append([float(outline_contrast(grad, ok, m, off, noise=noise_g)[0])
                                                for m in places[i]])
        out = {}
        for i in mine:
            # a state's contrast is the mean over its dates (NaN when none of them could be read)
            c = [_nanmean(own[i][s]) for s in (0, 1)]
            g = [np.array([_nanmean(col) for col in zip(*ground[i][s])]) if ground[i][s] else np.zeros(0)
                 for s in (0, 1)]
            out[i] = (c, g)
        return out

    mask_rows: list = [None] * len(footprints)
    # each footprint's net change, unrounded; NaN without a fitted series (too few usable dates): such a
    # footprint is not part of the site's population
    scores = np.full(len(footprints), np.nan)
    total = sum(len(m) for m, _ in jobs)
    done = 0
    for members, bounds in jobs:
        measure(members, bounds, first=True)
        done += len(members)
        if progress is not None:
            progress("buildings", done, total)
    # the site's own thresholds, from all its footprints
    thresholds = population_thresholds(scores, [r["fstat"] for r in records],
                                       [r["n_observations"] for r in records], stack.count + 1)
    # the site's own verdict on which footprints look built, first and last
    offsets = None
    if len(outlines) >= POPULATION_MIN:
        offsets = site_offsets(offset_sum, offset_n, offset_wins, offset_pairs, shifts)
        seen = {}
        for members, bounds in jobs:
            if any(i in outlines for i in members):
                seen.update(look_again(members, bounds, offsets))
        verdict = site_looks(seen)
        if verdict is not None:
            looks.update(verdict)
    # then the footprints past the score threshold, or with a verdict, are judged again (below the
    # threshold and without a verdict the site's rule cannot apply, so their answer stays as it is)
    mixture = None
    if thresholds is not None or looks:
        score_thr = thresholds[0] if thresholds is not None else None
        mixture = site_mixture(scores, threshold=score_thr) if score_thr is not None else None
        for members, bounds in jobs:
            todo = [i for i in members if i in looks or records[i]["status"] in ("changed", "demolished")
                    or (score_thr is not None and scores[i] >= score_thr)]
            if todo:
                measure(todo, bounds, min_score=score_thr, mixture=mixture)
    if stats is not None:
        stats.update(rule="site thresholds" if thresholds is not None else "per footprint",
                     observable=int(np.isfinite(scores).sum()),
                     min_observable=POPULATION_MIN,
                     score_threshold=None if thresholds is None else round(thresholds[0], 4),
                     outlined=len(outlines), looks_judged=len(looks), built_alpha=BUILT_ALPHA,
                     offsets_px=None if offsets is None or not looks else offsets.tolist())
        if mixture is not None:
            stats["mixture"] = {"weights": [round(v, 4) for v in mixture.weights],
                                "log_means": [round(v, 4) for v in mixture.means],
                                "log_sigmas": [round(v, 4) for v in mixture.sigmas]}
    step_ds.close()
    masks = [m for m in mask_rows if m is not None]
    return records, [r for rows in date_rows for r in rows], masks


def site_offsets(total, count, wins, pairs, shifts, *, alpha: float = BUILT_ALPHA,
                 min_count: int = POPULATION_MIN) -> np.ndarray:
    """Each date's offset between the footprints and its roofs, from all the site's outlined footprints.

    Per date (rows of the arrays) and offset (``shifts``, the first being no
    offset): ``total`` and ``count`` sum the footprints' outline contrasts
    (:func:`outline_contrast`); ``wins`` counts the footprints whose contrast
    is higher there than with no offset, of ``pairs`` measured both ways. The
    offset with the highest mean contrast is the date's, when more footprints
    are sharper there than without it than chance allows (a one-sided sign
    test at ``alpha``): a mean can be won by a few footprints that happen to
    meet a strong edge, as on a site of bare plots, where there is then no
    offset (nor with too few footprints).

    >>> shifts = offset_grid(1)
    >>> total, count = np.zeros((2, 9)), np.full((2, 9), 40)
    >>> total[0, 4] = total[1, 4] = 10.0              # a higher mean contrast at offset (1, 0)
    >>> wins = np.zeros((2, 9), int); wins[0, 4], wins[1, 4] = 28, 22   # date 0: most footprints agree
    >>> site_offsets(total, count, wins, np.full((2, 9), 40), shifts).tolist()
    [[1, 0], [0, 0]]
    """
    from scipy.stats import binom

    out = np.zeros((total.shape[0], 2), np.int64)
    for t in range(total.shape[0]):
        full = int(count[t].max())
        if full < min_count:
            continue
        mean = np.where(count[t] >= 0.5 * full, total[t] / np.maximum(count[t], 1), -np.inf)
        best = int(np.argmax(mean))
        if best and pairs[t, best] >= min_count and \
                binom.sf(wins[t, best] - 1, pairs[t, best], 0.5) <= alpha:
            out[t] = shifts[best]
    return out


def _gradient_of(image, usable, n_spectral):
    """:func:`band_gradient` of one date, and the pixels whose gradient only saw usable ones."""
    ok = ndi.binary_erosion(usable, iterations=1, border_value=1)
    return band_gradient(image, n_spectral), ok


def _nanmean(values) -> float:
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    return float(v.sum() / len(v)) if len(v) else math.nan


def site_looks(seen: dict, *, min_count: int = POPULATION_MIN):
    """How built each footprint looks in its first and its last state, by its site's own ground.

    ``seen`` maps a footprint to ``((first, last), (ground_first, ground_last))``:
    its outline contrast in each state and that of its shape laid on the
    ground around it (:func:`footprint_table`). The ground of the whole site
    is the reference: the p-value of a footprint in a state is the share of the
    site's laid shapes at least as sharply outlined (:func:`built_pvalues`);
    :data:`BUILT_ALPHA` or less looks built, :data:`GROUND_SHARE` or more
    looks like plain ground. Returns ``{footprint: (p_first, p_last)}`` (NaN
    where a state could not be read), or None when fewer than ``min_count``
    footprints or laid shapes were measured in either state.

    >>> seen = {i: ((2.0 if i < 25 else -2.0, -2.0), (np.zeros(4), np.zeros(4))) for i in range(30)}
    >>> p = site_looks(seen)
    >>> [round(float(v), 3) for v in p[0]], [round(float(v), 3) for v in p[29]]
    ([0.008, 1.0], [1.0, 1.0])
    """
    pvalues = []
    for side in (0, 1):
        own = [s[0][side] for s in seen.values()]
        ground = np.concatenate([np.asarray(s[1][side], np.float64) for s in seen.values()] or [np.zeros(0)])
        ground = ground[np.isfinite(ground)]
        if len(ground) < min_count or int(np.isfinite(own).sum()) < min_count:
            return None
        pvalues.append(built_pvalues(own, ground))
    return {i: (float(pvalues[0][k]), float(pvalues[1][k])) for k, i in enumerate(seen)}


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
