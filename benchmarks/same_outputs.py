"""Prove that a refactoring changed no output: digests of every file of fixed runs, saved or compared.

Runs ``detect-changes`` (in a fresh process, as a user would) on the bundled
``sample_data/`` (all three vector formats, the per-pixel rasters, the
registered scenes, and a second run with the truth polygons as ``--buildings``)
and on generated sites of seeds 0-4, then takes the SHA-256 of every file
written. Only what must differ between two runs is left out of ``run.json``:
its creation time, the timings, absolute paths, and the software versions;
the GeoPackage's own ``last_change`` timestamps are zeroed before hashing.

    python benchmarks/same_outputs.py --save before.json     # on the old commit
    python benchmarks/same_outputs.py --check before.json    # on the new one: exit 1 on any difference

``run.json`` is compared key by key: keys that only the new run has (a new
parameter, a new statistic) are listed and allowed; any other difference fails.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXE = Path(sys.executable).parent / "detect-changes"
VOLATILE = ("created", "timings_s", "versions", "cpu", "changedetect")


def _strip(value, root: str):
    """run.json without what differs between two identical runs (time, paths, versions)."""
    if isinstance(value, dict):
        return {k: _strip(v, root) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [_strip(v, root) for v in value]
    if isinstance(value, str):            # where the scratch folder and the checkout are
        return value.replace(root, "<tmp>").replace(str(ROOT), "<repo>")
    return value


def _digest(path: Path, root: str):
    if path.name == "run.json":            # kept whole, so that a difference can be shown key by key
        return _strip(json.loads(path.read_text()), root)
    if path.suffix == ".gpkg":
        with tempfile.TemporaryDirectory() as tmp:
            copy = Path(tmp) / path.name
            shutil.copy(path, copy)
            con = sqlite3.connect(copy)
            con.execute("UPDATE gpkg_contents SET last_change = '1970-01-01T00:00:00.000Z'")
            con.commit()
            rows = []
            for (table,) in con.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name"):
                rows.append(table)
                rows.extend(repr(r) for r in con.execute(f'SELECT * FROM "{table}"'))
            con.close()
        return hashlib.sha256("\n".join(rows).encode()).hexdigest()
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _paths(a, b, at: str = "") -> list[str]:
    """Where two JSON values differ: ``+key`` added in ``b``, ``-key`` gone, ``~key`` changed."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(a.keys() | b.keys()):
            sub = f"{at}.{k}" if at else k
            if k not in a:
                out.append(f"+{sub}")
            elif k not in b:
                out.append(f"-{sub}")
            else:
                out.extend(_paths(a[k], b[k], sub))
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [p for i, (x, y) in enumerate(zip(a, b)) for p in _paths(x, y, f"{at}[{i}]")]
    return [] if a == b else [f"~{at}"]


def _run(name: str, images: list[Path], out: Path, extra: list[str], root: str) -> dict:
    cmd = [str(EXE), *map(str, images), "--out", str(out), "-q", *extra]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"{name}: detect-changes failed ({p.returncode}): {p.stderr.strip()}")
    files = sorted(q for q in out.rglob("*") if q.is_file())
    print(f"  {name}: {len(files)} files", file=sys.stderr)
    return {f"{name}/{q.relative_to(out)}": _digest(q, root) for q in files}


def digests(seeds=(0, 1, 2, 3, 4)) -> dict:
    sample = ROOT / "sample_data"
    out: dict = {}
    with tempfile.TemporaryDirectory(prefix="same-outputs-") as tmp:
        tmp_p = Path(tmp)
        imgs = sorted(sample.glob("site_*.tif"))
        out.update(_run("sample", imgs, tmp_p / "sample",
                        ["--format", "gpkg", "--format", "geojson", "--format", "kml",
                         "--save-registered", str(tmp_p / "registered")], tmp))
        out.update({f"registered/{q.name}": _digest(q, tmp) for q in sorted((tmp_p / "registered").iterdir())})
        out.update(_run("sample-buildings", imgs, tmp_p / "sample-b",
                        ["--buildings", str(sample / "truth.geojson")], tmp))
        for seed in seeds:
            site = tmp_p / f"site{seed}"
            subprocess.run([sys.executable, "-m", "changedetect.synthetic", str(site), "--seed", str(seed)],
                           check=True, capture_output=True)
            out.update(_run(f"seed{seed}", sorted(site.glob("site_*.tif")), tmp_p / f"out{seed}", [], tmp))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--save", metavar="JSON")
    g.add_argument("--check", metavar="JSON")
    args = ap.parse_args(argv)
    now = digests()
    if args.save:
        Path(args.save).write_text(json.dumps(now, indent=1, sort_keys=True) + "\n")
        print(f"{len(now)} file digests saved to {args.save}")
        return 0
    before = json.loads(Path(args.check).read_text())
    differ = sorted(k for k in before.keys() & now.keys() if before[k] != now[k])
    missing, new = sorted(before.keys() - now.keys()), sorted(now.keys() - before.keys())
    for label, names in (("missing", missing), ("new", new)):
        for n in names:
            print(f"{label}: {n}")
    # run.json may gain keys (a new parameter, a new statistic); nothing it held may change
    added_only = set()
    for n in differ:
        if isinstance(before[n], dict):
            paths = _paths(before[n], now[n])
            if all(p.startswith("+") for p in paths):
                added_only.add(n)
            print(f"differs: {n}: {', '.join(paths)}")
        else:
            print(f"differs: {n}")
    same = len(before.keys() & now.keys()) - len(differ)
    print(f"{same} of {len(before)} files identical; {len(differ)} differ ({len(added_only)} run.json with "
          f"added keys only), {len(missing)} missing, {len(new)} new")
    return 0 if not (set(differ) - added_only or missing or new) else 1


if __name__ == "__main__":
    sys.exit(main())
