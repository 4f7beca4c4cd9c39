"""Radiometric normalisation recovers known gains and offsets despite changes."""

from __future__ import annotations

import numpy as np
import pytest

from changedetect.errors import EmptyDataError, InputError
from changedetect.radiometry import (apply_normalization, fit_normalization, match_histograms,
                                     orthogonal_regression)


def test_recovers_gain_offset_with_changed_pixels_and_noise():
    rng = np.random.default_rng(0)
    ref = rng.uniform(200, 3000, (4, 120, 120))
    gain = np.array([1.2, 0.9, 1.1, 0.8])
    offset = np.array([-50.0, 30.0, 0.0, 100.0])
    tgt = (ref - offset[:, None, None]) / gain[:, None, None] + rng.normal(0, 5, ref.shape)
    tgt[:, :30, :30] = 4000          # 6 % of the scene changed (a new roof): not invariant
    valid = np.ones(ref.shape[1:], bool)
    valid[-10:] = False
    tgt[:, -10:] = 0                 # nodata must not count
    n = fit_normalization(ref, tgt, valid=valid)
    np.testing.assert_allclose(n.gain, gain, rtol=0.01)
    np.testing.assert_allclose(n.offset, offset, atol=8)
    out = apply_normalization(tgt.astype(np.float32), n)
    assert out.dtype == np.float32
    assert np.median(np.abs(out[:, 40:100, 40:100] - ref[:, 40:100, 40:100])) < 8


def test_orthogonal_regression_is_symmetric():
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 100, 5000)
    y = 2 * x + 3 + rng.normal(0, 2, x.size)
    s1, i1 = orthogonal_regression(x, y)
    s2, i2 = orthogonal_regression(y, x)
    assert s1 * s2 == pytest.approx(1.0, rel=1e-6)


def test_too_few_pixels():
    with pytest.raises(EmptyDataError):
        fit_normalization(np.ones((1, 5, 5)), np.ones((1, 5, 5)))


def test_irmad_normalisation_ignores_clouds_and_a_changed_quarter():
    rng = np.random.default_rng(2)
    ref = rng.uniform(200, 3000, (3, 100, 100))
    gain = np.array([1.3, 0.7, 1.05])
    offset = np.array([40.0, -20.0, 10.0])
    tgt = (ref - offset[:, None, None]) / gain[:, None, None] + rng.normal(0, 4, ref.shape)
    tgt[:, :50, :50] = rng.uniform(200, 3000, (3, 50, 50))     # 25 % of the scene rebuilt
    tgt[:, 60:80, 60:95] = 3500                                 # a cloud
    n = fit_normalization(ref, tgt)
    np.testing.assert_allclose(n.gain, gain, rtol=0.01)
    np.testing.assert_allclose(n.offset, offset, atol=10)
    assert n.n_invariant >= 100


def test_irmad_normalisation_respects_the_mask():
    rng = np.random.default_rng(3)
    ref = rng.uniform(100, 900, (2, 80, 80))
    tgt = ref * 0.5 + 7 + rng.normal(0, 1, ref.shape)
    valid = np.ones((80, 80), bool)
    valid[:, :30] = False
    junk = tgt.copy()
    junk[:, ~valid] = rng.uniform(0, 1e5, (2, int((~valid).sum())))
    a = fit_normalization(ref, tgt, valid=valid)
    b = fit_normalization(ref, junk, valid=valid)
    np.testing.assert_allclose(a.gain, b.gain, rtol=1e-9)
    np.testing.assert_allclose(a.offset, b.offset, atol=1e-6)


def test_histogram_matching_inverts_a_monotone_map_and_keeps_masked_pixels():
    rng = np.random.default_rng(4)
    ref = rng.gamma(3.0, 200.0, (2, 120, 120))
    tgt = np.sqrt(ref) * 10 + 5                        # monotone, non-linear
    valid = np.ones((120, 120), bool)
    valid[:10] = False
    out = match_histograms(ref, tgt, valid=valid)
    assert out.dtype == np.float32
    inner = valid.copy()
    err = np.abs(out - ref)[:, inner] / ref[:, inner].std()
    assert np.median(err) < 0.01
    np.testing.assert_array_equal(out[:, ~valid], tgt[:, ~valid].astype(np.float32))


def test_histogram_matching_rejects_mismatched_bands():
    with pytest.raises(InputError, match="same bands"):
        match_histograms(np.ones((2, 4, 4)), np.ones((3, 4, 4)))


def _changed_scene_with_one_odd_invariant_kind(seed):
    """Everything changed but a quarter of one kind (a shadowed road) whose values follow a
    line far from the rest of the scene: what IR-MAD keeps as invariant on a heavily changed
    crop, where the line through those pixels is absurd (gains of 16 were seen on LEVIR-CD)."""
    rng = np.random.default_rng(seed)
    ref = rng.uniform(50, 250, (3, 100, 100))
    tgt = rng.uniform(50, 250, (3, 100, 100))
    road = (slice(None), slice(0, 25), slice(None))
    ref[road] = rng.uniform(20, 60, (3, 25, 100))
    tgt[road] = ref[road] / 10 + 80 + rng.normal(0, 0.2, (3, 25, 100))
    return ref, tgt


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_an_absurd_fit_falls_back_to_matching_median_and_spread(seed):
    ref, tgt = _changed_scene_with_one_odd_invariant_kind(seed)
    n = fit_normalization(ref, tgt)
    assert n.method == "moments" and n.to_dict()["method"] == "moments"
    out = apply_normalization(tgt, n).reshape(3, -1)
    r = ref.reshape(3, -1)
    np.testing.assert_allclose(np.median(out, axis=1), np.median(r, axis=1), rtol=0.01)
    iqr = np.subtract(*np.percentile(out, [75, 25], axis=1))
    np.testing.assert_allclose(iqr, np.subtract(*np.percentile(r, [75, 25], axis=1)), rtol=0.01)


def test_a_plausible_fit_is_kept():
    """The guard leaves IR-MAD's lines alone when they keep the target's spread within a factor
    of the reference's, even with a gain far from 1, a quarter of the scene rebuilt and a bright
    new roof that stretches the after image's 2-98 % range beyond that factor."""
    rng = np.random.default_rng(4)
    ref = rng.uniform(200, 3000, (3, 100, 100))
    tgt = (ref - 40.0) / 1.8 + rng.normal(0, 4, ref.shape)
    tgt[:, :50, :50] = rng.uniform(200, 3000, (3, 50, 50))
    tgt[:, 60:80, 60:80] = 60000.0                       # 4 % of the scene: a bright new roof
    n = fit_normalization(ref, tgt)
    assert n.method == "irmad"
    np.testing.assert_allclose(n.gain, 1.8, rtol=0.01)
