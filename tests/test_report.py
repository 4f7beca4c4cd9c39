"""The HTML evidence report: content from a results folder, self-contained, escaped, rendered by Chromium."""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from changedetect.confidence import TERMS
from changedetect.errors import InputError
from changedetect.report import measure, write_report

EXE = Path(sys.executable).parent / "detect-changes"
HOSTILE_TAG = "<script>alert('tag')</script>"
HOSTILE_NAME = "<img src=x onerror=alert(1)>_"           # a file name cannot hold "/"
HOSTILE_ID = '"><script>alert("id")</script>'


def _chromium() -> str:
    """The Chromium executable; skipped without it, except in CI (.ci/run installs it) where it fails."""
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is not installed: .ci/run installs Debian's chromium with apt-get; "
                        "install it (apt-get install chromium) so the report is rendered in CI")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return exe


def chromium(page: Path, *args: str) -> subprocess.CompletedProcess:
    """Run headless Chromium on ``page`` with ``args``, in a fresh profile, nothing fetched."""
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        return subprocess.run(
            [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", *args, page.resolve().as_uri()],
            capture_output=True, text=True, timeout=120)


class _Elements(HTMLParser):
    """Every element's tag and attributes, and the text, of a page."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.elements.append((tag, dict(attrs)))

    handle_startendtag = handle_starttag

    def handle_data(self, data):
        self.text.append(data)


def parse(text: str) -> _Elements:
    p = _Elements()
    p.feed(text)
    return p


def check_self_contained(page: _Elements) -> None:
    """No script, no event handler, nothing loaded from anywhere but a data: URI or the page itself."""
    assert not [t for t, _ in page.elements if t in ("script", "iframe", "object", "embed", "link", "base")]
    handlers = [(t, a) for t, a in page.elements for a in a if a.lower().startswith("on")]
    assert not handlers, handlers
    for tag, attrs in page.elements:
        for key in ("src", "href", "xlink:href", "action", "data"):
            value = attrs.get(key)
            if value is not None:
                assert value.startswith(("data:image/", "#")), (tag, key, value[:80])


# --------------------------------------------------------------------------- the content


def test_measure_is_the_minimum_rotated_rectangle():
    from shapely import affinity
    from shapely.geometry import Polygon, box

    for angle in (0, 17, 45, 90, 133):
        length, width = measure(affinity.rotate(box(0, 0, 30, 12), angle, origin=(3, 4)))
        assert length == pytest.approx(30, abs=1e-6) and width == pytest.approx(12, abs=1e-6)
    # an L shape: the rectangle that holds it, not the bounding box of its vertices' extremes
    ell = Polygon([(0, 0), (20, 0), (20, 5), (5, 5), (5, 15), (0, 15)])
    assert measure(ell) == pytest.approx((20, 15))


def test_lengths_are_on_the_ground_in_a_geographic_crs():
    """A 40 x 10 m building stored in degrees is measured 40 x 10 m (in its UTM zone), not in degrees."""
    import geopandas as gpd
    from shapely.geometry import box

    from changedetect.report import _metric_crs

    g = gpd.GeoSeries([box(500000, 4000000, 500040, 4000010)], crs="EPSG:32637").to_crs("EPSG:4326")
    crs, note = _metric_crs(g.crs, list(g))
    assert crs.to_epsg() == 32637 and "degrees" in note
    assert measure(g.to_crs(crs).iloc[0]) == pytest.approx((40, 10), abs=0.01)
    assert _metric_crs("EPSG:32637", list(g)) == (None, None)       # projected: measured as it is
    web = g.to_crs("EPSG:3857")                  # Web Mercator metres are stretched: 1/cos(36 deg)
    crs, note = _metric_crs(web.crs, list(web))
    assert crs.to_epsg() == 32637 and "Mercator" in note


def test_report_of_a_run_holds_every_change_with_its_measures(site_result):
    import geopandas as gpd

    result, out = site_result
    report = write_report(out, out.parent / f"{out.name}-report.html")
    text = report.read_text(encoding="utf-8")
    page = parse(text)
    check_self_contained(page)
    ids = {a.get("id") for _, a in page.elements}
    table = gpd.read_file(out / "changes.gpkg", layer="changes")
    run = json.loads((out / "run.json").read_text())
    assert len(table) > 0
    body = " ".join(page.text)
    for _, row in table.iterrows():
        assert f"change-{row.change_id}" in ids
        length, width = measure(row.geometry)
        assert f"{length:.1f} × {width:.1f}" in body
        assert f"{row.area_m2:.0f} m²" in body
        # the factors the run recorded multiply to the confidence of the table
        terms = run["confidence_terms"][row.change_id]
        assert list(terms) == list(TERMS)
        assert math.prod(terms.values()) == pytest.approx(row.confidence, abs=0.01)
        assert f"Confidence {row.confidence:.2f}" in body
    # the evidence figures: the overview, before/after and every acquisition for each change, registration
    images = {a.get("alt"): a["src"] for t, a in page.elements if t == "img"}
    assert all(src.startswith("data:image/png;base64,") for src in images.values())
    assert "overview map of the site with every change outlined" in images
    assert "co-registration tie points and residuals" in images
    for cid in table["change_id"]:
        assert f"{cid}: before and after" in images and f"{cid} on every acquisition" in images
    assert "Figure left out" not in body
    # every input with its hash, date and the date's source; the run's warnings
    for s in run["inputs"]:
        assert s["sha256"] in body and s["date"] in body
    for w in run["warnings"]:
        assert w in body
    assert run["versions"]["numpy"] in body


def test_not_a_results_folder(tmp_path):
    with pytest.raises(InputError, match="no run.json"):
        write_report(tmp_path)
    (tmp_path / "run.json").write_text('{"changedetect": "0.1.0"}')
    with pytest.raises(InputError, match="no change table"):
        write_report(tmp_path)
    assert not (tmp_path / "report.html").exists()


# --------------------------------------------------------------------------- hostile metadata, in Chromium


@pytest.fixture(scope="module")
def hostile_run(site, tmp_path_factory):
    """``detect-changes --report`` on the site; a script in a TIFF tag, a file name and footprint ids."""
    import geopandas as gpd
    import rasterio

    root = tmp_path_factory.mktemp("hostile")
    images = []
    for i, src in enumerate(site.images):
        name = (HOSTILE_NAME if i == 1 else "") + src.name
        dst = root / name
        shutil.copy(src, dst)
        with rasterio.open(dst, "r+") as ds:
            ds.update_tags(TIFFTAG_IMAGEDESCRIPTION=HOSTILE_TAG, SENSOR=f"sat{HOSTILE_TAG}")
        images.append(dst)
    fp = gpd.read_file(site.truth_path)
    fp["building_id"] = [f"{HOSTILE_ID}{i}" for i in range(len(fp))]
    fp[["building_id", "geometry"]].to_file(root / "footprints.geojson")
    out = root / "out"
    p = subprocess.run([str(EXE), *map(str, images), "--out", str(out), "--report", "-q",
                        "--buildings", str(root / "footprints.geojson")],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    return out


def test_hostile_metadata_is_text_not_markup(hostile_run):
    import geopandas as gpd

    out = hostile_run
    report = out / "report.html"
    run = json.loads((out / "run.json").read_text())
    # run.json lists the report among the outputs with its hash (a review re-writes it when listed)
    assert run["outputs"]["report.html"] == hashlib.sha256(report.read_bytes()).hexdigest()
    text = report.read_text(encoding="utf-8")
    check_self_contained(parse(text))
    # what the browser builds: not one script element, no handler, the texts shown as written
    dom = chromium(report, "--dump-dom")
    assert dom.returncode == 0 and "</html>" in dom.stdout, dom.stderr[-2000:]
    assert dom.stdout.lower().count("<script") == 0
    page = parse(dom.stdout)
    check_self_contained(page)
    shown = "".join(page.text)
    assert HOSTILE_TAG in shown and f"sat{HOSTILE_TAG}" in shown
    assert HOSTILE_NAME in shown
    ids = set(gpd.read_file(out / "changes.gpkg", layer="changes")["building_id"].dropna())
    assert ids and all(i.startswith(HOSTILE_ID) for i in ids)
    assert all(i in shown for i in ids)
    assert "&lt;script&gt;alert('tag')&lt;/script&gt;" in dom.stdout
    # how the footprints were judged is stated, as the console says it
    from changedetect.buildings import describe_decision

    assert describe_decision(run["footprint_decision"]) in shown
    # written again from the results folder alone (as after a review), it is the same page
    again = write_report(out, out.parent / "again.html")
    assert again.read_bytes() == report.read_bytes()


def test_report_renders_and_prints(hostile_run, tmp_path):
    from PIL import Image

    report = hostile_run / "report.html"
    png, pdf = tmp_path / "report.png", tmp_path / "report.pdf"
    p = chromium(report, f"--screenshot={png}", "--window-size=1200,3000")
    assert p.returncode == 0 and png.exists(), p.stderr[-2000:]
    img = np.asarray(Image.open(png).convert("RGB")).astype(int)
    assert img.shape == (3000, 1200, 3)
    # a page with content: dark text on white, the red of new buildings, not a blank or error page
    assert (img.sum(axis=2) < 200).mean() > 0.002
    red = (img[..., 0] > 180) & (img[..., 1] < 90) & (img[..., 2] < 90)
    assert red.sum() > 200
    p = chromium(report, f"--print-to-pdf={pdf}", "--no-pdf-header-footer")
    assert p.returncode == 0 and pdf.exists(), p.stderr[-2000:]
    data = pdf.read_bytes()
    assert data.startswith(b"%PDF") and len(data) > 20_000
    assert data.count(b"/Type /Page") - data.count(b"/Type /Pages") >= 2
