"""Co-registration to a fraction of a pixel: coarse shift, tie points, iterated refinement.

Each scene is registered to the reference in the reference grid's pixel space,
as a correction ``C`` applied before the scene's nominal georeferencing ``N``
(reference pixel -> scene pixel), so ``ref_to_scene = N ∘ C``:

1. **Coarse**: phase correlation of decimated, band-passed images finds shifts
   of tens of pixels (up to a quarter of the image).
2. **Tie points**: a grid of windows (100 of 64 px by default); per window,
   phase correlation on a band-passed band mean (a difference of Gaussians,
   blind to gain, offset and haze), whitened and weighted by a Gaussian
   low-pass. Each tie point has a reliability: its peak height in noise
   standard deviations, its share of valid pixels.
3. **Outliers**: local consistency (a tie point must agree with the median of
   its neighbours), then RANSAC on the model.
4. **Refinement**: every window is re-warped through the current model (a
   cubic spline of the scene's own pixels, read once per row of windows) and
   re-measured (upsampled DFT around the peak), and the model is refitted to
   the windows' shifts with Huber weights, until the residuals vanish. Phase
   correlation is biased towards whole pixels on blurred imagery, but not at a
   zero shift, so the fixed point is unbiased; a known probe shift calibrates
   the estimator's gain so that this takes 2-4 rounds. Phase correlation seeks
   the mode: a moved shadow or a new building makes a secondary peak instead
   of pulling the main one. Windows whose residual disagrees are dropped.
5. **Model choice**: the refined tie points are fitted by a translation, an
   affine and a second-order polynomial; the lowest BIC wins (a polynomial
   must also save a quarter of the affine's residual).

Memory depends on the window size and the number of tie points, never on the
raster size: only the windows (and the scene pixels under them) are read.

References
----------
Guizar-Sicairos, M., Thurman, S. T., & Fienup, J. R. (2008). Efficient subpixel
image registration algorithms. Optics Letters, 33(2), 156-158.

Scheffler, D., Hollstein, A., Diedrich, H., Segl, K., & Hostert, P. (2017).
AROSICS: An automated and robust open-source image co-registration software for
multi-sensor satellite data. Remote Sensing, 9(7), 676.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import os
import warnings
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
from scipy import fft as sfft
from scipy import ndimage as ndi

from . import portable
from .errors import ChangeDetectWarning, InputError, RegistrationError
from .io import raster_profile
from .stack import Stack, apply_mapping, compose_mapping

__all__ = ["Shift", "estimate_shift", "Registration", "register_scene", "coregister", "save_registered",
           "MODELS"]

log = logging.getLogger(__name__)
log.addHandler(logging.NullHandler())

_METHODS = ("none", "global", "local")
#: Correction models, by number of basis functions per coordinate.
MODELS = {"translation": 1, "affine": 3, "poly2": 6}
_S1, _S2 = 1.0, 3.0        # band-pass: difference of Gaussians, in reference pixels
_MARGIN = 10               # reference pixels of context around a window for the band-pass
_SLACK = 8                 # extra reference pixels of scene read around a window
_PEAK_SIGMA = 0.7          # px: Gaussian low-pass of the whitened cross-power spectrum
_DROP_MIN, _DROP_K = 0.05, 3.0   # a window leaves the model beyond max(px, k x spread)
_POLY_GAIN = 0.02          # px (and a quarter) of tie-point RMSE a polynomial must save
_PROBE = 0.25              # px: known extra shift that calibrates the phase-correlation gain
_MIN_Z = 7.0               # phase-correlation peak, in noise sigmas, for a reliable tie point
#: Tie points a model needs per basis function of a coordinate (poly2: 9 for 6; affine: 5 for 3): fewer
#: over-determine it so little that it fits their errors and extrapolates them over the scene.
_POINTS_PER_TERM = 1.5
_WORKERS = max(1, min(4, os.cpu_count() or 1))
_IN_PLANE = np.zeros((3, 3, 3), bool)        # 4-connectivity within each window of a batch
_IN_PLANE[1] = ndi.generate_binary_structure(2, 1)


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
        Whether the estimate can be trusted: the peak stands out of the
        correlation noise, enough pixels are valid in both images and the
        refinement converged.
    """

    dx: float
    dy: float
    peak: float
    reliable: bool


# --------------------------------------------------------------------------- kernels

def _band_mean(data: np.ndarray) -> np.ndarray:
    return data.mean(axis=0, dtype=np.float32) if data.ndim == 3 else data.astype(np.float32)


def _bandpass(img: np.ndarray, valid: np.ndarray, scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Difference of Gaussians by normalised convolution; invalid pixels do not leak in.

    ``scale`` is the size of a reference pixel in this image's pixels, so that
    the pass band is the same on the ground for scenes of another GSD.
    """
    img = np.asarray(img, dtype=np.float32)
    s1, s2 = _S1 * scale, _S2 * scale
    if valid.all():
        return (portable.gaussian_filter(img, s1, truncate=3.0)
                - portable.gaussian_filter(img, s2, truncate=3.0)), valid
    rows, cols = np.flatnonzero(valid.any(axis=1)), np.flatnonzero(valid.any(axis=0))
    if not len(rows):
        return np.zeros_like(img), valid
    r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    if valid[r0:r1, c0:c1].all() and r1 - r0 > 8 and c1 - c0 > 8:
        # valid pixels form a rectangle (a box reaching past the image edge): filter just that
        rep = np.zeros_like(img)
        rep[r0:r1, c0:c1], _ = _bandpass(img[r0:r1, c0:c1], valid[r0:r1, c0:c1], scale)
        e = max(1, int(round(2 * s1)))
        ok = np.zeros_like(valid)
        ok[r0 + e:r1 - e, c0 + e:c1 - e] = True
        rep[~ok] = 0
        return rep, ok
    v = valid.astype(np.float32)
    iv = np.where(valid, img, 0).astype(np.float32)

    def smooth(s):
        return (portable.gaussian_filter(iv, s, truncate=3.0)
                / np.maximum(portable.gaussian_filter(v, s, truncate=3.0), 1e-3))

    ok = ndi.binary_erosion(valid, iterations=max(1, int(round(2 * s1))), border_value=1)
    rep = smooth(s1) - smooth(s2)
    rep[~ok] = 0
    return rep, ok


def _taper(shape: tuple[int, int]) -> np.ndarray:
    """Separable Tukey taper (cosine ramps over an eighth of each side)."""
    def one(n):
        w = np.ones(n, dtype=np.float32)
        k = max(1, n // 8)
        # float64 cos is libm's on every CPU (NumPy's float32 cos is not)
        ramp = (0.5 - 0.5 * np.cos(np.linspace(0, np.pi, k))).astype(np.float32)
        w[:k] = ramp
        w[-k:] = ramp[::-1]
        return w
    return np.outer(one(shape[0]), one(shape[1]))


def _refine_peaks(cross: np.ndarray, shift: np.ndarray, upsample: int) -> np.ndarray:
    """Refine integer peaks ``shift`` (n, 2) by an upsampled DFT around each (Guizar-Sicairos
    2008), batched over windows, then a parabola through the finest peak."""
    n, h, w = cross.shape
    region = int(math.ceil(1.5 * upsample)) | 1
    centre = region // 2
    ar = (np.arange(region, dtype=np.float64) - centre) / upsample

    # kr[k, i, r] = exp(2j pi (ar_i + s_k) f_r) = exp(2j pi ar_i f_r) exp(2j pi s_k f_r): float64
    # cos and sin (libm: the same on every CPU) and the product in real arithmetic (NumPy's
    # complex multiply takes FMA on some CPUs only); the matrix products through
    # portable.matmul_exact, whose sums do not depend on OpenBLAS's kernel
    def kern(size, s):
        f = np.fft.fftfreq(size)                                # cycles per pixel
        pa = (2 * np.pi) * (ar[:, None] * f[None, :])           # (region, size)
        ps = (2 * np.pi) * (s[:, None] * f[None, :])            # (n, size)
        ca, sa, cs, ss = np.cos(pa)[None], np.sin(pa)[None], np.cos(ps)[:, None], np.sin(ps)[:, None]
        k = np.empty((len(s),) + pa.shape, np.complex128)
        k.real = ca * cs - sa * ss
        k.imag = sa * cs + ca * ss
        return k
    kr = kern(h, shift[:, 0])                                  # (n, region, h)
    kc = kern(w, shift[:, 1])                                  # (n, region, w)
    prod = portable.matmul_exact(portable.matmul_exact(kr, cross), kc.transpose(0, 2, 1))
    up = np.sqrt(prod.real * prod.real + prod.imag * prod.imag)
    flat = up.reshape(n, -1)
    idx = flat.argmax(axis=1)
    pi, pj = np.unravel_index(idx, (region, region))
    out = shift.copy()
    rng_n = np.arange(n)
    for ax, pos in enumerate((pi, pj)):
        lo, hi = np.clip(pos - 1, 0, region - 1), np.clip(pos + 1, 0, region - 1)
        y0 = up[rng_n, pi, pj]
        ym = up[rng_n, lo, pj] if ax == 0 else up[rng_n, pi, lo]
        yp = up[rng_n, hi, pj] if ax == 0 else up[rng_n, pi, hi]
        den = ym - 2 * y0 + yp
        with np.errstate(divide="ignore", invalid="ignore"):
            off = np.where((den < 0) & (pos > 0) & (pos < region - 1), 0.5 * (ym - yp) / den, 0.0)
        out[:, ax] = shift[:, ax] + (pos - centre + np.clip(off, -0.5, 0.5)) / upsample
    return out


@functools.lru_cache(maxsize=8)
def _lowpass(h: int, w: int) -> np.ndarray:
    fy, fx = np.fft.fftfreq(h)[:, None], np.fft.fftfreq(w)[None, :]
    return portable.exp(-2 * (np.pi * _PEAK_SIGMA) ** 2 * (fy * fy + fx * fx)).astype(np.float32)


def _phase_correlate(a: np.ndarray, b: np.ndarray, va: np.ndarray, vb: np.ndarray,
                     upsample: int = 20) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Batched phase correlation of band-passed windows ``(n, h, w)``.

    The peak is located to ``1 / upsample`` px by an upsampled DFT, then
    interpolated. Returns ``d`` (n, 2) as (dx, dy) with ``b(q + d) ≈ a(q)``,
    the normalised peak height and its significance (peak over the correlation's standard
    deviation: about 4.5 for unrelated images of 128² px, 15-60 for a match).
    """
    n, h, w = a.shape
    both = va & vb
    # One soft-edged window for both (different windows would bias the shift); the weighted
    # mean is removed so that the window itself does not correlate with itself.
    weight = both.astype(np.float32)
    holes = np.flatnonzero(~both.reshape(n, -1).all(axis=1))
    if len(holes):
        sub = both[holes]
        weight[holes] = portable.gaussian_filter(
            ndi.binary_erosion(sub, _IN_PLANE, iterations=2).astype(np.float32), (0, 2.0, 2.0),
            truncate=2.5) * sub
    weight = weight * _taper((h, w))
    total = np.maximum(weight.sum(axis=(1, 2), keepdims=True), 1e-9)
    a = (a - (a * weight).sum(axis=(1, 2), keepdims=True) / total) * weight
    b = (b - (b * weight).sum(axis=(1, 2), keepdims=True) / total) * weight
    fa = sfft.fft2(a.astype(np.float32), workers=_WORKERS)
    fb = sfft.fft2(b.astype(np.float32), workers=_WORKERS)
    # cross = fa * conj(fb) in real arithmetic: NumPy's complex multiply and abs take FMA
    # on AVX2 CPUs and not on older ones, so their last bits depend on the CPU
    re = fa.real * fb.real
    re += fa.imag * fb.imag
    im = fa.imag * fb.real
    im -= fa.real * fb.imag
    # whiten, then weight by a Gaussian low-pass: high frequencies carry little signal in
    # blurred imagery, and whitened noise there locks the peak to whole pixels
    gain = _lowpass(h, w) / np.maximum(np.sqrt(re * re + im * im), 1e-12)
    cross = np.empty(fa.shape, np.complex64)
    cross.real = re * gain
    cross.imag = im * gain
    corr = sfft.ifft2(cross, workers=_WORKERS).real.reshape(n, -1)
    idx = corr.argmax(axis=1)
    peak = corr[np.arange(n), idx]
    z = peak / np.maximum(corr.std(axis=1), 1e-12)
    shift = np.stack(np.unravel_index(idx, (h, w)), axis=1).astype(np.float64)
    for ax, size in enumerate((h, w)):
        wrap = shift[:, ax] > size // 2
        shift[wrap, ax] -= size
    if upsample > 1:
        shift = _refine_peaks(cross, shift, upsample)
    # corr peaks at the shift that moves b onto a; a(q) is found in b at q - shift
    return -shift[:, ::-1], peak, z


# --------------------------------------------------------------------------- models

def _basis(xn: np.ndarray, yn: np.ndarray, k: int) -> list[np.ndarray]:
    out = [np.ones_like(xn)]
    if k >= 3:
        out += [xn, yn]
    if k >= 6:
        out += [xn * xn, xn * yn, yn * yn]
    return out


@dataclass(frozen=True)
class _Frame:
    """Normalised coordinates (x - cx) / L keep the polynomial fits well conditioned."""
    cx: float
    cy: float
    scale: float

    def norm(self, x, y):
        return (x - self.cx) / self.scale, (y - self.cy) / self.scale


def _displacement(theta: np.ndarray, frame: _Frame, x, y) -> tuple[np.ndarray, np.ndarray]:
    k = theta.shape[1]
    phi = _basis(*frame.norm(np.asarray(x, np.float64), np.asarray(y, np.float64)), k)
    return sum(t * p for t, p in zip(theta[0], phi)), sum(t * p for t, p in zip(theta[1], phi))


def _theta_to_matrix(theta: np.ndarray, frame: _Frame) -> np.ndarray:
    """Correction ``C(q) = q + displacement(q)`` as a (2, 3) or (2, 6) pixel-space matrix.

    Columns are the monomials ``x, y, 1`` (then ``x², xy, y²``).
    """
    k = theta.shape[1]
    a, b, c = 1.0 / frame.scale, -frame.cx / frame.scale, -frame.cy / frame.scale
    rows = []
    for r in range(2):
        t = np.zeros(6)
        t[:k] = theta[r]
        mx = t[1] * a + 2 * t[3] * a * b + t[4] * a * c
        my = t[2] * a + t[4] * a * b + 2 * t[5] * a * c
        m1 = t[0] + t[1] * b + t[2] * c + t[3] * b * b + t[4] * b * c + t[5] * c * c
        rows.append([mx, my, m1, t[3] * a * a, t[4] * a * a, t[5] * a * a])
    m = np.array(rows)
    m[0, 0] += 1.0
    m[1, 1] += 1.0
    return m if k == 6 else m[:, :3]


def _residual(theta: np.ndarray, frame: _Frame, q: np.ndarray, d: np.ndarray) -> np.ndarray:
    """(n, 2) misfit of tie points ``q -> q + d`` about the displacement model ``theta``."""
    return np.column_stack(_displacement(theta, frame, q[:, 0], q[:, 1])) - d


def _fit_theta(q: np.ndarray, d: np.ndarray, k: int, frame: _Frame) -> np.ndarray:
    """Least-squares displacement model (2, k) through tie points ``q -> q + d``."""
    phi = np.column_stack(_basis(*frame.norm(q[:, 0], q[:, 1]), k))
    return portable.lstsq(phi, d).T


def _robust_theta(q: np.ndarray, d: np.ndarray, k: int, frame: _Frame, passes: int = 4) -> np.ndarray:
    """Displacement model fitted with Huber weights: windows that disagree count less."""
    theta = _fit_theta(q, d, k, frame)
    if len(q) <= 2 * k:
        return theta
    phi = np.column_stack(_basis(*frame.norm(q[:, 0], q[:, 1]), k))
    for _ in range(passes):
        r = np.hypot(*(portable.dot(phi, theta.T) - d).T)
        scale = max(1.4826 * float(np.median(r)), 0.005)
        w = np.sqrt(np.minimum(1.0, 1.5 * scale / np.maximum(r, 1e-12)))
        theta = portable.lstsq(phi * w[:, None], d * w[:, None]).T
    return theta


def _ransac(q: np.ndarray, d: np.ndarray, k: int, frame: _Frame, threshold: float,
            rng: np.random.Generator, trials: int = 200) -> np.ndarray:
    """Inlier mask of the largest consensus set (ties broken by the smaller truncated error)."""
    n = len(q)
    if n <= k:
        return np.ones(n, bool)
    best, best_cost = np.ones(n, bool), np.inf
    for _ in range(trials):
        idx = rng.choice(n, k, replace=False)
        theta = _fit_theta(q[idx], d[idx], k, frame)
        err = np.hypot(*_residual(theta, frame, q, d).T)
        cost = float(np.sum(np.minimum(err, threshold) ** 2))
        if cost < best_cost:
            best, best_cost = err < threshold, cost
    theta = _fit_theta(q[best], d[best], k, frame) if best.sum() > k else None
    if theta is not None:
        err = np.hypot(*_residual(theta, frame, q, d).T)
        refit = err < threshold
        if refit.sum() >= best.sum():
            best = refit
    return best


def _locally_consistent(q: np.ndarray, d: np.ndarray, spacing: float) -> np.ndarray:
    """Tie points that agree with the median of their neighbours (within 1.6 grid spacings)."""
    n = len(q)
    if n < 5:
        return np.ones(n, bool)
    dist = np.hypot(q[:, None, 0] - q[None, :, 0], q[:, None, 1] - q[None, :, 1])
    near = (dist <= 1.6 * spacing) & (dist > 0)
    dev = np.full(n, np.nan)
    for i in range(n):           # per tie point (at most a few hundred), not per pixel
        if near[i].sum() >= 2:
            dev[i] = np.hypot(*(d[i] - np.median(d[near[i]], axis=0)))
    ok = np.isfinite(dev)
    if not ok.any():
        return np.ones(n, bool)
    scale = 1.4826 * np.median(dev[ok])
    return ~ok | (dev <= max(1.0, 4.0 * scale))


def _rms_fit(q, d, k, frame) -> float:
    r = _residual(_fit_theta(q, d, k, frame), frame, q, d)
    return float(np.sqrt(np.mean(np.sum(r ** 2, axis=1))))


def _enough(kind: str) -> int:
    """Fewest tie points a correction model may be fitted to (:data:`_POINTS_PER_TERM` per basis function)."""
    return math.ceil(_POINTS_PER_TERM * MODELS[kind])


def _bic(q, d, k, frame, floor=0.05) -> float:
    r = _residual(_fit_theta(q, d, k, frame), frame, q, d)
    n = r.size
    return n * math.log(max(float(np.mean(r ** 2)), floor ** 2)) + 2 * k * math.log(n)


# --------------------------------------------------------------------------- windows

@dataclass
class _Windows:
    """Tie-point windows of the reference: band-passed pixels and pixel-centre coordinates."""
    starts: list            # (row, col) of each window's upper-left pixel
    shape: tuple            # (h, w) of every window
    rep: np.ndarray         # (n, h, w) float32
    valid: np.ndarray       # (n, h, w) bool
    x: np.ndarray           # (n, h, w) float64 pixel-centre columns
    y: np.ndarray           # (n, h, w) float64 pixel-centre rows
    texture: np.ndarray     # (n,) robust contrast of rep

    @property
    def centres(self) -> np.ndarray:
        h, w = self.shape
        return np.array([(c + w / 2, r + h / 2) for r, c in self.starts], dtype=np.float64)


def _grid_starts(shape: tuple[int, int], size: int, max_points: int) -> list[tuple[int, int]]:
    rows, cols = shape
    per_side = max(1, int(math.sqrt(max_points)))
    ny = max(1, min(per_side, (rows - size) // max(1, size // 2) + 1))
    nx = max(1, min(per_side, (cols - size) // max(1, size // 2) + 1))
    r0 = np.linspace(0, rows - size, ny).round().astype(int)
    c0 = np.linspace(0, cols - size, nx).round().astype(int)
    return [(int(r), int(c)) for r in r0 for c in c0]


def _read_box(src, box, scene, stack: Stack | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Band mean and validity of a box (c0, r0, c1, r1) of an open raster; outside = invalid.

    The spectral bands only, valid where no band is nodata and alpha/mask allow
    (:func:`changedetect.io.read_pixels`). With ``stack``, the box is on the
    stack's grid and is read from the reference warped onto it (a stack whose
    grid is not the reference file's own, see
    :func:`changedetect.stack.working_grid`).
    """
    from rasterio.windows import Window

    from .io import read_pixels

    c0, r0, c1, r1 = box
    img = np.zeros((r1 - r0, c1 - c0), np.float32)
    valid = np.zeros((r1 - r0, c1 - c0), bool)
    width, height = (src.width, src.height) if stack is None else (stack.width, stack.height)
    cc0, rr0, cc1, rr1 = max(c0, 0), max(r0, 0), min(c1, width), min(r1, height)
    if cc1 > cc0 and rr1 > rr0:
        win = Window(cc0, rr0, cc1 - cc0, rr1 - rr0)
        if stack is None:
            arr, ok = read_pixels(src, scene, win)
            ok &= np.all(np.isfinite(arr), axis=0)
        else:
            arr, ok = stack.read(stack.reference, win)
        img[rr0 - r0:rr1 - r0, cc0 - c0:cc1 - c0] = np.where(ok, _band_mean(arr), 0)
        valid[rr0 - r0:rr1 - r0, cc0 - c0:cc1 - c0] = ok
    return img, valid


def _reference_windows(stack: Stack, starts, shape) -> _Windows:
    import rasterio

    h, w = shape
    scene = stack.scenes[stack.reference]
    n = len(starts)
    rep = np.zeros((n, h, w), np.float32)
    valid = np.zeros((n, h, w), bool)
    m = np.asarray(stack.ref_to_scene[stack.reference])
    own_grid = m.shape == (2, 3) and np.allclose(m, [[1, 0, 0], [0, 1, 0]], atol=1e-9)
    with rasterio.open(scene.path) as src:
        for r in sorted({r for r, _ in starts}):        # one read and one filter per row of windows
            ks = [k for k, (rr, _) in enumerate(starts) if rr == r]
            c0 = min(starts[k][1] for k in ks) - _MARGIN
            c1 = max(starts[k][1] for k in ks) + w + _MARGIN
            # a stack on another grid than the reference file's (a geographic or Web Mercator
            # reference is worked on in UTM) reads the reference warped onto it
            img, ok = _read_box(src, (c0, r - _MARGIN, c1, r + h + _MARGIN), scene,
                                None if own_grid else stack)
            rr, vv = _bandpass(img, ok)
            for k in ks:
                j = starts[k][1] - c0
                rep[k] = rr[_MARGIN:_MARGIN + h, j:j + w]
                valid[k] = vv[_MARGIN:_MARGIN + h, j:j + w]
    jj, ii = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
    x = np.stack([jj + c for _, c in starts])
    y = np.stack([ii + r for r, _ in starts])
    texture = np.array([1.4826 * np.median(np.abs(rep[k][valid[k]])) if valid[k].any() else 0.0
                        for k in range(n)])
    return _Windows(list(starts), (h, w), rep, valid, x, y, texture)


@dataclass
class _Reference:
    """What registration needs of the reference, read once per stack."""
    windows: _Windows
    small: tuple            # (rows, cols) of the decimated grid for the coarse shift
    coarse: np.ndarray      # band-passed decimated reference
    coarse_valid: np.ndarray


def _read_reference(stack: Stack, window: int, max_points: int) -> _Reference:
    rows, cols = stack.shape
    f = max(1, math.ceil(max(rows, cols) / 512))
    small = (max(16, rows // f), max(16, cols // f))
    data, valid = stack.read(stack.reference, out_shape=small)
    coarse, coarse_valid = _bandpass(_band_mean(data), valid)
    size = int(min(window, rows, cols))
    windows = _reference_windows(stack, _grid_starts((rows, cols), size, max_points), (size, size))
    return _Reference(windows, small, coarse, coarse_valid)


@dataclass
class _Patch:
    rep: np.ndarray         # band-passed scene pixels
    coef: np.ndarray        # their cubic B-spline coefficients
    valid: np.ndarray
    c0: int
    r0: int


def _make_patch(rep: np.ndarray, valid: np.ndarray, c0: int, r0: int) -> _Patch:
    # the cubic spline reaches 2 px: samples that near a hole are not trusted
    if not valid.all():
        valid = ndi.binary_erosion(valid, iterations=2, border_value=1)
    return _Patch(rep, ndi.spline_filter(rep, order=3, mode="mirror"), valid, c0, r0)


class _Scene:
    """The scene pixels under each window, band-passed and ready to be warped."""

    def __init__(self, info, nominal: np.ndarray, windows: _Windows):
        self.info = info                  # the SceneInfo: bands, nodata, alpha
        self.path = None if info is None else info.path
        self.nominal = nominal
        self.win = windows
        self.scale = float(math.sqrt(abs(portable.det(nominal[:, :2]))))
        self.patches: list[_Patch | None] = [None] * len(windows.starts)
        self.boxes: list[tuple | None] = [None] * len(windows.starts)

    def _boxes(self, mapping: np.ndarray, which, pad: float) -> np.ndarray:
        """(len(which), 4) boxes c0, r0, c1, r1 of scene pixels needed by windows ``which``."""
        h, w = self.win.shape
        st = np.array([self.win.starts[k] for k in which], dtype=np.float64).reshape(-1, 2)
        fx = np.array([-pad, w / 2, w + pad])
        fy = np.array([-pad, h / 2, h + pad])
        gx = (st[:, 1, None, None] + fx[None, None, :]).repeat(3, axis=1)   # (n, 3, 3)
        gy = (st[:, 0, None, None] + fy[None, :, None]).repeat(3, axis=2)
        sx, sy = apply_mapping(mapping, gx.reshape(len(st), -1), gy.reshape(len(st), -1))
        extra = 4 + math.ceil(3 * _S2 * self.scale)
        return np.column_stack([np.floor(sx.min(axis=1)) - extra, np.floor(sy.min(axis=1)) - extra,
                                np.ceil(sx.max(axis=1)) + extra, np.ceil(sy.max(axis=1)) + extra]).astype(int)

    def load(self, mapping: np.ndarray, which=None) -> None:
        """Read (again) the windows whose scene pixels are not all in memory under ``mapping``."""
        import rasterio

        which = list(range(len(self.patches)) if which is None else which)
        need = self._boxes(mapping, which, _MARGIN)
        missing = []
        for k, nb in zip(which, need):
            have = self.boxes[k]
            if not (have is not None and nb[0] >= have[0] and nb[1] >= have[1]
                    and nb[2] <= have[2] and nb[3] <= have[3]):
                missing.append(k)
        if not missing:
            return
        with rasterio.open(self.path) as src:
            # one read, filter and spline fit per row of windows; the windows share it
            for r in sorted({self.win.starts[k][0] for k in missing}):
                ks = [k for k in missing if self.win.starts[k][0] == r]
                boxes = self._boxes(mapping, ks, _MARGIN + _SLACK)
                box = (int(boxes[:, 0].min()), int(boxes[:, 1].min()), int(boxes[:, 2].max()),
                       int(boxes[:, 3].max()))
                img, ok = _read_box(src, box, self.info)
                rep, ok = _bandpass(img, ok, self.scale)
                patch = _make_patch(rep, ok, box[0], box[1])
                for k, b in zip(ks, boxes):
                    self.patches[k] = patch
                    self.boxes[k] = tuple(int(v) for v in b)

    def warp(self, mapping: np.ndarray, which, order: int = 3) -> tuple[np.ndarray, np.ndarray]:
        """Band-passed scene sampled at ``mapping(q)`` for the pixels of windows ``which``."""
        h, w = self.win.shape
        out = np.zeros((len(which), h, w), np.float32)
        ok = np.zeros((len(which), h, w), bool)
        for j, k in enumerate(which):     # one interpolation call per window
            p = self.patches[k]
            sx, sy = apply_mapping(mapping, self.win.x[k], self.win.y[k])
            ii, jj = sy - 0.5 - p.r0, sx - 0.5 - p.c0
            ph, pw = p.valid.shape
            inside = (ii >= 1) & (ii <= ph - 2) & (jj >= 1) & (jj <= pw - 2)
            if order == 3:
                out[j] = ndi.map_coordinates(p.coef, [ii, jj], order=3, prefilter=False, mode="mirror")
            else:
                out[j] = ndi.map_coordinates(p.rep, [ii, jj], order=1, mode="mirror")
            ri = np.clip(np.rint(ii).astype(np.intp), 0, ph - 1)
            rj = np.clip(np.rint(jj).astype(np.intp), 0, pw - 1)
            ok[j] = inside & p.valid[ri, rj]
        return out, ok


# --------------------------------------------------------------------------- dense refinement

@dataclass
class _Fit:
    theta: np.ndarray        # (2, k) displacement model in normalised coordinates
    d: np.ndarray            # (n, 2) residual shift of each window about the model (NaN: not measured)
    z: np.ndarray            # (n,) peak significance of each window's last phase correlation
    iterations: int
    converged: bool
    gain: np.ndarray = field(default_factory=lambda: np.ones(2))

    @property
    def kind(self) -> str:
        return {1: "translation", 3: "affine", 6: "poly2"}[self.theta.shape[1]]


def _refine(scene: _Scene, win: _Windows, frame: _Frame, theta: np.ndarray, active: np.ndarray,
            measure: np.ndarray, *, max_iter: int = 10, tol: float = 5e-3, upsample: int = 20,
            gain: np.ndarray | None = None) -> _Fit:
    """Iterate: warp every window through the model, measure its residual shift, refit the model.

    The residual shift of a window is measured by phase correlation (a
    mode-seeking estimator: moved shadows and new buildings make a secondary
    peak rather than pulling the main one) on the scene warped through the
    current model with a cubic spline. Phase correlation is biased towards
    whole pixels, but not at a zero shift, which is where the iteration ends,
    so the fixed point is unbiased. The model is fitted to the windows'
    shifts with Huber weights, so no window, however contrasted, dominates.
    """
    theta = np.array(theta, dtype=np.float64)
    k = theta.shape[1]
    idx = np.flatnonzero(measure | active)
    act = active[idx]
    q = win.centres[idx]
    n = len(win.starts)
    d = np.full((n, 2), np.nan)
    z = np.zeros(n)
    converged, it = False, 0
    mx = my = np.zeros(len(idx))
    calibrate = gain is None
    gain = np.ones(2) if gain is None else gain
    last = np.inf
    for it in range(1, max_iter + 1):
        mapping = compose_mapping(scene.nominal, _theta_to_matrix(theta, frame))
        scene.load(mapping, idx)
        W, WV = scene.warp(mapping, idx, order=3)
        dd, _, zz = _phase_correlate(win.rep[idx], W, win.valid[idx], WV, upsample)
        share = (win.valid[idx] & WV).mean(axis=(1, 2))
        ok = (zz >= _MIN_Z) & (share >= 0.5)
        if calibrate and it == 1 and (act & ok).any():
            # Whitened phase correlation under-reads subpixel shifts where noise dominates the
            # high frequencies. Calibrate that gain on these very windows: warp them a known
            # _PROBE px further and see how much the measured shift moves.
            probe = _theta_to_matrix(np.array([[_PROBE] + [0.0] * (k - 1),
                                               [_PROBE] + [0.0] * (k - 1)]) + theta, frame)
            W2, WV2 = scene.warp(compose_mapping(scene.nominal, probe), idx, order=3)
            d2, _, _ = _phase_correlate(win.rep[idx], W2, win.valid[idx], WV2, upsample)
            sel = act & ok
            gain = np.clip(np.median((dd[sel] - d2[sel]) / _PROBE, axis=0), 0.5, 1.25)
        dd = dd / gain
        d[idx] = np.where(ok[:, None], dd, np.nan)
        z[idx] = zz
        use = act & ok
        if use.sum() < k:
            break
        mx, my = _displacement(theta, frame, q[:, 0], q[:, 1])
        new = _robust_theta(q[use], np.column_stack([mx, my])[use] + dd[use], k, frame)
        nx, ny = _displacement(new, frame, q[:, 0], q[:, 1])
        move = float(np.max(np.hypot(nx - mx, ny - my)))
        if move > 1.5 * last:             # diverging: the gain was too low; damp and retry
            gain = np.minimum(1.25, gain * 1.5)
            continue
        theta = new
        if move < tol or (it > 2 and 0.7 * last < move < 0.03):   # converged, or down to the noise
            converged = True
            break
        last = move
    # residuals about the final model
    nx, ny = _displacement(theta, frame, q[:, 0], q[:, 1])
    d[idx, 0] += mx - nx
    d[idx, 1] += my - ny
    return _Fit(theta, d, np.where(z > 0, z, np.nan), it, converged, gain)


# --------------------------------------------------------------------------- public API

def estimate_shift(reference: np.ndarray, moving: np.ndarray, *,
                   reference_valid: np.ndarray | None = None,
                   moving_valid: np.ndarray | None = None,
                   upsample: int = 20, min_valid: float = 0.5, refine: bool = True) -> Shift:
    """Subpixel translation between two images.

    Both images are reduced to a band-passed band mean (robust to gain, offset
    and haze differences); phase correlation gives the shift to 1/``upsample``
    px, then the moving image is re-warped (cubic spline) and re-measured until
    the residual shift vanishes, which removes the bias of phase correlation
    towards whole pixels.

    Parameters
    ----------
    reference, moving : ndarray
        (rows, cols) or (bands, rows, cols) arrays of the same shape, any
        numeric dtype.
    reference_valid, moving_valid : ndarray of bool, optional
        True where the image holds data; invalid pixels do not pull the estimate.
    upsample : int
        Precision of the phase-correlation start, ``1 / upsample`` px.
    min_valid : float
        Smallest share of pixels valid in both images for a reliable estimate.
    refine : bool
        Iterate to a zero residual (default); False gives plain phase correlation.

    Returns
    -------
    Shift
        ``moving(q + (dx, dy)) ≈ reference(q)``.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> ref = ndi.gaussian_filter(rng.random((96, 96)), 2)
    >>> mov = ndi.shift(ref, (2.25, -3.5), order=3, mode="nearest")  # content moves +2.25 rows, -3.5 cols
    >>> s = estimate_shift(ref, mov)
    >>> round(s.dx, 2), round(s.dy, 2), s.reliable
    (-3.5, 2.25, True)
    """
    reference = np.asarray(reference)
    moving = np.asarray(moving)
    if reference.shape != moving.shape:
        raise InputError(f"estimate_shift needs images of the same shape, got {reference.shape} "
                         f"and {moving.shape}.")
    h, w = reference.shape[-2:]
    rv = np.ones((h, w), bool) if reference_valid is None else np.asarray(reference_valid, bool)
    mv = np.ones((h, w), bool) if moving_valid is None else np.asarray(moving_valid, bool)
    if reference.dtype.kind == "f":
        rv = rv & np.isfinite(reference).reshape(-1, h, w).all(axis=0)
    if moving.dtype.kind == "f":
        mv = mv & np.isfinite(moving).reshape(-1, h, w).all(axis=0)
    if (rv & mv).mean() < min_valid:
        return Shift(0.0, 0.0, 0.0, False)
    a, av = _bandpass(np.where(rv, _band_mean(np.nan_to_num(reference)), 0), rv)
    b, bv = _bandpass(np.where(mv, _band_mean(np.nan_to_num(moving)), 0), mv)
    if not (av & bv).any() or a[av].std() < 1e-9 or b[bv].std() < 1e-9:
        return Shift(0.0, 0.0, 0.0, False)
    d, peak, z = _phase_correlate(a[None], b[None], av[None], bv[None], upsample)
    dx, dy = float(d[0, 0]), float(d[0, 1])
    reliable = bool(z[0] >= _MIN_Z)
    if refine and reliable:
        win = _Windows([(0, 0)], (h, w), a[None], av[None],
                       *[g[None] for g in np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)],
                       np.array([1.0]))
        scene = _ArrayScene(b, bv, win)
        frame = _Frame(w / 2, h / 2, max(h, w) / 2)
        fit = _refine(scene, win, frame, np.array([[dx], [dy]]), np.ones(1, bool), np.ones(1, bool))
        if fit.converged and math.hypot(fit.theta[0, 0] - dx, fit.theta[1, 0] - dy) < 1.0:
            dx, dy = float(fit.theta[0, 0]), float(fit.theta[1, 0])
        else:
            reliable = False
    return Shift(dx, dy, float(peak[0]), reliable)


class _ArrayScene(_Scene):
    """An in-memory moving image on the reference grid (for :func:`estimate_shift`)."""

    def __init__(self, rep: np.ndarray, valid: np.ndarray, windows: _Windows):
        super().__init__(None, np.array([[1.0, 0, 0], [0, 1.0, 0]]), windows)
        self.patches = [_make_patch(rep, valid, 0, 0)]

    def load(self, mapping, which=None) -> None:
        return None


@dataclass(frozen=True)
class Registration:
    """How one scene was registered to the reference.

    Attributes
    ----------
    scene : str
        File name.
    model : str
        ``identity`` (the reference), ``none`` (georeferencing only),
        ``translation``, ``affine`` or ``poly2`` (second-order polynomial).
    ref_to_scene : ndarray
        Reference pixel (col, row) -> scene pixel (col, row): a (2, 3) affine,
        or for ``poly2`` a (2, 6) matrix whose extra columns are the
        coefficients of ``x², xy, y²`` (see :func:`changedetect.stack.apply_mapping`).
    correction : ndarray
        The same kind of matrix, in reference pixel space, applied before the
        files' georeferencing: ``ref_to_scene = nominal ∘ correction``.
    shift_px : (float, float)
        Correction at the grid centre, in reference pixels (dx, dy).
    shift_m : (float, float)
        The same in CRS units (metres for projected CRSs), (east, north).
    rotation_deg : float
        Rotation of the correction (at the grid centre for ``poly2``).
    scale : float
        Scale of the correction (1.0 = none).
    rmse_px : float
        RMSE of the inlier tie points' residual shifts about the model, in
        reference pixels (NaN when there are no tie points).
    n_tiepoints, n_inliers : int
        Tie points measured and kept.
    reliability : float
        0-1: share of tie points kept, lowered by a large residual.
    flagged : bool
        True when the scene could not be registered and was kept on its
        georeferencing alone.
    uncertainty_px, uncertainty_m : float
        For a flagged scene, the estimated error of its georeferencing: the
        size of the coarse shift that phase correlation of the whole scene
        found (plus one pixel), in reference pixels and metres; NaN when not
        even that was measurable.
    tiepoints : ndarray
        (n, 6): reference col, row of the window centre; residual shift dx, dy
        about the model (px, NaN if not measured); the tie point's reliability
        ``z``, the height of its phase-correlation peak in noise standard
        deviations (about 4.5 for unrelated images, below 7 is not used); 1.0
        for an inlier, 0.0 for a rejected tie point.
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
    tiepoints: np.ndarray = field(default_factory=lambda: np.zeros((0, 6)), repr=False)
    uncertainty_px: float = float("nan")
    uncertainty_m: float = float("nan")

    @property
    def n_rejected(self) -> int:
        """Tie points measured but not used by the model."""
        return self.n_tiepoints - self.n_inliers

    def to_dict(self) -> dict:
        """JSON-ready record (the ``registration.<file>`` entry of run.json)."""
        def r(x, n=4):
            return None if x is None or not math.isfinite(float(x)) else round(float(x), n)
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
            "n_rejected": self.n_rejected,
            "reliability": r(self.reliability, 3),
            "flagged": self.flagged,
            "uncertainty_px": r(self.uncertainty_px, 2),
            "uncertainty_m": r(self.uncertainty_m, 2),
            "tiepoints": {"columns": ["col", "row", "dx", "dy", "z", "inlier"],
                          "rows": [[r(v, 4) for v in row[:5]] + [bool(row[5])] for row in self.tiepoints]},
        }


#: Error (reference px) assumed for a scene kept on its georeferencing whose error could not be
#: estimated (not even a whole-scene shift was found).
UNKNOWN_ERROR_PX = 2.0


def registration_errors(regs: Sequence["Registration"]) -> tuple[list[float], list[bool]]:
    """Per scene, the registration error in reference px and whether the scene is flagged.

    0 for the reference; the tie-point residual for a registered scene (NaN when
    it has none, e.g. ``--coregister none``); for a scene kept on its
    georeferencing alone, its estimated error (:data:`UNKNOWN_ERROR_PX` when
    unknown).
    """
    errors, flagged = [], []
    for r in regs:
        if r.model == "identity":
            errors.append(0.0)
        elif r.flagged:
            errors.append(r.uncertainty_px if math.isfinite(r.uncertainty_px) else UNKNOWN_ERROR_PX)
        else:
            errors.append(r.rmse_px)
        flagged.append(bool(r.flagged))
    return errors, flagged


def registration_term(errors_px: Sequence[float], flagged: Sequence[bool] = ()) -> float:
    """The registration factor (0-1) of a change's confidence, from the scenes that bracket it.

    Registered scenes: ``exp(-(e / 0.5 px)²)`` of the worse residual ``e`` (0.5
    when a residual is unknown). When one of them was kept on its
    georeferencing alone: ``0.5 / (1 + (e / 2 px)²)`` of the worse flagged
    error, so a change that rests on an unregistered scene is never trusted
    more than half. One rule for detected changes and for given footprints.
    """
    flagged = list(flagged) or [False] * len(errors_px)
    bad = [e for e, f in zip(errors_px, flagged) if f]
    if bad:
        u = max(bad)
        return 0.5 / (1.0 + (u / 2.0) ** 2)
    if all(math.isfinite(e) for e in errors_px):
        return math.exp(-((max(errors_px) / 0.5) ** 2))
    return 0.5


#: What to do with a scene that cannot be co-registered: stop; keep it on its georeferencing
#: (used, its changes' confidence lowered by the estimated error); or leave it out.
FAILURE_MODES = ("raise", "keep", "skip")


def register_scene(stack: Stack, i: int, *, method: str = "local", window: int = 64,
                   max_points: int = 100, upsample: int = 20, on_failure: str = "raise",
                   seed: int = 0, _reference: _Reference | None = None) -> Registration:
    """Register scene ``i`` of ``stack`` to the stack's reference.

    Parameters
    ----------
    stack : Stack
        With nominal (georeferencing-only) ``ref_to_scene``.
    i : int
        Scene index.
    method : {"none", "global", "local"}
        ``global``: one translation for the whole scene (robust to clouds and
        changes). ``local`` (default): tie points, then the translation, affine
        or second-order polynomial model that the tie points support best.
    window : int
        Tie-point window size in reference pixels.
    max_points : int
        Largest number of tie points (a square grid).
    upsample : int
        Each phase correlation locates its peak on a ``1 / upsample`` px grid
        (upsampled DFT) before interpolating; the iteration to a zero residual
        removes what bias is left.
    on_failure : {"raise", "keep", "skip"}
        When a scene cannot be registered: raise :class:`RegistrationError`,
        or flag it and keep its georeferencing (with its estimated error,
        ``keep``) or leave it out (``skip``; the pipeline does not use it).
    seed : int
        Seed of the RANSAC sampler (results are deterministic).

    Returns
    -------
    Registration

    Raises
    ------
    RegistrationError
        No valid pixel over the grid, no texture in common, or tie points that
        do not agree (with ``on_failure="raise"``); the message names the file.
    """
    if method not in _METHODS:
        raise InputError(f"Unknown co-registration method '{method}'; choose one of {', '.join(_METHODS)}.")
    if on_failure not in FAILURE_MODES:
        raise InputError(f"on_failure must be one of {', '.join(FAILURE_MODES)}.")
    scene = stack.scenes[i]
    nominal = stack.nominal_ref_to_scene(i)
    ident = np.array([[1.0, 0, 0], [0, 1.0, 0]])
    if i == stack.reference or method == "none":
        return _make(stack, scene.name, "identity" if i == stack.reference else "none", nominal,
                     ident, np.nan, 0, 0, 1.0 if i == stack.reference else 0.0)
    rng = np.random.default_rng(seed)
    rows, cols = stack.shape

    coarse: list[float] = []                 # the whole-scene shift, once measured (ref px)

    def fail(why: str) -> Registration:
        if on_failure in ("keep", "skip"):
            u_px = float(math.hypot(*coarse) + 1.0) if coarse else float("nan")
            u_m = u_px * stack.pixel_size
            how = ("kept on its georeferencing alone (estimated error "
                   + (f"{u_m:.1f} m" if math.isfinite(u_m) else "unknown")
                   + "); changes that depend on it get a lower confidence"
                   if on_failure == "keep" else "left out of the analysis")
            warnings.warn(f"{scene.path} could not be co-registered: {why}; {how}.",
                          ChangeDetectWarning, stacklevel=3)
            reg = _make(stack, scene.name, "none", nominal, ident, np.nan, 0, 0, 0.0, flagged=True)
            return dataclasses.replace(reg, uncertainty_px=u_px, uncertainty_m=u_m)
        raise RegistrationError(f"{scene.path} could not be co-registered to "
                                f"{stack.scenes[stack.reference].name}: {why}. Check that both show "
                                "the same site, or keep the scene on its georeferencing with "
                                "--on-registration-failure keep (the default), or pass --coregister none.")

    frame = _Frame(cols / 2, rows / 2, max(rows, cols) / 2)
    # 1. coarse shift on decimated, band-passed images
    ref = _reference if _reference is not None else _read_reference(stack, window, max_points)
    small, a, av = ref.small, ref.coarse, ref.coarse_valid
    mov_s, mov_sv = stack.read(i, out_shape=small, ref_to_scene=nominal)
    if not mov_sv.any():
        return fail("it has no valid pixel over the reference grid")
    b, bv = _bandpass(_band_mean(mov_s), mov_sv)
    if (av & bv).mean() < 0.05:
        return fail("too few valid pixels in common with the reference")
    d0, _, z0 = _phase_correlate(a[None], b[None], av[None], bv[None], upsample=4)
    if z0[0] >= _MIN_Z:
        coarse[:] = [float(d0[0, 0] * cols / small[1]), float(d0[0, 1] * rows / small[0])]
    if z0[0] < _MIN_Z:
        return fail("no texture in common with the reference (phase correlation found no peak)")
    theta = np.array([[d0[0, 0] * cols / small[1]], [d0[0, 1] * rows / small[0]]])

    # 2. tie points: phase correlation per window
    win = ref.windows
    n = len(win.starts)
    moving = _Scene(scene, nominal, win)
    mapping = compose_mapping(nominal, _theta_to_matrix(theta, frame))
    moving.load(mapping)
    W, WV = moving.warp(mapping, range(n), order=1)
    dd, _, z = _phase_correlate(win.rep, W, win.valid, WV, upsample=1)
    share = (win.valid & WV).mean(axis=(1, 2))
    reliable = (z >= _MIN_Z) & (share >= 0.5) & (win.texture > 0)
    if not reliable.any():
        return fail("no tie point could be matched")
    q = win.centres
    disp = dd + theta[:, 0]
    dist = np.hypot(q[:, None, 0] - q[None, :, 0], q[:, None, 1] - q[None, :, 1])
    spacing = float(dist[np.triu_indices(n, 1)].min()) if n > 1 else float(max(win.shape))

    # 3. outliers: local consistency, then RANSAC on the model
    kind = "translation" if method == "global" or reliable.sum() < _enough("affine") else "affine"
    rel = np.flatnonzero(reliable)
    cons = rel[_locally_consistent(q[rel], disp[rel], spacing)]
    inl = cons[_ransac(q[cons], disp[cons], MODELS[kind], frame, 1.0, rng)] if len(cons) else cons
    if kind == "affine" and len(inl) < _enough("affine"):
        # too few tie points agree on an affine: a translation, which more of them may support
        kind = "translation"
        inl = cons[_ransac(q[cons], disp[cons], MODELS[kind], frame, 1.0, rng)] if len(cons) else cons
    if len(inl) < max(3, MODELS[kind] + 1):
        return fail(f"only {len(inl)} of {n} tie points agree on a shift")
    active = np.zeros(n, bool)
    active[inl] = True
    theta = _fit_theta(q[active], disp[active], MODELS[kind], frame)

    # 4. refinement to a zero residual; then windows whose residual disagrees leave the model
    fit = _refine(moving, win, frame, theta, active, reliable)
    dx, dy = _displacement(fit.theta, frame, q[:, 0], q[:, 1])
    td = np.column_stack([dx, dy]) + fit.d            # refined tie points (model + residual)
    before = active.copy()
    active &= np.isfinite(fit.d[:, 0])
    for _ in range(3):
        if active.sum() <= MODELS[kind]:
            break
        th = _fit_theta(q[active], td[active], MODELS[kind], frame)
        res = np.hypot(*_residual(th, frame, q, td).T)
        spread = 1.4826 * np.median(res[active])
        bad = active & ~(res <= max(_DROP_MIN, _DROP_K * spread))
        if not bad.any() or active.sum() - bad.sum() <= MODELS[kind]:
            break
        active &= ~bad

    # 5. model choice on the refined tie points, and a last refinement if anything changed
    best = fit.kind
    if method == "local" and active.sum() >= _enough("affine"):
        qa, da = q[active], td[active]
        options = ["translation", "affine"] + (["poly2"] if active.sum() >= _enough("poly2") else [])
        scores = {m: _bic(qa, da, MODELS[m], frame) for m in options}
        best = min(options, key=scores.get)
        rms_a, rms_p = _rms_fit(qa, da, 3, frame), _rms_fit(qa, da, 6, frame)
        if best == "poly2" and (rms_a - rms_p < _POLY_GAIN or rms_p > 0.75 * rms_a):
            best = min(("translation", "affine"), key=scores.get)
    elif active.sum() < _enough(best):
        # the windows that left the model leave too few for it
        best = "translation"
    if (best != fit.kind or (active != before).any()) and active.sum() > MODELS[best]:
        theta = _fit_theta(q[active], td[active], MODELS[best], frame)
        nx, ny = _displacement(theta, frame, q[:, 0], q[:, 1])
        if np.nanmax(np.hypot(nx - dx, ny - dy)[reliable]) < 0.01:
            # the model hardly moved: the residuals are re-read from the tie points, no new round
            fit = _Fit(theta, td - np.column_stack([nx, ny]), fit.z, fit.iterations,
                       fit.converged, fit.gain)
        else:
            fit = _refine(moving, win, frame, theta, active, reliable, gain=fit.gain)
    measured = active & np.isfinite(fit.d[:, 0])
    if not np.all(np.isfinite(fit.theta)) or measured.sum() < max(3, MODELS[fit.kind] + 1):
        return fail("the tie points do not agree on a model")
    active = measured

    res = np.hypot(fit.d[active, 0], fit.d[active, 1])
    rmse = float(np.sqrt(np.nanmean(res ** 2))) if np.isfinite(res).any() else float("nan")
    reliability = (active.sum() / n) / (1.0 + (rmse / 0.5) ** 2 if math.isfinite(rmse) else 2.0)
    correction = _theta_to_matrix(fit.theta, frame)
    tp = np.column_stack([q, fit.d, fit.z, active.astype(float)])
    log.debug("%s: %s after %d iterations (converged: %s), %d/%d tie points, rmse %.4f px",
              scene.name, fit.kind, fit.iterations, fit.converged, active.sum(), n, rmse)
    return _make(stack, scene.name, fit.kind, compose_mapping(nominal, correction), correction, rmse,
                 n, int(active.sum()), float(min(1.0, reliability)), tiepoints=tp)


def _make(stack: Stack, name: str, model: str, ref_to_scene, correction, rmse, n_tp, n_in,
          reliability, flagged: bool = False, tiepoints=None) -> Registration:
    cx, cy = stack.width / 2, stack.height / 2
    px, py = apply_mapping(correction, np.array([cx]), np.array([cy]))
    moved = (float(px[0] - cx), float(py[0] - cy))
    t = stack.transform
    shift_m = (t.a * moved[0] + t.b * moved[1], t.d * moved[0] + t.e * moved[1])
    c = np.asarray(correction, dtype=np.float64)
    jac = c[:, :2].copy()
    if c.shape[1] == 6:           # Jacobian at the centre
        jac[:, 0] += 2 * c[:, 3] * cx + c[:, 4] * cy
        jac[:, 1] += c[:, 4] * cx + 2 * c[:, 5] * cy
    rot = math.degrees(math.atan2(jac[1, 0] - jac[0, 1], jac[0, 0] + jac[1, 1]))
    scale = float(math.sqrt(abs(portable.det(jac))))
    return Registration(scene=name, model=model, ref_to_scene=np.asarray(ref_to_scene),
                        correction=c, shift_px=moved, shift_m=(float(shift_m[0]), float(shift_m[1])),
                        rotation_deg=rot, scale=scale, rmse_px=float(rmse), n_tiepoints=n_tp,
                        n_inliers=n_in, reliability=float(reliability), flagged=flagged,
                        tiepoints=np.zeros((0, 6)) if tiepoints is None else np.asarray(tiepoints))


def coregister(stack: Stack, *, method: str = "local", on_failure: str = "raise",
               progress: Callable[[int, int, str], None] | None = None,
               window: int = 64, max_points: int = 100,
               **kwargs) -> tuple[Stack, tuple[Registration, ...]]:
    """Register every scene of ``stack`` to its reference.

    Parameters
    ----------
    stack : Stack
        As returned by :func:`changedetect.stack.open_stack`.
    method : {"none", "global", "local"}
        See :func:`register_scene`; ``local`` (default) is the most accurate.
    on_failure : {"raise", "keep", "skip"}
        What to do with a scene that cannot be registered (see :func:`register_scene`).
    progress : callable, optional
        Called as ``progress(done, total, scene_name)`` after each scene.
    window, max_points, **kwargs
        Passed to :func:`register_scene`. The reference is read once.

    Returns
    -------
    stack : Stack
        The same scenes with ``ref_to_scene`` updated.
    registrations : tuple of Registration
        One per scene, in stack order.
    """
    if method not in _METHODS:
        raise InputError(f"Unknown co-registration method '{method}'; choose one of {', '.join(_METHODS)}.")
    ref = _read_reference(stack, window, max_points) if method != "none" and len(stack) > 1 else None
    regs = []
    for i in range(len(stack)):
        reg = register_scene(stack, i, method=method, on_failure=on_failure, window=window,
                             max_points=max_points, _reference=ref, **kwargs)
        log.info("registered %s: %s shift=(%.2f, %.2f) px rot=%.3f deg rmse=%.3f px, %d/%d tie points",
                 reg.scene, reg.model, *reg.shift_px, reg.rotation_deg, reg.rmse_px,
                 reg.n_inliers, reg.n_tiepoints)
        regs.append(reg)
        if progress is not None:
            progress(i + 1, len(stack), reg.scene)
    return stack.with_ref_to_scene([r.ref_to_scene for r in regs]), tuple(regs)


def save_registered(stack: Stack, registrations, out_dir, *, block: int = 1024,
                    progress: Callable[[int, int, str], None] | None = None) -> dict:
    """Write every scene of a co-registered stack onto the reference grid as a GeoTIFF.

    Each scene is warped through its ``ref_to_scene`` (GDAL, the stack's
    resampling, cubic by default) block by block, so memory depends on
    ``block``, not on the raster. Files are called ``<stem>_registered.tif``,
    keep the scene's data type, carry its date (``TIFFTAG_DATETIME``) and its
    registration record (tag ``CHANGEDETECT_REGISTRATION``), and are written
    atomically.

    Parameters
    ----------
    stack : Stack
        As returned by :func:`coregister`.
    registrations : sequence of Registration
        As returned by :func:`coregister`, in stack order.
    out_dir : path-like
        Created if needed.
    block : int
        Block size in pixels.
    progress : callable, optional
        Called as ``progress(done, total, scene_name)`` after each scene.

    Returns
    -------
    dict
        File name -> path, in stack order.
    """
    import json
    from pathlib import Path

    import rasterio

    from .errors import OutputError

    regs = list(registrations)
    if len(regs) != len(stack):
        raise InputError(f"Need one registration per scene ({len(stack)}), got {len(regs)}.")
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"Cannot create {out}: {exc.strerror}. Choose another --save-registered "
                          "folder.") from None
    written = {}
    for i, (scene, reg) in enumerate(zip(stack.scenes, regs)):
        dtype = np.dtype(scene.dtype)
        nodata = scene.nodata if scene.nodata is not None else 0
        record = {k: v for k, v in reg.to_dict().items() if k != "tiepoints"}
        path = out / f"{Path(scene.name).stem}_registered.tif"
        tmp = out / f".{path.name}.part"
        profile = raster_profile(stack.width, stack.height, stack.count, dtype, crs=stack.crs,
                                 transform=stack.transform, nodata=nodata)
        try:
            with rasterio.open(tmp, "w", **profile) as dst:
                dst.update_tags(TIFFTAG_DATETIME=scene.date.strftime("%Y:%m:%d 00:00:00"),
                                CHANGEDETECT_REGISTRATION=json.dumps(record))
                if stack.band_names and len(stack.band_names) == stack.count:
                    for b, name in enumerate(stack.band_names, start=1):
                        dst.set_band_description(b, name)
                with stack.open_warped(i) as read:
                    for inner, _ in stack.windows(block=block):
                        data, valid = read(inner)
                        if dtype.kind in "iu":
                            info = np.iinfo(dtype)
                            data = np.clip(np.rint(data), info.min, info.max)
                        data = data.astype(dtype)
                        data[:, ~valid] = nodata
                        dst.write(data, window=inner)
            os.replace(tmp, path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise OutputError(f"Cannot write {path}: {exc}. Check the free space and permissions.") from None
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        written[path.name] = path
        if progress is not None:
            progress(i + 1, len(stack), scene.name)
    return written
