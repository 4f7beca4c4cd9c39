"""Two-image change detection: a known new roof is found; radiometry, shadows and clouds are not."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from changedetect.errors import EmptyDataError, InputError
from changedetect.evaluate import pixel_scores
from changedetect.pair import PairConfig, detect_pair


def scene(seed=0, size=160, bands=3):
    """Before: textured ground with old buildings. After: other sensor gains, a moving shadow,
    a cloud and two new roofs (truth)."""
    rng = np.random.default_rng(seed)
    ground = ndi.gaussian_filter(rng.normal(0, 1, (size, size)), 1.5)
    ground = 700 + 120 * ground / ground.std()
    before = np.stack([ground * (1 + 0.1 * b) for b in range(bands)])
    before[:, 20:40, 20:50] = np.array([1400.0, 1300.0, 1250.0, 1500.0][:bands])[:, None, None]
    after = before.copy()
    truth = np.zeros((size, size), bool)
    truth[100:125, 30:60] = True                                   # a red-roofed new block
    truth[60:75, 110:140] = True                                   # a grey new block
    after[:, 100:125, 30:60] = np.array([1500.0, 650.0, 550.0, 900.0][:bands])[:, None, None]
    after[:, 60:75, 110:140] = np.array([1100.0, 1120.0, 1150.0, 1200.0][:bands])[:, None, None]
    shadow = np.zeros((size, size), bool)
    shadow[40:48, 20:50] = True                                    # the old building's shadow moved
    after[:, shadow] *= 0.45
    gain = np.array([1.15, 0.9, 1.05, 1.2][:bands])[:, None, None]
    after = after * gain + 30
    before = before + rng.normal(0, 5, before.shape)
    after = after + rng.normal(0, 5, after.shape)
    return before, after, truth, shadow


@pytest.mark.parametrize("bands", [3, 4])
def test_default_finds_new_grey_roof_not_radiometry_or_shadow(bands):
    before, after, truth, shadow = scene(bands=bands)
    grey = np.zeros(truth.shape, bool)
    grey[60:75, 110:140] = True
    r = detect_pair(before, after)
    s = pixel_scores(r.mask, grey)
    assert s.recall >= 0.9 and s.precision >= 0.6, s.as_dict()
    assert r.mask[shadow].mean() < 0.1
    assert r.mask.dtype == bool and r.score.dtype == np.float32
    rec = r.to_dict()
    assert rec["threshold"]["method"] == "otsu" and rec["normalization"]["method"] == "zscore"
    assert rec["changed_pixels"] == int(r.mask.sum())


def test_built_prior_trades_coloured_roofs_for_fewer_false_alarms():
    # documented trade-off: the default weights change by how grey the after state is, so a
    # red-tiled roof scores low; prior="none" finds both new roofs
    before, after, truth, _ = scene(seed=4)
    red = np.zeros(truth.shape, bool)
    red[100:125, 30:60] = True
    default = detect_pair(before, after)
    plain = detect_pair(before, after, config=PairConfig(prior="none"))
    assert pixel_scores(plain.mask, truth).recall >= 0.9
    assert plain.mask[red].mean() > 0.9 > default.mask[red].mean()


@pytest.mark.parametrize("kernel", ["irmad", "cva", "log_ratio", "pca_kmeans", "structural", "combined"])
def test_every_kernel_finds_the_new_roofs(kernel):
    before, after, truth, _ = scene(seed=1)
    r = detect_pair(before, after, config=PairConfig(kernel=kernel, threshold="otsu",
                                                     mask_shadows=False, adapt=0, prior="none"))
    s = pixel_scores(r.mask, truth)
    assert s.recall >= 0.5, (kernel, s.as_dict())


def test_invalid_pixels_are_never_changes_and_do_not_steer():
    before, after, truth, _ = scene(seed=2)
    valid = np.ones(truth.shape, bool)
    valid[:, :15] = False
    junk = after.copy()
    junk[:, ~valid] = 60000.0
    a = detect_pair(before, after, valid=valid)
    b = detect_pair(before, junk, valid=valid)
    assert not b.mask[~valid].any() and b.masked[~valid].all()
    inner = valid.copy()
    inner[:, :20] = False
    np.testing.assert_array_equal(a.mask[inner], b.mask[inner])


def test_deterministic():
    before, after, _, _ = scene(seed=3)
    a = detect_pair(before, after)
    b = detect_pair(before, after)
    np.testing.assert_array_equal(a.mask, b.mask)
    np.testing.assert_array_equal(a.score, b.score)


def test_bad_config_and_input():
    with pytest.raises(InputError, match="kernel='magic'"):
        PairConfig(kernel="magic")
    with pytest.raises(InputError, match="alpha"):
        PairConfig(alpha=0.9)
    with pytest.raises(InputError, match="same shape"):
        detect_pair(np.ones((3, 10, 10)), np.ones((3, 11, 10)))
    with pytest.raises(EmptyDataError):
        detect_pair(np.ones((3, 10, 10)), np.ones((3, 10, 10)), valid=np.zeros((10, 10), bool))


def test_elongated_changes_are_dropped_but_blocks_kept():
    from changedetect.pair import drop_elongated

    m = np.zeros((60, 60), bool)
    m[5:8, 2:58] = True              # a new road: 3 x 56
    m[20:40, 20:35] = True           # a block: 20 x 15
    m[45:55, 10:12] = True           # a 10 x 2 kerb
    out = drop_elongated(m, 4.0)
    assert out[20:40, 20:35].all()
    assert not out[5:8].any() and not out[45:55].any()
    # a square rotated by 45 degrees keeps ratio 1
    yy, xx = np.mgrid[0:60, 0:60]
    diamond = (np.abs(yy - 30) + np.abs(xx - 30)) <= 10
    assert drop_elongated(diamond, 1.5).sum() == diamond.sum()


def test_threshold_rule_is_reported_as_applied():
    before, after, truth, _ = scene(seed=5)
    sig = detect_pair(before, after, config=PairConfig(kernel="irmad", threshold="chi2", prior="none",
                                                       adapt=0, smooth=0, presmooth=0))
    assert sig.threshold.method.startswith("chi2(alpha=0.001")
    weighted = detect_pair(before, after, config=PairConfig(threshold="chi2"))
    assert weighted.threshold.method.startswith("otsu (chi2 does not apply")
    km = detect_pair(before, after, config=PairConfig(kernel="pca_kmeans"))
    assert km.threshold.method == "kmeans" and km.threshold.value == 0.0
    assert pixel_scores(sig.mask, truth).recall > 0.9


def test_an_anticorrelated_pair_without_colour_is_judged_not_refused():
    """Without the built prior there is nothing for the decorrelation exponent to hand the
    decision to: an inverted single-band pair (rho < 0) once got a constant score and an
    InputError ("the scores are constant"); now its score is the plain change."""
    rng = np.random.default_rng(5)
    before = ndi.gaussian_filter(rng.normal(100, 10, (1, 96, 96)), (0, 1, 1))
    after = 200 - before + rng.normal(0, 1, before.shape)
    r = detect_pair(before, after, config=PairConfig(rgb=None, prior="none"))
    assert r.normalization["score_exponent"] == 1.0
    assert 0 < r.mask.mean() < 1


def rubble_scene(seed=0, size=200):
    """Before: a flat grey roof on green-brown ground. After: grey rubble of the roof's own
    brightness where it stood, and a bright new roof elsewhere whose colour change sets the
    colour score's threshold far above the rubble's (as the tornado's many changes do on xBD)."""
    rng = np.random.default_rng(seed)
    g = ndi.gaussian_filter(rng.normal(0, 1, (size, size)), 1.5)
    ground = 700 + 60 * g / g.std()
    before = np.stack([ground * f for f in (1.0, 1.1, 0.8)])
    roof = np.zeros((size, size), bool)
    roof[60:100, 30:90] = True
    new = np.zeros((size, size), bool)
    new[130:170, 120:180] = True
    before[:, roof] = 1000.0
    after = before.copy()
    rubble = ndi.gaussian_filter(rng.normal(0, 1, (size, size)), 0.8)
    after[:, roof] = (1000 + 150 * rubble / rubble.std())[roof]
    after[:, new] = 2500.0
    before += rng.normal(0, 6, before.shape)
    after += rng.normal(0, 6, after.shape)
    return before, after, roof, new


def test_the_roughening_channel_finds_a_roof_turned_to_rubble():
    before, after, roof, new = rubble_scene()
    colour_only = detect_pair(before, after, config=PairConfig(roughening=0)).mask
    assert colour_only[roof].mean() < 0.05 and colour_only[new].mean() > 0.85
    r = detect_pair(before, after)
    assert r.mask[roof].mean() > 0.7 and r.mask[new].mean() > 0.85
    near = ndi.binary_dilation(roof | new, iterations=10)
    assert r.mask[~near].sum() == 0
    assert r.statistics.rough_threshold is not None
    # a window judged with the whole scene's statistics gives the same answer there
    w = detect_pair(before[:, 40:120, 10:110], after[:, 40:120, 10:110], statistics=r.statistics).mask
    assert (w[20:60, 20:80] == r.mask[60:100, 30:90]).mean() > 0.97


def test_the_pipeline_sets_the_roughening_scale_from_the_grid():
    """2 m on the ground in pixels; off where pixels are coarser than that (Sentinel-2 at 10 m
    resolves no rubble: there the channel read land cover and cost OSCD a third of its F1)."""
    import datetime as dt

    from affine import Affine

    from changedetect.detector import SeriesWindow
    from changedetect.pair import PairDetector, roughening_scale

    before, after, roof, new = rubble_scene(size=120)
    images = np.stack([np.concatenate([x, x[:1] * 0]) for x in (before, after)]).astype(np.float32)
    for px, expected in ((0.5, 4.0), (2.0, 1.0), (10.0, 0.0)):
        w = SeriesWindow(images=images, usable=np.ones((2, 120, 120), bool),
                         dates=(dt.date(2020, 1, 1), dt.date(2021, 1, 1)),
                         band_roles=("red", "green", "blue"),
                         noise=np.ones(4, np.float32), dark=0.0, transform=Affine(px, 0, 0, 0, -px, 0),
                         crs="EPSG:32637", pixel_size=px)
        config = PairDetector._setup(w)[0]
        assert config.roughening == roughening_scale(px) == expected
        det = PairDetector(None)
        det.fit(w)
        assert (det.statistics.rough_threshold is None) == (expected == 0)
        assert det.halo >= int(np.ceil(4 * expected))
