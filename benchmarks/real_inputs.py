"""Every scene set in ../shared/data through `detect-changes`, with defaults, as a user brings it.

For each set the script does only what a user would: point the command at the
files as published; stack the single-band OSCD Sentinel-2 files of a date into
one GeoTIFF (EPSG:4326, as delivered, every band on the 10 m grid, band
descriptions B01..B12); and, where the command asks for one, write a manifest
of dates from the data set's own notes (OSCD ``dates.txt``; LEVIR-CD and
DSIFN-CD crops carry no dates, so ``A/`` and ``B/`` get two placeholder dates).
It prints per set: the exit code, the dates and where they came from, the
registration status, the number of changes, the time and the peak memory of
the command, and the first line of any error. Accuracy is not measured here
(see ``accuracy_pairs.py``, ``spacenet7.py``); this is about inputs running.

Usage::

    python benchmarks/real_inputs.py                 # every set (about 5 minutes)
    python benchmarks/real_inputs.py --only spacenet7 xbd
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
EXE = Path(sys.executable).with_name("detect-changes")


def stack_oscd(folder: Path, out: Path) -> Path:
    """The 13 single-band files of one OSCD date as one 13-band GeoTIFF on the 10 m (B02) grid."""
    import numpy as np
    import rasterio
    from rasterio.enums import Resampling

    files = sorted(folder.glob("*_B*.tif"))
    with rasterio.open(next(f for f in files if f.stem.endswith("B02"))) as ref:
        profile = ref.profile
        shape = (ref.height, ref.width)
    bands, names = [], []
    for f in files:
        with rasterio.open(f) as src:
            bands.append(src.read(1, out_shape=shape, resampling=Resampling.bilinear))
        names.append(f.stem.rsplit("_", 1)[-1])
    profile.update(count=len(bands), driver="GTiff")
    name = files[0].stem.rsplit("_", 1)[0] + ".tif"     # the tile name as delivered, without _Bxx
    out.mkdir(parents=True, exist_ok=True)
    with rasterio.open(out / name, "w", **profile) as dst:
        dst.write(np.stack(bands))
        for i, n in enumerate(names, start=1):
            dst.set_band_description(i, n)
    return out / name


def sets(work: Path) -> list[tuple[str, list[str], callable]]:
    """(name, detect-changes arguments, fallback that writes a manifest when asked) per set."""
    out = []
    sn = DATA / "spacenet7" / "L15-0357E-1223N_1429_3296_13" / "images"
    if sn.exists():
        out.append(("spacenet7 (25 RGBA monthly mosaics, EPSG:3857)", sorted(map(str, sn.glob("*.tif"))), None))
    for tile in ("00000001", "00000002"):
        imgs = sorted(map(str, (DATA / "xbd_joplin").glob(f"joplin-tornado_{tile}_*.tif")))
        if len(imgs) == 2:
            out.append((f"xbd joplin {tile} (QuickBird 2009 -> WorldView-2 2011)", imgs, None))
    full = sorted(map(str, (DATA / "levir_cd_full").glob("test_101_20*.tif")))
    if len(full) == 2:
        out.append(("levir-cd full test_101 (RGB GeoTIFF)", full, None))
    aro = sorted(map(str, (DATA / "arosics_s2").glob("*.jp2")))
    if len(aro) == 2:
        out.append(("arosics s2 pair (1 band JPEG2000, EPSG:32633)", aro, None))
    for city in ("rennes", "paris", "bercy"):
        base = DATA / "oscd" / "images" / city
        if not base.exists():
            continue
        pair = [str(stack_oscd(base / d, work / "oscd" / city / d)) for d in ("imgs_1", "imgs_2")]

        def manifest(city=city, pair=pair, base=base):
            lines = dict(l.split(":") for l in (base / "dates.txt").read_text().split("\n") if ":" in l)
            m = work / "oscd" / city / "dates.csv"
            d1, d2 = (lines[k].strip() for k in ("date_1", "date_2"))
            m.write_text(f"path,date\nimgs_1/{Path(pair[0]).name},{d1[:4]}-{d1[4:6]}-{d1[6:]}\n"
                         f"imgs_2/{Path(pair[1]).name},{d2[:4]}-{d2[4:6]}-{d2[6:]}\n")
            return ["--manifest", str(m)]
        out.append((f"oscd {city} (13 Sentinel-2 bands stacked, EPSG:4326)", pair, manifest))
    # Google Earth crops without georeferencing or dates: the pixel size the data set states
    # (LEVIR-CD 0.5 m, DSIFN-CD 2 m) and two placeholder dates, as the command asks
    for name, folder, gsd in (("levir-cd crops", DATA / "levir_cd", 0.5), ("dsifn-cd", DATA / "dsifn_cd", 2.0)):
        if not (folder / "A").exists():
            continue
        first = sorted((folder / "A").glob("*.png"))[0]

        def manifest(folder=folder, first=first, name=name, gsd=gsd):
            m = work / f"{name}.csv"
            m.write_text(f"path,date\n{folder / 'A' / first.name},2001-01-01\n"
                         f"{folder / 'B' / first.name},2002-01-01\n")
            return ["--manifest", str(m), "--pixel-size", str(gsd)]
        out.append((f"{name} {first.stem} (8-bit PNG, no georeferencing)",
                    [str(folder / "A" / first.name), str(folder / "B" / first.name)], manifest))
    return out


def run_one(args: list[str], out: Path) -> dict:
    cmd = ["/usr/bin/time", "-f", "%M", str(EXE), *args, "--out", str(out), "-q"]
    t = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True)
    secs = time.perf_counter() - t
    lines = p.stderr.strip().splitlines()
    peak = int(lines[-1]) / 1024 if lines and lines[-1].isdigit() else float("nan")
    err = next((l for l in lines if l.startswith("detect-changes: error:")), "")
    rec = {"exit": p.returncode, "seconds": secs, "peak_mb": peak, "error": err, "traceback": "Traceback" in p.stderr}
    run_json = out / "run.json"
    if p.returncode == 0 and run_json.exists():
        run = json.loads(run_json.read_text())
        rec["dates"] = [(s["date"] if s.get("date_precision") != "month" else s["date"][:7], s["date_source"])
                        for s in run["inputs"]]
        regs = run["registration"].values()
        rec["registration"] = (f"{sum(r['model'] not in ('identity', 'none') for r in regs)} registered, "
                               f"{sum(bool(r.get('flagged')) for r in regs)} flagged")
        rec["changes"] = run["n_changes"]
        rec["grid"] = run["grid"].get("note") or run["grid"]["crs"]
        rec["bands"] = run["inputs"][0].get("band_roles")
    return rec


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", help="names (or beginnings) of the sets to run")
    args = ap.parse_args(argv)
    if not DATA.exists():
        print(f"{DATA} is absent: nothing to run.")
        return 0
    work = Path(tempfile.mkdtemp(prefix="real_inputs_"))
    ok = 0
    todo = [s for s in sets(work) if not args.only or any(s[0].startswith(o) for o in args.only)]
    print(f"detect-changes with defaults on {len(todo)} real sets from {DATA}\n")
    for i, (name, images, manifest) in enumerate(todo):
        rec = run_one(images, work / f"out{i}")
        how = "as published"
        if rec["exit"] != 0 and manifest is not None and ("--manifest" in rec["error"]
                                                          or "--pixel-size" in rec["error"]):
            first = rec
            rec = run_one(images + manifest(), work / f"out{i}m")
            how = (f"as published: exit {first['exit']} ({first['error'][23:140]}); then with what it "
                   f"asks for ({' '.join(manifest()[::2])})")
        ok += rec["exit"] == 0
        print(f"== {name}\n   {how}: exit {rec['exit']}, {rec['seconds']:.1f} s, peak {rec['peak_mb']:.0f} MB"
              + (", TRACEBACK" if rec["traceback"] else ""))
        if rec["exit"] == 0:
            dates = rec["dates"]
            shown = ", ".join(f"{d} ({s})" for d, s in (dates if len(dates) <= 3 else dates[:2] + [("…", "")] + dates[-1:]))
            print(f"   dates: {shown}\n   bands: {', '.join(rec['bands'])}; grid: {rec['grid']}\n"
                  f"   registration: {rec['registration']}; changes: {rec['changes']}")
        else:
            print(f"   {rec['error'][:300]}")
    print(f"\n{ok} of {len(todo)} sets ran to exit 0")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
