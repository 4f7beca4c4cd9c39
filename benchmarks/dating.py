"""Dating: cost as a function of the number of dates, and dating accuracy on long series.

1. **Scaling** (``--dates 7 24 100``): the per-pixel stage's kernels, the best
   two-segment step of every pixel (``timeline.step_change``) and the change
   count (``detector.change_count``, which refits the steps inside each changed
   pixel's two segments), on a synthetic 4-band series of N dates over
   ``--size`` × ``--size`` pixels with a step in a tenth of the pixels. Printed
   per N: seconds, seconds per date, and the ratio to a baseline measured in the
   same run on the same bytes (``np.copyto`` of the whole series). Linear cost
   means a constant time per date (and a constant ratio to the copy), and the
   per-pixel block of the pipeline (``series.pixel_block``) keeps the memory of
   a block within ``Config.memory_mb`` whatever N.
2. **Long series** (``--sites``): generated sites (``changedetect.synthetic``,
   ``--site-size`` px) with ``--site-dates`` acquisitions (default 24, up to 240)
   at ``--site-cadence`` (default ``monthly``: one date per calendar month;
   ``irregular``: 92-334 days apart), run through ``detect_changes`` and scored
   with ``changedetect.evaluate``: new construction F1, the share of matched
   changes dated exactly and bracketed, per seed, with the generation and
   detection seconds and the process's peak RSS so far (``ru_maxrss`` is
   process-wide, so it only grows). Every matched change not dated exactly is
   listed with its predicted and true dates.

Usage::

    python benchmarks/dating.py                              # scaling 7, 24, 100 dates
    python benchmarks/dating.py --sites 0 1 2 3 4            # and five 24-date monthly sites
    python benchmarks/dating.py --dates 7 --sites 0 1 2 --site-dates 100 --site-size 256
    python benchmarks/dating.py --dates 7 --sites 0 --work /tmp/dating   # keep sites and outputs
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

    from changedetect.config import Config
    from changedetect.detector import change_count
    from changedetect.series import pixel_block
    from changedetect.timeline import step_change

    rng = np.random.default_rng(0)
    bands = 5                                       # 4 bands + the texture channel
    img = rng.normal(0, 1, (n_dates, bands, size, size)).astype(np.float32)
    step = rng.random((size, size)) < 0.1
    k = rng.integers(1, n_dates - 2, (size, size))
    img += (np.arange(n_dates)[:, None, None, None] >= k[None, None]) * step[None, None] * 20.0
    usable = rng.random((n_dates, size, size)) > 0.05
    scale = np.ones(bands, np.float32)

    min_fstat = 3.0
    cfg = Config()
    out = np.empty_like(img)
    t_copy = min(_timed(lambda: np.copyto(out, img)) for _ in range(repeat))

    def kernels():
        s = step_change(img, usable, scale=scale, min_after=cfg.persistence)
        changed = (s.magnitude >= cfg.min_magnitude) & (s.fstat >= min_fstat)
        change_count(img, usable, s.first_present, changed, noise=scale, min_magnitude=cfg.min_magnitude,
                     min_fstat=min_fstat, persistence=cfg.persistence)

    t = min(_timed(kernels) for _ in range(repeat))

    class _Stack:
        count = 4

        def __len__(self):
            return n_dates

    return {"dates": n_dates, "seconds": t, "per_date_ms": 1000 * t / n_dates, "copy_s": t_copy,
            "x_copy": t / t_copy, "series_mb": img.nbytes / 2**20,
            "pipeline_block": pixel_block(_Stack(), block=cfg.block, memory_mb=cfg.memory_mb)}


def _timed(f) -> float:
    t = time.perf_counter()
    f()
    return time.perf_counter() - t


def long_series(seeds, size: int, n_dates: int, cadence: str = "monthly", work=None) -> list[dict]:
    """Generate, detect and score one site per seed; one dict of figures per seed."""
    from changedetect.evaluate import evaluate_run
    from changedetect.pipeline import detect_changes
    from changedetect.synthetic import make_site

    rows = []
    with tempfile.TemporaryDirectory(prefix="dating-") as tmp:
        root = Path(work) if work else Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        for seed in seeds:
            tag = f"s{seed}-{size}px-{n_dates}d-{cadence}"
            t = time.perf_counter()
            site = make_site(root / f"site-{tag}", seed=seed, size=size, n_dates=n_dates, cadence=cadence)
            t_gen = time.perf_counter() - t
            t = time.perf_counter()
            result = detect_changes(site.images, root / f"out-{tag}")
            elapsed = time.perf_counter() - t
            s = evaluate_run(root / f"out-{tag}", site.out_dir).scores
            rows.append({"seed": seed, "f1": s.f1, "dating_exact": s.dating_exact,
                         "dating_bracket": s.dating_bracket, "matched": s.tp,
                         "seconds": elapsed, "pixels_s": result.run["timings_s"].get("pixels"),
                         "generate_s": t_gen, "peak_rss_mb": _peak_rss_mb(),
                         "misdated": _misdated(s.matches, root / f"out-{tag}", site.truth_path)})
            r = rows[-1]
            print(f"  seed {seed:>3}: F1 {r['f1']:.2f}  dating exact {_f(r['dating_exact'])} "
                  f"bracket {_f(r['dating_bracket'])} ({r['matched']} matched)  "
                  f"{r['seconds']:.1f} s (per-pixel stage {r['pixels_s']:.1f} s; generation "
                  f"{r['generate_s']:.1f} s)  peak RSS so far {r['peak_rss_mb']:.0f} MB", flush=True)
            for m in r["misdated"]:
                print(f"      not exact: {m['change_id']} ~ {m['building_id']} ({m['kind']}, "
                      f"IoU {m['iou']:.2f}): "
                      f"predicted ({m['pred_last_absent']}, {m['pred_first_present']}], true "
                      f"({m['true_last_absent']}, {m['true_first_present']}] pad {m['true_construction']}",
                      flush=True)
    return rows


def _misdated(matches, out_dir: Path, truth_path: Path) -> list[dict]:
    """Predicted and true dates of every matched new-construction pair not dated exactly."""
    import geopandas as gpd

    bad = [m for m in matches if not m[3]]
    if not bad:
        return []
    pred_path = next(p for p in (out_dir / "changes.gpkg", out_dir / "changes.geojson") if p.exists())
    pred = gpd.read_file(pred_path)
    pred = pred.set_index(pred["change_id"].astype(str)) if "change_id" in pred else pred
    truth = gpd.read_file(truth_path).set_index("building_id")
    day = lambda v: None if v is None or str(v) in ("NaT", "nan", "None") else str(v)[:10]  # noqa: E731
    out = []
    for cid, bid, iou, _ in bad:
        p, t = pred.loc[cid], truth.loc[bid]
        out.append({"change_id": cid, "building_id": bid, "kind": t["kind"], "iou": float(iou),
                    "pred_last_absent": day(p.get("last_absent")),
                    "pred_first_present": day(p.get("first_present")),
                    "true_last_absent": day(t["last_absent"]), "true_first_present": day(t["first_present"]),
                    "true_construction": day(t["construction"])})
    return out


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _f(x, fmt: str = ".2f") -> str:
    return "n/a" if x is None else format(x, fmt)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dates", type=int, nargs="+", default=[7, 24, 100])
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--sites", type=int, nargs="*", default=[], metavar="SEED")
    p.add_argument("--site-size", type=int, default=512)
    p.add_argument("--site-dates", type=int, default=24, help="acquisitions per site (7-240)")
    p.add_argument("--site-cadence", choices=("irregular", "monthly"), default="monthly",
                   help="monthly: one date per calendar month (default); irregular: 92-334 days apart")
    p.add_argument("--work", metavar="DIR", help="keep the generated sites and outputs here")
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
        print(f"\ngenerated sites, {args.site_size} px, {args.site_dates} dates, {args.site_cadence} cadence")
        sites = long_series(args.sites, args.site_size, args.site_dates, args.site_cadence, args.work)
        dating = [r["dating_exact"] for r in sites if r["dating_exact"] is not None]
        bracket = [r["dating_bracket"] for r in sites if r["dating_bracket"] is not None]
        n_matched = sum(r["matched"] for r in sites)
        n_exact = n_matched - sum(len(r["misdated"]) for r in sites)
        print(f"  mean F1 {statistics.mean(r['f1'] for r in sites):.3f}, dating exact "
              f"{_f(statistics.mean(dating) if dating else None, '.3f')} (pooled {n_exact}/{n_matched}), "
              f"bracket {_f(statistics.mean(bracket) if bracket else None, '.3f')} over {len(sites)} seeds; "
              f"detection {statistics.mean(r['seconds'] for r in sites):.1f} s per site")
    print(f"peak RSS {_peak_rss_mb():.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
