"""Time of a review re-cut against the full run it saves, on sample_data.

The full run (``detect_changes`` on the 8 scenes of ``sample_data/``, three
formats) is the baseline, measured in the same process; then a re-cut
(decisions on two changes and a new confidence threshold, the exports, the
review layers and run.json rewritten and swapped in) alternating between two
thresholds so every call rewrites. Medians of ``--repeat`` runs. The same two
through the console command (``detect-changes`` and ``detect-changes review``,
each a fresh process: what the analyst waits for), and once more with the KMZ
and the HTML report, which a re-cut writes again. Target: re-cut ≤ 0.1 × the
full run.

Usage::

    python benchmarks/review.py               # 3 full runs, 7 re-cuts
    python benchmarks/review.py --repeat 1 --recuts 3
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data"
EXE = Path(sys.executable).parent / "detect-changes"


def _console(images, out: Path, options: list[str], accept: str, n_cuts: int) -> tuple[float, float]:
    """A full run of the console command, then the median of ``n_cuts`` re-cuts (each a fresh process)."""
    t = time.perf_counter()
    subprocess.run([str(EXE), *images, "--out", str(out), *options, "-q"], check=True)
    full = time.perf_counter() - t
    cuts = []
    for k in range(n_cuts):
        t = time.perf_counter()
        subprocess.run([str(EXE), "review", str(out), "--accept", accept, "--min-confidence",
                        ("0.5", "0.7")[k % 2], "-q"], check=True)
        cuts.append(time.perf_counter() - t)
    return full, statistics.median(cuts)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=3, help="full runs (median)")
    p.add_argument("--recuts", type=int, default=7, help="re-cuts (median)")
    args = p.parse_args(argv)

    from changedetect.config import Config
    from changedetect.pipeline import detect_changes

    review = importlib.import_module("changedetect.review")
    images = sorted(map(str, SAMPLE.glob("site_*.tif")))
    config = Config(formats=("gpkg", "geojson", "kml"), overwrite=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "results"
        full = []
        for _ in range(args.repeat):
            t = time.perf_counter()
            result = detect_changes(images, out, config=config)
            full.append(time.perf_counter() - t)
        ids = sorted(result.changes["change_id"])
        cuts = []
        for k in range(args.recuts):
            t = time.perf_counter()
            review.review(out, accept=ids[:1], reject=ids[-1:], note="checked", reviewer="bench",
                          min_confidence=(0.5, 0.7)[k % 2])
            cuts.append(time.perf_counter() - t)
        rows.append(("library (in one process)", statistics.median(full), statistics.median(cuts)))

        n_cuts = max(3, args.recuts // 2)
        formats = ["--format", "gpkg", "--format", "geojson", "--format", "kml"]
        rows.append(("console command (fresh process)",
                     *_console(images, Path(tmp) / "cli", formats, ids[0], n_cuts)))
        # the same with every output an analyst publishes: the KMZ with its chips and the report,
        # which the re-cut writes again (its change figures come from evidence/report/)
        rows.append(("console, + kmz and --report",
                     *_console(images, Path(tmp) / "report", [*formats, "--format", "kmz", "--report"], ids[0],
                               n_cuts)))

    print(f"sample_data: {len(images)} scenes, {len(ids)} changes; formats gpkg, geojson, kml")
    print(f"{'':<34} {'full run s':>10} {'re-cut s':>9} {'ratio':>7}  target <= 0.100")
    worst = 0.0
    for name, a, b in rows:
        worst = max(worst, b / a)
        print(f"{name:<34} {a:10.2f} {b:9.3f} {b / a:7.3f}")
    return 0 if worst <= 0.1 else 1


if __name__ == "__main__":
    sys.exit(main())
