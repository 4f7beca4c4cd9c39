"""The notebooks run, top to bottom, on the bundled sample (no Jupyter needed), and are kept without outputs."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
EXPECTED_STATUS = {"existing": "unchanged", "new": "changed", "modified": "changed",
                   "demolished": "demolished"}


def run_notebook(name: str, tmp_path: Path, monkeypatch) -> dict:
    """Exec every code cell of ``notebooks/<name>`` from a tmp copy of the layout; return its namespace."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # run from a copy of the layout so results/ lands in tmp, not in the repository
    (tmp_path / "sample_data").symlink_to(ROOT / "sample_data")
    monkeypatch.chdir(tmp_path)
    path = ROOT / "notebooks" / name
    ns: dict = {"__name__": "__notebook__"}
    try:
        for i, cell in enumerate(json.loads(path.read_text())["cells"]):
            if cell["cell_type"] == "code":
                exec(compile("".join(cell["source"]), f"{name} cell {i}", "exec"), ns)
    finally:
        plt.close("all")
    return ns


def test_notebooks_found():
    assert {p.name for p in NOTEBOOKS} >= {"tutorial.ipynb", "bring_your_own.ipynb"}


def test_tutorial(tmp_path, monkeypatch):
    import geopandas as gpd

    ns = run_notebook("tutorial.ipynb", tmp_path, monkeypatch)
    out = tmp_path / "results" / "tutorial"
    # detection against the truth (the run as it found it: the notebook re-publishes every detection)
    assert ns["report"].scores.f1 >= 0.8
    # the report has a section for every change
    html = (out / "report.html").read_text()
    ids = list(ns["changes"].change_id)
    assert ids and all(cid in html for cid in ids)
    # the review round trip: the cut and the rejection changed the published set ...
    before, after = ns["before_review"], ns["after_review"]
    assert before == set(ids)
    assert after < before and ns["rejected"] not in after and ns["accepted"] in after
    # ... and the published files carried the decisions
    published = ns["published"].set_index("change_id")
    assert set(published.index) == after
    assert published.loc[ns["accepted"], "review_status"] == "accepted"
    assert published.loc[ns["accepted"], "review_note"] == "footprint and bracket checked on the imagery"
    # after the final reset every detection is published again, and the log kept every decision
    final = gpd.read_file(out / "changes.geojson")
    assert set(final.change_id) == set(ids)
    run = json.loads((out / "run.json").read_text())
    assert len(run["review"]["decisions"]) == 3
    # the GIF: one frame per acquisition
    from PIL import Image

    with Image.open(ns["gif"]) as gif:
        assert gif.n_frames == len(run["inputs"]) == 8


def test_bring_your_own(tmp_path, monkeypatch):
    import geopandas as gpd

    import changedetect as cd

    ns = run_notebook("bring_your_own.ipynb", tmp_path, monkeypatch)
    out = tmp_path / "results" / "byo"
    # the scenes without dates stopped the run with a DateError naming the file and the fix
    assert isinstance(ns["error"], cd.DateError)
    assert "pass_a.tif" in str(ns["error"]) and "manifest" in str(ns["error"])
    # the dates of run.json are the manifest's
    run = json.loads((out / "run.json").read_text())
    assert [(i["name"], i["date"], i["date_source"]) for i in run["inputs"]] == \
        [(name, day, "manifest") for name, day in sorted(ns["picked"].items())]
    # every true footprint, given under its own id column, gets the status its true kind implies
    truth = gpd.read_file(ROOT / "sample_data" / "truth.geojson").set_index("building_id")
    got = ns["result"].buildings.set_index("building_id")["status"]
    assert {b: got[b] for b in truth.index} == {b: EXPECTED_STATUS[k] for b, k in truth["kind"].items()}
    # the exports for Google Earth and QGIS, with typed dates
    assert (out / "changes.kmz").exists()
    assert set(ns["layers"]) >= {"changes", "buildings", "building_dates"}
    assert dict(ns["date_fields"]) == {"last_absent": "DATE", "first_present": "DATE"}


def test_notebooks_in_git_have_no_outputs():
    """Notebooks are committed cleared: no outputs, no execution counts (diffs stay readable)."""
    try:
        listed = subprocess.run(["git", "ls-files", "*.ipynb"], cwd=ROOT, capture_output=True, text=True,
                                check=True).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    assert listed, "no notebook tracked by git"
    for name in listed:
        text = subprocess.run(["git", "show", f":{name}"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout
        for cell in json.loads(text)["cells"]:
            if cell["cell_type"] == "code":
                assert cell.get("outputs") == [] and cell.get("execution_count") is None, \
                    f"{name} has outputs: clear them (Jupyter: Edit > Clear outputs of all cells)"
