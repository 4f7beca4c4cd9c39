"""Masks to objects and polygons; change kinds from appearance."""

from __future__ import annotations

import numpy as np
from affine import Affine
from hypothesis import given, settings
from hypothesis import strategies as st
from rasterio.features import rasterize
from scipy import ndimage as ndi

from changedetect.objects import (classify_kind, clean_mask, label_objects, object_shape, polygonize,
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


def test_classify_kind():
    mask = np.zeros((64, 64), bool)
    mask[20:40, 10:30] = True
    noise = 10.0
    assert classify_kind(_scene(False), _scene(True), mask, noise=noise)[0] == "new"
    assert classify_kind(_scene(True), _scene(False), mask, noise=noise)[0] == "demolished"
    annex = np.zeros((64, 64), bool)
    annex[20:40, 30:42] = True
    assert classify_kind(_scene(True), _scene(True, annex=True), annex, noise=noise)[0] == "modified"
