"""Tests for changedetect.synthetic (small 256 px sites, a few seconds each)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
import json
import re

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
from scipy import ndimage
from skimage.registration import phase_cross_correlation

from changedetect.synthetic import Site, main, make_site

SIZE = 256


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Site:
    return make_site(tmp_path_factory.mktemp("site_a"), seed=11, size=SIZE)


@pytest.fixture(scope="module")
def mis(site):
    return json.loads(site.misregistration_path.read_text())


def _load_truth(path) -> gpd.GeoDataFrame:
    """Read truth.geojson keeping date properties as ISO strings (gpd.read_file parses them)."""
    doc = json.loads(path.read_text())
    assert doc["crs"]["properties"]["name"].endswith("32637")
    gdf = gpd.GeoDataFrame.from_features(doc["features"], crs="EPSG:32637")
    for col in ("first_present", "construction", "last_absent", "demolished", "parent_id"):
        gdf[col] = pd.Series([f["properties"][col] for f in doc["features"]], dtype=object, index=gdf.index)
    return gdf


@pytest.fixture(scope="module")
def truth(site):
    return _load_truth(site.truth_path)


def _read(path):
    with rasterio.open(path) as src:
        return src.read()


def _to_ref_grid(scene: np.ndarray, A, n: int) -> np.ndarray:
    """Resample a (rows, cols) scene array onto the n x n reference grid via ref_to_scene."""
    A = np.asarray(A, float)
    rr, cc = np.mgrid[0:n, 0:n] + 0.5
    pc = A[0, 0] * cc + A[0, 1] * rr + A[0, 2]
    pr = A[1, 0] * cc + A[1, 1] * rr + A[1, 2]
    return ndimage.map_coordinates(scene, [pr - 0.5, pc - 0.5], order=1, mode="nearest")


def _norm(a: np.ndarray) -> np.ndarray:
    g = a[:3].astype(np.float64).mean(axis=0)
    return (g - g.mean()) / g.std()


def _residual(ref, scene, A) -> np.ndarray:
    n = ref.shape[-1]
    res = _to_ref_grid(_norm(scene), A, n)
    c = slice(n // 8, n - n // 8)
    shift, _, _ = phase_cross_correlation(_norm(ref)[c, c], res[c, c], upsample_factor=20)
    return shift


# ---------------------------------------------------------------- determinism
def test_same_seed_identical_and_other_seed_differs(site, tmp_path):
    again = make_site(tmp_path / "b", seed=11, size=SIZE)
    assert [p.name for p in again.images] == [p.name for p in site.images]
    for a, b in zip(site.images, again.images):
        np.testing.assert_array_equal(_read(a), _read(b))
    assert again.truth_path.read_text() == site.truth_path.read_text()
    assert again.misregistration_path.read_text() == site.misregistration_path.read_text()
    other = make_site(tmp_path / "c", seed=12, size=SIZE)
    assert other.dates != site.dates or not np.array_equal(_read(other.images[0]), _read(site.images[0]))
    assert not np.array_equal(_read(other.reference), _read(site.reference)) or other.dates != site.dates


# ---------------------------------------------------------------- files
def test_files_and_metadata(site, mis):
    assert isinstance(site, Site)
    assert len(site.images) == len(site.dates) == 8
    assert list(site.dates) == sorted(site.dates)
    assert site.reference == site.images[0]
    assert site.crs == "EPSG:32637"
    assert sorted(p.name for p in site.out_dir.glob("site_*.tif")) == [p.name for p in site.images]
    assert "python -m changedetect.synthetic" in (site.out_dir / "README.md").read_text()
    gsds = {}
    for path, date in zip(site.images, site.dates):
        m = re.fullmatch(r"site_(\d{4}-\d{2}-\d{2})\.tif", path.name)
        assert m and dt.date.fromisoformat(m.group(1)) == date
        with rasterio.open(path) as src:
            assert src.tags()["TIFFTAG_DATETIME"] == date.strftime("%Y:%m:%d") + " 10:30:00"
            assert src.crs.to_epsg() == 32637
            assert src.count == 4 and set(src.dtypes) == {"uint16"}
            assert src.nodata == 0
            assert src.descriptions == ("blue", "green", "red", "nir")
            assert src.compression.name.lower() == "deflate"
            assert src.transform.b == 0 and src.transform.d == 0 and src.transform.e < 0
            gsds[path.name] = src.res
            data = src.read()
        valid = (data > 0).all(axis=0)
        assert np.array_equal(valid, (data > 0).any(axis=0)), "nodata must be 0 in all bands together"
        assert 150 < np.median(data[:, valid]) < 3500
        assert abs(mis["scenes"][path.name]["gsd_m"] - src.res[0]) < 1e-9
    other = [n for n, r in gsds.items() if abs(r[0] - 0.6) < 1e-9]
    assert len(other) == 1 and other[0] != site.reference.name
    assert all(abs(r[0] - 0.5) < 1e-9 for n, r in gsds.items() if n not in other)
    with rasterio.open(site.out_dir / other[0]) as src, rasterio.open(site.reference) as ref:
        assert src.width == round(SIZE * 0.5 / 0.6)
        assert (src.bounds.left, src.bounds.top) != (ref.bounds.left, ref.bounds.top)
    with rasterio.open(site.reference) as ref:
        assert 255000 < ref.bounds.left < 270000 and 3720000 < ref.bounds.top < 3740000
    gaps = np.diff([d.toordinal() for d in site.dates])
    assert gaps.min() >= 85 and gaps.max() <= 345


# ---------------------------------------------------------------- truth
def test_truth(site, truth):
    assert truth.crs.to_epsg() == 32637
    kinds = truth["kind"].value_counts().to_dict()
    assert kinds.get("new", 0) >= 3 and kinds["demolished"] == 1 and kinds["modified"] == 1
    assert set(kinds) <= {"existing", "new", "demolished", "modified"}
    assert truth["building_id"].is_unique
    assert (truth.geom_type == "Polygon").all() and truth.is_valid.all()
    assert truth["height_m"].between(3, 12).all()
    dates = [d.isoformat() for d in site.dates]
    idx = {d: i for i, d in enumerate(dates)}
    n = len(dates)
    ref_bounds = rasterio.open(site.reference).bounds
    from shapely.geometry import box

    extent = box(*ref_bounds)
    for _, r in truth.iterrows():
        assert extent.contains(r.geometry)
        for col in ("first_present", "construction", "last_absent", "demolished"):
            assert r[col] is None or r[col] in idx, (col, r[col])
        if r.kind == "existing":
            assert r.first_present is None and r.demolished is None and r.parent_id is None
        if r.kind in ("new", "modified"):
            fp = idx[r.first_present]
            assert 1 <= fp <= n - 3, "nothing new on the first or the last two dates"
            assert idx[r.last_absent] < fp
            if r.construction is not None:
                assert idx[r.last_absent] < idx[r.construction] < fp
                assert idx[r.last_absent] == idx[r.construction] - 1
            else:
                assert idx[r.last_absent] == fp - 1
        if r.kind == "new":
            side = np.sqrt(r.geometry.area)
            assert 11.9 <= side <= 40.1
        if r.kind == "demolished":
            d = idx[r.demolished]
            assert 2 <= d <= n - 3 and idx[r.last_absent] == d - 1 and r.first_present is None
        if r.kind == "modified":
            parent = truth[truth.building_id == r.parent_id]
            assert len(parent) == 1 and parent.iloc[0].kind == "existing"
            assert 2 <= idx[r.first_present] <= n - 3
            assert r.geometry.distance(parent.iloc[0].geometry) < 1e-6
            assert r.geometry.intersection(parent.iloc[0].geometry).area < 1e-6
            minx, miny, maxx, maxy = r.geometry.bounds
            assert min(maxx - minx, maxy - miny) >= 10 - 1e-6
    assert truth["construction"].notna().sum() >= 2
    # footprints keep >= 6 m gaps (except an annex against its parent)
    new = truth[truth.kind == "new"]
    for i, a in new.iterrows():
        for j, b in truth.iterrows():
            if i != j:
                assert a.geometry.distance(b.geometry) >= 6 - 1e-6


def test_new_building_appears_in_pixels(site, truth, mis):
    """A new roof changes the pixels between last_absent and first_present."""
    names = [p.name for p in site.images]
    dates = [d.isoformat() for d in site.dates]
    ref = rasterio.open(site.reference)
    for _, r in truth[truth.kind == "new"].iterrows():
        c = r.geometry.centroid
        col, row = _ground_to_ref(ref.transform, c.x, c.y)
        vals = []
        for key in (r.last_absent, r.first_present):
            name = names[dates.index(key)]
            s = mis["scenes"][name]
            A = np.asarray(s["ref_to_scene"])
            pc, pr = A @ np.array([col, row, 1.0])
            vals.append(_read(site.out_dir / name)[:, int(pr), int(pc)].astype(float))
        assert np.abs(vals[1] - vals[0]).max() > 80, (r.building_id, vals)


# ---------------------------------------------------------------- misregistration
def test_reference_is_identity(site, mis):
    assert mis["reference"] == site.reference.name
    assert set(mis["scenes"]) == {p.name for p in site.images}
    s = mis["scenes"][site.reference.name]
    np.testing.assert_allclose(s["ref_to_scene"], [[1, 0, 0], [0, 1, 0]], atol=1e-12)
    assert s["shift_px"] == [0.0, 0.0] and s["rotation_deg"] == 0.0
    for name, s in mis["scenes"].items():
        if name != site.reference.name:
            assert max(abs(v) for v in s["shift_px"]) <= 6 and abs(s["rotation_deg"]) <= 0.3
        assert s["date"] in name
    assert sum(s["cloudy"] for s in mis["scenes"].values()) == 1
    assert sum(s["nodata_wedge"] for s in mis["scenes"].values()) == 1


def test_ref_to_scene_matches_rendered_content(site, mis):
    """Resampling each scene through ref_to_scene re-aligns it with the reference to < 0.3 px,
    while ignoring the misregistration leaves the recorded shift."""
    ref = _read(site.reference)
    checked = 0
    for name, s in mis["scenes"].items():
        if name == site.reference.name or s["cloudy"] or s["nodata_wedge"]:
            continue
        scene = _read(site.out_dir / name)
        resid = _residual(ref, scene, s["ref_to_scene"])
        assert np.all(np.abs(resid) < 0.3), (name, resid)
        checked += 1
        if s["gsd_m"] == 0.5 and np.hypot(*s["shift_px"]) > 3.0:
            # sensitivity: ignoring the recorded mapping leaves a clear misalignment
            naive = _residual(ref, scene, [[1, 0, 0], [0, 1, 0]])
            assert np.hypot(*naive) > 1.5, (name, naive, s["shift_px"])
    assert checked >= 3


def _ground_to_ref(T, x, y):
    return (np.asarray(x) - T.c) / T.a, (np.asarray(y) - T.f) / T.e


def test_sharp_feature_lands_where_ref_to_scene_says(site, truth, mis):
    """Roof edges are found in each scene where ref_to_scene maps their true ground position.

    For every scene, the roofs standing on that date are profiled across their four edges
    (sampled through ref_to_scene); the 50 % crossing locates each edge. The half-difference of
    opposite edges is the residual displacement (free of the symmetric bias of blur). The roof
    with the best edge contrast is used.
    """
    T = rasterio.open(site.reference).transform
    dates = [d.isoformat() for d in site.dates]
    parents = set(truth["parent_id"].dropna())
    t = np.arange(-4, 4.0001, 0.05)
    errors = []
    for k, (name, s) in enumerate(mis["scenes"].items()):
        assert s["date"] == dates[k]
        if s["cloudy"] or s["nodata_wedge"]:
            continue
        scene = _read(site.out_dir / name).astype(float).mean(axis=0)
        A = np.asarray(s["ref_to_scene"])
        axis_err = []  # |residual| along x or y from pairs of opposite, high-contrast edges
        for _, b in truth.iterrows():
            standing = (
                (b.kind == "existing" and b.building_id not in parents)
                or (b.kind == "new" and dates.index(b.first_present) <= k)
                or (b.kind == "demolished" and dates.index(b.demolished) > k)
            )
            if not standing or len(b.geometry.exterior.coords) != 5:
                continue
            x0, y0, x1, y1 = b.geometry.bounds
            c0, r0 = _ground_to_ref(T, x0, y1)
            c1, r1 = _ground_to_ref(T, x1, y0)
            rm, cm = (r0 + r1) / 2, (c0 + c1) / 2
            edges = {"W": ((c0, rm), (-1, 0)), "E": ((c1, rm), (1, 0)),
                     "N": ((cm, r0), (0, -1)), "S": ((cm, r1), (0, 1))}
            cross = {}
            for key, ((qc, qr), (nc, nr)) in edges.items():
                cc, rr = qc + t * nc, qr + t * nr
                pc = A[0, 0] * cc + A[0, 1] * rr + A[0, 2]
                pr = A[1, 0] * cc + A[1, 1] * rr + A[1, 2]
                prof = ndimage.map_coordinates(scene, [pr - 0.5, pc - 0.5], order=1)
                inside, outside = np.median(prof[t < -2.5]), np.median(prof[t > 2.5])
                if abs(inside - outside) < 150:
                    continue
                sign, mid = np.sign(inside - outside), (inside + outside) / 2
                dev = (prof - mid) * sign / (abs(inside - outside) / 2)
                if dev[t < -1.5].min() < 0.5 or dev[t > 1.5].max() > -0.5:
                    continue  # not a clean step (shadow, pad or texture next to the edge)
                i = int(np.argmax(dev < 0))
                cross[key] = t[i - 1] + (mid - prof[i - 1]) / (prof[i] - prof[i - 1]) * 0.05
            for a, b_ in (("W", "E"), ("N", "S")):
                if a in cross and b_ in cross:
                    axis_err.append(abs(cross[b_] - cross[a]) / 2)
        if not axis_err:  # no roof with enough contrast on both sides on this date
            continue
        e = float(np.median(axis_err))
        assert e < 0.5, (name, axis_err)
        errors.append(e)
    assert len(errors) >= 4 and np.median(errors) < 0.3, errors


# ---------------------------------------------------------------- nuisances
def test_nodata_wedge_and_clouds(site, mis):
    ref = _read(site.reference)
    assert (ref > 0).all()
    for name, s in mis["scenes"].items():
        data = _read(site.out_dir / name)
        zero = (data == 0).all(axis=0)
        if s["nodata_wedge"]:
            corners = [zero[0, 0], zero[0, -1], zero[-1, 0], zero[-1, -1]]
            assert sum(corners) == 1
            assert 0.08 <= zero.mean() <= 0.22
        else:
            assert not zero.any()
    name = next(n for n, s in mis["scenes"].items() if s["cloudy"])
    assert name not in (site.images[0].name, site.images[-1].name)
    cloudy = _read(site.out_dir / name).astype(float)
    n = ref.shape[-1]
    res = np.stack([_to_ref_grid(b, mis["scenes"][name]["ref_to_scene"], n) for b in cloudy])
    bright_c = ndimage.gaussian_filter(res.mean(axis=0), 6)
    bright_r = ndimage.gaussian_filter(ref.astype(float).mean(axis=0), 6)
    region = bright_c > np.percentile(bright_c, 85)
    # cloud region: much brighter than the same ground in the reference, in all bands incl. blue
    assert bright_c[region].mean() > bright_r[region].mean() + 600
    assert res[0][region].mean() > 2000
    assert (bright_c > 2600).mean() > 0.08


# ---------------------------------------------------------------- validation / CLI
@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"size": 100}, "size"),
        ({"size": 256.0}, "integer"),
        ({"n_dates": 6}, "at least 7"),
        ({"n_new": 2}, "n_new"),
        ({"gsd": 0.0}, "gsd"),
        ({"seed": -1}, "seed"),
        ({"progress": 3}, "callable"),
        ({"n_dates": 241}, "at most 240"),
        ({"cadence": "weekly"}, "cadence"),
        ({"cadence": None}, "cadence"),
    ],
)
def test_validation(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_site(tmp_path, **kwargs)
    assert not list(tmp_path.glob("*.tif"))


def test_cli_and_progress(tmp_path, capsys):
    assert main([str(tmp_path / "cli"), "--seed", "2", "--size", "128", "--dates", "7"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 7 + 3
    assert all((tmp_path / "cli" / l.split("/")[-1]).exists() for l in lines)
    calls = []
    make_site(tmp_path / "p", seed=2, size=128, n_dates=7, progress=lambda *a: calls.append(a))
    assert [c[0] for c in calls] == list(range(1, 11)) and all(c[1] == 10 for c in calls)
    assert main([str(tmp_path / "bad"), "--size", "64"]) == 2


def test_bundled_sample_regenerates_identically(tmp_path):
    """sample_data/ is exactly what its README's command writes (same seed, same pixels, same truth)."""
    bundled = Path(__file__).resolve().parents[1] / "sample_data"
    fresh = make_site(tmp_path / "again", seed=7, size=512, n_dates=8)
    assert sorted(p.name for p in bundled.glob("site_*.tif")) == [p.name for p in fresh.images]
    for p in fresh.images:
        with rasterio.open(p) as a, rasterio.open(bundled / p.name) as b:
            assert np.array_equal(a.read(), b.read()), p.name
            assert a.transform == b.transform and a.crs == b.crs
    assert (json.loads((bundled / "truth.geojson").read_text())
            == json.loads(fresh.truth_path.read_text()))
    assert (json.loads((bundled / "misregistration.json").read_text())
            == json.loads(fresh.misregistration_path.read_text()))


def test_misregistration_range_is_configurable(tmp_path):
    site = make_site(tmp_path / "hard", seed=4, size=160, n_dates=7, max_shift=20.0, max_rotation=0.0)
    scenes = json.loads(site.misregistration_path.read_text())["scenes"]
    shifts = np.array([s["shift_px"] for s in scenes.values()])
    assert np.abs(shifts).max() <= 20.0 and np.abs(shifts).max() > 6.0
    assert all(s["rotation_deg"] == 0.0 for s in scenes.values())
    with pytest.raises(ValueError, match="max_shift"):
        make_site(tmp_path / "bad", seed=0, size=128, max_shift=-1)


# ---------------------------------------------------------------- cadence
def test_monthly_cadence(tmp_path):
    """One date per calendar month, strictly increasing, the whole site timeline on those dates."""
    n = 24
    site = make_site(tmp_path / "monthly", seed=5, size=128, n_dates=n, cadence="monthly")
    assert len(site.images) == len(site.dates) == n
    ordinals = np.array([d.toordinal() for d in site.dates])
    assert (np.diff(ordinals) > 0).all()
    months = np.array([12 * d.year + d.month for d in site.dates])
    assert (np.diff(months) == 1).all(), "exactly one acquisition per calendar month"
    days = np.array([d.day for d in site.dates])
    assert days.min() >= 1 and days.max() <= 28 and days.max() - days.min() <= 6
    assert site.dates[0].year == 2013
    # changes happen on dates of the series, between the second and the third-to-last date
    truth = gpd.read_file(site.truth_path)
    idx = {d.isoformat(): i for i, d in enumerate(site.dates)}
    fps = [idx[str(v)[:10]] for v in truth.loc[truth["kind"] == "new", "first_present"]]
    assert len(fps) >= 3 and min(fps) >= 1 and max(fps) <= n - 3
    readme = (site.out_dir / "README.md").read_text()
    assert "cadence monthly" in readme and "--cadence monthly" in readme
    mis = json.loads(site.misregistration_path.read_text())["scenes"]
    assert sum(s["cloudy"] for s in mis.values()) == 1 and sum(s["other_grid"] for s in mis.values()) == 1


def test_irregular_cadence_is_the_default_and_unchanged(tmp_path):
    """Existing seeds keep their dates (pinned before the cadence option existed) and pixels."""
    from changedetect.synthetic import make_dates

    pinned = {  # make_dates(default_rng(seed), 2013, 8) before ``cadence`` was added
        0: ["2013-11-18", "2014-06-22", "2014-11-26", "2015-05-11", "2015-08-20", "2015-12-08",
            "2016-03-13", "2016-07-25"],
        3: ["2013-10-03", "2014-02-15", "2014-07-14", "2014-11-27", "2015-09-09", "2016-07-08",
            "2017-02-26", "2017-06-07"],
    }
    for seed, want in pinned.items():
        got = [d.isoformat() for d in make_dates(np.random.default_rng(seed), 2013, 8)]
        assert got == want
        got = [d.isoformat() for d in make_dates(np.random.default_rng(seed), 2013, 8, "irregular")]
        assert got == want
    a = make_site(tmp_path / "a", seed=3, size=128, n_dates=7)
    b = make_site(tmp_path / "b", seed=3, size=128, n_dates=7, cadence="irregular")
    assert a.dates == b.dates
    for pa, pb in zip(a.images, b.images):
        assert pa.read_bytes() == pb.read_bytes()
    assert "cadence irregular" in (a.out_dir / "README.md").read_text()


def test_cli_cadence(tmp_path, capsys):
    assert main([str(tmp_path / "m"), "--seed", "1", "--size", "128", "--dates", "13",
                 "--cadence", "monthly"]) == 0
    names = [l.split("/")[-1] for l in capsys.readouterr().out.strip().splitlines()]
    dates = [dt.date.fromisoformat(n[5:15]) for n in names if n.startswith("site_")]
    assert len(dates) == 13 and (dates[-1].year - dates[0].year) * 12 + dates[-1].month - dates[0].month == 12
    with pytest.raises(SystemExit):
        main([str(tmp_path / "bad"), "--cadence", "weekly"])
