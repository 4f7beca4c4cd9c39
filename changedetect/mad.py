"""The (IR-)MAD transformation of a pair: canonical correlation of before and after, reweighted.

Shared by relative radiometric normalisation (:mod:`changedetect.radiometry`
takes its no-change pixels as pseudo-invariant features) and change detection
(:func:`changedetect.detect.irmad`), so it lives below both.

References
----------
Nielsen, A. A. (2007). The regularized iteratively reweighted MAD method for
change detection in multi- and hyperspectral data. IEEE Transactions on Image
Processing, 16(2), 463-478. https://doi.org/10.1109/TIP.2006.888195

Canty, M. J., & Nielsen, A. A. (2008). Automatic radiometric normalization of
multitemporal satellite imagery with the iteratively re-weighted MAD
transformation. Remote Sensing of Environment, 112(3), 1025-1036.
https://doi.org/10.1016/j.rse.2007.07.013
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from . import portable
from .arrays import check_pair, run_rows, sample_pixels, take_pixels, zero_invalid
from .errors import EmptyDataError, InputError

__all__ = ["MADTransform", "IRMAD", "fit_irmad", "chi2_sf"]

# pixels per chunk of the streaming transform: a (bands, chunk) float32 temporary stays in
# a 1 MiB L2 cache with few enough ufunc calls (measured best in benchmarks/kernels.py)
_CHUNK_PIXELS = 1 << 16


def chi2_sf(x: np.ndarray, dof: int, out: np.ndarray | None = None) -> np.ndarray:
    """Upper tail of chi2(dof), float32, vectorised; closed form for even ``dof`` up to 16.

    ``x / 2`` is clipped at 200 for the closed form: the tail underflows to 0
    there, and the series stays far from float32 overflow.
    """
    if dof % 2 == 0 and dof <= 16:
        h = np.multiply(x, np.float32(0.5), dtype=np.float32)
        np.clip(h, 0, 200, out=h)
        term = np.ones_like(h)
        acc = np.ones_like(h)
        for k in range(1, dof // 2):
            term *= h
            term *= np.float32(1.0 / k)
            acc += term
        np.negative(h, out=h)
        portable.exp(h, out=h)
        if out is None:
            out = acc
        np.multiply(acc, h, out=out)
        return out
    from scipy.special import gammaincc

    res = gammaincc(dof / 2.0, np.asarray(x, np.float64) / 2.0)
    if out is None:
        return res.astype(np.float32)
    out[...] = res
    return out


@dataclass(frozen=True)
class MADTransform:
    """A fitted (IR-)MAD transformation: apply it to any window of the pair.

    ``MAD_i = a_i . (before - mean_before) - b_i . (after - mean_after)``,
    ordered from the least correlated canonical pair (largest change variance)
    to the most; ``sigma_i = sqrt(2 (1 - rho_i))`` is each variate's no-change
    standard deviation, so ``chi2 = sum_i (MAD_i / sigma_i) ** 2`` follows
    chi2(bands) where nothing changed.

    Attributes
    ----------
    a, b : ndarray, (bands, bands)
        Canonical vectors (one per row) of ``before`` and ``after``.
    mean_before, mean_after : ndarray, (bands,)
        Weighted (no-change) means.
    rho : ndarray, (bands,)
        Canonical correlations, ascending.
    sigma : ndarray, (bands,)
        No-change standard deviation of each MAD variate: ``sqrt(2 (1 - rho))``
        in theory; here measured robustly (1.4826 × median absolute deviation)
        on the sample, because the reweighted covariance underestimates it
        (see ``_robust_sigma``).
    iterations : int
        Re-weighting iterations done (1 = the plain MAD of Nielsen et al. 1998).
    converged : bool
        The largest change of a canonical correlation fell below the tolerance.
    n_pixels : int
        Pixels the statistics were computed on.
    """

    a: np.ndarray
    b: np.ndarray
    mean_before: np.ndarray
    mean_after: np.ndarray
    rho: np.ndarray
    sigma: np.ndarray
    iterations: int
    converged: bool
    n_pixels: int

    @property
    def n_bands(self) -> int:
        return int(self.rho.size)

    def to_dict(self) -> dict:
        """JSON-ready record."""
        return {"rho": [round(float(r), 6) for r in self.rho],
                "sigma": [round(float(s), 6) for s in self.sigma],
                "iterations": self.iterations, "converged": self.converged,
                "n_pixels": self.n_pixels}

    def apply(self, before: np.ndarray, after: np.ndarray, *, valid: np.ndarray | None = None,
              variates: bool = False, pvalue: bool = True, threads: int | None = None) -> "IRMAD":
        """MAD variates, chi-square and no-change p-value of every pixel of a window.

        Streams through row chunks; memory is the output plus a chunk.
        """
        check_pair(before, after, valid)
        nb, rows, cols = before.shape
        if nb != self.n_bands:
            raise InputError(f"This MAD transformation has {self.n_bands} bands; the images have {nb}.")
        # scaled so that each variate has unit no-change variance
        wa = (self.a / self.sigma[:, None]).astype(np.float32)
        wb = (self.b / self.sigma[:, None]).astype(np.float32)
        c = portable.dot(wa, self.mean_before) - portable.dot(wb, self.mean_after)
        c = c.astype(np.float32)[:, None]
        chi2 = np.empty((rows, cols), np.float32)
        p = np.empty((rows, cols), np.float32) if pvalue else None
        mad = np.empty((nb, rows, cols), np.float32) if variates else None

        def work(sl, buf):
            xb, xa, m, m2 = buf
            k = (sl.stop - sl.start) * cols
            xb[:, :k].reshape(nb, -1, cols)[...] = before[:, sl]
            xa[:, :k].reshape(nb, -1, cols)[...] = after[:, sl]
            mk = m[:, :k]
            portable.combine_bands(wa, xb[:, :k], out=mk)
            portable.combine_bands(wb, xa[:, :k], out=m2[:, :k])
            mk -= m2[:, :k]
            mk -= c
            if variates:
                mad[:, sl] = mk.reshape(nb, -1, cols)
            np.square(mk, out=mk)
            np.sum(mk, axis=0, out=chi2[sl].reshape(-1))
            if pvalue:
                chi2_sf(chi2[sl], nb, out=p[sl])

        run_rows(rows, cols, work, lambda step: tuple(np.empty((nb, step * cols), np.float32)
                                                        for _ in range(4)), threads,
                  chunk_pixels=1 << 14)
        zero_invalid(chi2, valid)
        if pvalue and valid is not None:
            p[~np.asarray(valid, bool)] = 1.0
        if variates:
            zero_invalid(mad, valid)
        return IRMAD(chi2=chi2, pvalue=p, variates=mad, transform=self)


@dataclass(frozen=True)
class IRMAD:
    """IR-MAD of a pair (see :func:`irmad`).

    Attributes
    ----------
    chi2 : ndarray, float32, (rows, cols)
        Sum of squared standardised MAD variates: chi2(bands) under no change;
        0 where invalid.
    pvalue : ndarray, float32, (rows, cols) or None
        Probability of a chi-square at least this large under no change (1
        where invalid); change where ``pvalue < alpha``.
    variates : ndarray, float32, (bands, rows, cols) or None
        The MAD variates in no-change standard deviations.
    transform : MADTransform
    """

    chi2: np.ndarray
    pvalue: np.ndarray | None
    variates: np.ndarray | None
    transform: MADTransform


def _canonical(cov: np.ndarray, nb: int):
    """Canonical correlation analysis of a (2B, 2B) covariance: (a, b, rho) ascending."""
    # portable's solve, eigh and dot: small matrices in a fixed order of operations, so the
    # transformation (and every pixel's chi-square) is the same on every CPU
    solve, eigh, dot = portable.solve, portable.eigh, portable.dot
    sxx, syy, sxy = cov[:nb, :nb], cov[nb:, nb:], cov[:nb, nb:]
    # a tiny ridge keeps constant or collinear bands solvable (regularised MAD)
    rx = 1e-10 * max(np.trace(sxx) / nb, 1e-300)
    ry = 1e-10 * max(np.trace(syy) / nb, 1e-300)
    sxx = sxx + rx * np.eye(nb)
    syy = syy + ry * np.eye(nb)
    m = dot(sxy, solve(syy, sxy.T))
    m = 0.5 * (m + m.T)
    rho2, a = eigh(m, sxx)                          # ascending, a.T sxx a = I
    rho = np.sqrt(np.clip(rho2, 0.0, 1.0))
    b = solve(syy, dot(sxy.T, a)) / np.maximum(rho, 1e-12)
    # deterministic signs: each before-variate correlates positively with the bands' sum
    s = np.sign(np.sum(dot(sxx, a), axis=0))
    s[s == 0] = 1
    return (a * s).T, (b * s).T, rho


@functools.lru_cache(maxsize=None)
def _weighted_shrink(nb: int) -> float:
    """``kappa = E[w X] / (nb E[w])`` for ``X ~ chi2(nb)`` and weight ``w = P(chi2 > X)``.

    Nielsen (2007) takes a MAD variate's variance ``2 (1 - rho)`` from the
    covariance weighted by the no-change probabilities; but weights that
    favour small residuals shrink that covariance by ``kappa`` (< 1) even when
    nothing changed, so chi-square is inflated, the weights shrink further and
    the iteration can collapse onto a few pixels (rho -> 1). Dividing by
    ``kappa`` removes the bias and keeps the iteration smooth and stable.
    """
    from scipy import integrate, stats

    num = integrate.quad(lambda x: x * stats.chi2.pdf(x, nb) * stats.chi2.sf(x, nb), 0, np.inf)[0]
    return float(num / (0.5 * nb))           # E[sf(X)] = 1/2: sf(X) is uniform


def _robust_sigma(mad: np.ndarray) -> np.ndarray:
    """Final no-change standard deviation of each MAD variate: 1.4826 × median absolute deviation.

    Invariant like the variates themselves, and it keeps chi-square
    calibrated on real, heavy-tailed data (the p-values of unchanged pixels
    are uniform, see the tests).
    """
    med = np.median(mad, axis=1, keepdims=True)
    sigma = 1.4826 * np.median(np.abs(mad - med), axis=1)
    return np.maximum(sigma, 1e-12 * np.maximum(np.abs(mad).max(axis=1), 1e-300))


def fit_irmad(before: np.ndarray, after: np.ndarray, *, valid: np.ndarray | None = None,
              max_iter: int = 50, tol: float = 1e-4, max_pixels: int = 1 << 19,
              reweight: bool = True) -> MADTransform:
    """Fit the iteratively reweighted MAD transformation of a pair (Nielsen 2007).

    Canonical correlation analysis of ``before`` and ``after`` gives pairs of
    linear combinations that are as correlated as possible; their differences,
    the MAD variates, hold the change, orthogonally, and are invariant to any
    per-band (indeed any invertible linear) transformation of either image:
    gains, offsets, a different sensor or season. Each iteration weights every
    pixel by its probability of no change (the chi-square upper tail) and
    refits, so changed pixels stop steering the statistics. Statistics are
    computed on at most ``max_pixels`` valid pixels at a regular stride (a
    (2B, 2B) covariance is estimated to ~0.1 % from half a million pixels);
    :meth:`MADTransform.apply` then streams over every pixel.

    Parameters
    ----------
    before, after : ndarray, shape (bands, rows, cols)
    valid : ndarray of bool, shape (rows, cols), optional
    max_iter : int
        Most re-weighting iterations.
    tol : float
        Stop when no canonical correlation moves by more than this.
    max_pixels : int
    reweight : bool
        False gives the plain, single-pass MAD.

    Returns
    -------
    MADTransform

    Raises
    ------
    EmptyDataError
        Fewer than ``10 * bands`` valid pixels.
    """
    check_pair(before, after, valid)
    nb = before.shape[0]
    idx = sample_pixels(valid, before.shape[1:], max_pixels)
    if idx.size < max(10 * nb, 20):
        raise EmptyDataError(f"IR-MAD needs at least {max(10 * nb, 20)} valid pixels; "
                             f"{idx.size} are valid in both images.")
    z = np.vstack([take_pixels(before, idx), take_pixels(after, idx)])       # (2B, n) float64
    n = z.shape[1]
    w = np.ones(n)
    rho_old = None
    converged = False
    it = 0
    for it in range(1, (max_iter if reweight else 1) + 1):
        sw = w.sum()
        mean = portable.dot(z, w) / sw
        zc = z - mean[:, None]
        cov = np.einsum("in,jn->ij", zc * w, zc) / sw
        a, b, rho = _canonical(cov, nb)
        if rho_old is not None and np.max(np.abs(rho - rho_old)) < tol:
            converged = True
            break
        rho_old = rho
        if not reweight:
            break
        # weighted variance of a MAD variate is 2 (1 - rho); under no change it is kappa
        # times the true one (see _weighted_shrink)
        sigma = np.sqrt(np.maximum(2.0 * (1.0 - rho), 1e-300) / _weighted_shrink(nb))
        mad = (portable.dot(a, zc[:nb]) - portable.dot(b, zc[nb:])) / sigma[:, None]
        w = chi2_sf(np.sum(mad * mad, axis=0), nb).astype(np.float64)
        if w.sum() <= 1e-9 * n:
            w = np.ones(n)                           # everything changed: nothing to weight
    # final calibration of each variate's no-change spread, robust to heavy tails
    sigma = _robust_sigma(portable.dot(a, z[:nb] - mean[:nb, None]) - portable.dot(b, z[nb:] - mean[nb:, None]))
    return MADTransform(a=a, b=b, mean_before=mean[:nb], mean_after=mean[nb:], rho=rho, sigma=sigma,
                        iterations=it, converged=converged or not reweight, n_pixels=int(n))
