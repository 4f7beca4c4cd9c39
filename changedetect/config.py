"""Every parameter of a run: :class:`Config`, with its defaults and the valid range of each.

A low-level module (it imports only :mod:`changedetect.errors`), so that every
stage, the pipeline and the command line share one set of defaults.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import InputError

__all__ = ["Config", "FORMATS"]

#: Output formats of the vector layers.
FORMATS = ("gpkg", "geojson", "kml")


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
        unusable on that date (see :func:`transients`).
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
        Output formats among ``gpkg``, ``geojson``, ``kml``.
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
    overwrite : bool
        An ``out_dir`` that already holds files is refused unless this is
        True; then the earlier run there is replaced as a whole (the new set is
        written beside it and swapped in, so no file of the earlier run
        survives). Even with it, a folder that holds files but no
        ``run.json`` of changedetect is never emptied.
    """

    reference: str | int = "first"
    coregister: str = "local"
    on_registration_failure: str = "keep"
    min_magnitude: float = 14.0
    weak_fraction: float = 0.5
    alpha: float = 0.01
    persistence: int = 2
    min_area_m2: float = 30.0
    min_width_m: float = 2.0
    max_ndvi: float = 0.3
    max_elongation: float = 6.0
    min_rectangularity: float = 0.3
    min_solidity: float = 0.5
    min_core_width_m: float = 4.0
    min_core_fraction: float = 0.5
    min_outline_contrast: float = 0.2
    shadow_max_angle: float = 6.0
    shadow_min_flips: float = 0.1
    min_date_agreement: float = 0.6
    rectangle_fill: float = 0.85
    transient_sigma: float = 3.0
    transient_fill_m2: float = 5000.0
    min_lead: int = 3
    block: int = 512
    formats: tuple[str, ...] = ("gpkg", "geojson")
    seed: int = 0
    save_registered: str | None = None
    buildings: str | None = None
    building_id_column: str | None = None
    pixel_products: bool = True
    memory_mb: int = 256
    bands: tuple[str, ...] | None = None
    pixel_size: float | None = None
    overwrite: bool = False

    def __post_init__(self):
        choices = {"coregister": ("local", "global", "none"),
                   "on_registration_failure": ("keep", "raise", "skip"),
                   }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise InputError(f"{name}={getattr(self, name)!r} is not valid; choose one of "
                                 f"{', '.join(allowed)}.")
        if not 0 < self.alpha < 0.5:
            raise InputError(f"alpha={self.alpha} must be between 0 and 0.5.")
        if not 0 < self.weak_fraction <= 1:
            raise InputError(f"weak_fraction={self.weak_fraction} must be in (0, 1]; 1 turns the "
                             "hysteresis off.")
        if self.min_magnitude <= 0:
            raise InputError("min_magnitude must be positive (noise standard deviations).")
        if self.persistence < 1:
            raise InputError("persistence must be at least 1 acquisition.")
        if self.max_elongation < 1:
            raise InputError("max_elongation must be at least 1 (a square).")
        if self.min_area_m2 < 0:
            raise InputError("min_area_m2 cannot be negative.")
        if self.block < 64:
            raise InputError("block must be at least 64 pixels.")
        if self.memory_mb < 16:
            raise InputError("memory_mb must be at least 16 (MB per block of the per-pixel stage).")
        if self.min_lead < 2:
            raise InputError("min_lead must be at least 2 (dates before the roof for a two-step "
                             "fit: one before the pad and the pad).")
        if self.transient_fill_m2 < 0:
            raise InputError("transient_fill_m2 cannot be negative (0 fills no hole under a cloud).")
        object.__setattr__(self, "formats", tuple(self.formats))
        bad = [f for f in self.formats if f not in FORMATS]
        if bad or not self.formats:
            raise InputError(f"formats {list(self.formats)} invalid; choose from {', '.join(FORMATS)}.")
