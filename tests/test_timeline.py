"""Dating: per-pixel step fits and per-object one- or two-step fits, with bad dates."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from changedetect.timeline import series_change, step_change


def pixel(values, usable=None, scale=1.0, min_after=2):
    x = np.asarray(values, np.float32).reshape(-1, 1, 1, 1)
    u = np.ones(len(values), bool) if usable is None else np.asarray(usable, bool)
    return step_change(x, u.reshape(-1, 1, 1), scale=np.array([scale]), min_after=min_after)


def test_step_change_hand_computed():
    s = pixel([10, 12, 8, 10, 40, 42, 38])
    assert int(s.first_present[0, 0]) == 4 and int(s.last_absent[0, 0]) == 3
    assert float(s.magnitude[0, 0]) == 30.0                     # |40 - 10| / 1
    sse = 8.0 + 8.0                                             # within each segment
    tot = float(np.sum((np.array([10, 12, 8, 10, 40, 42, 38]) - 160 / 7) ** 2))
    assert float(s.fstat[0, 0]) == np_approx((tot - sse) * 5 / sse)
    assert int(s.n_before[0, 0]) == 4 and int(s.n_after[0, 0]) == 3


def np_approx(x):
    import pytest

    return pytest.approx(x, rel=1e-4)


def test_unusable_dates_are_skipped():
    values = [10, 10, 99, 10, 40, 40, 40]          # date 2 is a cloud
    s = pixel(values, usable=[1, 1, 0, 1, 1, 1, 1])
    assert int(s.first_present[0, 0]) == 4 and int(s.last_absent[0, 0]) == 3
    assert float(s.magnitude[0, 0]) == 30.0
    s = pixel([10, 10, 10, 10, 10, 40], min_after=2)  # one observation after: not persistent
    assert int(s.first_present[0, 0]) != 5


def test_fluctuation_has_low_f_and_step_has_high_f():
    rng = np.random.default_rng(0)
    season = 20 * np.sin(np.arange(12) * 2.0) + rng.normal(0, 1, 12)
    step = np.r_[np.zeros(6), np.full(6, 20.0)] + rng.normal(0, 1, 12)
    assert float(pixel(season).fstat[0, 0]) < 5
    assert float(pixel(step).fstat[0, 0]) > 100


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 9), st.integers(10, 14), st.integers(0, 13), st.floats(-50, 50))
def test_one_bad_date_does_not_move_a_step(k, n, bad, junk):
    """A single unusable date anywhere (holding any value) leaves the dated step where it is."""
    k = min(k, n - 3)
    values = [10.0] * k + [40.0] * (n - k)
    usable = [True] * n
    b = bad % n
    # a bad date on the step itself can only delay it; with the only 'before' date bad
    # there is nothing to compare with
    if b != k and not (b == 0 and k == 1):
        usable[b] = False
        values[b] = junk
    s = pixel(values, usable)
    assert int(s.first_present[0, 0]) == k


def test_series_change_gradual_construction_and_single_step():
    ground, pad, roof = [1000.0, 1000.0], [2400.0, 2500.0], [1500.0, 1600.0]
    series = np.array([ground, ground, pad, roof, roof, roof, roof])
    c = series_change(series, np.ones(7, bool), scale=np.array([30.0, 30.0]))
    assert (c.steps, c.first_present, c.last_absent, c.completed) == (2, 2, 1, 3)
    assert c.magnitude == np_approx(np.hypot(500, 600) / 30)
    one = np.array([ground, ground, ground, roof, roof, roof])
    c1 = series_change(one, np.ones(6, bool), scale=np.array([30.0, 30.0]))
    assert (c1.steps, c1.first_present, c1.completed, c1.n_after) == (1, 3, 3, 3)
    assert series_change(one, np.array([1, 0, 0, 0, 0, 1], bool), scale=np.ones(2)) is None


def test_step_change_cost_is_linear_in_dates():
    """The loop is over dates only: 100 dates on a 64x64 block works in one call."""
    rng = np.random.default_rng(1)
    x = rng.normal(0, 1, (100, 2, 64, 64)).astype(np.float32)
    x[60:, :, 10:20, 10:20] += 50
    s = step_change(x, np.ones((100, 64, 64), bool), scale=np.ones(2))
    assert (s.first_present[10:20, 10:20] == 60).all()


def test_series_change_needs_min_lead_dates_before_the_roof_for_two_steps():
    """Two lone dates that differ (winter, spring) before a roof are no ground-then-pad."""
    ground, spring, pad, roof = [1000.0, 1000.0], [1400.0, 900.0], [2400.0, 2500.0], [1500.0, 1600.0]
    scale = np.array([30.0, 30.0])
    early = np.array([ground, spring, roof, roof, roof, roof])
    assert series_change(early, np.ones(6, bool), scale=scale, min_lead=2).steps == 2
    c = series_change(early, np.ones(6, bool), scale=scale, min_lead=3)
    assert (c.steps, c.last_absent, c.first_present) == (1, 1, 2)
    # a pad after three dates of ground is still the start of construction
    padded = np.array([ground, ground, ground, pad, roof, roof, roof])
    c = series_change(padded, np.ones(7, bool), scale=scale, min_lead=3)
    assert (c.steps, c.last_absent, c.first_present, c.completed) == (2, 2, 3, 4)


def test_a_two_date_region_keeps_the_detectors_decision():
    """With one acquisition on each side there is no spread of observations to judge a step
    against; the run's noise sigma is then the scene's typical difference, and a new roof that
    moved by less than half ``min_magnitude`` of those was dropped. The detector's flag stands."""
    from changedetect.config import Config
    from changedetect.timeline import date_region

    region = np.zeros((20, 20), bool)
    region[5:15, 5:15] = True
    images = np.full((2, 3, 20, 20), 100.0, np.float32)
    images[1][:, region] += 20.0                    # 2 noise sigmas of this "scene"
    usable = np.ones((2, 20, 20), bool)
    dates = np.where(region, 1, -1)
    config = Config(persistence=1)                  # what a run of two acquisitions uses
    ch, use_t, how = date_region(images, usable, region, dates, noise=np.full(3, 10.0, np.float32),
                                 min_fstat=5.0, config=config)
    assert ch is not None and (ch.last_absent, ch.first_present) == (0, 1)
    assert "detector" in how
    # with three dates the region is judged on its own series, as before
    three = np.concatenate([images[:1], images])
    ch3, _, _ = date_region(three, np.ones((3, 20, 20), bool), region, np.where(region, 2, -1),
                            noise=np.full(3, 10.0, np.float32), min_fstat=5.0, config=config)
    assert ch3 is None
    # and a region no pixel of which the detector flagged is not a change
    ch0, _, _ = date_region(images, usable, region, np.full((20, 20), -1), noise=np.full(3, 10.0, np.float32),
                            min_fstat=5.0, config=config)
    assert ch0 is None
