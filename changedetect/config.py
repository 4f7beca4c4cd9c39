"""Every parameter of a run: :class:`Config`, with its defaults and the valid range of each.

A low-level module (it imports only :mod:`changedetect.errors`), so that every
stage, the pipeline and the command line share one set of defaults.

Every field of :class:`Config` carries its description in
``dataclasses.field(metadata=...)``; ``Config`` validates itself from it, and
``detect-changes`` builds its options from it (one argument group per
:data:`GROUPS` entry). The keys:

``group``
    One of :data:`GROUPS`.
``help``
    One line for ``--help`` and error messages (the class docstring is the reference).
``type``
    ``"int"`` (bool is not an int here), ``"float"`` (ints too), ``"bool"``,
    ``"str"`` (non-empty), ``"path"`` (a non-empty str or ``os.PathLike``),
    ``"index or name"`` (an int, or a non-empty str or path) or ``"strings"``
    (a tuple of non-empty str; any other sequence is converted to a tuple).
``optional``
    True when None is accepted (the default is None).
``range``
    A :class:`Range` of valid numbers, or None.
``choices``
    Tuple of valid values (for ``"strings"``: of valid items), or None.
``flag``, ``metavar``
    The command-line option and its placeholder (the flag defaults to the field
    name with dashes, ``min_magnitude`` -> ``--min-magnitude``).
``repeat``
    For ``"strings"``: the option is repeated (``--format gpkg --format kml``)
    rather than comma-separated (``--bands red,green,blue``).
"""

from __future__ import annotations

import math
import numbers
import os
from dataclasses import Field, dataclass, field, fields

from .errors import InputError

__all__ = ["Config", "FORMATS", "GROUPS", "Range", "why_invalid"]

#: Output formats of the vector layers.
FORMATS = ("gpkg", "geojson", "kml", "kmz")

#: The groups of :class:`Config` fields, in the order of ``--help`` and :meth:`Config.groups`.
GROUPS = ("inputs", "registration", "change statistics", "object shape", "dating", "buildings",
          "outputs", "resources")


@dataclass(frozen=True)
class Range:
    """The valid numbers of a field: an interval, open-ended where a bound is None.

    Attributes
    ----------
    low, high : float, optional
        Bounds; None leaves that side unbounded.
    include_low, include_high : bool
        Whether the bound itself is valid.

    Examples
    --------
    >>> 0.5 in Range(0, 0.5, include_low=False, include_high=False), str(Range(1))
    (False, 'at least 1')
    """

    low: float | None = None
    high: float | None = None
    include_low: bool = True
    include_high: bool = True

    def __contains__(self, value) -> bool:
        if math.isnan(value):
            return False
        if self.low is not None and not (value >= self.low if self.include_low else value > self.low):
            return False
        return self.high is None or (value <= self.high if self.include_high else value < self.high)

    def __str__(self) -> str:
        low = self.low is not None and f"{'at least' if self.include_low else 'greater than'} {self.low:g}"
        high = self.high is not None and f"{'at most' if self.include_high else 'less than'} {self.high:g}"
        if low and high:
            return (f"between {self.low:g} and {self.high:g}" if self.include_low and self.include_high
                    else f"{low} and {high}")
        return low or high or "any number"


_KINDS = {"int": "an integer", "float": "a number", "bool": "True or False", "str": "a non-empty string",
          "path": "a file or folder path (str)", "index or name": "an index (int) or a name (str)",
          "strings": "a tuple of one or more non-empty strings"}


def _param(default, group: str, help: str, kind: str, *, range: Range | None = None,
           choices: tuple | None = None, flag: str | None = None, metavar: str | None = None,
           repeat: bool = False):
    """A Config field with its metadata (see the module docstring for the keys)."""
    assert group in GROUPS and kind in _KINDS, (group, kind)
    return field(default=default, metadata={
        "group": group, "help": help, "type": kind, "optional": default is None, "range": range,
        "choices": choices, "flag": flag, "metavar": metavar, "repeat": repeat})


def _above(low):
    return Range(low, include_low=False)


_SHARE = Range(0, 1)


def _normalised(f: Field, value):
    """``value`` as a Config stores it: sequences of strings as tuples, NumPy scalars as Python numbers."""
    kind = f.metadata["type"]
    if value is None:
        return value
    if kind == "strings" and not isinstance(value, (str, bytes)):
        try:
            return tuple(value)
        except TypeError:
            return value
    if kind == "int" and isinstance(value, numbers.Integral) and not isinstance(value, (bool, int)):
        return int(value)
    if kind == "float" and isinstance(value, numbers.Real) and not isinstance(value, (bool, int, float)):
        return float(value)
    return value


def _is_kind(kind: str, value) -> bool:
    def text(v):
        return (isinstance(v, str) and v != "") or (isinstance(v, os.PathLike) and os.fspath(v) != "")

    if kind == "int":
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if kind == "float":
        return isinstance(value, numbers.Real) and not isinstance(value, bool)
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "str":
        return isinstance(value, str) and value != ""
    if kind == "path":
        return text(value)
    if kind == "index or name":
        return _is_kind("int", value) or text(value)
    if kind == "strings":
        return isinstance(value, tuple) and len(value) > 0 and all(isinstance(v, str) and v for v in value)
    raise AssertionError(kind)


def why_invalid(f: Field, value) -> str | None:
    """Why ``value`` cannot be the value of the Config field ``f``, or None when it can.

    Parameters
    ----------
    f : dataclasses.Field
        A field of :class:`Config` (``dataclasses.fields(Config)``).
    value
        The value, as :class:`Config` stores it (a sequence of strings as a tuple).

    Returns
    -------
    str or None
        A sentence to follow ``"name=value "`` or an option's value, e.g.
        ``"is out of range: it must be between 0 and 1 (...)."``.
    """
    meta = f.metadata
    if value is None and meta["optional"]:
        return None
    kind, valid, choices, what = meta["type"], meta["range"], meta["choices"], meta["help"]
    if choices is not None:
        if kind == "strings":
            if not _is_kind(kind, value) or any(v not in choices for v in value):
                return f"is not valid; choose one or more of {', '.join(choices)} ({what})."
        elif value not in choices:
            return f"is not valid; choose one of {', '.join(choices)} ({what})."
        return None
    if not _is_kind(kind, value):
        must = _KINDS[kind] + (f", {valid}" if valid is not None else "")
        return f"is not valid: it must be {must}{' or None' if meta['optional'] else ''} ({what})."
    if valid is not None and value not in valid:
        return f"is out of range: it must be {valid} ({what})."
    return None


@dataclass(frozen=True)
class Config:
    """Every parameter of a run (recorded in run.json).

    Attributes
    ----------
    reference : str or int
        Scene whose grid is used and to which others are registered: ``first``,
        ``last``, an index, an ISO date or a file name. Changes are always
        measured against the first acquisition (the baseline).
    coregister : {"local", "global", "none"}
        Co-registration: a tie-point grid and the translation, affine or
        second-order polynomial model it supports best (``local``, default),
        one translation (``global``), or georeferencing only.
    on_registration_failure : {"keep", "raise", "skip"}
        A scene that cannot be co-registered (most of the site changed, no
        texture in common): ``keep`` (default) uses it on its georeferencing,
        flagged, with its estimated error in ``run.json``, and lowers the
        confidence of every change whose bracket it ends or starts; ``raise``
        stops with an error; ``skip`` leaves it out of the analysis.
    min_magnitude : float
        Smallest step of a pixel, in noise standard deviations (Euclidean
        norm over bands and texture of the difference between the means before
        and after), that counts as a change. An object's net change must reach
        half of it (its mean is far less noisy than a pixel).
    weak_fraction : float
        Hysteresis: a pixel whose step reaches ``weak_fraction * min_magnitude``
        (and passes the F test) joins a change when it is connected, through
        pixels of the same date, to pixels above ``min_magnitude``. This is what
        completes a demolition whose rubble has the colour of the old roof.
    alpha : float
        Significance of the step (F test of the two-segment fit against the
        variation within the segments): a step must stand out from seasons,
        soil moisture and haze that come and go.
    persistence : int
        Usable acquisitions a change must stay visible in.
    min_area_m2 : float
        Minimum mapping unit.
    min_width_m : float
        Changes narrower than this (shadow slivers, walls, edges of roads) are
        removed by a morphological opening.
    max_ndvi : float
        The built side of a change (after for construction, before for a
        demolition) must have a mean NDVI below this; needs red and NIR bands.
    max_elongation : float
        Longest side over shortest side of a change's rotated rectangle. Moving
        shadows of walls and fences make long thin slivers; raise it for long
        sheds or barracks.
    min_rectangularity : float
        A change must fill at least this share of its minimum rotated rectangle
        (a rectangle fills 1, an L 0.5–0.8; tree crowns and soil patches are ragged).
    min_solidity : float
        Area over convex-hull area: roads that turn and branching vegetation are
        not compact.
    min_core_width_m, min_core_fraction : float
        At least ``min_core_fraction`` of a change must be wider than
        ``min_core_width_m`` in every direction (it survives an opening by a
        square that wide): buildings are blocks, while moving shadows, walls,
        kerbs and road edges make strips that stay thin even where they join
        into an L or a frame.
    min_outline_contrast : float
        A region whose outline is sharp both before and after, and whose outline
        contrast and inside texture changed by less than this (relative, 0–1), is
        a standing structure that only changed brightness (saturation,
        repainting): dropped.
    shadow_max_angle : float
        An object whose colour before and after differs by at most this spectral
        angle (degrees; skylight makes shadows a little bluer), darkened or lit
        by one factor (0.15–0.85), whose outline did not get sharper (a roof
        brings walls all around it) and whose dark state comes and goes
        (``shadow_min_flips``) is a shadow moving with the sun: dropped.
    shadow_min_flips : float
        Share of an object's observations on the wrong side of its step (dark
        before it or lit after it, pixel by pixel) that marks a shadow moving
        with the sun; a roof is there on every date after it was built.
    min_date_agreement : float
        A region whose mean series has no clean step is still a change when this
        share of its pixels stepped on one date (rubble of the roof's colour).
    rectangle_fill : float
        Outlines that fill this share of their minimum rotated rectangle become
        that rectangle; others become orthogonal polygons.
    transient_sigma : float
        A pixel brighter than both adjacent dates by this many noise sigmas in
        every band but the near-infrared, or darker in every band, and by half
        the step between those dates, is a transient (cloud, cloud shadow) and
        unusable on that date (see :func:`changedetect.masks.transients`).
    transient_fill_m2 : float
        Areas up to this size surrounded by transients on one date (a roof under
        a cloud, as bright as the cloud) are unusable on that date too.
    min_lead : int
        A detected object's change is dated at an intermediate state (a cleared
        pad or walls before the roof) only when the states before the roof are
        seen on at least this many usable acquisitions together; otherwise one
        step is fitted. With 3, a lone first date that differs from a lone
        second one (a season) is not taken for the start of construction.
    block : int
        Block size (pixels) for per-pixel processing: memory grows with it.
    formats : tuple of str
        Output formats among ``gpkg``, ``geojson``, ``kml``, ``kmz``.
    seed : int
        Seed of the random parts (RANSAC); results are deterministic.
    save_registered : str, optional
        Folder where every scene, co-registered onto the reference grid, is
        written as ``<name>_registered.tif`` (only when ``out_dir`` is given;
        relative to the working directory).
    buildings : str, optional
        Footprints of known buildings (GeoPackage, GeoJSON, Shapefile; any CRS):
        every footprint gets change statistics, a status per date and the
        bracket of its change (``Result.buildings``, ``Result.building_dates``),
        and detected changes that fall on a footprint carry its ``building_id``.
    building_id_column : str, optional
        Column of ``buildings`` holding the ids; by default the first of
        ``building_id``, ``id``, ``Id``, ``ID``, ``osm_id``, ``osm_way_id``,
        ``fid``, else ``bld-00001``... in file order.
    pixel_products : bool
        With ``out_dir``, also write ``first_change.tif`` (per pixel, the first
        acquisition showing its change, in days since 1970-01-01; -1 where
        nothing changed) and ``change_count.tif`` (how many lasting changes the
        pixel's series holds: 0-3).
    evidence : bool
        With ``out_dir``, also write the evidence store ``evidence/``: true-colour
        chips of every acquisition around each change on the co-registered grid,
        an overview image and the registration tie points, from which
        :mod:`changedetect.plot` draws the figures without the input images
        (:mod:`changedetect.evidence`).
    memory_mb : int
        Budget for one block of the per-pixel stage: with many dates the block
        shrinks below ``block`` so that all dates of a block fit in it.
    bands : tuple of str, optional
        The role of every band of the inputs (``("red", "green", "blue", "nir")``;
        ``alpha`` for a validity band, ``-`` to ignore one), for files whose
        band descriptions and colour interpretation say nothing. Without it the
        roles come from the files, and four undeclared bands are taken as blue,
        green, red, NIR (a warning says so).
    pixel_size : float, optional
        Metres per pixel for images that are not georeferenced (PNG, JPEG,
        TIFF exports with no CRS or geotransform): they go on a local grid with
        the reference's upper-left corner at (0, 0), co-registration aligns
        them, and the outputs are in that local grid (GeoJSON in its metres, no
        KML), marked ``georeferenced: false`` in run.json.
    report : bool
        With ``out_dir``, also write ``report.html``
        (:func:`changedetect.report.write_report`): one self-contained HTML
        page (images embedded, nothing fetched) with a summary, an overview
        map, a section per change and the run's provenance.
    overwrite : bool
        An ``out_dir`` that already holds files is refused unless this is
        True; then the earlier run there is replaced as a whole (the new set is
        written beside it and swapped in, so no file of the earlier run
        survives). Even with it, a folder that holds files but no
        ``run.json`` of changedetect is never emptied.
    detector : str
        The per-pixel change detector, by name (see
        :func:`changedetect.detector.available_detectors`): ``auto`` (default:
        ``pair`` for two acquisitions, ``statistical`` for more),
        ``statistical`` (built in: the step test above), ``pair``
        (:class:`changedetect.pair.PairDetector`: the pair method, first
        against last acquisition), ``onnx`` (a trained model, ``model``)
        or one that an installed package registers in the
        ``changedetect.detectors`` entry point group. Registration, dating,
        objects and outputs are the same whichever detector finds the pixels.
    model : str, optional
        A model file for the detectors that need one (``onnx``: an ``.onnx``
        file; required with it).

    Every field is described in its ``dataclasses.field`` metadata (group, a
    one-line help, type, valid range or choices, command-line flag; see
    :mod:`changedetect.config`), from which a Config validates itself: a value
    of the wrong type or out of range raises :class:`~changedetect.errors.InputError`
    naming the field and its valid range. :meth:`groups` lists the fields by group.
    """

    reference: str | int = _param(
        "first", "inputs", "image whose grid is used and to which the others are registered: first, "
        "last, an index, an ISO date or a file name", "index or name", metavar="DATE|first|last|PATH")
    coregister: str = _param(
        "local", "registration", "co-registration: local fits tie points with the best of translation, "
        "affine and 2nd-order polynomial; global one subpixel shift; none keeps the georeferencing",
        "str", choices=("local", "global", "none"))
    on_registration_failure: str = _param(
        "keep", "registration", "a scene that cannot be co-registered: keep it on its georeferencing, "
        "flagged, with a lower confidence for its changes; raise an error; skip it", "str",
        choices=("keep", "raise", "skip"))
    min_magnitude: float = _param(
        14.0, "change statistics", "smallest change of a pixel, in noise standard deviations", "float",
        range=_above(0), metavar="SIGMA")
    weak_fraction: float = _param(
        0.5, "change statistics", "hysteresis: pixels that step by this share of the smallest magnitude "
        "join a change they touch; 1 turns it off", "float", range=Range(0, 1, include_low=False),
        metavar="SHARE")
    alpha: float = _param(
        0.01, "change statistics", "significance level of the F test a step must pass against seasons, "
        "soil moisture and haze", "float", range=Range(0, 0.5, include_low=False, include_high=False),
        metavar="A")
    persistence: int = _param(
        2, "change statistics", "usable acquisitions a change must stay visible in", "int",
        range=Range(1), metavar="N")
    min_area_m2: float = _param(
        30.0, "object shape", "minimum mapping unit in square metres", "float", range=Range(0),
        flag="--min-area", metavar="M2")
    min_width_m: float = _param(
        2.0, "object shape", "changes narrower than this many metres are removed by an opening: shadow "
        "slivers, walls, road edges", "float", range=Range(0), flag="--min-width", metavar="M")
    max_ndvi: float = _param(
        0.3, "change statistics", "the built side of a change must have a mean NDVI below this; needs red "
        "and NIR bands", "float", range=Range(-1, 1), metavar="NDVI")
    max_elongation: float = _param(
        6.0, "object shape", "largest ratio of the long to the short side of a change's rotated "
        "rectangle: shadow slivers are long and thin", "float", range=Range(1), metavar="RATIO")
    min_rectangularity: float = _param(
        0.3, "object shape", "smallest share of its rotated rectangle a change must fill", "float",
        range=_SHARE, metavar="SHARE")
    min_solidity: float = _param(
        0.5, "object shape", "smallest ratio of a change's area to that of its convex hull: turning roads "
        "and branching vegetation are not compact", "float", range=_SHARE, metavar="SHARE")
    min_core_width_m: float = _param(
        4.0, "object shape", "width in metres that the core of a change exceeds in every direction: "
        "buildings are blocks, shadows and walls strips", "float", range=Range(0),
        flag="--min-core-width", metavar="M")
    min_core_fraction: float = _param(
        0.5, "object shape", "smallest share of a change its core must make up", "float", range=_SHARE,
        metavar="SHARE")
    min_outline_contrast: float = _param(
        0.2, "object shape", "a sharply outlined region whose outline contrast and texture changed by a "
        "smaller share only changed brightness: dropped", "float", range=_SHARE, metavar="SHARE")
    shadow_max_angle: float = _param(
        6.0, "change statistics", "largest spectral angle in degrees between before and after of a "
        "shadow moving with the sun", "float", range=Range(0, 90, include_low=False), metavar="DEG")
    shadow_min_flips: float = _param(
        0.1, "change statistics", "share of observations on the wrong side of its step that marks a "
        "shadow moving with the sun", "float", range=_SHARE, metavar="SHARE")
    min_date_agreement: float = _param(
        0.6, "dating", "share of a region's pixels stepping on one date that makes it a change without a "
        "clean step of its mean", "float", range=_SHARE, metavar="SHARE")
    rectangle_fill: float = _param(
        0.85, "object shape", "outlines that fill this share of their rotated rectangle become that "
        "rectangle, others orthogonal polygons", "float", range=_SHARE, metavar="SHARE")
    transient_sigma: float = _param(
        3.0, "change statistics", "noise standard deviations by which a pixel must stand out from both "
        "adjacent dates to be a transient: cloud, cloud shadow", "float", range=_above(0),
        metavar="SIGMA")
    transient_fill_m2: float = _param(
        5000.0, "change statistics", "areas up to this many square metres enclosed by transients on a "
        "date are unusable on it too; 0 fills none", "float", range=Range(0), flag="--transient-fill",
        metavar="M2")
    min_lead: int = _param(
        3, "dating", "usable acquisitions before the roof needed to date a change at an intermediate "
        "state: cleared pad, walls", "int", range=Range(2), metavar="N")
    block: int = _param(
        512, "resources", "block size in pixels of the per-pixel stage; memory grows with it", "int",
        range=Range(64), metavar="PX")
    formats: tuple[str, ...] = _param(
        ("gpkg", "geojson"), "outputs", "output formats of the vector layers", "strings", choices=FORMATS,
        flag="--format", repeat=True)
    seed: int = _param(
        0, "registration", "seed of the random parts, RANSAC: the same seed gives the same results", "int",
        range=Range(0), metavar="N")
    save_registered: str | None = _param(
        None, "outputs", "folder to write every scene to, co-registered onto the reference grid", "path",
        metavar="DIR")
    buildings: str | None = _param(
        None, "buildings", "footprints of known buildings, GeoPackage, GeoJSON or Shapefile in any CRS: "
        "adds each building's status and change dates", "path", metavar="FILE")
    building_id_column: str | None = _param(
        None, "buildings", "column of the footprints holding the ids; else the first of building_id, id, "
        "Id, ID, osm_id, osm_way_id, fid, else numbered in file order", "str", metavar="NAME")
    pixel_products: bool = _param(
        True, "outputs", "also write first_change.tif and change_count.tif: per pixel, the date and the "
        "count of its changes", "bool")
    memory_mb: int = _param(
        256, "resources", "memory budget in MB of one block of the per-pixel stage; with many dates the "
        "block shrinks to fit", "int", range=Range(16), flag="--memory", metavar="MB")
    bands: tuple[str, ...] | None = _param(
        None, "inputs", "role of every band, for files that declare none: blue, green, red, nir, alpha "
        "for validity, - to ignore one; else from the files", "strings", metavar="ROLES")
    pixel_size: float | None = _param(
        None, "inputs", "metres per pixel of images with no georeferencing, PNG/JPEG/TIFF exports: they "
        "go on a local grid", "float", range=_above(0), metavar="METRES")
    overwrite: bool = _param(
        False, "outputs", "replace an earlier run in the output folder as a whole: no file of it is kept",
        "bool")
    detector: str = _param(
        "auto", "change statistics", "per-pixel change detector: auto (pair for two acquisitions, "
        "statistical for more), statistical, pair, onnx with a model file, or one that a plugin "
        "registers", "str", metavar="NAME")
    model: str | None = _param(
        None, "change statistics", "model file for the detectors that need one, e.g. onnx", "path",
        metavar="FILE")
    evidence: bool = _param(
        True, "outputs", "also write evidence/: co-registered true-colour chips of every change, an overview "
        "and the tie points, to draw figures without the images", "bool")
    report: bool = _param(
        False, "outputs", "also write report.html: one self-contained page with the evidence of every "
        "change (chips, dates, measures, confidence) and the provenance of the run", "bool")

    def __post_init__(self):
        for f in fields(self):
            given = getattr(self, f.name)
            value = _normalised(f, given)
            if value is not given:
                object.__setattr__(self, f.name, value)
            problem = why_invalid(f, value)
            if problem is not None:
                raise InputError(f"{f.name}={given!r} {problem}")
        if self.detector == "onnx" and self.model is None:
            raise InputError("detector='onnx' needs a model file: give model=... (--model FILE on the "
                             "command line).")

    @classmethod
    def groups(cls) -> dict[str, list[Field]]:
        """The fields by group, in the order of :data:`GROUPS`, each group in field order.

        Returns
        -------
        dict of str to list of dataclasses.Field
            Every field appears in exactly one group; ``f.metadata`` holds its
            help, type, range and command-line flag.

        Examples
        --------
        >>> [f.name for f in Config.groups()["dating"]]
        ['min_date_agreement', 'min_lead']
        """
        out: dict[str, list[Field]] = {g: [] for g in GROUPS}
        for f in fields(cls):
            out[f.metadata["group"]].append(f)
        return out
