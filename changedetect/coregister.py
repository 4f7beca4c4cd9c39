"""Co-registration: subpixel shifts, tie-point grids and affine models.

Each scene is registered to the reference in the reference grid's pixel space:

1. a coarse global shift by phase correlation on a decimated read (finds shifts
   of tens of pixels);
2. a grid of tie points, one phase correlation (upsampled DFT) per window, on a
   gradient representation that is robust to radiometric differences;
3. a robust fit (RANSAC, then least squares on inliers) of a translation or an
   affine model; steps 2-3 are iterated on the re-warped scene, so the last
   residual shifts are small and the estimator is unbiased where it matters.

The result is composed with the scene's nominal georeferencing into
``ref_to_scene`` (reference pixel -> scene pixel), which is exact for scenes on
other grids (GSD, origin) in the same CRS.

References
----------
Guizar-Sicairos, M., Thurman, S. T., & Fienup, J. R. (2008). Efficient subpixel
image registration algorithms. Optics Letters, 33(2), 156-158.
https://doi.org/10.1364/OL.33.000156

Scheffler, D., Hollstein, A., Diedrich, H., Segl, K., & Hostert, P. (2017).
AROSICS: An automated and robust open-source image co-registration software for
multi-sensor satellite data. Remote Sensing, 9(7), 676.
https://doi.org/10.3390/rs9070676
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from scipy import ndimage as ndi

from .errors import ChangeDetectWarning, InputError, RegistrationError
from .stack import Stack, compose

__all__ = ["Shift", "estimate_shift", "Registration", "register_scene", "coregister"]

log = logging.getLogger(__name__)
log.addHandler(logging.NullHandler())

_METHODS = ("none", "global", "local")


@dataclass(frozen=True)
class Shift:
    """A translation between two images.

    ``(dx, dy)`` is where the content at pixel ``q`` of the reference appears in
    the moving image: ``moving(q + (dx, dy)) ≈ reference(q)``.

    Attributes
    ----------
    dx, dy : float
        Shift in pixels (columns, rows).
    peak : float
        Height of the normalised phase-correlation peak (0-1): near 1 for a
        clean match, near 0 for no match.
    reliable : bool
        Whether the estimate can be trusted (texture and peak are sufficient).
    """

    dx: float
    dy: float
    peak: float
    reliable: bool


def _representation(band_stack: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Single-band, radiometry-robust representation: gradient magnitude of the band mean."""
    img = band_stack.mean(axis=0, dtype=np.float32) if band_stack.ndim == 3 else band_stack.astype(np.float32)
    if not valid.all():
        fill = float(img[valid].mean()) if valid.any() else 0.0
        img = np.where(valid, img, fill).astype(np.float32)
    gx = ndi.sobel(img, axis=1, mode="nearest")
    gy = ndi.sobel(img, axis=0, mode="nearest")
    g = np.hypot(gx, gy)
    g[~ndi.binary_erosion(valid, iterations=2, border_value=1)] = 0
    return g


def _window_fn(shape: tuple[int, int]) -> np.ndarray:
    """Separable Tukey-like taper to suppress edge effects in the DFT."""
    def taper(n):
        w = np.ones(n, dtype=np.float32)
        k = max(1, n // 8)
        ramp = 0.5 - 0.5 * np.cos(np.linspace(0, np.pi, k, dtype=np.float32))
        w[:k] = ramp
        w[-k:] = ramp[::-1]
        return w
    return np.outer(taper(shape[0]), taper(shape[1]))


def _upsampled_dft(data, upsampled_region_size, upsample_factor, axis_offsets):
    """Matrix-multiply DFT of a small region around the peak (Guizar-Sicairos 2008)."""
    im2pi = 1j * 2 * np.pi
    dim_properties = list(zip(data.shape, (upsampled_region_size,) * 2, axis_offsets))
    for n_items, ups_size, ax_offset in dim_properties[::-1]:
        kernel = ((np.arange(ups_size) - ax_offset)[:, None]
                  * np.fft.fftfreq(n_items, upsample_factor))
        kernel = np.exp(-im2pi * kernel)
        data = np.tensordot(kernel, data, axes=(1, -1))
    return data


def estimate_shift(reference: np.ndarray, moving: np.ndarray, *,
                   reference_valid: np.ndarray | None = None,
                   moving_valid: np.ndarray | None = None,
                   upsample: int = 50, min_valid: float = 0.6,
                   min_peak: float = 0.03) -> Shift:
    """Subpixel translation between two images by phase correlation.

    Both images are turned into gradient magnitudes (robust to gain, offset and
    haze differences), tapered, and cross-correlated with a whitened spectrum;
    the peak is refined with an upsampled DFT around it.

    Parameters
    ----------
    reference, moving : ndarray
        (rows, cols) or (bands, rows, cols) arrays of the same shape.
    reference_valid, moving_valid : ndarray of bool, optional
        True where the image holds data; invalid pixels do not pull the estimate.
    upsample : int
        Subpixel precision is ``1 / upsample`` pixel.
    min_valid : float
        Smallest share of pixels valid in both images for a reliable estimate.
    min_peak : float
        Smallest normalised correlation peak for a reliable estimate.

    Returns
    -------
    Shift
        ``moving(q + (dx, dy)) ≈ reference(q)``.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> ref = ndi.gaussian_filter(rng.random((96, 96)), 2)
    >>> mov = ndi.shift(ref, (2.0, -3.0), order=3, mode="nearest")  # content moves +2 rows, -3 cols
    >>> s = estimate_shift(ref, mov)
    >>> round(s.dx, 1), round(s.dy, 1), s.reliable
    (-3.0, 2.0, True)
    """
    reference = np.asarray(reference)
    moving = np.asarray(moving)
    if reference.shape != moving.shape:
        raise InputError(f"estimate_shift needs images of the same shape, got {reference.shape} "
                         f"and {moving.shape}.")
    shape2 = reference.shape[-2:]
    rv = np.ones(shape2, bool) if reference_valid is None else np.asarray(reference_valid, bool)
    mv = np.ones(shape2, bool) if moving_valid is None else np.asarray(moving_valid, bool)
    both = rv & mv
    if both.mean() < min_valid:
        return Shift(0.0, 0.0, 0.0, False)
    a = _representation(reference, rv)
    b = _representation(moving, mv)
    taper = _window_fn(shape2)
    a = (a - a[both].mean()) * taper * both
    b = (b - b[both].mean()) * taper * both
    if a.std() < 1e-6 or b.std() < 1e-6:
        return Shift(0.0, 0.0, 0.0, False)
    fa, fb = np.fft.fft2(a), np.fft.fft2(b)
    cross = fa * fb.conj()
    cross /= np.maximum(np.abs(cross), 1e-12)
    corr = np.fft.ifft2(cross).real
    peak_idx = np.unravel_index(np.argmax(corr), corr.shape)
    peak = float(corr[peak_idx])
    mid = np.array([n // 2 for n in shape2])
    shift = np.array(peak_idx, dtype=np.float64)
    shift[shift > mid] -= np.array(shape2)[shift > mid]
    if upsample > 1:
        shift = np.round(shift * upsample) / upsample
        region = math.ceil(upsample * 1.5)
        dftshift = np.fix(region / 2.0)
        offsets = dftshift - shift * upsample
        up = _upsampled_dft(cross.conj(), region, upsample, offsets).conj()
        maxima = np.unravel_index(np.argmax(np.abs(up)), up.shape)
        shift = shift + (np.array(maxima, dtype=np.float64) - dftshift) / upsample
    # corr peaks at the shift that moves `moving` onto `reference`; content of
    # reference at q is found in moving at q - that shift.
    dy, dx = -shift
    return Shift(float(dx), float(dy), peak, peak >= min_peak)


@dataclass(frozen=True)
class Registration:
    """How one scene was registered to the reference.

    Attributes
    ----------
    scene : str
        File name.
    model : str
        ``identity`` (the reference), ``none`` (georeferencing only),
        ``translation`` or ``affine``.
    ref_to_scene : ndarray
        (2, 3) affine, reference pixel (col, row) -> scene pixel (col, row).
    correction : ndarray
        (2, 3) affine in reference pixel space applied on top of the files'
        georeferencing.
    shift_px : (float, float)
        Correction at the grid centre, in reference pixels (dx, dy).
    shift_m : (float, float)
        The same in CRS units (metres for projected CRSs), (east, north).
    rotation_deg : float
        Rotation of the correction.
    scale : float
        Scale of the correction (1.0 = none).
    rmse_px : float
        RMSE of the inlier tie points about the model, in reference pixels
        (NaN when there are no tie points).
    n_tiepoints, n_inliers : int
        Tie points measured and kept.
    reliability : float
        0-1: share of tie points kept, lowered by a large residual.
    flagged : bool
        True when the scene could not be registered and was kept on its
        georeferencing alone.
    """

    scene: str
    model: str
    ref_to_scene: np.ndarray = field(repr=False)
    correction: np.ndarray = field(repr=False)
    shift_px: tuple[float, float]
    shift_m: tuple[float, float]
    rotation_deg: float
    scale: float
    rmse_px: float
    n_tiepoints: int
    n_inliers: int
    reliability: float
    flagged: bool = False

    def to_dict(self) -> dict:
        """JSON-ready record (the ``registration.<file>`` entry of run.json)."""
        def r(x, n=4):
            return None if x is None or (isinstance(x, float) and not math.isfinite(x)) else round(float(x), n)
        return {
            "model": self.model,
            "ref_to_scene": [[float(v) for v in row] for row in self.ref_to_scene],
            "correction": [[float(v) for v in row] for row in self.correction],
            "shift_px": [r(self.shift_px[0]), r(self.shift_px[1])],
            "shift_m": [r(self.shift_m[0]), r(self.shift_m[1])],
            "rotation_deg": r(self.rotation_deg, 5),
            "scale": r(self.scale, 6),
            "rmse_px": r(self.rmse_px),
            "n_tiepoints": self.n_tiepoints,
            "n_inliers": self.n_inliers,
            "reliability": r(self.reliability, 3),
            "flagged": self.flagged,
        }


def _fit(src: np.ndarray, dst: np.ndarray, model: str) -> np.ndarray:
    """Least-squares (2, 3) affine or translation mapping src points to dst points."""
    if model == "translation":
        d = (dst - src).mean(axis=0)
        return np.array([[1.0, 0.0, d[0]], [0.0, 1.0, d[1]]])
    a = np.column_stack([src, np.ones(len(src))])
    m, *_ = np.linalg.lstsq(a, dst, rcond=None)
    return m.T


def _apply(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return pts @ m[:, :2].T + m[:, 2]


def _robust_fit(src: np.ndarray, dst: np.ndarray, model: str, *, threshold: float,
                rng: np.random.Generator, trials: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """RANSAC for the model, then least squares on the consensus set."""
    n_min = 1 if model == "translation" else 3
    n = len(src)
    best = np.zeros(n, bool)
    best_err = np.inf
    if n <= n_min:
        best[:] = True
    else:
        for _ in range(trials):
            idx = rng.choice(n, n_min, replace=False)
            m = _fit(src[idx], dst[idx], model)
            err = np.linalg.norm(_apply(m, src) - dst, axis=1)
            inl = err < threshold
            score = (inl.sum(), -np.sum(np.minimum(err, threshold)))
            if inl.sum() > best.sum() or (inl.sum() == best.sum() and -score[1] < best_err):
                best, best_err = inl, -score[1]
    if best.sum() < n_min:
        best[:] = True
    m = _fit(src[best], dst[best], model)
    # one re-selection with the refined model
    err = np.linalg.norm(_apply(m, src) - dst, axis=1)
    inl = err < threshold
    if inl.sum() >= max(n_min, best.sum() // 2):
        best = inl
        m = _fit(src[best], dst[best], model)
    return m, best


def _grid_windows(shape: tuple[int, int], size: int, max_points: int):
    rows, cols = shape
    ny = max(1, min(int(math.sqrt(max_points)), (rows - size) // (size // 2) + 1))
    nx = max(1, min(int(math.sqrt(max_points)), (cols - size) // (size // 2) + 1))
    r0 = np.linspace(0, rows - size, ny).round().astype(int)
    c0 = np.linspace(0, cols - size, nx).round().astype(int)
    return [(int(r), int(c)) for r in r0 for c in c0]


def _read_windows(read, starts, size: int, width: int):
    """Read square windows by horizontal strips: one warp per row of tie points."""
    from rasterio.windows import Window

    out = {}
    for r in sorted({r for r, _ in starts}):
        cols = [c for rr, c in starts if rr == r]
        c0, c1 = min(cols), max(cols) + size
        data, valid = read(Window(c0, r, c1 - c0, size))
        for c in cols:
            out[(r, c)] = (data[:, :, c - c0:c - c0 + size], valid[:, c - c0:c - c0 + size])
    return [out[(r, c)] for r, c in starts]


def register_scene(stack: Stack, i: int, *, method: str = "local", window: int = 128,
                   max_points: int = 49, iterations: int = 3, upsample: int = 50,
                   on_failure: str = "raise", seed: int = 0) -> Registration:
    """Register scene ``i`` of ``stack`` to the stack's reference.

    Parameters
    ----------
    stack : Stack
        With nominal (georeferencing-only) ``ref_to_scene``.
    i : int
        Scene index.
    method : {"none", "global", "local"}
        ``global``: one translation for the whole scene. ``local``: a grid of
        tie points and the better of a translation and an affine model.
    window : int
        Tie-point window size in pixels.
    max_points : int
        Largest number of tie points.
    iterations : int
        Measure-and-refit rounds on the re-warped scene.
    upsample : int
        Tie-point shifts are measured to ``1 / upsample`` pixel.
    on_failure : {"raise", "keep"}
        When a scene cannot be registered: raise :class:`RegistrationError`, or
        keep its georeferencing and flag it.
    seed : int
        Seed of the RANSAC sampler (results are deterministic).

    Returns
    -------
    Registration
    """
    if method not in _METHODS:
        raise InputError(f"Unknown co-registration method '{method}'; choose one of {', '.join(_METHODS)}.")
    if on_failure not in ("raise", "keep"):
        raise InputError("on_failure must be 'raise' or 'keep'.")
    scene = stack.scenes[i]
    nominal = stack.nominal_ref_to_scene(i)
    ident = np.array([[1.0, 0, 0], [0, 1.0, 0]])
    if i == stack.reference or method == "none":
        return _make(stack, scene.name, "identity" if i == stack.reference else "none", nominal,
                     ident, np.nan, 0, 0, 1.0 if i == stack.reference else 0.0)
    rng = np.random.default_rng(seed)
    rows, cols = stack.shape

    def fail(why: str) -> Registration:
        if on_failure == "keep":
            warnings.warn(f"{scene.path}: {why}; kept on its georeferencing alone and flagged.",
                          ChangeDetectWarning, stacklevel=3)
            return _make(stack, scene.name, "none", nominal, ident, np.nan, 0, 0, 0.0, flagged=True)
        raise RegistrationError(f"{scene.path} could not be co-registered to "
                                f"{stack.scenes[stack.reference].name}: {why}. Check that both show "
                                "the same site, or pass --coregister none (or keep unregistered "
                                "scenes with --on-registration-failure keep).")

    # 1. coarse global shift on a decimated read
    f = max(1, math.ceil(max(rows, cols) / 512))
    small = (max(8, rows // f), max(8, cols // f))
    ref_s, ref_sv = stack.read(stack.reference, out_shape=small)
    mov_s, mov_sv = stack.read(i, out_shape=small, ref_to_scene=nominal)
    if not mov_sv.any():
        return fail("it has no valid pixel over the reference grid")
    s = estimate_shift(ref_s, mov_s, reference_valid=ref_sv, moving_valid=mov_sv, upsample=4,
                       min_valid=0.2)
    if not s.reliable:
        return fail("no texture in common with the reference (phase correlation found no peak)")
    sx, sy = stack.width / small[1], stack.height / small[0]
    correction = np.array([[1.0, 0, s.dx * sx], [0, 1.0, s.dy * sy]])

    # 2-3. tie points on the re-warped scene, robust fit, iterate
    size = int(min(window, rows, cols))
    if method == "global":
        size = int(min(rows, cols, 4 * window))
        starts = [((rows - size) // 2, (cols - size) // 2)]
    else:
        starts = _grid_windows((rows, cols), size, max_points)
    with stack.open_warped(stack.reference) as read_ref:
        refs = _read_windows(read_ref, starts, size, stack.width)
    centres = np.array([(c + size / 2, r + size / 2) for r, c in starts], dtype=np.float64)
    model, inliers, rmse = "translation", np.zeros(len(starts), bool), np.nan
    for it in range(iterations):
        with stack.open_warped(i, ref_to_scene=compose(nominal, correction)) as read_mov:
            movs = _read_windows(read_mov, starts, size, stack.width)
        shifts = [estimate_shift(rd, md, reference_valid=rv, moving_valid=mv, upsample=upsample)
                  for (rd, rv), (md, mv) in zip(refs, movs)]
        ok = np.array([sh.reliable for sh in shifts])
        if ok.sum() == 0:
            return fail("no tie point could be matched")
        d = np.array([(sh.dx, sh.dy) for sh in shifts])
        src = centres[ok]
        # tie point: reference q  <->  nominal-warped position correction(q + d)
        dst = _apply(correction, src + d[ok])
        candidates = ["translation"] if method == "global" or ok.sum() < 4 else ["translation", "affine"]
        fits = {}
        for mdl in candidates:
            m, inl = _robust_fit(src, dst, mdl, threshold=max(0.5, 1.5 ** (2 - it)), rng=rng)
            res = np.linalg.norm(_apply(m, src[inl]) - dst[inl], axis=1)
            fits[mdl] = (m, inl, float(np.sqrt(np.mean(res ** 2))) if len(res) else np.inf)
        model = "translation"
        if "affine" in fits:
            ta, aa = fits["translation"], fits["affine"]
            # affine only when it explains clearly more (rotation/scale present)
            if aa[1].sum() >= ta[1].sum() and aa[2] < 0.8 * ta[2] or aa[1].sum() > ta[1].sum() * 1.2:
                model = "affine"
        correction, inl_ok, rmse = fits[model]
        inliers = np.zeros(len(starts), bool)
        inliers[np.flatnonzero(ok)[inl_ok]] = True
    n_tp = len(starts)
    n_in = int(inliers.sum())
    reliability = (n_in / n_tp) * (1.0 / (1.0 + (rmse / 0.5) ** 2 if np.isfinite(rmse) else 0.0))
    return _make(stack, scene.name, model, compose(nominal, correction), correction, rmse,
                 n_tp, n_in, float(min(1.0, reliability)))


def _make(stack: Stack, name: str, model: str, ref_to_scene, correction, rmse, n_tp, n_in,
          reliability, flagged: bool = False) -> Registration:
    c = np.array([stack.width / 2, stack.height / 2])
    moved = _apply(correction, c[None])[0] - c
    t = stack.transform
    shift_m = (t.a * moved[0] + t.b * moved[1], t.d * moved[0] + t.e * moved[1])
    rot = math.degrees(math.atan2(correction[1, 0], correction[0, 0]))
    scale = float(math.sqrt(abs(np.linalg.det(correction[:, :2]))))
    return Registration(scene=name, model=model, ref_to_scene=np.asarray(ref_to_scene),
                        correction=np.asarray(correction), shift_px=(float(moved[0]), float(moved[1])),
                        shift_m=(float(shift_m[0]), float(shift_m[1])), rotation_deg=rot,
                        scale=scale, rmse_px=float(rmse), n_tiepoints=n_tp, n_inliers=n_in,
                        reliability=float(reliability), flagged=flagged)


def coregister(stack: Stack, *, method: str = "local", on_failure: str = "raise",
               progress: Callable[[int, int, str], None] | None = None,
               **kwargs) -> tuple[Stack, tuple[Registration, ...]]:
    """Register every scene of ``stack`` to its reference.

    Parameters
    ----------
    stack : Stack
        As returned by :func:`changedetect.stack.open_stack`.
    method : {"none", "global", "local"}
        See :func:`register_scene`; ``local`` (default) is the most accurate.
    on_failure : {"raise", "keep"}
        What to do with a scene that cannot be registered.
    progress : callable, optional
        Called as ``progress(done, total, scene_name)`` after each scene.
    **kwargs
        Passed to :func:`register_scene`.

    Returns
    -------
    stack : Stack
        The same scenes with ``ref_to_scene`` updated.
    registrations : tuple of Registration
        One per scene, in stack order.
    """
    regs = []
    for i in range(len(stack)):
        reg = register_scene(stack, i, method=method, on_failure=on_failure, **kwargs)
        log.info("registered %s: %s shift=(%.2f, %.2f) px rot=%.3f deg rmse=%.3f px, %d/%d tie points",
                 reg.scene, reg.model, *reg.shift_px, reg.rotation_deg, reg.rmse_px,
                 reg.n_inliers, reg.n_tiepoints)
        regs.append(reg)
        if progress is not None:
            progress(i + 1, len(stack), reg.scene)
    return stack.with_ref_to_scene([r.ref_to_scene for r in regs]), tuple(regs)
