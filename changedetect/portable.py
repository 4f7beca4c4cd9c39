"""Arithmetic that gives the same bits on every CPU.

NumPy chooses its SIMD loops by CPU when it is imported (``X86_V3`` = AVX2,
``X86_V4`` = AVX-512, …, and ``NPY_DISABLE_CPU_FEATURES`` for older paths),
and OpenBLAS chooses its kernels by CPU too. Most of what this package
computes does not care, but some results do: a float32 value that moves by
one unit in the last place can cross a threshold and flip a pixel, a tie
point or a polygon. Measured on NumPy 2.4 (``benchmarks/cpu_paths.py``):

* the same on every path: ``+ - * /``, ``sqrt``, ``rint``, ``floor``,
  ``ldexp``/``frexp``, comparisons, ``minimum``/``maximum``, reductions
  (``sum``, ``mean``, ``std``, ``median``), ``einsum``, the FFT, complex
  ``exp``, and float64 ``sin``, ``cos``, ``arctan2``, ``hypot`` (libm);
* not the same: ``exp``, ``log``, ``power``, ``tanh``, ``arccos`` and the
  other transcendental functions (float32 always, float64 for most), and
  float32 ``matmul``/``dot`` (OpenBLAS's kernel decides the order of the sums).

Code whose output is thresholded therefore uses the first group and the
functions here, which are built from it: :func:`exp`, :func:`log`,
:func:`power`, :func:`arccos`, :func:`combine_bands` (a small matrix applied
to band vectors, summed in a fixed order) and :func:`gaussian_filter`
(SciPy's filter with weights from ``math.exp``). Float64 BLAS and LAPACK
results (a covariance, a least-squares fit) may still differ in the last bit,
about 1e-16 relative; that is below anything a float32 pixel or a rounded
output can show, and the package does not threshold float64 values that
fine.

Examples
--------
>>> import numpy as np
>>> from changedetect import portable
>>> x = np.array([-1.0, 0.0, 0.5, 10.0])
>>> bool(np.allclose(portable.exp(x), np.exp(x), rtol=1e-15))
True
>>> bool(np.allclose(portable.log(np.float32([0.5, 1, 3])), np.log(np.float32([0.5, 1, 3])), rtol=1e-6))
True
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from scipy import ndimage

__all__ = ["exp", "log", "power", "arccos", "combine_bands", "gaussian_weights", "gaussian_filter",
           "dot", "solve", "inv", "det", "lstsq", "cholesky", "eigh", "matmul_exact"]

# Cody & Waite split of ln 2 (fdlibm's for float64, Cephes' for float32): k * hi is exact.
_LN2_HI64, _LN2_LO64 = 6.93147180369123816490e-01, 1.90821492927058770002e-10
_LN2_HI32, _LN2_LO32 = np.float32(0.693359375), np.float32(-2.12194440e-4)
# 1/k! for the Taylor series of exp on |r| <= ln2/2: degree 13 (float64, error < 1e-17),
# degree 7 (float32, error < 1e-8)
_EXP64 = tuple(1.0 / math.factorial(k) for k in range(13, -1, -1))
_EXP32 = tuple(np.float32(1.0 / math.factorial(k)) for k in range(7, -1, -1))


def _as_float(x):
    """``x`` as float32 (if it is) or float64, with that dtype and its split of ln 2."""
    x = np.asarray(x)
    f32 = x.dtype == np.float32
    dt = np.float32 if f32 else np.float64
    ln2 = (_LN2_HI32, _LN2_LO32) if f32 else (_LN2_HI64, _LN2_LO64)
    return x.astype(dt, copy=False), f32, dt, ln2


def _into(res: np.ndarray, out: np.ndarray | None) -> np.ndarray:
    if out is None:
        return res
    out[...] = res
    return out


def _horner(r: np.ndarray, coefs, out: np.ndarray) -> np.ndarray:
    out[...] = coefs[0]
    for c in coefs[1:]:
        out *= r
        out += c
    return out


def exp(x, out: np.ndarray | None = None) -> np.ndarray:
    """``e**x`` from IEEE-exact operations only: the same bits on every CPU.

    Range reduction ``x = k ln2 + r`` (Cody-Waite, so ``k ln2`` is exact), a
    Taylor polynomial in ``r`` evaluated by Horner's rule, and ``ldexp``.
    Accurate to about 2 units in the last place, in the dtype of ``x``
    (float32 stays float32; anything else is computed in float64). Overflow
    gives ``inf``, underflow ``0``, NaN stays NaN.

    Parameters
    ----------
    x : array_like
    out : ndarray, optional
        Where to write the result (same shape; may be ``x`` itself).

    Returns
    -------
    ndarray
    """
    xv, f32, dt, (hi, lo) = _as_float(x)
    lim = 104.0 if f32 else 746.0                       # beyond: inf or 0 anyway
    nan = np.isnan(xv)
    xc = np.clip(np.where(nan, dt(0), xv), -lim, lim)
    k = np.rint(xc * dt(1.0 / math.log(2.0)))
    r = xc - k * hi
    r -= k * lo
    p = _horner(r, _EXP32 if f32 else _EXP64, np.empty_like(r))
    with np.errstate(over="ignore", under="ignore"):
        res = np.ldexp(p, k.astype(np.int32))
    if nan.any():
        res[nan] = np.nan
    return _into(res, out)


# log(m) for m in [sqrt(1/2), sqrt(2)): 2 atanh(s) = 2 (s + s^3/3 + s^5/5 + ...), s = (m-1)/(m+1),
# |s| <= 0.1716: 8 terms (float64, error < 1e-17), 4 terms (float32)
_LOG64 = tuple(2.0 / (2 * k + 1) for k in range(8, -1, -1))
_LOG32 = tuple(np.float32(2.0 / (2 * k + 1)) for k in range(4, -1, -1))


def log(x, out: np.ndarray | None = None) -> np.ndarray:
    """Natural logarithm from IEEE-exact operations only: the same bits on every CPU.

    ``x = m 2**e`` with ``m`` in [sqrt(1/2), sqrt(2)) (``frexp``), then
    ``log x = e ln2 + 2 atanh((m - 1) / (m + 1))`` by its odd series. In the
    dtype of ``x`` (float32 stays float32). ``log 0 = -inf``; negative and
    NaN give NaN.

    Parameters
    ----------
    x : array_like
    out : ndarray, optional

    Returns
    -------
    ndarray
    """
    xv, f32, dt, (hi, lo) = _as_float(x)
    m, e = np.frexp(xv)                                   # m in [0.5, 1)
    small = m < dt(math.sqrt(0.5))
    m = np.where(small, m * dt(2), m)
    e = e - small
    with np.errstate(divide="ignore", invalid="ignore"):
        s = (m - dt(1)) / (m + dt(1))
    s2 = s * s
    p = _horner(s2, _LOG32 if f32 else _LOG64, np.empty_like(s2))
    p *= s
    ef = e.astype(dt)
    res = ef * lo
    res += p
    res += ef * hi
    res[xv == 0] = -np.inf
    res[(xv < 0) | np.isnan(xv)] = np.nan
    res[np.isposinf(xv)] = np.inf
    return _into(res, out)


def power(x, p: float, out: np.ndarray | None = None) -> np.ndarray:
    """``x ** p`` for ``x >= 0`` as ``exp(p log x)``, the same bits on every CPU.

    ``0 ** p`` is 0 for ``p > 0``. About ``|p log x|`` units in the last place
    (a few for the exponents this package uses).
    """
    xv, _, dt, _ = _as_float(x)
    lg = log(xv)
    lg *= dt(p)
    res = exp(lg, out=lg)
    if p > 0:
        res[xv == 0] = 0
    return _into(res, out)


def arccos(x) -> np.ndarray:
    """``arccos`` in float64 as ``arctan2(sqrt(1 - x**2), x)`` (libm's ``atan2``, the same on every CPU)."""
    x = np.clip(np.asarray(x, np.float64), -1.0, 1.0)
    return np.arctan2(np.sqrt((1.0 - x) * (1.0 + x)), x)


def combine_bands(matrix: np.ndarray, x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``matrix @ x`` for a small ``(k, nb)`` matrix and ``x`` of shape ``(nb, n)``, summed in band order.

    The replacement for a float32 ``matmul`` whose result is thresholded: each
    output row is ``sum_j matrix[i, j] * x[j]`` accumulated from ``j = 0``
    upwards with separate multiplies and adds, so the rounding is the same on
    every CPU. For the few bands of an image this streams at memory speed,
    like OpenBLAS.
    """
    matrix = np.asarray(matrix)
    k, nb = matrix.shape
    if x.shape[0] != nb:
        raise ValueError(f"matrix has {nb} columns, x has {x.shape[0]} rows")
    dt = np.result_type(matrix.dtype, x.dtype)
    if out is None:
        out = np.empty((k,) + x.shape[1:], dt)
    tmp = np.empty(x.shape[1:], dt)
    m = matrix.astype(dt, copy=False)
    for i in range(k):                    # k, nb: bands (a handful), not pixels
        np.multiply(x[0], m[i, 0], out=out[i])
        for j in range(1, nb):
            np.multiply(x[j], m[i, j], out=tmp)
            out[i] += tmp
    return out


def gaussian_weights(sigma: float, truncate: float = 4.0) -> np.ndarray:
    """The 1-D Gaussian weights of :func:`scipy.ndimage.gaussian_filter1d`, from ``math.exp``.

    SciPy evaluates them with ``numpy.exp``, whose float64 loop depends on the
    CPU; each tap here is libm's ``exp`` of the same argument, normalised by
    the same sum. Radius ``int(truncate * sigma + 0.5)``, as SciPy's.
    """
    radius = int(truncate * float(sigma) + 0.5)
    s2 = float(sigma) * float(sigma)
    phi = np.array([math.exp(-0.5 / s2 * float(k * k)) for k in range(-radius, radius + 1)])
    return phi / phi.sum()


def gaussian_filter(input, sigma, *, mode: str = "reflect", cval: float = 0.0, truncate: float = 4.0,
                    output: np.ndarray | None = None) -> np.ndarray:
    """:func:`scipy.ndimage.gaussian_filter` (order 0) with CPU-independent weights.

    The same separable passes as SciPy (one :func:`scipy.ndimage.correlate1d`
    per axis whose sigma is not 0, into an array of the input's dtype, each
    pass reading the previous one's output), so where NumPy's ``exp`` agrees
    with libm the result is bit for bit SciPy's.

    Parameters
    ----------
    input : array_like
    sigma : float or sequence of float
        One per axis, or one for all; 0 leaves an axis alone.
    mode, cval, truncate
        As in SciPy.
    output : ndarray, optional

    Returns
    -------
    ndarray
    """
    a = np.asarray(input)
    sig: Sequence[float] = [float(sigma)] * a.ndim if np.isscalar(sigma) else [float(s) for s in sigma]
    if len(sig) != a.ndim:
        raise ValueError(f"{len(sig)} sigmas for {a.ndim} axes")
    out = np.empty_like(a) if output is None else output
    axes = [(ax, s) for ax, s in enumerate(sig) if s > 1e-15]
    if not axes:
        out[...] = a
        return out
    src = a
    for ax, s in axes:
        ndimage.correlate1d(src, gaussian_weights(s, truncate)[::-1].copy(), ax, out, mode, cval, 0)
        src = out
    return out


# --------------------------------------------------------------------------- linear algebra
# BLAS and LAPACK order their sums by CPU kernel; these are for the small matrices of model
# fits (a few to a few dozen unknowns), where a fixed order costs nothing.


def dot(a, b) -> np.ndarray:
    """``a @ b`` (float64) through :func:`numpy.einsum`, whose sums do not depend on the CPU.

    For the small matrices of model fits and affine compositions; shapes as
    :func:`numpy.matmul` for 1-D and 2-D operands and a shared leading batch axis.
    """
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    if a.ndim == 1 and b.ndim == 1:
        return np.einsum("i,i->", a, b)
    if a.ndim == 1:
        return np.einsum("j,jk->k", a, b)
    if b.ndim == 1:
        return np.einsum("...ij,...j->...i", a, b)
    return np.einsum("...ij,...jk->...ik", a, b)


def solve(a, b) -> np.ndarray:
    """Solve ``a x = b`` for a small square ``a``: Gaussian elimination with partial pivoting.

    In a fixed order of operations (the same result on every CPU). ``b`` may
    be 1-D or 2-D. A singular ``a`` (a pivot below ``1e-13`` of the largest
    entry) gives NaN, as a degenerate fit should.
    """
    a = np.array(a, np.float64)
    x = np.array(b, np.float64)
    vec = x.ndim == 1
    if vec:
        x = x[:, None]
    n = a.shape[0]
    if a.shape != (n, n) or x.shape[0] != n:
        raise ValueError(f"solve: a is {a.shape}, b is {np.shape(b)}")
    tiny = 1e-13 * max(float(np.max(np.abs(a))) if a.size else 0.0, 1e-300)
    for c in range(n):                       # columns of a small system, not pixels
        p = c + int(np.argmax(np.abs(a[c:, c])))
        if not abs(a[p, c]) > tiny:
            x[...] = np.nan
            return x[:, 0] if vec else x
        if p != c:
            a[[c, p]] = a[[p, c]]
            x[[c, p]] = x[[p, c]]
        f = a[c + 1:, c] / a[c, c]
        a[c + 1:, c:] -= f[:, None] * a[c, c:][None, :]
        x[c + 1:] -= f[:, None] * x[c][None, :]
    for c in range(n - 1, -1, -1):
        x[c] -= np.einsum("j,jk->k", a[c, c + 1:], x[c + 1:])
        x[c] /= a[c, c]
    return x[:, 0] if vec else x


def inv(a) -> np.ndarray:
    """Inverse of a small square matrix (see :func:`solve`)."""
    a = np.asarray(a, np.float64)
    return solve(a, np.eye(a.shape[0]))


def det(a) -> float:
    """Determinant of a 2 × 2 or 3 × 3 matrix by its explicit formula."""
    m = np.asarray(a, np.float64)
    if m.shape == (2, 2):
        return float(m[0, 0] * m[1, 1] - m[0, 1] * m[1, 0])
    if m.shape == (3, 3):
        return float(m[0, 0] * (m[1, 1] * m[2, 2] - m[1, 2] * m[2, 1])
                     - m[0, 1] * (m[1, 0] * m[2, 2] - m[1, 2] * m[2, 0])
                     + m[0, 2] * (m[1, 0] * m[2, 1] - m[1, 1] * m[2, 0]))
    raise ValueError(f"det: only 2 x 2 and 3 x 3, got {m.shape}")


def lstsq(a, b) -> np.ndarray:
    """Least-squares solution of ``a x ≈ b`` (``a`` tall, few columns) by the normal equations.

    ``(aᵀa) x = aᵀb`` summed with :func:`dot` and solved with :func:`solve`:
    the same bits on every CPU. Meant for well-conditioned designs (centred,
    scaled coordinates); a rank-deficient ``a`` gives NaN.
    """
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    g = np.einsum("ni,nj->ij", a, a)
    r = np.einsum("ni,n...->i...", a, b)
    return solve(g, r)


def cholesky(a) -> np.ndarray:
    """Lower Cholesky factor of a small symmetric positive-definite matrix (NaN if it is not)."""
    a = np.asarray(a, np.float64)
    n = a.shape[0]
    low = np.zeros_like(a)
    for j in range(n):
        s = a[j, j] - float(np.sum(low[j, :j] * low[j, :j]))
        if not s > 0:
            low[...] = np.nan
            return low
        low[j, j] = math.sqrt(s)
        for i in range(j + 1, n):
            low[i, j] = (a[i, j] - float(np.sum(low[i, :j] * low[j, :j]))) / low[j, j]
    return low


def eigh(a, b=None, *, sweeps: int = 60) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (ascending) and eigenvectors of a small symmetric ``a``, or of ``a v = w b v``.

    Cyclic Jacobi rotations (Golub & Van Loan, 8.5) in a fixed order: the
    same bits on every CPU, accurate to a few units in the last place for the
    few-by-few matrices of a canonical correlation. With ``b`` (symmetric
    positive definite) the problem is reduced by ``b = L Lᵀ`` and the
    eigenvectors are normalised so that ``vᵀ b v = I``, as
    :func:`scipy.linalg.eigh` does.
    """
    a = np.array(a, np.float64)
    n = a.shape[0]
    if b is not None:
        low = cholesky(b)
        li = solve(low, np.eye(n))                  # L^-1
        a = dot(dot(li, a), li.T)
    a = 0.5 * (a + a.T)
    v = np.eye(n)
    for _ in range(sweeps):
        off = float(np.sum(np.tril(a, -1) ** 2))
        if not off > 1e-30 * max(float(np.sum(np.diag(a) ** 2)), 1e-300):
            break
        for p in range(n - 1):                      # the rotations of a sweep: n(n-1)/2 of a small n
            for q in range(p + 1, n):
                apq = a[p, q]
                if apq == 0.0:
                    continue
                theta = (a[q, q] - a[p, p]) / (2.0 * apq)
                t = math.copysign(1.0, theta) / (abs(theta) + math.sqrt(theta * theta + 1.0))
                c = 1.0 / math.sqrt(t * t + 1.0)
                s = t * c
                ap, aq = a[:, p].copy(), a[:, q].copy()
                a[:, p], a[:, q] = c * ap - s * aq, s * ap + c * aq
                ap, aq = a[p, :].copy(), a[q, :].copy()
                a[p, :], a[q, :] = c * ap - s * aq, s * ap + c * aq
                vp, vq = v[:, p].copy(), v[:, q].copy()
                v[:, p], v[:, q] = c * vp - s * vq, s * vp + c * vq
    w = np.diag(a).copy()
    order = np.argsort(w, kind="stable")
    w, v = w[order], v[:, order]
    if b is not None:
        v = dot(li.T, v)
    return w, v


def matmul_exact(a: np.ndarray, b: np.ndarray, *, bits: int = 20) -> np.ndarray:
    """Batched ``a @ b`` (real or complex) at BLAS speed with a result that does not depend on the CPU.

    Both operands are rounded to ``bits`` significant bits of their largest
    entry (a power-of-two scale, so the rounding is exact and the same
    everywhere) and multiplied as float64 integers: every product and every
    partial sum is then an integer below 2**53, exact in any order, so
    whatever kernel OpenBLAS picks gives the same bits. The price is a
    relative error of about ``2**-bits`` of the largest entry (1e-6 for the
    default), far below what an upsampled cross-correlation peak needs.
    ``bits`` is lowered, if needed, so that ``2 bits + log2(inner size)`` stays
    within 52.
    """
    k = a.shape[-1]
    bits = min(int(bits), (52 - max(1, math.ceil(math.log2(max(k, 2))))) // 2)

    def quantise(x):
        if not x.size:
            return x.real * 0.0, (x.imag * 0.0 if np.iscomplexobj(x) else None), 1.0
        parts = (x.real, x.imag) if np.iscomplexobj(x) else (x,)
        m = max(max(float(p.max()), -float(p.min())) for p in parts)
        if not m > 0 or not math.isfinite(m):
            return x.real * 0.0, (x.imag * 0.0 if np.iscomplexobj(x) else None), 1.0
        e = math.frexp(m)[1]                        # m < 2**e
        scale = math.ldexp(1.0, bits - e)           # exact power of two
        re = np.rint(np.asarray(x.real, np.float64) * scale)
        im = np.rint(np.asarray(x.imag, np.float64) * scale) if np.iscomplexobj(x) else None
        return re, im, scale

    ar, ai, sa = quantise(a)
    br, bi, sb = quantise(b)
    unscale = 1.0 / (sa * sb)                       # a power of two: exact
    rr = np.matmul(ar, br)
    if ai is None and bi is None:
        return rr * unscale
    ii = np.matmul(ai, bi) if (ai is not None and bi is not None) else 0.0
    ri = np.matmul(ar, bi) if bi is not None else 0.0
    ir = np.matmul(ai, br) if ai is not None else 0.0
    out = np.empty(rr.shape, np.complex128)
    out.real = (rr - ii) * unscale
    out.imag = (ri + ir) * unscale
    return out
