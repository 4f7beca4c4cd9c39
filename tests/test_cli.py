"""The real `detect-changes` console command: success, and every bad input."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from affine import Affine

from changedetect.io import write_raster

from conftest import T0, write_scene

EXE = Path(sys.executable).parent / "detect-changes"


def run(*args, cwd=None):
    return subprocess.run([str(EXE), *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          timeout=600)


def textured(n=64, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(500, 3000, (3, n, n))


def test_cli_end_to_end_is_deterministic(site, site_result, tmp_path):
    _, lib_out = site_result
    out = tmp_path / "out"
    p = run(*site.images, "--out", out, "--format", "gpkg", "--format", "geojson", "--format", "kml",
            "--format", "kmz")
    assert p.returncode == 0, p.stderr
    assert "changes over 8 acquisitions" in p.stdout
    assert {f.name for f in out.iterdir()} == {"changes.gpkg", "changes.geojson", "changes.kml",
                                               "changes.kmz", "run.json", "first_change.tif",
                                               "change_count.tif", "detections.gpkg", "evidence"}
    # same input, same output bytes, whether from the library or the command line (evidence too)
    evidence = sorted(str(p.relative_to(out)) for p in (out / "evidence").rglob("*") if p.is_file())
    assert "evidence/index.json" in evidence and len(evidence) > 4
    for name in ("changes.gpkg", "changes.geojson", "first_change.tif", "change_count.tif", "detections.gpkg",
                 *evidence):
        assert (out / name).read_bytes() == (lib_out / name).read_bytes(), name
    kml = (out / "changes.kml").read_text()
    assert kml.count("<Placemark>") == kml.count("<TimeSpan>") > 0
    # a demolished building is shown from the series' first acquisition (the CLI passes the dates)
    first = min(s["date"] for s in json.loads((out / "run.json").read_text())["inputs"])
    spans = re.findall(r"#kind-(\w+)</styleUrl>", kml), re.findall(r"<TimeSpan><begin>([0-9-]+)</begin>", kml)
    assert "demolished" in spans[0] and all(b >= first for b in spans[1]) and first in spans[1]
    with zipfile.ZipFile(out / "changes.kmz") as z:
        names = z.namelist()
        doc = z.read("doc.kml").decode()
        # the KMZ is the KML plus each change's before | after chips (from evidence/) in its balloon
        ids = re.findall(r"<Placemark><name>([^<]+)</name>", kml)
        assert names[0] == "doc.kml" and sorted(names[1:]) == sorted(f"files/{i}.png" for i in ids)
        assert re.findall(r"<Placemark><name>([^<]+)</name>", doc) == ids
        assert all(f'src=&quot;files/{i}.png&quot;' in doc for i in ids)     # in the escaped balloon
        from io import BytesIO

        from PIL import Image

        from changedetect.evidence import load_results
        from changedetect.vector import KIND_COLOURS

        res = load_results(out)
        for i in ids:
            im = np.asarray(Image.open(BytesIO(z.read(f"files/{i}.png"))).convert("RGB"))
            chip = res.chip(i).rgb
            assert im.shape[1] > 1.9 * im.shape[0] * chip.shape[2] / chip.shape[1]   # two panels
            kind = res.change(i)["kind"]
            rgb = tuple(int(KIND_COLOURS[kind][k:k + 2], 16) for k in (1, 3, 5))
            assert (im == rgb).all(axis=2).sum() > 20                                # the outline


@pytest.fixture
def good(tmp_path):
    a = write_scene(tmp_path / "a_2015-01-01.tif", textured(seed=1))
    b = write_scene(tmp_path / "b_2016-01-01.tif", textured(seed=2))
    return a, b


def check_bad(p, out: Path, *needles):
    assert p.returncode == 2, (p.returncode, p.stderr)
    assert "Traceback" not in p.stderr
    assert p.stderr.startswith("detect-changes: error:")
    for n in needles:
        assert n in p.stderr, p.stderr
    assert not out.exists() or not any(out.iterdir())


def test_missing_crs(tmp_path, good):
    bad = write_raster(tmp_path / "nocrs_2017-01-01.tif", textured().astype("uint16"),
                       transform=T0, crs=None)
    p = run(good[0], bad, "--out", tmp_path / "out")
    check_bad(p, tmp_path / "out", "nocrs_2017-01-01.tif", "no coordinate reference system", "EPSG")


def test_no_overlap(tmp_path, good):
    far = write_scene(tmp_path / "far_2017-01-01.tif", textured(),
                      transform=Affine(0.5, 0, T0.c + 50_000, 0, -0.5, T0.f))
    p = run(good[0], far, "--out", tmp_path / "out")
    check_bad(p, tmp_path / "out", "far_2017-01-01.tif", "covers 0%")


def test_unreadable_file(tmp_path, good):
    junk = tmp_path / "junk_2017-01-01.tif"
    junk.write_text("this is not a raster")
    p = run(good[0], junk, "--out", tmp_path / "out")
    check_bad(p, tmp_path / "out", "junk_2017-01-01.tif", "GDAL")


def test_missing_file(tmp_path, good):
    p = run(good[0], tmp_path / "gone_2017-01-01.tif", "--out", tmp_path / "out")
    check_bad(p, tmp_path / "out", "gone_2017-01-01.tif", "no such file")


def test_missing_date(tmp_path, good):
    nodate = write_scene(tmp_path / "scene_b.tif", textured())
    p = run(good[0], nodate, "--out", tmp_path / "out")
    check_bad(p, tmp_path / "out", "scene_b.tif", "--manifest")


def test_manifest_supplies_missing_date(tmp_path, good):
    nodate = write_scene(tmp_path / "scene_b.tif", textured())
    csv = tmp_path / "dates.csv"
    csv.write_text("path,date\nscene_b.tif,2013-05-01\n")
    p = run(good[0], nodate, "--manifest", csv, "--out", tmp_path / "out", "--coregister", "none")
    assert p.returncode == 0, p.stderr
    assert "2013-05-01 .. 2015-01-01" in p.stdout


def test_all_nodata(tmp_path, good):
    empty = write_raster(tmp_path / "empty_2017-01-01.tif", np.zeros((3, 64, 64), "uint16"),
                         transform=T0, crs="EPSG:32637", nodata=0)
    p = run(good[0], empty, "--out", tmp_path / "out")
    check_bad(p, tmp_path / "out", "empty_2017-01-01.tif", "nodata")


def test_single_image(tmp_path, good):
    p = run(good[0], "--out", tmp_path / "out")
    check_bad(p, tmp_path / "out", "a_2015-01-01.tif", "at least two")


def test_bad_option_is_usage_error(tmp_path, good):
    p = run(*good, "--coregister", "magic", "--out", tmp_path / "out")
    assert p.returncode == 2 and "invalid choice" in p.stderr and "Traceback" not in p.stderr


def test_options_reach_the_run_record_as_config_fields(tmp_path, good):
    """Options that had no flag before issue 15 set their Config field; run.json records that Config."""
    import dataclasses
    import json

    from changedetect.config import Config

    out = tmp_path / "out"
    p = run(*good, "--out", out, "--coregister", "none", "--min-rectangularity", "0.35", "--seed", "3",
            "--memory", "64", "--min-width", "1.5", "--no-pixel-products", "-q")
    assert p.returncode == 0, p.stderr
    expected = Config(coregister="none", min_rectangularity=0.35, seed=3, memory_mb=64, min_width_m=1.5,
                      pixel_products=False)
    params = json.loads((out / "run.json").read_text())["parameters"]
    assert params == json.loads(json.dumps(dataclasses.asdict(expected)))
    assert not (out / "first_change.tif").exists() and not (out / "change_count.tif").exists()


def test_unregistered_run_reports_unknown_residual(site, tmp_path):
    """With --coregister none the residual of a change is unknown (NaN), not a perfect 0."""
    import geopandas as gpd

    out = tmp_path / "out"
    p = run(*site.images, "--out", out, "--coregister", "none", "-q")
    assert p.returncode == 0, p.stderr
    g = gpd.read_file(out / "changes.gpkg")
    assert len(g) > 0 and g["registration_rmse_px"].isna().all()


def test_cli_saves_registered_scenes_with_their_hashes(site, tmp_path):
    import hashlib
    import json

    import rasterio

    out, reg_dir = tmp_path / "out", tmp_path / "registered"
    p = run(*site.images, "--out", out, "--save-registered", reg_dir, "-q")
    assert p.returncode == 0, p.stderr
    run_json = json.loads((out / "run.json").read_text())
    files = run_json["registered"]["files"]
    assert sorted(files) == sorted(f"{Path(s).stem}_registered.tif" for s in site.images)
    for name, digest in files.items():
        assert hashlib.sha256((reg_dir / name).read_bytes()).hexdigest() == digest
    # every registered scene lies on the reference grid, aligned with it
    with rasterio.open(site.reference) as r:
        ref, grid = r.read(3).astype(float), (r.transform, r.width, r.height)
    for name in files:
        with rasterio.open(reg_dir / name) as src:
            assert (src.transform, src.width, src.height) == grid
            img, ok = src.read(3).astype(float), src.read_masks(3) > 0
        gy, gx = np.gradient(ref)
        hy, hx = np.gradient(img)
        m = ok & (np.hypot(gx, gy) > np.percentile(np.hypot(gx, gy), 90))
        m[:16], m[-16:], m[:, :16], m[:, -16:] = False, False, False, False
        assert np.corrcoef(gx[m], hx[m])[0, 1] > 0.6, name
    assert not list(out.glob(".staging-*"))


def test_save_registered_inside_the_output_folder_is_kept(site, tmp_path):
    """``--save-registered OUT/registered`` survives the swap of OUT into place (it was deleted with it)."""
    import hashlib
    import json

    out = tmp_path / "out"
    p = run(*site.images[:3], "--out", out, "--save-registered", out / "registered", "--coregister", "global")
    assert p.returncode == 0, p.stderr
    files = json.loads((out / "run.json").read_text())["registered"]["files"]
    assert len(files) == 3
    for name, digest in files.items():
        assert hashlib.sha256((out / "registered" / name).read_bytes()).hexdigest() == digest
        assert f"wrote {out / 'registered' / name}" in p.stdout



def test_out_folder_with_an_earlier_run_is_refused_then_replaced_whole(site, tmp_path):
    """A second run into the same --out must not mix with the first: refused, or replaced whole."""
    out = tmp_path / "out"
    p = run(*site.images, "--out", out, "--format", "geojson", "--format", "kml", "-q")
    assert p.returncode == 0, p.stderr
    (out / "notes.txt").write_text("an earlier file")
    before = {f.name: f.read_bytes() for f in out.iterdir() if f.is_file()}
    # refused: nothing touched, the message names the folder and the way out
    p = run(*site.images, "--out", out, "--format", "geojson", "-q")
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert str(out) in p.stderr and "--overwrite" in p.stderr and "not empty" in p.stderr
    assert {f.name: f.read_bytes() for f in out.iterdir() if f.is_file()} == before
    # --overwrite: the new set only; no file of the earlier run survives (changes.kml, notes.txt)
    p = run(*site.images, "--out", out, "--format", "geojson", "--overwrite", "-q")
    assert p.returncode == 0, p.stderr
    assert {f.name for f in out.iterdir()} == {"changes.geojson", "run.json", "first_change.tif",
                                               "change_count.tif", "detections.gpkg", "evidence"}
    assert (out / "changes.geojson").read_bytes() == before["changes.geojson"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]   # no staging left behind


def test_overwrite_never_empties_a_folder_that_is_not_a_run(site, tmp_path):
    folder = tmp_path / "documents"
    folder.mkdir()
    (folder / "thesis.tex").write_text("precious")
    p = run(*site.images, "--out", folder, "--overwrite", "-q")
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert "no run.json" in p.stderr and "documents" in p.stderr
    assert [f.name for f in folder.iterdir()] == ["thesis.tex"]


def test_manifest_alone_with_the_same_name_in_two_folders(tmp_path):
    """pre/tile.tif and post/tile.tif, dates in a manifest, no IMAGE arguments: one run, two dates."""
    write_scene(tmp_path / "pre" / "tile_0_107.tif", textured(seed=1))
    write_scene(tmp_path / "post" / "tile_0_107.tif", textured(seed=2))
    csv = tmp_path / "dates.csv"
    csv.write_text("path,date\npre/tile_0_107.tif,2012-06-01\npost/tile_0_107.tif,2017-06-01\n")
    out = tmp_path / "out"
    p = run("--manifest", csv, "--out", out, "--coregister", "none", cwd=tmp_path / "pre")
    assert p.returncode == 0, p.stderr
    assert "2012-06-01" in p.stdout and "2017-06-01" in p.stdout and "manifest" in p.stdout
    import json

    inputs = json.loads((out / "run.json").read_text())["inputs"]
    assert [(Path(s["path"]).parent.name, s["date"], s["date_source"]) for s in inputs] == [
        ("pre", "2012-06-01", "manifest"), ("post", "2017-06-01", "manifest")]
    p = run("--out", tmp_path / "none")
    assert p.returncode == 2 and "--manifest" in p.stderr and "Traceback" not in p.stderr


def test_year_month_names_run_and_are_marked(tmp_path):
    """SpaceNet 7 style names (year and month only) are dated, and said to be year-month dates."""
    a = write_scene(tmp_path / "global_monthly_2018_01_mosaic_L15.tif", textured(seed=1))
    b = write_scene(tmp_path / "global_monthly_2018_02_mosaic_L15.tif", textured(seed=2))
    out = tmp_path / "out"
    p = run(a, b, "--out", out, "--coregister", "none")
    assert p.returncode == 0, p.stderr
    assert "2018-01 (year and month only)" in p.stdout
    import json

    inputs = json.loads((out / "run.json").read_text())["inputs"]
    assert [(s["date"], s["date_precision"]) for s in inputs] == [("2018-01-01", "month"),
                                                                 ("2018-02-01", "month")]


def test_rgba_mosaics_run_with_alpha_as_validity(tmp_path):
    """RGBA GeoTIFFs as Planet/SpaceNet 7/QGIS write them: exit 0, alpha never a band, roles printed."""
    import json

    import rasterio
    from rasterio.enums import ColorInterp

    paths = []
    for i, name in enumerate(("m_2018-01-15.tif", "m_2018-07-15.tif")):
        rgb = np.clip(textured(seed=i + 1)[:, :, :] / 12, 1, 250)
        alpha = np.full(rgb.shape[1:], 255)
        alpha[:, :6] = 0
        arr = np.concatenate([rgb, alpha[None]]).astype("uint8")
        p = tmp_path / name
        with rasterio.open(p, "w", driver="GTiff", width=64, height=64, count=4, dtype="uint8",
                           crs="EPSG:32637", transform=T0, photometric="RGB", alpha="YES") as dst:
            dst.write(arr)
            dst.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.alpha]
        paths.append(p)
    out = tmp_path / "out"
    p = run(*paths, "--out", out, "--coregister", "none")
    assert p.returncode == 0, p.stderr
    assert "Only 0 pseudo-invariant" not in p.stderr and "overflow" not in p.stderr
    assert "bands: red, green, blue (colour interpretation); band 4 is alpha (validity)" in p.stdout
    s = json.loads((out / "run.json").read_text())["inputs"][0]
    assert (s["bands_read"], s["band_roles"], s["alpha_band"]) == ([1, 2, 3], ["red", "green", "blue"], 4)


def test_undeclared_bands_are_guessed_and_said(tmp_path, good):
    p = run(*good, "--out", tmp_path / "out", "--coregister", "none")
    assert p.returncode == 0, p.stderr
    assert "bands: undefined, undefined, undefined (undeclared)" in p.stdout
    q = run(*good, "--out", tmp_path / "o2", "--coregister", "none", "--bands", "red,green,blue")
    assert q.returncode == 0, q.stderr
    assert "bands: red, green, blue (--bands)" in q.stdout
    r = run(*good, "--out", tmp_path / "o3", "--bands", "red,green")
    assert r.returncode == 2 and "--bands gives 2 roles" in r.stderr and "Traceback" not in r.stderr


def test_four_undeclared_bands_warn_of_the_guess(tmp_path):
    rng = np.random.default_rng(3)
    a = write_scene(tmp_path / "a_2015-01-01.tif", rng.uniform(500, 3000, (4, 64, 64)))
    b = write_scene(tmp_path / "b_2016-01-01.tif", rng.uniform(500, 3000, (4, 64, 64)))
    p = run(a, b, "--out", tmp_path / "out", "--coregister", "none")
    assert p.returncode == 0, p.stderr
    assert "read as blue, green, red, NIR" in p.stderr and "--bands" in p.stderr
    assert "bands: blue, green, red, nir (guess" in p.stdout


@pytest.fixture(scope="module")
def changed_a_lot(site, tmp_path_factory):
    """The generated site with one middle scene replaced by another site's pixels, georeferenced
    like the others: as when most of a site changed, registration finds nothing in common."""
    import shutil

    import rasterio

    from changedetect.synthetic import make_site

    other = make_site(tmp_path_factory.mktemp("other"), seed=11, size=256)
    folder = tmp_path_factory.mktemp("mixed")
    for p in site.images:
        shutil.copy(p, folder / p.name)
    victim = site.images[4].name
    with rasterio.open(other.images[4]) as src, rasterio.open(site.images[4]) as ref:
        profile, data = ref.profile, src.read()
    with rasterio.open(folder / victim, "w", **profile) as dst:
        dst.write(data)
        dst.descriptions = ("blue", "green", "red", "nir")
    return sorted(folder.glob("site_*.tif")), victim


def test_a_scene_that_cannot_be_registered_is_kept_flagged_by_default(changed_a_lot, tmp_path):
    import json

    images, victim = changed_a_lot
    out = tmp_path / "out"
    p = run(*images, "--out", out)
    assert p.returncode == 0, p.stderr
    assert victim in p.stderr and "kept on its georeferencing alone" in p.stderr
    assert "lower confidence" in p.stderr and "1 kept on its georeferencing alone" in p.stdout
    run_rec = json.loads((out / "run.json").read_text())
    reg = run_rec["registration"][victim]
    assert reg["flagged"] and reg["model"] == "none" and "uncertainty_m" in reg
    day = victim.split("_")[1][:10]
    changes = json.loads((out / "changes.geojson").read_text())["features"]
    on_it = [f["properties"] for f in changes if day in (f["properties"]["last_absent"],
                                                         f["properties"]["first_present"])]
    others = [f["properties"] for f in changes if f["properties"] not in on_it]
    assert on_it and others
    assert max(c["confidence"] for c in on_it) < min(c["confidence"] for c in others)
    # today's behaviour on request: stop, name the file, write nothing
    q = run(*images, "--out", tmp_path / "raised", "--on-registration-failure", "raise")
    assert q.returncode == 1 and victim in q.stderr and "Traceback" not in q.stderr
    assert not (tmp_path / "raised").exists()
    # or leave the scene out: no change is bracketed by it
    r = run(*images, "--out", tmp_path / "skipped", "--on-registration-failure", "skip")
    assert r.returncode == 0, r.stderr
    skipped = json.loads((tmp_path / "skipped" / "changes.geojson").read_text())["features"]
    assert not [f for f in skipped if day in (f["properties"]["last_absent"], f["properties"]["first_present"])]


def _to_png(src_path, dst_path):
    """An 8-bit RGB PNG export of a generated scene: no CRS, no geotransform (what analysts have)."""
    import rasterio

    with rasterio.open(src_path) as src:
        rgb = src.read([3, 2, 1]).astype("float64")
    arr = np.clip(rgb / 16.0, 1, 255).astype("uint8")
    with rasterio.open(dst_path, "w", driver="PNG", width=arr.shape[2], height=arr.shape[1], count=3,
                       dtype="uint8") as dst:
        dst.write(arr)
    return dst_path


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
def test_unreferenced_png_exports_run_on_a_local_grid(site, tmp_path):
    import json

    pngs = [_to_png(site.images[i], tmp_path / f"{site.images[i].stem}.png") for i in (0, 1, 2, 6, 7)]
    out = tmp_path / "out"
    p = run(*pngs, "--out", out, "--format", "geojson", "--format", "kml")
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert pngs[0].name in p.stderr and "--pixel-size" in p.stderr
    p = run(*pngs, "--out", out, "--format", "geojson", "--format", "kml", "--pixel-size", "0.5")
    assert p.returncode == 0, p.stderr
    assert "not georeferenced" in p.stderr and "NotGeoreferencedWarning" not in p.stderr
    assert "KML needs positions on Earth" in p.stderr and not (out / "changes.kml").exists()
    run_rec = json.loads((out / "run.json").read_text())
    assert run_rec["grid"]["georeferenced"] is False and "LOCAL_CS" in run_rec["grid"]["crs"]
    assert any("not georeferenced" in w for w in run_rec["warnings"])
    # co-registration aligns the exports: the true misregistration is recovered
    truth = json.loads(site.misregistration_path.read_text())["scenes"]
    for png in pngs[1:]:
        reg = run_rec["registration"][png.name]
        true = truth[png.stem + ".tif"]["shift_px"]
        assert not reg["flagged"]
        assert abs(reg["shift_px"][0] - true[0]) < 0.3 and abs(reg["shift_px"][1] - true[1]) < 0.3, (reg, true)
    # areas in metres from the pixel size; GeoJSON in local metres (y down from 0)
    changes = json.loads((out / "changes.geojson").read_text())["features"]
    assert changes and all(f["properties"]["area_m2"] > 30 for f in changes)
    xs = [x for f in changes for x, _ in f["geometry"]["coordinates"][0]]
    ys = [y for f in changes for _, y in f["geometry"]["coordinates"][0]]
    assert 0 <= min(xs) and max(xs) <= 256 * 0.5 and -256 * 0.5 <= min(ys) and max(ys) <= 0


def test_envi_files_with_a_manifest(tmp_path):
    """Landsat pairs distributed as ENVI (.img + .hdr, names without dates) run with a manifest."""
    import rasterio

    paths = []
    for i, name in enumerate(("taizhou_t1.img", "taizhou_t2.img")):
        arr = textured(seed=i + 1).astype("int16")
        with rasterio.open(tmp_path / name, "w", driver="ENVI", width=64, height=64, count=3,
                           dtype="int16", crs="EPSG:32651", transform=T0) as dst:
            dst.write(arr)
        paths.append(tmp_path / name)
    csv = tmp_path / "dates.csv"
    csv.write_text("path,date\ntaizhou_t1.img,2000-04-12\ntaizhou_t2.img,2003-06-18\n")
    p = run(*paths, "--out", tmp_path / "none", "--coregister", "none")
    assert p.returncode == 2 and "taizhou_t1.img" in p.stderr and "--manifest" in p.stderr
    p = run("--manifest", csv, "--out", tmp_path / "out", "--coregister", "none")
    assert p.returncode == 0, p.stderr
    assert "2000-04-12" in p.stdout and "2003-06-18" in p.stdout


def test_a_pair_reports_a_roof_turned_to_rubble_as_demolished(tmp_path):
    """Two GeoTIFFs, as an analyst brings them: a grey roof torn down to rubble of its own
    brightness, and a bright new roof elsewhere. The console reports both, each with its kind."""
    import geopandas as gpd
    from shapely.geometry import box

    from test_pair import rubble_scene

    before, after, roof, new = rubble_scene()
    a = write_scene(tmp_path / "site_2020-03-01.tif", before)
    b = write_scene(tmp_path / "site_2021-03-01.tif", after)
    out = tmp_path / "out"
    p = run(a, b, "--bands", "red,green,blue", "--out", out, "--format", "gpkg")
    assert p.returncode == 0, p.stderr
    changes = gpd.read_file(out / "changes.gpkg")
    assert len(changes) == 2, changes

    def truth(mask):
        rows, cols = np.nonzero(mask)
        (x0, y0), (x1, y1) = T0 * (cols.min(), rows.min()), T0 * (cols.max() + 1, rows.max() + 1)
        return box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))

    for mask, kind in ((roof, "demolished"), (new, "new")):
        t = truth(mask)
        iou = changes.geometry.intersection(t).area / changes.geometry.union(t).area
        assert changes["kind"].iloc[int(iou.idxmax())] == kind, changes
        assert iou.max() > 0.6
    run_json = json.loads((out / "run.json").read_text())
    assert run_json["detector_fit"]["roughening_threshold"] is not None
    # two images: each change is judged against the other changes of its scene, and one image
    # after a change caps its confidence at a half
    assert ((changes["confidence"] > 0) & (changes["confidence"] <= 0.5)).all()
    sig = {cid: t["significance"] for cid, t in run_json["confidence_terms"].items()}
    assert sorted(sig.values()) == [0.25, 0.75]
    step = dict(zip(changes["change_id"], changes["score"]))
    assert max(sig, key=sig.get) == max(step, key=step.get)
