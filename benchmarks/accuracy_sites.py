"""Object-level accuracy of detect-changes: generated sites (and SpaceNet 7 when available).

Generated sites: for each seed, generate the site (``changedetect.synthetic``), run
``detect_changes``, score it with ``changedetect.evaluate.evaluate_run`` (Hungarian
matching at IoU >= 0.25, the SpaceNet 7 rule) and print, per seed: new-construction
precision, recall and F1; demolitions found; annexes (modifications) found and
labelled ``modified``; false polygons (matching no true change) and per hectare;
the share of matched new buildings dated exactly. Then the means.

Given footprints: the same run is given the site's true footprints
(``Config(buildings=truth.geojson)``; the change table does not depend on them, only its
``building_id`` column does, which is tested). Every footprint's ``status`` is checked
against its true kind (existing: ``unchanged``; new and annex: ``changed``; demolished:
``demolished``), and a change's ``first_present`` against the true date (or the
construction pad's, which comes first).

SpaceNet 7 (``--spacenet7``): calls ``benchmarks/spacenet7.py`` (``main(["--json", ...])``)
when that file exists, and says so when it does not. Its printed table includes the month
error of first appearance (both modes and their Otsu baselines); ``--json`` here keeps
those month-error figures under ``spacenet7.month_error``.

Usage::

    python benchmarks/accuracy_sites.py                       # seeds 7 0 1 2 3 4, 512 px, 8 dates
    python benchmarks/accuracy_sites.py --seeds 10 11 12 13 14 --json held_out.json
    python benchmarks/accuracy_sites.py --work /tmp/sites     # keep (and reuse) the generated sites
    python benchmarks/accuracy_sites.py --spacenet7
    python benchmarks/accuracy_sites.py --seeds 0 1 2 3 4 --dates 24 --cadence monthly   # 24 monthly dates

``--cadence`` is passed to ``make_site`` (``irregular``, the default: 92-334 days
between dates; ``monthly``: one date per calendar month). With ``--work`` the
folders are named ``site-s{seed}-{size}px-{dates}d`` for irregular sites (as
before the option existed) and ``site-s{seed}-{size}px-{dates}d-monthly`` for
monthly ones, so cached sites of different cadences never collide.
"""

from __future__ import annotations

import argparse
import importlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _tag(seed: int, size: int, dates: int, cadence: str = "irregular") -> str:
    """Folder suffix of a site; irregular sites keep the names they had before ``cadence``."""
    return f"s{seed}-{size}px-{dates}d" + ("" if cadence == "irregular" else f"-{cadence}")


def _site(work: Path, seed: int, size: int, dates: int, cadence: str = "irregular"):
    """The generated site of ``seed`` under ``work``; reused when it is already there."""
    from changedetect.synthetic import make_site

    d = work / f"site-{_tag(seed, size, dates, cadence)}"
    images = sorted(d.glob("site_*.tif"))
    if (d / "truth.geojson").exists() and (d / "README.md").exists() and len(images) == dates:
        return d, images
    site = make_site(d, seed=seed, size=size, n_dates=dates, cadence=cadence)
    return site.out_dir, list(site.images)


def run_seed(work: Path, seed: int, size: int, dates: int, cadence: str = "irregular") -> dict:
    """Generate (or reuse), detect and score one site; a flat dict of figures."""
    from changedetect.evaluate import evaluate_run
    from changedetect.pipeline import detect_changes

    from changedetect.pipeline import Config

    site_dir, images = _site(work, seed, size, dates, cadence)
    out = work / f"out-{_tag(seed, size, dates, cadence)}"
    t = time.perf_counter()
    result = detect_changes(images, out, config=Config(buildings=str(site_dir / "truth.geojson")))
    elapsed = time.perf_counter() - t
    s = evaluate_run(out, site_dir).scores
    fp = footprint_scores(site_dir / "truth.geojson", result.buildings)
    return {"seed": seed, "precision": s.precision, "recall": s.recall, "f1": s.f1,
            "tp": s.tp, "n_pred": s.n_pred, "n_truth": s.n_truth,
            "demolitions_found": s.demolitions_found, "demolitions_total": s.demolitions_total,
            "modifications_found": s.modifications_found,
            "modifications_kind_correct": s.modifications_kind_correct,
            "modifications_total": s.modifications_total,
            "false_polygons": s.false_polygons, "false_polygons_per_ha": s.false_polygons_per_ha,
            "area_ha": s.area_ha, "dating_exact": s.dating_exact,
            "n_changes": int(len(result.changes)), "seconds": round(elapsed, 2),
            "seconds_buildings": result.run["timings_s"].get("buildings"), "footprints": fp}


#: status a footprint should get, per true kind of the generator
EXPECTED_STATUS = {"existing": "unchanged", "new": "changed", "modified": "changed",
                   "demolished": "demolished"}


def footprint_scores(truth_path, buildings) -> dict:
    """Score ``Result.buildings`` (the site's own true footprints given) against the truth.

    Per true kind: footprints with the expected status / footprints. Dating is
    exact when ``first_present`` is the true date (or, for a building with a
    construction pad, the pad's), over the footprints with the expected status.
    """
    import geopandas as gpd
    import pandas as pd

    truth = gpd.read_file(truth_path)
    m = buildings.merge(truth[["building_id", "kind", "first_present", "construction", "demolished"]],
                        on="building_id", suffixes=("", "_true"))
    out = {}
    for kind, want in EXPECTED_STATUS.items():
        sel = m[m["kind_true"] == kind]
        out[kind] = [int((sel["status"] == want).sum()), int(len(sel))]
    exact = []
    for _, r in m[m["kind_true"] != "existing"].iterrows():
        if r.status != EXPECTED_STATUS[r.kind_true]:
            continue
        true = r.demolished if r.kind_true == "demolished" else r.first_present_true
        dates = {str(d)[:10] for d in (true, r.construction) if d is not None and not pd.isna(d)}
        exact.append(r.first_present in dates)
    out["dating_exact"] = [sum(exact), len(exact)]
    return out


def _f(x, fmt=".2f") -> str:
    return "n/a" if x is None else format(x, fmt)


HEADER = (f"{'seed':>5} {'P':>5} {'R':>5} {'F1':>5}  {'demolitions':>11}  {'annexes (modified)':>18}"
          f"  {'false':>5} {'per ha':>6}  {'dating':>6} {'time s':>6}")


def format_row(r: dict) -> str:
    return (f"{r['seed']:>5} {_f(r['precision']):>5} {_f(r['recall']):>5} {_f(r['f1']):>5}  "
            f"{r['demolitions_found']:>5}/{r['demolitions_total']:<5}  "
            f"{r['modifications_found']:>7}/{r['modifications_total']} ({r['modifications_kind_correct']})"
            f"{'':>6}  {r['false_polygons']:>5} {_f(r['false_polygons_per_ha']):>6}  "
            f"{_f(r['dating_exact']):>6} {r['seconds']:>6.1f}")


def summarize(rows: list[dict]) -> dict:
    """Means over seeds (totals for the counts)."""
    if not rows:
        return {}
    dating = [r["dating_exact"] for r in rows if r["dating_exact"] is not None]
    fph = [r["false_polygons_per_ha"] for r in rows if r["false_polygons_per_ha"] is not None]
    tot = {k: sum(r[k] for r in rows) for k in
           ("demolitions_found", "demolitions_total", "modifications_found",
            "modifications_kind_correct", "modifications_total", "false_polygons")}
    return {"n_seeds": len(rows),
            "precision": statistics.mean(r["precision"] for r in rows),
            "recall": statistics.mean(r["recall"] for r in rows),
            "f1": statistics.mean(r["f1"] for r in rows),
            "f1_min": min(r["f1"] for r in rows),
            "false_polygons_per_ha": statistics.mean(fph) if fph else None,
            "dating_exact": statistics.mean(dating) if dating else None,
            **tot}


FP_HEADER = (f"{'seed':>5} {'existing unchanged':>18} {'new changed':>11} {'annex changed':>13} "
             f"{'demolished':>10} {'dating exact':>12} {'time s':>6}")


def format_fp_row(r: dict) -> str:
    f = r["footprints"]
    frac = lambda k: f"{f[k][0]}/{f[k][1]}"
    return (f"{r['seed']:>5} {frac('existing'):>18} {frac('new'):>11} {frac('modified'):>13} "
            f"{frac('demolished'):>10} {frac('dating_exact'):>12} {r['seconds_buildings'] or 0:>6.1f}")


def summarize_fp(rows: list[dict]) -> dict:
    """Totals over seeds of the footprint checks."""
    keys = ("existing", "new", "modified", "demolished", "dating_exact")
    return {k: [sum(r["footprints"][k][0] for r in rows), sum(r["footprints"][k][1] for r in rows)]
            for k in keys}


def format_summary(m: dict) -> str:
    return (f" mean {_f(m['precision']):>5} {_f(m['recall']):>5} {_f(m['f1'], '.3f'):>5}  "
            f"{m['demolitions_found']:>5}/{m['demolitions_total']:<5}  "
            f"{m['modifications_found']:>7}/{m['modifications_total']} ({m['modifications_kind_correct']})"
            f"{'':>6}  {m['false_polygons']:>5} {_f(m['false_polygons_per_ha']):>6}  "
            f"{_f(m['dating_exact'], '.3f'):>6}\n"
            f"  (F1 min {m['f1_min']:.2f}; demolitions, annexes and false polygons are totals)")


def generated_sites(args) -> dict:
    """The generated-sites section: per-seed rows and their means."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="accuracy-sites-") as tmp:
        work = Path(args.work) if args.work else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        print(f"generated sites: {args.size} px, {args.dates} dates ({args.cadence} cadence), "
              f"seeds {' '.join(map(str, args.seeds))}")
        print(HEADER, flush=True)
        for seed in args.seeds:
            rows.append(run_seed(work, seed, args.size, args.dates, args.cadence))
            print(format_row(rows[-1]), flush=True)
    mean = summarize(rows)
    print(format_summary(mean))
    print("\ngiven footprints (the site's true ones): footprints with the expected status, per true kind")
    print(FP_HEADER)
    for r in rows:
        print(format_fp_row(r))
    fp_total = summarize_fp(rows)
    print(format_fp_row({"seed": "total", "footprints": fp_total,
                         "seconds_buildings": sum(r["seconds_buildings"] or 0 for r in rows)}))
    return {"size": args.size, "dates": args.dates, "cadence": args.cadence, "seeds": list(args.seeds),
            "rows": rows, "mean": mean, "footprints_total": fp_total}


def spacenet7_section() -> dict | None:
    """Run ``benchmarks/spacenet7.py`` if it exists; return its exit status and month errors."""
    if not (HERE / "spacenet7.py").exists():
        print("\nSpaceNet 7: benchmarks/spacenet7.py does not exist yet; section skipped.")
        return None
    sys.path.insert(0, str(HERE))
    try:
        spacenet7 = importlib.import_module("spacenet7")
    finally:
        sys.path.remove(str(HERE))
    print("\nSpaceNet 7:", flush=True)
    with tempfile.TemporaryDirectory(prefix="sn7-json-") as tmp:
        out = Path(tmp) / "sn7.json"
        status = spacenet7.main(["--json", str(out)])
        r = json.loads(out.read_text()) if out.exists() else None   # absent when the data is
    if r is None:
        return {"exit_status": status}
    f = r["with_footprints"]
    month_error = {"note": r["data"].get("month_error_note"),
                   "without_footprints": r["without_footprints"].get("month_error"),
                   "baseline_pixel_otsu": r["baseline_pixel_otsu"].get("month_error"),
                   "with_footprints": f.get("changedetect", {}).get("month_error"),
                   "baseline_footprint_otsu": f["baseline_otsu_rgb_diff"].get("month_error")}
    return {"exit_status": status, "month_error": month_error}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[7, 0, 1, 2, 3, 4])
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--dates", type=int, default=8, help="acquisitions per site (7-240)")
    p.add_argument("--cadence", choices=("irregular", "monthly"), default="irregular",
                   help="passed to make_site: irregular (92-334 days apart, default) or monthly "
                        "(one date per calendar month); use --dates 24 --cadence monthly for the issue's "
                        "24 monthly dates")
    p.add_argument("--json", metavar="PATH", help="also write every figure as JSON")
    p.add_argument("--work", metavar="DIR",
                   help="keep the generated sites and outputs here (reused on the next run)")
    p.add_argument("--spacenet7", action="store_true",
                   help="also run the SpaceNet 7 section (benchmarks/spacenet7.py)")
    args = p.parse_args(argv)
    report = {"generated_sites": generated_sites(args)}
    if args.spacenet7:
        report["spacenet7"] = spacenet7_section()
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
