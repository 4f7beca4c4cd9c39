"""Dating rules: persistence, skipped observations, step fits."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from changedetect.timeline import first_persistent, step_fit


def series(changed, usable):
    c = np.array(changed, bool)[:, None, None]
    u = np.array(usable, bool)[:, None, None]
    return int(first_persistent(c, u)[0, 0])


def test_first_persistent_cases():
    assert series([0, 0, 0, 1, 1, 1], [1] * 6) == 3
    assert series([0, 1, 0, 1, 1, 1], [1] * 6) == 3            # a one-off does not count
    assert series([0, 0, 1, 0, 1, 1], [1, 1, 1, 0, 1, 1]) == 2  # cloudy date skipped
    assert series([0, 0, 0, 0, 0, 1], [1] * 6) == -1           # one observation: not persistent
    assert series([0, 0, 0, 0, 1, 0], [1] * 6) == -1           # gone again
    assert series([0, 0, 0, 0, 1, 1], [1, 1, 1, 1, 1, 0]) == -1  # only one usable after
    assert series([1, 1, 1, 1], [1] * 4) == 1                  # date 0 is the baseline


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 9), st.integers(10, 14), st.integers(0, 13))
def test_one_bad_date_does_not_move_a_step(k, n, bad):
    """A single unusable date anywhere leaves the dated step where it is."""
    k = min(k, n - 3)
    changed = [0] * k + [1] * (n - k)
    usable = [1] * n
    if bad % n != k:                 # (a bad date on the step itself can only delay it)
        usable[bad % n] = 0
    assert series(changed, usable) == k


def test_step_fit_gradual_construction():
    frac = np.array([0.0, 0.05, 0.1, 0.6, 0.95, 1.0, 0.97])   # pad then roof
    st_ = step_fit(frac, np.ones(7, bool))
    assert st_.first_present == 3 and st_.last_absent == 2
    assert st_.persistence == 1.0


def test_step_fit_skips_unusable_and_needs_rise():
    frac = np.array([0.0, 0.0, 0.9, 0.0, 1.0, 1.0])
    st_ = step_fit(frac, np.array([1, 1, 0, 1, 1, 1], bool))   # date 2 is cloudy
    assert (st_.first_present, st_.last_absent) == (4, 3)
    assert step_fit(np.array([1.0, 0.5, 0.0]), np.ones(3, bool)) is None
    assert step_fit(np.array([0.0, 1.0]), np.array([1, 0], bool)) is None
