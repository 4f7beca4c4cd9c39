"""Run AROSICS (the reference co-registration tool) on one image pair and report where it maps things.

Runs ONLY inside the AROSICS venv (made by ``shared/tools/install-arosics.sh VENV``: Debian's GDAL
bindings, NumPy < 2, arosics 1.9); it must not import ``changedetect``. The benchmark calls it as a
subprocess::

    VENV/bin/python arosics_runner.py REF TGT --mode global|local [--band N] [--grid-res PX]
                                      [--window PX] [--max-shift PX] [--step 16] [--out JSON]

It runs ``COREG`` (global X/Y shift) or ``COREG_LOCAL`` (tie-point grid) with target TGT against
reference REF, applies the correction in memory (``correct_shifts``, no file written) and times
both together (wall seconds, ``time.perf_counter``). Only JSON is written, to ``--out`` or stdout:

- ``mode``, ``seconds``, ``arosics_version``, ``settings`` (keyword arguments given to AROSICS);
- global: ``success``, ``shift`` = {x_px, y_px (target px), x_map, y_map (map units)}: AROSICS moves
  the target's geotransform origin by (x_map, y_map), i.e. target pixel p is placed at gt_tgt(p) + shift;
- local: ``tie_points_total``, ``tie_points_matched`` (before outlier filtering), ``tie_points_valid``
  (after AROSICS's filtering = GCPs used), ``mean_shift`` (x/y px and map: AROSICS's mean over the
  matched points, outliers included, used only for its fallback), ``correction`` = "tps" | "global mean"
  (fewer than 5 valid points: AROSICS then shifts by mean_shift) | "none" (no valid point);
- ``points``: [[qc, qr, tc, tr], ...] for the pixel centres q = (col + 0.5, row + 0.5) of every
  ``step``-th row/column of the REFERENCE grid: the position (tc, tr) in TGT's ORIGINAL pixel
  coordinates that AROSICS's corrected output shows at q (corner convention: (0, 0) is the upper-left
  corner of pixel (0, 0)); null where the mapping is undefined (all null, with ``success`` false and
  ``error``, if AROSICS raised; the exit status is still 0 so the caller can read the JSON).
  Global: q -> map (ref geotransform) -> minus the map shift -> inverse original target geotransform.
  Local: AROSICS (DeShifter.correct_shifts -> py_tools_ds warp_ndarray) attaches GCPs (target pixel of
  each valid tie point -> its map position + its shift) to the target and calls gdal.Warp with
  ``tps=True`` (thin-plate-spline GCP transformer, no polynomial); the same GCPs are evaluated here
  with ``gdal.Transformer(..., ['METHOD=GCP_TPS'])`` from map to target pixel (GDAL's exact transform;
  gdal.Warp approximates it with errorThreshold=0.125 px).
"""
import argparse
import contextlib
import json
import math
import sys
import time
import warnings

import numpy as np
from osgeo import gdal

gdal.UseExceptions()
with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # "PYFFTW library is missing" (only slower)
    import arosics
    from arosics import COREG, COREG_LOCAL

MIN_POINTS_LOCAL_CORR = 5  # AROSICS's default below which COREG_LOCAL corrects the mean shift only


def ref_centres(ref_path, step):
    """Reference pixel centres of every step-th row/column, and their map coordinates."""
    ds = gdal.Open(ref_path)
    gt = ds.GetGeoTransform()
    c, r = np.meshgrid(np.arange(0, ds.RasterXSize, step) + 0.5, np.arange(0, ds.RasterYSize, step) + 0.5)
    q = np.column_stack([c.ravel(), r.ravel()])
    x = gt[0] + q[:, 0] * gt[1] + q[:, 1] * gt[2]
    y = gt[3] + q[:, 0] * gt[4] + q[:, 1] * gt[5]
    return q, np.column_stack([x, y])


def map_to_tgt_pixel(tgt_path, xy, shift_map=(0.0, 0.0)):
    """Original target pixel (col, row) whose shifted position gt(p) + shift_map equals xy."""
    inv = gdal.InvGeoTransform(gdal.Open(tgt_path).GetGeoTransform())
    x, y = xy[:, 0] - shift_map[0], xy[:, 1] - shift_map[1]
    return np.column_stack([inv[0] + x * inv[1] + y * inv[2], inv[3] + x * inv[4] + y * inv[5]])


def tps_map_to_tgt_pixel(tgt_path, gcps, prj, xy):
    """Evaluate AROSICS's local warp: GDAL's TPS GCP transformer, map -> target pixel."""
    src = gdal.Open(tgt_path)
    mem = gdal.GetDriverByName("MEM").Create("", src.RasterXSize, src.RasterYSize, 1, gdal.GDT_Byte)
    mem.SetGCPs(gcps, prj)
    tr = gdal.Transformer(mem, None, ["METHOD=GCP_TPS", "DST_SRS=" + prj])
    out, ok = tr.TransformPoints(1, [(float(x), float(y)) for x, y in xy])
    p = np.array([o[:2] for o in out], dtype=float)
    p[~np.asarray(ok, dtype=bool)] = np.nan
    return p


def run_global(args, settings):
    cr = COREG(args.ref, args.tgt, **settings)
    cr.calculate_spatial_shifts()
    cr.correct_shifts()
    return cr


def run_local(args, settings):
    crl = COREG_LOCAL(args.ref, args.tgt, **settings)
    crl.calculate_spatial_shifts()
    crl.correct_shifts(min_points_local_corr=MIN_POINTS_LOCAL_CORR)
    return crl


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("ref")
    ap.add_argument("tgt")
    ap.add_argument("--mode", choices=["global", "local"], required=True)
    ap.add_argument("--band", type=int, default=1, help="band used for matching in both images (1-based)")
    ap.add_argument("--grid-res", type=float, default=None,
                    help="local: tie-point spacing in target px (default: min(target rows, cols) / 16)")
    ap.add_argument("--window", type=int, default=None,
                    help="matching window in px (default: 256 global = AROSICS default, 128 local)")
    ap.add_argument("--max-shift", type=int, default=20, help="largest accepted shift in px (AROSICS: 5)")
    ap.add_argument("--cpus", type=int, default=2)
    ap.add_argument("--step", type=int, default=16)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)

    common = dict(r_b4match=args.band, s_b4match=args.band, max_shift=args.max_shift, CPUs=args.cpus,
                  q=True, progress=False)
    if args.mode == "global":
        ws = args.window or 256
        settings = dict(common, ws=(ws, ws), path_out=None)
    else:
        tgt = gdal.Open(args.tgt)
        grid_res = args.grid_res or max(8, round(min(tgt.RasterXSize, tgt.RasterYSize) / 16))
        ws = args.window or 128
        settings = dict(common, grid_res=grid_res, window_size=(ws, ws), path_out=None)

    q, xy = ref_centres(args.ref, args.step)
    res = {"mode": args.mode, "arosics_version": arosics.__version__, "ref": args.ref, "tgt": args.tgt,
           "settings": {k: list(v) if isinstance(v, tuple) else v for k, v in settings.items()}}
    with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(sys.stderr):
        warnings.simplefilter("always")
        t0 = time.perf_counter()
        try:
            obj = (run_global if args.mode == "global" else run_local)(args, settings)
        except Exception as exc:  # AROSICS raises e.g. "No match found in the given window."
            obj, res["success"], res["error"] = None, False, f"{type(exc).__name__}: {exc}"
            p = np.full_like(q, np.nan)
        res["seconds"] = time.perf_counter() - t0

        if obj is None:
            pass
        elif args.mode == "global":
            # The attributes, not coreg_info["corrected_shifts_*"]: AROSICS 1.9 flips the sign of the latter in
            # place (shallow copy in COREG._get_inverted_coreg_info) when the target is coarser than the
            # reference. The correction applied ('updated map info') is origin + (x_shift_map, y_shift_map).
            ok = bool(obj.success) and obj.x_shift_map is not None
            sx, sy = (obj.x_shift_map, obj.y_shift_map) if ok else (0.0, 0.0)
            res["success"] = ok
            res["shift"] = {"x_px": obj.x_shift_px, "y_px": obj.y_shift_px, "x_map": obj.x_shift_map,
                            "y_map": obj.y_shift_map}
            res["reliability"] = getattr(obj, "shift_reliability", None)
            p = map_to_tgt_pixel(args.tgt, xy, (sx, sy))
        else:
            tbl = obj.CoRegPoints_table
            matched = tbl[tbl.ABS_SHIFT != obj.outFillVal] if "ABS_SHIFT" in tbl else tbl.iloc[:0]
            gcps = obj.coreg_info["GCPList"] or []
            res.update(tie_points_total=int(len(tbl)), tie_points_matched=int(len(matched)),
                       tie_points_valid=len(gcps), success=bool(obj.success))
            mean = obj.coreg_info
            res["mean_shift"] = {"x_px": mean["mean_shifts_px"]["x"], "y_px": mean["mean_shifts_px"]["y"],
                                 "x_map": mean["mean_shifts_map"]["x"], "y_map": mean["mean_shifts_map"]["y"]}
            if len(gcps) >= MIN_POINTS_LOCAL_CORR:
                res["correction"] = "tps"
                p = tps_map_to_tgt_pixel(args.tgt, gcps, obj.imref.prj, xy)
            elif gcps:
                res["correction"] = "global mean"
                p = map_to_tgt_pixel(args.tgt, xy, (mean["mean_shifts_map"]["x"], mean["mean_shifts_map"]["y"]))
            else:
                res["correction"] = "none"
                p = map_to_tgt_pixel(args.tgt, xy)
    res["warnings"] = sorted({f"{w.category.__name__}: {str(w.message).strip()[:300]}" for w in caught
                              if not issubclass(w.category, (FutureWarning, DeprecationWarning))})
    res["points"] = [[float(a), float(b), None if math.isnan(c) else float(c), None if math.isnan(d) else float(d)]
                     for (a, b), (c, d) in zip(q, p)]
    text = json.dumps(res, default=lambda o: o.item() if hasattr(o, "item") else str(o))
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    else:
        print(text)


if __name__ == "__main__":
    main()
