"""The stack: ordering, references, windowed and decimated reads, other grids and CRSs."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
from affine import Affine
from rasterio.warp import Resampling, reproject
from rasterio.windows import Window

from changedetect.errors import DateError, InputError
from changedetect.io import write_raster
from changedetect.stack import compose, invert, open_stack

from conftest import T0, render, textured_world, write_scene

N = 200


@pytest.fixture(scope="module")
def world():
    return textured_world(N, seed=5)


@pytest.fixture
def pair(tmp_path, world):
    ident = np.array([[1.0, 0, 0], [0, 1.0, 0]])
    a = write_scene(tmp_path / "b_2016-01-01.tif", np.repeat(render(world, ident, (N, N))[None], 4, 0))
    b = write_scene(tmp_path / "a_2015-01-01.tif", np.repeat(render(world, ident, (N, N))[None], 4, 0))
    return a, b


def test_sorted_by_date_and_reference_choice(pair):
    s = open_stack(pair)
    assert s.dates == (dt.date(2015, 1, 1), dt.date(2016, 1, 1))
    assert s.reference == 0
    assert open_stack(pair, reference="last").reference == 1
    assert open_stack(pair, reference="2016-01-01").reference == 1
    assert open_stack(pair, reference="b_2016-01-01.tif").reference == 1
    with pytest.raises(InputError, match="2015-01-01, 2016-01-01"):
        open_stack(pair, reference="2020-01-01")
    assert s.band_index("nir") == 3 and s.band_index("red") == 2   # 4 bands: B, G, R, NIR


def test_inconsistent_inputs(tmp_path, pair):
    three = write_scene(tmp_path / "c_2017-01-01.tif", np.ones((3, N, N)))
    with pytest.raises(InputError, match="band counts differ"):
        open_stack([*pair, three])
    same = write_scene(tmp_path / "d_2016-01-01.tif", np.ones((4, N, N)))
    with pytest.raises(DateError, match="same date"):
        open_stack([*pair, same])
    with pytest.raises(InputError, match="twice"):
        open_stack([pair[0], pair[0]])


def test_window_and_decimated_reads_agree(pair):
    s = open_stack(pair)
    full, v = s.read(1)
    part, pv = s.read(1, Window(30, 50, 70, 40))
    np.testing.assert_array_equal(part, full[:, 50:90, 30:100])
    small, sv = s.read(1, out_shape=(50, 50))
    assert small.shape == (4, 50, 50) and sv.all()
    np.testing.assert_allclose(small.mean(), full.mean(), rtol=0.01)


@pytest.mark.parametrize("resampling", ["cubic", "bilinear", "nearest"])
def test_polynomial_warp_is_the_same_in_every_window(pair, resampling):
    """A scene on a second-order polynomial: every window gets exactly the whole scene's pixels,
    and they follow the polynomial (a window's read does not depend on how the grid is cut)."""
    import dataclasses

    s = open_stack(pair, resampling=resampling)
    poly = np.array([[1.0, 0.0, 0.6, 2e-4, 1e-4, 0.0], [0.0, 1.0, -0.4, 0.0, -1e-4, 3e-4]])
    s = dataclasses.replace(s, ref_to_scene=(s.ref_to_scene[0], poly))
    full, fv = s.read(1)
    for win in (Window(30, 50, 70, 40), Window(0, 0, 64, 64), Window(131, 7, 69, 120)):
        r0, c0 = int(win.row_off), int(win.col_off)
        part, pv = s.read(1, win)
        sl = (slice(r0, r0 + int(win.height)), slice(c0, c0 + int(win.width)))
        np.testing.assert_array_equal(part, full[(slice(None),) + sl])
        np.testing.assert_array_equal(pv, fv[sl])
    # and the pixels are the scene's at the polynomial's positions (bilinear: exact on a ramp)
    if resampling == "bilinear":
        ramp = s.scenes[1]
        import rasterio

        with rasterio.open(ramp.path) as src:
            img = src.read(1).astype(float)
        jj, ii = np.meshgrid(np.arange(N) + 0.5, np.arange(N) + 0.5)
        from changedetect.stack import apply_mapping

        col, row = apply_mapping(poly, jj, ii)
        inner = fv & (col > 2) & (col < N - 3) & (row > 2) & (row < N - 3)
        ci, ri = np.floor(col - 0.5).astype(int), np.floor(row - 0.5).astype(int)
        fx, fy = col - 0.5 - ci, row - 0.5 - ri
        ci, ri = np.clip(ci, 0, N - 2), np.clip(ri, 0, N - 2)
        want = ((1 - fy) * ((1 - fx) * img[ri, ci] + fx * img[ri, ci + 1])
                + fy * ((1 - fx) * img[ri + 1, ci] + fx * img[ri + 1, ci + 1]))
        np.testing.assert_allclose(full[0][inner], want[inner], rtol=1e-4, atol=1e-2)


def test_scene_on_another_grid_reads_onto_the_reference(tmp_path, world):
    """A 0.6 m scene with another origin, exact georeferencing: warps back onto the 0.5 m grid."""
    ident = np.array([[1.0, 0, 0], [0, 1.0, 0]])
    ref = write_scene(tmp_path / "a_2015-01-01.tif", render(world, ident, (N, N)), dtype="float32")
    t = Affine(0.6, 0, T0.c - 2.3, 0, -0.6, T0.f + 1.7)
    m = np.array([[0.5 / 0.6, 0, 2.3 / 0.6], [0, 0.5 / 0.6, 1.7 / 0.6]])
    other = write_scene(tmp_path / "b_2016-01-01.tif", render(world, m, (170, 170)),
                        transform=t, dtype="float32")
    s = open_stack([ref, other])
    np.testing.assert_allclose(s.ref_to_scene[1], m, atol=1e-9)
    a, va = s.read(0)
    b, vb = s.read(1)
    inner = va & vb
    inner[:10] = inner[-10:] = False
    inner[:, :10] = inner[:, -10:] = False
    err = np.abs(a[0][inner] - b[0][inner])
    assert np.median(err) < 0.02 * np.median(a[0][inner])


def test_scene_in_another_crs(tmp_path, world):
    ident = np.array([[1.0, 0, 0], [0, 1.0, 0]])
    img = render(world, ident, (N, N)).astype("float32")
    ref = write_scene(tmp_path / "a_2015-01-01.tif", img, dtype="float32")
    from rasterio.warp import calculate_default_transform
    t, w, h = calculate_default_transform("EPSG:32637", "EPSG:4326", N, N, *rasterio_bounds())
    out = np.zeros((h, w), "float32")
    reproject(img, out, src_transform=T0, src_crs="EPSG:32637", dst_transform=t, dst_crs="EPSG:4326",
              resampling=Resampling.cubic, dst_nodata=0)
    geo = write_raster(tmp_path / "b_2016-01-01.tif", out[None], transform=t, crs="EPSG:4326", nodata=0)
    s = open_stack([ref, geo])
    a, va = s.read(0)
    b, vb = s.read(1)
    inner = va & vb
    inner[:15] = inner[-15:] = False
    inner[:, :15] = inner[:, -15:] = False
    assert inner.mean() > 0.5
    assert np.corrcoef(a[0][inner], b[0][inner])[0, 1] > 0.95


def rasterio_bounds():
    return (T0.c, T0.f - 0.5 * N, T0.c + 0.5 * N, T0.f)


def test_compose_invert():
    m = np.array([[1.1, 0.1, 3.0], [-0.05, 0.9, -2.0]])
    np.testing.assert_allclose(compose(m, invert(m)), [[1, 0, 0], [0, 1, 0]], atol=1e-12)
