"""Do results depend on the CPU? The same inputs under every NumPy dispatch path, compared.

NumPy picks its SIMD loops by CPU at import time (AVX2 ``X86_V3``, AVX-512
``X86_V4`` …) and ``NPY_DISABLE_CPU_FEATURES`` lets one machine take the
paths of older CPUs. OpenBLAS picks its kernels by CPU too, and
``OPENBLAS_CORETYPE`` lets one machine take another CPU's kernels. For each
setting below this script, in a fresh process,

1. regenerates the bundled sample site (``make_site(seed=7)``) and generated
   sites of other seeds, and compares every pixel with the first setting's;
2. runs ``detect-changes`` on ``sample_data/`` and on the generated sites and
   compares the change files: geometry, kind, dates and identifiers must be
   identical; for the numeric columns it prints the largest difference; the
   per-pixel products are compared pixel by pixel.

The first setting (none disabled, the machine's own path) is the reference.
Settings that ask for features the CPU does not have are the same as "none"
on that CPU; the script says which features each process dispatched.

Usage::

    python benchmarks/cpu_paths.py                  # sample_data + seeds 0-2 at 384 px
    python benchmarks/cpu_paths.py --seeds 0 1 2 3 4 --size 512
    python benchmarks/cpu_paths.py --real        # also real pairs from ../shared/data (LEVIR-CD, xBD)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
#: Real scene sets (from ../shared/data, never shipped) that detect-changes runs on as published.
REAL = {
    "LEVIR test_101": ["levir_cd_full/test_101_2012-06-01.tif", "levir_cd_full/test_101_2017-06-01.tif"],
    "xBD Joplin 1": ["xbd_joplin/joplin-tornado_00000001_2009-08-08.tif",
                     "xbd_joplin/joplin-tornado_00000001_2011-05-29.tif"],
}

sys.path.insert(0, str(ROOT))
from changedetect.provenance import dispatch_paths  # noqa: E402

_P = dispatch_paths()
#: (label, environment) of every setting; the first is the reference. OpenBLAS's Haswell
#: kernels are what an AVX2 machine runs (x86-64 only).
SETTINGS = [
    ("native", {}),
    ("no AVX-512", {"NPY_DISABLE_CPU_FEATURES": _P["no-avx512"]}),
    ("no AVX2, no AVX-512 (baseline)", {"NPY_DISABLE_CPU_FEATURES": _P["baseline"]}),
    ("OpenBLAS Haswell", {"OPENBLAS_CORETYPE": "Haswell"}),
    ("OpenBLAS Haswell, no AVX-512",
     {"OPENBLAS_CORETYPE": "Haswell", "NPY_DISABLE_CPU_FEATURES": _P["no-avx512"]}),
]

_GEN = """
import sys, json
from changedetect.synthetic import make_site
from changedetect.provenance import cpu_dispatch
out, seed, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
make_site(out, seed=seed, size=size, n_dates=8)
print(json.dumps(cpu_dispatch()))
"""


def run(cmd, env_extra, **kw):
    env = dict(os.environ)
    for k in ("NPY_DISABLE_CPU_FEATURES", "NPY_ENABLE_CPU_FEATURES", "OPENBLAS_CORETYPE"):
        env.pop(k, None)
    env.update(env_extra)
    return subprocess.run(cmd, env=env, capture_output=True, text=True, **kw)


def read_changes(path: Path):
    import geopandas as gpd

    return gpd.read_file(path)


def compare_changes(a: Path, b: Path) -> dict:
    """Differences between two ``changes.geojson`` files."""
    import numpy as np

    ga, gb = read_changes(a), read_changes(b)
    out = {"rows": (len(ga), len(gb)), "same_geometry": False, "same_keys": False, "max_diff": {}}
    if len(ga) != len(gb):
        return out
    out["same_geometry"] = bool(all(x.equals_exact(y, 0) for x, y in zip(ga.geometry, gb.geometry)))
    keys = [c for c in ("change_id", "kind", "last_absent", "first_present", "building_id",
                        "n_observations", "n_before", "n_after") if c in ga]
    def values(df, c):
        return [None if (v is None or (isinstance(v, float) and v != v)) else str(v) for v in df[c]]

    out["same_keys"] = all(values(ga, c) == values(gb, c) for c in keys)
    for c in ("score", "confidence", "area_m2", "registration_rmse_px"):
        if c in ga:
            out["max_diff"][c] = float(np.nanmax(np.abs(ga[c].to_numpy(float) - gb[c].to_numpy(float)))
                                       if len(ga) else 0.0)
    out["identical_bytes"] = a.read_bytes() == b.read_bytes()
    return out


def raster_diff(a: Path, b: Path) -> int:
    import numpy as np
    import rasterio

    with rasterio.open(a) as x, rasterio.open(b) as y:
        return int(np.count_nonzero(x.read() != y.read()))


def sites_diff(a: Path, b: Path) -> int:
    return sum(raster_diff(p, b / p.name) for p in sorted(a.glob("site_*.tif")))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2])
    ap.add_argument("--size", type=int, default=384)
    ap.add_argument("--work", type=Path, default=None, help="keep the runs here")
    ap.add_argument("--real", action="store_true",
                    help="also run the real pairs of ../shared/data (skipped when absent)")
    args = ap.parse_args(argv)
    real = {k: [str(SHARED / f) for f in v] for k, v in REAL.items()
            if args.real and all((SHARED / f).exists() for f in v)}

    work = args.work or Path(tempfile.mkdtemp(prefix="cpu_paths_"))
    work.mkdir(parents=True, exist_ok=True)
    exe = Path(sys.executable).with_name("detect-changes")
    sample = sorted(str(p) for p in (ROOT / "sample_data").glob("site_*.tif"))
    print(f"changedetect results under {len(SETTINGS)} CPU paths; Python {sys.version.split()[0]}; "
          f"work in {work}\n")
    dispatched = {}
    gen_rows, det_rows = [], []
    exits = {}
    for i, (label, env) in enumerate(SETTINGS):
        tag = f"s{i}"
        # 1. generator
        diffs = []
        t = time.perf_counter()
        for seed in [7] + list(args.seeds):
            size = 512 if seed == 7 else args.size
            out = work / tag / f"site{seed}"
            r = run([sys.executable, "-c", _GEN, str(out), str(seed), str(size)], env)
            if r.returncode:
                print(r.stderr)
                return 1
            dispatched[label] = json.loads(r.stdout.strip().splitlines()[-1])
            if seed == 7:
                diffs.append(("bundled", sites_diff(out, ROOT / "sample_data")))
            if i:
                diffs.append((f"seed {seed}", sites_diff(out, work / "s0" / f"site{seed}")))
        gen_rows.append((label, diffs, time.perf_counter() - t))
        # 2. detect-changes on sample_data and on the generated sites
        for name, images in [("sample_data", sample)] + [
                (f"seed {s}", sorted(str(p) for p in (work / "s0" / f"site{s}").glob("site_*.tif")))
                for s in args.seeds] + list(real.items()):
            out = work / tag / ("det_" + name.replace(" ", ""))
            r = run([str(exe), *images, "--out", str(out), "--format", "geojson", "--format", "kml",
                     "-q"], env)
            status = (r.returncode, r.stderr.strip().splitlines()[-1:] if r.returncode else [])
            exits[(tag, name)] = status
            if r.returncode and name not in real:
                print(f"{label} {name}: exit {r.returncode}\n{r.stderr}")
                return 1
            if i and (r.returncode or exits[("s0", name)][0]):   # a real set that stops: same exit?
                det_rows.append((label, name, {"exit": status, "ref_exit": exits[("s0", name)]}, None))
            elif i:
                ref = work / "s0" / out.name
                c = compare_changes(ref / "changes.geojson", out / "changes.geojson")
                px = {p: raster_diff(ref / p, out / p) for p in ("first_change.tif", "change_count.tif")}
                det_rows.append((label, name, c, px))

    print("NumPy dispatch per setting (baseline + dispatched features found on this CPU):")
    for label, d in dispatched.items():
        print(f"  {label:30s} {', '.join(d['numpy_dispatched']) or '(baseline only)'}; "
              f"OpenBLAS core {d.get('openblas_core', '?')}")
    print("\nGenerator: pixels that differ (vs the bundled sample; vs the native path, same seed)")
    for label, diffs, secs in gen_rows:
        print(f"  {label:30s} " + ", ".join(f"{k}: {v}" for k, v in diffs) + f"   ({secs:.0f} s)")
    print("\ndetect-changes vs the native path: rows, geometry, ids/kinds/dates, bytes, "
          "largest numeric difference, differing pixels of first_change / change_count")
    ok = all(v == 0 for _, diffs, _ in gen_rows for _, v in diffs)
    for label, name, c, px in det_rows:
        if px is None:
            same = c["exit"] == c["ref_exit"]
            ok &= same
            print(f"  {label:30s} {name:14s} exit {c['exit'][0]} ({' '.join(c['exit'][1])[:70]}): "
                  f"{'same' if same else 'DIFFERENT'} exit and message as native")
            continue
        same = c["same_geometry"] and c["same_keys"]
        ok &= same
        md = ", ".join(f"{k} {v:.3g}" for k, v in c["max_diff"].items())
        print(f"  {label:30s} {name:14s} rows {c['rows'][0]}/{c['rows'][1]}  geometry "
              f"{'same' if c['same_geometry'] else 'DIFFERENT'}  ids/kinds/dates "
              f"{'same' if c['same_keys'] else 'DIFFERENT'}  bytes "
              f"{'identical' if c.get('identical_bytes') else 'differ'}  max diff: {md}  "
              f"pixels {px['first_change.tif']}/{px['change_count.tif']}")
    print("\n" + ("every generator pixel and every polygon, kind and date is the same on every path"
                  if ok else "SOME OUTPUTS DEPEND ON THE CPU PATH (see above)"))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
