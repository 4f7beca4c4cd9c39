"""The review loop: decisions, a re-cut and the exports rewritten from the run's detections, no re-run."""

from __future__ import annotations

import datetime as _dt
import importlib
import json
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import geopandas as gpd
import pyogrio
import pyogrio.errors
import pytest

from changedetect.errors import InputError, OutputError
from changedetect.io import sha256_file

#: The module: `from changedetect import review` is the function (the package's lazy name), and
#: importing the module makes `changedetect.review` the module, as for `evaluate`.
rv = importlib.import_module("changedetect.review")
EXE = Path(sys.executable).parent / "detect-changes"
KML = "{http://www.opengis.net/kml/2.2}"


@pytest.fixture
def results(site_result, tmp_path):
    """A copy of the session's run (formats gpkg, geojson) to review."""
    _, out = site_result
    folder = tmp_path / "results"
    shutil.copytree(out, folder)
    return folder


def _snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _kml_rows(path: Path) -> dict[str, dict]:
    rows = {}
    for pm in ET.parse(path).getroot().iter(f"{KML}Placemark"):
        data = {d.get("name"): d.findtext(f"{KML}value") for d in pm.iter(f"{KML}Data")}
        rows[data["change_id"]] = data
    return rows


def _published(folder: Path) -> dict[str, dict[str, dict]]:
    """change_id -> row, per published format, as each file reads back."""
    out = {}
    for fmt in ("gpkg", "geojson"):
        path = folder / f"changes.{fmt}"
        if path.exists():
            g = gpd.read_file(path, layer="changes") if fmt == "gpkg" else gpd.read_file(path)
            out[fmt] = {r["change_id"]: r for r in g.drop(columns="geometry").to_dict("records")}
    if (folder / "changes.kml").exists():
        out["kml"] = _kml_rows(folder / "changes.kml")
    return out


def _note(value):
    """A note as read back: KML leaves a missing value out, the others write a null."""
    return None if value in (None, "", "None") or value != value else value


def test_round_trip_mark_recut_reexport(results, site_result):
    """Accept a weak change, reject a strong one, cut by confidence: every format carries the statuses
    and the cut; run.json says who and when; a looser cut brings changes back."""
    before = read = rv.read_review(results)
    assert set(read.changes["review_status"]) == {"unreviewed"} and read.changes["published"].all()
    assert read.cut == rv.Cut() and read.formats == ("gpkg", "geojson") and read.decisions == ()
    det = read.changes.sort_values("confidence")
    assert len(det) >= 4
    weak, strong = det["change_id"].iloc[0], det["change_id"].iloc[-1]
    conf = dict(zip(det["change_id"], det["confidence"]))
    threshold = float(det["confidence"].iloc[len(det) // 2])
    expected = {i for i, c in conf.items() if c >= threshold} - {strong} | {weak}
    other = {p.name: p.read_bytes() for p in results.iterdir() if p.suffix == ".tif"}
    t0 = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0)

    state = rv.review(results, accept=[weak], reject=[strong], note="roof seen on the 2016 image",
                      reviewer="ana", min_confidence=threshold, formats=("gpkg", "geojson", "kml"))
    assert set(state.published["change_id"]) == expected
    assert state.cut.min_confidence == threshold
    for fmt, rows in _published(results).items():          # what an analyst's tools read back
        assert set(rows) == expected, fmt
        assert rows[weak]["review_status"] == "accepted", fmt
        assert _note(rows[weak]["review_note"]) == "roof seen on the 2016 image", fmt
        for i in expected - {weak}:
            assert rows[i]["review_status"] == "unreviewed" and _note(rows[i].get("review_note")) is None, fmt
        assert "reviewer" not in rows[weak], fmt            # published files name no reviewer
    # the published geometry is the run's: the GeoPackage re-cut is exact
    g = gpd.read_file(results / "changes.gpkg", layer="changes").set_index("change_id")
    orig = before.changes.set_index("change_id")
    for i in expected:
        assert g.geometry[i].equals_exact(orig.geometry[i], 0)
        assert str(g.loc[i, "first_present"])[:10] == str(orig.loc[i, "first_present"])[:10]  # a DATE field
    # run.json: the decisions with who and when, the cut, the hashes of the files as they are now
    run = json.loads((results / "run.json").read_text())
    r = run["review"]
    assert [(d["change_id"], d["status"], d["reviewer"]) for d in r["decisions"]] == sorted(
        [(weak, "accepted", "ana"), (strong, "rejected", "ana")])
    for d in r["decisions"]:
        t = _dt.datetime.fromisoformat(d["time"])
        assert t.utcoffset() == _dt.timedelta(0) and t0 <= t <= _dt.datetime.now(_dt.timezone.utc)
    assert r["cut"]["min_confidence"] == threshold and r["formats"] == ["gpkg", "geojson", "kml"]
    assert r["published"]["n"] == len(expected)
    for name in ("changes.gpkg", "changes.geojson", "changes.kml", "detections.gpkg", "first_change.tif"):
        assert run["outputs"][name] == sha256_file(results / name), name
    original = json.loads((site_result[1] / "run.json").read_text())     # the rest of the record stays
    assert {k: v for k, v in run.items() if k not in ("outputs", "review")} == {
        k: v for k, v in original.items() if k != "outputs"}
    # detections.gpkg: the run's detections untouched, a review layer and the decision log
    assert {n for n, _ in pyogrio.list_layers(results / "detections.gpkg")} == {"detections", "review",
                                                                                "review_log"}
    assert rv.read_review(results).changes.drop(columns=["review_status", "review_note", "reviewer",
                                                         "reviewed_at", "published"]).equals(
        before.changes.drop(columns=["review_status", "review_note", "reviewer", "reviewed_at", "published"]))
    layer = gpd.read_file(results / "detections.gpkg", layer="review").set_index("change_id")
    assert layer.loc[strong, "review_status"] == "rejected" and not layer.loc[strong, "published"]
    assert layer.loc[weak, "reviewer"] == "ana"
    log = pyogrio.read_dataframe(results / "detections.gpkg", layer="review_log")
    assert list(log["change_id"]) == sorted([weak, strong])
    assert {p.name: p.read_bytes() for p in results.iterdir() if p.suffix == ".tif"} == other
    assert not [p for p in results.parent.iterdir() if p.name.startswith(".")]   # no staging left

    # a looser cut brings back what the stricter one left out; the rejected one stays out
    state = rv.review(results, min_confidence=0, reviewer="ben")
    assert set(state.published["change_id"]) == set(conf) - {strong}
    assert set(_published(results)["kml"]) == set(conf) - {strong}
    assert _published(results)["geojson"][weak]["review_status"] == "accepted"   # decisions persist
    # kept rejected on request, marked so; then set back to unreviewed
    state = rv.review(results, keep_rejected=True)
    assert _published(results)["gpkg"][strong]["review_status"] == "rejected"
    state = rv.review(results, reset=[strong], reviewer="ben")
    assert state.changes.set_index("change_id").loc[strong, "review_status"] == "unreviewed"
    r = json.loads((results / "run.json").read_text())["review"]
    assert [d["status"] for d in r["decisions"] if d["change_id"] == strong] == ["rejected", "unreviewed"]
    assert [c["min_confidence"] for c in r["cuts"]] == [threshold, 0, 0]    # appended, never rewritten
    assert [c["keep_rejected"] for c in r["cuts"]] == [False, False, True]


def test_kinds_and_area_cut_and_accepted_overrides_thresholds(results):
    det = rv.read_review(results).changes
    kinds = set(det["kind"])
    assert "new" in kinds
    big = float(det["area_m2"].median())
    small = det.sort_values("area_m2")["change_id"].iloc[0]
    state = rv.review(results, min_area=big, accept=[small])
    assert set(state.published["change_id"]) == set(det.loc[det["area_m2"] >= big, "change_id"]) | {small}
    state = rv.review(results, kinds=["new"])          # the kinds apply to accepted changes too
    assert set(state.published["kind"]) == {"new"}
    small_new = {small} if det.set_index("change_id").loc[small, "kind"] == "new" else set()
    big_new = set(det.loc[(det["area_m2"] >= big) & (det["kind"] == "new"), "change_id"])
    assert set(state.published["change_id"]) == big_new | small_new
    assert set(_published(results)["geojson"]) == set(state.published["change_id"])


def test_nothing_to_do_writes_nothing(results):
    before = _snapshot(results)
    state = rv.review(results)
    assert state.outputs == {} and _snapshot(results) == before


def test_exports_are_deterministic_given_the_decisions(site_result, tmp_path, monkeypatch):
    """Same decisions and cut, another reviewer and time: the published files are the same bytes."""
    _, out = site_result
    folders = []
    for n, (who, when) in enumerate((("ana", "2026-12-01T10:00:00+00:00"),
                                     ("ben", "2027-03-04T11:12:13+00:00"))):
        folder = tmp_path / f"r{n}"
        shutil.copytree(out, folder)
        monkeypatch.setattr(rv, "_utcnow", lambda when=when: when)
        ids = sorted(rv.read_review(folder).changes["change_id"])
        rv.review(folder, accept=ids[:1], unsure=ids[1:2], note="checked", reviewer=who, min_confidence=0.5,
                  formats=("gpkg", "geojson", "kml"))
        folders.append(folder)
    for name in ("changes.gpkg", "changes.geojson", "changes.kml"):
        assert (folders[0] / name).read_bytes() == (folders[1] / name).read_bytes(), name
    times = [json.loads((f / "run.json").read_text())["review"]["decisions"][0]["time"] for f in folders]
    assert times == ["2026-12-01T10:00:00+00:00", "2027-03-04T11:12:13+00:00"]


@pytest.mark.parametrize("where", ["export", "mirror"])
def test_a_failure_midway_leaves_the_folder_as_it_was(results, monkeypatch, where):
    rv.review(results, accept=[rv.read_review(results).changes["change_id"].iloc[0]], reviewer="ana")
    before = _snapshot(results)
    ids = list(rv.read_review(results).changes["change_id"])
    if where == "export":
        real = rv.export

        def export(gdf, out_dir, *, formats, **kw):       # one file written, then a full disk
            real(gdf, out_dir, formats=formats[:1], **kw)
            raise pyogrio.errors.DataSourceError("No space left on device")     # GDAL's, via pyogrio
        monkeypatch.setattr(rv, "export", export)
    else:
        def mirror(src, dst, skip):
            (dst / "first_change.tif").write_bytes(b"half")
            raise OSError(28, "No space left on device")
        monkeypatch.setattr(rv, "_mirror", mirror)
    with pytest.raises(OutputError, match="Nothing was changed"):
        rv.review(results, reject=ids[1:], min_confidence=0.9, reviewer="ana")
    assert _snapshot(results) == before
    assert not [p for p in results.parent.iterdir() if p.name.startswith(".")]


def test_bad_requests_name_the_fix_and_write_nothing(results, tmp_path):
    before = _snapshot(results)
    ids = sorted(rv.read_review(results).changes["change_id"])
    with pytest.raises(InputError, match=r"has no change chg-9999, nope\. Its \d+ changes are chg-0001"):
        rv.review(results, accept=["chg-9999", ids[0]], reject=["nope"])
    with pytest.raises(InputError, match=f"{ids[0]} is given as both accepted and rejected"):
        rv.review(results, accept=[ids[0]], reject=[ids[0]])
    with pytest.raises(InputError, match="note is the note of decisions"):
        rv.review(results, note="a note about nothing", min_confidence=0.5)
    with pytest.raises(InputError, match="between 0 and 1"):
        rv.review(results, min_confidence=1.5)
    with pytest.raises(InputError, match="at least 0 m2"):
        rv.review(results, min_area=-1)
    with pytest.raises(InputError, match="choose one or more of new, demolished, modified"):
        rv.review(results, kinds=["built"])
    with pytest.raises(InputError, match="choose one or more of gpkg, geojson, kml"):
        rv.review(results, formats=["shp"])
    assert _snapshot(results) == before
    with pytest.raises(InputError, match="is not a folder"):
        rv.review(tmp_path / "absent", accept=ids[:1])
    (tmp_path / "docs").mkdir()
    with pytest.raises(InputError, match="not a changedetect results folder: it has no run.json"):
        rv.read_review(tmp_path / "docs")
    (results / "detections.gpkg").unlink()
    with pytest.raises(InputError, match="no detections.gpkg.*earlier changedetect.*--overwrite"):
        rv.review(results, accept=ids[:1])
    (results / "detections.gpkg").write_bytes(b"not a geopackage")
    with pytest.raises(InputError, match="cannot be read as the run's detections"):
        rv.read_review(results)


def test_a_run_with_a_report_gets_it_written_again_for_the_cut(results):
    """A report that disagreed with the published files would be worse than none: the review re-writes it."""
    from changedetect.report import write_report

    write_report(results)                                # as a run with --report leaves it
    run = json.loads((results / "run.json").read_text())
    run["outputs"]["report.html"] = sha256_file(results / "report.html")
    (results / "run.json").write_text(json.dumps(run))
    ids = sorted(rv.read_review(results).changes["change_id"])
    page = (results / "report.html").read_text()
    assert all(f'id="change-{i}"' in page for i in ids)
    rv.review(results, reject=[ids[0]], reviewer="ana")
    page = (results / "report.html").read_text()
    assert f'id="change-{ids[0]}"' not in page and all(f'id="change-{i}"' in page for i in ids[1:])
    run = json.loads((results / "run.json").read_text())
    assert run["outputs"]["report.html"] == sha256_file(results / "report.html")
    # the re-write took the change figures from evidence/report/; drawn afresh they are the same
    assert {p.name for p in (results / "evidence" / "report").glob("chips-*.png")} == {
        f"chips-change-{i}.png" for i in ids}
    shutil.rmtree(results / "evidence" / "report")
    assert write_report(results).read_text() == page


def _cli(*args, cwd=None):
    return subprocess.run([str(EXE), "review", *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          timeout=300)


def test_cli_review(results, tmp_path):
    ids = sorted(rv.read_review(results).changes["change_id"])
    p = _cli(results)                                   # no action: the table
    assert p.returncode == 0, p.stderr
    assert all(i in p.stdout for i in ids) and "unreviewed" in p.stdout and "wrote" not in p.stdout
    n = len(ids)
    assert f"{n} of {n} changes published ({n} unreviewed); 0 left out; cut: none" in p.stdout
    p = _cli(results, "--accept", ids[0], "--reject", f"{ids[1]},{ids[2]}", "--note", "seen", "--reviewer",
             "ana", "--min-confidence", "0.3", "--format", "geojson", "--format", "kml", "--list")
    assert p.returncode == 0, p.stderr
    assert f"wrote {results.resolve() / 'changes.kml'}" in p.stdout and "2 rejected" in p.stdout
    assert not (results / "changes.gpkg").exists()        # formats no longer asked for are removed
    rows = _published(results)
    assert set(rows) == {"geojson", "kml"} and ids[1] not in rows["kml"]
    assert rows["kml"][ids[0]]["review_status"] == "accepted"
    run = json.loads((results / "run.json").read_text())
    assert "changes.gpkg" not in run["outputs"] and run["review"]["decisions"][0]["reviewer"] == "ana"
    before = _snapshot(results)
    for args, code, text in [((results, "--accept", "chg-9999"), 2, "has no change chg-9999"),
                             ((results, "--min-confidence", "2"), 2, "between 0 and 1"),
                             ((results, "--kinds", "new,built"), 2, "choose one or more of"),
                             ((tmp_path / "absent",), 2, "is not a folder"),
                             ((results, "--note", "alone"), 2, "note is the note of decisions"),
                             ((), 2, "RESULTS_DIR")]:
        p = _cli(*args)
        assert p.returncode == code and text in p.stderr and "Traceback" not in p.stderr, (args, p.stderr)
    # a processing error (GDAL fails to write, as on a full disk): exit 1, the folder as it was
    before = _snapshot(results)
    code = ("import sys, changedetect.review as r\n"
            "def fail(*a, **k): raise RuntimeError('No space left on device')\n"
            "r.export = fail\n"
            "from changedetect.cli import main\n"
            f"sys.exit(main(['review', {str(results)!r}, '--unsure', {ids[3]!r}]))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert p.returncode == 1 and "No space left" in p.stderr and "Traceback" not in p.stderr, p.stderr
    assert _snapshot(results) == before


def test_cli_review_from_inside_the_folder(results):
    """The folder is swapped out whole: a shell inside it is told to cd into it again."""
    p = _cli(".", "--min-confidence", "0.5", cwd=results)
    assert p.returncode == 0 and "cd into it again" in p.stderr, p.stderr
    assert json.loads((results / "run.json").read_text())["review"]["cut"]["min_confidence"] == 0.5


def test_cli_review_comes_first_even_beside_an_image_named_review(results, tmp_path):
    (tmp_path / "review").write_bytes(b"an image file named review")
    p = _cli("review", cwd=tmp_path)
    assert p.returncode == 2 and "write ./review" in p.stderr and "Traceback" not in p.stderr


def test_the_public_names():
    """``cd.review`` and ``cd.read_review`` are the functions, loaded only when first used."""
    code = ("import sys, changedetect as cd; assert 'changedetect.review' not in sys.modules; "
            "import changedetect.review as m; "
            "print(cd.read_review is m.read_review, cd.ReviewState is m.ReviewState)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["True", "True"]
    code = "import changedetect as cd, inspect; print(inspect.isfunction(cd.review), cd.review.__module__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["True", "changedetect.review"]


def test_cd_review_is_callable_in_any_import_order():
    """``import changedetect.review`` first must not turn ``cd.review`` into an uncallable module."""
    import subprocess
    import sys

    code = ("import changedetect.review, changedetect.evaluate, changedetect as cd; "
            "from changedetect.review import review; "
            "print(callable(cd.review), callable(cd.evaluate), cd.review.review is review)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["True", "True", "True"]


def test_overwrite_refuses_to_lose_a_review(results):
    """``--overwrite`` replaces an earlier run, but never an analyst's decisions."""
    from changedetect.errors import OutputExistsError
    from changedetect.output import check_out_dir

    check_out_dir(results, overwrite=True)             # a plain earlier run may be replaced
    first = sorted(rv.read_review(results).changes["change_id"])[0]
    rv.review(results, accept=[first], reviewer="ana")
    before = _snapshot(results)
    with pytest.raises(OutputExistsError, match="1 review decisions"):
        check_out_dir(results, overwrite=True)
    assert _snapshot(results) == before


def test_a_reviewed_kmz_keeps_the_chips_of_the_published_changes(results):
    """The re-cut KMZ carries each published change's before | after chips, and only theirs."""
    import zipfile

    ids = sorted(rv.read_review(results).changes["change_id"])
    rv.review(results, reject=[ids[0]], reviewer="ana", formats=["gpkg", "kmz"])
    with zipfile.ZipFile(results / "changes.kmz") as z:
        assert sorted(z.namelist()[1:]) == sorted(f"files/{i}.png" for i in ids[1:])
        assert all(z.read(f"files/{i}.png")[:8] == b"\x89PNG\r\n\x1a\n" for i in ids[1:])


def test_a_report_of_a_kmz_only_folder_reads_the_published_detections(results):
    """With KML/KMZ alone published there is no changes table to read: the report takes detections.gpkg, less the cut."""
    from changedetect.evidence import load_results
    from changedetect.report import write_report

    ids = sorted(rv.read_review(results).changes["change_id"])
    rv.review(results, reject=[ids[0]], reviewer="ana", formats=["kmz"])
    assert not (results / "changes.gpkg").exists() and not (results / "changes.geojson").exists()
    page = write_report(results).read_text()
    assert f'id="change-{ids[0]}"' not in page and all(f'id="change-{i}"' in page for i in ids[1:])
    assert sorted(load_results(results).changes["change_id"]) == ids[1:]
