"""End-to-end accuracy and speed of detect-changes on generated sites.

For each seed: generate the site (``changedetect.synthetic``, 512 px, 8 dates),
run the pipeline, score it against the truth (``changedetect.evaluate``) and
time it. Time is printed as a ratio to a baseline measured in the same run on
the same files: reading every scene once, warped onto the reference grid
(the I/O floor any change detector pays). Peak memory is the process's
maximum resident set size.

Usage::

    python benchmarks/pipeline.py                 # seeds 7 (the bundled site) and 0-4
    python benchmarks/pipeline.py --seeds 7 11 --size 512
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path


def io_floor(images) -> float:
    """Seconds to read every scene once onto the reference grid (nominal georeferencing)."""
    from changedetect.stack import open_stack

    t = time.perf_counter()
    stack = open_stack(images)
    for i in range(len(stack)):
        stack.read(i)
    return time.perf_counter() - t


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[7, 0, 1, 2, 3, 4])
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--dates", type=int, default=8)
    args = p.parse_args(argv)

    from changedetect.evaluate import evaluate_run
    from changedetect.pipeline import detect_changes
    from changedetect.synthetic import make_site

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            site = make_site(Path(tmp) / f"site{seed}", seed=seed, size=args.size, n_dates=args.dates)
            floor = io_floor(site.images)
            t = time.perf_counter()
            result = detect_changes(site.images, Path(tmp) / f"out{seed}")
            elapsed = time.perf_counter() - t
            rep = evaluate_run(Path(tmp) / f"out{seed}", site.out_dir)
            s = rep.scores
            rows.append(dict(seed=seed, f1=s.f1, p=s.precision, r=s.recall, dating=s.dating_exact,
                             bracket=s.dating_bracket, demo=f"{s.demolitions_found}/{s.demolitions_total}",
                             modif=f"{s.modifications_found}/{s.modifications_total}",
                             fph=s.false_polygons_per_ha, reg_mean=rep.registration.get("mean"),
                             reg_max=rep.registration.get("max"), t=elapsed, ratio=elapsed / floor,
                             stages=result.run["timings_s"]))
            r = rows[-1]
            print(f"seed {seed:>3}: F1 {r['f1']:.2f} (P {r['p']:.2f} R {r['r']:.2f})  dating exact "
                  f"{r['dating'] if r['dating'] is None else format(r['dating'], '.2f')} bracket "
                  f"{r['bracket'] if r['bracket'] is None else format(r['bracket'], '.2f')}  "
                  f"demolitions {r['demo']}  annexes {r['modif']}  false/ha {r['fph']:.2f}  "
                  f"registration {r['reg_mean']:.3f}/{r['reg_max']:.3f} px (mean/max)  "
                  f"{r['t']:.1f} s = {r['ratio']:.0f}x the I/O floor", flush=True)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    f1 = [r["f1"] for r in rows]
    dating = [r["dating"] for r in rows if r["dating"] is not None]
    print(f"\nmean over {len(rows)} seeds: F1 {statistics.mean(f1):.3f} (min {min(f1):.2f}), "
          f"dating exact {statistics.mean(dating):.3f} (min {min(dating):.2f}), "
          f"registration max {max(r['reg_max'] for r in rows):.3f} px, "
          f"time {statistics.mean(r['ratio'] for r in rows):.0f}x the I/O floor, "
          f"peak RSS {rss_mb:.0f} MB")
    print("stage times of the last run (s):", rows[-1]["stages"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
