"""Deterministic, georeferenced, hard synthetic sample sites with ground truth.

:func:`make_site` writes a time series of 4-band GeoTIFF scenes over a
prison-like compound in UTM zone 37N (EPSG:32637), together with the exact
ground truth (``truth.geojson``), the exact misregistration of every scene
(``misregistration.json``) and a ``README.md``.

The scenes are deliberately hard: per-date gain/offset, haze, blur and noise,
seasonal vegetation, sun-dependent building shadows, construction pads,
a demolition, an annex, misregistration (shift + rotation) on every date but
the first, one scene on a different (0.6 m) grid, one cloudy scene and one
scene with a nodata wedge. Everything is derived from
``numpy.random.default_rng(seed)``: the same seed gives identical pixels on every
CPU (no arithmetic whose last bit depends on NumPy's SIMD dispatch; see
:mod:`changedetect.portable`).

Geometry convention
-------------------
``ref_to_scene`` in ``misregistration.json`` is a 2x3 affine mapping reference
pixel coordinates ``(col, row)`` to the scene's own pixel coordinates where the
same ground point appears, in rasterio's continuous convention (the
upper-left corner of pixel ``(0, 0)`` is ``(0, 0)``, the centre of pixel
``(c, r)`` is ``(c + 0.5, r + 0.5)``). The content of a scene at its pixel
``p`` shows the ground point ``T_ref * inverse(ref_to_scene) * p``; its
*nominal* geotransform (in the file) ignores the misregistration.

Command line
------------
``python -m changedetect.synthetic OUT_DIR [--seed N] [--size N] [--dates N] [--cadence {irregular,monthly}]``

Examples
--------
>>> from changedetect.synthetic import make_site
>>> site = make_site("/tmp/site", seed=3, size=256)  # doctest: +SKIP
>>> len(site.images), site.crs  # doctest: +SKIP
(8, 'EPSG:32637')
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
from affine import Affine
from scipy import ndimage

from changedetect.errors import InputError
from changedetect.io import raster_profile
from changedetect.portable import gaussian_filter

__all__ = ["Site", "make_site", "make_dates", "main", "SITE_CRS", "BAND_NAMES", "CADENCES"]

#: CRS of every file written by :func:`make_site`.
SITE_CRS = "EPSG:32637"
#: Band order of every scene.
BAND_NAMES = ("blue", "green", "red", "nir")

_X0 = 262000.0  # upper-left easting of the reference grid (m)
_Y0 = 3730000.0  # upper-left northing of the reference grid (m)
_LAT = 33.7  # approximate latitude of the site, for the sun position (deg)
_FINE = 3  # ground-grid oversampling factor (fine pixel = gsd / 3)
_SUB = 3  # sub-samples per output pixel and axis
_MAX_DN = 4095.0

# ---------------------------------------------------------------- materials
_SOIL, _ASPHALT, _GRAVEL, _GRASS, _TREES, _PAD, _RUBBLE, _WALL = range(8)
_ROOF0 = 8
# (blue, green, red, nir) DN before sensor gain
_BASE = np.array(
    [
        [1150, 1400, 1700, 2000],  # soil
        [520, 560, 600, 650],  # asphalt
        [1300, 1400, 1500, 1650],  # gravel
        [0, 0, 0, 0],  # grass (seasonal, filled per date)
        [0, 0, 0, 0],  # trees (seasonal, filled per date)
        [2300, 2400, 2500, 2600],  # construction pad (bright concrete/soil)
        [1450, 1500, 1560, 1700],  # rubble
        [1900, 1950, 2000, 2100],  # wall
        [2700, 2800, 2850, 2900],  # roof: light metal
        [3000, 3050, 3050, 3100],  # roof: white concrete
        [450, 470, 500, 560],  # roof: dark tar
        [700, 800, 1500, 1800],  # roof: red tile
        [1500, 1550, 1600, 1700],  # roof: grey concrete
        [1600, 1300, 1000, 1200],  # roof: blue metal
    ],
    dtype=np.float32,
)
_N_ROOFS = _BASE.shape[0] - _ROOF0
_GRASS_GREEN = np.array([450, 750, 500, 2900], np.float32)
_GRASS_BROWN = np.array([850, 1050, 1350, 1750], np.float32)
_TREE_GREEN = np.array([300, 500, 320, 2400], np.float32)
_TREE_BROWN = np.array([450, 650, 600, 1900], np.float32)
# texture amplitude (low-frequency, high-frequency) per material
_AMP_LOW = np.array([0.10, 0.04, 0.08, 0.15, 0.15, 0.04, 0.10, 0.02] + [0.02] * _N_ROOFS, np.float32)
_AMP_HIGH = np.array([0.05, 0.03, 0.12, 0.08, 0.30, 0.03, 0.25, 0.02] + [0.015] * _N_ROOFS, np.float32)


@dataclass(frozen=True)
class Site:
    """A synthetic site written by :func:`make_site`.

    Attributes
    ----------
    out_dir : pathlib.Path
        Directory holding every file.
    images : tuple of pathlib.Path
        One GeoTIFF per acquisition, sorted by date.
    dates : tuple of datetime.date
        Acquisition dates, same order as `images`.
    truth_path : pathlib.Path
        ``truth.geojson`` (EPSG:32637) with one feature per footprint.
    misregistration_path : pathlib.Path
        ``misregistration.json`` with the exact reference-to-scene mapping.
    crs : str
        CRS of every file (``"EPSG:32637"``).
    reference : pathlib.Path
        The first-date image, whose geotransform is exact.
    """

    out_dir: Path
    images: tuple[Path, ...]
    dates: tuple[_dt.date, ...]
    truth_path: Path
    misregistration_path: Path
    crs: str
    reference: Path


@dataclass
class _Building:
    bid: str
    kind: str
    rects: list[tuple[float, float, float, float]]  # (x0, y0, x1, y1) in metres, y down
    height: float
    roof: int
    first_present: Optional[int] = None
    construction: Optional[int] = None
    last_absent: Optional[int] = None
    demolished: Optional[int] = None
    parent_id: Optional[str] = None
    pad: Optional[tuple[float, float, float, float]] = None

    def present(self, k: int) -> bool:
        if self.kind == "existing":
            return True
        if self.kind == "demolished":
            return k < int(self.demolished)  # type: ignore[arg-type]
        return k >= int(self.first_present)  # type: ignore[arg-type]

    def pad_visible(self, k: int) -> bool:
        return self.pad is not None and self.construction is not None and k >= self.construction

    def rubble(self, k: int) -> bool:
        return self.kind == "demolished" and k >= int(self.demolished)  # type: ignore[arg-type]

    def event_dates(self) -> set[int]:
        return {d for d in (self.first_present, self.construction, self.demolished) if d is not None}


@dataclass
class _Scene:
    index: int
    date: _dt.date
    shape: tuple[int, int]  # (rows, cols)
    gsd: float
    transform: Affine  # nominal geotransform written in the file
    ref_to_scene: Affine
    shift_px: tuple[float, float]
    rotation_deg: float
    sun_elev: float
    sun_az: float
    green: float
    soil_factor: float
    blur: float
    gain: np.ndarray
    offset: np.ndarray
    haze: float
    shadow_factor: float
    cloudy: bool = False
    wedge: bool = False
    extra: dict = field(default_factory=dict)


# ------------------------------------------------------------------ helpers
def _check_int(name: str, value: object, lo: int, hi: int, hint: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InputError(f"{name} must be an integer, got {value!r} ({type(value).__name__}); {hint}")
    if not lo <= int(value) <= hi:
        raise InputError(f"{name}={value} is out of range [{lo}, {hi}]; {hint}")
    return int(value)


def _rect_poly(r: tuple[float, float, float, float]):
    from shapely.geometry import box

    return box(min(r[0], r[2]), min(r[1], r[3]), max(r[0], r[2]), max(r[1], r[3]))


def _add_months(d: _dt.date, days: int) -> _dt.date:
    return d + _dt.timedelta(days=int(days))


def _sun_position(d: _dt.date, hour: float, lat_deg: float = _LAT) -> tuple[float, float]:
    """Return (elevation, azimuth-from-north) in degrees; simple declination model."""
    doy = d.timetuple().tm_yday
    decl = math.radians(23.44) * math.sin(2.0 * math.pi * (284 + doy) / 365.0)
    ha = math.radians(15.0 * (hour - 12.0))
    lat = math.radians(lat_deg)
    sin_el = math.sin(lat) * math.sin(decl) + math.cos(lat) * math.cos(decl) * math.cos(ha)
    el = math.asin(sin_el)
    az = math.atan2(math.sin(ha), math.cos(ha) * math.sin(lat) - math.tan(decl) * math.cos(lat))
    return math.degrees(el), (math.degrees(az) + 180.0) % 360.0


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    # portable.gaussian_filter: SciPy's filter with weights that are the same on every CPU
    a = gaussian_filter(rng.standard_normal(shape, dtype=np.float32), sigma, mode="wrap")
    s = float(a.std())
    return a / s if s > 0 else a


# ----------------------------------------------------------------- layout
class _Layout:
    """Static ground layout and buildings, all in metres from the UL corner (y down)."""

    def __init__(self, rng: np.random.Generator, extent: float, n_dates: int, n_new: int) -> None:
        from shapely.geometry import Point, box
        from shapely.ops import unary_union

        E = extent
        self.extent = E
        s = E / 256.0
        inset = max(4.0, 0.06 * E)
        self.wall = (inset, inset, E - inset, E - inset)
        wall_t = 1.0
        self.wall_height = 4.5
        # asphalt: one road outside the wall (entrance side) + internal roads
        roads = []
        side = rng.integers(4)
        rw = rng.uniform(5.0, 7.0)
        a = max(0.5, inset - rw - 1.0)
        outer = [(0, a, E, a + rw), (0, E - a - rw, E, E - a), (a, 0, a + rw, E), (E - a - rw, 0, E - a, E)][side]
        roads.append(outer)
        n_int = 1 if E < 200 else 2
        axes = (0, 1) if E >= 200 else ((int(rng.integers(2)),) if E >= 100 else ())
        lo_i, hi_i = inset + wall_t, E - inset - wall_t
        span = hi_i - lo_i
        for axis in axes:
            for j in range(n_int):
                w = rng.uniform(5.0, 7.0)
                centre = lo_i + span * (j + 1) / (n_int + 1) + rng.uniform(-0.08, 0.08) * span
                r = (lo_i, centre - w / 2, hi_i, centre + w / 2)
                roads.append(r if axis == 0 else (r[1], r[0], r[3], r[2]))
        self.roads = roads
        self.road_union = unary_union([_rect_poly(r) for r in roads])
        # gravel yards
        self.gravel = []
        for _ in range(int(rng.integers(1, 4))):
            w, h = rng.uniform(12, 40) * max(s, 0.5), rng.uniform(12, 40) * max(s, 0.5)
            x, y = rng.uniform(lo_i, max(lo_i + 1, hi_i - w)), rng.uniform(lo_i, max(lo_i + 1, hi_i - h))
            self.gravel.append((x, y, x + w, y + h))
        # grass patches (ellipses) and tree clumps (circles), inside and outside
        self.grass = []
        for _ in range(int(rng.integers(3, 7)) + int(4 * s * s)):
            cx, cy = rng.uniform(0, E, 2)
            rx, ry = rng.uniform(6, 25, 2) * max(s, 0.5)
            from shapely import affinity

            self.grass.append(affinity.scale(Point(cx, cy).buffer(1.0, 24), rx, ry))
        self.trees = []
        for _ in range(int(rng.integers(2, 5)) + int(3 * s * s)):
            cx, cy = rng.uniform(0, E, 2)
            for _ in range(int(rng.integers(3, 9))):
                tx, ty = cx + rng.normal(0, 5), cy + rng.normal(0, 5)
                self.trees.append(Point(tx, ty).buffer(rng.uniform(1.8, 4.0), 16))

        # ------------------------------------------------ buildings
        gap_w = 3.0 if E >= 100 else 2.0
        self.interior = box(lo_i + gap_w, lo_i + gap_w, hi_i - gap_w, hi_i - gap_w)
        self.road_keepout = self.road_union.buffer(2.0)
        self.buildings: list[_Building] = []
        self._geoms: list = []
        max_exist = float(min(45.0, max(12.0, 0.18 * E)))
        max_new = float(min(40.0, max(13.0, 0.16 * E)))
        n_exist = int(np.clip(round(13 * s * s), 3, 16))
        if E >= 200:
            n_exist = max(n_exist, 10)
        n_new_target = n_new if s >= 1.0 else max(3, int(round(n_new * s * s)))
        n_new_target = min(n_new_target, n_new)
        self._rng = rng
        counter = [0]

        def next_id() -> str:
            counter[0] += 1
            return f"b-{counter[0]:03d}"

        # 1. parent + annex (modification)
        parent = annex = None
        small = E < 100.0
        if small:  # crowded: parent in a corner, annex along the wall side
            bx0, by0, bx1, by1 = self.interior.bounds
            w, h = rng.uniform(10.0, 11.0), rng.uniform(10.0, 11.0)
            L_, D_ = rng.uniform(10.0, w), rng.uniform(10.0, 11.0)
            flip_x, flip_y = bool(rng.random() < 0.5), bool(rng.random() < 0.5)
            px0 = bx1 - w - D_ if flip_x else bx0
            py0 = by1 - h if flip_y else by0
            parent = (px0, py0, px0 + w, py0 + h)
            ax0 = px0 + w
            annex = (ax0, py0, ax0 + D_, py0 + L_) if not flip_y else (ax0, py0 + h - L_, ax0 + D_, py0 + h)
        for _ in range(0 if small else 4000):
            rect = self._sample_rect(10.0, max_exist)
            ann = self._annex_for(rect)
            if ann is None:
                continue
            if self._fits(rect) and self._fits(ann):
                parent, annex = rect, ann
                break
        if parent is None:
            raise InputError(
                f"could not lay out a site of {E:.0f} m; use a larger size (>=128 px at 0.5 m)"
            )
        pb = _Building(next_id(), "existing", [parent], rng.uniform(3, 12), self._roof())
        self._add(pb)
        ab = _Building(next_id(), "modified", [annex], float(np.clip(pb.height + rng.uniform(-2, 1), 3, 12)),
                       self._roof(), parent_id=pb.bid)
        self._add(ab)
        # 2. the building that will be demolished
        db = self._place(next_id, "demolished", 10.0, max_exist, allow_l=True)
        if db is None:
            raise InputError(f"could not lay out a site of {E:.0f} m; use a larger size")
        # 3. new buildings first (three are mandatory; the first two get a construction pad),
        #    then the remaining existing buildings in the space left
        news = []
        for j in range(n_new_target):
            padded = j < 2 or rng.random() < 0.5
            b = self._place(next_id, "new", 12.0, max_new, allow_l=False, pad_margin=padded)
            if b is None and j < 3:
                raise InputError(f"could not place 3 new buildings in {E:.0f} m; use a larger size")
            if b is not None:
                news.append(b)
        for _ in range(n_exist - 2):
            self._place(next_id, "existing", 10.0, max_exist, allow_l=True)
        self._assign_dates(rng, n_dates, news, db, ab)

    # -- helpers
    def _roof(self) -> int:
        return _ROOF0 + int(self._rng.integers(_N_ROOFS))

    def _sample_rect(self, lo: float, hi: float):
        rng = self._rng
        w, h = rng.uniform(lo, hi), rng.uniform(lo, hi)
        b = self.interior.bounds
        if b[2] - b[0] <= w or b[3] - b[1] <= h:
            w, h = min(w, (b[2] - b[0]) * 0.9), min(h, (b[3] - b[1]) * 0.9)
        x, y = rng.uniform(b[0], b[2] - w), rng.uniform(b[1], b[3] - h)
        return (x, y, x + w, y + h)

    def _annex_for(self, rect):
        rng = self._rng
        x0, y0, x1, y1 = rect
        side = int(rng.integers(4))
        along = (x1 - x0) if side in (0, 1) else (y1 - y0)
        if along < 10.0:
            return None
        L = rng.uniform(10.0, min(along, 25.0))
        D = rng.uniform(10.0, 16.0)
        o = rng.uniform(0.0, along - L)
        if side == 0:  # top
            return (x0 + o, y0 - D, x0 + o + L, y0)
        if side == 1:  # bottom
            return (x0 + o, y1, x0 + o + L, y1 + D)
        if side == 2:  # left
            return (x0 - D, y0 + o, x0, y0 + o + L)
        return (x1, y0 + o, x1 + D, y0 + o + L)

    def _fits(self, rect, gap: float = 6.0) -> bool:
        p = _rect_poly(rect)
        if not self.interior.contains(p) or p.intersects(self.road_keepout):
            return False
        return all(p.distance(g) >= gap for g in self._geoms)

    def _add(self, b: _Building) -> None:
        from shapely.ops import unary_union

        self.buildings.append(b)
        geoms = [_rect_poly(r) for r in b.rects]
        if b.pad is not None:
            geoms.append(_rect_poly(b.pad))
        self._geoms.append(unary_union(geoms))

    def _place(self, next_id, kind, lo, hi, allow_l, pad_margin=False) -> Optional[_Building]:
        rng = self._rng
        n_try = 600 if self.extent >= 100 else 0
        for t in range(n_try):
            rect = self._sample_rect(lo, lo + (hi - lo) * (1.0 - t / n_try))
            rects = [rect]
            if allow_l and rng.random() < 0.35:
                x0, y0, x1, y1 = rect
                w, h = x1 - x0, y1 - y0
                t1, t2 = rng.uniform(0.4, 0.6) * h, rng.uniform(0.4, 0.6) * w
                if min(t1, t2) >= 8.0:
                    fx, fy = rng.random() < 0.5, rng.random() < 0.5
                    a = (x0, y1 - t1, x1, y1) if fy else (x0, y0, x1, y0 + t1)
                    bb = (x1 - t2, y0, x1, y1) if fx else (x0, y0, x0 + t2, y1)
                    rects = [a, bb]
            pad = None
            if pad_margin:
                m = rng.uniform(2.0, 4.0) if self.extent >= 100 else rng.uniform(1.5, 2.5)
                pad = (rect[0] - m, rect[1] - m, rect[2] + m, rect[3] + m)
            if self._fits(pad if pad is not None else rect):
                b = _Building(next_id(), kind, rects, float(rng.uniform(3.0, 12.0)), self._roof(), pad=pad)
                self._add(b)
                return b
        # fallback for crowded sites: first fit of the smallest footprint in a 1 m raster scan
        m = 1.5 if pad_margin else 0.0
        size = lo + 2 * m
        bx0, by0, bx1, by1 = self.interior.bounds
        xs = np.arange(bx0, bx1 - size + 1e-9, 1.0)
        ys = np.arange(by0, by1 - size + 1e-9, 1.0)
        if rng.random() < 0.5:
            xs = xs[::-1]
        if rng.random() < 0.5:
            ys = ys[::-1]
        for y in ys:
            for x in xs:
                outer = (float(x), float(y), float(x) + size, float(y) + size)
                if self._fits(outer):
                    rect = (outer[0] + m, outer[1] + m, outer[2] - m, outer[3] - m)
                    b = _Building(next_id(), kind, [rect], float(rng.uniform(3.0, 12.0)), self._roof(),
                                  pad=outer if pad_margin else None)
                    self._add(b)
                    return b
        return None

    def _assign_dates(self, rng, n, news, db, ab) -> None:
        hi = n - 3
        fps = sorted(int(v) for v in np.round(np.linspace(1, hi, len(news))))
        padded = [b for b in news if b.pad is not None]
        plain = [b for b in news if b.pad is None]
        # padded buildings take the latest slots (they need first_present >= 2)
        late, early = fps[len(fps) - len(padded):], fps[: len(fps) - len(padded)]
        for group, slots in ((padded, late), (plain, early)):
            for b, i in zip(group, rng.permutation(len(slots))):
                b.first_present = int(slots[i])
        for b in news:
            if b.pad is not None and b.first_present >= 2:
                back = 2 if (b.first_present - 2 >= 1 and rng.random() < 0.4) else 1
                b.construction = b.first_present - back
                b.last_absent = b.construction - 1
            else:
                b.pad = None
                b.last_absent = b.first_present - 1
        db.demolished = int(rng.integers(2, hi + 1))
        db.last_absent = db.demolished - 1
        ab.first_present = int(rng.integers(2, hi + 1))
        ab.last_absent = ab.first_present - 1

    # -- per-date geometry (metres, y down)
    def shadow_polys(self, k: int, shadow_vec_m: tuple[float, float]):
        from shapely.geometry import MultiPoint

        polys = []

        def add(rect, height):
            dx, dy = shadow_vec_m[0] * height, shadow_vec_m[1] * height
            x0, y0, x1, y1 = rect
            pts = [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]
            pts += [(x + dx, y + dy) for x, y in pts]
            polys.append(MultiPoint(pts).convex_hull)

        for b in self.buildings:
            if b.present(k):
                for r in b.rects:
                    add(r, b.height)
        x0, y0, x1, y1 = self.wall
        t = 1.0
        for r in [(x0, y0, x1, y0 + t), (x0, y1 - t, x1, y1), (x0, y0, x0 + t, y1), (x1 - t, y0, x1, y1)]:
            add(r, self.wall_height)
        return polys

    def wall_rects(self):
        x0, y0, x1, y1 = self.wall
        t = 1.0
        return [(x0, y0, x1, y0 + t), (x0, y1 - t, x1, y1), (x0, y0, x0 + t, y1), (x1 - t, y0, x1, y1)]


# --------------------------------------------------------------- rendering
class _Renderer:
    """Fine ground grid in reference pixels with a margin, and resampling."""

    def __init__(self, rng: np.random.Generator, layout: _Layout, size: int, gsd: float,
                 extra_margin: int = 0) -> None:
        from rasterio import features

        self.size, self.gsd, self.layout = size, gsd, layout
        self.margin = 24 + int(math.ceil(0.006 * size)) + int(extra_margin)
        n = size + 2 * self.margin
        self.fine_shape = (n * _FINE, n * _FINE)
        # metres (y down) -> fine pixel: fine = (m / gsd + margin) * F
        self.m_to_fine = Affine(_FINE / gsd, 0, self.margin * _FINE, 0, _FINE / gsd, self.margin * _FINE)
        self.fine_transform = ~self.m_to_fine  # fine pixel -> metres (used by rasterize)
        lab = np.full(self.fine_shape, _SOIL, np.uint8)
        shapes = [(g, _GRASS) for g in layout.grass]
        shapes += [(_rect_poly(r), _GRAVEL) for r in layout.gravel]
        shapes += [(g, _TREES) for g in layout.trees]
        shapes += [(_rect_poly(r), _ASPHALT) for r in layout.roads]
        self.base_label = features.rasterize(shapes, out=lab, transform=self.fine_transform)
        t_low = _smooth_noise(rng, (n, n), 8.0)
        t_high = _smooth_noise(rng, (n, n), 0.7)
        self.t_low = ndimage.zoom(t_low, _FINE, order=1).astype(np.float32)
        self.t_high = ndimage.zoom(t_high, _FINE, order=1).astype(np.float32)
        # fine-scale speckle shared by all dates (ground texture is static)
        self.t_fine = _smooth_noise(rng, self.fine_shape, 0.8)

    def ground(self, k: int, sc: _Scene) -> np.ndarray:
        """Ground reflectance (4, H, W) float32 on the fine grid for date index k."""
        from rasterio import features

        L = self.layout
        lab = self.base_label.copy()
        shapes = []
        for b in L.buildings:
            if b.pad_visible(k):
                shapes.append((_rect_poly(b.pad), _PAD))
            if b.rubble(k):
                for r in b.rects:
                    shapes.append((_rect_poly(r).buffer(1.0, join_style=2), _RUBBLE))
        for b in L.buildings:
            if b.present(k):
                shapes += [(_rect_poly(r), b.roof) for r in b.rects]
        shapes += [(_rect_poly(r), _WALL) for r in L.wall_rects()]
        features.rasterize(shapes, out=lab, transform=self.fine_transform)
        el = math.radians(max(sc.sun_elev, 5.0))
        az = math.radians(sc.sun_az)
        per_m = 1.0 / math.tan(el)
        vec = (-math.sin(az) * per_m, math.cos(az) * per_m)  # anti-sun, metres per metre of height, y down
        shadow = features.rasterize(
            [(p, 1) for p in L.shadow_polys(k, vec)], out_shape=self.fine_shape,
            transform=self.fine_transform, dtype="uint8",
        ).astype(bool)
        lut = _BASE.copy()
        lut[_GRASS] = sc.green * _GRASS_GREEN + (1 - sc.green) * _GRASS_BROWN
        tg = 0.5 + 0.5 * sc.green
        lut[_TREES] = tg * _TREE_GREEN + (1 - tg) * _TREE_BROWN
        lut[_SOIL] *= sc.soil_factor
        lut[_GRAVEL] *= 0.5 + 0.5 * sc.soil_factor
        tex = 1.0 + _AMP_LOW[lab] * self.t_low + _AMP_HIGH[lab] * self.t_fine
        out = np.empty((4,) + self.fine_shape, np.float32)
        shade = shadow & (lab < _WALL)
        for bnd in range(4):
            v = lut[lab, bnd] * tex
            f = sc.shadow_factor + (0.08 if bnd == 0 else 0.0)
            v[shade] *= f
            out[bnd] = v
        return out

    def resample(self, ground: np.ndarray, sc: _Scene) -> np.ndarray:
        """Area-average the fine ground into the scene grid through ``sc.ref_to_scene``."""
        h, w = sc.shape
        inv = ~sc.ref_to_scene
        rows, cols = np.mgrid[0:h, 0:w].astype(np.float64)
        offs = (np.arange(_SUB) + 0.5) / _SUB
        pc = (cols[None, None] + offs[None, :, None, None]).repeat(_SUB, 0)  # (S,S,h,w): [i_row, j_col]
        pr = (rows[None, None] + offs[:, None, None, None]).repeat(_SUB, 1)
        qc = inv.a * pc + inv.b * pr + inv.c
        qr = inv.d * pc + inv.e * pr + inv.f
        fc = (qc + self.margin) * _FINE - 0.5
        fr = (qr + self.margin) * _FINE - 0.5
        coords = np.stack([fr.reshape(-1), fc.reshape(-1)]).astype(np.float32)
        out = np.empty((4, h, w), np.float32)
        for bnd in range(4):
            v = ndimage.map_coordinates(ground[bnd], coords, order=1, mode="nearest")
            out[bnd] = v.reshape(_SUB * _SUB, h, w).mean(axis=0)
        return out


def _scene_mask(polys_m: Sequence, sc: _Scene, gsd: float) -> np.ndarray:
    """Rasterise metre-space polygons into a scene's pixel grid (exact mapping)."""
    from rasterio import features
    from shapely import affinity

    if not polys_m:
        return np.zeros(sc.shape, bool)
    A = sc.ref_to_scene @ Affine.scale(1.0 / gsd)
    geoms = [affinity.affine_transform(p, [A.a, A.b, A.d, A.e, A.c, A.f]) for p in polys_m]
    return features.rasterize([(g, 1) for g in geoms], out_shape=sc.shape, transform=Affine.identity(),
                              dtype="uint8", all_touched=True).astype(bool)


def _clouds(rng, sc: _Scene, avoid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Soft cloud opacity and displaced cloud-shadow opacity on the scene grid."""
    h, w = sc.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    target = rng.uniform(0.17, 0.28)
    mod = 1.0 + 0.25 * _smooth_noise(rng, (h, w), max(2.0, h / 40))
    az = math.radians(sc.sun_az)
    dist = rng.uniform(0.08, 0.18) * min(h, w)
    sdx, sdy = -math.sin(az) * dist, math.cos(az) * dist
    clear = np.ones((h, w), np.float32)
    clear_s = np.ones((h, w), np.float32)
    for _ in range(300):
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        rx, ry = rng.uniform(0.07, 0.16) * w, rng.uniform(0.07, 0.16) * h
        th = rng.uniform(0, math.pi)
        ct, st = math.cos(th), math.sin(th)

        def blob(ox: float, oy: float) -> np.ndarray:
            dx, dy = xx - cx - ox, yy - cy - oy
            u, v = (dx * ct + dy * st) / rx, (-dx * st + dy * ct) / ry
            r2 = (u * u + v * v) / mod
            c = np.clip(1.25 - 0.6 * r2, 0.0, 1.0)
            return c * np.sqrt(c)  # c ** 1.5 without NumPy's power, whose last bit depends on the CPU

        a = blob(0.0, 0.0)
        s = blob(sdx, sdy)
        if ((a > 0.02) & avoid).any() or ((s > 0.02) & avoid).any():
            continue
        new_clear = clear * (1.0 - a)
        cov = float(np.mean(new_clear < 0.5))
        if cov > 0.30:
            continue
        clear, clear_s = new_clear, clear_s * (1.0 - s)
        if cov >= target:
            break
    return 1.0 - clear, 1.0 - clear_s


def _wedge(rng, sc: _Scene, avoid: np.ndarray) -> np.ndarray:
    h, w = sc.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32) + 0.5
    mask = np.zeros((h, w), bool)
    for frac_hi in (0.20, 0.12, 0.10):
        for corner in rng.permutation(4):
            frac = rng.uniform(0.10, frac_hi)
            a = w * rng.uniform(0.45, 0.8)
            b = 2 * frac * w * h / a
            x = xx if corner in (0, 2) else w - xx
            y = yy if corner in (0, 1) else h - yy
            mask = x / a + y / b < 1.0
            if not (mask & avoid).any():
                return mask
    return mask


def _make_scenes(rng, size: int, gsd: float, dates: list[_dt.date], max_shift: float = 6.0,
                 max_rotation: float = 0.3) -> list[_Scene]:
    n = len(dates)
    cloudy = int(rng.integers(1, n - 1))
    wedge = int(rng.choice([i for i in range(1, n) if i != cloudy]))
    other = int(rng.choice([i for i in range(1, n) if i not in (cloudy, wedge)]))
    t_ref = Affine(gsd, 0, _X0, 0, -gsd, _Y0)
    scenes = []
    for k, d in enumerate(dates):
        hour = 10.5 + rng.uniform(-0.6, 0.6)
        el, az = _sun_position(d, hour)
        doy = d.timetuple().tm_yday
        green = float(np.clip(0.5 + 0.5 * math.cos(2 * math.pi * (doy - 105) / 365) + rng.uniform(-0.1, 0.1), 0, 1))
        soil = 1.0 - 0.08 * (0.5 + 0.5 * math.cos(2 * math.pi * (doy - 20) / 365)) + rng.uniform(-0.03, 0.03)
        base_gain = rng.uniform(0.85, 1.18)
        gain = np.clip(base_gain * rng.uniform(0.95, 1.06, 4), 0.8, 1.25).astype(np.float32)
        offset = rng.uniform(-40, 90, 4).astype(np.float32)
        haze = float(rng.uniform(0.15, 0.4)) if (k > 0 and rng.random() < 0.4) else 0.0
        blur = float(rng.uniform(0.4, 1.2))
        shadow_factor = float(rng.uniform(0.35, 0.5))
        if k == 0:
            shift, rot = (0.0, 0.0), 0.0
        else:
            shift = (float(rng.uniform(-max_shift, max_shift)), float(rng.uniform(-max_shift, max_shift)))
            rot = float(rng.uniform(-max_rotation, max_rotation))
        if k == other:
            g2 = round(gsd * 1.2, 6)
            ox = float(rng.choice([-1, 1]) * rng.uniform(2.0, 4.0))
            oy = float(rng.choice([-1, 1]) * rng.uniform(2.0, 4.0))
            n2 = int(round(size * gsd / g2))
            shape = (n2, n2)
            transform = Affine(g2, 0, _X0 + ox, 0, -g2, _Y0 + oy)
        else:
            g2, shape, transform = gsd, (size, size), t_ref
        nominal = ~transform @ t_ref  # ref pixel -> scene pixel if georeferencing were exact
        c = (shape[1] / 2.0, shape[0] / 2.0)
        mis = Affine.translation(*shift) @ Affine.rotation(rot, pivot=c)
        A = mis @ nominal
        scenes.append(_Scene(k, d, shape, g2, transform, A, shift, rot, el, az, green, soil, blur,
                             gain, offset, haze, shadow_factor, cloudy=(k == cloudy), wedge=(k == wedge),
                             extra={"other_grid": k == other}))
    return scenes


#: Acquisition cadences of :func:`make_site`.
CADENCES = ("irregular", "monthly")


def make_dates(rng, start_year: int, n: int, cadence: str = "irregular") -> list[_dt.date]:
    """Acquisition dates, strictly increasing.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of every draw.
    start_year : int
        Year of the first date.
    n : int
        Number of dates.
    cadence : {"irregular", "monthly"}
        ``"irregular"``: 92-334 days between consecutive dates (the original
        draws, kept draw for draw so that existing seeds keep their pixels).
        ``"monthly"``: one date per calendar month, on a day drawn once for the
        series plus a per-date jitter of -3..+3 days, clipped to 1..28 (a
        monthly tasking or mosaic).

    Returns
    -------
    list of datetime.date
    """
    month0, day0 = int(rng.integers(1, 13)), int(rng.integers(1, 29))
    if cadence == "monthly":
        days = np.clip(day0 + rng.integers(-3, 4, n), 1, 28)
        months = (month0 - 1) + np.arange(n)
        return [_dt.date(start_year + int(m) // 12, int(m) % 12 + 1, int(dd)) for m, dd in zip(months, days)]
    d = _dt.date(start_year, month0, day0)
    out = [d]
    for _ in range(n - 1):
        d = _add_months(d, int(rng.integers(92, 335)))
        out.append(d)
    return out


_CADENCE_TEXT = {"irregular": "92-334 days between dates",
                 "monthly": "one date per calendar month, day of month +/- 3 days"}


def _finish(rng, img: np.ndarray, sc: _Scene, cloud, wedge) -> np.ndarray:
    if cloud is not None:
        img *= 1.0 - 0.45 * cloud[1][None]
    for bnd in range(4):
        img[bnd] = gaussian_filter(img[bnd], sc.blur, mode="nearest")
    img = img * sc.gain[:, None, None] + sc.offset[:, None, None]
    if sc.haze > 0:
        haze_col = np.array([650, 480, 320, 160], np.float32) * sc.haze
        img = img * (1.0 - 0.25 * sc.haze) + haze_col[:, None, None] + 0.15 * sc.haze * float(img.mean())
    if cloud is not None:
        cval = np.array([3150, 3200, 3150, 3250], np.float32) * rng.uniform(0.92, 1.04)
        a = cloud[0][None]
        img = img * (1.0 - a) + a * cval[:, None, None]
    noise = rng.standard_normal(img.shape, dtype=np.float32)
    img += noise * (0.012 * img + 5.0)
    out = np.clip(np.rint(img), 1, _MAX_DN).astype(np.uint16)
    if wedge is not None:
        out[:, wedge] = 0
    return out


def _write_tif(path: Path, data: np.ndarray, sc: _Scene) -> None:
    import rasterio

    profile = raster_profile(sc.shape[1], sc.shape[0], 4, "uint16", crs=SITE_CRS, transform=sc.transform,
                             nodata=0, predictor=2)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        for i, name in enumerate(BAND_NAMES, start=1):
            dst.set_band_description(i, name)
        dst.update_tags(TIFFTAG_DATETIME=sc.date.strftime("%Y:%m:%d") + " 10:30:00")


def _write_truth(path: Path, layout: _Layout, dates: list[_dt.date], gsd: float) -> None:
    import geopandas as gpd
    from shapely import affinity
    from shapely.ops import unary_union

    def iso(k: Optional[int]) -> Optional[str]:
        return None if k is None else dates[k].isoformat()

    recs, geoms = [], []
    for b in sorted(layout.buildings, key=lambda b: b.bid):
        g = unary_union([_rect_poly(r) for r in b.rects]).buffer(0)
        geoms.append(affinity.affine_transform(g, [1.0, 0.0, 0.0, -1.0, _X0, _Y0]))  # metres -> UTM
        recs.append({
            "building_id": b.bid, "kind": b.kind, "height_m": round(float(b.height), 2),
            "first_present": iso(b.first_present), "construction": iso(b.construction),
            "last_absent": iso(b.last_absent), "demolished": iso(b.demolished), "parent_id": b.parent_id,
        })
    gdf = gpd.GeoDataFrame(recs, geometry=geoms, crs=SITE_CRS)
    if path.exists():
        path.unlink()
    gdf.to_file(path, driver="GeoJSON")


def _validate(seed, size, n_dates, gsd, n_new, start_year, progress, cadence="irregular") -> None:
    _check_int("seed", seed, 0, 2**63 - 1, "pass a non-negative integer seed, e.g. seed=0")
    _check_int("size", size, 128, 4096, "use size between 128 and 4096 pixels (default 512)")
    _check_int("n_dates", n_dates, 7, 240,
               "use at least 7 and at most 240 acquisitions (default 8; 240 is 20 years of monthly dates)")
    if not isinstance(cadence, str) or cadence not in CADENCES:
        raise InputError(f"cadence must be one of {', '.join(map(repr, CADENCES))}, got {cadence!r}; "
                         "e.g. cadence='monthly' for one acquisition per calendar month")
    _check_int("n_new", n_new, 3, 40, "use 3 to 40 new buildings (default 5)")
    _check_int("start_year", start_year, 1980, 2090, "use a year between 1980 and 2090")
    if isinstance(gsd, bool) or not isinstance(gsd, (int, float, np.floating)) or not math.isfinite(gsd):
        raise InputError(f"gsd must be a finite number of metres, got {gsd!r}; e.g. gsd=0.5")
    if not 0.1 <= float(gsd) <= 2.0:
        raise InputError(f"gsd={gsd} m is out of range [0.1, 2.0]; use e.g. gsd=0.5")
    if progress is not None and not callable(progress):
        raise InputError("progress must be a callable progress(step, total, message) or None")


def make_site(
    out_dir: str | os.PathLike,
    *,
    seed: int = 0,
    size: int = 512,
    n_dates: int = 8,
    gsd: float = 0.5,
    n_new: int = 5,
    start_year: int = 2013,
    progress: Optional[Callable[[int, int, str], None]] = None,
    max_shift: float = 6.0,
    max_rotation: float = 0.3,
    cadence: str = "irregular",
) -> Site:
    """Write a deterministic, hard synthetic site with ground truth.

    Parameters
    ----------
    out_dir : str or os.PathLike
        Output directory (created if needed; files of the same name are overwritten).
    seed : int, default 0
        Seed of ``numpy.random.default_rng``; the same seed gives identical pixels.
    size : int, default 512
        Width and height of the reference grid in pixels (>= 128).
    n_dates : int, default 8
        Number of acquisitions (7-240). The first one is the reference.
    gsd : float, default 0.5
        Ground sampling distance of the reference grid in metres. One scene
        uses ``1.2 * gsd`` on a shifted origin.
    n_new : int, default 5
        Target number of new buildings (>= 3). Scaled down with the ground area
        for sites smaller than 256 m, never below 3.
    start_year : int, default 2013
        Year of the first acquisition.
    progress : callable, optional
        Called as ``progress(step, total, message)`` after each file is written.
    max_shift : float, default 6.0
        Misregistration shifts are drawn uniformly in ``[-max_shift, max_shift]``
        pixels per axis (0-100).
    max_rotation : float, default 0.3
        Rotations are drawn uniformly in ``[-max_rotation, max_rotation]``
        degrees (0-5). ``max_rotation=0`` gives translation-only scenes (one
        scene still has another GSD and origin).
    cadence : {"irregular", "monthly"}, default "irregular"
        ``"irregular"``: 92-334 days between acquisitions (the same seed gives
        the same pixels as before this option existed). ``"monthly"``: one
        acquisition per calendar month, the same day of the month for the
        series +/- 3 days of jitter (clipped to 1-28), like monthly mosaics or
        a monthly tasking. Whatever the cadence, new buildings first appear
        between the second and the third-to-last date, a construction pad 1-2
        dates before its roof, and one date each is cloudy, has a nodata
        wedge, or is on another grid.

    Returns
    -------
    Site
        Paths and dates of everything written.

    Raises
    ------
    changedetect.errors.InputError
        (a ``ValueError``) for invalid arguments.
    """
    _validate(seed, size, n_dates, gsd, n_new, start_year, progress, cadence)
    for name, value, hi in (("max_shift", max_shift, 100.0), ("max_rotation", max_rotation, 5.0)):
        if (isinstance(value, bool) or not isinstance(value, (int, float, np.floating))
                or not 0.0 <= float(value) <= hi):
            raise InputError(f"{name} must be a number between 0 and {hi:g}, got {value!r}")
    size, n_dates, n_new, gsd = int(size), int(n_dates), int(n_new), float(gsd)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(int(seed))
    dates = make_dates(rng, int(start_year), n_dates, cadence)
    layout = None
    for attempt in range(25):  # crowded small sites may need a few layout draws (still deterministic)
        try:
            layout = _Layout(rng, size * gsd, n_dates, n_new)
            break
        except InputError:
            if attempt == 24:
                raise
    assert layout is not None
    scenes = _make_scenes(rng, size, gsd, dates, float(max_shift), float(max_rotation))
    # ground beyond the grid for larger misregistrations (none for the defaults)
    extra = math.ceil(max(0.0, max_shift - 6.0)
                      + max(0.0, math.radians(max_rotation - 0.3)) * size * 0.75)
    renderer = _Renderer(rng, layout, size, gsd, extra)
    total = n_dates + 3
    step = 0
    images: list[Path] = []
    mis_scenes: dict[str, dict] = {}
    for sc in scenes:
        k = sc.index
        events = [_rect_poly(r).buffer(3.0) for b in layout.buildings if k in b.event_dates()
                  for r in (b.rects + ([b.pad] if b.pad is not None else []))]
        avoid = _scene_mask(events, sc, gsd) if (sc.cloudy or sc.wedge) else None
        ground = renderer.ground(k, sc)
        img = renderer.resample(ground, sc)
        del ground
        cloud = _clouds(rng, sc, avoid) if sc.cloudy else None
        wedge = _wedge(rng, sc, avoid) if sc.wedge else None
        data = _finish(rng, img, sc, cloud, wedge)
        name = f"site_{sc.date.isoformat()}.tif"
        path = out / name
        _write_tif(path, data, sc)
        images.append(path)
        A = sc.ref_to_scene
        mis_scenes[name] = {
            "ref_to_scene": [[A.a, A.b, A.c], [A.d, A.e, A.f]],
            "shift_px": [sc.shift_px[0], sc.shift_px[1]],
            "rotation_deg": sc.rotation_deg,
            "gsd_m": sc.gsd,
            "date": sc.date.isoformat(),
            "cloudy": sc.cloudy,
            "nodata_wedge": sc.wedge,
            "other_grid": bool(sc.extra.get("other_grid")),
            "sun_elevation_deg": round(sc.sun_elev, 3),
            "sun_azimuth_deg": round(sc.sun_az, 3),
        }
        step += 1
        if progress is not None:
            progress(step, total, str(path))
    truth = out / "truth.geojson"
    _write_truth(truth, layout, dates, gsd)
    step += 1
    if progress is not None:
        progress(step, total, str(truth))
    mis_path = out / "misregistration.json"
    doc = {
        "reference": images[0].name,
        "pixel_convention": (
            "ref_to_scene maps reference-grid pixel coordinates (col, row) to the scene file's own pixel "
            "coordinates (col, row) showing the same ground point; rasterio continuous convention: the "
            "upper-left corner of pixel (0, 0) is (0, 0) and the centre of pixel (c, r) is (c+0.5, r+0.5). "
            "Scene content at file pixel p shows ground T_ref * inverse(ref_to_scene) * p. shift_px and "
            "rotation_deg are the misregistration on top of the file's nominal geotransform: "
            "ref_to_scene = translate(shift_px) * rotate(rotation_deg about the scene centre, positive = "
            "clockwise on screen) * inverse(T_scene_nominal) * T_ref."
        ),
        "scenes": mis_scenes,
    }
    mis_path.write_text(json.dumps(doc, indent=2) + "\n")
    step += 1
    if progress is not None:
        progress(step, total, str(mis_path))
    readme = out / "README.md"
    readme.write_text(_readme(out, seed, size, gsd, layout, scenes, n_new, cadence))
    step += 1
    if progress is not None:
        progress(step, total, str(readme))
    return Site(out_dir=out, images=tuple(images), dates=tuple(dates), truth_path=truth,
                misregistration_path=mis_path, crs=SITE_CRS, reference=images[0])


def _readme(out: Path, seed, size, gsd, layout: _Layout, scenes: list[_Scene], n_new: int,
            cadence: str = "irregular") -> str:
    kinds: dict[str, int] = {}
    for b in layout.buildings:
        kinds[b.kind] = kinds.get(b.kind, 0) + 1
    lines = [
        "# Synthetic change-detection site", "",
        f"Generated by `changedetect.synthetic` with seed {seed}, size {size} px, GSD {gsd} m, "
        f"{len(scenes)} dates, cadence {cadence} ({_CADENCE_TEXT[cadence]}), CRS {SITE_CRS}.", "",
        "A walled, prison-like compound (roads, gravel yards, bare soil, seasonal grass and trees) with "
        + ", ".join(f"{v} {k}" for k, v in sorted(kinds.items()))
        + " footprints (see `truth.geojson`; an annex is `modified` with `parent_id`).", "",
        "| file | date | gsd (m) | shift (px) | rot (deg) | notes |", "|---|---|---|---|---|---|",
    ]
    for sc in scenes:
        notes = []
        if sc.index == 0:
            notes.append("reference")
        if sc.cloudy:
            notes.append("cloudy")
        if sc.wedge:
            notes.append("nodata wedge")
        if sc.extra.get("other_grid"):
            notes.append("other grid")
        if sc.haze > 0:
            notes.append("haze")
        lines.append(f"| site_{sc.date.isoformat()}.tif | {sc.date.isoformat()} | {sc.gsd} | "
                     f"{sc.shift_px[0]:+.2f}, {sc.shift_px[1]:+.2f} | {sc.rotation_deg:+.3f} | {', '.join(notes)} |")
    lines += [
        "", "Exact reference-to-scene pixel mappings are in `misregistration.json`.", "",
        "Regenerate with:", "", "```",
        f"python -m changedetect.synthetic {out} --seed {seed} --size {size} --dates {len(scenes)}"
        + ("" if cadence == "irregular" else f" --cadence {cadence}"),
        "```", "",
    ]
    if gsd != 0.5 or n_new != 5:
        lines.insert(-2, f"(and `gsd={gsd}, n_new={n_new}` through `make_site`)")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command-line entry point: write a site and print one line per file.

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments (default ``sys.argv[1:]``).

    Returns
    -------
    int
        Exit status (0 on success, 2 on invalid arguments).
    """
    p = argparse.ArgumentParser(prog="python -m changedetect.synthetic",
                                description="Write a deterministic synthetic change-detection site.")
    p.add_argument("out_dir")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--dates", type=int, default=8)
    p.add_argument("--max-shift", type=float, default=6.0, help="largest misregistration shift, px")
    p.add_argument("--max-rotation", type=float, default=0.3, help="largest rotation, degrees")
    p.add_argument("--cadence", choices=CADENCES, default="irregular",
                   help="irregular: 92-334 days between dates (default); "
                        "monthly: one date per calendar month")
    a = p.parse_args(argv)
    try:
        site = make_site(a.out_dir, seed=a.seed, size=a.size, n_dates=a.dates,
                         max_shift=a.max_shift, max_rotation=a.max_rotation, cadence=a.cadence)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for path in (*site.images, site.truth_path, site.misregistration_path, site.out_dir / "README.md"):
        print(path)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
