"""Detectors: the ONNX change model runner and an installed third-party plugin, against known truth.

The ONNX models are built here with ``onnx.helper``: the change score is
``s = sum over bands |after - before|`` (optionally averaged over 3 x 3
pixels, so that tiling and padding matter), the probability ``sigmoid(k (s - c))``.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
from affine import Affine
from onnx import TensorProto, helper
from scipy import ndimage as ndi

import plugin_pkg
from changedetect.detector import Detector, SeriesWindow, available_detectors, get_detector
from changedetect.errors import InputError
from changedetect.onnx_detector import OnnxDetector, first_persistent

detector_plugin = plugin_pkg.detector_plugin

BANDS = 3
K, C = 0.02, 300.0       # p = sigmoid(K (s - C)): 0.5 at s = 300, 0.25 at s = 245
STEP, SMALL = 300.0, 90.0  # a strong step (s = 900) and a weak one (s = 270, p = 0.35)


# --------------------------------------------------------------------------- models

def change_model(path: Path, *, bands: int | None = BANDS, inputs: int = 1, size=None, batch=None,
                 head: str = "prob", spatial: bool = False, k: float = K, c: float = C) -> Path:
    """Write an ONNX change model; ``size`` (H, W) fixed or None (dynamic), ``bands`` None: dynamic."""
    h, w = size if size is not None else ("H", "W")
    n = batch if batch is not None else "N"
    nodes, inits = [], [helper.make_tensor("k", TensorProto.FLOAT, [], [k]),
                        helper.make_tensor("c", TensorProto.FLOAT, [], [c]),
                        helper.make_tensor("one", TensorProto.FLOAT, [], [1.0]),
                        helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0]),
                        helper.make_tensor("axes", TensorProto.INT64, [1], [1])]
    if inputs == 1:
        ch = 2 * bands if bands is not None else "C2"
        ins = [helper.make_tensor_value_info("pair", TensorProto.FLOAT, [n, ch, h, w])]
        nodes.append(helper.make_node("Split", ["pair"], ["before", "after"], axis=1))
    else:
        ch = bands if bands is not None else "C"
        ins = [helper.make_tensor_value_info(name, TensorProto.FLOAT, [n, ch, h, w])
               for name in ("before", "after")]
    nodes += [helper.make_node("Sub", ["after", "before"], ["d"]),
              helper.make_node("Abs", ["d"], ["ad"]),
              helper.make_node("ReduceSum", ["ad", "axes"], ["s0"], keepdims=1)]
    if spatial:
        nodes.append(helper.make_node("AveragePool", ["s0"], ["s"], kernel_shape=[3, 3],
                                      pads=[1, 1, 1, 1], count_include_pad=0))
    else:
        nodes.append(helper.make_node("Identity", ["s0"], ["s"]))
    nodes += [helper.make_node("Sub", ["s", "c"], ["sc"]),
              helper.make_node("Mul", ["sc", "k"], ["z"]),
              helper.make_node("Sigmoid", ["z"], ["p"])]
    if head == "prob":
        out = "p"
    elif head == "logit":                       # one channel of logits: against the contract
        out = "z"
    elif head == "logits2":                     # [0, z]: softmax gives sigmoid(z)
        nodes += [helper.make_node("Mul", ["z", "zero"], ["z0"]),
                  helper.make_node("Concat", ["z0", "z"], ["out"], axis=1)]
        out = "out"
    elif head == "prob2":
        nodes += [helper.make_node("Sub", ["one", "p"], ["q"]),
                  helper.make_node("Concat", ["q", "p"], ["out"], axis=1)]
        out = "out"
    channels = 2 if head in ("logits2", "prob2") else 1
    outs = [helper.make_tensor_value_info(out, TensorProto.FLOAT, [n, channels, h, w])]
    graph = helper.make_graph(nodes, "change", ins, outs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


def sigmoid_model(path: Path, channels: int, dtype=TensorProto.FLOAT) -> Path:
    """A model that returns the sigmoid of its one input, (1, channels, H, W) in and out: against the contract."""
    shape = [1, channels, "H", "W"]
    graph = helper.make_graph([helper.make_node("Sigmoid", ["x"], ["p"])], path.stem,
                              [helper.make_tensor_value_info("x", dtype, shape)],
                              [helper.make_tensor_value_info("p", dtype, shape)])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))
    return path


def config(model, persistence: int = 2, **kw):
    return SimpleNamespace(model=None if model is None else str(model), persistence=persistence, **kw)


# --------------------------------------------------------------------------- scenes

def window(images: np.ndarray, usable: np.ndarray, noise: float = 5.0) -> SeriesWindow:
    n_t, n_c = images.shape[:2]
    return SeriesWindow(images=images.astype(np.float32), usable=usable,
                        dates=tuple(dt.date(2021, 1, 1) + dt.timedelta(days=30 * i) for i in range(n_t)),
                        band_roles=("red", "green", "blue")[:n_c - 1], noise=np.full(n_c, noise, np.float32), dark=0.0,
                        transform=Affine(0.5, 0, 262000.0, 0, -0.5, 3730000.0), crs="EPSG:32637",
                        pixel_size=0.5)


def base_series(n_t: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    """(dates, bands + 1, h, w): a fixed textured scene with small noise per date; texture last."""
    rng = np.random.default_rng(seed)
    scene = 1000 + 200 * rng.random((BANDS, h, w))
    images = np.empty((n_t, BANDS + 1, h, w), np.float32)
    images[:, :BANDS] = scene + rng.normal(0, 3, (n_t, BANDS, h, w))
    images[:, BANDS] = 20 + rng.random((n_t, h, w))
    return images


#: name: (rows, cols, {first date: brightening added from it on (None: back to 0)}, expected
#: (first_present, strong, weak) with persistence 2 and with 1, CVA plugin's date with 2 and 1).
#: Usability and NaN/cloud values are set in :func:`scene`.
REGIONS = {
    "A": (np.s_[4:14, 6:14], {3: STEP}, (3, 1, 0), (3, 1, 0), 3, 3),   # strong from date 3
    "E": (np.s_[4:14, 4:6], {3: STEP}, (4, 1, 0), (4, 1, 0), 4, 4),    # ... NaN (unusable) on date 3
    "F": (np.s_[4:14, 14:16], {3: STEP}, (3, 1, 0), (3, 1, 0), 3, 3),  # ... cloud on date 4: skipped
    "B": (np.s_[4:14, 22:32], {2: SMALL}, (2, 0, 1), (2, 0, 1), 2, 2),  # weak from date 2
    "C": (np.s_[20:26, 4:10], {1: STEP, 2: None}, (-1, 0, 0), (1, 1, 0), -1, 1),  # one date only
    "D": (np.s_[20:26, 14:20], {5: STEP}, (-1, 0, 0), (5, 1, 0), -1, 5),  # the last date only
    "G": (np.s_[20:26, 24:30], {3: STEP}, (-1, 0, 0), (-1, 0, 0), -1, -1),  # date 0 unusable (NaN)
    "H": (np.s_[30:36, 4:10], {2: STEP}, (-1, 0, 0), (2, 1, 0), -1, 2),   # dates 3-5 unusable
    "J": (np.s_[30:36, 14:20], {2: SMALL, 3: None}, (-1, 0, 0), (2, 0, 1), -1, 2),  # weak, one date
    "K": (np.s_[30:36, 24:34], {1: SMALL, 3: STEP}, (3, 1, 0), (3, 1, 0), 1, 1),  # weak, then strong
}


def scene(h: int = 40, w: int = 48, n_t: int = 6):
    """A window with the regions of :data:`REGIONS`, its truth, and a map of change signatures."""
    images = base_series(n_t, h, w)
    usable = np.ones((n_t, h, w), bool)
    keys = ("fp2", "s2", "w2", "fp1", "s1", "w1", "cva2", "cva1")
    truth = {key: np.zeros((h, w), np.int16) for key in keys}
    truth["fp2"][:] = truth["fp1"][:] = truth["cva2"][:] = truth["cva1"][:] = -1
    signature = np.zeros((h, w), np.int16)     # same number: same values on every date (usability aside)
    for i, (name, (cell, steps, e2, e1, cva2, cva1)) in enumerate(REGIONS.items(), 1):
        add = 0.0
        for t in range(n_t):
            add = steps.get(t, add) if steps.get(t, add) is not None else 0.0
            images[t, :BANDS][(slice(None),) + cell] += add
        for key, v in zip(keys, e2 + e1 + (cva2, cva1)):
            truth[key][cell] = v
        signature[cell] = 1 if name in "AEF" else i + 1
    sl = lambda name: REGIONS[name][0]  # noqa: E731
    images[3][(slice(None),) + sl("E")] = np.nan
    usable[3][sl("E")] = False
    images[4, :BANDS][(slice(None),) + sl("F")] = 5000.0      # a cloud, flagged unusable
    usable[4][sl("F")] = False
    images[0][(slice(None),) + sl("G")] = np.nan
    usable[0][sl("G")] = False
    images[3:][(slice(None), slice(None)) + sl("H")] = np.nan
    usable[3:][(slice(None),) + sl("H")] = False
    truth = {k: (v.astype(bool) if k[0] in "sw" else v) for k, v in truth.items()}
    return window(images, usable), truth, signature


def uniform(signature: np.ndarray) -> np.ndarray:
    """Pixels whose 3 x 3 neighbourhood has one signature (where a 3 x 3 model sees no edge)."""
    hi = ndi.maximum_filter(signature, 3, mode="nearest")
    return hi == ndi.minimum_filter(signature, 3, mode="nearest")


def assert_truth(result, truth, persistence=2, where=None):
    where = np.ones(result.strong.shape, bool) if where is None else where
    np.testing.assert_array_equal(result.first_present[where], truth[f"fp{persistence}"][where])
    np.testing.assert_array_equal(result.strong[where], truth[f"s{persistence}"][where])
    np.testing.assert_array_equal(result.weak[where], truth[f"w{persistence}"][where])


def assert_same(a, b):
    np.testing.assert_array_equal(a.first_present, b.first_present)
    np.testing.assert_array_equal(a.strong, b.strong)
    np.testing.assert_array_equal(a.weak, b.weak)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    return {
        "dynamic": change_model(d / "dynamic.onnx"),
        "fixed32": change_model(d / "fixed32.onnx", size=(32, 32), batch=1),
        "two": change_model(d / "two.onnx", inputs=2),
        "logits2": change_model(d / "logits2.onnx", head="logits2"),
        "prob2": change_model(d / "prob2.onnx", head="prob2", bands=None),
        "logit": change_model(d / "logit.onnx", head="logit"),
        "spatial": change_model(d / "spatial.onnx", spatial=True),
        "spatial32": change_model(d / "spatial32.onnx", spatial=True, size=(32, 32), batch=1),
        "spatial48x40": change_model(d / "spatial48x40.onnx", spatial=True, size=(48, 40), inputs=2),
    }


# --------------------------------------------------------------------------- the ONNX detector

@pytest.mark.parametrize("persistence", [2, 1])
@pytest.mark.parametrize("name", ["dynamic", "fixed32", "two", "logits2", "prob2"])
def test_onnx_dates_known_changes(models, name, persistence):
    win, truth, _ = scene()
    result = OnnxDetector(config(models[name], persistence)).detect(win)
    assert result.first_present.shape == (40, 48) and result.first_present.dtype == np.int16
    assert_truth(result, truth, persistence)


def test_onnx_threshold_option(models):
    win, truth, _ = scene()
    det = OnnxDetector(config(models["dynamic"]), threshold=0.2)
    assert det.threshold == 0.2 and OnnxDetector.threshold == 0.5
    result = det.detect(win)
    b = REGIONS["B"][0]
    assert result.strong[b].all() and not result.weak[b].any() and (result.first_present[b] == 2).all()
    k = REGIONS["K"][0]           # +90 (p = 0.35 >= 0.2) from date 1 now makes K strong from date 1
    assert (result.first_present[k] == 1).all() and result.strong[k].all()
    outside = truth["fp2"] < 0
    assert not result.strong[outside & (truth["fp1"] < 0)].any()


def test_onnx_no_nan_reaches_neighbours(models):
    """A 3 x 3 model next to NaN and cloud pixels: they are filled, so neighbours keep their truth."""
    win, truth, signature = scene()
    result = OnnxDetector(config(models["spatial"])).detect(win)
    inside = uniform(signature)
    # the check covers the A pixels that touch the NaN (E) and cloud (F) columns
    assert inside[5:13, 5:15].all()
    assert_truth(result, truth, 2, where=inside)
    # pixels unusable on date 0 never change, whatever their values on other dates
    g = REGIONS["G"][0]
    assert (result.first_present[g] == -1).all() and not result.strong[g].any() and not result.weak[g].any()


def test_onnx_unusable_values_do_not_leak(models):
    """Clouds and NaN (unusable) next to unchanged pixels: a 3 x 3 model must not see a change there."""
    images = base_series(4, 30, 30)
    usable = np.ones((4, 30, 30), bool)
    for t, cell, value in [(2, np.s_[5:10, 5:10], 5000.0), (0, np.s_[15:20, 5:10], np.nan),
                           (1, np.s_[5:10, 15:20], np.nan), (0, np.s_[15:20, 15:20], np.nan),
                           (3, np.s_[15:20, 15:20], np.inf)]:
        images[t, :BANDS][(slice(None),) + cell] = value
        usable[t][cell] = False
    result = OnnxDetector(config(models["spatial"], persistence=1)).detect(window(images, usable))
    assert (result.first_present == -1).all() and not result.strong.any() and not result.weak.any()


def test_reflect_index_is_numpy_reflect():
    from changedetect.onnx_detector import _reflect_index

    for n in range(1, 8):
        np.testing.assert_array_equal(_reflect_index(np.arange(-20, n + 20), n),
                                      np.pad(np.arange(n), 20, mode="reflect"))


def test_onnx_unusable_pixels_get_nan_probability(models):
    """Every pair a pixel is unusable in counts as nothing: a change seen only through them is none."""
    images = base_series(4, 20, 20)
    usable = np.ones((4, 20, 20), bool)
    images[1:, :BANDS, 0:10, 0:10] += STEP             # changed from date 1 on ...
    usable[1:, 0:5, 0:10] = False                      # ... but never seen after date 0 here
    images[1:, :BANDS, 0:5, 0:10] = np.nan
    usable[0, 5:10, 0:10] = False                      # nor before here
    result = OnnxDetector(config(models["dynamic"], persistence=1)).detect(window(images, usable))
    assert (result.first_present[0:10, 0:10] == -1).all() and not result.weak[0:10, 0:10].any()
    assert (result.first_present[10:14, 0:10] == -1).all()  # unchanged, usable: nothing either


def test_onnx_tiling_matches_whole_window(models):
    """Fixed 32 x 32 and 48 x 40 tiles with overlap and reflection = the dynamic model on the whole window."""
    h, w, n_t = 100, 70, 5
    images = base_series(n_t, h, w, seed=1)
    usable = np.ones((n_t, h, w), bool)
    signature = np.zeros((h, w), np.int16)
    # squares across the tile seams (every 24 rows / cols for 32 x 32 tiles) and on the window's edges
    squares = [(np.s_[20:60, 10:40], 2, STEP), (np.s_[0:30, 50:70], 3, STEP),
               (np.s_[70:100, 0:26], 1, SMALL), (np.s_[66:90, 40:61], 4, STEP)]
    for i, (cell, t0, step) in enumerate(squares, 1):
        images[t0:, :BANDS][(slice(None), slice(None)) + cell] += step
        signature[cell] = i
    images[2, :BANDS, 30:40, 20:30] = np.nan
    usable[2, 30:40, 20:30] = False
    signature[30:40, 20:30] = 9
    win = window(images, usable)
    whole = OnnxDetector(config(models["spatial"])).detect(win)
    for name, kw in [("spatial32", {}), ("spatial48x40", {}), ("spatial32", {"overlap": 1}),
                     ("spatial", {"tile_size": 64}), ("spatial", {"tile_size": 64, "overlap": 2})]:
        assert_same(OnnxDetector(config(models[name]), **kw).detect(win), whole)
    # and it is the truth where a 3 x 3 neighbourhood is uniform
    inside = uniform(signature)
    assert (whole.first_present[inside & (signature == 1)] == 2).all()
    assert (whole.first_present[inside & (signature == 9)] == 3).all()   # unusable on date 2
    assert (whole.first_present[inside & (signature == 2)] == 3).all()
    small = inside & (signature == 3)
    assert whole.weak[small].all() and not whole.strong[small].any()
    assert (whole.first_present[small] == 1).all()
    assert (whole.first_present[inside & (signature == 4)] == -1).all()   # one date left: not persistent
    assert (whole.first_present[inside & (signature == 0)] == -1).all()
    # and the per-pixel model, tiled 32 x 32 or whole
    per_pixel = OnnxDetector(config(models["dynamic"])).detect(win)
    assert_same(OnnxDetector(config(models["fixed32"])).detect(win), per_pixel)


def test_onnx_small_window_padded_to_fixed_size(models):
    win, truth, _ = scene(h=20, w=17)                  # smaller than the 32 x 32 tile: mirrored to fill it
    assert_truth(OnnxDetector(config(models["fixed32"])).detect(win), truth)


def test_onnx_deterministic_session(models):
    import onnxruntime as ort

    det = OnnxDetector(config(models["dynamic"]))
    opts = det._session.get_session_options()
    assert (opts.intra_op_num_threads, opts.inter_op_num_threads) == (1, 1)
    assert opts.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
    assert opts.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    assert det._session.get_providers() == ["CPUExecutionProvider"]
    win, _, _ = scene()
    assert_same(det.detect(win), det.detect(win))


def test_onnx_get_detector(models):
    assert available_detectors()["onnx"] == "changedetect.onnx_detector:OnnxDetector"
    det = get_detector("onnx", config(models["two"]))
    assert isinstance(det, OnnxDetector) and isinstance(det, Detector) and det.name == "onnx"
    win, truth, _ = scene()
    assert_truth(det.detect(win), truth)


def test_onnx_bad_model_files(tmp_path, models):
    missing = tmp_path / "nowhere" / "model.onnx"
    with pytest.raises(InputError, match="model.onnx.*does not exist"):
        OnnxDetector(config(missing))
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"this is not a protobuf \x00\xff" * 10)
    with pytest.raises(InputError, match="broken.onnx.*not an ONNX model.*torch.onnx.export"):
        OnnxDetector(config(broken))
    with pytest.raises(InputError, match="needs a model"):
        OnnxDetector(config(None))
    with pytest.raises(InputError, match="does not exist"):
        OnnxDetector(config(tmp_path))                     # a directory


def test_onnx_wrong_channel_count(tmp_path, models):
    win, _, _ = scene()
    for path, what in [(change_model(tmp_path / "eight.onnx", bands=4), "one input of 8 channels"),
                       (change_model(tmp_path / "two4.onnx", bands=4, inputs=2), "two inputs of 4 channels")]:
        det = OnnxDetector(config(path))
        with pytest.raises(InputError, match=rf"{path.name}.*{what}.*this stack has 3 spectral bands"):
            det.detect(win)
    # a dynamic channel count takes the stack as it is
    assert_truth(OnnxDetector(config(models["prob2"])).detect(win), scene()[1])


def test_onnx_models_against_the_contract(tmp_path, models):
    win, _, _ = scene()
    with pytest.raises(InputError, match="logit.onnx.*single channel.*sigmoid"):
        OnnxDetector(config(models["logit"])).detect(win)
    # odd channel count for one input (before and after cannot be split)
    odd = sigmoid_model(tmp_path / "odd.onnx", 5)
    with pytest.raises(InputError, match="odd.onnx.*5 channels"):
        OnnxDetector(config(odd))
    # a float64 input
    f64 = sigmoid_model(tmp_path / "f64.onnx", 6, TensorProto.DOUBLE)
    with pytest.raises(InputError, match=r"f64.onnx.*tensor\(double\)"):
        OnnxDetector(config(f64))
    # an output of the wrong shape (6 channels back)
    six = sigmoid_model(tmp_path / "six.onnx", 6)
    with pytest.raises(InputError, match=r"six.onnx.*output of shape \(1, 6,"):
        OnnxDetector(config(six)).detect(win)


def test_onnx_without_onnxruntime(monkeypatch, models):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)     # import onnxruntime -> ImportError
    with pytest.raises(InputError, match=r"pip install 'changedetect\[onnx\]'"):
        OnnxDetector(config(models["dynamic"]))


def test_first_persistent_rule():
    nan = np.nan
    series = np.array([
        [0.9, 0.1, 0.9, 0.9, 0.1],      # a one-date blip, then two dates
        [0.6, nan, 0.6, 0.1, 0.1],      # a NaN neither ends nor extends the run
        [0.1, 0.1, 0.1, 0.1, 0.9],      # the last date: one date only
        [nan, nan, nan, nan, nan],
        [0.5, 0.5, 0.2, 0.5, 0.5],      # exactly at the threshold counts
    ], np.float32).T.reshape(5, 5, 1)
    assert first_persistent(series, 0.5, 2)[:, 0].tolist() == [3, 1, -1, -1, 1]
    assert first_persistent(series, 0.5, 1)[:, 0].tolist() == [1, 1, 5, -1, 1]
    assert first_persistent(series, 0.5, 3)[:, 0].tolist() == [-1, -1, -1, -1, -1]


# --------------------------------------------------------------------------- an installed plugin

@pytest.mark.parametrize("persistence", [2, 1])
def test_plugin_registered_and_works(detector_plugin, persistence):
    found = available_detectors()
    assert found[detector_plugin.name] == "cd_plugin_test:ThresholdDetector"
    assert list(found)[:4] == ["auto", "statistical", "pair", "onnx"]
    det = get_detector(detector_plugin.name, config(None, persistence))
    assert type(det).__name__ == "ThresholdDetector" and det.name == "threshold-test"
    assert isinstance(det, Detector)
    assert Path(sys.modules[detector_plugin.module].__file__).is_relative_to(detector_plugin.path)
    win, truth, _ = scene()
    result = det.detect(win)
    np.testing.assert_array_equal(result.first_present, truth[f"cva{persistence}"])
    np.testing.assert_array_equal(result.strong, truth[f"cva{persistence}"] >= 0)
    assert result.weak is None


def test_plugin_visible_to_a_subprocess(detector_plugin):
    code = ("from changedetect.detector import available_detectors, get_detector; import types; "
            "d = get_detector('threshold-test', types.SimpleNamespace(persistence=2)); "
            "print(available_detectors()['threshold-test'], type(d).__module__)")
    out = subprocess.run([sys.executable, "-c", code], env=detector_plugin.env(), capture_output=True,
                         text=True, check=True, timeout=120)
    assert out.stdout.split() == ["cd_plugin_test:ThresholdDetector", "cd_plugin_test"]


def test_unknown_detector_lists_installed(detector_plugin):
    with pytest.raises(InputError, match="No detector is called 'nope'") as err:
        get_detector("nope", config(None))
    for name in ("statistical", "onnx", "threshold-test"):
        assert name in str(err.value)


def test_plugin_gone_without_fixture():
    assert "threshold-test" not in available_detectors()
    with pytest.raises(InputError, match="No detector is called 'threshold-test'"):
        get_detector("threshold-test", config(None))


# --------------------------------------------------------------------------- end to end

EXE = Path(sys.executable).parent / "detect-changes"


def test_plugin_detector_runs_the_whole_pipeline(detector_plugin, site, site_result, tmp_path):
    """A detector from a second installed package, chosen by name, runs end to end (library and CLI)."""
    from changedetect import Config, detect_changes
    from changedetect.evaluate import evaluate

    out = tmp_path / "lib"
    res = detect_changes(site.images, out, config=Config(detector=detector_plugin.name))
    assert res.run["detector"] == detector_plugin.name
    assert res.run["parameters"]["detector"] == detector_plugin.name
    # its per-pixel answer is used: another change-date raster than the built-in detector's
    _, builtin_out = site_result
    assert (out / "first_change.tif").read_bytes() != (builtin_out / "first_change.tif").read_bytes()
    scores = evaluate(res.changes, site.truth_path)
    assert scores.tp >= 3 and scores.precision >= 0.75, scores      # registration, objects, dating around it
    cli_out = tmp_path / "cli"
    p = subprocess.run([str(EXE), *map(str, site.images), "--detector", detector_plugin.name, "--out",
                        str(cli_out)], capture_output=True, text=True, env=detector_plugin.env(), timeout=600)
    assert p.returncode == 0, p.stderr
    assert (cli_out / "changes.geojson").read_bytes() == (out / "changes.geojson").read_bytes()


def test_onnx_model_runs_the_whole_pipeline(site, tmp_path):
    """An ONNX change model built here finds and dates the generated site's changes through the pipeline."""
    from changedetect import Config, detect_changes
    from changedetect.evaluate import evaluate

    model = change_model(tmp_path / "cva.onnx", bands=4, k=0.05, c=1200.0, spatial=True)
    res = detect_changes(site.images, tmp_path / "out", config=Config(detector="onnx", model=str(model)))
    assert res.run["detector"] == "onnx"
    scores = evaluate(res.changes, site.truth_path)
    assert scores.f1 >= 0.85 and scores.dating_exact >= 0.75, scores
    p = subprocess.run([str(EXE), *map(str, site.images), "--detector", "onnx", "--out", str(tmp_path / "cli")],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 2 and "Traceback" not in p.stderr and "--model" in p.stderr, p.stderr


def test_a_detector_that_answers_wrongly_is_named(detector_plugin, site, tmp_path, monkeypatch):
    """A plugin whose dates are not the window's stops the run with its name, and writes nothing."""
    import cd_plugin_test

    from changedetect import Config, detect_changes
    from changedetect.detector import PixelChange
    from changedetect.errors import ProcessingError

    def wrong(self, window):
        shape = window.shape
        return PixelChange(np.full(shape, len(window.dates), np.int32), np.ones(shape, bool))

    monkeypatch.setattr(cd_plugin_test.ThresholdDetector, "detect", wrong)
    with pytest.raises(ProcessingError, match="threshold-test.*date index 8"):
        detect_changes(site.images, tmp_path / "out", config=Config(detector=detector_plugin.name))
    assert not (tmp_path / "out").exists()


def test_a_missing_model_stops_before_any_work(site, tmp_path):
    """A wrong --model is refused first: exit 2, the file named, no warning about the images, no output."""
    missing = tmp_path / "nowhere.onnx"
    p = subprocess.run([str(EXE), *map(str, site.images), "--detector", "onnx", "--model", str(missing),
                        "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=600)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert str(missing) in p.stderr and "WARNING" not in p.stderr, p.stderr
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- two acquisitions: the pair detector


@pytest.fixture(scope="module")
def pair_site(tmp_path_factory):
    """The generated site's first and last acquisitions: a two-image run."""
    from changedetect.synthetic import make_site

    site = make_site(tmp_path_factory.mktemp("pair"), seed=3, size=256)
    return site, [site.images[0], site.images[-1]]


def test_two_acquisitions_use_the_pair_detector(pair_site, tmp_path):
    """auto picks the pair method for two images; it finds the site's changes, fitted once on the scene."""
    from changedetect import Config, detect_changes
    from changedetect.evaluate import evaluate

    site, pair = pair_site
    res = detect_changes(pair, tmp_path / "out")
    assert res.run["parameters"]["detector"] == "auto" and res.run["detector"] == "pair"
    fit = res.run["detector_fit"]
    assert fit["threshold"]["method"] == "otsu" and len(fit["zscore"]["before"]["median"]) == 4
    scores = evaluate(res.changes, site.truth_path)
    assert scores.tp >= 3 and scores.precision >= 0.5, scores
    # the series model is still there for whoever asks for it, and gives another answer
    stat = detect_changes(pair, config=Config(detector="statistical"))
    assert stat.run["detector"] == "statistical" and "detector_fit" not in stat.run


def test_pair_detector_answer_does_not_depend_on_the_block(pair_site, tmp_path):
    """Statistics fitted on the whole scene: blocks of 64 px give the blocks of 512 px' answer.

    (One translation for the registration: a scene warped through a second-order polynomial
    is resampled a little differently window by window, whatever the detector.)
    """
    from changedetect import Config, detect_changes

    _, pair = pair_site
    big = detect_changes(pair, tmp_path / "big", config=Config(block=512, coregister="global"))
    small = detect_changes(pair, tmp_path / "small", config=Config(block=64, coregister="global"))
    for name in ("first_change.tif", "changes.geojson"):
        assert (tmp_path / "big" / name).read_bytes() == (tmp_path / "small" / name).read_bytes(), name
    assert len(big.changes) == len(small.changes)
