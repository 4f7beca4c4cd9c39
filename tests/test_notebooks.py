"""The notebooks run, top to bottom, on the bundled sample (no Jupyter needed)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    # run from a copy of the layout so results/ lands in tmp, not in the repository
    (tmp_path / "sample_data").symlink_to(ROOT / "sample_data")
    monkeypatch.chdir(tmp_path)
    nb = json.loads(path.read_text())
    ns: dict = {"__name__": "__notebook__"}
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            exec(compile("".join(cell["source"]), f"{path.name}", "exec"), ns)
    report = ns["report"]
    assert report.scores.f1 >= 0.8
    # the footprint cells: every true footprint gets the status its true kind implies
    import geopandas as gpd

    truth = gpd.read_file(ROOT / "sample_data" / "truth.geojson").set_index("building_id")
    expected = {"existing": "unchanged", "new": "changed", "modified": "changed",
                "demolished": "demolished"}
    got = ns["fp_result"].buildings.set_index("building_id")["status"]
    assert {b: got[b] for b in truth.index} == {b: expected[k] for b, k in truth["kind"].items()}
    assert (tmp_path / "results" / "notebook" / "run.json").exists()
    assert os.path.exists(ROOT / "sample_data" / "truth.geojson")
