"""Per-building change for given footprints: hand-computed statistics, reading, the pipeline."""

from __future__ import annotations

import importlib
import math
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from affine import Affine
from shapely.geometry import Point, box

from changedetect.buildings import (POPULATION_MIN, building_change, footprint_mask, noise_floor,
                                    population_thresholds, read_footprints)
from changedetect.masks import texture
from changedetect.errors import CRSError, InputError, NoOverlapError, UnreadableFileError

SIGMA = np.array([1.0])


def series(values, *, shape=(12, 12), fp=(slice(3, 9), slice(3, 9)), bands=1):
    """A (dates, bands, rows, cols) stack: 0 outside the footprint, values[t] inside on date t."""
    img = np.zeros((len(values), bands) + shape)
    for t, v in enumerate(values):
        img[t, :, fp[0], fp[1]] = v
    mask = np.zeros(shape, bool)
    mask[fp] = True
    return img, np.ones((len(values),) + shape, bool), mask


# --------------------------------------------------------------- hand-computed statistics

def test_statistics_per_date_by_hand():
    # 2 x 2 footprint, one band, sigma 2: pixel values per date, the roof arrives on date 2
    img = np.zeros((4, 1, 6, 6))
    fp = np.zeros((6, 6), bool)
    fp[2:4, 2:4] = True
    before = np.array([[1.0, 3.0], [1.0, 3.0]])
    img[0, 0, 2:4, 2:4] = before
    img[1, 0, 2:4, 2:4] = before + [[2.0, 0.0], [0.0, -2.0]]       # noise around the same state
    img[2, 0, 2:4, 2:4] = [[61.0, 63.0], [1.0, 3.0]]                # top half roofed
    img[3, 0, 2:4, 2:4] = [[61.0, 63.0], [1.0, 3.0]]
    usable = np.ones((4, 6, 6), bool)
    c = building_change(img, usable, fp, scale=np.array([2.0]), min_magnitude=14.0, persistence=2)
    assert c.status == "changed" and (c.last_absent, c.first_present) == (1, 2)
    # the state before is the mean of dates 0 and 1 per pixel: [[2, 3], [1, 2]]
    base = np.array([[2.0, 3.0], [1.0, 2.0]])
    for t in range(4):
        d = np.abs(img[t, 0, 2:4, 2:4] - base) / 2.0
        assert c.mean_score[t] == pytest.approx(d.mean())
        assert c.max_score[t] == pytest.approx(d.max())
        assert c.date_changed_fraction[t] == pytest.approx((d >= 14.0).mean())
    assert c.date_changed_fraction.tolist() == [0.0, 0.0, 0.5, 0.5]
    assert c.date_status == ("unchanged", "unchanged", "changed", "changed")
    # without the pipeline's map, the change mask is the pixels changed on every later date
    assert c.change_mask[2:4, 2:4].tolist() == [[True, True], [False, False]]
    assert c.changed_fraction == 0.5
    assert c.valid_fraction.tolist() == [1.0, 1.0, 1.0, 1.0]


def test_unusable_dates_are_skipped_not_counted():
    vals = [0, 0, 0, 40, 40, 40, 40]
    img, usable, fp = series(vals)
    ref = building_change(img, usable, fp, scale=SIGMA)
    # a cloud on date 4 over the footprint, and a usable share just below min_valid on date 1
    img[4, :, 3:9, 3:9] = 400.0
    usable[4, 3:9, 3:9] = False
    usable[1, 3:5, 3:9] = False                 # 12 of 36 pixels hidden: 2/3 usable < 0.8
    c = building_change(img, usable, fp, scale=SIGMA)
    assert (c.first_present, c.last_absent) == (ref.first_present, ref.last_absent) == (3, 2)
    assert c.date_status[4] == c.date_status[1] == "not_observable"
    assert np.isnan(c.mean_score[4]) and np.isnan(c.mean_score[1])
    assert c.valid_fraction[1] == pytest.approx(24 / 36) and c.valid_fraction[4] == 0.0
    assert c.n_observations == 5


def test_footprint_partly_off_the_grid_reports_its_share():
    img, usable, fp = series([0, 0, 0, 40, 40, 40])
    c = building_change(img, usable, fp, scale=SIGMA, footprint_pixels=72)   # half of it off-grid
    assert np.allclose(c.valid_fraction, 0.5)
    assert c.status == "not_observable" and set(c.date_status) == {"not_observable"}
    c = building_change(img, usable, fp, scale=SIGMA, footprint_pixels=72, min_valid=0.4)
    assert c.status == "changed" and c.first_present == 3 and c.changed_fraction == 0.5


def test_unchanged_building_and_one_bad_date():
    rng = np.random.default_rng(0)
    img, usable, fp = series([100.0] * 8)
    img += rng.normal(0, 1, img.shape)
    c = building_change(img, usable, fp, scale=SIGMA)
    assert c.status == "unchanged" and c.kind is None and c.first_present is None
    assert c.confidence == 0.0 and not c.change_mask.any()
    # one bright (hazy, cloudy) date in the middle is not a change: it does not persist
    img[4, :, 3:9, 3:9] += 60.0
    c = building_change(img, usable, fp, scale=SIGMA)
    assert c.status == "unchanged", (c.score, c.first_present)
    assert c.date_changed_fraction[4] == 1.0          # but the evidence shows that date


def test_too_few_observable_dates_is_not_observable():
    img, usable, fp = series([0, 0, 40, 40])
    usable[1:3] = False
    c = building_change(img, usable, fp, scale=SIGMA, persistence=2)
    assert c.status == "not_observable" and c.n_observations == 2


def test_kinds_from_before_and_after_appearance():
    rng = np.random.default_rng(1)
    shape, rect = (24, 24), (slice(6, 18), slice(6, 18))
    fp = np.zeros(shape, bool)
    fp[rect] = True
    soil = rng.normal(300, 30, shape)                    # textured bare ground, the same every date
    rough = rng.normal(350, 100, (12, 12))               # rubble: about the ground's colour, rough

    def scene(inside=None):
        img = soil.copy()
        if inside is not None:
            img[rect] = inside
        return img + rng.normal(0, 3, shape)             # observation noise, sigma 3

    def run(before, after):
        img = np.stack([scene(before) for _ in range(3)] + [scene(after) for _ in range(4)])[:, None]
        # the pipeline's channels: the band, and its local texture (roofs are flat, rubble is not)
        img = np.concatenate([img, texture(img)[:, None]], axis=1)
        return building_change(img, np.ones((7,) + shape, bool), fp, scale=np.array([3.0, 2.0]))

    new = run(None, 900.0)                               # a flat roof on bare ground
    assert (new.status, new.kind, new.first_present) == ("changed", "new", 3)
    gone = run(900.0, rough)
    assert (gone.status, gone.kind, gone.first_present) == ("demolished", "demolished", 3)
    assert gone.date_status[3:] == ("demolished",) * 4
    recoloured = run(900.0, 1800.0)                      # the roof of a standing building changes
    assert (recoloured.status, recoloured.kind, recoloured.first_present) == ("changed", "modified", 3)
    for c in (new, gone, recoloured):
        assert 0.5 < c.confidence <= 1.0


def test_pipeline_change_map_is_the_building_mask_and_small_steps_need_a_share():
    # a standing building's red band rises by 10 sigma (above 14 / 2); its outline stays
    img, usable, fp = series([100] * 7, bands=2)
    img[3:, 0] += 10.0 * (img[3:, 0] > 0)
    two = np.array([1.0, 1.0])
    few = np.zeros_like(fp)
    few[3, 3:6] = True                                          # 3 of 36 pixels changed
    c = building_change(img, usable, fp, scale=two, changed_pixels=few)
    assert c.status == "unchanged" and c.kind is None
    assert c.change_mask.sum() == 3 and c.changed_fraction == pytest.approx(3 / 36)   # still shown
    half = np.zeros_like(fp)
    half[3:6, 3:9] = True
    c = building_change(img, usable, fp, scale=two, changed_pixels=half)
    assert (c.status, c.kind, c.changed_fraction) == ("changed", "modified", 0.5)
    big = img.copy()
    big[3:, 0] += 20.0 * (img[3:, 0] > 0)                      # a 30-sigma step counts on its own
    c = building_change(big, usable, fp, scale=two, changed_pixels=few)
    assert c.status == "changed"


def test_standing_building_only_brighter_is_not_a_change():
    """Every band alike 10 % brighter: haze, sun on a pitched roof or normalisation, not a new roof."""
    img, usable, fp = series([1000.0] * 7, bands=3)
    scale = np.full(3, 10.0)
    brighter = img.copy()
    brighter[3:] *= 1.10                                        # 100 DN = 17 sigma per band
    c = building_change(brighter, usable, fp, scale=scale)
    assert c.status == "unchanged" and c.score > 14
    repainted = img.copy()
    repainted[3:] *= 1.6                                        # far brighter: a new white roof
    assert building_change(repainted, usable, fp, scale=scale).kind == "modified"
    recoloured = img.copy()
    recoloured[3:, 0] *= 1.2                                    # the colour changed: 20 sigma
    assert building_change(recoloured, usable, fp, scale=scale).kind == "modified"


def test_registration_lowers_confidence():
    img, usable, fp = series([0, 0, 0, 40, 40, 40, 40])
    good = building_change(img, usable, fp, scale=SIGMA, registration_rmse_px=[0.0] * 7)
    rm = [0.0, 0.0, 0.0, 0.6, 0.0, 0.0, 0.0]                  # the first scene after the step
    bad = building_change(img, usable, fp, scale=SIGMA, registration_rmse_px=rm)
    unknown = building_change(img, usable, fp, scale=SIGMA, registration_rmse_px=float("nan"))
    assert good.confidence > unknown.confidence > bad.confidence > 0


def test_footprint_mask_tiny_footprint_is_never_empty():
    t = Affine(1, 0, 0, 0, -1, 0)
    m = footprint_mask(box(1.6, -1.4, 1.9, -1.1), t, (4, 4))     # no pixel centre inside
    assert m.sum() == 1 and m[1, 1]


def test_bad_shapes_raise():
    img, usable, fp = series([0, 0, 40])
    with pytest.raises(InputError, match="same window"):
        building_change(img, usable, fp[:5], scale=SIGMA)


# --------------------------------------------------------------- reading footprints

def _population(n, roofs, *, rng, dates=2, drift=0.0):
    """``n`` 6 x 6 footprints on 12 x 12 windows, 3 bands of unit noise; ``roofs`` of them get a roof on
    the last date. Every footprint's mean also moves by ``drift`` sigmas on the last date (another
    sensor, a season: the whole site moves, changed or not)."""
    cases = []
    for i in range(n):
        img = rng.normal(0.0, 1.0, (dates, 3, 12, 12))
        img[-1] += drift * rng.normal(1.0, 0.1)
        if i < roofs:
            img[-1, :, 3:9, 3:9] += 40.0 * rng.uniform(0.8, 1.2)
        fp = np.zeros((12, 12), bool)
        fp[3:9, 3:9] = True
        cases.append((img, np.ones((dates, 12, 12), bool), fp))
    return cases


def _judge(cases, min_score=None, persistence=1):
    return [building_change(img, u, fp, scale=np.ones(3), persistence=persistence, min_score=min_score)
            for img, u, fp in cases]


def test_noise_floor_is_the_chi_square_quantile_of_the_mean_step():
    """Pure noise: the floor is exceeded by about alpha of footprints' mean steps, no more."""
    rng = np.random.default_rng(1)
    # 36 px, one date each side, 3 bands: the step of the means is N(0, 2/36) per band
    steps = np.linalg.norm(rng.normal(0.0, np.sqrt(2 / 36), (200_000, 3)), axis=1)
    assert abs(np.mean(steps > noise_floor(1, 1, 36, 3, alpha=0.01)) - 0.01) < 0.001
    assert noise_floor(4, 4, 36, 3) < noise_floor(1, 1, 36, 3)          # more dates, smaller floor
    assert noise_floor(0, 3, 36, 3) == float("inf")


def test_site_thresholds_split_the_population_not_the_noise():
    """The site's own thresholds find exactly the roofs, even where the whole site drifted by far
    more than noise; a site where nothing but noise differs gets no change at all."""
    rng = np.random.default_rng(2)
    for drift in (0.0, 3.0):
        cases = _population(60, 6, rng=rng, drift=drift)
        first = _judge(cases)
        thr = population_thresholds([c.score for c in first], [c.fstat for c in first],
                                    [c.n_observations for c in first], 3)
        assert thr is not None and thr[1] == 0.0            # two dates: no F threshold
        got = _judge(cases, min_score=thr[0])
        changed = [i for i, c in enumerate(got) if c.status != "unchanged"]
        assert changed == list(range(6)), (drift, thr, changed)
        assert all(got[i].confidence > 0 for i in changed)
        if drift:
            # judged one by one, against sensor noise, every drifted footprint would be a change
            assert sum(c.status != "unchanged" for c in _judge(cases, min_score=0.0)) == 60
    quiet = _population(60, 0, rng=rng)
    first = _judge(quiet)
    thr = population_thresholds([c.score for c in first], [c.fstat for c in first],
                                [c.n_observations for c in first], 3)
    # Otsu splits any sample; the noise floor keeps the quiet site's upper half unchanged
    assert np.mean([c.score > thr[0] for c in first]) > 0.05
    assert all(c.status == "unchanged" for c in _judge(quiet, min_score=thr[0]))


def test_site_thresholds_need_enough_footprints_and_use_f_on_series():
    rng = np.random.default_rng(3)
    few = _judge(_population(POPULATION_MIN - 1, 2, rng=rng))
    assert population_thresholds([c.score for c in few], [c.fstat for c in few],
                                 [c.n_observations for c in few], 3) is None
    # six dates: a roof from date 4 on (a clean step), and footprints that flicker
    cases = []
    for i in range(40):
        img = rng.normal(0.0, 1.0, (6, 3, 12, 12))
        if i < 5:
            img[4:, :, 3:9, 3:9] += 30.0
        elif i < 15:
            img[1::2, :, 3:9, 3:9] += 30.0                  # bright on every other date: glare, not a roof
        fp = np.zeros((12, 12), bool)
        fp[3:9, 3:9] = True
        cases.append((img, np.ones((6, 12, 12), bool), fp))
    first = _judge(cases, persistence=2)
    thr, sig = population_thresholds([c.score for c in first], [c.fstat for c in first],
                                     [c.n_observations for c in first], 3)
    assert sig > 0
    # the score is the net change from the first state (dates 0-1) to the last (dates 4-5): the
    # roofs pass the site's threshold, the footprints that flicker between two states do not (their
    # first and last states agree), so the F test's significance is no longer needed to stop them
    assert all(c.score >= thr for c in first[:5]) and all(c.score < thr for c in first[5:15])
    from changedetect.series import f_threshold

    # as in the pipeline: the model's F threshold for one footprint, the site's score threshold on top
    for s in (0.0, sig):
        got = [building_change(img, u, fp, scale=np.ones(3), persistence=2, min_fstat=f_threshold(0.01, 6, 3),
                               min_score=thr, min_significance=s) for img, u, fp in cases]
        assert [i for i, c in enumerate(got) if c.status != "unchanged"] == list(range(5))
        assert all(got[i].first_present == 4 and got[i].last_absent == 3 for i in range(5))


def _write(gdf, path, **kw):
    gdf.to_file(path, engine="pyogrio", **kw)
    return path


def test_read_footprints_reprojects_and_finds_ids(tmp_path):
    import geopandas as gpd

    utm = gpd.GeoDataFrame({"osm_id": [1234.0, 99.0], "name": ["a", "b"]},
                           geometry=[box(262010, 3729900, 262030, 3729920), box(0, 0, 1, 1)],
                           crs="EPSG:32637")
    path = _write(utm.to_crs("EPSG:4326"), tmp_path / "osm.geojson", driver="GeoJSON")
    fps = read_footprints(path, "EPSG:32637")
    assert fps["building_id"].tolist() == ["1234", "99"]
    assert fps.crs == "EPSG:32637"
    assert fps.geometry.iloc[0].area == pytest.approx(400.0, rel=1e-3)
    fps = read_footprints(path, "EPSG:32637", id_column="name")
    assert fps["building_id"].tolist() == ["a", "b"]
    with pytest.raises(InputError, match="no column 'nope'"):
        read_footprints(path, "EPSG:32637", id_column="nope")


def test_read_footprints_numbers_and_filters(tmp_path):
    import geopandas as gpd

    g = gpd.GeoDataFrame({"height": [3, 4, 5]},
                         geometry=[box(0, 0, 10, 10), Point(5, 5), box(20, 0, 30, 10)], crs="EPSG:32637")
    fps = read_footprints(_write(g, tmp_path / "f.gpkg", driver="GPKG"), "EPSG:32637")
    assert fps["building_id"].tolist() == ["bld-00001", "bld-00003"]


@pytest.mark.filterwarnings("ignore:'crs' was not provided")
@pytest.mark.parametrize("case", ["missing", "junk", "nocrs", "points", "dupes"])
def test_read_footprints_errors_name_the_file(tmp_path, case):
    import geopandas as gpd

    if case == "missing":
        path, err, text = tmp_path / "gone.gpkg", UnreadableFileError, "does not exist"
    elif case == "junk":
        path, err, text = tmp_path / "junk.geojson", UnreadableFileError, "Cannot read"
        path.write_text("not a vector file")
    elif case == "nocrs":
        path, err, text = tmp_path / "nocrs.shp", CRSError, "no CRS"
        _write(gpd.GeoDataFrame({"id": [1]}, geometry=[box(0, 0, 1, 1)]), path)
    elif case == "points":
        path, err, text = tmp_path / "points.gpkg", InputError, "no polygon"
        _write(gpd.GeoDataFrame({"id": [1]}, geometry=[Point(0, 0)], crs="EPSG:32637"), path, driver="GPKG")
    else:
        path, err, text = tmp_path / "dupes.gpkg", InputError, "not unique"
        _write(gpd.GeoDataFrame({"id": [1, 1]}, geometry=[box(0, 0, 1, 1), box(2, 0, 3, 1)],
                                crs="EPSG:32637"), path, driver="GPKG")
    with pytest.raises(err, match=text) as info:
        read_footprints(path, "EPSG:32637")
    assert path.name in str(info.value)


# --------------------------------------------------------------- the pipeline

EXPECTED = {"existing": "unchanged", "new": "changed", "modified": "changed", "demolished": "demolished"}


@pytest.fixture(scope="module")
def footprints(site, tmp_path_factory):
    """The site's true footprints in WGS 84 (another CRS), plus one off the imagery."""
    import geopandas as gpd

    truth = gpd.read_file(site.truth_path)
    far = gpd.GeoDataFrame({"building_id": ["far-away"]}, geometry=[box(300000, 3700000, 300020, 3700020)],
                           crs=truth.crs)
    fps = gpd.GeoDataFrame(pd_concat([truth[["building_id", "geometry"]], far]), crs=truth.crs)
    path = tmp_path_factory.mktemp("fp") / "footprints.geojson"
    fps.to_crs("EPSG:4326").to_file(path, driver="GeoJSON", engine="pyogrio")
    return path, truth


def pd_concat(frames):
    import pandas as pd

    return pd.concat(frames, ignore_index=True)


@pytest.fixture(scope="module")
def fp_result(site, footprints, tmp_path_factory):
    from changedetect.pipeline import Config, detect_changes

    out = tmp_path_factory.mktemp("fpout")
    return detect_changes(site.images, out, config=Config(buildings=str(footprints[0]))), out


def test_pipeline_status_of_every_known_building(site, footprints, fp_result):
    result, _ = fp_result
    _, truth = footprints
    b = result.buildings.set_index("building_id")
    assert list(result.buildings["building_id"]) == list(truth["building_id"]) + ["far-away"]
    assert b.loc["far-away", "status"] == "not_observable"
    dates = [d.isoformat() for d in site.dates]
    exact = []
    for _, t in truth.iterrows():
        row = b.loc[t.building_id]
        assert row.status == EXPECTED[t.kind], (t.building_id, t.kind, row.status)
        if t.kind == "existing":
            assert row.kind is None and row.confidence == 0.0 and row.first_present is None
            continue
        # the true date (or the construction pad's, which comes first) lies in the bracket
        true = {str(d)[:10] for d in (t.demolished if t.kind == "demolished" else t.first_present,
                                      t.construction) if d is not None and d == d}
        assert any(row.last_absent < d <= row.first_present for d in true), (t.building_id, row, true)
        exact.append(row.first_present in true)
        if t.kind == "demolished":
            assert row.kind == "demolished"
        else:
            assert row.kind in ("new", "modified")
            assert row.changed_fraction > 0.5 and row.confidence > 0.3
    assert sum(exact) >= len(exact) - 1, exact
    # one row per building and date, and statuses that agree with the building's
    bd = result.building_dates
    assert len(bd) == len(b) * len(dates)
    for bid, rows in bd.groupby("building_id"):
        st = b.loc[bid, "status"]
        seen = set(rows["status"]) - {"not_observable"}
        if st == "unchanged":
            assert seen == {"unchanged"}
        elif st in ("changed", "demolished"):
            after = rows[rows["date"] >= b.loc[bid, "first_present"]]
            assert set(after["status"]) <= {st, "not_observable"}
    assert (bd[bd["building_id"] == "far-away"]["valid_fraction"] == 0).all()


def test_pipeline_judges_a_large_set_of_footprints_against_the_site(site, footprints, tmp_path):
    """With 20 or more footprints the site's own thresholds decide: the known buildings keep the
    status their truth implies, bare plots drawn as footprints stay unchanged, and the rule and
    its thresholds are in run.json and on the console."""
    import geopandas as gpd
    import rasterio
    from rasterio.transform import array_bounds

    _, truth = footprints
    with rasterio.open(site.images[0]) as ds:
        x0, y0, x1, y1 = array_bounds(ds.height, ds.width, ds.transform)
    taken = truth.geometry.buffer(4.0).union_all()
    plots = [box(x, y, x + 6, y + 6) for x in np.arange(x0 + 8, x1 - 14, 9.0)
             for y in np.arange(y0 + 8, y1 - 14, 9.0) if not box(x, y, x + 6, y + 6).intersects(taken)]
    assert len(plots) + len(truth) >= 60
    fps = gpd.GeoDataFrame({"building_id": list(truth["building_id"]) + [f"plot-{i}" for i in range(len(plots))]},
                           geometry=list(truth.geometry) + plots, crs=truth.crs)
    path = tmp_path / "many.gpkg"
    fps.to_file(path, driver="GPKG", engine="pyogrio")
    out = tmp_path / "out"
    p = _detect_with_footprints(site, path, out)
    rule = json.loads((out / "run.json").read_text())["footprint_decision"]
    assert rule["rule"] == "site thresholds" and rule["observable"] >= 60, rule
    assert f"Judged against this site's {rule['observable']} observable footprints" in p.stdout
    b = gpd.read_file(out / "buildings.geojson").set_index("building_id")
    for _, t in truth.iterrows():
        assert b.loc[t.building_id, "status"] == EXPECTED[t.kind], (t.building_id, t.kind, b.loc[t.building_id])
    # bare plots: the site's rule adds none (a few partly hidden plots, seen on 3-4 dates, pass the
    # rules of one footprint, as they did before the site's thresholds). The score is now the net change
    # from the first to the last state, each of one or two dates for such a plot: one of them is above
    # the site's threshold as well, which its status does not depend on; every plot seen on more than
    # half the dates stays below it.
    plot = b.loc[[f"plot-{i}" for i in range(len(plots))]]
    flagged = plot[plot["status"] != "unchanged"]
    assert ((flagged["score"] < rule["score_threshold"])
            | (flagged["n_observations"] <= len(site.dates) // 2)).all(), flagged
    # and no bare plot looks like a building that went or came
    assert not flagged["kind"].isin(["demolished"]).any(), flagged
    assert len(flagged[flagged["status"] != "not_observable"]) <= 0.05 * len(plot), flagged


def _detect_with_footprints(site, footprints, out):
    """``detect-changes <site> --buildings footprints --out out``, as a user runs it; it must succeed."""
    exe = Path(sys.executable).parent / "detect-changes"
    p = subprocess.run([str(exe), *map(str, site.images), "--buildings", str(footprints), "--out", str(out)],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    return p


def test_footprints_do_not_change_detection(site_result, fp_result):
    """Giving footprints adds tables and ids; the detected changes stay the same."""
    plain, with_fp = site_result[0].changes, fp_result[0].changes
    assert plain.drop(columns="building_id").equals(with_fp.drop(columns="building_id"))
    assert plain["building_id"].isna().all()


def test_pipeline_building_outputs_and_record(footprints, fp_result):
    import geopandas as gpd
    import pandas as pd
    import pyogrio

    from changedetect.io import sha256_file

    result, out = fp_result
    names = {f.name for f in out.iterdir()}
    assert {"changes.gpkg", "changes.geojson", "buildings.geojson", "building_dates.csv", "run.json"} <= names
    layers = {name for name, _ in pyogrio.list_layers(out / "changes.gpkg")}
    assert layers == {"changes", "buildings", "building_masks", "building_dates"}
    g = gpd.read_file(out / "changes.gpkg", layer="buildings")
    assert list(g["status"]) == list(result.buildings["status"])
    masks = gpd.read_file(out / "changes.gpkg", layer="building_masks")
    changed = result.buildings[result.buildings["status"] != "unchanged"]
    assert set(masks["building_id"]) >= set(changed[changed["changed_fraction"] > 0]["building_id"])
    for _, m in masks.iterrows():       # a building's change mask lies on its footprint
        fp = result.buildings.set_index("building_id").geometry[m.building_id]
        assert m.geometry.difference(fp.buffer(0.5)).area < 1e-6
    csv = pd.read_csv(out / "building_dates.csv")
    assert len(csv) == len(result.building_dates)
    run = json.loads((out / "run.json").read_text())
    assert run["buildings"]["sha256"] == sha256_file(footprints[0])
    assert run["buildings"]["by_status"]["not_observable"] == 1
    assert run["parameters"]["buildings"] == str(footprints[0])
    assert run["outputs"]["buildings.geojson"] == sha256_file(out / "buildings.geojson")
    # detected changes on a known footprint carry its id
    assert result.changes["building_id"].notna().sum() >= 3
    truth = footprints[1].set_index("building_id")
    for _, c in result.changes[result.changes["building_id"].notna()].iterrows():
        assert c.geometry.intersection(truth.geometry[c.building_id]).area > 0.5 * min(
            c.geometry.area, truth.geometry[c.building_id].area)


def test_no_footprint_on_the_imagery_is_a_clear_cli_error(site, tmp_path):
    import geopandas as gpd

    far = tmp_path / "elsewhere.gpkg"
    gpd.GeoDataFrame({"id": [1]}, geometry=[box(500000, 100000, 500020, 100020)],
                     crs="EPSG:32637").to_file(far, driver="GPKG", engine="pyogrio")
    exe = Path(sys.executable).parent / "detect-changes"
    out = tmp_path / "out"
    p = subprocess.run([str(exe), *map(str, site.images), "--buildings", str(far), "--out", str(out)],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert "elsewhere.gpkg" in p.stderr and "CRS" in p.stderr
    assert not out.exists() or not any(out.iterdir())
    from changedetect.buildings import open_footprints
    from changedetect.stack import open_stack

    with pytest.raises(NoOverlapError):
        open_footprints(str(far), open_stack(site.images))


def test_cli_lists_changed_footprints_without_a_kind(site, tmp_path):
    """Footprints too small to have an interior get no kind; the console line must still print.

    (It raised ``TypeError: unsupported format string passed to NoneType.__format__``.)
    """
    import geopandas as gpd

    truth = gpd.read_file(site.truth_path)
    new = truth[truth["kind"] == "new"]
    assert len(new) >= 2
    # 2.5 m squares (5 px at 0.5 m) at the centre of every new building: changed, no interior
    tiny = gpd.GeoDataFrame({"building_id": [f"t{i}" for i in range(len(new))]},
                            geometry=[g.centroid.buffer(1.25, cap_style=3) for g in new.geometry],
                            crs=truth.crs)
    path = tmp_path / "tiny.geojson"
    tiny.to_file(path, driver="GeoJSON", engine="pyogrio")
    out = tmp_path / "out"
    p = _detect_with_footprints(site, path, out)
    assert "Traceback" not in p.stderr
    listed = gpd.read_file(out / "buildings.geojson")
    changed = listed[listed["status"].isin(("changed", "demolished"))]
    assert len(changed) >= 1
    assert changed["kind"].isna().any()                   # the case that crashed
    for bid in changed["building_id"]:
        assert any(line.strip().startswith(str(bid)) for line in p.stdout.splitlines()), p.stdout
    assert "None" not in p.stdout


def test_review_keeps_the_footprint_layers_and_ids(fp_result, tmp_path):
    """A re-cut rewrites the changes layer of changes.gpkg; the footprint layers stay as the run wrote
    them."""
    import shutil

    import geopandas as gpd
    import pyogrio

    review = importlib.import_module("changedetect.review")
    result, out = fp_result
    folder = tmp_path / "results"
    shutil.copytree(out, folder)
    on_fp = result.changes[result.changes["building_id"].notna()]
    state = review.review(folder, accept=[on_fp["change_id"].iloc[0]], min_confidence=0.99, reviewer="ana")
    assert list(state.published["change_id"]) == [on_fp["change_id"].iloc[0]]
    layers = [name for name, _ in pyogrio.list_layers(folder / "changes.gpkg")]
    assert sorted(layers) == ["building_dates", "building_masks", "buildings", "changes"]
    for name in ("buildings", "building_masks", "building_dates"):
        a = pyogrio.read_dataframe(folder / "changes.gpkg", layer=name)
        b = pyogrio.read_dataframe(out / "changes.gpkg", layer=name)
        assert a.equals(b), name
    g = gpd.read_file(folder / "changes.gpkg", layer="changes")
    assert list(g["building_id"]) == [on_fp["building_id"].iloc[0]]
    assert (folder / "buildings.geojson").read_bytes() == (out / "buildings.geojson").read_bytes()


# --------------------------------------------------------------- does it look built?

def _house_scene(rng, n=6, size=260, roof=(120.0, 118.0, 112.0), ground=(60.0, 80.0, 50.0), noise=2.0):
    """A smooth, noisy lawn with ``n`` x ``n`` square houses (14 px, 40 px apart): the image and the boxes."""
    from scipy import ndimage as ndi

    img = np.stack([np.full((size, size), g) for g in ground]) + \
        ndi.gaussian_filter(rng.normal(0, 6.0, (size, size)), 2)[None] + rng.normal(0, noise, (3, size, size))
    boxes = []
    for r in range(n):
        for c in range(n):
            r0, c0 = 16 + 40 * r, 16 + 40 * c
            boxes.append((r0, r0 + 14, c0, c0 + 14))
            for b in range(3):
                img[b, r0:r0 + 14, c0:c0 + 14] = roof[b] + rng.normal(0, noise, (14, 14))
    return img, boxes


def test_outline_contrast_tells_a_roof_from_rubble_and_finds_where_the_roof_is():
    from changedetect.buildings import band_gradient, footprint_outline, offset_grid, outline_contrast

    rng = np.random.default_rng(5)
    img, boxes = _house_scene(rng, n=1, size=60)
    r0, r1, c0, c1 = boxes[0]
    fp = np.zeros(img.shape[1:], bool)
    fp[r0:r1, c0:c1] = True
    o = footprint_outline(fp)
    ok = np.ones(fp.shape, bool)
    roof = outline_contrast(band_gradient(img, 3), ok, o, [(0, 0)], noise=1.0)[0]
    # rubble: the roof's mean colour, scattered over the footprint and 2 px beyond it
    rubble = img.copy()
    spot = (slice(r0 - 2, r1 + 2), slice(c0 - 2, c1 + 2))
    rubble[(slice(None),) + spot] = 115.0 + rng.normal(0, 35.0, (3, 18, 18))
    debris = outline_contrast(band_gradient(rubble, 3), ok, o, [(0, 0)], noise=1.0)[0]
    assert roof > math.log(3.0) and debris < 0.0, (roof, debris)
    # the roof drawn 3 px lower and 2 px right of the footprint (parallax, an OpenStreetMap offset)
    moved = np.roll(img, (3, 2), axis=(1, 2))
    shifts = offset_grid(4)
    v = outline_contrast(band_gradient(moved, 3), ok, o, shifts, noise=1.0)
    assert tuple(shifts[int(np.nanargmax(v))]) == (3, 2)
    assert v[0] < v[int(np.nanargmax(v))] - 1.0
    # a footprint without an interior has no outline to judge
    tiny = np.zeros((10, 10), bool)
    tiny[4:7, 4:7] = True
    assert footprint_outline(tiny) is None


def test_site_mixture_posterior_rises_with_the_change():
    from changedetect.buildings import site_mixture

    rng = np.random.default_rng(6)
    s = np.r_[np.exp(rng.normal(0.5, 0.7, 950)), np.exp(rng.normal(2.5, 0.2, 50))]
    thr, _ = population_thresholds(s, np.full(len(s), np.inf), np.full(len(s), 2), 3)
    m = site_mixture(s, threshold=thr)
    grid = np.exp(np.linspace(-1, 5, 200))
    p = m.posterior(grid)
    assert np.all(np.diff(p) >= 0) and p[0] < 0.01 and p[-1] > 0.8
    # the changed group's footprints are mostly called so, the rest mostly not
    assert np.mean(m.posterior(s[950:]) > 0.5) > 0.7 and np.mean(m.posterior(s[:950]) > 0.5) < 0.05
    assert site_mixture(s[:30], threshold=thr) is None            # too few on the changed side


def _write_scene(path, img, date):
    from changedetect.io import write_raster

    return write_raster(path, img.astype(np.float32), transform=Affine(0.5, 0, 262000.0, 0, -0.5, 3730000.0),
                        crs="EPSG:32637", tags={"TIFFTAG_DATETIME": f"{date} 10:00:00"})


def test_pipeline_tells_houses_gone_from_houses_re_roofed_by_their_outline(tmp_path):
    """Two dates of 36 houses: 6 torn down to rubble of the roofs' own colour (a small net change),
    4 under a blue tarp (a large one, the outline kept), the rest standing; the second image shows every
    roof 2 px lower (another view angle), which the footprints must find. Ground truth: demolished for
    the rubble, changed (modified) for the tarps, unchanged for the others."""
    import geopandas as gpd

    from changedetect.pipeline import Config, detect_changes

    rng = np.random.default_rng(7)
    before, boxes = _house_scene(rng)
    after, _ = _house_scene(np.random.default_rng(8))
    # the roofs of the second date 2 px lower; the lawn stays put
    after = after.copy()
    lawn, _ = _house_scene(np.random.default_rng(8), n=0)
    for k, (r0, r1, c0, c1) in enumerate(boxes):
        after[:, r0:r1, c0:c1] = lawn[:, r0:r1, c0:c1]
    gone, tarps = set(range(0, 36, 6)), {3, 10, 17, 28}
    for k, (r0, r1, c0, c1) in enumerate(boxes):
        a0, a1 = r0 + 2, r1 + 2
        if k in gone:
            spot = (slice(None), slice(a0 - 2, a1 + 2), slice(c0 - 2, c1 + 2))
            after[spot] = np.array([117.0, 115.0, 110.0])[:, None, None] + rng.normal(0, 35.0, (3, 18, 18))
        else:
            roof = (60.0, 90.0, 200.0) if k in tarps else (120.0, 118.0, 112.0)
            for b in range(3):
                after[b, a0:a1, c0:c1] = roof[b] + rng.normal(0, 2.0, (14, 14))
    paths = [_write_scene(tmp_path / "a.tif", before, "2020:01:01"), _write_scene(tmp_path / "b.tif", after,
                                                                                  "2021:01:01")]
    fps = gpd.GeoDataFrame({"building_id": [f"h{k}" for k in range(36)]},
                           geometry=[box(262000 + 0.5 * c0, 3730000 - 0.5 * r1, 262000 + 0.5 * c1,
                                         3730000 - 0.5 * r0) for r0, r1, c0, c1 in boxes], crs="EPSG:32637")
    fps.to_file(tmp_path / "houses.geojson", driver="GeoJSON", engine="pyogrio")
    result = detect_changes(paths, tmp_path / "out",
                            config=Config(buildings=str(tmp_path / "houses.geojson"), coregister="none"))
    b = result.buildings.set_index("building_id")
    rule = result.run["footprint_decision"]
    assert rule["looks_judged"] == 36 and rule["offsets_px"] == [[0, 0], [2, 0]], rule
    for k in range(36):
        row = b.loc[f"h{k}"]
        if k in gone:
            assert (row.status, row.kind) == ("demolished", "demolished"), (k, row)
        elif k in tarps:
            assert (row.status, row.kind) == ("changed", "modified"), (k, row)
        else:
            assert row.status == "unchanged", (k, row)


def test_the_site_verdict_on_the_outline_decides_the_kind_and_a_building_gone():
    """One 2-date footprint, its net change below the site's threshold: a building that looked built and
    now looks like plain ground went (demolished); one that only looks less built (a damaged roof) did
    not; above the threshold, a building that looks built on both dates was modified, not demolished."""
    rng = np.random.default_rng(9)
    img = rng.normal(0.0, 1.0, (2, 3, 16, 16))
    img[1, :, 4:12, 4:12] += 3.0                  # a small net change (the site's threshold is 10)
    fp = np.zeros((16, 16), bool)
    fp[4:12, 4:12] = True
    usable = np.ones((2, 16, 16), bool)

    def judge(looks, min_score=10.0):
        return building_change(img, usable, fp, scale=np.ones(3), persistence=1, min_score=min_score,
                               looks=looks)

    assert judge(None).status == "unchanged"
    gone = judge((0.01, 0.6))
    assert (gone.status, gone.kind, gone.first_present) == ("demolished", "demolished", 1)
    assert judge((0.01, 0.1)).status == "unchanged"          # between built and ground: not enough
    assert judge((0.6, 0.01)).kind == "new"
    assert judge((0.01, 0.01)).status == "unchanged"
    standing = judge((0.01, 0.01), min_score=1.0)           # past the site's threshold, built on both dates
    assert (standing.status, standing.kind) == ("changed", "modified")
    assert judge((0.01, 0.6), min_score=1.0).kind == "demolished"
