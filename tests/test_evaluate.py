"""Tests of changedetect.evaluate: polygon scores, registration error, CLI."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import geopandas as gpd
import numpy as np
import pytest
from shapely.geometry import box

from changedetect.evaluate import (
    Report,
    Scores,
    evaluate,
    evaluate_registration,
    evaluate_run,
    iou_matrix,
    main,
    match,
    registration_error,
)

CRS = "EPSG:32637"
X0, Y0 = 500_000.0, 1_000_000.0  # somewhere in UTM zone 37N


def B(x0, y0, x1, y1):
    """A box in site coordinates (metres from the site origin)."""
    return box(X0 + x0, Y0 + y0, X0 + x1, Y0 + y1)


def truth_gdf(rows):
    cols = ["building_id", "kind", "height_m", "first_present", "construction", "last_absent",
            "demolished", "parent_id"]
    data = {c: [r.get(c) for r in rows] for c in cols}
    return gpd.GeoDataFrame(data, geometry=[r["geometry"] for r in rows], crs=CRS)


def pred_gdf(rows, crs=CRS):
    cols = ["change_id", "kind", "last_absent", "first_present", "confidence"]
    data = {c: [r.get(c) for r in rows] for c in cols}
    return gpd.GeoDataFrame(data, geometry=[r["geometry"] for r in rows], crs=crs)


def new(bid, geom, first="2020-04-01", pad=None, last="2020-01-01", kind="new", parent=None):
    return dict(building_id=bid, kind=kind, height_m=6.0, first_present=first, construction=pad,
                last_absent=last, parent_id=parent, geometry=geom)


def site_truth():
    return truth_gdf([
        new("e1", B(0, 0, 10, 10), first=None, last=None, kind="existing"),
        new("n1", B(30, 0, 40, 12), first="2020-04-01", pad="2020-02-01", last="2020-01-01"),
        new("n2", B(60, 0, 70, 8), first="2020-06-01", last="2020-05-01"),
        new("m1", B(0, 10, 10, 14), first="2020-05-01", kind="modified", parent="e1"),
        dict(building_id="d1", kind="demolished", height_m=5.0, first_present=None, construction=None,
             last_absent=None, demolished="2020-03-01", parent_id=None, geometry=B(90, 0, 100, 10)),
    ])


def perfect_pred(truth):
    rows = []
    for i, t in enumerate(truth.itertuples()):
        if t.kind == "existing":
            continue
        if t.kind == "demolished":
            rows.append(dict(change_id=f"c{i}", kind="demolished", last_absent=None,
                             first_present=t.demolished, geometry=t.geometry))
        else:
            rows.append(dict(change_id=f"c{i}", kind=t.kind, last_absent=t.last_absent,
                             first_present=t.first_present, geometry=t.geometry))
    return pred_gdf(rows)


# --------------------------------------------------------------------------- evaluate


def test_perfect_prediction_scores_one():
    truth = site_truth()
    s = evaluate(perfect_pred(truth), truth, area_m2=10_000.0)
    assert isinstance(s, Scores)
    assert (s.n_pred, s.n_truth, s.tp) == (3, 3, 3)
    assert s.precision == s.recall == s.f1 == 1.0
    assert s.dating_exact == 1.0 and s.dating_bracket == 1.0
    assert (s.demolitions_found, s.demolitions_total) == (1, 1)
    assert (s.modifications_found, s.modifications_kind_correct, s.modifications_total) == (1, 1, 1)
    assert s.false_polygons == 0 and s.false_polygons_per_ha == 0.0
    assert sorted(m[1] for m in s.matches) == ["m1", "n1", "n2"]
    assert all(m[2] == pytest.approx(1.0) and m[3] for m in s.matches)
    assert s.demolition_matches[0][1] == "d1"
    json.dumps(s.as_dict())  # serialisable


def test_one_of_two_found():
    truth = truth_gdf([new("a", B(0, 0, 10, 10)), new("b", B(50, 0, 60, 10))])
    pred = pred_gdf([dict(change_id="p", kind="new", last_absent="2020-01-01",
                          first_present="2020-04-01", geometry=B(0, 0, 10, 10))])
    s = evaluate(pred, truth)
    assert s.recall == 0.5 and s.precision == 1.0
    assert s.f1 == pytest.approx(2 * 0.5 / 1.5)
    assert s.matches == (("p", "a", pytest.approx(1.0), True),)


def test_iou_threshold_by_hand():
    # 15 x 10 box shifted 10 m: intersection 5*10 = 50, union 150+150-50 = 250 -> IoU 0.2
    t = truth_gdf([new("a", B(0, 0, 15, 10))])
    p = pred_gdf([dict(change_id="p", kind="new", geometry=B(10, 0, 25, 10))])
    assert iou_matrix(p.geometry.values, t.geometry.values)[0, 0] == pytest.approx(0.2)
    s = evaluate(p, t)
    assert s.tp == 0 and s.recall == 0.0 and s.precision == 0.0 and s.f1 == 0.0
    assert s.dating_exact is None and s.dating_bracket is None
    assert s.false_polygons == 1
    # 13 x 10 box shifted 7 m: intersection 6*10 = 60, union 130+130-60 = 200 -> IoU 0.3
    t = truth_gdf([new("a", B(0, 0, 13, 10))])
    p = pred_gdf([dict(change_id="p", kind="new", geometry=B(7, 0, 20, 10))])
    s = evaluate(p, t)
    assert s.tp == 1 and s.matches[0][2] == pytest.approx(0.3)
    assert s.false_polygons == 0
    # ... and a stricter threshold rejects it
    assert evaluate(p, t, iou_threshold=0.35).tp == 0


def test_hungarian_beats_greedy():
    # t1 = [0,10], t2 = [10,20]; p1 = [0,16] (IoU t1 0.625, t2 0.3); p2 = [-8,10] (IoU t1 0.556)
    # greedy takes p1-t1 (0.625) and is stuck with one match; the optimum pairs p1-t2, p2-t1.
    truth = truth_gdf([new("t1", B(0, 0, 10, 10)), new("t2", B(10, 0, 20, 10))])
    pred = pred_gdf([dict(change_id="p1", kind="new", geometry=B(0, 0, 16, 10)),
                     dict(change_id="p2", kind="new", geometry=B(-8, 0, 10, 10))])
    iou = iou_matrix(pred.geometry.values, truth.geometry.values)
    np.testing.assert_allclose(iou, [[100 / 160, 60 / 200], [100 / 180, 0.0]])
    s = evaluate(pred, truth)
    assert s.tp == 2 and s.f1 == 1.0
    assert {(m[0], m[1]) for m in s.matches} == {("p1", "t2"), ("p2", "t1")}
    assert match(iou) == [(0, 1, pytest.approx(0.3)), (1, 0, pytest.approx(100 / 180))]


def test_prediction_in_other_crs_is_reprojected():
    truth = site_truth()
    pred = perfect_pred(truth).to_crs("EPSG:4326")
    s = evaluate(pred, truth)
    assert s.tp == 3 and s.f1 == 1.0 and s.demolitions_found == 1
    assert min(m[2] for m in s.matches) > 0.99


def test_pad_date_counts_as_exact_and_bracket():
    truth = truth_gdf([new("a", B(0, 0, 10, 10), first="2020-04-01", pad="2020-02-01"),
                       new("b", B(50, 0, 60, 10), first="2020-04-01", pad="2020-02-01"),
                       new("c", B(100, 0, 110, 10), first="2020-04-01", pad="2020-02-01")])
    pred = pred_gdf([
        # dated at the pad: exact; bracket (2020-01-01, 2020-02-01] holds the pad date
        dict(change_id="pa", kind="new", last_absent="2020-01-01", first_present="2020-02-01",
             geometry=B(0, 0, 10, 10)),
        # dated at completion with the pad scene as last absence: exact; bracket holds first_present
        dict(change_id="pb", kind="new", last_absent="2020-02-01", first_present="2020-04-01",
             geometry=B(50, 0, 60, 10)),
        # wrong date, and a bracket holding neither true date
        dict(change_id="pc", kind="new", last_absent="2020-04-01", first_present="2020-05-01",
             geometry=B(100, 0, 110, 10)),
    ])
    s = evaluate(pred, truth)
    assert s.tp == 3
    ok = {m[0]: m[3] for m in s.matches}
    assert ok == {"pa": True, "pb": True, "pc": False}
    assert s.dating_exact == pytest.approx(2 / 3)
    assert s.dating_bracket == pytest.approx(2 / 3)


def test_false_polygons_per_hectare_by_hand():
    truth = site_truth()
    pred = perfect_pred(truth)
    extra = pred_gdf([
        dict(change_id="f1", kind="new", geometry=B(0, 0, 10, 10)),        # on an existing building
        dict(change_id="f2", kind="new", geometry=B(200, 200, 210, 210)),  # empty ground
        dict(change_id="f3", kind="demolished", geometry=B(300, 0, 305, 5)),  # empty ground
        dict(change_id="dup", kind="new", geometry=B(30, 0, 40, 11)),      # duplicate of n1: not false
        dict(change_id="k", kind="demolished", geometry=B(60, 0, 70, 8)),  # wrong kind on n2: not false
    ])
    allp = gpd.GeoDataFrame(list(pred.to_dict("records")) + list(extra.to_dict("records")),
                            geometry="geometry", crs=CRS)
    s = evaluate(allp, truth, area_m2=20_000.0)  # 2 ha
    assert s.false_polygons == 3
    assert s.false_polygons_per_ha == pytest.approx(1.5)
    assert s.area_ha == pytest.approx(2.0)
    assert s.n_pred == 6 and s.tp == 3 and s.precision == pytest.approx(0.5)  # 3 + f1, f2, dup
    assert s.demolitions_found == 1  # d1 still found; "k" is no demolition of anything
    assert evaluate(allp, truth).false_polygons_per_ha is None  # area unknown


def test_modification_found_with_wrong_kind():
    truth = site_truth()
    pred = perfect_pred(truth)
    pred.loc[pred.kind == "modified", "kind"] = "new"
    pred = pred[pred.kind != "demolished"]
    s = evaluate(pred, truth)
    assert (s.modifications_found, s.modifications_kind_correct, s.modifications_total) == (1, 0, 1)
    assert (s.demolitions_found, s.demolitions_total) == (0, 1)
    assert s.tp == 3


def test_empty_prediction(tmp_path):
    truth = site_truth()
    s = evaluate(gpd.GeoDataFrame(geometry=[], crs=CRS), truth)
    assert (s.n_pred, s.tp, s.precision, s.recall, s.f1) == (0, 0, 0.0, 0.0, 0.0)
    assert s.false_polygons == 0 and s.dating_exact is None
    # nothing to find and nothing found is perfect
    only_existing = truth[truth.kind == "existing"]
    s = evaluate(gpd.GeoDataFrame(geometry=[], crs=CRS), only_existing)
    assert s.precision == s.recall == s.f1 == 1.0
    # an empty file works too
    path = tmp_path / "changes.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": []}))
    assert evaluate(path, truth).n_pred == 0


def test_paths_and_errors(tmp_path):
    truth = site_truth()
    truth.to_file(tmp_path / "truth.geojson", driver="GeoJSON")
    perfect_pred(truth).to_file(tmp_path / "changes.gpkg", layer="changes", driver="GPKG")
    s = evaluate(tmp_path / "changes.gpkg", str(tmp_path / "truth.geojson"))
    assert s.f1 == 1.0 and s.dating_exact == 1.0
    with pytest.raises(FileNotFoundError, match="nope.gpkg"):
        evaluate(tmp_path / "nope.gpkg", truth)
    with pytest.raises(ValueError, match="iou_threshold"):
        evaluate(perfect_pred(truth), truth, iou_threshold=0.0)
    with pytest.raises(ValueError, match="geographic"):
        evaluate(perfect_pred(truth), truth.to_crs("EPSG:4326"))


# --------------------------------------------------------------------------- registration

I = [[1, 0, 0], [0, 1, 0]]


def rot(theta, tx=0.0, ty=0.0):
    c, s = math.cos(theta), math.sin(theta)
    return [[c, -s, tx], [s, c, ty]]


def test_registration_error_identity_and_shift():
    assert registration_error(I, I, shape=(100, 120)) == 0.0
    assert registration_error([[1, 0, 0.5], [0, 1, 0]], I, shape=(100, 120)) == pytest.approx(0.5)
    assert registration_error(I, [[1, 0, 0], [0, 1, -0.5]], shape=(100, 120)) == pytest.approx(0.5)
    # a recovered mapping equal to a non-trivial truth has no error
    t = [[1.001, 0.002, 3.2], [-0.002, 0.999, -1.7]]
    assert registration_error(t, t, shape=(50, 50), step=7) == pytest.approx(0.0, abs=1e-12)


def test_registration_error_rotation_by_hand():
    # 2x2 grid, step 1: centres (0.5,0.5), (1.5,0.5), (0.5,1.5), (1.5,1.5), |q|^2 = .5, 2.5, 2.5, 4.5.
    # A rotation by 90 deg about the origin moves q by sqrt(2)|q|: RMSE = sqrt(2 * 2.5) = sqrt(5).
    assert registration_error(rot(math.pi / 2), I, shape=(2, 2), step=1) == pytest.approx(math.sqrt(5))
    # 64x64, step 16: coordinates 0.5, 16.5, 32.5, 48.5, mean x^2 = 920.25, mean |q|^2 = 1840.5;
    # a rotation by theta moves q by 2 sin(theta/2) |q|.
    theta = math.radians(0.5)
    expected = 2 * math.sin(theta / 2) * math.sqrt(1840.5)
    assert registration_error(rot(theta), I, shape=(64, 64)) == pytest.approx(expected)


def test_registration_error_rejects_bad_affine():
    with pytest.raises(ValueError, match="2x3"):
        registration_error([[1, 0], [0, 1]], I, shape=(10, 10))


def mis_record(scenes, reference="a.tif"):
    return {"reference": reference,
            "scenes": {k: {"ref_to_scene": v, "gsd_m": 0.5} for k, v in scenes.items()}}


def test_evaluate_registration_same_reference():
    mis = mis_record({"a.tif": I, "b.tif": [[1, 0, 1.0], [0, 1, 0]], "c.tif": [[1, 0, 0], [0, 1, 2.0]]})
    run = {"grid": {"crs": CRS, "transform": [0.5, 0, X0, 0, -0.5, Y0], "width": 64, "height": 64},
           "registration": {"a.tif": {"ref_to_scene": I},
                            "b.tif": {"ref_to_scene": [[1, 0, 1.5], [0, 1, 0]]},
                            "c.tif": {"ref_to_scene": [[1, 0, 0], [0, 1, 2.0]]},
                            "x.tif": {"ref_to_scene": I}}}  # not in the truth: ignored
    reg = evaluate_registration(run, mis)
    assert reg["b.tif"] == pytest.approx(0.5) and reg["c.tif"] == pytest.approx(0.0)
    assert reg["a.tif"] == 0.0 and "x.tif" not in reg
    assert reg["mean"] == pytest.approx(0.25) and reg["max"] == pytest.approx(0.5)


def test_evaluate_registration_other_reference_and_missing_grid(tmp_path):
    # the site's reference is a; the run chose b as its reference (identity)
    mis = mis_record({"a.tif": I, "b.tif": [[1, 0, 1.0], [0, 1, 0]], "c.tif": [[1, 0, 0], [0, 1, 2.0]]})
    run = {"grid": {"width": 32, "height": 32},
           "registration": {"b.tif": {"ref_to_scene": I},
                            "a.tif": {"ref_to_scene": [[1, 0, -1.0], [0, 1, 0]]},   # exact
                            "c.tif": {"ref_to_scene": [[1, 0, -1.0], [0, 1, 2.5]]}}}  # 0.5 off
    (tmp_path / "run.json").write_text(json.dumps(run))
    (tmp_path / "misregistration.json").write_text(json.dumps(mis))
    reg = evaluate_registration(tmp_path / "run.json", tmp_path)
    assert reg["a.tif"] == pytest.approx(0.0, abs=1e-12)
    assert reg["c.tif"] == pytest.approx(0.5)
    assert reg["mean"] == pytest.approx(0.5) and reg["max"] == pytest.approx(0.5)
    # the same with a declared reference that has no registration entry of its own
    declared = {"reference": "b.tif", "grid": run["grid"],
                "registration": {k: v for k, v in run["registration"].items() if k != "b.tif"}}
    reg = evaluate_registration(declared, mis)
    assert reg["c.tif"] == pytest.approx(0.5) and reg["mean"] == pytest.approx(0.5)
    assert "b.tif" not in reg
    del run["grid"]
    reg = evaluate_registration(run, mis)
    assert reg["c.tif"] is None and reg["mean"] is None
    assert evaluate_registration({"grid": {}}, mis) == {}


# --------------------------------------------------------------------------- run + CLI


def make_pair(tmp_path, *, geojson=False):
    out, site = tmp_path / "out", tmp_path / "site"
    out.mkdir()
    site.mkdir()
    truth = site_truth()
    truth.to_file(site / "truth.geojson", driver="GeoJSON")
    pred = perfect_pred(truth)
    pred = pred[pred.change_id != pred.change_id.iloc[0]]  # miss n1
    if geojson:
        pred.to_crs("EPSG:4326").to_file(out / "changes.geojson", driver="GeoJSON")
    else:
        pred.to_file(out / "changes.gpkg", layer="changes", driver="GPKG")
    (site / "misregistration.json").write_text(json.dumps(mis_record(
        {"a.tif": I, "b.tif": [[1, 0, 0.25], [0, 1, 0]]})))
    (out / "run.json").write_text(json.dumps({
        "grid": {"crs": CRS, "transform": [0.5, 0, X0, 0, -0.5, Y0 + 100], "width": 400, "height": 200},
        "registration": {"a.tif": {"ref_to_scene": I}, "b.tif": {"ref_to_scene": [[1, 0, 0], [0, 1, 0]]}},
    }))
    return out, site


@pytest.mark.parametrize("geojson", [False, True])
def test_evaluate_run(tmp_path, geojson):
    out, site = make_pair(tmp_path, geojson=geojson)
    rep = evaluate_run(out, site)
    assert isinstance(rep, Report)
    s = rep.scores
    assert (s.tp, s.n_pred, s.n_truth) == (2, 2, 3)
    assert s.precision == 1.0 and s.recall == pytest.approx(2 / 3)
    assert s.area_ha == pytest.approx(400 * 200 * 0.25 / 1e4)  # 2 ha
    assert s.false_polygons_per_ha == 0.0
    assert rep.registration["b.tif"] == pytest.approx(0.25)
    assert rep.registration["mean"] == pytest.approx(0.25)
    text = rep.format()
    assert "F1=0.80" in text and "2/3 matched at IoU>=0.25" in text and "0.25 px" in text
    d = json.loads(json.dumps(rep.as_dict()))
    assert d["scores"]["tp"] == 2 and d["registration"]["max"] == pytest.approx(0.25)


def test_evaluate_run_without_run_json(tmp_path):
    out, site = make_pair(tmp_path)
    (out / "run.json").unlink()
    rep = evaluate_run(out, site)
    assert rep.registration == {} and rep.scores.false_polygons_per_ha is None
    assert "registration      n/a" in rep.format()


def test_cli_prints_scores(tmp_path, capsys):
    out, site = make_pair(tmp_path)
    assert main([str(out), str(site)]) == 0
    assert "F1=0.80" in capsys.readouterr().out
    assert main([str(out), str(site), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["scores"]["f1"] == pytest.approx(0.8)


def test_cli_missing_file(tmp_path, capsys):
    out, site = make_pair(tmp_path)
    (site / "truth.geojson").unlink()
    assert main([str(out), str(site)]) == 2
    err = capsys.readouterr().err
    assert "truth.geojson" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_cli_module_exit_codes(tmp_path):
    out, site = make_pair(tmp_path)
    ok = subprocess.run([sys.executable, "-m", "changedetect.evaluate", str(out), str(site)],
                        capture_output=True, text=True)
    assert ok.returncode == 0 and "F1=" in ok.stdout and ok.stderr == ""
    (out / "changes.gpkg").unlink()
    bad = subprocess.run([sys.executable, "-m", "changedetect.evaluate", str(out), str(site)],
                         capture_output=True, text=True)
    assert bad.returncode == 2
    assert "changes.gpkg" in bad.stderr and "Traceback" not in bad.stderr
