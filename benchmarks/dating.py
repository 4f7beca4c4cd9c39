"""Dating: cost as a function of the number of dates, and dating accuracy on long series.

1. **Scaling** (``--dates 7 24 100``): the per-pixel stage's kernels, the best
   two-segment step of every pixel (``timeline.step_change``) and the change
   count (``pipeline._change_count``, which refits the steps inside each changed
   pixel's two segments), on a synthetic 4-band series of N dates over
   ``--size`` × ``--size`` pixels with a step in a tenth of the pixels. Printed
   per N: seconds, seconds per date, and the ratio to a baseline measured in the
   same run on the same bytes (``np.copyto`` of the whole series). Linear cost
   means a constant time per date (and a constant ratio to the copy), and the
   per-pixel block of the pipeline (``pipeline._pixel_block``) keeps the memory of
   a block within ``Config.memory_mb`` whatever N.
2. **Long series** (``--sites``): generated sites (``changedetect.synthetic``,
   ``--site-size`` px) with ``--site-dates`` acquisitions (default 24), run
   through ``detect_changes`` and scored with ``changedetect.evaluate``: new
   construction F1 and the share of matched changes dated exactly, per seed.

Usage::

    python benchmarks/dating.py                              # scaling 7, 24, 100 dates
    python benchmarks/dating.py --sites 0 1 2 3 4            # and five 24-date sites
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path


def scaling(n_dates: int, size: int, repeat: int) -> dict:
    """Time of the per-pixel kernels on an (n_dates, 5, size, size) float32 series."""
    import numpy as np

    from changedetect.pipeline import Config, _change_count, _pixel_block
    from changedetect.timeline import step_change

    rng = np.random.default_rng(0)
    bands = 5                                       # 4 bands + the texture channel
    img = rng.normal(0, 1, (n_dates, bands, size, size)).astype(np.float32)
    step = rng.random((size, size)) < 0.1
    k = rng.integers(1, n_dates - 2, (size, size))
    img += (np.arange(n_dates)[:, None, None, None] >= k[None, None]) * step[None, None] * 20.0
    usable = rng.random((n_dates, size, size)) > 0.05
    scale = np.ones(bands, np.float32)

    class Model:
        noise = scale
        min_fstat = 3.0

    cfg = Config()
    out = np.empty_like(img)
    t_copy = min(_timed(lambda: np.copyto(out, img)) for _ in range(repeat))

    def kernels():
        s = step_change(img, usable, scale=scale, min_after=cfg.persistence)
        changed = (s.magnitude >= cfg.min_magnitude) & (s.fstat >= Model.min_fstat)
        _change_count(img, usable, s, changed, Model, cfg)

    t = min(_timed(kernels) for _ in range(repeat))

    class _Stack:
        count = 4

        def __len__(self):
            return n_dates

    return {"dates": n_dates, "seconds": t, "per_date_ms": 1000 * t / n_dates, "copy_s": t_copy,
            "x_copy": t / t_copy, "series_mb": img.nbytes / 2**20,
            "pipeline_block": _pixel_block(_Stack(), cfg)}


def _timed(f) -> float:
    t = time.perf_counter()
    f()
    return time.perf_counter() - t


def long_series(seeds, size: int, n_dates: int) -> list[dict]:
    from changedetect.evaluate import evaluate_run
    from changedetect.pipeline import detect_changes
    from changedetect.synthetic import make_site

    rows = []
    with tempfile.TemporaryDirectory(prefix="dating-") as tmp:
        for seed in seeds:
            site = make_site(Path(tmp) / f"s{seed}", seed=seed, size=size, n_dates=n_dates)
            t = time.perf_counter()
            result = detect_changes(site.images, Path(tmp) / f"o{seed}")
            elapsed = time.perf_counter() - t
            s = evaluate_run(Path(tmp) / f"o{seed}", site.out_dir).scores
            rows.append({"seed": seed, "f1": s.f1, "dating_exact": s.dating_exact,
                         "dating_bracket": s.dating_bracket, "matched": s.tp,
                         "seconds": elapsed, "pixels_s": result.run["timings_s"].get("pixels")})
            r = rows[-1]
            print(f"  seed {seed:>3}: F1 {r['f1']:.2f}  dating exact {_f(r['dating_exact'])} "
                  f"bracket {_f(r['dating_bracket'])} ({r['matched']} matched)  "
                  f"{r['seconds']:.1f} s (per-pixel stage {r['pixels_s']:.1f} s)", flush=True)
    return rows


def _f(x) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dates", type=int, nargs="+", default=[7, 24, 100])
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--sites", type=int, nargs="*", default=[], metavar="SEED")
    p.add_argument("--site-size", type=int, default=512)
    p.add_argument("--site-dates", type=int, default=24)
    args = p.parse_args(argv)

    print(f"per-pixel kernels (step fit + change count), {args.size} x {args.size} px, 4 bands + texture, "
          f"best of {args.repeat}")
    print(f"{'dates':>6} {'seconds':>8} {'ms/date':>8} {'x copy':>7} {'series MB':>9} {'pipeline block':>15}")
    rows = []
    for n in args.dates:
        r = scaling(n, args.size, args.repeat)
        rows.append(r)
        print(f"{r['dates']:>6} {r['seconds']:>8.3f} {r['per_date_ms']:>8.2f} {r['x_copy']:>7.1f} "
              f"{r['series_mb']:>9.0f} {r['pipeline_block']:>15}", flush=True)
    per_date = [r["per_date_ms"] for r in rows]
    print(f"time per date ranges {min(per_date):.2f}-{max(per_date):.2f} ms "
          f"(max/min {max(per_date) / min(per_date):.2f}; 1.00 is exactly linear)")
    if args.sites:
        print(f"\ngenerated sites, {args.site_size} px, {args.site_dates} dates")
        sites = long_series(args.sites, args.site_size, args.site_dates)
        dating = [r["dating_exact"] for r in sites if r["dating_exact"] is not None]
        print(f"  mean F1 {statistics.mean(r['f1'] for r in sites):.3f}, dating exact "
              f"{statistics.mean(dating):.3f} over {len(sites)} seeds")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
