"""Radiometric normalisation recovers known gains and offsets despite changes."""

from __future__ import annotations

import numpy as np
import pytest

from changedetect.errors import EmptyDataError
from changedetect.radiometry import apply_normalization, fit_normalization, orthogonal_regression


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
