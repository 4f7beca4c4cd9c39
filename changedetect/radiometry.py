"""Relative radiometric normalisation of one scene to another.

:func:`fit_normalization` (the default) follows Canty & Nielsen (2008):
IR-MAD, which is blind to gains and offsets, marks the pixels that did not
change (no-change probability above 0.95); on those pseudo-invariant pixels a
gain and an offset per band are fitted by orthogonal (total least squares)
regression, which is symmetric in the two images, unlike ordinary least
squares, so noise in the target does not bias the gain towards zero. Masks
(nodata, clouds) are respected. :func:`match_histograms` is the simple,
non-linear alternative.

References
----------
Canty, M. J., & Nielsen, A. A. (2008). Automatic radiometric normalization of
multitemporal satellite imagery with the iteratively re-weighted MAD
transformation. Remote Sensing of Environment, 112(3), 1025-1036.
https://doi.org/10.1016/j.rse.2007.07.013
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .arrays import sample_pixels
from .errors import EmptyDataError, InputError
from .mad import fit_irmad

__all__ = ["Normalization", "normalize", "fit_normalization", "apply_normalization",
           "orthogonal_regression", "match_histograms"]


@dataclass(frozen=True)
class Normalization:
    """Per-band linear map ``gain * target + offset`` onto the reference's radiometry.

    Attributes
    ----------
    gain, offset : ndarray, shape (bands,)
    n_invariant : int
        Pseudo-invariant pixels used in the final fit.
    rmse : ndarray, shape (bands,)
        Orthogonal residual on those pixels, in reference units.
    method : str
        ``irmad``: the lines fitted on the pseudo-invariant pixels.
        ``moments``: those lines were implausible (a gain of the wrong sign,
        or a band stretched or squeezed more than :data:`MAX_STRETCH` times
        against the reference), so each band's median and interquartile range
        were matched instead (:func:`fit_normalization`).
    """

    gain: np.ndarray
    offset: np.ndarray
    n_invariant: int
    rmse: np.ndarray
    method: str = "irmad"

    def to_dict(self) -> dict:
        """JSON-ready record."""
        return {"gain": [round(float(g), 6) for g in self.gain],
                "offset": [round(float(o), 4) for o in self.offset],
                "n_invariant": int(self.n_invariant),
                "rmse": [round(float(r), 4) for r in self.rmse],
                "method": self.method}


#: An IR-MAD fit that stretches (or squeezes) a band of the target by more than this factor
#: against the reference, both in its 2-98 % range and in its interquartile range, is taken as
#: failed (:func:`fit_normalization`).
MAX_STRETCH = 4.0


def _spreads(a: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row: the median, the interquartile range and the 2-98 % range (float64)."""
    q02, q25, med, q75, q98 = np.percentile(a, [2, 25, 50, 75, 98], axis=1)
    return med, np.maximum(q75 - q25, 1e-9), np.maximum(q98 - q02, 1e-9)


def orthogonal_regression(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Total least squares line ``y = slope * x + intercept``.

    Examples
    --------
    >>> x = np.array([0.0, 1.0, 2.0, 3.0])
    >>> orthogonal_regression(x, 2 * x + 1)
    (2.0, 1.0)
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    mx, my = x.mean(), y.mean()
    sxx = np.mean((x - mx) ** 2)
    syy = np.mean((y - my) ** 2)
    sxy = np.mean((x - mx) * (y - my))
    if abs(sxy) < 1e-12 * max(sxx, syy, 1e-300):
        slope = 1.0
    else:
        slope = (syy - sxx + np.sqrt((syy - sxx) ** 2 + 4 * sxy ** 2)) / (2 * sxy)
    return float(round(slope, 12)), float(round(my - slope * mx, 9))


def fit_normalization(reference: np.ndarray, target: np.ndarray, *,
                      valid: np.ndarray | None = None, min_pvalue: float = 0.95,
                      refine: int = 3, max_pixels: int = 250_000) -> Normalization:
    """Fit per-band gain and offset that bring ``target`` to ``reference``'s radiometry.

    Pseudo-invariant pixels are those IR-MAD (:func:`~changedetect.mad.fit_irmad`)
    finds unchanged with a no-change probability above ``min_pvalue`` (Canty &
    Nielsen 2008); IR-MAD is invariant to the very gains and offsets being
    estimated, so the selection does not depend on them. Each band's line is
    then fitted on those pixels by orthogonal regression, keeping (``refine``
    rounds) the half of them that best agree with one line per band.

    Parameters
    ----------
    reference, target : ndarray, shape (bands, rows, cols)
        Co-registered images.
    valid : ndarray of bool, shape (rows, cols), optional
        Pixels valid in both images.
    min_pvalue : float
        No-change probability a pixel needs to count as invariant.
    refine : int
        Rounds that keep the half of the invariant pixels closest to the
        fitted per-band lines (0: the IR-MAD selection as is). IR-MAD's
        invariance is multivariate, so a seasonal change that is linear across
        bands (vegetation in the NIR) passes it while following another
        per-band line than roofs and soil; on generated sites with seasons the
        refinement halves the NIR residual.
    max_pixels : int
        Fit on at most this many valid pixels, taken at a regular stride
        (deterministic); more adds time, not accuracy.

    Notes
    -----
    When most of the scene changed (a 256 px crop of a new estate, a scene
    half built over), the pixels IR-MAD calls invariant can be a few of one
    kind (a road, a shadow) and the lines through them absurd: gains of 16
    and of 0.08 on LEVIR-CD crops of 8-bit Google Earth images, whose
    brightness differs by a few tens of percent. A gain of the wrong sign, or
    one that stretches or squeezes a band of the target more than
    :data:`MAX_STRETCH` times against the reference both in its interquartile
    range and in its 2-98 % range, is such a failure. Either range alone can
    legitimately differ that much: a cloud over a third of a generated site
    moves the interquartile range 4.2 times, a large new bright roof the
    2-98 % range; no valid fit moved both. Every band is then mapped by
    matching its median and interquartile range instead
    (``method="moments"``), which is bounded however much changed.

    Returns
    -------
    Normalization

    Raises
    ------
    EmptyDataError
        Fewer than 100 valid pixels, or fewer than 50 invariant ones.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> ref = rng.uniform(100, 1000, (2, 50, 50))
    >>> tgt = (ref - 20) / 1.5 + rng.normal(0, 1, ref.shape)
    >>> n = fit_normalization(ref, tgt)
    >>> np.round(n.gain, 2).tolist(), np.round(n.offset, 0).tolist()
    ([1.5, 1.5], [20.0, 20.0])
    """
    reference = np.asarray(reference)
    target = np.asarray(target)
    if reference.shape != target.shape or reference.ndim != 3:
        raise InputError(f"fit_normalization needs two (bands, rows, cols) arrays of one shape, got "
                         f"{reference.shape} and {target.shape}.")
    if not 0 <= min_pvalue < 1:
        raise InputError(f"min_pvalue={min_pvalue} must be in [0, 1).")
    idx = sample_pixels(valid, reference.shape[1:], max_pixels)
    if idx.size < 100:
        raise EmptyDataError("Fewer than 100 pixels are valid in both images: cannot normalise.")
    nb = reference.shape[0]
    r = reference.reshape(nb, -1)[:, idx].astype(np.float64)
    t = target.reshape(nb, -1)[:, idx].astype(np.float64)
    # the (2B, 2B) statistics of IR-MAD settle on far fewer pixels than the regression uses
    mad = fit_irmad(r[:, None, :], t[:, None, :], max_pixels=min(idx.size, 1 << 16))
    p = mad.apply(r[:, None, :], t[:, None, :]).pvalue.ravel()
    sel = p > min_pvalue
    if sel.sum() < 50:
        raise EmptyDataError(f"Only {int(sel.sum())} pseudo-invariant pixels (no-change probability > "
                             f"{min_pvalue}): the images share too little unchanged ground to "
                             "normalise; lower min_pvalue or check the overlap.")
    gain, offset = np.ones(nb), np.zeros(nb)
    pif = sel
    for _ in range(refine + 1):
        for b in range(nb):
            gain[b], offset[b] = orthogonal_regression(t[b, sel], r[b, sel])
        if _ == refine:
            break
        # IR-MAD's invariance is multivariate: a seasonal change (vegetation brightening in
        # the NIR) that is a linear pattern across bands looks unchanged to it, but follows
        # another per-band line than roofs and soil. Keep the half of the pseudo-invariant
        # pixels that best agree with one per-band line.
        d = gain[:, None] * t + offset[:, None] - r
        med = np.median(d[:, pif], axis=1, keepdims=True)
        mad = 1.4826 * np.median(np.abs(d[:, pif] - med), axis=1, keepdims=True)
        z2 = np.sum(((d - med) / np.maximum(mad, 1e-9)) ** 2, axis=0)
        sel = pif & (z2 <= np.median(z2[pif]))
    method = "irmad"
    (mr, ir, wr), (mt, it, wt) = _spreads(r), _spreads(t)
    bulk, tails = gain * it / ir, gain * wt / wr          # the fitted target's spreads over the reference's
    def beyond(ratio):
        return (ratio > MAX_STRETCH) | (ratio < 1 / MAX_STRETCH)

    off = beyond(bulk) & beyond(tails)
    if np.any(gain <= 0) or np.any(off):
        gain = ir / it
        offset, method = mr - gain * mt, "moments"
    res = (gain[:, None] * t[:, sel] + offset[:, None] - r[:, sel]) / np.sqrt(1 + gain[:, None] ** 2)
    return Normalization(gain=gain, offset=offset, n_invariant=int(sel.sum()),
                         rmse=np.sqrt(np.mean(res ** 2, axis=1)), method=method)


def match_histograms(reference: np.ndarray, target: np.ndarray, *, valid: np.ndarray | None = None,
                     target_valid: np.ndarray | None = None, levels: int = 1024,
                     max_pixels: int = 1 << 20) -> np.ndarray:
    """Map each band of ``target`` onto ``reference``'s histogram (quantile matching).

    The simple alternative to :func:`fit_normalization`: monotone and
    non-linear, it also absorbs haze and contrast changes, but changed pixels
    take part in the histograms (a large change shifts every other pixel).
    Quantiles are taken at ``levels`` points on valid pixels only; between them
    values are interpolated linearly.

    Parameters
    ----------
    reference, target : ndarray, shape (bands, rows, cols)
        Need not share a grid (the rows and columns may differ).
    valid, target_valid : ndarray of bool, optional
        Valid pixels of the reference and of the target (``target_valid``
        defaults to ``valid`` when the shapes agree).

    Returns
    -------
    ndarray, float32, shape of ``target``; invalid pixels are copied unchanged.

    Examples
    --------
    >>> ref = np.arange(100, dtype=float).reshape(1, 10, 10)
    >>> out = match_histograms(ref, 2 * ref + 7)
    >>> float(np.abs(out - ref).max()) < 1e-3
    True
    """
    reference = np.asarray(reference)
    target = np.asarray(target)
    if reference.ndim != 3 or target.ndim != 3 or reference.shape[0] != target.shape[0]:
        raise InputError(f"match_histograms needs two (bands, rows, cols) arrays with the same bands, "
                         f"got {reference.shape} and {target.shape}.")
    if target_valid is None and valid is not None and reference.shape == target.shape:
        target_valid = valid
    ir = sample_pixels(valid, reference.shape[1:], max_pixels)
    it = sample_pixels(target_valid, target.shape[1:], max_pixels)
    if ir.size < 2 or it.size < 2:
        raise EmptyDataError("match_histograms: too few valid pixels to build a histogram.")
    q = np.linspace(0.0, 1.0, levels)
    out = np.asarray(target, dtype=np.float32).copy()
    tv = None if target_valid is None else np.asarray(target_valid, bool)
    for b in range(target.shape[0]):
        rq = np.quantile(reference[b].ravel()[ir].astype(np.float64), q)
        tq = np.quantile(target[b].ravel()[it].astype(np.float64), q)
        tq, first = np.unique(tq, return_index=True)        # np.interp needs increasing x
        rq = rq[first] if tq.size > 1 else rq[:1]
        mapped = np.interp(target[b], tq, rq).astype(np.float32) if tq.size > 1 else \
            np.full(target[b].shape, rq[0], np.float32)
        out[b] = mapped if tv is None else np.where(tv, mapped, out[b])
    return out


def apply_normalization(image: np.ndarray, norm: Normalization, *,
                        out: np.ndarray | None = None) -> np.ndarray:
    """``gain * image + offset`` per band, float32, in place when ``out is image``."""
    if out is None:
        out = np.empty(image.shape, dtype=np.float32)
    g = norm.gain.astype(np.float32)[:, None, None]
    o = norm.offset.astype(np.float32)[:, None, None]
    np.multiply(image, g, out=out)
    np.add(out, o, out=out)
    return out


def normalize(reference: np.ndarray, target: np.ndarray, *, valid: np.ndarray | None = None,
              method: str = "irmad") -> tuple[np.ndarray, dict]:
    """``target`` brought to ``reference``'s radiometry, and a record of how.

    ``method="irmad"``: :func:`fit_normalization` then :func:`apply_normalization`
    (linear per band, from pseudo-invariant pixels); ``"histogram"``:
    :func:`match_histograms`. Returns float32 and a JSON-ready record.

    Examples
    --------
    >>> rng = np.random.default_rng(1)
    >>> ref = rng.uniform(100, 1000, (2, 40, 40))
    >>> out, rec = normalize(ref, 0.5 * ref + 3 + rng.normal(0, 0.5, ref.shape))
    >>> rec["method"], bool(np.abs(out - ref).mean() < 2)
    ('irmad', True)
    """
    if method == "irmad":
        norm = fit_normalization(reference, target, valid=valid)
        return apply_normalization(np.asarray(target), norm), {"method": "irmad", **norm.to_dict()}
    if method == "histogram":
        return match_histograms(reference, target, valid=valid), {"method": "histogram"}
    raise InputError(f"Unknown normalisation '{method}'; choose 'irmad' or 'histogram'.")
