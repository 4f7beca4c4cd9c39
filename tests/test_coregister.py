"""Co-registration against known shifts, rotations and grids."""

from __future__ import annotations

import numpy as np
import pytest
from affine import Affine
from scipy import ndimage as ndi

from changedetect.coregister import coregister, estimate_shift, register_scene
from changedetect.errors import ChangeDetectWarning, RegistrationError
from changedetect.stack import apply_mapping, compose, open_stack

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
    with pytest.warns(ChangeDetectWarning, match="kept on its georeferencing alone"):
        reg = register_scene(stack, 1, on_failure="keep")
    assert reg.flagged and reg.model == "none"
    assert reg.to_dict()["flagged"] and "uncertainty_m" in reg.to_dict()
    with pytest.warns(ChangeDetectWarning, match="left out"):
        assert register_scene(stack, 1, on_failure="skip").flagged
    assert np.allclose(reg.ref_to_scene, stack.nominal_ref_to_scene(1))


@pytest.mark.parametrize("method", ["global", "local"])
@pytest.mark.parametrize("dtype,bands", [("uint16", 4), ("float32", 1), ("uint8", 3)])
def test_translation_only_to_a_fiftieth_of_a_pixel(tmp_path, world, method, dtype, bands):
    scale = 255 / 6000 if dtype == "uint8" else 1.0
    ref = render(world, np.array([[1.0, 0, 0], [0, 1.0, 0]]), (N, N)) * scale
    true = misregistration(-3.37, 2.61, 0.0, N / 2)
    rng = np.random.default_rng(5)
    mov = render(world, true, (N, N)) * scale * 0.9 + 30 * scale + rng.normal(0, 8 * scale, (N, N))
    write_scene(tmp_path / "a_2015-01-01.tif", np.repeat(ref[None], bands, 0), dtype=dtype)
    write_scene(tmp_path / "b_2016-01-01.tif", np.repeat(mov[None], bands, 0), dtype=dtype)
    stack = open_stack([tmp_path / "a_2015-01-01.tif", tmp_path / "b_2016-01-01.tif"])
    reg = register_scene(stack, 1, method=method)
    assert reg.model in ("translation", "affine")
    assert residual_px(reg.ref_to_scene, true, N) < 0.02
    assert abs(reg.shift_px[0] + 3.37) < 0.02 and abs(reg.shift_px[1] - 2.61) < 0.02


def test_shift_of_fifty_pixels_is_found(tmp_path):
    n = 400
    big = textured_world(n + 120, seed=4)
    ref = render(big, np.array([[1.0, 0, 0], [0, 1.0, 0]]), (n, n), pad=160)
    true = misregistration(55.4, -51.7, 0.1, n / 2)
    write_scene(tmp_path / "a_2015-01-01.tif", ref)
    write_scene(tmp_path / "b_2016-01-01.tif", render(big, true, (n, n), pad=160))
    stack = open_stack([tmp_path / "a_2015-01-01.tif", tmp_path / "b_2016-01-01.tif"])
    reg = register_scene(stack, 1)
    assert residual_px(reg.ref_to_scene, true, n) < 0.05


def test_second_order_distortion_is_modelled(tmp_path, world):
    """Scene pixel p shows the reference at G(p), G quadratic (1.5 px at the edges)."""
    ref = render(world, np.array([[1.0, 0, 0], [0, 1.0, 0]]), (N, N))
    c = N / 2
    a = 1.5 / c ** 2

    def g(x, y):
        return x + 2.0 + a * (x - c) ** 2, y - 1.0 + a * (x - c) * (y - c)

    rr, cc = np.mgrid[0:N, 0:N] + 0.5
    qx, qy = g(cc, rr)
    mov = ndi.map_coordinates(world, [qy - 0.5 + 100, qx - 0.5 + 100], order=3, mode="nearest")
    write_scene(tmp_path / "a_2015-01-01.tif", ref)
    write_scene(tmp_path / "b_2016-01-01.tif", mov)
    stack = open_stack([tmp_path / "a_2015-01-01.tif", tmp_path / "b_2016-01-01.tif"])
    reg = register_scene(stack, 1)
    assert reg.model == "poly2" and reg.ref_to_scene.shape == (2, 6)
    # where the model sends q, G must bring back to q
    q = np.arange(16, N - 16, 16) + 0.5
    x, y = np.meshgrid(q, q)
    px, py = apply_mapping(reg.ref_to_scene, x, y)
    bx, by = g(px, py)
    assert np.sqrt(np.mean((bx - x) ** 2 + (by - y) ** 2)) < 0.05
    # the affine-only fit is clearly worse: the polynomial is needed
    affine = register_scene(stack, 1, method="global")
    ax, ay = g(*apply_mapping(affine.ref_to_scene, x, y))
    assert np.sqrt(np.mean((ax - x) ** 2 + (ay - y) ** 2)) > 0.3
    # and the stack warps the scene through it (GDAL GCP polynomial)
    b, vb = stack.with_ref_to_scene([stack.ref_to_scene[0], reg.ref_to_scene]).read(1)
    inner = np.zeros((N, N), bool)
    inner[24:-24, 24:-24] = True
    assert np.corrcoef(ref[inner & vb], b[0][inner & vb])[0, 1] > 0.99


def test_polynomial_warp_with_no_quadratic_terms_equals_the_affine_warp(tmp_path, world):
    write_scene(tmp_path / "a_2015-01-01.tif", render(world, np.array([[1.0, 0, 0], [0, 1.0, 0]]), (N, N)))
    write_scene(tmp_path / "b_2016-01-01.tif", render(world, misregistration(1.3, -2.2, 0.2, N / 2), (N, N)))
    stack = open_stack([tmp_path / "a_2015-01-01.tif", tmp_path / "b_2016-01-01.tif"])
    m = misregistration(1.3, -2.2, 0.2, N / 2)
    m6 = np.hstack([m, np.zeros((2, 3))])
    m6[0, 3] = 1e-12                      # forces the polynomial path
    a, va = stack.read(1, ref_to_scene=m)
    b, vb = stack.read(1, ref_to_scene=m6)
    both = va & vb
    assert both.mean() > 0.9
    assert np.abs(a[0][both] - b[0][both]).mean() < 0.01 * np.abs(a[0][both]).mean()


def test_unrelated_texture_is_never_a_confident_shift(tmp_path, world):
    ref = render(world, np.array([[1.0, 0, 0], [0, 1.0, 0]]), (N, N))
    other = render(textured_world(N, seed=99), np.array([[1.0, 0, 0], [0, 1.0, 0]]), (N, N))
    write_scene(tmp_path / "a_2015-01-01.tif", ref)
    write_scene(tmp_path / "other_2016-01-01.tif", other)
    stack = open_stack([tmp_path / "a_2015-01-01.tif", tmp_path / "other_2016-01-01.tif"])
    with pytest.raises(RegistrationError, match="other_2016-01-01.tif"):
        register_scene(stack, 1)


def test_nodata_half_is_ignored_and_its_tie_points_rejected(tmp_path, world):
    ref = render(world, np.array([[1.0, 0, 0], [0, 1.0, 0]]), (N, N))
    true = misregistration(2.7, -1.9, 0.15, N / 2)
    mov = render(world, true, (N, N))
    mov[:, : N // 2] = 0                          # nodata (0) over the left half of the scene
    write_scene(tmp_path / "a_2015-01-01.tif", ref)
    write_scene(tmp_path / "b_2016-01-01.tif", mov)
    stack = open_stack([tmp_path / "a_2015-01-01.tif", tmp_path / "b_2016-01-01.tif"])
    reg = register_scene(stack, 1)
    assert reg.n_inliers <= reg.n_tiepoints * 0.6
    inl = reg.tiepoints[:, 5] > 0
    assert (reg.tiepoints[inl, 0] > N / 2 - 40).all()    # only tie points on the valid half are used
    assert residual_px(reg.ref_to_scene, true, N) < 0.1


def test_registration_record_lists_tie_points(tmp_path, world):
    write_scene(tmp_path / "a_2015-01-01.tif", render(world, np.array([[1.0, 0, 0], [0, 1.0, 0]]), (N, N)))
    write_scene(tmp_path / "b_2016-01-01.tif", render(world, misregistration(1.0, 1.0, 0.0, N / 2), (N, N)))
    stack = open_stack([tmp_path / "a_2015-01-01.tif", tmp_path / "b_2016-01-01.tif"])
    rec = register_scene(stack, 1).to_dict()
    rows = rec["tiepoints"]["rows"]
    assert len(rows) == rec["n_tiepoints"] == rec["n_inliers"] + rec["n_rejected"]
    assert rec["tiepoints"]["columns"] == ["col", "row", "dx", "dy", "z", "inlier"]
    assert all(r[4] is None or r[4] >= 7 for r in rows if r[5])       # inliers are reliable
    assert sum(r[5] for r in rows) == rec["n_inliers"]
    assert abs(rec["shift_m"][0] - 0.5) < 0.02       # 1 px east at 0.5 m


def test_save_registered_writes_scenes_on_the_reference_grid(tmp_path, world):
    import rasterio

    from changedetect.coregister import save_registered

    ref = render(world, np.array([[1.0, 0, 0], [0, 1.0, 0]]), (N, N))
    t_other = Affine(0.6, 0, T0.c - 3.1, 0, -0.6, T0.f + 2.2)
    nominal = np.array([[0.5 / 0.6, 0, 3.1 / 0.6], [0, 0.5 / 0.6, 2.2 / 0.6]])
    true = compose(nominal, misregistration(4.0, -3.0, 0.2, N / 2))
    shape = (int(N * 0.5 / 0.6), int(N * 0.5 / 0.6))
    write_scene(tmp_path / "a_2015-01-01.tif", np.repeat(ref[None], 3, 0))
    write_scene(tmp_path / "b_2016-01-01.tif", np.repeat(render(world, true, shape)[None], 3, 0),
                transform=t_other)
    stack, regs = coregister(open_stack([tmp_path / "a_2015-01-01.tif", tmp_path / "b_2016-01-01.tif"]))
    files = save_registered(stack, regs, tmp_path / "reg", block=128)
    assert sorted(files) == ["a_2015-01-01_registered.tif", "b_2016-01-01_registered.tif"]
    with rasterio.open(files["b_2016-01-01_registered.tif"]) as src:
        assert (src.width, src.height, src.count, src.dtypes[0]) == (N, N, 3, "uint16")
        assert src.transform == T0
        assert src.tags()["TIFFTAG_DATETIME"].startswith("2016:01:01")
        assert "affine" in src.tags()["CHANGEDETECT_REGISTRATION"]
        b = src.read(1).astype(float)
        valid = src.read_masks(1) > 0
    inner = valid.copy()
    inner[:20], inner[-20:], inner[:, :20], inner[:, -20:] = False, False, False, False
    assert np.corrcoef(ref[inner], b[inner])[0, 1] > 0.98
    # the same as warping the scene through the true mapping, up to the registration error
    ideal, iv = stack.read(1, ref_to_scene=true)
    both = inner & iv
    assert np.abs(b[both] - ideal[0][both]).mean() < 0.03 * ideal[0][both].std()
    assert not list((tmp_path / "reg").glob(".*"))      # no partial files left


def test_scene_in_another_crs_is_registered(tmp_path, world):
    """A misregistered scene delivered in geographic coordinates (EPSG:4326)."""
    from rasterio.enums import Resampling
    from rasterio.warp import calculate_default_transform, reproject

    ref = render(world, np.array([[1.0, 0, 0], [0, 1.0, 0]]), (N, N)).astype("float32")
    mis = misregistration(3.3, -2.4, 0.15, N / 2)
    mov = render(world, mis, (N, N)).astype("float32")
    bounds = (T0.c, T0.f - 0.5 * N, T0.c + 0.5 * N, T0.f)
    t, w, h = calculate_default_transform("EPSG:32637", "EPSG:4326", N, N, *bounds)
    geo = np.zeros((h, w), "float32")
    reproject(mov, geo, src_transform=T0, src_crs="EPSG:32637", dst_transform=t, dst_crs="EPSG:4326",
              resampling=Resampling.cubic, dst_nodata=0)
    write_scene(tmp_path / "a_2015-01-01.tif", ref, dtype="float32")
    write_scene(tmp_path / "b_2016-01-01.tif", geo, transform=t, crs="EPSG:4326", dtype="float32")
    stack = open_stack([tmp_path / "a_2015-01-01.tif", tmp_path / "b_2016-01-01.tif"])
    reg = register_scene(stack, 1)
    # truth: reference pixel -> misregistered UTM pixel -> geographic scene pixel
    true = compose(stack.nominal_ref_to_scene(1), mis)
    assert residual_px(reg.ref_to_scene, true, N) < 0.1
    assert abs(reg.shift_m[0] - 3.3 * 0.5) < 0.1 and abs(reg.shift_m[1] - 2.4 * 0.5) < 0.1  # north-up


def test_a_model_needs_one_and_a_half_tie_points_per_term():
    """An affine (3 terms a coordinate) is never fitted to fewer than 5 tie points, a second-order
    polynomial (6) to fewer than 9: four points determine an affine so nearly that it fits their
    errors and extrapolates them over the scene (a real cross-sensor pair of a disaster had 4 of 100
    tie points agree, and its affine moved the far corner by 8 px where a translation was right)."""
    from changedetect.coregister import MODELS, _enough

    assert {m: _enough(m) for m in MODELS} == {"translation": 2, "affine": 5, "poly2": 9}
