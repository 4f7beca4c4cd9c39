"""Per-pixel products: the first-change date and change-count rasters, and the block size."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pytest

from changedetect.config import Config
from changedetect.detector import change_count
from changedetect.series import pixel_block
from changedetect.timeline import step_change


def test_change_count_by_hand():
    """Flat: 0; one lasting step: 1; built then demolished: 2; a one-date blip: 0 more."""
    rng = np.random.default_rng(0)
    series = {
        "flat": [0] * 10,
        "built": [0] * 4 + [40] * 6,
        "built_then_demolished": [0] * 3 + [40] * 4 + [0] * 3,
        "built_with_blip": [0] * 4 + [40, 40, 90, 40, 40, 40],
    }
    n_t = 10
    img = np.zeros((n_t, 2, 1, len(series)), np.float32)
    for j, v in enumerate(series.values()):
        img[:, :, 0, j] = np.asarray(v, np.float32)[:, None]
    img += rng.normal(0, 0.5, img.shape).astype(np.float32)
    usable = np.ones((n_t, 1, len(series)), bool)
    noise, min_fstat = np.array([1.0, 1.0]), 3.0
    steps = step_change(img, usable, scale=noise, min_after=2)
    changed = (steps.magnitude >= 14) & (steps.fstat >= min_fstat)
    count = change_count(img, usable, steps.first_present, changed, noise=noise, min_magnitude=14,
                         min_fstat=min_fstat, persistence=2)
    assert count.dtype == np.uint8
    assert dict(zip(series, count[0].tolist())) == {
        "flat": 0, "built": 1, "built_then_demolished": 2, "built_with_blip": 1}


def test_block_shrinks_with_many_dates_and_memory_stays_in_budget():
    class S:                    # a stack of n dates and 4 bands
        count = 4

        def __init__(self, n):
            self.n = n

        def __len__(self):
            return self.n

    cfg = Config()
    assert pixel_block(S(8), block=cfg.block, memory_mb=cfg.memory_mb) == cfg.block
    blocks = {n: pixel_block(S(n), block=cfg.block, memory_mb=cfg.memory_mb) for n in (24, 100, 400)}
    assert blocks[24] > blocks[100] > blocks[400] >= 64
    for n, b in blocks.items():         # the float32 series of a block, times 3, within the budget
        if b > 64:
            assert 3 * n * 5 * 4 * b * b <= cfg.memory_mb * 2**20


def test_rasters_agree_with_the_changes_and_the_record(site, site_result):
    import hashlib

    import rasterio
    from rasterio.features import geometry_mask

    result, out = site_result
    run = json.loads((out / "run.json").read_text())
    for name in ("first_change.tif", "change_count.tif"):
        assert run["outputs"][name] == hashlib.sha256((out / name).read_bytes()).hexdigest()
    with rasterio.open(out / "first_change.tif") as ds:
        first, transform, tags = ds.read(1), ds.transform, ds.tags()
        assert ds.nodata == -1 and ds.crs == result.changes.crs
    with rasterio.open(out / "change_count.tif") as ds:
        count = ds.read(1)
    dates = [dt.date.fromisoformat(d) for d in tags["DATES"].split(",")]
    assert dates == list(site.dates)
    days = {(d - dt.date(1970, 1, 1)).days: d for d in dates}
    assert set(np.unique(first)) - {-1} <= set(days)
    assert ((first >= 0) == (count >= 1)).all() and count.max() <= 3
    # inside every detected change, most changed pixels carry the change's first_present date
    for _, c in result.changes.iterrows():
        inside = ~geometry_mask([c.geometry], out_shape=first.shape, transform=transform)
        vals = first[inside & (first >= 0)]
        assert vals.size > 0.3 * inside.sum(), c.change_id
        mode = np.bincount(vals - vals.min()).argmax() + vals.min()
        assert days[int(mode)].isoformat() == c.first_present, c.change_id


def test_pixel_products_can_be_turned_off(site, tmp_path):
    from changedetect.pipeline import detect_changes

    r = detect_changes(site.images, tmp_path / "o", config=Config(pixel_products=False,
                                                                  coregister="none"))
    assert "first_change.tif" not in r.outputs and not (tmp_path / "o" / "first_change.tif").exists()
    with pytest.raises(Exception, match="memory_mb"):
        Config(memory_mb=1)
