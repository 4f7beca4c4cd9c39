"""Buildings a few pixels across in a long monthly series (3-10 m imagery): the coarse-grid path.

A generated estate at 4 m: houses of 3 x 3 pixels, a pixel apart, built a row at a time (with
new gardens and drives around them) over two years of monthly acquisitions whose light changes
with the seasons, blurred as mosaics are; and one house alone on textured ground. Ground truth:
every house's footprint and first month.
"""

from __future__ import annotations

import datetime as _dt

import numpy as np
import pytest
from affine import Affine
from scipy import ndimage as ndi

from changedetect.detector import (STRONG, PixelChange, SeriesWindow, StepDetector, coarse_grid,
                                   step_level)
from changedetect.io import write_raster
from changedetect.masks import correlation_threshold, local_correlation
from changedetect.objects import (clean_mask, kept_pattern, label_objects, opening_radius, split_region,
                                  step_strength)

CRS = "EPSG:32637"
GSD = 4.0
T4 = Affine(GSD, 0, 262000.0, 0, -GSD, 3730000.0)
MONTHS = 24
SIZE = 96
#: rows of houses: (top row, first col, houses, month the row is built)
ROWS = ((20, 16, 5, 5), (24, 16, 5, 9), (28, 16, 5, 13), (32, 16, 5, 17))
LONE = (60, 70, 11)                       # a house alone: top row, left col, month


def _dates():
    return [_dt.date(2018 + m // 12, m % 12 + 1, 15) for m in range(MONTHS)]


def estate(tmp_path, seed: int = 0):
    """Write the estate's 24 monthly RGB GeoTIFFs; return their paths and the truth.

    Truth: a list of (footprint mask, first month) per house.
    """
    rng = np.random.default_rng(seed)
    ground = 900 + 250 * ndi.gaussian_filter(rng.standard_normal((SIZE, SIZE)), 1.2)
    tint = np.array([1.05, 1.0, 0.9])[:, None, None]
    houses = []
    for top, left, n, month in ROWS:
        for j in range(n):
            m = np.zeros((SIZE, SIZE), bool)
            m[top:top + 3, left + 4 * j:left + 4 * j + 3] = True
            houses.append((m, month))
    m = np.zeros((SIZE, SIZE), bool)
    m[LONE[0]:LONE[0] + 3, LONE[1]:LONE[1] + 3] = True
    houses.append((m, LONE[2]))
    roof = np.array([1500.0, 900.0, 750.0])[:, None]          # red tiles on pale ground
    # gardens and drives: a new pattern around a row once it is built
    yard = 750 + 150 * ndi.gaussian_filter(rng.standard_normal((SIZE, SIZE)), 0.8)
    paths = []
    for t, d in enumerate(_dates()):
        season = 1.0 + 0.18 * np.sin(2 * np.pi * (t - 3) / 12)
        img = ground[None] * tint
        for top, left, n, month in ROWS:
            if t >= month:                # the row's yards change with it
                sl = (slice(top - 1, top + 4), slice(left - 1, left + 4 * n))
                img[(slice(None),) + sl] = yard[sl][None] * tint
        for mask, month in houses:
            if t >= month:
                img[:, mask] = roof + rng.normal(0, 30, (3, 1))
        img = ndi.gaussian_filter(img * season + 40 * season, (0, 0.6, 0.6))
        img += rng.normal(0, 25, img.shape)
        p = tmp_path / f"estate_{d.isoformat()}.tif"
        write_raster(p, np.clip(img, 1, 4000).astype(np.uint16), transform=T4, crs=CRS,
                     band_descriptions=("red", "green", "blue"))
        paths.append(p)
    return paths, houses


def _match(changes, houses):
    """Hungarian IoU >= 0.25 matches of new/modified polygons to the houses; (pairs, n predicted)."""
    from rasterio.features import shapes
    from shapely.geometry import shape

    from changedetect.evaluate import iou_matrix, match

    truth = []
    for mask, _ in houses:
        geoms = [shape(g) for g, v in shapes(mask.astype(np.uint8), mask=mask, transform=T4) if v == 1]
        truth.append(geoms[0])
    pred = changes[changes["kind"].isin(["new", "modified"])]
    iou = iou_matrix(np.asarray(pred.geometry.values, object), np.asarray(truth, object))
    return pred, match(iou, iou_threshold=0.25)


@pytest.fixture(scope="module")
def estate_run(tmp_path_factory):
    from changedetect import Config
    from changedetect.pipeline import detect_changes

    tmp = tmp_path_factory.mktemp("estate")
    paths, houses = estate(tmp)
    result = detect_changes(paths, tmp / "out", config=Config(coregister="none", evidence=False))
    return result, houses


def test_houses_of_an_estate_are_found_one_by_one_and_dated(estate_run):
    result, houses = estate_run
    pred, pairs = _match(result.changes, houses)
    precision, recall = len(pairs) / max(len(pred), 1), len(pairs) / len(houses)
    assert recall >= 0.7 and precision >= 0.7, (len(pairs), len(pred), len(houses))
    dates = _dates()
    errors = []
    for i, j, _ in pairs:
        first = _dt.date.fromisoformat(str(pred["first_present"].iloc[i])[:10])
        true = dates[houses[j][1]]
        errors.append(abs((first.year - true.year) * 12 + first.month - true.month))
    assert np.median(errors) <= 1, errors


def test_the_opening_follows_the_grid():
    # on a coarse grid (4 m) a house is 2-3 pixels across: no opening, so a house of 2 x 3 pixels
    # stays; on a 0.5 m grid the opening is 2 pixels and removes a 2-pixel strip; at 2 m, one
    assert [opening_radius(2.0, px, 4.0) for px in (0.5, 1.0, 2.0, 4.0, 10.0)] == [2, 1, 1, 0, 0]
    m = np.zeros((20, 20), bool)
    m[5:7, 5:8] = True
    kept = clean_mask(m, min_pixels=2, radius=opening_radius(2.0, 4.0, 4.0))
    assert label_objects(kept)[1] == 1 and kept[5:7, 5:8].all()
    assert not clean_mask(m, min_pixels=2, radius=opening_radius(2.0, 0.5, 4.0)).any()


def test_split_region_one_piece_per_house():
    # two houses a pixel apart and their changed yard make one region; the peaks of the change
    # cut it into one piece per house, each its pixels at half its peak or more
    s = np.zeros((12, 16), np.float32)
    s[4:7, 3:6] = 20.0
    s[4:7, 7:10] = 30.0
    s[4:7, 11:14] = 25.0
    s = ndi.gaussian_filter(s, 0.6) + 6.0
    region = s > 8.0
    assert label_objects(region)[1] == 1
    pieces = split_region(region, s)
    assert len(pieces) == 3
    for piece, (c0, c1) in zip(pieces, ((3, 6), (7, 10), (11, 14))):
        rr, cc = np.nonzero(piece)
        assert rr.min() >= 3 and rr.max() <= 7 and cc.min() >= c0 - 1 and cc.max() <= c1
        assert piece[4:7, c0:c1].sum() >= 6
    # one house alone is one piece; an empty region none
    one = np.zeros((9, 9), np.float32)
    one[3:6, 3:6] = 10.0
    one = ndi.gaussian_filter(one, 0.6)
    assert len(split_region(one > 1.0, one)) == 1
    assert split_region(np.zeros((5, 5), bool), np.zeros((5, 5))) == []


def test_step_level_follows_the_standard_error_on_coarse_grids_only():
    assert coarse_grid(4.0, 4.0) and coarse_grid(10.0, 4.0) and not coarse_grid(0.5, 4.0)
    lv = step_level(14.0, np.array([1, 4, 3, 12, 200]), np.array([7, 4, 5, 12, 200]))
    assert lv[0] == lv[1] == lv[2] == np.float32(14.0)          # up to 8 dates: min_magnitude
    assert 7.8 < lv[3] < 8.2 and lv[4] == np.float32(7.0)        # 24 dates; never below half

    # a 9-sigma step between two years of monthly dates, in white noise: a change on a 4 m grid,
    # not on a 0.5 m grid (where min_magnitude holds); noise alone is a change on neither
    from changedetect import Config

    rng = np.random.default_rng(3)
    n, h, w = 24, 10, 10
    x = rng.normal(0, 1, (n, 4, h, w)).astype(np.float32)
    x[12:, :, :, :5] += 9.0 / 2                                     # 9 sigma over 4 channels
    usable = np.ones((n, h, w), bool)
    det = StepDetector(Config())
    dates = tuple(_dt.date(2018 + m // 12, m % 12 + 1, 1) for m in range(n))
    for px, expect in ((4.0, True), (0.5, False)):
        win = SeriesWindow(images=x, usable=usable, dates=dates, band_roles=("red", "green", "blue"),
                           noise=np.ones(4, np.float32), dark=-1e9, transform=T4, crs=CRS, pixel_size=px)
        ans = det.detect(win)
        assert isinstance(ans, PixelChange)
        date, strength = ans.codes()
        assert ((strength[:, :5] == STRONG).mean() > 0.9) == expect
        assert not (strength[:, 5:] == STRONG).any()
        if expect:
            assert (date[:, :5][strength[:, :5] == STRONG] == 12).all()


def test_ground_pattern_test():
    # the same ground in other light (a factor on every band) or haze (an offset) keeps its
    # pattern; a roof replaces it, in brightness or in colour alone
    rng = np.random.default_rng(0)
    ground = ndi.gaussian_filter(rng.normal(1000, 80, (3, 40, 40)), (0, 0.7, 0.7))
    piece = np.zeros((40, 40), bool)
    piece[18:21, 18:21] = True
    noise = rng.normal(0, 3, ground.shape)
    assert kept_pattern(ground, 0.6 * ground + noise, piece, alpha=0.01)
    haze = np.array([80.0, 60.0, 50.0])[:, None, None]
    assert kept_pattern(ground, ground + haze + noise, piece, alpha=0.01)
    roofed = ground.copy()
    roofed[:, 17:22, 17:22] = np.array([1500.0, 700.0, 600.0])[:, None, None] + rng.normal(0, 10, (3, 5, 5))
    assert not kept_pattern(ground, roofed, piece, alpha=0.01)
    # a red roof of the ground's brightness: the band mean keeps the pattern, the bands do not
    red = ground.copy()
    mean = ground[:, 17:22, 17:22].mean(axis=0)
    red[:, 17:22, 17:22] = mean * np.array([1.5, 0.8, 0.7])[:, None, None] + rng.normal(0, 10, (3, 5, 5))
    assert not kept_pattern(ground, red, piece, alpha=0.01)
    assert np.median(local_correlation(ground, red, size=3)[piece]) > \
        np.median(local_correlation(ground, red, size=3, bands=True)[piece])
    assert correlation_threshold(0.01, 3) == np.inf and 0.74 < correlation_threshold(0.01, 9) < 0.76


def test_step_strength_is_the_step_over_its_standard_error():
    n = 24
    x = np.zeros((n, 1, 1, 2), np.float32)
    x[12:, 0, 0, 0] = 4.0
    x[20:, 0, 0, 1] = 4.0
    s = step_strength(x, np.ones((n, 1, 2), bool), noise=np.ones(1), persistence=2)
    assert abs(s[0, 0] - 4.0 / np.sqrt(1 / 12 + 1 / 12)) < 1e-4
    assert abs(s[0, 1] - 4.0 / np.sqrt(1 / 20 + 1 / 4)) < 1e-4
