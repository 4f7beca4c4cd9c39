"""From change masks to building-like objects.

Morphological cleanup, a minimum mapping unit, polygons (regularised to a
rotated rectangle where that fits), and the kind of a change (new, demolished,
modified) decided from the before and after appearance of the object's outline.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

__all__ = ["clean_mask", "label_objects", "polygonize", "regularize", "outline_edges",
           "classify_kind", "ObjectShape", "object_shape"]

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


def regularize(geom, *, min_fill: float = 0.8, simplify: float = 0.0):
    """Replace a polygon by its minimum rotated rectangle when it fills it well.

    Buildings are mostly rectangles; a staircase outline from pixels is
    replaced by the rectangle when the polygon covers at least ``min_fill`` of
    it. Other shapes are simplified by ``simplify`` map units.
    """
    import shapely

    if geom is None or geom.is_empty:
        return geom
    rect = shapely.minimum_rotated_rectangle(geom)
    if rect.area > 0 and geom.area / rect.area >= min_fill:
        # the rectangle around pixel edges is a little too large: shrink it to the same area
        f = np.sqrt(geom.area / rect.area)
        return shapely.affinity.scale(rect, xfact=f, yfact=f, origin="centroid")
    if simplify > 0:
        geom = shapely.simplify(geom, simplify, preserve_topology=True)
    return geom


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


def classify_kind(before: np.ndarray, after: np.ndarray, mask: np.ndarray, *,
                  noise: float) -> tuple[str, float]:
    """Decide whether a change is new construction, a demolition or a modification.

    A standing structure has a sharp outline: strong gradients along the edge of
    its footprint. Comparing the outline's mean gradient in the before and the
    after appearance tells which side has the structure: stronger after means
    ``new``, stronger before means ``demolished``. A ``new`` object whose
    outline already had a strong edge along part of it before (between 15 % and
    60 % of the outline: an existing wall it was built against) is an annex:
    ``modified``.

    Parameters
    ----------
    before, after : ndarray, shape (bands, rows, cols)
        Composites of the usable acquisitions on each side of the change,
        radiometrically normalised to each other.
    mask : ndarray of bool
        The object's pixels.
    noise : float
        Typical gradient magnitude of unchanged ground (sets "strong").

    Returns
    -------
    kind : str
    contrast : float
        ``(after - before) / (after + before)`` of the outline gradient, -1..1.
    """
    gb, _ = outline_edges(before, mask)
    ga, _ = outline_edges(after, mask)
    eb, ea = float(np.mean(gb)), float(np.mean(ga))
    contrast = (ea - eb) / max(ea + eb, 1e-9)
    if contrast < 0:
        return "demolished", contrast
    strong = 4.0 * noise
    frac_before = float(np.mean(gb > strong)) if gb.size else 0.0
    if 0.15 <= frac_before <= 0.6 and float(np.mean(ga > strong)) > frac_before + 0.15:
        return "modified", contrast
    return "new", contrast


@dataclass(frozen=True)
class ObjectShape:
    """Shape measures of a polygon: area, rectangularity, solidity, elongation."""

    area: float
    rectangularity: float
    solidity: float
    elongation: float


def object_shape(geom) -> ObjectShape:
    """Shape measures used by the confidence and by filters."""
    import shapely

    rect = shapely.minimum_rotated_rectangle(geom)
    hull = shapely.convex_hull(geom)
    x, y = np.asarray(rect.exterior.coords).T
    sides = np.hypot(np.diff(x), np.diff(y))[:2]
    elong = float(sides.max() / max(sides.min(), 1e-9))
    return ObjectShape(area=float(geom.area), rectangularity=float(geom.area / max(rect.area, 1e-9)),
                       solidity=float(geom.area / max(hull.area, 1e-9)), elongation=elong)
