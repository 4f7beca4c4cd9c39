"""Is a scene-relative decision over given footprints safe? Quiet-interval controls on real data.

The per-footprint baseline of ``real.py`` (mean |standardised RGB difference| over a
footprint, Otsu's threshold over the footprints) beats our footprint mode on xBD Joplin
and SpaceNet 7. Before shipping a rule like it we ask what it does where (almost)
nothing changed. SpaceNet 7 gives real controls: the last month's footprints, scored
between two months a month apart, where labels say 0, 1 or 10 buildings are new.

For each pair the script prints, for three decisions over the footprints:

* ``otsu``: Otsu's threshold over the footprint scores (the baseline);
* ``otsu | null q99``: Otsu, but never below the 99th percentile of a background null:
  the same footprint masks shifted by 40 px in eight directions onto pixels outside every
  footprint, so the null has the footprints' sizes and the scene's own between-date spread;
* ``otsu | null q95``: the same with the 95th percentile,

the F1 against the labels and the number of footprints flagged. Nothing here is tuned:
the point is whether any of the rules flags few buildings on the quiet pairs.

Usage::

    python benchmarks/footprint_rules.py          # about 40 s
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from real_inputs import DATA  # noqa: E402

SHIFTS = [(40, 0), (-40, 0), (0, 40), (0, -40), (40, 40), (-40, -40), (40, -40), (-40, 40)]


def _rgb(path):
    import rasterio

    with rasterio.open(path) as ds:
        return ds.read([1, 2, 3]).astype(np.float32), ds.transform, ds.crs


def scores(x, y, footprints, transform):
    """Per footprint: mean |z-difference| (the baseline's score), and the shifted-mask background null."""
    from rasterio.features import rasterize
    from scipy import ndimage as ndi

    z = [(im - im.mean(axis=(1, 2), keepdims=True)) / im.std(axis=(1, 2), keepdims=True) for im in (x, y)]
    d = np.abs(z[1] - z[0]).mean(axis=0)
    lab = rasterize(((g, i + 1) for i, g in enumerate(footprints.geometry.values)), out_shape=d.shape,
                    transform=transform, fill=0, dtype="int32")
    idx = np.arange(1, len(footprints) + 1)
    ones = np.ones_like(d)
    s = np.asarray(ndi.mean(d, lab, idx), float)
    size = np.asarray(ndi.sum(ones, lab, idx))
    null = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)        # empty labels: NaN, dropped below
        for dy, dx in SHIFTS:
            moved = np.roll(lab, (dy, dx), axis=(0, 1))
            moved[lab > 0] = 0
            m, c = np.asarray(ndi.mean(d, moved, idx)), np.asarray(ndi.sum(ones, moved, idx))
            null.append(np.where(c >= 0.8 * size, m, np.nan))
    null = np.concatenate(null)
    return s, null[np.isfinite(null)]


def _f1(pred, truth):
    tp = int((pred & truth).sum())
    return 2 * tp / max(int(pred.sum()) + int(truth.sum()), 1)


def rules(s, truth, null) -> dict:
    from skimage.filters import threshold_otsu

    ok = np.isfinite(s)
    s, truth = s[ok], truth[ok]
    t = float(threshold_otsu(s))
    out = {}
    for name, th in (("otsu", t), ("otsu | null q99", max(t, float(np.percentile(null, 99)))),
                     ("otsu | null q95", max(t, float(np.percentile(null, 95))))):
        pred = s > th
        out[name] = (_f1(pred, truth), int(pred.sum()))
    return out


def main() -> int:
    import geopandas as gpd

    rows = []
    for tile in ("00000001", "00000002"):
        imgs = sorted((DATA / "xbd_joplin").glob(f"joplin-tornado_{tile}_20*.tif"))
        if len(imgs) != 2:
            continue
        x, tr, crs = _rgb(imgs[0])
        y, _, _ = _rgb(imgs[1])
        truth = gpd.read_file(DATA / "xbd_joplin" / f"joplin-tornado_{tile}_truth.geojson").to_crs(crs)
        s, null = scores(x, y, truth, tr)
        destroyed = (truth["subtype"] == "destroyed").to_numpy()
        rows.append((f"xBD {tile}, 2009 -> 2011", len(truth), int(destroyed.sum()),
                     rules(s, destroyed, null)))
    tile = next((DATA / "spacenet7").glob("L15-*"), None)
    if tile is not None:
        imgs = sorted((tile / "images").glob("*.tif"))
        labels = sorted((tile / "labels_match").glob("*.geojson"))
        first: dict[int, int] = {}
        for k, p in enumerate(labels):
            for i in gpd.read_file(p)["Id"].astype(int):
                first.setdefault(int(i), k)
        last = gpd.read_file(labels[-1])
        for a, b in ((0, 24), (0, 12), (0, 1), (5, 6), (10, 12)):
            x, tr, crs = _rgb(imgs[a])
            y, _, _ = _rgb(imgs[b])
            fp = last.to_crs(crs)
            month = fp["Id"].astype(int).map(first).to_numpy()
            new = (month > a) & (month <= b)
            s, null = scores(x, y, fp, tr)
            rows.append((f"SpaceNet 7, month {a} -> {b}", len(fp), int(new.sum()), rules(s, new, null)))
    if not rows:
        print(f"no xBD or SpaceNet 7 files under {DATA}")
        return 1
    names = list(rows[0][3])
    print("| pair | footprints | changed | " + " | ".join(f"{n}: F1, flagged" for n in names) + " |")
    print("| --- | ---: | ---: | " + " | ".join("---:" for _ in names) + " |")
    for label, n, pos, r in rows:
        print(f"| {label} | {n} | {pos} | " + " | ".join(f"{r[k][0]:.3f}, {r[k][1]}" for k in names) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
