"""The evidence store: co-registered true-colour chips, overview, series, tie points; its loader."""

from __future__ import annotations

import datetime as dt
import json
import zipfile

import geopandas as gpd
import numpy as np
import pytest
from affine import Affine
from rasterio.windows import Window
from shapely.geometry import box

from changedetect.errors import InputError
from changedetect.evidence import chip_window, load_results, stretch_to_uint8, write_evidence
from changedetect.io import write_raster
from changedetect.stack import open_stack

CRS = "EPSG:32637"
T0 = Affine(0.5, 0, 262000.0, 0, -0.5, 3730000.0)


def _registered(site, run):
    """The run's co-registered stack, rebuilt from run.json's ref_to_scene."""
    stack = open_stack(site.images)
    return stack.with_ref_to_scene([np.array(run["registration"][s.name]["ref_to_scene"]) for s in stack.scenes])


def test_chips_are_the_co_registered_stack(site, site_result):
    """Chip pixels are the registered stack's pixels in the chip window, not the files' as they are;
    the true building's pixels differ between the before and after chips."""
    result, out = site_result
    res = load_results(out)
    assert len(res.changes) >= 3
    stack = _registered(site, result.run)
    truth = gpd.read_file(site.truth_path)
    new = truth[truth["kind"] == "new"]
    bands = [stack.band_roles.index(c) for c in ("red", "green", "blue")]
    assert res.index["colour"]["bands"] == bands
    checked = 0
    for cid in res.changes["change_id"]:
        entry, chip = res.index["chips"][cid], res.chip(cid)
        w = entry["window"]
        assert entry["step"] == 1
        window = Window(w["col_off"], w["row_off"], w["width"], w["height"])
        assert chip.transform == stack.window_transform(window)
        for t in range(len(stack)):
            data, valid = stack.read(t, window)
            assert np.array_equal(chip.valid[t], valid)
            expect = stretch_to_uint8(data[bands], chip.stretch)
            assert np.abs(chip.rgb[t].astype(int) - expect.astype(int))[valid].max() <= 1
        # the misregistration is real: the file read on its georeferencing alone is elsewhere
        t = max(range(1, len(stack)), key=lambda i: np.hypot(*result.run["registration"][stack.scenes[i].name]
                                                             ["shift_px"]))
        raw, rv = stack.read(t, window, ref_to_scene=stack.nominal_ref_to_scene(t))
        reg, v = stack.read(t, window)
        assert np.abs(raw - reg)[:, rv & v].mean() > 0.02 * reg[:, v].mean()
        # a detected new building on a true one: inside its footprint, after differs from before
        row = res.change(cid)
        hit = new[new.intersects(row.geometry)]
        if row.kind != "new" or hit.empty:
            continue
        foot = hit.geometry.iloc[0]
        before = res.dates.index(row.last_absent)
        after = res.dates.index(row.first_present)
        rows, cols = np.mgrid[0:chip.rgb.shape[1], 0:chip.rgb.shape[2]]
        xs, ys = chip.transform * (cols + 0.5, rows + 0.5)
        inside = gpd.GeoSeries(gpd.points_from_xy(xs.ravel(), ys.ravel())).within(
            foot.buffer(-1.0)).to_numpy().reshape(rows.shape)
        far = ~gpd.GeoSeries(gpd.points_from_xy(xs.ravel(), ys.ravel())).within(
            foot.buffer(6.0)).to_numpy().reshape(rows.shape)
        ok = chip.valid[before] & chip.valid[after]
        diff = np.abs(chip.rgb[after].astype(int) - chip.rgb[before].astype(int)).mean(axis=-1)
        assert diff[inside & ok].mean() > 3 * diff[far & ok].mean()
        checked += 1
    assert checked >= 2


def test_usable_dates_and_index(site_result):
    result, out = site_result
    res = load_results(out)
    assert res.dates == tuple(s["date"] for s in result.run["inputs"])
    for _, row in res.changes.iterrows():
        chip = res.chip(row.change_id)
        assert chip.usable.dtype == bool and chip.usable.shape == (len(res.dates),)
        assert int(chip.usable.sum()) == row.n_observations
        assert chip.dates == res.dates
    # run.json lists index.json, which lists every other evidence file with its SHA-256
    import hashlib

    digest = hashlib.sha256((out / "evidence" / "index.json").read_bytes()).hexdigest()
    assert result.run["outputs"]["evidence/index.json"] == digest
    for entry in [*res.index["chips"].values(), res.index["overview"], res.index["series"],
                  res.index["registration"]]:
        assert hashlib.sha256((out / "evidence" / entry["file"]).read_bytes()).hexdigest() == entry["sha256"]
    ov, series = res.overview(), res.series()
    assert ov.rgb.shape[0] == 2 and max(ov.rgb.shape[1:3]) <= 1024 and ov.dates[0] <= ov.dates[1]
    assert series.rgb.shape[0] == len(res.dates) and max(series.rgb.shape[1:3]) <= 384


def test_tie_points_are_kept(site_result):
    result, out = site_result
    recs = load_results(out).registration()
    assert [r["scene"] for r in recs] == [s["name"] for s in result.run["inputs"]]
    for rec in recs:
        reg = result.run["registration"][rec["scene"]]
        rows = rec["tiepoints"]["rows"]
        assert len(rows) == reg["n_tiepoints"]
        cols = rec["tiepoints"]["columns"]
        if not rows:
            continue
        a = {c: np.array([np.nan if r[i] is None else float(r[i]) for r in rows]) for i, c in enumerate(cols)}
        assert int(a["inlier"].sum()) == reg["n_inliers"]
        inl = (a["inlier"] > 0) & np.isfinite(a["dx"])
        # measured = model + residual, and the inliers' residual RMSE is the run's
        assert np.allclose(a["measured_dx"][inl], a["model_dx"][inl] + a["dx"][inl], atol=2e-4)
        rmse = np.sqrt(np.mean(a["dx"][inl] ** 2 + a["dy"][inl] ** 2))
        assert rmse == pytest.approx(reg["rmse_px"], abs=2e-3)
        # the model shift at the grid centre is the scene's shift
        assert np.hypot(*reg["shift_px"]) == pytest.approx(np.hypot(np.median(a["model_dx"]),
                                                                    np.median(a["model_dy"])), abs=1.0)


def _scenes(tmp_path, bands: int, descriptions=None):
    """Two 3-band (or 1-band) scenes: 'blue' low, 'green' middle, 'red' high values, in file order."""
    rng = np.random.default_rng(0)
    paths = []
    for k, date in enumerate(("2020-01-01", "2021-01-01")):
        base = rng.normal(0, 3, (bands, 96, 96)) + np.array([300, 1000, 3000][:bands])[:, None, None]
        base[:, 40:56, 40:56] += 2000 * k
        paths.append(write_raster(tmp_path / f"s_{date}.tif", base.astype("uint16"), transform=T0, crs=CRS,
                                  nodata=0, band_descriptions=descriptions))
    return paths


def test_colour_follows_band_roles(tmp_path):
    """Bands described blue, green, red (BGR order in the file) are shown red, green, blue."""
    stack = open_stack(_scenes(tmp_path, 3, ("blue", "green", "red")))
    changes = gpd.GeoDataFrame({"change_id": ["chg-0001"]}, geometry=[box(262020, 3729972, 262028, 3729980)],
                               crs=CRS)
    write_evidence(tmp_path / "ev", stack, [], changes, {})
    index = json.loads((tmp_path / "ev" / "index.json").read_text())
    assert index["colour"]["bands"] == [2, 1, 0] and index["colour"]["chosen_by"] == "band roles"
    with np.load(tmp_path / "ev" / "chips" / "chg-0001.npz") as z:
        rgb = z["rgb"].astype(float)
        assert z["rgb"].dtype == np.uint8 and z["usable"].all()
    # the 'red' band (3000, file band 3) is brightest, 'blue' (300, file band 1) darkest
    assert rgb[..., 0].mean() > rgb[..., 1].mean() > rgb[..., 2].mean()


def test_one_band_is_grey(tmp_path):
    stack = open_stack(_scenes(tmp_path, 1))
    changes = gpd.GeoDataFrame({"change_id": ["chg-0001"]}, geometry=[box(262020, 3729972, 262028, 3729980)],
                               crs=CRS)
    write_evidence(tmp_path / "ev", stack, [], changes, {})
    with np.load(tmp_path / "ev" / "chips" / "chg-0001.npz") as z:
        rgb = z["rgb"]
    assert np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2])
    assert rgb[1, 20, 20, 0] > rgb[0, 20, 20, 0] + 100    # the new bright square (grid 40-56, chip 16-32)


def test_same_input_same_bytes_and_large_windows_are_decimated(tmp_path):
    stack = open_stack(_scenes(tmp_path, 3, ("red", "green", "blue")))
    changes = gpd.GeoDataFrame({"change_id": ["chg-0001", "chg-0002"]},
                               geometry=[box(262020, 3729972, 262028, 3729980), box(262001, 3729953, 262047, 3729999)],
                               crs=CRS)
    usable = {"chg-0001": [True, False]}
    files = []
    for name in ("a", "b"):
        write_evidence(tmp_path / name, stack, [], changes, usable, max_chip=32)
        files.append({p.relative_to(tmp_path / name): p.read_bytes() for p in sorted((tmp_path / name).rglob("*"))
                      if p.is_file()})
    assert files[0] == files[1] and len(files[0]) == 6
    with zipfile.ZipFile(tmp_path / "a" / "chips" / "chg-0001.npz") as z:
        assert {i.date_time for i in z.infolist()} == {(1980, 1, 1, 0, 0, 0)}
    res_index = json.loads((tmp_path / "a" / "index.json").read_text())
    big = res_index["chips"]["chg-0002"]
    assert big["step"] == 3                                    # 96 px window, at most 32 px
    with np.load(tmp_path / "a" / "chips" / "chg-0002.npz") as z:
        assert z["rgb"].shape == (2, 32, 32, 3)
        assert Affine(*z["transform"]).a == pytest.approx(1.5)
    with np.load(tmp_path / "a" / "chips" / "chg-0001.npz") as z:
        assert z["usable"].tolist() == [True, False]


def test_chip_window():
    # padded by 16 px (more than half of a small change), clipped to the grid
    assert chip_window((5, 5, 15, 15), 100, 100) == ((0, 0, 31, 31), 1)
    # a large change: padded by half its size
    (c0, r0, w, h), step = chip_window((100, 100, 200, 140), 1000, 1000)
    assert (c0, r0, w, h, step) == (50, 80, 200, 80, 1)
    (_, _, w, h), step = chip_window((0, 0, 2000, 100), 4000, 4000)
    assert step == 6 and w % step == 0 and w // step <= 512


def test_loader_errors(tmp_path, site_result):
    _, out = site_result
    with pytest.raises(InputError, match="is not a folder"):
        load_results(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=r"empty is not a changedetect results folder"):
        load_results(tmp_path / "empty")
    old = tmp_path / "old"
    old.mkdir()
    (old / "run.json").write_text(json.dumps({"changedetect": "0.9"}))
    with pytest.raises(InputError, match=r"old has no evidence store .*0\.9"):
        load_results(old)
    res = load_results(out)
    with pytest.raises(KeyError, match="No change 'chg-9999'"):
        res.chip("chg-9999")
    assert isinstance(res.changes["last_absent"].iloc[0], str)
    dt.date.fromisoformat(res.changes["first_present"].iloc[0])


def test_no_evidence_option(site, tmp_path):
    from changedetect.config import Config
    from changedetect.pipeline import detect_changes

    r = detect_changes(site.images[:3], tmp_path / "o", config=Config(evidence=False, pixel_products=False))
    assert not (tmp_path / "o" / "evidence").exists()
    assert "evidence/index.json" not in r.run["outputs"]
