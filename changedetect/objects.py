"""From the per-pixel change map to dated, judged, outlined objects.

Morphological cleanup, a minimum mapping unit, polygons (regularised to a
rotated rectangle where that fits), and the kind of a change (new, demolished,
modified) decided from the before and after appearance of the object's outline.
:func:`candidate_regions` reads the step raster window by window and yields
every connected region once; :func:`extract_objects` dates each one
(:func:`changedetect.timeline.date_region`), judges it (vegetation, an
unchanged structure, a moving shadow, its shape) and outlines the kept ones.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from . import masks
from .config import Config
from .confidence import TERMS, confidence_terms, shape_form, site_significance
from .coregister import registration_errors, registration_term
from .detector import coarse_grid, hysteresis
from .series import SeriesModel, read_series
from .stack import Stack, area_m2
from .timeline import date_region, masked_mean

log = logging.getLogger(__name__)
log.addHandler(logging.NullHandler())

_DEFAULTS = Config()

__all__ = ["clean_mask", "label_objects", "polygonize", "regularize", "orthogonalize",
           "dominant_angle", "outline_edges", "Appearance", "appearance", "flip_fraction",
           "candidate_regions", "extract_objects", "structure_verdict",
           "ObjectShape", "object_shape", "ShapeLimits", "shape_filter", "core_fraction",
           "opening_radius", "step_strength", "split_region", "PIECE_LEVEL", "kept_pattern",
           "COARSE_PATTERN_SIZE"]

_STRUCT4 = ndi.generate_binary_structure(2, 1)
_STRUCT8 = ndi.generate_binary_structure(2, 2)


def clean_mask(mask: np.ndarray, *, min_pixels: int, radius: int = 1) -> np.ndarray:
    """Open, close, fill holes and drop components smaller than ``min_pixels``.

    Examples
    --------
    >>> m = np.zeros((20, 20), bool); m[5:15, 5:15] = True; m[0, 0] = True
    >>> out = clean_mask(m, min_pixels=20)
    >>> int(out.sum()), bool(out[0, 0])
    (100, False)
    """
    m = np.asarray(mask, bool)
    if radius > 0:
        st = ndi.iterate_structure(_STRUCT8, radius)
        m = ndi.binary_opening(m, structure=st)
        m = ndi.binary_closing(m, structure=st, border_value=0) | m
    m = ndi.binary_fill_holes(m)
    lab, n = ndi.label(m, structure=_STRUCT4)
    if n == 0:
        return m
    sizes = np.bincount(lab.ravel(), minlength=n + 1)
    keep = sizes >= min_pixels
    keep[0] = False
    return keep[lab]


def label_objects(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """4-connected components, labels 1..n (int32)."""
    lab, n = ndi.label(np.asarray(mask, bool), structure=_STRUCT4)
    return lab.astype(np.int32), int(n)


def polygonize(mask: np.ndarray, transform):
    """The outline of a boolean mask as one shapely (Multi)Polygon in map units.

    Pixel edges become polygon edges (``rasterio.features.shapes``); holes are kept.
    """
    import shapely
    from rasterio.features import shapes
    from shapely.geometry import shape

    m = np.asarray(mask, bool)
    polys = [shape(g) for g, v in shapes(m.astype(np.uint8), mask=m, transform=transform,
                                          connectivity=4) if v == 1]
    if not polys:
        return None
    geom = shapely.union_all(polys)
    return geom


def regularize(geom, *, min_fill: float = 0.85, simplify: float = 0.0, cell: float | None = None):
    """A building-like outline: a rotated rectangle where it fits, else an orthogonal polygon.

    Buildings are mostly rectangles, or made of rectangles at right angles (an
    L, a T, a U). A staircase outline from pixels is replaced by its minimum
    rotated rectangle, shrunk to the same area, when the polygon covers at least
    ``min_fill`` of it. Otherwise, with ``cell`` (map units, typically the pixel
    size), it becomes an orthogonal polygon along the outline's dominant
    direction (:func:`orthogonalize`): an L comes out as an L with square
    corners, not as a staircase nor as its bounding rectangle. Without ``cell``
    the outline is simplified by ``simplify`` map units.

    Examples
    --------
    >>> from shapely.geometry import Polygon
    >>> ell = Polygon([(0, 0), (20, 0), (20, 8), (8, 8), (8, 20), (0, 20)])
    >>> out = regularize(ell, cell=0.5)
    >>> len(out.exterior.coords) - 1, round(out.area, 1)
    (6, 256.0)
    """
    import shapely

    if geom is None or geom.is_empty:
        return geom
    rect = shapely.minimum_rotated_rectangle(geom)
    if rect.area > 0 and geom.area / rect.area >= min_fill:
        # the rectangle around pixel edges is a little too large: shrink it to the same area
        f = np.sqrt(geom.area / rect.area)
        return shapely.affinity.scale(rect, xfact=f, yfact=f, origin="centroid")
    if cell:
        out = orthogonalize(geom, cell=cell)
        if out is not None and not out.is_empty:
            return out
    if simplify > 0:
        geom = shapely.simplify(geom, simplify, preserve_topology=True)
    return geom


def dominant_angle(geom) -> float:
    """Direction (degrees, modulo 90) of a polygon's edges, weighted by their length.

    The mean of the edge directions on the quarter circle (angles times 4), so
    the two walls of a corner vote for the same direction.

    Examples
    --------
    >>> from shapely.geometry import box
    >>> from shapely import affinity
    >>> round(dominant_angle(affinity.rotate(box(0, 0, 30, 10), 20)), 6)
    20.0
    """
    polys = getattr(geom, "geoms", [geom])
    sx = sy = 0.0
    for p in polys:
        for ring in [p.exterior, *p.interiors]:
            xy = np.asarray(ring.coords)
            d = np.diff(xy, axis=0)
            length = np.hypot(d[:, 0], d[:, 1])
            a = np.arctan2(d[:, 1], d[:, 0]) * 4.0
            sx += float(np.sum(length * np.cos(a)))
            sy += float(np.sum(length * np.sin(a)))
    return float(np.degrees(np.arctan2(sy, sx) / 4.0))


def orthogonalize(geom, *, cell: float, angle: float | None = None):
    """An orthogonal polygon (right angles only) of about the same area and shape.

    The polygon is turned so that its dominant direction (:func:`dominant_angle`,
    or ``angle`` in degrees) is along the axes, sampled on a grid of ``cell``
    map units (a cell is inside when its centre is), cleaned of one-cell steps
    (an opening and a closing), outlined along the grid lines and turned back.
    Steps a pixel high that come from an oblique outline disappear; the corners
    of an L, T or U stay square. Returns None when nothing is left.
    """
    import shapely
    from affine import Affine
    from rasterio.features import rasterize

    if geom is None or geom.is_empty or cell <= 0:
        return None
    # the direction of the outline's walls, read on the outline simplified by a cell (a pixel
    # staircase along an oblique wall has only axis-parallel edges)
    theta = (dominant_angle(shapely.simplify(geom, cell, preserve_topology=True))
             if angle is None else float(angle))
    c = geom.centroid
    turned = shapely.affinity.rotate(geom, -theta, origin=c)
    x0, y0, x1, y1 = turned.bounds
    pad = 2 * cell
    w = int(np.ceil((x1 - x0 + 2 * pad) / cell))
    h = int(np.ceil((y1 - y0 + 2 * pad) / cell))
    t = Affine(cell, 0, x0 - pad, 0, -cell, y1 + pad)
    m = rasterize([(turned, 1)], out_shape=(h, w), transform=t, dtype="uint8").astype(bool)
    if not m.any():
        return None
    cleaned = ndi.binary_closing(ndi.binary_opening(m, _STRUCT8), _STRUCT8)
    if cleaned.sum() >= 0.8 * m.sum():
        m = cleaned
    lab, n = ndi.label(m, structure=_STRUCT4)
    if n > 1:                                 # keep the largest part
        sizes = np.bincount(lab.ravel())
        sizes[0] = 0
        m = lab == int(np.argmax(sizes))
    m = ndi.binary_fill_holes(m)
    out = polygonize(m, t)
    if out is None:
        return None
    if out.geom_type == "Polygon":
        ring = _remove_jogs(np.asarray(out.exterior.coords)[:-1], 1.5 * cell)
        if len(ring) >= 4:
            out = shapely.Polygon(ring)
    out = shapely.simplify(out, cell * 0.01)    # drop collinear vertices along grid lines
    if not out.is_valid or out.is_empty:
        return None
    return shapely.affinity.rotate(out, theta, origin=c)


def _remove_jogs(xy: np.ndarray, min_len: float) -> np.ndarray:
    """Remove edges shorter than ``min_len`` from an axis-parallel ring (vertices, not closed).

    A short edge joins two parallel edges (a one-cell step, or a notch at a
    corner): the shorter of the two is moved onto the other's line, which drops
    the short edge and changes the area by at most that edge's length times the
    short step.
    """
    pts = [tuple(p) for p in xy]

    def tidy(p):
        out = []
        for q in p:                                     # drop repeated vertices
            if not out or abs(q[0] - out[-1][0]) + abs(q[1] - out[-1][1]) > 1e-9:
                out.append(q)
        if len(out) > 1 and abs(out[0][0] - out[-1][0]) + abs(out[0][1] - out[-1][1]) <= 1e-9:
            out.pop()
        changed = True
        while changed and len(out) > 4:                 # drop collinear vertices
            changed = False
            for i in range(len(out)):
                a, b, c = out[i - 1], out[i], out[(i + 1) % len(out)]
                if (abs(a[0] - b[0]) < 1e-9 and abs(b[0] - c[0]) < 1e-9) or \
                        (abs(a[1] - b[1]) < 1e-9 and abs(b[1] - c[1]) < 1e-9):
                    out.pop(i)
                    changed = True
                    break
        return out

    pts = tidy(pts)
    for _ in range(4 * len(pts)):
        n = len(pts)
        if n <= 4:
            break
        lengths = [abs(pts[(i + 1) % n][0] - pts[i][0]) + abs(pts[(i + 1) % n][1] - pts[i][1])
                   for i in range(n)]
        i = int(np.argmin(lengths))
        if lengths[i] >= min_len:
            break
        prev_len, next_len = lengths[i - 1], lengths[(i + 1) % n]
        a, b = i, (i + 1) % n                           # the short edge's two vertices
        vertical = abs(pts[a][0] - pts[b][0]) < 1e-9    # short edge along y: neighbours along x
        k = 1 if vertical else 0                        # the coordinate the neighbours share
        if prev_len <= next_len:                        # move the previous edge onto the next one
            target = pts[b][k]
            for j in (i - 1, a):
                p = list(pts[j])
                p[k] = target
                pts[j] = tuple(p)
        else:                                           # move the next edge onto the previous one
            target = pts[a][k]
            for j in (b, (i + 2) % n):
                p = list(pts[j])
                p[k] = target
                pts[j] = tuple(p)
        pts = tidy(pts)
    return np.asarray(pts)


def _grad(img: np.ndarray) -> np.ndarray:
    g = img.mean(axis=0) if img.ndim == 3 else img
    return np.hypot(ndi.sobel(g, axis=0), ndi.sobel(g, axis=1)) / 8.0


def outline_edges(image: np.ndarray, mask: np.ndarray, *, width: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Gradient magnitude of ``image`` on the outline of ``mask``.

    Returns the gradient on the ring of pixels within ``width`` of the mask's
    edge, and that ring's boolean mask.
    """
    mask = np.asarray(mask, bool)
    ring = ndi.binary_dilation(mask, iterations=width) & ~ndi.binary_erosion(mask, iterations=width)
    return _grad(np.asarray(image, np.float32))[ring], ring


@dataclass(frozen=True)
class ObjectShape:
    """Shape measures of a polygon: area, rectangularity, solidity, elongation, mean width."""

    area: float
    rectangularity: float
    solidity: float
    elongation: float
    width: float = float("inf")


def object_shape(geom) -> ObjectShape:
    """Shape measures used by the confidence and by filters."""
    import shapely

    rect = shapely.minimum_rotated_rectangle(geom)
    hull = shapely.convex_hull(geom)
    x, y = np.asarray(rect.exterior.coords).T
    sides = np.hypot(np.diff(x), np.diff(y))[:2]
    elong = float(sides.max() / max(sides.min(), 1e-9))
    return ObjectShape(area=float(geom.area), rectangularity=float(geom.area / max(rect.area, 1e-9)),
                       solidity=float(geom.area / max(hull.area, 1e-9)), elongation=elong,
                       width=float(geom.area / max(sides.max(), 1e-9)))


@dataclass(frozen=True)
class ShapeLimits:
    """Limits of a building-like object, in map units (see :func:`shape_filter`).

    Attributes
    ----------
    min_area : float
        Minimum mapping unit (m²): vehicles, debris, noise.
    max_elongation : float
        Longest over shortest side of the minimum rotated rectangle: roads, kerbs,
        fences and the slivers of moving wall shadows are long and thin.
    min_rectangularity : float
        Area over the area of the minimum rotated rectangle: buildings fill it
        (an L fills 0.5–0.8 of it), tree crowns, soil patches and rubble
        heaps are ragged.
    min_solidity : float
        Area over the convex hull's area: buildings are compact, roads that turn
        and branching vegetation are not.
    min_width : float
        Mean width (area over the rectangle's long side): strips narrower than
        this are not buildings.

    The defaults are those of :class:`changedetect.config.Config`
    (``min_area_m2``, ``max_elongation``, ``min_rectangularity``,
    ``min_solidity``, ``min_width_m``); :meth:`from_config` takes a run's.
    """

    min_area: float = _DEFAULTS.min_area_m2
    max_elongation: float = _DEFAULTS.max_elongation
    min_rectangularity: float = _DEFAULTS.min_rectangularity
    min_solidity: float = _DEFAULTS.min_solidity
    min_width: float = _DEFAULTS.min_width_m

    @classmethod
    def from_config(cls, config) -> "ShapeLimits":
        """The limits of a run's :class:`~changedetect.config.Config`."""
        return cls(min_area=config.min_area_m2, max_elongation=config.max_elongation,
                   min_rectangularity=config.min_rectangularity, min_solidity=config.min_solidity,
                   min_width=config.min_width_m)


def shape_filter(shape: ObjectShape, limits: ShapeLimits) -> str | None:
    """Why an object's shape is not a building's, or None when it passes every limit.

    Examples
    --------
    >>> from shapely.geometry import box
    >>> shape_filter(object_shape(box(0, 0, 60, 3)), ShapeLimits())    # a road strip
    'elongation 20.0 > 6'
    >>> shape_filter(object_shape(box(0, 0, 2, 1)), ShapeLimits())     # a vehicle
    'area 2.0 m2 < 30'
    >>> shape_filter(object_shape(box(0, 0, 20, 12)), ShapeLimits()) is None
    True
    """
    if shape.area < limits.min_area:
        return f"area {shape.area:.1f} m2 < {limits.min_area:g}"
    if shape.elongation > limits.max_elongation:
        return f"elongation {shape.elongation:.1f} > {limits.max_elongation:g}"
    if shape.width < limits.min_width:
        return f"mean width {shape.width:.1f} m < {limits.min_width:g}"
    if shape.rectangularity < limits.min_rectangularity:
        return f"rectangularity {shape.rectangularity:.2f} < {limits.min_rectangularity:g}"
    if shape.solidity < limits.min_solidity:
        return f"solidity {shape.solidity:.2f} < {limits.min_solidity:g}"
    return None


@dataclass(frozen=True)
class Appearance:
    """How an object looks before and after its change (see :func:`appearance`).

    Attributes
    ----------
    kind : str
        ``new``, ``demolished``, ``modified``, or ``none`` when no structure
        appeared nor disappeared.
    contrast : float
        Outline gradient, ``(after - before) / (after + before)``, -1..1.
    texture_contrast : float
        Relative local texture (over brightness) inside the object,
        ``(after - before) / (after + before)``:
        negative when it became flatter (a roof on ground), positive when it
        became rougher (rubble or ground where a roof was).
    sharp_before, sharp_after : float
        Share of the outline with a strong edge (a standing structure's wall).
    sharp_both : float
        Share of the outline with a strong edge both before and after: the wall of
        an existing building that a ``modified`` annex was built against.
    angle_deg : float
        Spectral angle between the object's mean colour before and after: a
        shadow scales every band by about one factor (a small angle).
    brightness_ratio : float
        Mean brightness of the darker side over the brighter one.
    texture_kept : float
        Relative texture (texture over brightness) of the darker side over that of
        the brighter side: about 1 when the ground still shows through (a shadow),
        low when a flat roof covers it.
    pattern_r : float
        Median local correlation of the two sides' ground pattern inside the object.
    grey_change : float
        Mean greyness (:func:`changedetect.masks.greyness`) after minus before over
        the object, when the visible bands are known (else NaN): built materials
        (roofs, concrete, their rubble) are grey, what a construction replaces
        (vegetation, soil) is coloured.
    """

    kind: str
    contrast: float
    texture_contrast: float
    sharp_before: float
    sharp_after: float
    sharp_both: float
    angle_deg: float
    brightness_ratio: float
    texture_kept: float
    pattern_r: float
    grey_change: float = float("nan")

    def is_shadow(self, flips: float, *, max_angle_deg: float = 6.0,
                  ratio: tuple[float, float] = (0.15, 0.85), min_flips: float = 0.1,
                  max_contrast: float = 0.3) -> bool:
        """A change of illumination only: a shadow that moves with the sun.

        A shadow multiplies the radiance of every band by about the same factor
        (the share of diffuse light), so the colour stays (spectral angle at most
        ``max_angle_deg``) while the brightness changes by a factor within
        ``ratio``; and it moves with the sun, so the ground it falls on is dark on
        some dates and lit on others: at least ``min_flips`` of the object's
        observations sit on the wrong side of its step (``flips``, see
        :func:`flip_fraction`). A new roof, even one of the ground's
        colour, is there on every date after it was built, and brings walls all
        around it: its outline gets sharper (``contrast >= max_contrast``), while a
        shadow only adds its own far edge, which moves. Skylight makes shadows a
        little bluer than the lit ground, hence a few degrees of spectral angle.
        """
        same_colour = self.angle_deg <= max_angle_deg
        scaled = ratio[0] <= self.brightness_ratio <= ratio[1]
        return bool(same_colour and scaled and flips >= min_flips
                    and self.contrast < max_contrast)

    def unchanged_structure(self, min_contrast: float = 0.2, *, max_angle_deg: float = 2.0,
                            min_ratio: float = 0.85) -> bool:
        """The same surface before and after: only its brightness changed a little.

        Same colour (spectral angle at most ``max_angle_deg``), brightness within
        ``min_ratio``, an outline neither sharper nor weaker (``|contrast| <
        min_contrast``) and an inside not rougher (a demolition leaves rubble or
        ground rougher than the roof): a roof at the sensor's saturation or in
        another light, not a construction nor a demolition.
        """
        return bool(self.angle_deg <= max_angle_deg and self.brightness_ratio >= min_ratio
                    and abs(self.contrast) < min_contrast
                    and self.texture_contrast < 0.75 * min_contrast)


def appearance(before: np.ndarray, after: np.ndarray, mask: np.ndarray, *, noise: float,
               texture: tuple[np.ndarray, np.ndarray] | None = None, outline_step: float = 0.1,
               texture_step: float = 0.2, rgb=None) -> Appearance:
    """Measure the before and after appearance of an object and decide its kind.

    The kind combines the outline (a standing structure has sharp edges along
    its footprint: :func:`outline_edges`) with the texture inside it (median local
    standard deviation over brightness, over the object's interior): a roof is
    flat, the ground it covers and the rubble or ground a demolition leaves are
    rough. ``demolished`` when the outline clearly weakened (``contrast <
    -2 outline_step``), or did not get sharper while the inside got rougher
    (``texture_contrast > texture_step``); ``new`` when the outline got sharper
    (``contrast >= outline_step``) or the inside flatter; ``none`` when neither
    (no structure appeared nor disappeared: not construction). A ``new``
    object whose outline was already sharp before and after along 15–60 % of
    it (the wall of the building it was built against) is ``modified``. The colour, brightness and texture measures feed
    :meth:`Appearance.is_shadow` and :meth:`Appearance.unchanged_structure`.

    Parameters
    ----------
    before, after : ndarray, shape (bands, rows, cols)
        Composites of each side of the change.
    mask : ndarray of bool
        The object's pixels.
    noise : float
        Typical gradient magnitude of unchanged ground.
    texture : (ndarray, ndarray), optional
        Local texture (standard deviation) of each side; computed from the band
        mean in 5 × 5 windows when omitted.
    rgb : (int, int, int), optional
        Indices of the red, green and blue bands, for ``grey_change``.
    """
    mask = np.asarray(mask, bool)
    before = np.asarray(before, np.float32)
    after = np.asarray(after, np.float32)
    gb, _ = outline_edges(before, mask)
    ga, _ = outline_edges(after, mask)
    eb, ea = float(np.mean(gb)), float(np.mean(ga))
    contrast = (ea - eb) / max(ea + eb, 1e-9)
    strong = 4.0 * noise
    sharp_b = float(np.mean(gb > strong)) if gb.size else 0.0
    sharp_a = float(np.mean(ga > strong)) if ga.size else 0.0
    if texture is None:
        texture = (masks.texture(before), masks.texture(after))
    inner = ndi.binary_erosion(mask, iterations=2)
    if inner.sum() < 0.2 * mask.sum():
        inner = mask
    # relative texture (local standard deviation over brightness): a texture's amplitude
    # scales with the light, so a bright roof's faint texture is not a dark ground's
    lum_b = np.maximum(before.mean(axis=0), 1e-6)
    lum_a = np.maximum(after.mean(axis=0), 1e-6)
    rtb = float(np.median((texture[0] / lum_b)[inner]))
    rta = float(np.median((texture[1] / lum_a)[inner]))
    tex_contrast = (rta - rtb) / max(rta + rtb, 1e-9)
    tb, ta = float(np.median(texture[0][inner])), float(np.median(texture[1][inner]))
    _, ring = outline_edges(before, mask)
    both = float(np.mean((_grad(before)[ring] > strong) & (_grad(after)[ring] > strong))) if ring.any() else 0.0
    if contrast < -2 * outline_step or (contrast < outline_step and tex_contrast > texture_step):
        kind = "demolished"
    elif contrast < outline_step and tex_contrast > -texture_step:
        kind = "none"             # no structure appeared nor disappeared
    elif 0.15 <= both <= 0.6:
        kind = "modified"
    else:
        kind = "new"
    mb = before[:, mask].mean(axis=1).astype(np.float64)
    ma = after[:, mask].mean(axis=1).astype(np.float64)
    # sums and sqrt, not BLAS dot/norm or NumPy's arccos: the same last bit on every CPU
    cos = float(np.sum(mb * ma) / max(math.sqrt(np.sum(mb * mb) * np.sum(ma * ma)), 1e-9))
    angle = math.degrees(math.atan2(math.sqrt(max(0.0, (1.0 - cos) * (1.0 + cos))), cos))
    lb, la = float(mb.mean()), float(ma.mean())
    dark_after = la < lb
    ratio = min(la, lb) / max(la, lb, 1e-9)
    rel_b, rel_a = tb / max(lb, 1e-9), ta / max(la, 1e-9)
    kept = (rel_a / max(rel_b, 1e-9)) if dark_after else (rel_b / max(rel_a, 1e-9))
    r = masks.local_correlation(before, after)
    pattern = float(np.median(r[inner]))
    grey = float("nan")
    if rgb is not None:
        grey = float(masks.greyness(after, rgb)[mask].mean() - masks.greyness(before, rgb)[mask].mean())
    return Appearance(kind=kind, contrast=float(contrast), texture_contrast=float(tex_contrast),
                      sharp_before=sharp_b, sharp_after=sharp_a, sharp_both=both, angle_deg=angle,
                      brightness_ratio=float(ratio), texture_kept=float(kept), pattern_r=pattern,
                      grey_change=grey)


#: Rise of mean greyness (1 - saturation, 0..1) that shows built material appeared in a region
#: (:func:`structure_verdict`); rubble of a grey roof is as grey as the roof.
GREYER = 0.05


def structure_verdict(app: Appearance, *, pair: bool, min_contrast: float,
                      texture_step: float = 0.2) -> tuple[str | None, str]:
    """The kind to report for a changed region's appearance, or None to drop it, and why.

    In a series, a region where no structure appeared nor disappeared (kind
    ``none``), or the same structure only changed brightness
    (:meth:`Appearance.unchanged_structure`), is not construction and is
    dropped. With two acquisitions (``pair``) both rules read one image on each
    side, and on real pairs (LEVIR-CD, DSIFN-CD, OSCD; ``benchmarks/real.py``)
    the regions they dropped were as often labelled change as those they kept:
    the surface changed, so the region is reported as ``modified``.

    With two acquisitions the inside decides a demolition before the outline
    does: a region that got rougher inside (``texture_contrast`` above
    ``texture_step``) and not clearly greyer (``grey_change`` at most
    :data:`GREYER`: no built material appeared) is ``demolished`` whatever its outline, because the
    outline of a field of rubble is where the rubble ends, and it is as sharp
    as a new wall (on xBD Joplin every destroyed house our regions covered
    came out ``new`` by the outline rule). A cluster of new houses with
    their yards also gets rougher than the field it replaced, but greyer
    (LEVIR-CD: greyness +0.17 on the new buildings found, -0.05 on xBD's
    destroyed houses).

    Examples
    --------
    >>> app = Appearance("none", 0.0, 0.0, 0.5, 0.5, 0.5, 10.0, 0.7, 1.0, 0.1)
    >>> structure_verdict(app, pair=False, min_contrast=0.2)[0] is None
    True
    >>> structure_verdict(app, pair=True, min_contrast=0.2)[0]
    'modified'
    >>> import dataclasses
    >>> structure_verdict(dataclasses.replace(app, kind="new"), pair=True, min_contrast=0.2)
    ('new', '')
    >>> structure_verdict(dataclasses.replace(app, kind="new", texture_contrast=0.5), pair=True,
    ...                   min_contrast=0.2)[0]
    'demolished'
    >>> structure_verdict(dataclasses.replace(app, kind="new", texture_contrast=0.5, grey_change=0.2),
    ...                   pair=True, min_contrast=0.2)[0]
    'new'
    """
    unchanged = app.unchanged_structure(min_contrast)
    if pair and app.texture_contrast > texture_step and not app.grey_change > GREYER:
        return "demolished", "demolished: rougher inside and no greyer, rubble or ground where a roof was"
    if pair and (app.kind == "none" or unchanged):
        return "modified", ("reported as modified: no structure appeared nor disappeared, which two "
                            "images cannot tell from a changed surface")
    if app.kind == "none":
        return None, ("no structure appeared nor disappeared, the outline is not sharper and the inside "
                      "neither flatter nor rougher")
    if unchanged:
        return None, "the outline is as sharp before as after, the same structure changed in brightness only"
    return app.kind, ""


def core_fraction(mask: np.ndarray, width: int) -> float:
    """Share of a mask that survives an opening by a ``width`` × ``width`` square (pixels).

    A building is a block: most of it is wider than a few metres in every
    direction. The strips that moving shadows, walls, kerbs and road edges make
    are thin everywhere, even when they join into an L or a frame whose
    rotated rectangle looks like a building's.

    Examples
    --------
    >>> m = np.zeros((40, 40), bool); m[5:25, 5:25] = True
    >>> core_fraction(m, 8)
    1.0
    >>> frame = np.zeros((40, 40), bool); frame[5:35, 5:10] = True; frame[30:35, 5:35] = True
    >>> core_fraction(frame, 8)
    0.0
    """
    m = np.asarray(mask, bool)
    n = int(m.sum())
    if n == 0 or width <= 1:
        return 1.0 if n else 0.0
    core = ndi.binary_opening(m, structure=np.ones((width, width), bool))
    return float(core.sum() / n)


def flip_fraction(lum: np.ndarray, usable: np.ndarray, k: int) -> float:
    """Share of a region's usable observations that sit on the wrong side of its step.

    ``lum`` (dates, pixels) is brightness, the step is between dates ``k - 1`` and
    ``k``. Per pixel, an observation before the step that is closer to the pixel's
    after level, or after the step and closer to its before level, has flipped. A
    roof, once built, is there on every later date; the ground under a shadow that
    moves with the sun is dark on some dates and lit on others, so its pixels flip.

    Examples
    --------
    >>> lum = np.array([[0.0], [0.0], [10.0], [10.0]])             # a clean step at date 2
    >>> flip_fraction(lum, np.ones((4, 1), bool), 2)
    0.0
    >>> flip_fraction(np.array([[0.0], [10.0], [10.0], [0.0]]), np.ones((4, 1), bool), 2)
    0.5
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


def opening_radius(min_width_m: float, pixel_size: float, min_core_width_m: float | None = None) -> int:
    """Radius (pixels) of the opening that removes changes narrower than ``min_width_m``.

    The opening by a square of ``2 r + 1`` pixels removes strips narrower than
    that: ``r`` is half the width in pixels, rounded, and at least 1 (specks
    and one-pixel slivers go too). On a coarse grid
    (:func:`changedetect.detector.coarse_grid` with ``min_core_width_m``),
    where a building is two or three pixels across, an opening of one pixel
    would remove everything narrower than three pixels, the buildings with
    it: there is none (``min_area_m2`` still drops specks).

    Examples
    --------
    >>> opening_radius(2.0, 0.5), opening_radius(2.0, 2.0), opening_radius(2.0, 4.0)
    (2, 1, 1)
    >>> opening_radius(2.0, 2.0, 4.0), opening_radius(2.0, 4.0, 4.0)
    (1, 0)
    """
    if min_core_width_m is not None and coarse_grid(pixel_size, min_core_width_m):
        return 0
    return max(1, int(round(min_width_m / pixel_size / 2)))


def step_strength(images: np.ndarray, usable: np.ndarray, *, noise: np.ndarray,
                  persistence: int) -> np.ndarray:
    """Per pixel, its best step in standard errors: the size (noise sigmas) over ``sqrt(1/n_b + 1/n_a)``.

    The step is that of :func:`changedetect.timeline.step_change`; dividing by
    its standard error puts pixels whose states are seen on different numbers
    of dates on one scale. Float32, (rows, cols); 0 where no step could be fitted.
    """
    from .timeline import step_change

    steps = step_change(images, usable, scale=noise, min_before=1, min_after=persistence)
    se = np.sqrt(1.0 / np.maximum(steps.n_before, 1) + 1.0 / np.maximum(steps.n_after, 1))
    return (steps.magnitude / se).astype(np.float32)


#: A piece of a split region keeps its pixels whose step reaches this share of its peak's: its
#: full width at half maximum, the extent of a blurred object.
PIECE_LEVEL = 0.5


def split_region(region: np.ndarray, strength: np.ndarray, *, level: float = PIECE_LEVEL) -> list[np.ndarray]:
    """A region cut into one piece per peak of its change: houses of an estate that changed together.

    On a coarse grid (:func:`changedetect.detector.coarse_grid`) the changed
    pixels of buildings standing a pixel or two apart join into one region,
    with the changed yards and streets between them. Each building is a peak of
    ``strength`` (the step of every pixel, e.g. :func:`step_strength`): the peaks are the local
    maxima over 3 x 3 pixels (the closest two buildings can stand on the
    grid; equal neighbours are one peak), the region is cut between them along
    the valleys of ``strength`` (a watershed), and each piece keeps the pixels
    of its part that reach ``level`` of its peak, connected to it: its full
    width at half maximum. A region with one peak is one piece, trimmed alike.
    Returns boolean masks of the region's shape, in the order of the peaks
    (raster order of their first pixel).

    Examples
    --------
    >>> x = np.arange(9.0)
    >>> s = np.exp(-((x[:, None] - 4) ** 2 + (x[None, :] - 2) ** 2) / 2)
    >>> s += np.exp(-((x[:, None] - 4) ** 2 + (x[None, :] - 6) ** 2) / 2)
    >>> pieces = split_region(s > 0.2, s)
    >>> len(pieces), [np.argwhere(p).mean(axis=0).round(1).tolist() for p in pieces]
    (2, [[4.0, 2.0], [4.0, 6.0]])
    """
    from skimage.segmentation import watershed

    region = np.asarray(region, bool)
    s = np.where(region, np.asarray(strength, np.float32), np.float32(0))
    peaks = region & (s == ndi.maximum_filter(np.where(region, s, -np.inf), size=3, mode="constant",
                                              cval=-np.inf))
    markers, n = ndi.label(peaks, structure=_STRUCT8)
    if n == 0:
        return [region] if region.any() else []
    parts = watershed(-s, markers, mask=region, connectivity=2) if n > 1 else region.astype(np.int32)
    out = []
    for i in range(1, n + 1):
        part = parts == i
        if not part.any():
            continue
        top = float(s[part].max())
        keep = part & (s >= level * top)
        lab, k = ndi.label(keep, structure=_STRUCT8)
        if k > 1:                     # the component that holds the peak
            keep = lab == lab[tuple(np.argwhere(keep & (s == top))[0])]
        out.append(keep)
    return out


#: Side (pixels) of the windows in which a piece's ground pattern is compared on a coarse grid: a pixel
#: and its neighbours, the size of a building there.
COARSE_PATTERN_SIZE = 3


def kept_pattern(before: np.ndarray, after: np.ndarray, mask: np.ndarray, *, alpha: float) -> bool:
    """Whether a piece's ground keeps its pattern from before to after: light, haze or season, no building.

    The local correlation of the two composites, every band together
    (:func:`changedetect.masks.local_correlation` with ``bands=True``, in
    windows of :data:`COARSE_PATTERN_SIZE`), has its median over the piece's
    pixels at or above the correlation significant at ``alpha`` for a window
    (:func:`changedetect.masks.correlation_threshold`). Light scales every band
    and haze adds to it, so the pattern stays; a roof replaces it, in
    brightness or in colour.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> ground = rng.normal(500, 40, (3, 12, 12)); m = np.zeros((12, 12), bool); m[4:7, 4:7] = True
    >>> kept_pattern(ground, 0.7 * ground + 20, m, alpha=0.01)
    True
    >>> roof = ground.copy(); roof[:, 3:8, 3:8] = [[[900]], [[450]], [[400]]] + rng.normal(0, 5, (3, 5, 5))
    >>> kept_pattern(ground, roof, m, alpha=0.01)
    False
    """
    r = masks.local_correlation(before, after, size=COARSE_PATTERN_SIZE, bands=True)
    mask = np.asarray(mask, bool)
    threshold = masks.correlation_threshold(alpha, COARSE_PATTERN_SIZE ** 2)
    return bool(mask.any() and float(np.median(r[mask])) >= threshold)


def candidate_regions(step_path, stack: Stack, *, min_area_m2: float, min_width_m: float,
                      block: int = 1024, halo: int = 128, min_core_width_m: float | None = None):
    """Cleaned, connected regions of changed pixels, read window by window from the step raster.

    ``step_path`` is the per-pixel stage's raster on the stack's grid (band 1:
    date index, band 2: strength, see :mod:`changedetect.detector`). Yields
    ``(r0, c0, mask)``: the region's bounding box origin on the grid and its
    boolean mask. Each block labels its window grown by ``halo``; a region
    belongs to the block that holds its first pixel in raster order, so it is
    yielded once, and a region that reaches the window's edge is re-read in a
    window grown around it until it is whole. Memory follows the block and the
    largest region, not the grid. Weak changed pixels join a region only
    through strong ones of the same date (:func:`changedetect.detector.hysteresis`);
    a region without a strong pixel is not yielded. Regions smaller than
    ``min_area_m2`` or narrower than ``min_width_m`` are removed
    (:func:`clean_mask`, with the opening of :func:`opening_radius`: none on
    a coarse grid, given ``min_core_width_m``).
    """
    import rasterio
    from rasterio.windows import Window

    px = stack.pixel_size
    min_pixels = max(1, int(math.ceil(min_area_m2 / (px * px))))
    radius = opening_radius(min_width_m, px, min_core_width_m)
    height, width = stack.shape
    with rasterio.open(step_path) as ds:

        def labelled(r0, r1, c0, c1):
            date, strength = ds.read(window=Window(c0, r0, c1 - c0, r1 - r0))
            keep, strong = hysteresis(date, strength)
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


#: Ground around an object (metres from its outline) that must be mostly a transient for its
#: first date to be taken for a cloud around it.
CLOUD_RING_M = (6.0, 20.0)


def clouded_first_date(stack: Stack, model: SeriesModel, win, obj: np.ndarray, images: np.ndarray,
                       usable: np.ndarray, ch) -> bool:
    """Whether the first date of a change is a cloud around the object, not the change.

    A cloud as bright and grey as a construction pad, on the date before the pad, is no
    transient over the pad (the pad is as bright the next date), so the change would be
    dated at the cloud. Two signs together tell it: the object is brighter on that date
    than in its final state (by ``model.transient_sigma`` noise sigmas), and the ground
    :data:`CLOUD_RING_M` around it is mostly a transient on that date (at least half of
    its valid pixels).
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
    if ((now - np.mean(final, axis=0)) / s).mean() <= model.transient_sigma:
        return False
    px = stack.pixel_size
    near, far = int(math.ceil(CLOUD_RING_M[0] / px)), int(math.ceil(CLOUD_RING_M[1] / px))
    r0, c0 = int(win.row_off), int(win.col_off)
    R0, C0 = max(0, r0 - far), max(0, c0 - far)
    R1 = min(stack.height, r0 + int(win.height) + far)
    C1 = min(stack.width, c0 + int(win.width) + far)
    _, use2, trans = read_series(stack, model, Window(C0, R0, C1 - C0, R1 - R0), with_transients=True)
    whole = np.zeros(use2.shape[1:], bool)
    whole[r0 - R0:r0 - R0 + obj.shape[0], c0 - C0:c0 - C0 + obj.shape[1]] = obj
    d = ndi.distance_transform_edt(~whole)
    ring = (d > near) & (d <= far)
    valid = (use2[k] | trans[k]) & ring
    return bool(valid.sum() >= 100 and (trans[k] & ring).sum() >= 0.5 * valid.sum())


def extract_objects(stack: Stack, model: SeriesModel, step_path, regs, config, progress=None) -> list[dict]:
    """Date, classify and outline every candidate region; drop those that are not construction.

    Every region of :func:`candidate_regions` is read with a margin of every date
    (:func:`changedetect.series.read_series`), dated on its mean series
    (:func:`changedetect.timeline.date_region`; a first date that is a cloud
    around it is skipped, :func:`clouded_first_date`), then judged: its built
    side is not vegetation, a structure appeared or disappeared
    (:func:`appearance`), it is not a standing structure that only changed
    brightness nor a shadow moving with the sun, and it passes the shape
    filters (:func:`shape_filter`, :func:`core_fraction`).

    With two acquisitions, a region whose appearance shows no structure change
    (no outline appeared or went, or only its brightness changed) is reported
    as ``modified`` instead of dropped: those rules read one image on each
    side, and on real pairs (LEVIR-CD, DSIFN-CD, OSCD, ``benchmarks/real.py``)
    the regions they dropped were as often labelled change as those they kept
    (:func:`structure_verdict`).

    On a coarse grid (:func:`changedetect.detector.coarse_grid`: buildings a
    few pixels across, as on 3-10 m imagery) every region is first cut at the
    peaks of its pixels' steps (:func:`split_region` on :func:`step_strength`),
    and each piece is dated and judged on its own. There a piece has no outline
    of its own to tell a roof's walls from a shadow's edge, and in a series of
    many dates every pixel's state comes and goes with the seasons, so the
    shadow rule (:meth:`Appearance.is_shadow`) cannot hold; what it asks is
    asked directly: a piece whose ground shows the same pattern before and
    after, in every band (:func:`kept_pattern`), is the same ground in other
    light, haze or season, not construction or demolition.

    Every region (or piece) that is dropped is logged (``DEBUG``) with the
    reason. Returns one record per kept change (the DESIGN.md schema), ordered
    by date and position, with its confidence
    (:func:`changedetect.confidence.confidence`) and ``usable_dates``
    (per date, whether its dating used that acquisition).
    """
    import rasterio
    from rasterio.windows import Window

    px = stack.pixel_size
    dates = stack.dates
    # two acquisitions: the per-pixel detector's decision stands (see date_region), and a region
    # whose appearance shows no structure change is reported as modified, not dropped
    pair_run = len(dates) == 2
    rgb = tuple(stack.band_index(b) for b in ("red", "green", "blue"))
    rgb = None if None in rgb else rgb
    rmse, unregistered = registration_errors(regs)
    records = []
    margin = 6
    ndvi_bands = model.ndvi_bands
    core_px = max(1, int(round(config.min_core_width_m / px)))
    limits = ShapeLimits.from_config(config)
    n = 0
    regions = candidate_regions(step_path, stack, min_area_m2=config.min_area_m2,
                                min_width_m=config.min_width_m, min_core_width_m=config.min_core_width_m)
    coarse = coarse_grid(px, config.min_core_width_m)

    def objects(step_ds):
        # every region read with a margin of every date; on a coarse grid, cut into its pieces
        for lab, (top, left, region) in enumerate(regions, start=1):
            if progress is not None:
                progress("objects", lab, 0)
            r0, r1 = max(0, top - margin), min(stack.height, top + region.shape[0] + margin)
            c0, c1 = max(0, left - margin), min(stack.width, left + region.shape[1] + margin)
            win = Window(c0, r0, c1 - c0, r1 - r0)
            where = f"region {lab} at rows {r0}-{r1} cols {c0}-{c1}"
            obj = np.zeros((r1 - r0, c1 - c0), bool)
            obj[top - r0:top - r0 + region.shape[0], left - c0:left - c0 + region.shape[1]] = region
            images, usable = read_series(stack, model, win)
            pixel_dates = step_ds.read(1, window=win)
            pieces = [obj]
            if coarse:
                pieces = split_region(obj, step_strength(images, usable, noise=model.noise,
                                                         persistence=config.persistence))
            for i, piece in enumerate(pieces, start=1):
                yield (lab, win, where if len(pieces) == 1 else f"{where} piece {i} of {len(pieces)}",
                       piece, images, usable, pixel_dates)

    with rasterio.open(step_path) as step_ds:
        for lab, win, where, obj, images, usable, pixel_dates in objects(step_ds):
            n = lab

            def dated(usable):
                return date_region(images, usable, obj, pixel_dates, noise=model.noise,
                                   min_fstat=model.min_fstat, config=config, ndvi_bands=ndvi_bands)

            ch, use_t, how = dated(usable)
            if ch is not None and clouded_first_date(stack, model, win, obj, images, usable, ch):
                hidden = dates[ch.first_present]
                usable = usable.copy()
                usable[ch.first_present][obj] = False
                ch, use_t, how = dated(usable)
                how = f"{how}; {hidden} skipped: a cloud around it, brighter than the result"
            if ch is None:
                log.debug("%s dropped: no clean step (%s)", where, how)
                continue
            k, last, magnitude, fstat = ch.first_present, ch.last_absent, ch.magnitude, ch.fstat
            before_t = [t for t in range(k) if use_t[t]]
            after_t = [t for t in range(ch.completed, len(dates)) if use_t[t]]
            before = masked_mean(images[before_t], usable[before_t])
            after = masked_mean(images[after_t], usable[after_t])
            g0 = images[before_t[0], :-1].mean(axis=0)
            noise_grad = float(np.median(np.hypot(ndi.sobel(g0, 0), ndi.sobel(g0, 1)) / 8)) + 1e-6
            app = appearance(before[:-1], after[:-1], obj, noise=noise_grad,
                             texture=(before[-1], after[-1]), rgb=rgb if pair_run else None)
            kind = app.kind
            flips = flip_fraction(images[:, :-1][:, :, obj].mean(axis=1), usable[:, obj], k)
            feats = (f"flips {flips:.2f}, "f"kind {kind}, outline contrast {app.contrast:+.2f}, texture contrast "
                     f"{app.texture_contrast:+.2f}, outline sharp before/after {app.sharp_before:.2f}/"
                     f"{app.sharp_after:.2f}, both {app.sharp_both:.2f}, colour angle {app.angle_deg:.1f} deg, dark/bright "
                     f"{app.brightness_ratio:.2f}, relative texture kept {app.texture_kept:.2f}, "
                     f"ground pattern r {app.pattern_r:.2f}, greyness change {app.grey_change:+.2f}, "
                     f"step {magnitude:.1f} sigma by {how}")
            # the built side of a change (after a construction, before a demolition) is not
            # vegetation: a change whose built side is green is trees or a field in season
            if ndvi_bands is not None:
                built = after if kind != "demolished" else before
                red, nir = built[ndvi_bands[0]][obj], built[ndvi_bands[1]][obj]
                ndvi = float(np.mean((nir - red) / np.maximum(nir + red, 1e-6)))
                if ndvi > config.max_ndvi:
                    log.debug("%s dropped: NDVI %.2f on the built side (%s)", where, ndvi, feats)
                    continue
            kind, why = structure_verdict(app, pair=pair_run, min_contrast=config.min_outline_contrast)
            if kind is None:
                log.debug("%s dropped: %s (%s)", where, why, feats)
                continue
            if why:
                log.debug("%s %s (%s)", where, why, feats)
            if coarse and kept_pattern(before[:-1], after[:-1], obj, alpha=config.alpha):
                log.debug("%s dropped: the ground's pattern is kept (median local correlation of its "
                          "bands >= %.2f), the same ground in other light or season (%s)", where,
                          masks.correlation_threshold(config.alpha, COARSE_PATTERN_SIZE ** 2), feats)
                continue
            if not coarse and app.is_shadow(flips, max_angle_deg=config.shadow_max_angle,
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
            reg_term = registration_term(pair, (unregistered[last], unregistered[k]))
            terms = confidence_terms(magnitude, fstat, ch.n_after, min_magnitude=config.min_magnitude,
                                     min_fstat=model.min_fstat, persistence=config.persistence,
                                     registration=reg_term, form=shape_form(raw.rectangularity, raw.solidity))
            log.debug("%s kept: %s", where, feats)
            records.append({
                "geometry": geom, "kind": kind,
                "last_absent": dates[last].isoformat(),
                "first_present": dates[k].isoformat(),
                "area_m2": round(area_m2(geom, stack.crs), 2),
                "score": round(magnitude, 3),
                "registration_rmse_px": round(float(reg_rmse), 4),
                "n_observations": int(use_t.sum()),
                "n_before": int(ch.n_before), "n_after": int(ch.n_after),
                "building_id": None,
                "_terms": terms, "_magnitude": magnitude,     # rounded into the record below
                "usable_dates": [bool(u) for u in use_t],       # for the evidence store, not a column
                "_order": (dates[k], -geom.centroid.y, geom.centroid.x),
            })
    if progress is not None:
        progress("objects", n, n)
    log.info("%d candidate regions, %d kept as changes", n, len(records))
    # one image a side: a change's significance is its rank among the other changes of its scene
    ranks = site_significance([r["_magnitude"] for r in records]) if pair_run else None
    for j, r in enumerate(records):
        terms = r.pop("_terms")
        r.pop("_magnitude")
        if ranks is not None:
            terms = {**terms, "significance": ranks[j]}
        r["confidence"] = round(float(math.prod(terms[t] for t in TERMS)), 3)   # = confidence(...)
        r["confidence_terms"] = {t: round(float(v), 3) for t, v in terms.items()}
    records.sort(key=lambda r: r["_order"])
    for i, r in enumerate(records, start=1):
        r["change_id"] = f"chg-{i:04d}"
        r.pop("_order")
    return records
