"""Dated new construction on a real SpaceNet 7 tile: polygons, and given footprints.

Data (in ``../shared/data/spacenet7``, or the folder given by ``--data`` or
``CHANGEDETECT_DATA``; never shipped with the project): tile
``L15-0357E-1223N_1429_3296_13`` of SpaceNet 7, three Planet monthly mosaics
(2018-01, 2019-01, 2020-01; 1024 x 1023 RGBA uint8, 4.78 m, EPSG:3857) and, per
month, building footprints with a persistent ``Id`` (``labels_match``).

Truth. A building is *new in 2018→2019* when its Id is in the 2019 labels and
not in the 2018 ones, *new in 2019→2020* when it is in 2020 and not in 2019; its
geometry is the one of the first month it appears. Ids that leave the labels
are counted as demolished (reported, not scored).

What is measured, in one run:

1. **Without footprints** (polygons). ``detect_changes`` on the three mosaics
   with ``Config(persistence=1)``: with three dates and the default persistence
   of 2, a change in the last interval (2019→2020) could never be confirmed by
   a later date and would be dropped. Predicted polygons of kind ``new`` or
   ``modified`` are matched one-to-one to the new buildings of both intervals
   with :func:`changedetect.evaluate.iou_matrix` + :func:`~changedetect.evaluate.match`
   (Hungarian, IoU >= 0.25, the SpaceNet 7 rule): precision, recall, F1, and the
   share of matches whose bracket (``last_absent``, ``first_present``) is the
   true interval. Buildings are tiny at 4.78 m (median ~11 px), so a relaxed
   **hit** figure is also given (not an IoU figure): recall = share of new
   buildings overlapping (positive intersection area) any predicted polygon,
   precision = share of predicted polygons overlapping any new building.
   Reference in the same run: a per-pixel baseline, the mean absolute RGB
   difference 2018→2020 thresholded by Otsu, its 4-connected components of
   >= 2 px as polygons (dated by the larger of the two interval differences).
2. **With footprints** (when ``Config(buildings=...)`` exists in the
   changedetect being run; otherwise the section is skipped with a message).
   The 2020 labels (every building standing at the end) are given as
   footprints with ``building_id_column="Id"``; a footprint is predicted new
   when its ``status`` is ``changed`` (any kind: at 4.78 m most footprints are
   too small for the library to judge their kind from the outline). Scored
   against "new since 2018" (Id absent from the 2018 labels): precision,
   recall, F1, ROC AUC of the per-footprint ``score``, the interval accuracy
   (``first_present`` equals the first month of the Id, over the true
   positives) and the number of ``not_observable`` footprints; also, as a
   diagnostic, the same figures when a footprint called ``demolished`` counts
   as detected (every 2020 footprint stands at the end, so that status is
   wrong on all of them, and on a new building it is a change seen with the
   wrong direction), and the library's per-footprint ``score`` thresholded by
   Otsu over the footprints (the baseline's rule). References in
   the same run: *every footprint new* (precision = prevalence); the per-footprint
   mean absolute RGB difference 2018→2020 (raw pixels, no registration or
   normalisation) thresholded by Otsu over the footprints, dated by the larger
   of its two interval differences; and, for dating, the share of new buildings
   in the most frequent interval.

In both modes, for the matched new buildings (IoU matches without footprints,
true positives with them) and for the Otsu |RGB diff| baseline of that mode
(which dates a change in the interval with the larger difference), the **month
error of first appearance**: |months between the predicted ``first_present``
and the true first month|, the first of the available label months holding the
building's Id. Only three label months are in the data (2018-01, 2019-01,
2020-01), so the error can only be 0, 12 or 24 months and "within one month"
means "the right year" (for new buildings both dates are 2019-01 or 2020-01, so
24 does not occur). Reported: number matched, median, share within one month,
and the counts at 0, 12 and 24 months; as a reference, the share within one
month of the same matches if all were dated at the most frequent true first
month of the new buildings (2019-01 here). The SpaceNet 7 tile with all 25 monthly
mosaics named in PROVENANCE.txt (``L15-0331E-1257N_1327_3160_13``) is not in
``../shared/data``; the run says whether it is found.

Data figures printed with the scores: buildings and new buildings per
interval, vanished Ids, sizes in pixels, the share of new buildings whose
rasterised footprint holds a 3 x 3 pixel block (changedetect's smallest
opening removes any change region without one), band means per month and the
co-registration found between months.

Footprints are rasterised on the image grid by pixel centre; one smaller than a
pixel centre takes the pixel under its centroid. Areas in pixels use the grid's
pixel (4.78 m in EPSG:3857 units). The run is deterministic.

Usage::

    python benchmarks/spacenet7.py
    python benchmarks/spacenet7.py --json sn7.json --keep /tmp/sn7
    PYTHONPATH=../other-checkout python benchmarks/spacenet7.py   # another changedetect

The changedetect on ``PYTHONPATH`` comes before this checkout's; the one used
(folder, commit, uncommitted changes) is printed and written to the JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:       # a PYTHONPATH given by the caller comes first
    sys.path.append(str(ROOT))

DEFAULT_DATA = ROOT.parent / "shared" / "data"
TILE = "L15-0357E-1223N_1429_3296_13"
# the SpaceNet 7 tile with all 25 monthly mosaics named in PROVENANCE.txt (not in ../shared/data)
MONTHLY_TILE = "L15-0331E-1257N_1327_3160_13"
MONTH_ERROR_NOTE = (
    "Month error of first appearance = |months between the predicted first_present and the first "
    "of the available label months (2018-01, 2019-01, 2020-01) that holds the building's Id|. "
    "With three annual mosaics it can only be 0, 12 or 24 months, so 'within one month' means "
    "'the right year'; for new buildings both dates are 2019-01 or 2020-01, so 24 cannot occur "
    "here. A true monthly figure needs the 25-month tile " + MONTHLY_TILE + ", which is not in "
    "the data folder.")
MONTHS = ("2018_01", "2019_01", "2020_01")
NEW_KINDS = ("new", "modified")


def _date(month: str) -> str:
    """``2019_01`` -> ``2019-01-01`` (the date changedetect reads from the file name)."""
    y, m = month.split("_")
    return f"{y}-{m}-01"


DATES = tuple(_date(m) for m in MONTHS)


# --------------------------------------------------------------------------- data


def tile_dir(data: Path) -> Path:
    """The tile folder under ``data`` (``data/spacenet7/<tile>``, or ``data`` itself)."""
    for d in (data / "spacenet7" / TILE, data / TILE, data):
        if (d / "images").is_dir() and (d / "labels_match").is_dir():
            return d
    return data / "spacenet7" / TILE


def write_rgb(tile: Path, folder: Path) -> list[Path]:
    """Write each mosaic as an RGB GeoTIFF ``sn7_<YYYY-MM-01>.tif`` that ``detect_changes`` reads.

    The date is parsed by :func:`changedetect.io.parse_date` from the name. Alpha
    becomes nodata: changedetect treats a pixel as nodata when *any* band equals
    the nodata value, so valid pixels are clipped to 1..255 (a genuine 0 in one
    band — the 2019 mosaic has a few thousand — would otherwise be read as
    nodata) and pixels with alpha == 0 are set to 0 with ``nodata=0``.
    """
    import rasterio

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for month in MONTHS:
        src_path = tile / "images" / f"global_monthly_{month}_mosaic_{TILE}.tif"
        with rasterio.open(src_path) as src:
            a = src.read()
            profile = {"driver": "GTiff", "width": src.width, "height": src.height, "count": 3,
                       "dtype": "uint8", "crs": src.crs, "transform": src.transform, "nodata": 0,
                       "tiled": True, "blockxsize": 256, "blockysize": 256, "compress": "deflate"}
        rgb = np.clip(a[:3], 1, 255)
        if a.shape[0] >= 4:
            rgb[:, a[3] == 0] = 0
        out = folder / f"sn7_{_date(month)}.tif"
        with rasterio.open(out, "w", **profile) as dst:
            dst.write(rgb)
            for i, name in enumerate(("red", "green", "blue"), start=1):
                dst.set_band_description(i, name)
        paths.append(out)
    return paths


def labels_path(tile: Path, month: str) -> Path:
    return tile / "labels_match" / f"global_monthly_{month}_mosaic_{TILE}_Buildings.geojson"


def load_labels(tile: Path) -> list:
    """Per month, the labelled footprints (GeoDataFrame with ``Id``)."""
    import geopandas as gpd

    return [gpd.read_file(labels_path(tile, m)) for m in MONTHS]


def truth_tables(labels) -> dict:
    """New buildings per interval (geometry of their first month), vanished Ids, first month per Id."""
    import pandas as pd

    ids = [{int(i) for i in g["Id"]} for g in labels]
    first: dict[int, int] = {}
    for t, s in enumerate(ids):
        for i in s:
            first.setdefault(i, t)
    new, gone = [], []
    for t in range(1, len(labels)):
        g, prev = labels[t], labels[t - 1]
        born = {i for i in ids[t] - ids[t - 1] if first[i] == t}
        sel = g[g["Id"].astype(int).isin(born)][["Id", "geometry"]].copy()
        sel["last_absent"], sel["first_present"] = DATES[t - 1], DATES[t]
        new.append(sel)
        gone.append(prev[~prev["Id"].astype(int).isin(ids[t])][["Id", "geometry"]])
    demolished = {f"{DATES[t - 1]}→{DATES[t]}": len(ids[t - 1] - ids[t]) for t in range(1, len(ids))}
    # an Id missing from a month after its first one and labelled again later
    reappearing = sum(1 for i, t0 in first.items()
                      if any(i not in ids[t] for t in range(t0, len(ids))) and i in ids[-1])
    return {"new": pd.concat(new, ignore_index=True), "gone": pd.concat(gone, ignore_index=True),
            "first": first, "ids": ids, "demolished": demolished, "reappearing": reappearing}


# --------------------------------------------------------------------------- scoring helpers


def _prf(tp: int, n_pred: int, n_truth: int) -> dict:
    p = tp / n_pred if n_pred else (1.0 if not n_truth else 0.0)
    r = tp / n_truth if n_truth else 1.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return {"tp": int(tp), "n_pred": int(n_pred), "n_truth": int(n_truth),
            "precision": round(p, 4), "recall": round(r, 4), "f1": round(f, 4)}


def _auc(score: np.ndarray, truth: np.ndarray) -> float | None:
    """ROC AUC (Mann-Whitney, ties counted half); None when a class is empty."""
    from scipy.stats import rankdata

    score, truth = np.asarray(score, float), np.asarray(truth, bool)
    ok = np.isfinite(score)
    score, truth = score[ok], truth[ok]
    n1, n0 = int(truth.sum()), int((~truth).sum())
    if not n1 or not n0:
        return None
    r = rankdata(score)
    return round(float((r[truth].sum() - n1 * (n1 + 1) / 2) / (n1 * n0)), 4)


def month_index(date) -> int | None:
    """``2019-01-01`` (or a Timestamp, or ``2019_01``) -> months since year 0; None if not a date."""
    text = str(date).strip().replace("_", "-")
    try:
        y, m = int(text[:4]), int(text[5:7])
    except ValueError:
        return None
    return y * 12 + m - 1 if 1 <= m <= 12 else None


def month_errors(pred_first, true_first) -> list[int | None]:
    """|months between predicted ``first_present`` and the true first month|, per pair (None: no date)."""
    out = []
    for p, t in zip(pred_first, true_first, strict=True):
        a, b = month_index(p), month_index(t)
        out.append(None if a is None or b is None else abs(a - b))
    return out


def month_error_summary(errors) -> dict:
    """Number matched, median month error, share within one month and the distribution.

    ``errors`` holds one entry per matched new building (None when the match has
    no predicted date: counted in ``matched``, left out of the other figures).
    With the three annual mosaics of this tile an error can only be 0, 12 or 24
    months, so "within one month" means "the right year"; the distribution keys
    0, 12 and 24 are always present, other values are added when they occur.
    """
    errs = [int(e) for e in errors if e is not None]
    dist = {0: 0, 12: 0, 24: 0}
    for e in errs:
        dist[e] = dist.get(e, 0) + 1
    return {"matched": len(errors), "dated": len(errs),
            "median_months": float(np.median(errs)) if errs else None,
            "within_1_month": round(sum(e <= 1 for e in errs) / len(errs), 4) if errs else None,
            "distribution": {str(k): v for k, v in sorted(dist.items())}}


def with_constant_reference(summary: dict, true_first_matched, true_first_all) -> dict:
    """Add the month error the same matches would have if all were dated at the most frequent month.

    The most frequent true first month over *all* new buildings (not only the
    matched ones) is the constant date; on this tile it is 2019-01 (199 of 285).
    """
    vals, counts = np.unique(np.asarray(true_first_all, dtype=str), return_counts=True)
    if not len(vals) or not summary["matched"]:
        summary["constant_reference"] = None
        return summary
    date = str(vals[int(np.argmax(counts))])
    ref = month_error_summary(month_errors([date] * len(true_first_matched), true_first_matched))
    summary["constant_reference"] = {"date": date, "median_months": ref["median_months"],
                                     "within_1_month": ref["within_1_month"]}
    return summary


def score_polygons(pred, truth, px_area: float, grid_area: float | None = None) -> dict:
    """IoU-matched and "hit" figures of predicted polygons against the new buildings."""
    from changedetect.evaluate import iou_matrix, match

    pg = np.asarray(pred.geometry.values, dtype=object)
    tg = np.asarray(truth.geometry.values, dtype=object)
    iou = iou_matrix(pg, tg)
    pairs = match(iou, iou_threshold=0.25)
    out = _prf(len(pairs), len(pg), len(tg))
    la = list(pred["last_absent"]) if len(pred) else []
    fp = list(pred["first_present"]) if len(pred) else []
    ok = [str(la[i])[:10] == truth["last_absent"].iloc[j] and str(fp[i])[:10] == truth["first_present"].iloc[j]
          for i, j, _ in pairs]
    out["interval_correct"] = round(float(np.mean(ok)), 4) if ok else None
    t_first = [truth["first_present"].iloc[j] for _, j, _ in pairs]
    out["month_error"] = with_constant_reference(
        month_error_summary(month_errors([fp[i] for i, _, _ in pairs], t_first)), t_first,
        truth["first_present"])
    out["mean_iou_of_matches"] = round(float(np.mean([m[2] for m in pairs])), 4) if pairs else None
    per = {}
    for d in sorted(set(truth["first_present"])):
        cols = np.flatnonzero(truth["first_present"].to_numpy() == d)
        m = [p for p in pairs if p[1] in set(cols)]
        per[d] = {"n_truth": len(cols), "matched": len(m),
                  "interval_correct": int(sum(ok[k] for k, p in enumerate(pairs) if p[1] in set(cols)))}
    out["per_interval"] = per
    hit = iou > 0          # positive intersection area
    out["hit"] = {"recall": round(float(hit.any(axis=0).mean()), 4) if len(tg) else None,
                  "precision": round(float(hit.any(axis=1).mean()), 4) if len(pg) else None,
                  "buildings_hit": int(hit.any(axis=0).sum()),
                  "predictions_hitting": int(hit.any(axis=1).sum())}
    if grid_area:
        import shapely

        cover = shapely.union_all(pg).area if len(pg) else 0.0
        out["hit"]["share_of_image_covered"] = round(float(cover / grid_area), 4)
    if len(pg):
        area = np.array([g.area for g in pg]) / px_area
        out["pred_area_px"] = {"median": round(float(np.median(area)), 1),
                               "p10": round(float(np.percentile(area, 10)), 1),
                               "p90": round(float(np.percentile(area, 90)), 1)}
    return out


# --------------------------------------------------------------------------- baselines


def read_rgb(paths) -> np.ndarray:
    """(dates, 3, rows, cols) float32 of the written RGB mosaics (nominal georeferencing)."""
    import rasterio

    arrs = []
    for p in paths:
        with rasterio.open(p) as ds:
            arrs.append(ds.read().astype(np.float32))
    return np.stack(arrs)


def footprint_labels(geoms, transform, shape) -> np.ndarray:
    """Raster of footprint index + 1 (0 = none), by pixel centre; tiny ones get their centroid pixel."""
    from rasterio.features import rasterize
    from rasterio.transform import rowcol

    lab = rasterize(((g, i + 1) for i, g in enumerate(geoms)), out_shape=shape, transform=transform,
                    fill=0, dtype="int32")
    present = np.zeros(len(geoms) + 1, bool)
    present[np.unique(lab)] = True
    for i, g in enumerate(geoms):
        if not present[i + 1]:
            c = g.centroid
            r, col = rowcol(transform, c.x, c.y)
            if 0 <= r < shape[0] and 0 <= col < shape[1] and lab[r, col] == 0:
                lab[r, col] = i + 1
    return lab


def _mean_abs_diff(a, b) -> np.ndarray:
    return np.abs(a - b).mean(axis=0)


def pixel_baseline(rgb, valid, transform, px_area, truth) -> dict:
    """Otsu on the per-pixel mean |RGB difference| 2018→2020; components as polygons."""
    import geopandas as gpd
    from rasterio.features import shapes
    from scipy import ndimage as ndi
    from shapely.geometry import shape

    from changedetect.detect import threshold_otsu

    d02 = _mean_abs_diff(rgb[0], rgb[-1])
    thr = threshold_otsu(d02[valid])
    lab, n = ndi.label((d02 > thr) & valid)
    sizes = np.bincount(lab.ravel(), minlength=n + 1)
    keep = sizes >= 2
    keep[0] = False
    renum = np.zeros(n + 1, np.int32)
    renum[keep] = np.arange(1, int(keep.sum()) + 1)
    lab, n = renum[lab], int(keep.sum())
    d01 = _mean_abs_diff(rgb[0], rgb[1])
    d12 = _mean_abs_diff(rgb[1], rgb[2])
    idx = np.arange(n + 1)
    s01 = ndi.mean(d01, lab, idx)
    s12 = ndi.mean(d12, lab, idx)
    geoms, la, fp = [], [], []
    for g, v in shapes(lab, mask=lab > 0, transform=transform, connectivity=4):
        v = int(v)
        geoms.append(shape(g))
        t = 1 if s01[v] >= s12[v] else 2
        la.append(DATES[t - 1])
        fp.append(DATES[t])
    pred = gpd.GeoDataFrame({"last_absent": la, "first_present": fp}, geometry=geoms, crs=truth.crs)
    out = score_polygons(pred, truth, px_area, px_area * valid.size)
    out["threshold"] = round(float(thr), 3)
    out["changed_pixel_share"] = round(float((lab > 0).mean()), 4)
    return out


def footprint_baseline(rgb, transform, footprints, is_new) -> tuple[dict, np.ndarray, np.ndarray]:
    """Per footprint: mean |RGB difference| 2018→2020 inside it, Otsu over footprints.

    Returns the scores, the predicted ``first_present`` of every footprint (the
    interval with the larger difference) and the predicted-new mask.
    """
    from scipy import ndimage as ndi

    from changedetect.detect import threshold_otsu

    lab = footprint_labels(list(footprints.geometry.values), transform, rgb.shape[-2:])
    idx = np.arange(1, len(footprints) + 1)
    s02 = ndi.mean(_mean_abs_diff(rgb[0], rgb[-1]), lab, idx)
    s01 = ndi.mean(_mean_abs_diff(rgb[0], rgb[1]), lab, idx)
    s12 = ndi.mean(_mean_abs_diff(rgb[1], rgb[2]), lab, idx)
    thr = threshold_otsu(s02[np.isfinite(s02)])   # a footprint hidden under others has no pixel
    pred = s02 > thr
    out = _prf(int((pred & is_new).sum()), int(pred.sum()), int(is_new.sum()))
    out["threshold"] = round(float(thr), 3)
    out["auc"] = _auc(s02, is_new)
    fp_pred = np.where(s01 >= s12, DATES[1], DATES[2])
    return out, fp_pred, pred


# --------------------------------------------------------------------------- footprints


def footprints_supported() -> bool:
    """Whether the changedetect being run accepts ``Config(buildings=...)``."""
    from changedetect.pipeline import Config, Result

    return ("buildings" in {f.name for f in dataclasses.fields(Config)}
            and "buildings" in {f.name for f in dataclasses.fields(Result)})


def run_footprints(tile: Path, images, labels, truth, rgb, transform, out_dir: Path) -> dict:
    """Per-footprint scores with the 2020 labels as footprints, and the baselines."""
    from changedetect.pipeline import Config, detect_changes

    tile_labels = labels[-1]
    foot = tile_labels[["Id", "geometry"]].reset_index(drop=True)
    first = truth["first"]
    is_new = np.array([first[int(i)] > 0 for i in foot["Id"]])
    true_fp = np.array([DATES[first[int(i)]] for i in foot["Id"]])
    res: dict = {"n_footprints": len(foot), "n_new": int(is_new.sum()),
                 "prevalence": round(float(is_new.mean()), 4)}

    # references measured in the same run
    res["baseline_all_new"] = _prf(int(is_new.sum()), len(foot), int(is_new.sum()))
    base, base_fp, base_pred = footprint_baseline(rgb, transform, foot, is_new)
    tp = base_pred & is_new
    base["interval_correct"] = round(float((base_fp[tp] == true_fp[tp]).mean()), 4) if tp.any() else None
    base["month_error"] = with_constant_reference(month_error_summary(month_errors(base_fp[tp], true_fp[tp])),
                                                  true_fp[tp], true_fp[is_new])
    res["baseline_otsu_rgb_diff"] = base
    counts = {d: int((true_fp[is_new] == d).sum()) for d in DATES[1:]}
    res["baseline_majority_interval"] = round(max(counts.values()) / max(1, int(is_new.sum())), 4)
    res["new_per_interval"] = counts

    if not footprints_supported():
        res["available"] = False
        return res
    res["available"] = True
    # the 2020 labels file as it is (GeoJSON, EPSG:3857, id column "Id")
    fp_path = labels_path(tile, MONTHS[-1])
    config = Config(persistence=1, buildings=str(fp_path), building_id_column="Id")
    t = time.perf_counter()
    try:
        result = detect_changes(images, out_dir, config=config)
    except Exception as exc:  # noqa: BLE001 - the footprint API is under development: report, go on
        res["error"] = f"detect_changes with footprints failed: {type(exc).__name__}: {exc}"
        return res
    res["runtime_s"] = round(time.perf_counter() - t, 1)
    b = getattr(result, "buildings", None)
    if b is None:
        res["error"] = "detect_changes returned no result.buildings"
        return res
    b = b.set_index(b["building_id"].astype(str))
    ids = foot["Id"].astype(int).astype(str)
    missing = [i for i in ids if i not in b.index]
    res["footprints_missing_from_result"] = len(missing)
    b = b.reindex(ids)
    status = b["status"].fillna("missing").to_numpy()
    kind = b["kind"].to_numpy()
    # any kind: a footprint too small for its outline to be judged has kind None
    pred = status == "changed"
    out = _prf(int((pred & is_new).sum()), int(pred.sum()), int(is_new.sum()))
    tp = pred & is_new
    fp_pred = b["first_present"].astype(str).str[:10].to_numpy()
    out["interval_correct"] = round(float((fp_pred[tp] == true_fp[tp]).mean()), 4) if tp.any() else None
    out["month_error"] = with_constant_reference(month_error_summary(month_errors(fp_pred[tp], true_fp[tp])),
                                                 true_fp[tp], true_fp[is_new])
    # a new building whose change the library dates but calls a demolition (wrong direction)
    anyc = np.isin(status, ("changed", "demolished"))
    out["any_change"] = _prf(int((anyc & is_new).sum()), int(anyc.sum()), int(is_new.sum()))
    out["new_called_demolished"] = int(((status == "demolished") & is_new).sum())
    out["auc_score"] = _auc(b["score"].to_numpy(dtype=float), is_new)
    out["auc_confidence"] = _auc(b["confidence"].to_numpy(dtype=float), is_new)
    # the library's per-footprint score under the baseline's decision rule (Otsu over footprints)
    from changedetect.detect import threshold_otsu

    sc = b["score"].to_numpy(dtype=float)
    ok = np.isfinite(sc)
    sp = ok & (sc > threshold_otsu(sc[ok])) if ok.any() else ok
    out["score_otsu"] = _prf(int((sp & is_new).sum()), int(sp.sum()), int(is_new.sum()))
    out["not_observable"] = int((status == "not_observable").sum())
    out["not_observable_among_new"] = int(((status == "not_observable") & is_new).sum())
    out["status_counts"] = {str(k): int(v) for k, v in zip(*np.unique(status.astype(str), return_counts=True))}
    out["kind_counts_changed"] = {str(k): int(v) for k, v in
                                  zip(*np.unique(kind[status == "changed"].astype(str), return_counts=True))}
    per = {}
    for d in DATES[1:]:
        sel = is_new & (true_fp == d)
        per[d] = {"n_truth": int(sel.sum()), "predicted_new": int((pred & sel).sum()),
                  "interval_correct": int((pred & sel & (fp_pred == d)).sum())}
    out["per_interval"] = per
    res["changedetect"] = out
    bd = getattr(result, "building_dates", None)
    if bd is not None:
        bd.to_csv(out_dir / "building_dates.csv", index=False)
        b.drop(columns="geometry", errors="ignore").to_csv(out_dir / "buildings.csv")
    return res


# --------------------------------------------------------------------------- run


def _library_state(module) -> dict:
    """Version, folder and (when it is a git checkout) commit and dirtiness of changedetect."""
    import subprocess

    folder = Path(module.__file__).resolve().parent
    out = {"version": getattr(module, "__version__", None), "path": str(folder)}
    try:
        head = subprocess.run(["git", "-C", str(folder), "rev-parse", "HEAD"], capture_output=True,
                              text=True, timeout=10, check=False)
        dirty = subprocess.run(["git", "-C", str(folder), "status", "--porcelain", "--", "."],
                               capture_output=True, text=True, timeout=10, check=False)
        if head.returncode == 0:
            out["commit"] = head.stdout.strip()
            out["uncommitted_changes"] = bool(dirty.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        pass
    return out


def _share_with_core(buildings, transform, shape) -> float:
    """Share of buildings whose rasterised footprint holds a 3 x 3 pixel block.

    changedetect opens every change mask with at least a 3 x 3 structuring
    element (``min_width_m`` rounds up to a radius of 1 px), so a building
    without such a block survives only if its change spills over its outline.
    """
    from scipy import ndimage as ndi

    lab = footprint_labels(list(buildings.geometry.values), transform, shape)
    core = np.zeros(len(buildings) + 1, bool)
    st = np.ones((3, 3), bool)
    for i, sl in enumerate(ndi.find_objects(lab), start=1):
        if sl is not None:
            core[i] = ndi.binary_erosion(np.pad(lab[sl] == i, 1), structure=st).any()
    return float(core[1:].mean()) if len(buildings) else 0.0



def _monthly_tile_present(data: Path) -> bool:
    """Whether the 25-month tile of PROVENANCE.txt has images under ``data`` (it has not, so far)."""
    return any((d / MONTHLY_TILE / "images").is_dir() for d in (data / "spacenet7", data))


def run(args) -> dict:
    """Run the benchmark described in the module docstring; return every figure as a dict."""
    import rasterio

    import changedetect
    from changedetect.pipeline import Config, detect_changes

    tile = tile_dir(Path(args.data))
    keep = Path(args.keep) if getattr(args, "keep", None) else None
    with tempfile.TemporaryDirectory(prefix="sn7-") as tmp:
        work = keep if keep is not None else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        images = write_rgb(tile, work / "images")
        labels = load_labels(tile)
        truth = truth_tables(labels)
        new = truth["new"]
        with rasterio.open(images[0]) as ds:
            transform, shape = ds.transform, ds.shape
        px_area = abs(transform.a * transform.e)
        rgb = read_rgb(images)
        valid = np.all(rgb > 0, axis=(0, 1))
        areas = new.geometry.area.to_numpy() / px_area
        all_areas = labels[-1].geometry.area.to_numpy() / px_area
        data = {
            "tile": TILE, "dates": list(DATES),
            "changedetect": _library_state(changedetect),
            "buildings_per_month": {d: len(g) for d, g in zip(DATES, labels)},
            "new_per_interval": {f"{a}→{b}": int((new["first_present"] == b).sum())
                                 for a, b in itertools.pairwise(DATES)},
            "demolished_per_interval": truth["demolished"],
            "ids_that_come_back": truth["reappearing"],
            "new_area_px": {"median": round(float(np.median(areas)), 1),
                            "p10": round(float(np.percentile(areas, 10)), 1),
                            "p90": round(float(np.percentile(areas, 90)), 1),
                            "max": round(float(areas.max()), 1)},
            "all_2020_area_px_median": round(float(np.median(all_areas)), 1),
            "new_with_3x3_core": round(_share_with_core(new, transform, shape), 4),
            "pixel_size_crs_units": round(float(abs(transform.a)), 3),
            "monthly_tile_present": _monthly_tile_present(Path(args.data)),
            "month_error_note": MONTH_ERROR_NOTE,
            "band_means": {d: [round(float(v), 1) for v in rgb[t].reshape(3, -1).mean(axis=1)]
                           for t, d in enumerate(DATES)},
        }

        # 1. without footprints
        config = Config(persistence=1)
        t = time.perf_counter()
        result = detect_changes(images, work / "out_polygons", config=config)
        runtime = time.perf_counter() - t
        ch = result.changes
        if len(ch) and new.crs is not None:
            # the run works on a grid true to scale (UTM here, not the mosaics' Web Mercator)
            ch = ch.to_crs(new.crs)
        pred = ch[ch["kind"].isin(NEW_KINDS)] if len(ch) else ch
        poly = score_polygons(pred, new, px_area, px_area * shape[0] * shape[1])
        poly["runtime_s"] = round(runtime, 1)
        poly["n_changes_all_kinds"] = len(ch)
        poly["kinds"] = {str(k): int(v) for k, v in ch["kind"].value_counts().sort_index().items()} if len(ch) else {}
        poly["registration"] = {r.scene: {"model": r.model,
                                          "shift_px": [round(float(v), 3) for v in r.shift_px],
                                          "rmse_px": None if not np.isfinite(r.rmse_px) else round(float(r.rmse_px), 3),
                                          "tiepoints": f"{r.n_inliers}/{r.n_tiepoints}"}
                                for r in result.registrations}
        poly["config"] = result.run.get("effective_parameters", dataclasses.asdict(config))
        if len(ch):
            from changedetect.evaluate import iou_matrix

            any_b = iou_matrix(np.asarray(pred.geometry.values, dtype=object),
                               np.asarray(labels[-1].geometry.values, dtype=object)) > 0
            poly["hit"]["predictions_hitting_any_2020_building"] = int(any_b.any(axis=1).sum())
        dem = ch[ch["kind"] == "demolished"] if len(ch) else ch
        gone = truth["gone"]
        if len(gone) and len(dem):
            from changedetect.evaluate import iou_matrix

            h = iou_matrix(np.asarray(dem.geometry.values, dtype=object),
                           np.asarray(gone.geometry.values, dtype=object)) > 0
            gone_hit = int(h.any(axis=0).sum())
        else:
            gone_hit = 0
        on_new = 0
        if len(dem):
            from changedetect.evaluate import iou_matrix

            on_new = int((iou_matrix(np.asarray(dem.geometry.values, dtype=object),
                                     np.asarray(new.geometry.values, dtype=object)) > 0).any(axis=1).sum())
        poly["demolished"] = {"n_truth": len(gone), "n_pred": len(dem), "truth_hit": gone_hit,
                              "pred_overlapping_new_buildings": on_new}
        results = {"data": data, "without_footprints": poly,
                   "baseline_pixel_otsu": pixel_baseline(rgb, valid, transform, px_area, new)}

        # 2. with footprints
        results["with_footprints"] = run_footprints(tile, images, labels, truth, rgb, transform,
                                                    work / "out_footprints")
    return results


def _fmt(x, nd=3):
    return "   n/a" if x is None else f"{x:6.{nd}f}"


def print_table(r: dict) -> None:
    d = r["data"]
    print(f"SpaceNet 7 tile {d['tile']}, dates {', '.join(d['dates'])}")
    print(f"  buildings per month {d['buildings_per_month']}")
    print(f"  new per interval {d['new_per_interval']}; demolished {d['demolished_per_interval']}")
    print(f"  new building size (px): median {d['new_area_px']['median']}, "
          f"10-90 % {d['new_area_px']['p10']}-{d['new_area_px']['p90']} "
          f"(all 2020 buildings: median {d['all_2020_area_px_median']}); "
          f"{100 * d['new_with_3x3_core']:.0f} % of new ones hold a 3x3 px block")
    print(f"  RGB band means per month {d['band_means']}")
    lib = d["changedetect"]
    at = f"at {lib['commit'][:10]}" if lib.get("commit") else "(not a git checkout)"
    print(f"  changedetect {lib['version']} from {lib['path']} {at}"
          f"{' + uncommitted changes' if lib.get('uncommitted_changes') else ''}")
    p, b = r["without_footprints"], r["baseline_pixel_otsu"]
    print(f"\nWithout footprints: {p['n_truth']} new buildings, IoU >= 0.25 (Hungarian)")
    print(f"  {'method':34s} {'n_pred':>7s} {'P':>6s} {'R':>6s} {'F1':>6s} {'intvl':>6s} "
          f"{'hitP':>6s} {'hitR':>6s}")
    for name, s in (("changedetect (persistence=1)", p), ("baseline: Otsu |RGB diff| pixels", b)):
        print(f"  {name:34s} {s['n_pred']:7d} {_fmt(s['precision'])} {_fmt(s['recall'])} {_fmt(s['f1'])} "
              f"{_fmt(s['interval_correct'])} {_fmt(s['hit']['precision'])} {_fmt(s['hit']['recall'])}")
    print("  intvl = share of IoU matches with the right (last_absent, first_present);")
    print("  hitP/hitR = overlap figures (any positive intersection), not IoU figures")
    print(f"  image share covered by predictions: changedetect {p['hit'].get('share_of_image_covered')}, "
          f"baseline {b['hit'].get('share_of_image_covered')}")
    print(f"  changedetect: {p['n_changes_all_kinds']} changes {p['kinds']}, runtime {p['runtime_s']} s; "
          f"{p['hit'].get('predictions_hitting_any_2020_building', 0)} of {p['n_pred']} new/modified "
          "polygons overlap some 2020 building")
    dm = p["demolished"]
    print(f"  demolished: {dm['n_pred']} predicted, {dm['truth_hit']} of {dm['n_truth']} vanished Ids overlapped; "
          f"{dm['pred_overlapping_new_buildings']} of them overlap a new building")
    for name, reg in p["registration"].items():
        print(f"    {name}: {reg['model']} shift {reg['shift_px']} px, rmse {reg['rmse_px']} px, "
              f"tie points {reg['tiepoints']}")
    print_month_errors([("changedetect (persistence=1)", p.get("month_error")),
                        ("baseline: Otsu |RGB diff| pixels", b.get("month_error"))])
    f = r["with_footprints"]
    print(f"\nWith footprints (2020 labels, {f['n_footprints']} footprints, {f['n_new']} new since 2018, "
          f"prevalence {f['prevalence']:.3f}):")
    print(f"  {'method':34s} {'n_pred':>7s} {'P':>6s} {'R':>6s} {'F1':>6s} {'intvl':>6s} {'AUC':>6s}")
    rows = []
    if f.get("available") and "changedetect" in f:
        c = f["changedetect"]
        rows.append(("changedetect (status changed)", c, c.get("auc_score")))
        rows.append(("  same, changed or demolished", c["any_change"], None))
        rows.append(("  its score, Otsu over footprints", c["score_otsu"], None))
    rows += [("baseline: every footprint new", f["baseline_all_new"], None),
             ("baseline: Otsu |RGB diff| footprint", f["baseline_otsu_rgb_diff"],
              f["baseline_otsu_rgb_diff"]["auc"])]
    for name, s, auc in rows:
        print(f"  {name:34s} {s['n_pred']:7d} {_fmt(s['precision'])} {_fmt(s['recall'])} {_fmt(s['f1'])} "
              f"{_fmt(s.get('interval_correct'))} {_fmt(auc)}")
    print(f"  dating reference: most frequent interval holds {f['baseline_majority_interval']:.3f} of new buildings")
    if not f.get("available"):
        print("  footprint support not available in this changedetect: changedetect row skipped")
    elif "changedetect" in f:
        c = f["changedetect"]
        print(f"  changedetect: not_observable {c['not_observable']} ({c['not_observable_among_new']} of them new), "
              f"status {c['status_counts']}, runtime {f['runtime_s']} s")
        print(f"  {c['status_counts'].get('demolished', 0)} footprints called demolished, though every 2020 "
              f"footprint stands at the end ({c['new_called_demolished']} of them new buildings); "
              f"kinds of 'changed': {c['kind_counts_changed']}")
    elif "error" in f:
        print(f"  changedetect: {f['error']}")
    me = []
    if f.get("available") and "changedetect" in f:
        me.append(("changedetect (status changed)", f["changedetect"].get("month_error")))
    me.append(("baseline: Otsu |RGB diff| footprint", f["baseline_otsu_rgb_diff"].get("month_error")))
    print_month_errors(me)
    print("\nMonth error: truth = first of the three label months (2018-01, 2019-01, 2020-01) holding the")
    print("  building's Id. With three annual mosaics the error can only be 0, 12 or 24 months, so")
    print("  'within 1 month' means 'the right year' (and 24 cannot occur for new buildings here).")
    print(f"  The monthly tile {MONTHLY_TILE} (PROVENANCE.txt) is "
          f"{'present' if d.get('monthly_tile_present') else 'NOT in the data folder'}: "
          f"{'' if d.get('monthly_tile_present') else 'no true monthly measurement in this run.'}")


def print_month_errors(rows) -> None:
    """Rows of (method, :func:`month_error_summary` dict or None) under a small header."""
    print("  month error of first appearance, matched new buildings:")
    print(f"  {'method':34s} {'matched':>7s} {'median':>7s} {'<=1 mo':>6s} {'0 mo':>5s} {'12 mo':>5s} "
          f"{'24 mo':>5s} {'const':>6s}")
    for name, m in rows:
        if m is None:
            print(f"  {name:34s}     n/a")
            continue
        dist = m["distribution"]
        other = {k: v for k, v in dist.items() if k not in ("0", "12", "24")}
        med = "   n/a" if m["median_months"] is None else f"{m['median_months']:6.1f}"
        undated = f" ({m['matched'] - m['dated']} undated)" if m["matched"] != m["dated"] else ""
        ref = m.get("constant_reference") or {}
        print(f"  {name:34s} {m['matched']:7d} {med:>7s} {_fmt(m['within_1_month'])} {dist['0']:5d} "
              f"{dist['12']:5d} {dist['24']:5d} {_fmt(ref.get('within_1_month'))}"
              f"{' other ' + str(other) if other else ''}{undated}")
    print("  const = <=1 mo share of the same matches if all were dated at the most frequent true month")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=Path(os.environ.get("CHANGEDETECT_DATA", DEFAULT_DATA)),
                    help="folder holding spacenet7/<tile>/ (default ../shared/data)")
    ap.add_argument("--json", type=Path, help="write every figure as JSON")
    ap.add_argument("--keep", type=Path, help="keep the RGB mosaics and the outputs in this folder")
    args = ap.parse_args(argv)
    tile = tile_dir(args.data)
    if not (tile / "images").is_dir():
        print(f"Skipped: no SpaceNet 7 tile {TILE} under {args.data} (it is not shipped with the "
              "project); pass --data or set CHANGEDETECT_DATA.", file=sys.stderr)
        return 0
    results = run(args)
    print_table(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
