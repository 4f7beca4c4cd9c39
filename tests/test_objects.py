"""Masks to objects and polygons; change kinds from appearance."""

from __future__ import annotations

import numpy as np
from affine import Affine
from hypothesis import given, settings
from hypothesis import strategies as st
from rasterio.features import rasterize
from scipy import ndimage as ndi

from changedetect.objects import (appearance, clean_mask, label_objects, object_shape, polygonize,
                                  regularize)

T = Affine(0.5, 0, 1000.0, 0, -0.5, 2000.0)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 40), st.integers(0, 40), st.integers(2, 30), st.integers(2, 30))
def test_mask_polygon_mask_round_trip(r, c, h, w):
    m = np.zeros((80, 80), bool)
    m[r:r + h, c:c + w] = True
    m[min(79, r + h + 3):min(80, r + h + 8), c:c + 4] = True      # a second, separate part
    geom = polygonize(m, T)
    back = rasterize([(geom, 1)], out_shape=m.shape, transform=T).astype(bool)
    assert np.array_equal(back, m)
    assert geom.area == m.sum() * 0.25


def test_clean_mask_drops_specks_and_slivers():
    m = np.zeros((60, 60), bool)
    m[10:30, 10:30] = True           # building
    m[40, 5:55] = True               # a one-pixel sliver (shadow edge)
    m[50:52, 50:52] = True           # a speck
    out = clean_mask(m, min_pixels=20)
    lab, n = label_objects(out)
    assert n == 1 and out[10:30, 10:30].all() and not out[40].any()


def test_regularize_rectangle_keeps_area():
    m = np.zeros((60, 60), bool)
    m[10:30, 12:40] = True
    m[10, 12] = m[29, 39] = False    # ragged corners from mixed pixels
    geom = polygonize(m, T)
    reg = regularize(geom)
    assert len(reg.exterior.coords) == 5
    assert abs(reg.area - geom.area) < 1e-6
    shp = object_shape(reg)
    assert shp.rectangularity > 0.99 and abs(shp.elongation - 28 / 20) < 0.05


def _scene(building: bool, annex: bool = False, seed: int = 0):
    rng = np.random.default_rng(seed)
    img = ndi.gaussian_filter(rng.normal(1000, 80, (3, 64, 64)), (0, 1.5, 1.5))
    if building:
        img[:, 20:40, 10:30] = 2500
    if annex:
        img[:, 20:40, 30:42] = 2200
    return img


def test_kind_from_the_outline():
    mask = np.zeros((64, 64), bool)
    mask[20:40, 10:30] = True
    noise = 10.0
    assert appearance(_scene(False), _scene(True), mask, noise=noise).kind == "new"
    assert appearance(_scene(True), _scene(False), mask, noise=noise).kind == "demolished"
    annex = np.zeros((64, 64), bool)
    annex[20:40, 30:42] = True
    assert appearance(_scene(True), _scene(True, annex=True), annex, noise=noise).kind == "modified"


# --------------------------------------------------------------- regularisation, shape filters


def _angles(poly):
    xy = np.asarray(poly.exterior.coords)[:-1]
    v1 = np.roll(xy, -1, axis=0) - xy
    v0 = xy - np.roll(xy, 1, axis=0)
    cos = np.sum(v0 * v1, axis=1) / (np.linalg.norm(v0, axis=1) * np.linalg.norm(v1, axis=1))
    return np.degrees(np.arccos(np.clip(cos, -1, 1)))


def test_l_shaped_mask_becomes_an_orthogonal_l_with_its_area():
    m = np.zeros((80, 80), bool)
    m[10:60, 10:30] = True            # the long arm, 25 m x 10 m
    m[40:60, 30:70] = True            # the foot, 20 m x 10 m
    m[10, 10] = m[59, 69] = False     # mixed pixels at two corners
    geom = polygonize(m, T)
    out = regularize(geom, cell=0.5)
    assert len(out.exterior.coords) - 1 == 6                       # an L, not a staircase
    assert np.allclose(_angles(out), 90, atol=1e-6)                # square corners
    assert abs(out.area - m.sum() * 0.25) <= 0.02 * out.area       # not the bounding rectangle
    assert out.area < 0.75 * object_shape(geom).area / object_shape(geom).rectangularity


def test_rotated_l_is_orthogonal_along_its_own_direction():
    from shapely import affinity
    from shapely.geometry import Polygon

    ell = affinity.rotate(Polygon([(0, 0), (30, 0), (30, 10), (10, 10), (10, 25), (0, 25)]), 27,
                          origin=(0, 0))
    ell = affinity.translate(ell, 1020, 1960)
    m = rasterize([(ell, 1)], out_shape=(100, 100), transform=T).astype(bool)
    out = regularize(polygonize(m, T), cell=0.5)
    assert len(out.exterior.coords) - 1 <= 8
    assert np.allclose(_angles(out) % 90, 0, atol=1e-6) or np.allclose(_angles(out), 90, atol=1e-6)
    assert abs(out.area - ell.area) <= 0.05 * ell.area
    assert out.symmetric_difference(ell).area <= 0.15 * ell.area


def test_shape_filters_drop_road_strip_and_vehicle_keep_building():
    from changedetect.objects import ShapeLimits, core_fraction, shape_filter

    limits = ShapeLimits()
    road = np.zeros((40, 200), bool)
    road[20:26, 5:195] = True                           # 95 m x 3 m of new asphalt
    vehicle = np.zeros((40, 40), bool)
    vehicle[20:22, 20:24] = True                        # a car: 2 x 4 pixels
    building = np.zeros((60, 60), bool)
    building[10:40, 12:50] = True                       # 15 m x 19 m
    assert shape_filter(object_shape(polygonize(road, T)), limits).startswith("elongation")
    assert shape_filter(object_shape(polygonize(vehicle, T)), limits).startswith("area")
    assert shape_filter(object_shape(polygonize(building, T)), limits) is None
    # thin strips joined into an L (a wall and its moving shadow) pass the rectangle tests
    # but have no core wider than 4 m; a building has
    frame = np.zeros((80, 80), bool)
    frame[10:70, 10:16] = True
    frame[64:70, 10:70] = True
    assert core_fraction(frame, 8) < 0.5 <= core_fraction(building, 8)


# --------------------------------------------------------------- shadows and kinds


def _series(kind: str, n: int = 8, k: int = 5, seed: int = 1):
    """A textured ground whose square changes at date k: a new roof, or a shadow that comes and goes."""
    rng = np.random.default_rng(seed)
    ground = 1400 * (1 + 0.12 * ndi.gaussian_filter(rng.standard_normal((48, 48)), 0.8) / 0.2)
    colour = np.array([0.82, 0.9, 1.0, 1.1])[:, None, None]
    images = np.repeat((colour * ground)[None], n, axis=0)
    obj = np.zeros((48, 48), bool)
    obj[14:34, 14:34] = True
    for t in range(k, n):
        if kind == "roof":             # a dark roof of the ground's colour: flat, there on every date
            images[t][:, obj] = (colour * 480)[:, :, 0]
        else:                          # a shadow: the ground darkened by one factor, extent varies
            reach = (34, 20, 26)[(t - k) % 3]
            sh = obj.copy()
            sh[reach:] = False
            images[t][:, sh] *= 0.42
    images += rng.normal(0, 8, images.shape)
    return images.astype(np.float32), obj


def test_shadow_that_comes_and_goes_is_suppressed_new_dark_roof_is_kept():
    from changedetect.objects import appearance
    from changedetect.objects import flip_fraction

    k = 5
    usable = np.ones((8, 48, 48), bool)
    for kind in ("shadow", "roof"):
        images, obj = _series(kind, k=k)
        before, after = images[:k].mean(axis=0), images[k:].mean(axis=0)
        app = appearance(before, after, obj, noise=10.0)
        flips = flip_fraction(images.mean(axis=1)[:, obj], usable[:, obj], k)
        assert app.angle_deg < 3 and 0.15 < app.brightness_ratio < 0.85    # both: same colour, darker
        assert app.is_shadow(flips) == (kind == "shadow"), (kind, flips)
    images, obj = _series("roof", k=k)
    assert appearance(images[:k].mean(axis=0), images[k:].mean(axis=0), obj, noise=10.0).kind == "new"


def test_demolition_to_rubble_of_the_roofs_colour_is_demolished():
    from changedetect.objects import appearance

    rng = np.random.default_rng(3)
    roof = np.full((3, 64, 64), 1000.0) + rng.normal(0, 5, (3, 64, 64))
    roof[:, 20:44, 16:48] = 1550 + rng.normal(0, 5, (3, 24, 32))          # grey concrete roof
    rubble = roof.copy()
    rubble[:, 19:45, 15:49] = 1500 * (1 + 0.06 * ndi.gaussian_filter(
        rng.standard_normal((26, 34)), 0.7) / 0.3)                          # same colour, rough
    rubble = ndi.gaussian_filter(rubble, (0, 0.8, 0.8))                     # the sensor's blur
    roof = ndi.gaussian_filter(roof, (0, 0.8, 0.8))
    mask = np.zeros((64, 64), bool)
    mask[19:45, 15:49] = True
    app = appearance(roof, rubble, mask, noise=3.0)
    assert app.kind == "demolished", app
    assert appearance(rubble, roof, mask, noise=3.0).kind in ("new", "modified")


def test_a_brightness_only_change_is_dropped_in_a_series_and_modified_in_a_pair():
    """The same roof a little darker (same colour, outline as sharp): not construction in a
    series, where composites judge it; a changed surface reported as such from two images."""
    from changedetect.objects import Appearance, structure_verdict

    app = Appearance(kind="new", contrast=0.05, texture_contrast=0.0, sharp_before=0.8, sharp_after=0.8,
                     sharp_both=0.8, angle_deg=1.0, brightness_ratio=0.9, texture_kept=1.0, pattern_r=0.9)
    assert app.unchanged_structure(0.2)
    kind, why = structure_verdict(app, pair=False, min_contrast=0.2)
    assert kind is None and "brightness only" in why
    kind, why = structure_verdict(app, pair=True, min_contrast=0.2)
    assert kind == "modified" and "two images" in why
    clear = Appearance(kind="new", contrast=0.6, texture_contrast=-0.4, sharp_before=0.0, sharp_after=0.9,
                       sharp_both=0.0, angle_deg=20.0, brightness_ratio=0.5, texture_kept=0.2, pattern_r=0.0)
    assert structure_verdict(clear, pair=True, min_contrast=0.2) == ("new", "")
    assert structure_verdict(clear, pair=False, min_contrast=0.2) == ("new", "")
