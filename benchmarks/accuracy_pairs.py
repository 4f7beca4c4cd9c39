"""Pixel accuracy of the change kernels and of the default pair pipeline on labelled real pairs.

Datasets (in ``../shared/data``, or the folder given by ``--data`` or
``CHANGEDETECT_DATA``; never shipped with the project):

* ``levir_cd``: LEVIR-CD crops, 256 × 256 RGB, 0.5 m, building changes (11 labelled pairs);
* ``dsifn_cd``: DSIFN-CD, 256 × 256 RGB, land-cover changes (10 pairs);
* ``oscd``: Onera Satellite Change Detection, Sentinel-2 L1C, 13 bands resampled
  (bilinear) onto the 10 m grid, urban changes (bercy, paris, rennes).

For every kernel + threshold, and for :func:`changedetect.pair.detect_pair` with
its defaults (radiometric normalisation + kernel + threshold + cleanup), the
confusion counts of all pairs of a dataset are summed and the pooled F1, IoU
and Cohen's kappa reported. Kernels other than IR-MAD and structural (which
are invariant to gains and offsets) run on the after image normalised to the
before one by IR-MAD pseudo-invariant pixels, as the pipeline does.

Usage::

    python benchmarks/accuracy_pairs.py            # the table in benchmarks/README.md
    python benchmarks/accuracy_pairs.py --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from changedetect import detect  # noqa: E402
from changedetect.evaluate import PixelScores, pixel_scores  # noqa: E402
from changedetect.pair import PairConfig, detect_pair, roughening_scale  # noqa: E402
from changedetect.radiometry import apply_normalization, fit_normalization  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "data"


# --------------------------------------------------------------------------- loaders


def _png(path: Path) -> np.ndarray:
    from skimage.io import imread

    return np.asarray(imread(path))


def load_rgb_pairs(folder: Path):
    """(name, before, after, truth) for every labelled A/B/label triple, (3, rows, cols) float32."""
    for lab in sorted((folder / "label").glob("*.png")):
        a, b = folder / "A" / lab.name, folder / "B" / lab.name
        if not (a.exists() and b.exists()):
            continue
        x = _png(a)[..., :3].transpose(2, 0, 1).astype(np.float32)
        y = _png(b)[..., :3].transpose(2, 0, 1).astype(np.float32)
        t = _png(lab)
        t = (t[..., 0] if t.ndim == 3 else t) > 127
        yield lab.stem, x, y, t


# the ten land-surface bands and B01 (coastal aerosol), which sees clouds and haze rather
# than the ground: detect_pair uses it for the cloud mask only. B09 (water vapour) and
# B10 (cirrus) are left out.
S2_BANDS = ["B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12", "B01"]
S2_CONFIG = {"rgb": (2, 1, 0), "nir": 6, "cloud_band": 10}


def _read_s2(folder: Path, shape) -> np.ndarray:
    import rasterio
    from rasterio.enums import Resampling

    order = S2_BANDS
    files = {p.stem.rsplit("_", 1)[-1]: p for p in folder.glob("*.tif")}
    bands = []
    for name in order:
        with rasterio.open(files[name]) as ds:
            bands.append(ds.read(1, out_shape=shape, resampling=Resampling.bilinear).astype(np.float32))
    return np.stack(bands)


def load_oscd(folder: Path):
    """(city, before, after, truth): 11 bands (S2_BANDS) on the 10 m grid (B02's), truth from <city>-cm.tif."""
    import rasterio

    for city_dir in sorted((folder / "labels").iterdir()):
        city = city_dir.name
        with rasterio.open(city_dir / "cm" / f"{city}-cm.tif") as ds:
            cm = ds.read(1)
        truth = cm == 2
        img = folder / "images" / city
        x = _read_s2(img / "imgs_1", truth.shape)
        y = _read_s2(img / "imgs_2", truth.shape)
        yield city, x, y, truth


DATASETS = {"levir_cd": lambda d: load_rgb_pairs(d / "levir_cd"),
            "dsifn_cd": lambda d: load_rgb_pairs(d / "dsifn_cd"),
            "oscd": lambda d: load_oscd(d / "oscd")}
#: band roles the user states for each dataset (RGB PNGs: the PairConfig defaults)
BAND_ROLES = {"levir_cd": {}, "dsifn_cd": {}, "oscd": S2_CONFIG}
#: ground pixel size (m) the user states for each dataset (as real.py's --pixel-size): it sets the
#: scale of detect_pair's roughening channel, as the pipeline's PairDetector does from the grid
GSD = {"levir_cd": 0.5, "dsifn_cd": 2.0, "oscd": 10.0}


# --------------------------------------------------------------------------- methods


def _normalised(x, y):
    return apply_normalization(y, fit_normalization(x, y))


def _thresholded(score, rule, n_bands, statistic="cva", alpha=1e-3):
    t = detect.choose_threshold(score, method=rule, n_bands=n_bands, statistic=statistic, alpha=alpha)
    return score > t.value


def kernel_grid():
    """name -> fn(before, after, after_normalised) -> bool mask: every kernel with its thresholds."""
    grid = {}
    for rule in ("otsu", "kittler", "gmm", "chi2"):
        grid[f"cva + {rule}"] = (lambda r: lambda x, y, yn: _thresholded(detect.cva(x, yn), r, x.shape[0]))(rule)
    for rule in ("otsu", "kittler", "gmm"):
        grid[f"log_ratio + {rule}"] = (lambda r: lambda x, y, yn: _thresholded(
            detect.change_score(x, yn, method="log_ratio"), r, x.shape[0]))(rule)
    grid["irmad + chi2 (p<0.001)"] = lambda x, y, yn: detect.irmad(x, y).pvalue < 1e-3
    grid["irmad + chi2 (p<0.05)"] = lambda x, y, yn: detect.irmad(x, y).pvalue < 0.05
    for rule in ("otsu", "kittler", "gmm"):
        grid[f"irmad + {rule}"] = (lambda r: lambda x, y, yn: _thresholded(detect.irmad(x, y).chi2, r,
                                                                             x.shape[0]))(rule)
    grid["pca_kmeans (h=3) + kmeans"] = lambda x, y, yn: detect.pca_kmeans(x, yn) > 0
    grid["pca_kmeans (h=5) + kmeans"] = lambda x, y, yn: detect.pca_kmeans(x, yn, block=5) > 0
    for rule in ("otsu", "kittler", "gmm"):
        grid[f"structural + {rule}"] = (lambda r: lambda x, y, yn: _thresholded(detect.structural(x, y), r,
                                                                                  x.shape[0]))(rule)
    return grid


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=Path(os.environ.get("CHANGEDETECT_DATA", DEFAULT_DATA)))
    ap.add_argument("--datasets", nargs="*", default=list(DATASETS))
    ap.add_argument("--only-default", action="store_true", help="score only the default pipeline")
    ap.add_argument("--json", type=Path, help="also write the scores as JSON")
    args = ap.parse_args(argv)
    if not args.data.is_dir():
        print(f"Skipped: no labelled pairs at {args.data} (they are not shipped with the project); "
              "pass --data or set CHANGEDETECT_DATA.", file=sys.stderr)
        return 0
    grid = {} if args.only_default else kernel_grid()
    names = ["default: detect_pair()"] + list(grid)
    results: dict[str, dict[str, dict]] = {}
    times: dict[str, float] = {}
    configs: dict[str, dict] = {}
    for ds in args.datasets:
        config = PairConfig(**BAND_ROLES[ds], roughening=roughening_scale(GSD[ds]))
        configs[ds] = config.to_dict()
        pooled = {n: PixelScores(0, 0, 0, 0) for n in names}
        npairs = 0
        t0 = time.perf_counter()
        for name, x, y, truth in DATASETS[ds](args.data):
            npairs += 1
            pooled["default: detect_pair()"] += pixel_scores(detect_pair(x, y, config=config).mask, truth)
            if grid:
                if config.cloud_band is not None:      # the kernels see the land bands only
                    keep = [b for b in range(x.shape[0]) if b != config.cloud_band]
                    x, y = x[keep], y[keep]
                yn = _normalised(x, y)
                for n, fn in grid.items():
                    pooled[n] += pixel_scores(fn(x, y, yn), truth)
        times[ds] = time.perf_counter() - t0
        results[ds] = {n: s.as_dict() for n, s in pooled.items()}
        print(f"\n{ds}: {npairs} pairs, pooled over {pooled[names[0]].n} pixels "
              f"({100 * (pooled[names[0]].tp + pooled[names[0]].fn) / max(pooled[names[0]].n, 1):.1f} % changed), "
              f"{times[ds]:.1f} s")
        print(f"  {'method':34s} {'F1':>6s} {'IoU':>6s} {'kappa':>6s} {'P':>6s} {'R':>6s}")
        for n in names:
            s = pooled[n]
            print(f"  {n:34s} {s.f1:6.3f} {s.iou:6.3f} {s.kappa:6.3f} {s.precision:6.3f} {s.recall:6.3f}")
    for ds, c in configs.items():
        print(f"\n{ds} configuration: {c}")
    if args.json:
        args.json.write_text(json.dumps({"config": configs, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
