"""Co-registration against known shifts, rotations and grids."""

from __future__ import annotations

import numpy as np
import pytest
from affine import Affine
from scipy import ndimage as ndi

from changedetect.coregister import coregister, estimate_shift, register_scene
from changedetect.errors import ChangeDetectWarning, RegistrationError
from changedetect.stack import compose, open_stack

from conftest import T0, misregistration, render, residual_px, textured_world, write_scene

N = 320


@pytest.fixture(scope="module")
def world():
    return textured_world(N, seed=11)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.uint16])
@pytest.mark.parametrize("shift", [(0.0, 0.0), (2.3, -1.7), (-0.45, 0.8), (7.0, 3.25)])
def test_estimate_shift_recovers_known_translation(world, dtype, shift):
    dx, dy = shift
    ref = world[100:228, 100:228]
    # moving(q + d) = ref(q): content moves by +d
    mov = ndi.shift(world, (dy, dx), order=3, mode="nearest")[100:228, 100:228]
    s = estimate_shift(ref.astype(dtype), mov.astype(dtype))
    assert s.reliable
    assert abs(s.dx - dx) < 0.1 and abs(s.dy - dy) < 0.1


def test_estimate_shift_ignores_invalid_pixels(world):
    ref = world[100:228, 100:228]
    mov = ndi.shift(world, (1.5, -2.5), order=3, mode="nearest")[100:228, 100:228].copy()
    valid = np.ones(mov.shape, bool)
    valid[:, :40] = False            # a nodata wedge filled with a bright constant
    mov[~valid] = 1e5
    s = estimate_shift(ref, mov, moving_valid=valid)
    assert abs(s.dx + 2.5) < 0.1 and abs(s.dy - 1.5) < 0.1


def test_estimate_shift_flat_image_is_unreliable():
    rng = np.random.default_rng(0)
    ref = rng.normal(0, 1, (64, 64))
    s = estimate_shift(ref, np.full((64, 64), 5.0))
    assert not s.reliable


@pytest.mark.parametrize("dtype,bands", [("uint8", 3), ("uint16", 4), ("float32", 1)])
def test_coregister_recovers_shift_and_rotation(tmp_path, world, dtype, bands):
    scale = 255 / 6000 if dtype == "uint8" else 1.0
    ref = render(world, np.array([[1.0, 0, 0], [0, 1.0, 0]]), (N, N)) * scale
    true = misregistration(4.6, -3.3, 0.3, N / 2)
    rng = np.random.default_rng(1)
    mov = render(world, true, (N, N)) * scale * 1.15 + 20 * scale + rng.normal(0, 10 * scale, (N, N))
    write_scene(tmp_path / "a_2015-01-01.tif", np.repeat(ref[None], bands, 0), dtype=dtype)
    write_scene(tmp_path / "b_2016-01-01.tif", np.repeat(mov[None], bands, 0), dtype=dtype)
    stack = open_stack([tmp_path / "a_2015-01-01.tif", tmp_path / "b_2016-01-01.tif"])
    stack2, regs = coregister(stack)
    assert regs[0].model == "identity"
    assert regs[1].model == "affine"
    assert abs(regs[1].rotation_deg - 0.3) < 0.02
    assert residual_px(regs[1].ref_to_scene, true, N) < 0.1
    # the registered stack reads the scene back onto the reference
    a, va = stack2.read(0)
    b, vb = stack2.read(1)
    inner = np.zeros((N, N), bool)
    inner[20:-20, 20:-20] = True
    r = np.corrcoef(a[0][inner & vb], b[0][inner & vb])[0, 1]
    assert r > 0.97


def test_coregister_large_shift_and_other_grid(tmp_path, world):
    """A 0.6 m scene with another origin and a 30 px misregistration."""
    ref = render(world, np.array([[1.0, 0, 0], [0, 1.0, 0]]), (N, N))
    t_other = Affine(0.6, 0, T0.c - 3.1, 0, -0.6, T0.f + 2.2)
    nominal = np.array([[0.5 / 0.6, 0, 3.1 / 0.6], [0, 0.5 / 0.6, 2.2 / 0.6]])
    true = compose(nominal, misregistration(-30.0, 12.4, -0.2, N / 2))
    shape = (int(N * 0.5 / 0.6), int(N * 0.5 / 0.6))
    mov = render(world, true, shape)
    write_scene(tmp_path / "a_2015-01-01.tif", np.repeat(ref[None], 2, 0))
    write_scene(tmp_path / "b_2016-01-01.tif", np.repeat(mov[None], 2, 0), transform=t_other)
    stack = open_stack([tmp_path / "a_2015-01-01.tif", tmp_path / "b_2016-01-01.tif"])
    assert np.allclose(stack.nominal_ref_to_scene(1), nominal)
    reg = register_scene(stack, 1)
    assert residual_px(reg.ref_to_scene, true, N) < 0.15
    assert abs(reg.shift_px[0] + 30.0) < 0.5
    assert abs(reg.shift_m[0] - (-30.0 * 0.5)) < 0.3      # reported in metres too


def test_global_translation_only(tmp_path, world):
    ref = render(world, np.array([[1.0, 0, 0], [0, 1.0, 0]]), (N, N))
    true = misregistration(-2.25, 1.6, 0.0, N / 2)
    write_scene(tmp_path / "a_2015-01-01.tif", ref)
    write_scene(tmp_path / "b_2016-01-01.tif", render(world, true, (N, N)))
    stack = open_stack([tmp_path / "a_2015-01-01.tif", tmp_path / "b_2016-01-01.tif"])
    reg = register_scene(stack, 1, method="global")
    assert reg.model == "translation"
    assert residual_px(reg.ref_to_scene, true, N) < 0.05


def test_clouds_and_new_buildings_do_not_pull(tmp_path, world):
    ref = render(world, np.array([[1.0, 0, 0], [0, 1.0, 0]]), (N, N))
    true = misregistration(3.4, 2.2, 0.1, N / 2)
    mov = render(world, true, (N, N))
    yy, xx = np.mgrid[0:N, 0:N]
    cloud = np.exp(-(((yy - 80) ** 2 + (xx - 220) ** 2) / (2 * 45.0 ** 2)))
    mov = mov * (1 - cloud) + 9000 * cloud
    mov[200:240, 40:90] = 7000                  # a new building
    write_scene(tmp_path / "a_2015-01-01.tif", ref)
    write_scene(tmp_path / "b_2016-01-01.tif", mov)
    stack = open_stack([tmp_path / "a_2015-01-01.tif", tmp_path / "b_2016-01-01.tif"])
    reg = register_scene(stack, 1)
    assert reg.n_inliers < reg.n_tiepoints          # the cloudy windows were rejected
    assert residual_px(reg.ref_to_scene, true, N) < 0.15


def test_textureless_scene_fails_clearly_or_is_flagged(tmp_path, world):
    ref = render(world, np.array([[1.0, 0, 0], [0, 1.0, 0]]), (N, N))
    write_scene(tmp_path / "a_2015-01-01.tif", ref)
    write_scene(tmp_path / "flat_2016-01-01.tif", np.full((N, N), 1200.0))
    stack = open_stack([tmp_path / "a_2015-01-01.tif", tmp_path / "flat_2016-01-01.tif"])
    with pytest.raises(RegistrationError, match="flat_2016-01-01.tif"):
        register_scene(stack, 1)
    with pytest.warns(ChangeDetectWarning, match="flagged"):
        reg = register_scene(stack, 1, on_failure="keep")
    assert reg.flagged and reg.model == "none"
    assert np.allclose(reg.ref_to_scene, stack.nominal_ref_to_scene(1))
