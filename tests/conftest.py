"""Shared fixtures: small scenes with known misregistration, and a generated site."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from affine import Affine
from scipy import ndimage as ndi

from hypothesis import settings

from changedetect.io import write_raster
from changedetect.stack import compose, invert

# property tests draw the same examples on every run: CI passes or fails on the code, not the draw
settings.register_profile("deterministic", derandomize=True)
settings.load_profile("deterministic")

CRS = "EPSG:32637"
T0 = Affine(0.5, 0, 262000.0, 0, -0.5, 3730000.0)
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def textured_world(n: int, *, seed: int = 0, pad: int = 100) -> np.ndarray:
    """A smooth random texture with rectangular 'buildings', (n + 2 pad)^2."""
    rng = np.random.default_rng(seed)
    size = n + 2 * pad
    base = ndi.gaussian_filter(rng.random((size, size)), 3) * 4000
    for _ in range(size * size // 4000):
        r, c = rng.integers(0, size - 40, 2)
        h, w = rng.integers(8, 40, 2)
        base[r:r + h, c:c + w] += rng.uniform(-900, 900)
    return ndi.gaussian_filter(base, 0.8)


def render(world: np.ndarray, m: np.ndarray, shape: tuple[int, int], *, pad: int = 100) -> np.ndarray:
    """Scene whose pixel p shows the reference content at inv(m)(p) (rasterio convention)."""
    mi = invert(m)
    rr, cc = np.mgrid[0:shape[0], 0:shape[1]] + 0.5
    q = mi @ np.stack([cc.ravel(), rr.ravel(), np.ones(cc.size)])
    out = ndi.map_coordinates(world, [q[1] - 0.5 + pad, q[0] - 0.5 + pad], order=3, mode="nearest")
    return out.reshape(shape)


def misregistration(dx: float, dy: float, rot_deg: float, centre: float) -> np.ndarray:
    """ref_to_scene for a rotation about the centre followed by a shift (dx, dy) in pixels."""
    th = math.radians(rot_deg)
    rot = np.array([[math.cos(th), -math.sin(th), 0.0], [math.sin(th), math.cos(th), 0.0]])
    to_c = np.array([[1.0, 0, -centre], [0, 1.0, -centre]])
    back = np.array([[1.0, 0, centre + dx], [0, 1.0, centre + dy]])
    return compose(back, compose(rot, to_c))


def residual_px(pred: np.ndarray, true: np.ndarray, n: int, step: int = 16) -> float:
    """RMSE in reference pixels of inv(true)(pred(q)) - q over a grid of points q."""
    g = np.array([(x, y, 1.0) for x in np.arange(step / 2, n, step) for y in np.arange(step / 2, n, step)]).T
    p = pred @ g
    back = invert(true) @ np.vstack([p, np.ones(g.shape[1])])
    return float(np.sqrt(np.mean(np.sum((back - g[:2]) ** 2, axis=0))))


@pytest.fixture(scope="session")
def site(tmp_path_factory):
    """A small generated site with ground truth (shared by the pipeline and CLI tests)."""
    from changedetect.synthetic import make_site

    return make_site(tmp_path_factory.mktemp("site"), seed=3, size=256)


@pytest.fixture(scope="session")
def site_result(site, tmp_path_factory):
    """The pipeline run once on the small site."""
    from changedetect.pipeline import detect_changes

    out = tmp_path_factory.mktemp("out")
    return detect_changes(site.images, out), out


def write_scene(path: Path, img: np.ndarray, *, transform=T0, crs=CRS, nodata=0, dtype="uint16", tags=None):
    arr = np.asarray(img)
    if arr.ndim == 2:
        arr = arr[None]
    if np.dtype(dtype).kind in "iu":
        info = np.iinfo(dtype)
        arr = np.clip(np.round(arr), max(1, info.min), info.max)
    return write_raster(path, arr.astype(dtype), transform=transform, crs=crs, nodata=nodata, tags=tags)
