"""The whole pipeline on a generated site, scored against its ground truth."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from changedetect.errors import InputError
from changedetect.evaluate import evaluate_run
from changedetect.pipeline import Config, detect_changes
from changedetect.vector import COLUMNS


def test_finds_and_dates_known_buildings(site, site_result):
    result, out = site_result
    report = evaluate_run(out, site.out_dir)
    s = report.scores
    assert s.n_truth >= 4
    assert s.recall >= 0.75, report.format()
    assert s.precision >= 0.75, report.format()
    assert s.dating_bracket >= 0.75, report.format()     # true date inside [last_absent, first_present]
    assert s.false_polygons_per_ha <= 1.0, report.format()


def test_registration_recovers_true_misregistration(site, site_result):
    _, out = site_result
    report = evaluate_run(out, site.out_dir)
    reg = report.registration
    scenes = [k for k in reg if k not in ("mean", "max")]
    assert set(scenes) == {p.name for p in site.images}
    assert reg[site.reference.name] < 1e-9
    assert reg["max"] <= 0.3, reg                 # over every non-reference scene


def test_output_schema_and_dates(site, site_result):
    result, out = site_result
    gdf = result.changes
    assert list(gdf.columns) == list(COLUMNS) + ["geometry"]
    assert gdf.crs.to_epsg() == 32637
    assert gdf["change_id"].str.fullmatch(r"chg-\d{4}").all()
    assert gdf["change_id"].is_unique
    assert set(gdf["kind"]) <= {"new", "demolished", "modified"}
    dates = {d.isoformat() for d in site.dates}
    assert set(gdf["first_present"]) <= dates and set(gdf["last_absent"]) <= dates
    assert (gdf["last_absent"] < gdf["first_present"]).all()
    assert ((gdf["confidence"] >= 0) & (gdf["confidence"] <= 1)).all()
    assert (gdf["area_m2"] >= Config().min_area_m2).all()
    np.testing.assert_allclose(gdf["area_m2"], gdf.geometry.area, rtol=1e-3)
    assert (gdf["n_observations"] >= 3).all()
    assert gdf.geometry.is_valid.all()


def test_run_record_is_evidence(site, site_result):
    result, out = site_result
    run = json.loads((out / "run.json").read_text())
    assert [i["name"] for i in run["inputs"]] == [p.name for p in site.images]
    for rec, path in zip(run["inputs"], site.images):
        assert rec["sha256"] == hashlib.sha256(Path(path).read_bytes()).hexdigest()
        assert rec["date"] in path.name
    assert run["parameters"]["min_area_m2"] == Config().min_area_m2
    assert run["versions"]["numpy"] == np.__version__
    for name in (p.name for p in site.images):
        rec = run["registration"][name]
        m = np.array(rec["ref_to_scene"])
        assert m.shape == ((2, 6) if rec["model"] == "poly2" else (2, 3))
        assert rec["n_inliers"] + rec["n_rejected"] == rec["n_tiepoints"]
    ref = run["registration"][site.reference.name]
    assert np.allclose(ref["ref_to_scene"], [[1, 0, 0], [0, 1, 0]])
    for name, digest in run["outputs"].items():
        assert hashlib.sha256((out / name).read_bytes()).hexdigest() == digest
    assert run["n_changes"] == len(result.changes)


def test_no_half_written_output_on_failure(tmp_path, site):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("analyst notes")
    with pytest.raises(InputError):
        detect_changes([site.images[0]], out)
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]


def test_config_validation_names_choices():
    with pytest.raises(InputError, match="choose one of"):
        Config(coregister="magic")
    with pytest.raises(InputError, match="formats"):
        Config(formats=("shp",))
    with pytest.raises(InputError, match="max_elongation"):
        Config(max_elongation=0.5)
    with pytest.raises(InputError, match="min_lead"):
        Config(min_lead=1)
    with pytest.raises(InputError, match="transient_fill_m2"):
        Config(transient_fill_m2=-1)


@pytest.mark.parametrize("seed", [4, 5, 6, 7, 8])
def test_blockwise_regions_match_whole_grid(tmp_path, seed):
    """Regions found block by block (with halos, cut regions re-read) equal whole-grid labelling."""
    from scipy import ndimage as ndi

    from changedetect.io import write_raster
    from changedetect.objects import clean_mask, label_objects
    from changedetect.detector import STRONG
    from changedetect.objects import candidate_regions
    from changedetect.stack import Stack

    from conftest import T0

    rng = np.random.default_rng(seed)
    first = np.full((300, 340), -1, np.int16)
    for _ in range(25):
        r, c = rng.integers(0, 290, 2)
        h, w = rng.integers(6, 60, 2)
        first[r:r + h, c:c + w] = rng.integers(1, 6)
    first[40:50, 20:330] = 3          # a long region crossing every block boundary
    first[60:290, 200:210] = 2        # and a tall one
    steps = np.stack([first.astype(np.int32), np.where(first >= 0, STRONG, 0).astype(np.int32)])
    path = write_raster(tmp_path / "steps.tif", steps, transform=T0, crs="EPSG:32637")
    stack = Stack(scenes=(), reference=0, crs="EPSG:32637", transform=T0, width=340, height=300,
                  count=1, ref_to_scene=())
    config = Config()
    found = sorted((top, left, m.sum(), m.tobytes()) for top, left, m in
                   candidate_regions(path, stack, min_area_m2=config.min_area_m2,
                                     min_width_m=config.min_width_m, block=64, halo=16))
    px = stack.pixel_size
    whole = clean_mask(first >= 1, min_pixels=int(np.ceil(config.min_area_m2 / px / px)),
                       radius=max(1, int(round(config.min_width_m / px / 2))))
    labels, n = label_objects(whole)
    expected = sorted((sl[0].start, sl[1].start, (labels[sl] == i).sum(), (labels[sl] == i).tobytes())
                      for i, sl in enumerate(ndi.find_objects(labels), start=1))
    assert n >= 5
    assert [f[:3] for f in found] == [e[:3] for e in expected]
    assert found == expected


def test_a_pair_lowers_persistence_and_says_so(tmp_path, site):
    # with two images the default persistence (2 acquisitions after a change) could never
    # be met: every change would be dropped silently
    images = [site.images[0], site.images[-1]]
    result = detect_changes(images, tmp_path / "out")
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run["parameters"]["persistence"] == 2
    assert run["effective_parameters"]["persistence"] == 1
    assert any("persistence lowered" in w for w in run["warnings"])
    assert len(result.changes) >= 1
    report = evaluate_run(tmp_path / "out", site.out_dir)
    assert report.scores.tp >= 1, report.format()
    assert run["unexamined_intervals"] == []          # persistence 1: every interval is examined


def test_intervals_that_cannot_hold_a_change_are_named(tmp_path, site, site_result):
    """Three dates, persistence 2: the last interval can never hold a reported change; say so."""
    images = site.images[:3]
    dates = [p.stem.split("_")[-1] for p in images]
    result = detect_changes(images, tmp_path / "out")
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run["effective_parameters"]["persistence"] == 2
    assert [(u["last_absent"], u["first_present"]) for u in run["unexamined_intervals"]] == [
        (dates[1], dates[2])]
    assert any(f"{dates[1]} .. {dates[2]}" in w and "--persistence" in w for w in run["warnings"])
    assert not (result.changes["first_present"].astype(str) == dates[2]).any()
    # the full 8-date run names its last interval too; persistence 3 names the last two
    full = site_result[0].run
    assert [u["first_present"] for u in full["unexamined_intervals"]] == [full["inputs"][-1]["date"]]
    deeper = detect_changes(site.images, None, config=Config(persistence=3))
    assert [u["first_present"] for u in deeper.run["unexamined_intervals"]] == [
        s["date"] for s in deeper.run["inputs"][-2:]]


def test_demolition_is_found_with_the_known_building(site, site_result):
    """The generated site's demolished building (rubble of its roof's colour) is reported as such."""
    import geopandas as gpd

    _, out = site_result
    truth = gpd.read_file(site.truth_path)
    demolished = set(truth.loc[truth["kind"] == "demolished", "building_id"])
    s = evaluate_run(out, site.out_dir).scores
    assert demolished and {b for _, b, _ in s.demolition_matches} == demolished
    gdf = site_result[0].changes
    cid = s.demolition_matches[0][0]
    row = gdf[gdf["change_id"] == cid].iloc[0]
    true_date = truth.loc[truth["kind"] == "demolished", "demolished"].iloc[0]
    assert row["last_absent"] < str(true_date)[:10] <= row["first_present"]
    assert row["confidence"] > 0.1


def test_weak_pixels_join_only_strong_ones_of_their_date():
    from changedetect.detector import STRONG, WEAK, hysteresis

    date = np.full((40, 40), -1, np.int32)
    strength = np.zeros((40, 40), np.uint8)

    def put(sl, d, s):
        date[sl], strength[sl] = d, s

    put(np.s_[5:15, 5:10], 3, STRONG)        # strong, date 3
    put(np.s_[5:15, 10:20], 3, WEAK)         # weak, same date, touching: kept
    put(np.s_[5:15, 20:25], 4, WEAK)         # weak, another date, touching: dropped
    put(np.s_[25:32, 25:32], 2, WEAK)        # weak alone inside the window: dropped
    put(np.s_[30:40, 0:4], 5, WEAK)          # weak reaching the edge: kept for now
    keep, strong = hysteresis(date, strength)
    assert keep[5:15, 5:20].all() and not keep[5:15, 20:25].any()
    assert not keep[25:32, 25:32].any() and keep[30:40, 0:4].all()
    assert strong.sum() == 50
