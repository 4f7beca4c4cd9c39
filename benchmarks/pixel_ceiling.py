"""How far per-pixel evidence can go on LEVIR-CD and DSIFN-CD: a supervised ceiling for our features.

Our two-image detector is unsupervised: no labels of any set are used to build
it. This script asks what the same kind of evidence could reach if it were
*supervised*: per-pixel features of the kinds the detector reads (each image in
its own robust units; CVA and brightness change at 0-4 px smoothing; greyness,
brightness, local texture and gradient energy of each date and their changes;
chromaticity), each also smoothed at 4, 8 and 16 px for context, fed to a
gradient-boosted classifier trained on the *other* pairs of the same set and
scored on the held-out pair (leave one pair out; LEVIR-CD with the full 1024 px
test_101 pair, as ``real.py`` pools it). Pooled pixel F1 at
probability 0.5 and at the best threshold are printed, with ``detect_pair``'s
unsupervised mask on the same pixels.

It needs LightGBM, which changedetect does not depend on; run it in a separate
environment (``pip install lightgbm``) with the project importable. Nothing
here is shipped or used by the library: the labels' licences (LEVIR-CD
academic use) would not allow it, and a model fitted to 22 pairs would not
say anything about other imagery. It is a measure of the gap, not a method.

Usage::

    python benchmarks/pixel_ceiling.py            # about 3 minutes on 2 cores
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from accuracy_pairs import DEFAULT_DATA, GSD, load_rgb_pairs  # noqa: E402

from changedetect.masks import greyness  # noqa: E402
from changedetect.pair import PairConfig, detect_pair, roughening_scale  # noqa: E402


def _z(img: np.ndarray) -> np.ndarray:
    flat = img.reshape(img.shape[0], -1)
    med = np.median(flat, axis=1)
    q1, q3 = np.percentile(flat, [25, 75], axis=1)
    return (img - med[:, None, None]) / np.maximum((q3 - q1) / 1.349, 1e-6)[:, None, None]


def _std(a: np.ndarray, size: int) -> np.ndarray:
    m = ndi.uniform_filter(a, size)
    return np.sqrt(np.maximum(ndi.uniform_filter(a * a, size) - m * m, 0))


def _energy(lum: np.ndarray, s: float) -> np.ndarray:
    g = np.hypot(ndi.sobel(lum, 0), ndi.sobel(lum, 1))
    return np.log1p(ndi.gaussian_filter(g, s))


def features(x: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    """Per-pixel features of a pair (bands, rows, cols), RGB."""
    f: dict[str, np.ndarray] = {}
    zb, za = _z(x[:3]), _z(y[:3])
    lb, la = zb.mean(0), za.mean(0)
    for s in (0, 1, 2, 4):
        b = ndi.gaussian_filter(zb, (0, s, s)) if s else zb
        a = ndi.gaussian_filter(za, (0, s, s)) if s else za
        f[f"cva{s}"] = np.sqrt(((a - b) ** 2).sum(0))
        f[f"dlum{s}"] = (a - b).mean(0)
    f["grey_after"], f["grey_before"] = greyness(y, (0, 1, 2)), greyness(x, (0, 1, 2))
    f["lum_after"], f["lum_before"] = ndi.gaussian_filter(la, 2), ndi.gaussian_filter(lb, 2)
    for s in (3, 7):
        f[f"std_after{s}"], f[f"std_before{s}"] = _std(la, s), _std(lb, s)
        f[f"dstd{s}"] = f[f"std_after{s}"] - f[f"std_before{s}"]
    for s in (2, 4):
        f[f"energy_after{s}"], f[f"energy_before{s}"] = _energy(la, s), _energy(lb, s)
        f[f"denergy{s}"] = f[f"energy_after{s}"] - f[f"energy_before{s}"]
    for k, img in (("after", y), ("before", x)):
        tot = img[:3].sum(0) + 1e-3
        f[f"r_{k}"], f[f"g_{k}"] = ndi.gaussian_filter(img[0] / tot, 2), ndi.gaussian_filter(img[1] / tot, 2)
    for k in ("grey_after", "grey_before", "std_after3", "std_before3", "cva1", "dlum1", "lum_after",
              "lum_before", "denergy2"):
        for s in (4, 8, 16):
            f[f"{k}_ctx{s}"] = ndi.gaussian_filter(f[k], s)
    return f


def _f1(tp: int, n_pred: int, n_true: int) -> float:
    return 2 * tp / max(n_pred + n_true, 1)


def _best_f1(p: np.ndarray, t: np.ndarray) -> float:
    o = np.argsort(-p, kind="mergesort")
    tp = np.cumsum(t[o])
    k = np.arange(1, len(p) + 1)
    return float(np.max(2 * tp / (k + t.sum())))


def main() -> int:
    try:
        import lightgbm as lgb
    except ImportError:
        print("Skipped: needs LightGBM (pip install lightgbm in a separate environment).", file=sys.stderr)
        return 0
    if not DEFAULT_DATA.is_dir():
        print(f"Skipped: no real data at {DEFAULT_DATA}.", file=sys.stderr)
        return 0
    for ds in ("levir_cd", "dsifn_cd"):
        t0 = time.perf_counter()
        pairs = list(load_rgb_pairs(DEFAULT_DATA / ds))
        full = DEFAULT_DATA / "levir_cd_full"
        if ds == "levir_cd" and (full / "test_101_label.tif").exists():      # as real.py pools it
            import rasterio

            read = [rasterio.open(full / f"test_101_{d}.tif").read().astype(np.float32)
                    for d in ("2012-06-01", "2017-06-01")]
            with rasterio.open(full / "test_101_label.tif") as lab:
                pairs.append(("test_101", read[0], read[1], lab.read(1) > 0))
        cfg = PairConfig(roughening=roughening_scale(GSD[ds]))
        X, T, G, ours = [], [], [], []
        for i, (name, x, y, t) in enumerate(pairs):
            f = features(x, y)
            X.append(np.stack([v.ravel() for v in f.values()], 1).astype(np.float32))
            T.append(t.ravel())
            G.append(np.full(t.size, i))
            ours.append(detect_pair(x, y, config=cfg).mask.ravel())
        X, T, G, ours = np.concatenate(X), np.concatenate(T), np.concatenate(G), np.concatenate(ours)
        pred = np.zeros(len(T))
        for g in np.unique(G):
            train = np.flatnonzero(G != g)[::7]
            model = lgb.LGBMClassifier(n_estimators=300, num_leaves=63, learning_rate=0.05, verbose=-1,
                                       random_state=0, deterministic=True, n_jobs=1)
            model.fit(X[train], T[train])
            pred[G == g] = model.predict_proba(X[G == g])[:, 1]
        hit = pred > 0.5
        print(f"{ds}: {len(pairs)} pairs, {X.shape[1]} features, {time.perf_counter() - t0:.0f} s")
        at_half = _f1(int((hit & T).sum()), int(hit.sum()), int(T.sum()))
        print(f"  supervised, leave one pair out: pooled F1 {at_half:.3f} at p > 0.5, "
              f"{_best_f1(pred, T):.3f} at the best threshold")
        print(f"  detect_pair (unsupervised, defaults): pooled F1 "
              f"{_f1(int((ours & T).sum()), int(ours.sum()), int(T.sum())):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
