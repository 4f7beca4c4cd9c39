"""Change kernels and thresholds: hand-computed values and invariances."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from changedetect.detect import (change_mask, change_score, choose_threshold, cva, difference,
                                 log_ratio, robust_scale, shadow_like, threshold_chi2,
                                 threshold_kittler, threshold_otsu)
from changedetect.errors import InputError

images = arrays(np.float32, (3, 4, 5), elements=st.floats(0, 5000, width=32))


def test_cva_hand_computed():
    before = np.array([[[1.0, 2.0]], [[10.0, 10.0]]])
    after = np.array([[[4.0, 2.0]], [[14.0, 10.0]]])
    s = cva(before, after, scale=np.array([1.0, 2.0]))
    # pixel 0: ((3/1)^2 + (4/2)^2) / 2 = 6.5
    assert s.dtype == np.float32
    assert s[0, 0] == pytest.approx(np.sqrt(6.5), rel=1e-6)
    assert s[0, 1] == 0


@settings(max_examples=40, deadline=None)
@given(images, images)
def test_cva_symmetric(a, b):
    scale = np.array([1.0, 2.0, 3.0])
    np.testing.assert_allclose(cva(a, b, scale=scale), cva(b, a, scale=scale), rtol=1e-5, atol=1e-3)


@settings(max_examples=40, deadline=None)
@given(images, st.floats(0.5, 3.0))
def test_log_ratio_invariant_to_common_gain(a, gain):
    b = a[::-1].copy()
    lr1 = log_ratio(a, b, eps=0.0 + 1e-3)
    lr2 = log_ratio(a * gain, b * gain, eps=1e-3 * gain)
    np.testing.assert_allclose(lr1, lr2, atol=1e-4)


@settings(max_examples=30, deadline=None)
@given(images, images, arrays(bool, (4, 5)))
def test_mask_respected(a, b, valid):
    s = change_score(a, b, scale=np.ones(3), valid=valid)
    assert np.all(s[~valid] == 0)
    m = change_mask(s, threshold=-1.0, valid=valid)
    assert np.array_equal(m, valid)


def test_difference_and_scale():
    rng = np.random.default_rng(0)
    a = rng.normal(100, 1, (2, 200, 200)).astype(np.float32)
    b = a + rng.normal(0, 3, a.shape).astype(np.float32)
    d = difference(a, b)
    assert d.dtype == np.float32
    assert robust_scale(d) == pytest.approx([3.0, 3.0], rel=0.05)


def test_noise_scores_near_one_and_chi2_threshold():
    rng = np.random.default_rng(1)
    a = rng.normal(500, 10, (4, 300, 300))
    b = a + rng.normal(0, 5, a.shape)
    s = cva(a, b)
    thr = threshold_chi2(4, alpha=1e-3)
    assert np.median(s) == pytest.approx(0.92, abs=0.05)     # sqrt(median chi2_4 / 4)
    assert np.mean(s > thr) == pytest.approx(1e-3, abs=5e-4)  # the false-alarm rate is alpha


def test_thresholds_split_two_populations():
    rng = np.random.default_rng(2)
    v = np.concatenate([rng.normal(1, 0.3, 20000), rng.normal(6, 0.8, 2000)])
    for thr in (threshold_otsu(v), threshold_kittler(v)):
        assert 2.0 < thr < 5.0
    t = choose_threshold(v, method="kittler")
    assert t.method == "kittler" and 2.0 < t.value < 5.0


def test_shadow_like_detects_uniform_darkening_only():
    before = np.full((3, 1, 3), 1000.0)
    after = before.copy()
    after[:, 0, 0] *= 0.45                      # shadow: same colour, darker
    after[:, 0, 1] = [300.0, 900.0, 1500.0]     # a new material: colour changes
    m = shadow_like(before, after, dark=600.0)
    assert m.tolist() == [[True, False, False]]


def test_bad_input_messages():
    with pytest.raises(InputError, match="same shape"):
        cva(np.zeros((1, 2, 2)), np.zeros((1, 3, 3)))
    with pytest.raises(InputError, match="choose one of"):
        change_score(np.zeros((1, 2, 2)), np.zeros((1, 2, 2)), method="magic")
