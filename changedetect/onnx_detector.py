"""A change model exported to ONNX as a :class:`~changedetect.detector.Detector`.

``detect-changes --detector onnx --model my_model.onnx`` (``Config(detector="onnx",
model="my_model.onnx")``) runs a bi-temporal change model — open-cd, torchange
or one's own, exported with ``torch.onnx.export`` — with onnxruntime, on every
pair (first acquisition, later acquisition) of each window, and turns its
change probabilities into the per-pixel dates that the pipeline then groups
into objects, re-dates on their mean series and scores. Needs ``pip install
'changedetect[onnx]'``.

The model contract
------------------
Inputs
    Either **one input** of shape ``(N, 2*C, H, W)``: the "before" image's
    ``C`` spectral channels, then the "after" image's ``C`` channels, or **two
    inputs** ``(before, after)``, each ``(N, C, H, W)``, in the order the model
    declares them (the usual siamese export). Element type float32 (``tensor(float)``).
    ``C`` is the number of spectral bands of the stack, in the order of
    ``SeriesWindow.band_roles`` (the texture channel is not passed). A declared
    channel count that differs from ``2*C`` (one input) or ``C`` (two inputs)
    raises :class:`~changedetect.errors.InputError`; a dynamic (named) channel
    dimension accepts any stack. ``N`` is 1 or dynamic; it is always run with
    ``N = 1``. A missing, unreadable or invalid file, or inputs other than
    these, raise InputError naming the file.
Values
    In the images' own units (digital numbers or reflectance, as in the input
    files), every date radiometrically normalised to the first acquisition.
    **No scaling is applied**: a model trained on, say, values in [0, 1] or
    standardised per band must include that scaling (a ``Div``/``Sub`` at the
    start of the graph, e.g. by exporting a ``torch.nn.Module`` that wraps the
    network with its normalisation). Observations that are unusable (cloud,
    nodata, not co-registered) or not finite are replaced, for that pair, by
    the other date's value at the pixel (0 where neither is finite), so that
    they show no change and no NaN reaches the network or its neighbours.
Spatial size
    ``H`` and ``W`` fixed (e.g. 256 x 256) or dynamic, each on its own. The
    window is cut into tiles that overlap by ``overlap`` pixels on each side
    (default: an eighth of the tile); every tile is read with that context,
    mirrored (``numpy.pad(mode="reflect")``) beyond the window's edges, and
    only its centre is kept. A fixed size is used as the tile; a dynamic one
    takes at most ``tile_size`` (512) pixels, rounded up to a multiple of 32
    (what encoders that downsample five times need). A model whose receptive
    field is within the overlap therefore gives the same answer however the
    window is tiled. Memory grows with the tile (and the number of dates), not
    with the window.
Output
    The model's first output (any others are ignored), of the input's ``H``
    and ``W``, either ``(N, 1, H, W)``: the probability of change, in [0, 1]
    (a model that ends in logits must be exported with its sigmoid; values
    outside [0, 1] raise InputError), or ``(N, 2, H, W)`` for the classes
    [no change, change]: taken as probabilities when every value is in [0, 1]
    and the two sum to 1 (within 1e-3), otherwise as logits, with a softmax
    over the class axis (decided on each run of the model, one tile and date).
    Either way the result is ``p``, the probability of change.

From probabilities to dates
---------------------------
For every date ``t >= 1`` the model sees the pair (before = date 0, after =
date ``t``); ``p_t`` is NaN where either date is unusable. A pixel's
``first_present`` is the first ``t`` with ``p_t >= threshold`` (0.5 by
default) that stays at or above it on at least ``config.persistence`` usable
dates from ``t`` on, counting ``t`` (the run of consecutive usable dates with
``p >= threshold`` that starts at ``t``; unusable dates are skipped, they
neither end nor extend the run); -1 if there is none. ``strong`` is
``first_present >= 0``. ``weak`` are the pixels that pass the same rule at
``threshold / 2`` but not at ``threshold``, with that rule's date as their
``first_present``: the pipeline keeps them where they join strong pixels of
the same date (hysteresis), which completes objects at their edges.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .detector import PixelChange, SeriesWindow
from .errors import InputError, UnreadableFileError

__all__ = ["OnnxDetector"]

#: Dynamic tile sides are rounded up to a multiple of this (encoders that downsample by 2**5).
DYNAMIC_MULTIPLE = 32

_INSTALL = "pip install 'changedetect[onnx]'"


def _fixed(dim) -> int | None:
    """A declared dimension as an int, None where it is dynamic (a name or unknown)."""
    return dim if isinstance(dim, int) and dim > 0 else None


def _reflect_index(idx: np.ndarray, n: int) -> np.ndarray:
    """Indices into an axis of length ``n`` that mirror ``idx`` like ``np.pad(mode="reflect")``.

    >>> _reflect_index(np.arange(-3, 8), 5).tolist()
    [3, 2, 1, 0, 1, 2, 3, 4, 3, 2, 1]
    """
    if n == 1:
        return np.zeros_like(idx)
    period = 2 * (n - 1)
    j = np.abs(idx) % period
    return np.where(j >= n, period - j, j)


def _tiles(n: int, size: int, margin: int) -> list[tuple[int, int]]:
    """(start, length) of the kept centres of tiles of ``size`` with ``margin`` along an axis of ``n``."""
    core = size - 2 * margin
    return [(s, min(core, n - s)) for s in range(0, n, core)]


def first_persistent(p: np.ndarray, threshold: float, persistence: int) -> np.ndarray:
    """First pair whose probability reaches ``threshold`` and stays there (persistence rule).

    Parameters
    ----------
    p : ndarray, (pairs, rows, cols) float
        Probability of change of the pairs (date 0, date ``i + 1``); NaN where
        either date is unusable.
    threshold : float
    persistence : int
        Fewest consecutive usable dates (NaN skipped), counting the first, with
        ``p >= threshold``.

    Returns
    -------
    ndarray, (rows, cols) int16
        Date index (``i + 1``) of the first such pair; -1 where there is none.

    Examples
    --------
    >>> nan = float("nan")
    >>> p = np.array([0.9, 0.1, 0.8, nan, 0.7, 0.2]).reshape(6, 1, 1)
    >>> int(first_persistent(p, 0.5, 2)[0, 0]), int(first_persistent(p, 0.5, 1)[0, 0])
    (3, 1)
    """
    n, h, w = p.shape
    run = np.zeros((h, w), np.int32)       # usable dates >= threshold in a row, from the next usable one
    first = np.full((h, w), -1, np.int16)
    for i in range(n - 1, -1, -1):         # backwards, so the earliest date is written last
        valid = ~np.isnan(p[i])
        hit = valid & (p[i] >= threshold)
        run = np.where(hit, run + 1, np.where(valid, 0, run))
        first[hit & (run >= persistence)] = i + 1
    return first


class OnnxDetector:
    """Per-pixel change from an ONNX bi-temporal change model (see the module docstring).

    Parameters
    ----------
    config : changedetect.Config
        Uses ``config.model`` (path of the ``.onnx`` file) and ``config.persistence``.
    threshold : float, optional
        Probability of change for a strong pixel (default :attr:`threshold`);
        weak pixels need half of it.
    tile_size : int
        Largest side of a tile for a model with dynamic height or width (a
        multiple of 32); fixed sizes are used as they are.
    overlap : int, optional
        Context on each side of a tile, in pixels, cropped after the run;
        default an eighth of the tile side.

    Raises
    ------
    InputError
        onnxruntime is not installed, no model is given, the file is missing,
        not an ONNX model, or its inputs do not follow the contract.
    """

    name = "onnx"
    #: Probability of change for a strong pixel; weak pixels need half of it.
    threshold = 0.5

    def __init__(self, config, *, threshold: float | None = None, tile_size: int = 512,
                 overlap: int | None = None):
        try:
            import onnxruntime as ort
        except ImportError:
            raise InputError(f"The onnx detector needs onnxruntime: {_INSTALL}.") from None
        model = getattr(config, "model", None)
        if model is None:
            raise InputError("The onnx detector needs a model: Config(model='change_model.onnx') or "
                             "detect-changes --model change_model.onnx (a change model exported to ONNX; "
                             "see changedetect.onnx_detector for its inputs and outputs).")
        self.path = Path(model).expanduser()
        self.persistence = int(config.persistence)
        if threshold is not None:
            self.threshold = float(threshold)
        if not 0.0 < self.threshold <= 1.0:
            raise InputError(f"The onnx detector's threshold must be in (0, 1]; got {self.threshold}.")
        if tile_size < 2 * DYNAMIC_MULTIPLE or tile_size % DYNAMIC_MULTIPLE:
            raise InputError(f"tile_size must be a multiple of {DYNAMIC_MULTIPLE} of at least "
                             f"{2 * DYNAMIC_MULTIPLE}; got {tile_size}.")
        self.tile_size = int(tile_size)
        self.overlap = None if overlap is None else int(overlap)
        if not self.path.is_file():
            raise UnreadableFileError(f"The ONNX model {str(self.path)!r} does not exist (or is not a file): "
                                      "give the path of a .onnx file with --model / Config(model=...).")

        # Same answer on any machine and at any load: one thread (a parallel reduction sums in
        # an order that depends on the thread count), operators run one after another, only the
        # basic graph rewrites (constant folding, redundant nodes; the extended and layout levels
        # fuse operators and switch to blocked memory layouts chosen for the host CPU), and only
        # the CPU provider (a GPU or other accelerator computes with other kernels and rounding).
        # MLAS still picks SIMD kernels per CPU family, so a last-bit difference between, say,
        # x86_64 and aarch64 stays possible; it cannot move a date unless p sits on the threshold.
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        options.use_deterministic_compute = True
        options.log_severity_level = 3          # errors only: graph-cleaning notes are not the analyst's
        try:
            self._session = ort.InferenceSession(str(self.path), sess_options=options,
                                                 providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own types (InvalidProtobuf, Fail, ...)
            raise UnreadableFileError(
                f"{str(self.path)!r} is not an ONNX model that onnxruntime {ort.__version__} can load "
                f"({type(exc).__name__}: {' '.join(str(exc).split())[:300]}). Export the model with "
                "torch.onnx.export (an opset this onnxruntime supports), and check the file is complete."
            ) from None
        self._check_inputs()

    def __repr__(self) -> str:
        return f"OnnxDetector({str(self.path)!r}, threshold={self.threshold}, persistence={self.persistence})"

    def _fail(self, what: str) -> InputError:
        return InputError(f"The ONNX model {str(self.path)!r} {what} (see changedetect.onnx_detector "
                          "for the inputs and outputs a change model must have).")

    def _check_inputs(self) -> None:
        inputs = self._session.get_inputs()
        if len(inputs) not in (1, 2):
            raise self._fail(f"has {len(inputs)} inputs; it needs one (before and after stacked on "
                             "the channels) or two (before, after)")
        shapes = []
        for inp in inputs:
            if inp.type != "tensor(float)":
                raise self._fail(f"takes {inp.type} as input {inp.name!r}; it needs float32 (tensor(float))")
            if inp.shape is not None and len(inp.shape) != 4:
                raise self._fail(f"declares input {inp.name!r} with shape {inp.shape}; it needs "
                                 "(N, channels, H, W)")
            shapes.append([_fixed(d) for d in inp.shape] if inp.shape is not None else [None] * 4)
        batch = {s[0] for s in shapes} - {None, 1}
        if batch:
            raise self._fail(f"has a fixed batch size {batch.pop()}; export it with batch 1 or a "
                             "dynamic batch")
        self._names = [inp.name for inp in inputs]
        self._output = self._session.get_outputs()[0].name
        channels = {s[1] for s in shapes} - {None}
        if len(channels) > 1:
            raise self._fail(f"declares {sorted(channels)} channels for its two inputs; before and after "
                             "need the same bands")
        self._channels = channels.pop() if channels else None
        if len(inputs) == 1 and self._channels is not None and self._channels % 2:
            raise self._fail(f"takes {self._channels} channels; one input must stack before and after, "
                             "2 x bands channels")
        size = []
        for axis in (2, 3):
            fixed = {s[axis] for s in shapes} - {None}
            if len(fixed) > 1:
                raise self._fail(f"declares two sizes {sorted(fixed)} for the same axis of its inputs")
            size.append(fixed.pop() if fixed else None)
        self._size = tuple(size)

    def _axis(self, n: int, fixed: int | None) -> tuple[int, int]:
        """(tile side, margin) along an axis of the window of length ``n``."""
        if fixed is not None:
            margin = fixed // 8 if self.overlap is None else self.overlap
            if not 0 <= margin < (fixed + 1) // 2:
                raise InputError(f"An overlap of {margin} pixels leaves nothing of the ONNX model's "
                                 f"{fixed}-pixel tiles ({str(self.path)!r}); use a smaller overlap.")
            return fixed, margin
        margin = self.tile_size // 8 if self.overlap is None else self.overlap
        if not 0 <= margin < self.tile_size // 2:
            raise InputError(f"An overlap of {margin} pixels leaves nothing of tiles of {self.tile_size}; "
                             "use a smaller overlap or a larger tile_size.")
        whole = -(-(n + 2 * margin) // DYNAMIC_MULTIPLE) * DYNAMIC_MULTIPLE
        return min(self.tile_size, whole), margin

    def _check_channels(self, bands: int, roles) -> None:
        want = self._channels
        if want is None:
            return
        per_image = want // 2 if len(self._names) == 1 else want
        if per_image != bands:
            how = (f"one input of {want} channels (2 x {per_image})" if len(self._names) == 1
                   else f"two inputs of {want} channels")
            raise self._fail(f"takes {how}, for images of {per_image} bands, but this stack has {bands} "
                             f"spectral bands ({', '.join(roles) or 'no roles'}; the texture channel is "
                             "not passed). Use images with the bands the model was trained on, or a model "
                             f"for {bands} bands")

    def _probability(self, out: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
        """The probability of change (H, W) from the model's output for one pair."""
        if out.ndim != 4 or out.shape[0] != 1 or out.shape[1] not in (1, 2) or out.shape[2:] != shape:
            raise self._fail(f"returned an output of shape {out.shape} for an input of {shape[0]} x "
                             f"{shape[1]} pixels; it must be (N, 1, H, W) or (N, 2, H, W), of the "
                             "input's size")
        out = out[0].astype(np.float32, copy=False)
        finite = out[np.isfinite(out)]
        if out.shape[0] == 1:
            if finite.size and (finite.min() < -1e-6 or finite.max() > 1 + 1e-6):
                raise self._fail(f"returned a single channel with values in [{finite.min():.3g}, "
                                 f"{finite.max():.3g}]; a one-channel output must be the probability of "
                                 "change: export the model with its final sigmoid")
            return np.clip(out[0], 0.0, 1.0)
        if finite.size and finite.min() >= -1e-6 and finite.max() <= 1 + 1e-6 \
                and np.allclose(out.sum(axis=0), 1.0, atol=1e-3, equal_nan=True):
            return np.clip(out[1], 0.0, 1.0)
        from scipy.special import expit

        return expit(out[1] - out[0])      # softmax over [no change, change]

    def _pairs(self, window: SeriesWindow, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """p of every pair (0, t) on one tile read at ``rows`` x ``cols`` of the window, (dates - 1, h, w)."""
        images, usable = window.images, window.usable
        bands = images.shape[1] - 1
        grid = np.ix_(np.arange(bands), rows, cols)
        before = images[0][grid].astype(np.float32)
        u_before = usable[0][np.ix_(rows, cols)]
        ok_b = u_before & np.isfinite(before).all(axis=0)
        out = np.empty((images.shape[0] - 1, rows.size, cols.size), np.float32)
        for t in range(1, images.shape[0]):
            after = images[t][grid].astype(np.float32)
            u_after = usable[t][np.ix_(rows, cols)]
            ok_a = u_after & np.isfinite(after).all(axis=0)
            a = np.where(ok_a, after, before)          # an unusable date shows the other one: no change
            b = np.where(ok_b, before, a)
            a = np.nan_to_num(a, nan=0.0, posinf=0.0, neginf=0.0)[None]
            b = np.nan_to_num(b, nan=0.0, posinf=0.0, neginf=0.0)[None]
            if len(self._names) == 1:
                feed = {self._names[0]: np.ascontiguousarray(np.concatenate([b, a], axis=1))}
            else:
                feed = {self._names[0]: np.ascontiguousarray(b), self._names[1]: np.ascontiguousarray(a)}
            p = self._probability(self._session.run([self._output], feed)[0], (rows.size, cols.size))
            out[t - 1] = np.where(u_before & u_after, p, np.nan)
        return out

    def detect(self, window: SeriesWindow) -> PixelChange:
        """Date every pixel's change from the model's probabilities (see the module docstring).

        Parameters
        ----------
        window : SeriesWindow

        Returns
        -------
        PixelChange
            ``first_present`` (int16), ``strong`` and ``weak``.
        """
        images, usable = np.asarray(window.images), np.asarray(window.usable, bool)
        if images.ndim != 4 or images.shape[1] < 2 or usable.shape != (images.shape[0],) + images.shape[2:]:
            raise InputError(f"The onnx detector needs images (dates, bands + 1, rows, cols) and usable "
                             f"(dates, rows, cols); got {images.shape} and {usable.shape}.")
        n_t, n_c, h, w = images.shape
        self._check_channels(n_c - 1, tuple(window.band_roles))
        first = np.full((h, w), -1, np.int16)
        strong = np.zeros((h, w), bool)
        weak = np.zeros((h, w), bool)
        if n_t < 2 or h == 0 or w == 0:
            return PixelChange(first, strong, weak)
        (size_r, m_r), (size_c, m_c) = self._axis(h, self._size[0]), self._axis(w, self._size[1])
        for r0, nr in _tiles(h, size_r, m_r):
            rows = _reflect_index(np.arange(r0 - m_r, r0 - m_r + size_r), h)
            for c0, nc in _tiles(w, size_c, m_c):
                cols = _reflect_index(np.arange(c0 - m_c, c0 - m_c + size_c), w)
                p = self._pairs(window, rows, cols)[:, m_r:m_r + nr, m_c:m_c + nc]
                hi = first_persistent(p, self.threshold, self.persistence)
                lo = first_persistent(p, self.threshold / 2, self.persistence)
                cell = np.s_[r0:r0 + nr, c0:c0 + nc]
                strong[cell] = hi >= 0
                weak[cell] = (lo >= 0) & (hi < 0)
                first[cell] = np.where(hi >= 0, hi, lo)
        return PixelChange(first, strong, weak)
