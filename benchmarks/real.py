"""Real detection quality: every labelled real set in ../shared/data through `detect-changes`, against baselines.

Ours is the console command with its defaults, on the files as published (the
only additions are what the command itself asks for: a manifest of dates, a
pixel size for PNG crops, the 13 OSCD bands of a date stacked into one file, as
``real_inputs.py`` does). Its polygons (``changes.gpkg``) are scored against
each set's labels; the baselines run in the same process on the same pixels:

=============  =====================================  ==============================================
set            metric                                 baselines (same run)
=============  =====================================  ==============================================
LEVIR-CD       pooled pixel F1 (full test_101 pair    per-pixel CVA + Otsu, IR-MAD chi2 + Otsu,
               and the 11 labelled crops)             PCA-k-means (on the raw pair)
DSIFN-CD       pooled pixel F1 (10 crops)             as above
OSCD           pooled pixel F1 (3 cities)             as above (the 13 bands)
xBD Joplin     destroyed houses covered (>= half of   per-footprint mean |standardised RGB
               the footprint) by a polygon, and       difference| + Otsu over the footprints
               labelled ``demolished``; with the
               footprints given (``--buildings``),
               destroyed-building F1 (status
               ``demolished``)
SpaceNet 7     new buildings (first labelled after    per-footprint mean |z-difference| first vs
               the first month), 25 months: F1 of     last month + Otsu (footprint mode); per-pixel
               new/modified polygons (IoU >= 0.25,    Otsu on it, components as polygons
               one to one), median month error;
               with the last month's footprints,
               F1 of status ``changed``
=============  =====================================  ==============================================

Also printed: the confidence reliability table of our polygons pooled over the
sets (a polygon is real when at least half of its area lies on labelled
change: changed pixels, a damaged or destroyed xBD footprint, a new SpaceNet 7
building), the same for the footprints our footprint mode flags (real: a
damaged or destroyed xBD building, a new SpaceNet 7 building), and per set the
wall time and peak memory of the commands.

Usage::

    python benchmarks/real.py                      # every set (about 5 minutes on 2 cores)
    python benchmarks/real.py --only levir xbd     # some
    python benchmarks/real.py --json real.json     # also the figures as JSON
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from accuracy_pairs import _png  # noqa: E402
from real_inputs import DATA, run_one, stack_oscd  # noqa: E402
from spacenet7 import _prf  # noqa: E402

SETS = ("levir", "dsifn", "oscd", "xbd", "spacenet7")
BINS = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0001)


# --------------------------------------------------------------------------- helpers


def _read(path: Path) -> np.ndarray:
    import rasterio

    if path.suffix == ".png":
        a = _png(path)
        return (a[..., :3].transpose(2, 0, 1) if a.ndim == 3 else a[None]).astype(np.float32)
    with rasterio.open(path) as ds:
        return ds.read().astype(np.float32)


def _changes(out: Path):
    import geopandas as gpd

    return gpd.read_file(out / "changes.gpkg")


def _grid(out: Path):
    """The working grid of a run (transform, shape, CRS) from its run.json."""
    from affine import Affine
    from rasterio.crs import CRS

    g = json.loads((out / "run.json").read_text())["grid"]
    return Affine(*g["transform"]), (g["height"], g["width"]), CRS.from_user_input(g["crs"])


def _burn(gdf, transform, shape, crs=None) -> np.ndarray:
    """Polygon index + 1 per pixel centre (0 = none), after reprojecting onto ``crs``."""
    from rasterio.features import rasterize

    if len(gdf) == 0:
        return np.zeros(shape, np.int32)
    if crs is not None and gdf.crs is not None and gdf.crs != crs:
        gdf = gdf.to_crs(crs)
    return rasterize(((g, i + 1) for i, g in enumerate(gdf.geometry.values)), out_shape=shape,
                     transform=transform, fill=0, dtype="int32")


def _reliability_pixels(ids: np.ndarray, truth: np.ndarray, confidence) -> list[tuple[float, bool]]:
    """(confidence, real) per polygon: real when at least half of its pixels are labelled change."""
    n = len(confidence)
    if n == 0:
        return []
    area = np.bincount(ids.ravel(), minlength=n + 1)
    hit = np.bincount(ids.ravel(), weights=truth.ravel().astype(float), minlength=n + 1)
    return [(float(confidence[i]), bool(area[i + 1] > 0 and hit[i + 1] >= 0.5 * area[i + 1])) for i in range(n)]


def _otsu_mask(score: np.ndarray) -> np.ndarray:
    from changedetect.detect import threshold_otsu

    return score > threshold_otsu(score[np.isfinite(score)])


def pixel_baselines(x: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    """The simple per-pixel methods on a raw pair (bands, rows, cols)."""
    from changedetect import detect
    from changedetect.radiometry import apply_normalization, fit_normalization

    yn = apply_normalization(y, fit_normalization(x, y))
    return {"CVA + Otsu": _otsu_mask(detect.cva(x, yn)),
            "IR-MAD + Otsu": _otsu_mask(detect.irmad(x, y).chi2),
            "PCA-k-means": detect.pca_kmeans(x, yn) > 0}


#: Extra options for every run of ours (``--cli``).
EXTRA: list[str] = []


class Timer:
    """Wall time and peak memory of the commands of one set."""

    def __init__(self):
        self.seconds, self.peak_mb, self.aborts, self.runs = 0.0, 0.0, [], 0

    def run(self, name: str, args: list[str], out: Path) -> bool:
        rec = run_one([*args, *EXTRA], out)
        self.runs += 1
        self.seconds += rec["seconds"]
        self.peak_mb = max(self.peak_mb, rec["peak_mb"])
        if rec["exit"] != 0:
            self.aborts.append(f"{name}: exit {rec['exit']} {rec['error'][:160]}")
        return rec["exit"] == 0

    def as_dict(self) -> dict:
        return {"seconds": round(self.seconds, 1), "peak_mb": round(self.peak_mb), "runs": self.runs,
                "aborts": self.aborts}


# --------------------------------------------------------------------------- pixel sets


def _png_pairs(folder: Path):
    for lab in sorted((folder / "label").glob("*.png")):
        a, b = folder / "A" / lab.name, folder / "B" / lab.name
        if a.exists() and b.exists():
            t = _png(lab)
            yield lab.stem, a, b, (t[..., 0] if t.ndim == 3 else t) > 127


def pixel_set(name: str, work: Path) -> dict:
    """Pooled pixel scores of ours and of the baselines over every labelled pair of a set."""
    from changedetect.evaluate import PixelScores, pixel_scores

    jobs = []                        # (pair, before, after, truth, cli arguments, label grid or None)
    if name == "levir":
        full = DATA / "levir_cd_full"
        if (full / "test_101_label.tif").exists():
            import rasterio

            with rasterio.open(full / "test_101_label.tif") as ds:
                truth, grid = ds.read(1) > 0, (ds.transform, ds.crs)
            a, b = full / "test_101_2012-06-01.tif", full / "test_101_2017-06-01.tif"
            jobs.append(("test_101", a, b, truth, [str(a), str(b)], grid))
        pngs, gsd = DATA / "levir_cd", 0.5
    elif name == "dsifn":
        pngs, gsd = DATA / "dsifn_cd", 2.0
    else:
        pngs, gsd = None, None
    if pngs is not None and (pngs / "label").exists():
        for stem, a, b, truth in _png_pairs(pngs):
            m = work / f"{name}-{stem}.csv"
            m.write_text(f"path,date\n{a},2001-01-01\n{b},2002-01-01\n")
            jobs.append((stem, a, b, truth, [str(a), str(b), "--manifest", str(m), "--pixel-size", str(gsd)],
                         None))
    if name == "oscd":
        import rasterio

        for city_dir in sorted((DATA / "oscd" / "labels").iterdir()) if (DATA / "oscd").exists() else []:
            city = city_dir.name
            base = DATA / "oscd" / "images" / city
            with rasterio.open(city_dir / "cm" / f"{city}-cm.tif") as ds:
                truth = ds.read(1) == 2
            pair = [stack_oscd(base / d, work / "oscd" / city / d) for d in ("imgs_1", "imgs_2")]
            lines = dict(ln.split(":") for ln in (base / "dates.txt").read_text().split("\n") if ":" in ln)
            d1, d2 = (lines[k].strip() for k in ("date_1", "date_2"))
            m = work / "oscd" / city / "dates.csv"
            m.write_text(f"path,date\nimgs_1/{pair[0].name},{d1[:4]}-{d1[4:6]}-{d1[6:]}\n"
                         f"imgs_2/{pair[1].name},{d2[:4]}-{d2[4:6]}-{d2[6:]}\n")
            with rasterio.open(pair[0]) as ds:
                grid = (ds.transform, ds.crs)
                assert (ds.height, ds.width) == truth.shape, (city, truth.shape)
            jobs.append((city, pair[0], pair[1], truth, [str(pair[0]), str(pair[1]), "--manifest", str(m)], grid))
    timer = Timer()
    pooled = {"ours": PixelScores(0, 0, 0, 0)}
    reliability: list = []
    for stem, a, b, truth, args, grid in jobs:
        out = work / "out" / f"{name}-{stem}"
        if timer.run(stem, args, out):
            changes = _changes(out)
            transform, crs = grid if grid is not None else _grid(out)[::2]
            ids = _burn(changes, transform, truth.shape, crs)
            pooled["ours"] += pixel_scores(ids > 0, truth)
            reliability += _reliability_pixels(ids, truth, changes["confidence"].to_numpy())
        else:
            pooled["ours"] += pixel_scores(np.zeros_like(truth), truth)
        x, y = _read(Path(a)), _read(Path(b))
        if name == "oscd":                    # the land bands (B09 water vapour, B10 cirrus out)
            keep = [i for i in range(x.shape[0]) if i not in (9, 10)]
            x, y = x[keep], y[keep]
        for method, mask in pixel_baselines(x, y).items():
            pooled[method] = pooled.get(method, PixelScores(0, 0, 0, 0)) + pixel_scores(mask, truth)
    return {"metric": "pooled pixel F1", "pairs": len(jobs),
            "scores": {k: {"f1": v.f1, "precision": v.precision, "recall": v.recall} for k, v in pooled.items()},
            "reliability": reliability, **timer.as_dict()}


# --------------------------------------------------------------------------- xBD Joplin


def footprint_baseline(x: np.ndarray, y: np.ndarray, footprints, transform) -> np.ndarray:
    """Per footprint: mean |standardised difference| over the bands inside it; Otsu over footprints."""
    from rasterio.features import rasterize
    from scipy import ndimage as ndi

    from changedetect.detect import threshold_otsu

    z = [(im - im.mean(axis=(1, 2), keepdims=True)) / im.std(axis=(1, 2), keepdims=True) for im in (x, y)]
    d = np.abs(z[1] - z[0]).mean(axis=0)
    lab = rasterize(((g, i + 1) for i, g in enumerate(footprints.geometry.values)), out_shape=d.shape,
                    transform=transform, fill=0, dtype="int32")
    s = np.asarray(ndi.mean(d, lab, np.arange(1, len(footprints) + 1)), float)
    ok = np.isfinite(s)
    return ok & (s > threshold_otsu(s[ok]))


def xbd(work: Path) -> dict:
    import geopandas as gpd
    import rasterio

    timer = Timer()
    covered = labelled = n_destroyed = 0
    fp = {"ours": [0, 0, 0], "per-footprint |z-diff| + Otsu": [0, 0, 0]}    # tp, n_pred, n_truth
    reliability, fp_reliability = [], []
    tiles = sorted({p.name.split("_")[1] for p in (DATA / "xbd_joplin").glob("joplin-tornado_*_truth.geojson")})
    for tile in tiles:
        imgs = sorted((DATA / "xbd_joplin").glob(f"joplin-tornado_{tile}_20*.tif"))
        truth_path = DATA / "xbd_joplin" / f"joplin-tornado_{tile}_truth.geojson"
        with rasterio.open(imgs[0]) as ds:
            crs, transform = ds.crs, ds.transform
        truth = gpd.read_file(truth_path).to_crs(crs)
        destroyed = (truth["subtype"] == "destroyed").to_numpy()
        damaged = truth["subtype"].isin(["destroyed", "major-damage", "minor-damage"]).to_numpy()
        n_destroyed += int(destroyed.sum())
        out = work / "out" / f"xbd-{tile}"
        if timer.run(tile, list(map(str, imgs)), out):
            ch = _changes(out).to_crs(crs)
            union = ch.geometry.union_all() if len(ch) else None
            for i in np.flatnonzero(destroyed):
                g = truth.geometry.iloc[i]
                if union is not None and g.area > 0 and g.intersection(union).area >= 0.5 * g.area:
                    covered += 1
                    overlap = ch.geometry.intersection(g).area      # the polygon covering most of it
                    labelled += ch.loc[overlap.idxmax(), "kind"] == "demolished"
            dmg = truth.geometry[damaged].union_all() if damaged.any() else None
            for _, row in ch.iterrows():
                real = dmg is not None and row.geometry.intersection(dmg).area >= 0.5 * row.geometry.area
                reliability.append((float(row["confidence"]), bool(real)))
        out_b = work / "out" / f"xbd-{tile}-buildings"
        if timer.run(f"{tile} --buildings", [*map(str, imgs), "--buildings", str(truth_path)], out_b):
            b = gpd.read_file(out_b / "buildings.geojson")
            pred = (b["status"] == "demolished").to_numpy()
            assert len(b) == len(truth)
            flagged = b["status"].isin(["changed", "demolished"]).to_numpy()
            fp_reliability += [(float(c), bool(d))
                               for c, d in zip(b["confidence"][flagged], damaged[flagged])]
            fp["ours"][0] += int((pred & destroyed).sum())
            fp["ours"][1] += int(pred.sum())
        fp["ours"][2] += int(destroyed.sum())
        base = footprint_baseline(_read(imgs[0]), _read(imgs[1]), truth, transform)
        name = "per-footprint |z-diff| + Otsu"
        fp[name][0] += int((base & destroyed).sum())
        fp[name][1] += int(base.sum())
        fp[name][2] += int(destroyed.sum())
    return {"metric": "destroyed-building F1 with footprints; destroyed houses covered without", "tiles": len(tiles),
            "destroyed": n_destroyed, "covered": covered, "covered_demolished": labelled,
            "scores": {k: _prf(*v) for k, v in fp.items()}, "reliability": reliability,
            "footprint_reliability": fp_reliability, **timer.as_dict()}


# --------------------------------------------------------------------------- SpaceNet 7


def spacenet7(work: Path) -> dict:
    import geopandas as gpd
    import rasterio

    from changedetect.evaluate import iou_matrix, match

    tile = next((DATA / "spacenet7").glob("L15-*"), None)
    if tile is None:
        return {}
    images = sorted((tile / "images").glob("*.tif"))
    months = [p.name.split("_mosaic")[0].replace("global_monthly_", "") for p in images]
    labels = [gpd.read_file(tile / "labels_match" / f"global_monthly_{m}_mosaic_{tile.name}_Buildings.geojson")
              for m in months]
    first: dict[int, int] = {}
    for t, g in enumerate(labels):
        for i in g["Id"].astype(int):
            first.setdefault(int(i), t)
    timer = Timer()
    out = work / "out" / "spacenet7"
    res: dict = {"metric": "new-building F1 (IoU >= 0.25) without footprints; F1 with the last month's",
                 "months": len(images)}
    new_rows = []
    for t in range(1, len(labels)):
        g = labels[t]
        new_rows.append(g[g["Id"].astype(int).map(lambda i: first[int(i)] == t)].assign(first_month=t))
    import pandas as pd

    new = gpd.GeoDataFrame(pd.concat(new_rows, ignore_index=True), crs=labels[-1].crs)
    res["new_buildings"] = len(new)
    reliability = []
    scores = {}
    if timer.run("25 months", list(map(str, images)), out):
        ch = _changes(out)
        ch = ch[ch["kind"].isin(["new", "modified"])].to_crs(new.crs)
        iou = iou_matrix(np.asarray(ch.geometry.values, object), np.asarray(new.geometry.values, object))
        pairs = match(iou, iou_threshold=0.25)
        scores["ours"] = _prf(len(pairs), len(ch), len(new))
        month = {m[:7].replace("_", "-"): i for i, m in enumerate(months)}
        errs = [abs(month.get(str(ch["first_present"].iloc[i])[:7], -99) - int(new["first_month"].iloc[j]))
                for i, j, _ in pairs]
        res["median_month_error"] = float(np.median(errs)) if errs else None
        allnew = new.geometry.union_all()
        for _, row in _changes(out).to_crs(new.crs).iterrows():
            real = row.geometry.intersection(allnew).area >= 0.5 * row.geometry.area
            reliability.append((float(row["confidence"]), bool(real)))
    last = labels[-1]
    fp_path = work / "spacenet7-last-month.geojson"
    last[["Id", "geometry"]].rename(columns={"Id": "building_id"}).to_file(fp_path, driver="GeoJSON")
    is_new = last["Id"].astype(int).map(lambda i: first[int(i)] > 0).to_numpy()
    out_b = work / "out" / "spacenet7-buildings"
    if timer.run("25 months --buildings", [*map(str, images), "--buildings", str(fp_path)], out_b):
        b = gpd.read_file(out_b / "buildings.geojson")
        b = b.set_index("building_id").loc[last["Id"].astype(str)]
        pred = b["status"].isin(["changed"]).to_numpy()
        scores["ours, footprints"] = _prf(int((pred & is_new).sum()), int(pred.sum()), int(is_new.sum()))
        res["footprint_reliability"] = [(float(c), bool(n))
                                        for c, n in zip(b["confidence"][pred], is_new[pred])]
    with rasterio.open(images[0]) as ds:
        x, transform, crs = ds.read([1, 2, 3]).astype(np.float32), ds.transform, ds.crs
    y = _read(images[-1])[:3]
    base = footprint_baseline(x, y, last.to_crs(crs), transform)
    scores["per-footprint |z-diff| + Otsu, footprints"] = _prf(int((base & is_new).sum()), int(base.sum()),
                                                              int(is_new.sum()))
    res.update(scores=scores, reliability=reliability, **timer.as_dict())
    return res


# --------------------------------------------------------------------------- report


def reliability_table(pairs) -> list[dict]:
    conf = np.array([c for c, _ in pairs], float)
    real = np.array([r for _, r in pairs], bool)
    rows = []
    for lo, hi in zip(BINS[:-1], BINS[1:]):
        sel = (conf >= lo) & (conf < hi)
        rows.append({"confidence": f"{lo:.1f}-{min(hi, 1):.1f}", "n": int(sel.sum()),
                     "real": round(float(real[sel].mean()), 3) if sel.any() else None})
    hi = conf >= 0.8
    rows.append({"confidence": ">= 0.8", "n": int(hi.sum()),
                 "real": round(float(real[hi].mean()), 3) if hi.any() else None})
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", choices=SETS, default=list(SETS))
    ap.add_argument("--json", type=Path)
    ap.add_argument("--work", type=Path, help="keep the outputs here (default: a temporary folder)")
    ap.add_argument("--cli", default="", metavar="ARGS",
                    help="extra detect-changes options for every run of ours, e.g. '--detector NAME' "
                         "(an experiment; the published figures use the defaults)")
    args = ap.parse_args(argv)
    EXTRA[:] = args.cli.split()
    if not DATA.is_dir():
        print(f"Skipped: no real data at {DATA} (never shipped with the project).", file=sys.stderr)
        return 0
    results = {}
    with tempfile.TemporaryDirectory(prefix="real-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        for s in args.only:
            t = time.perf_counter()
            results[s] = pixel_set(s, work) if s in ("levir", "dsifn", "oscd") else globals()[s](work)
            results[s]["benchmark_seconds"] = round(time.perf_counter() - t, 1)
            print_set(s, results[s], flush=True)
    print_summary(results)
    print_reliability("our polygons, pooled over the sets (real: at least half of the polygon on labelled change)",
                      "polygons", [p for r in results.values() for p in r.get("reliability", [])])
    print_reliability("our footprint decisions (--buildings), pooled over xBD and SpaceNet 7 (real: a damaged or "
                      "destroyed xBD building, a new SpaceNet 7 building)", "buildings",
                      [p for r in results.values() for p in r.get("footprint_reliability", [])])
    print_reliability_per_set(results)
    if args.json:
        for r in results.values():
            r["reliability"] = reliability_table(r.get("reliability", []))
            r["footprint_reliability"] = reliability_table(r.get("footprint_reliability", []))
        args.json.write_text(json.dumps(results, indent=1, default=str) + "\n")
    return 0


def print_reliability(what: str, unit: str, pairs) -> None:
    """The reliability table of (confidence, real) pairs: per confidence bin, how many and the share real."""
    print(f"\nConfidence reliability of {what}")
    print(f"  {'confidence':>10s} {unit:>9s} {'real':>6s}")
    for row in reliability_table(pairs):
        print(f"  {row['confidence']:>10s} {row['n']:9d} {'-' if row['real'] is None else format(row['real'], '.3f'):>6s}")


def print_reliability_per_set(results: dict) -> None:
    """The same tables per set, one line each: per confidence bin, how many and the share real."""
    for key, unit in (("reliability", "polygons"), ("footprint_reliability", "footprint decisions")):
        rows = {name: reliability_table(r.get(key, [])) for name, r in results.items() if r.get(key)}
        if not rows:
            continue
        bins = [row["confidence"] for row in next(iter(rows.values()))]
        print(f"\nConfidence reliability of our {unit}, per set (n, share real)")
        print(f"  {'set':10s}" + "".join(f"{b:>15s}" for b in bins))
        for name, table in rows.items():
            cells = ["-" if row["n"] == 0 else f"{row['n']}, {row['real']:.2f}" for row in table]
            print(f"  {name:10s}" + "".join(f"{c:>15s}" for c in cells))


#: Issue 16's targets: set -> (our figure, its target).
TARGETS = {"levir": ("ours", 0.5), "xbd": ("ours", 0.7), "spacenet7": ("ours, footprints", 0.6)}


def print_summary(results: dict) -> None:
    """One line per set: ours against the best baseline of the same run, and the target where one is set."""
    print("\nSummary (F1 on each set's metric)")
    print(f"  {'set':10s} {'ours':>6s} {'best baseline':>32s} {'ours >= it':>10s} {'target':>7s}")
    for name, r in results.items():
        if not r:
            continue
        ours = {k: v["f1"] for k, v in r["scores"].items() if k.startswith("ours")}
        base = {k: v["f1"] for k, v in r["scores"].items() if not k.startswith("ours")}
        if not base:                               # the set's files are not on this machine
            print(f"  {name:10s} no data")
            continue
        best = max(base, key=base.get)
        # the footprint baselines are compared with our footprint mode, the others with our polygons
        mine = ours.get("ours, footprints", ours["ours"]) if best.endswith("footprints") else ours["ours"]
        target = TARGETS.get(name)
        t = f"{target[1]:.2f}" if target else "-"
        print(f"  {name:10s} {mine:6.3f} {best[:24]:>24s} {base[best]:7.3f} {'yes' if mine >= base[best] else 'NO':>10s} {t:>7s}")


def print_set(name: str, r: dict, flush: bool = False) -> None:
    if not r:
        print(f"\n{name}: no data")
        return
    extra = ""
    if name == "xbd":
        extra = (f"; without footprints {r['covered']} of {r['destroyed']} destroyed houses covered "
                 f"({r['covered'] / max(r['destroyed'], 1):.0%}), {r['covered_demolished']} of them `demolished`")
    if name == "spacenet7":
        extra = f"; {r['new_buildings']} new buildings, median month error {r.get('median_month_error')}"
    print(f"\n{name}: {r['metric']}{extra}")
    print(f"  {'method':44s} {'F1':>6s} {'P':>6s} {'R':>6s}")
    ours = {k: v for k, v in r["scores"].items() if k.startswith("ours")}
    base = {k: v for k, v in r["scores"].items() if not k.startswith("ours")}
    for k, v in list(ours.items()) + sorted(base.items(), key=lambda kv: -kv[1]["f1"]):
        print(f"  {k:44s} {v['f1']:6.3f} {v['precision']:6.3f} {v['recall']:6.3f}")
    print(f"  commands: {r['runs']} in {r['seconds']:.1f} s, peak {r['peak_mb']:.0f} MB; aborts: "
          f"{len(r['aborts'])}{'' if not r['aborts'] else ' — ' + '; '.join(r['aborts'])}", flush=flush)


if __name__ == "__main__":
    raise SystemExit(main())
