"""Score a change-detection output against ground truth.

Polygons are matched one-to-one with the Hungarian algorithm on their
intersection-over-union (IoU), and a pair counts as a true positive only if its
IoU reaches a threshold (0.25 by default: the SpaceNet 7 "SCOT" rule). On top of
detection (precision, recall, F1) the module scores the dates of matched new
buildings, the demolitions and modifications found, the false polygons per
hectare, and the co-registration error of every scene against the true
misregistration of a synthetic site.

Run it on an output directory and a site directory::

    python -m changedetect.evaluate OUT_DIR SITE_DIR [--json] [--iou 0.25]

Examples
--------
>>> import geopandas as gpd
>>> from shapely.geometry import box
>>> truth = gpd.GeoDataFrame({"building_id": ["b1", "b2"], "kind": ["new", "new"],
...                           "first_present": ["2020-03-01", "2020-05-01"]},
...                          geometry=[box(0, 0, 10, 10), box(50, 0, 60, 10)], crs="EPSG:32637")
>>> pred = gpd.GeoDataFrame({"change_id": ["c1"], "kind": ["new"],
...                          "last_absent": ["2020-01-01"], "first_present": ["2020-03-01"]},
...                         geometry=[box(1, 0, 11, 10)], crs="EPSG:32637")
>>> s = evaluate(pred, truth)
>>> s.tp, s.precision, s.recall, round(s.matches[0][2], 3), s.dating_exact
(1, 1.0, 0.5, 0.818, 1.0)
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from . import _callable_module
from .errors import InputError, UnreadableFileError
from .stack import apply_mapping

__all__ = [
    "Scores",
    "Report",
    "MissingFileError",
    "NEW_KINDS",
    "CHANGE_KINDS",
    "iou_matrix",
    "match",
    "evaluate",
    "registration_error",
    "PixelScores",
    "pixel_scores",
    "evaluate_registration",
    "evaluate_run",
    "main",
]

#: Kinds that count as new construction (predictions and truth alike).
NEW_KINDS = frozenset({"new", "modified"})
#: Truth kinds that are changes (anything else, e.g. ``existing``, is background).
CHANGE_KINDS = frozenset({"new", "modified", "demolished"})

PathLike = str | os.PathLike


class MissingFileError(UnreadableFileError, FileNotFoundError):
    """A file needed for evaluation does not exist (a ``FileNotFoundError``)."""


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Scores:
    """Scores of one prediction against one ground truth.

    Attributes
    ----------
    n_pred, n_truth : int
        Predicted / true new-construction polygons (kind ``new`` or ``modified``).
    tp : int
        One-to-one matched new-construction pairs with IoU >= ``iou_threshold``.
    precision, recall, f1 : float
        ``tp / n_pred``, ``tp / n_truth`` and their harmonic mean. With nothing
        to find and nothing predicted all three are 1.0; otherwise a zero
        denominator gives 0.0.
    dating_exact : float or None
        Share of matched pairs whose predicted ``first_present`` equals the true
        ``first_present`` or the true ``construction`` (pad) date. None without
        matches.
    dating_bracket : float or None
        Share of matched pairs where ``last_absent < d <= first_present`` (predicted
        dates) holds for the true ``construction`` date or the true
        ``first_present`` date. A missing predicted date fails. None without matches.
    demolitions_found, demolitions_total : int
        True ``demolished`` features matched one-to-one by ``demolished`` predictions.
    modifications_found, modifications_kind_correct, modifications_total : int
        True ``modified`` annexes matched in the new-construction matching; of
        those, the ones whose prediction says ``modified``.
    false_polygons : int
        Predictions (any kind) matched in neither matching and with IoU below the
        threshold to every true change (new, modified, demolished).
    false_polygons_per_ha : float or None
        ``false_polygons`` per hectare of scored area; None if the area is unknown.
    matches : tuple of (change_id, building_id, iou, date_ok)
        The new-construction true positives.
    demolition_matches : tuple of (change_id, building_id, iou)
        The demolition true positives.
    iou_threshold : float
        Threshold used.
    area_ha : float or None
        Scored area in hectares.
    """

    n_pred: int
    n_truth: int
    tp: int
    precision: float
    recall: float
    f1: float
    dating_exact: float | None
    dating_bracket: float | None
    demolitions_found: int
    demolitions_total: int
    modifications_found: int
    modifications_kind_correct: int
    modifications_total: int
    false_polygons: int
    false_polygons_per_ha: float | None
    matches: tuple[tuple[str, str, float, bool], ...] = ()
    demolition_matches: tuple[tuple[str, str, float], ...] = ()
    iou_threshold: float = 0.25
    area_ha: float | None = None

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict (tuples become lists)."""
        d = asdict(self)
        d["matches"] = [list(m) for m in self.matches]
        d["demolition_matches"] = [list(m) for m in self.demolition_matches]
        return d


@dataclass(frozen=True)
class Report:
    """Scores of a run plus its registration error per scene.

    Attributes
    ----------
    scores : Scores
        Polygon scores.
    registration : dict
        RMSE in reference pixels per scene (None if it could not be computed),
        plus ``mean`` and ``max`` over the non-reference scenes; empty if the run
        or the site has no registration record.
    out_dir, site_dir : str or None
        Where the output and the truth came from.
    """

    scores: Scores
    registration: dict[str, float | None] = field(default_factory=dict)
    out_dir: str | None = None
    site_dir: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict."""
        return {"out_dir": self.out_dir, "site_dir": self.site_dir,
                "scores": self.scores.as_dict(), "registration": dict(self.registration)}

    def format(self) -> str:
        """A short multi-line summary for an analyst."""
        s = self.scores
        lines = []
        if self.out_dir or self.site_dir:
            lines.append(f"evaluation of {self.out_dir} against {self.site_dir}")
        lines.append(f"new construction  P={s.precision:.2f} R={s.recall:.2f} F1={s.f1:.2f} "
                     f"({s.tp}/{s.n_truth} matched at IoU>={s.iou_threshold:g}, {s.n_pred} predicted)")
        if s.matches:
            mean_iou = float(np.mean([m[2] for m in s.matches]))
            lines.append(f"  mean IoU of matches  {mean_iou:.2f}")
        lines.append(f"dating            exact {_pct(s.dating_exact)}  bracket {_pct(s.dating_bracket)}")
        lines.append(f"demolitions       {s.demolitions_found}/{s.demolitions_total} found")
        lines.append(f"modifications     {s.modifications_found}/{s.modifications_total} found, "
                     f"{s.modifications_kind_correct} labelled 'modified'")
        per_ha = "n/a" if s.false_polygons_per_ha is None else f"{s.false_polygons_per_ha:.2f}/ha"
        area = "" if s.area_ha is None else f" over {s.area_ha:.1f} ha"
        lines.append(f"false polygons    {s.false_polygons} ({per_ha}{area})")
        reg = self.registration
        if reg:
            scenes = {k: v for k, v in reg.items() if k not in ("mean", "max")}
            lines.append(f"registration      RMSE mean {_px(reg.get('mean'))} max {_px(reg.get('max'))} "
                         f"over {len(scenes)} scenes")
        else:
            lines.append("registration      n/a")
        return "\n".join(lines)


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.0f}%"


def _px(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f} px"


# --------------------------------------------------------------------------- loading


def _read_vector(src, what: str):
    """A GeoDataFrame from a GeoDataFrame or a vector file path."""
    import geopandas as gpd

    if isinstance(src, gpd.GeoDataFrame):
        return src
    if not isinstance(src, (str, os.PathLike)):
        raise InputError(f"{what}: expected a GeoDataFrame or a path to a .gpkg/.geojson file, "
                         f"got {type(src).__name__}")
    p = Path(src)
    if not p.exists():
        raise MissingFileError(f"{p} does not exist; pass the path of an existing {what} file")
    kw = {}
    if p.suffix.lower() == ".gpkg":
        import pyogrio

        layers = [row[0] for row in pyogrio.list_layers(p)]
        if "changes" in layers:
            kw["layer"] = "changes"
    try:
        return gpd.read_file(p, **kw)
    except Exception as exc:  # noqa: BLE001 - GDAL raises many types
        raise UnreadableFileError(f"cannot read {what} {p}: {exc}; "
                                  "write it as GeoPackage or GeoJSON") from exc


def _read_json(src, what: str) -> dict:
    if isinstance(src, Mapping):
        return dict(src)
    p = Path(src)
    if p.is_dir():
        p = p / what
    if not p.exists():
        raise MissingFileError(f"{p} does not exist; pass the {what} written with the data")
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{p} is not valid JSON ({exc}); regenerate {what}") from exc


def _to_date(x) -> _dt.date | None:
    """An ISO date string / datetime / Timestamp as a date; None for null or garbage."""
    import pandas as pd

    if x is None:
        return None
    try:
        if pd.isna(x):  # None, NaN, NaT, np.datetime64("NaT")
            return None
    except (TypeError, ValueError):  # array-like: not a date
        return None
    if isinstance(x, _dt.datetime):
        return x.date()
    if isinstance(x, _dt.date):
        return x
    if isinstance(x, np.datetime64):
        return _dt.date.fromisoformat(str(x.astype("datetime64[D]")))
    s = str(x).strip()
    if not s or s.lower() in ("nan", "nat", "none", "null"):
        return None
    try:
        return _dt.date.fromisoformat(s[:10])
    except ValueError:
        return None


def _column(df, name: str, default=None) -> list:
    if name in df.columns:
        return list(df[name])
    return [default] * len(df)


def _kinds(df, default: str) -> np.ndarray:
    return np.array([default if k is None or (isinstance(k, float) and math.isnan(k))
                     else str(k).strip().lower() for k in _column(df, "kind", default)], dtype=object)


def _geoms(df) -> np.ndarray:
    import shapely

    g = np.asarray(df.geometry.values, dtype=object) if len(df) else np.empty(0, dtype=object)
    if len(g):
        bad = ~shapely.is_valid(g) & ~shapely.is_missing(g)
        if bad.any():
            g = g.copy()
            g[bad] = shapely.make_valid(g[bad])
    return g


# --------------------------------------------------------------------------- matching


def iou_matrix(a, b) -> np.ndarray:
    """Intersection over union of every geometry of ``a`` with every one of ``b``.

    Only pairs whose bounding boxes intersect (found with an STRtree) are
    intersected, so the cost is close to linear for building footprints.

    Parameters
    ----------
    a, b : array-like of shapely geometries
        Polygons in the same projected CRS. Missing geometries have IoU 0.

    Returns
    -------
    ndarray, shape (len(a), len(b))

    Examples
    --------
    >>> from shapely.geometry import box
    >>> iou_matrix([box(0, 0, 2, 2)], [box(1, 0, 3, 2), box(5, 5, 6, 6)])
    array([[0.33333333, 0.        ]])
    """
    import shapely

    a = np.asarray(a, dtype=object).ravel()
    b = np.asarray(b, dtype=object).ravel()
    out = np.zeros((len(a), len(b)))
    if not len(a) or not len(b):
        return out
    tree = shapely.STRtree(b)
    ia, ib = tree.query(a, predicate="intersects")
    if not len(ia):
        return out
    inter = shapely.area(shapely.intersection(a[ia], b[ib]))
    union = shapely.area(a[ia]) + shapely.area(b[ib]) - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, inter / union, 0.0)
    out[ia, ib] = iou
    return out


def match(iou: np.ndarray, *, iou_threshold: float = 0.25) -> list[tuple[int, int, float]]:
    """Optimal one-to-one matching of rows to columns of an IoU matrix.

    Pairs below ``iou_threshold`` are first set to 0 (they can never count), then
    the Hungarian algorithm maximises the total IoU, and only pairs with IoU >=
    ``iou_threshold`` are kept.

    Parameters
    ----------
    iou : ndarray, shape (n, m)
        IoU of prediction i with truth j.
    iou_threshold : float
        Smallest IoU of a true positive.

    Returns
    -------
    list of (i, j, iou)
        Matched (row, column) pairs.

    Examples
    --------
    Greedy matching would take the 0.9 pair and stop; the optimum finds two:

    >>> match(np.array([[0.9, 0.6], [0.6, 0.0]]))
    [(0, 1, 0.6), (1, 0, 0.6)]
    """
    from scipy.optimize import linear_sum_assignment

    iou = np.asarray(iou, dtype=np.float64)
    if iou.size == 0:
        return []
    w = np.where(iou >= iou_threshold, iou, 0.0)
    rows, cols = linear_sum_assignment(w, maximize=True)
    return [(int(i), int(j), float(iou[i, j])) for i, j in zip(rows, cols)
            if w[i, j] > 0 and iou[i, j] >= iou_threshold]


# --------------------------------------------------------------------------- scoring


def _ratio(num: int, den: int, *, empty: float) -> float:
    return empty if den == 0 else num / den


def evaluate(pred, truth, *, iou_threshold: float = 0.25, area_m2: float | None = None) -> Scores:
    """Score predicted change polygons against ground-truth structures.

    Parameters
    ----------
    pred : GeoDataFrame or path
        Predictions (``changes.gpkg`` / ``changes.geojson``), with columns
        ``kind`` (``new``/``demolished``/``modified``; ``new`` if absent),
        ``last_absent``, ``first_present`` and ``change_id`` (row number if absent).
        Reprojected to the CRS of ``truth``. May be empty.
    truth : GeoDataFrame or path
        Ground truth (``truth.geojson``) in a projected CRS, one row per
        structure with ``building_id``, ``kind`` (existing/new/demolished/modified),
        ``first_present`` and ``construction``.
    iou_threshold : float, keyword-only
        Smallest IoU of a true positive (default 0.25, SpaceNet 7).
    area_m2 : float, optional, keyword-only
        Scored area in square metres, for ``false_polygons_per_ha``.

    Returns
    -------
    Scores

    Raises
    ------
    FileNotFoundError
        A path does not exist.
    ValueError
        Bad threshold or area, or a CRS is missing.

    Notes
    -----
    New construction is predictions of kind ``new`` or ``modified`` against true
    ``new`` and ``modified`` features. With no truth and no prediction, precision,
    recall and F1 are 1.0 (nothing to find, nothing wrong); a zero denominator
    otherwise gives 0.0.
    """
    import geopandas as gpd

    if not (0.0 < iou_threshold <= 1.0):
        raise InputError(f"iou_threshold must be in (0, 1], got {iou_threshold}")
    if area_m2 is not None and not area_m2 > 0:
        raise InputError(f"area_m2 must be positive, got {area_m2}")
    pred = _read_vector(pred, "predictions")
    truth = _read_vector(truth, "truth")

    if not isinstance(pred, gpd.GeoDataFrame) or not isinstance(truth, gpd.GeoDataFrame):
        raise InputError("pred and truth must be GeoDataFrames")
    if len(truth):
        if truth.crs is None:
            raise InputError("the truth has no CRS; write truth.geojson with its projected CRS "
                             "(e.g. EPSG:32637)")
        if truth.crs.is_geographic:
            raise InputError("the truth is in a geographic CRS; IoU needs a projected CRS in metres "
                             "(reproject truth.geojson, e.g. to its UTM zone)")
    if len(pred) and len(truth):
        if pred.crs is None:
            raise InputError("the predictions have no CRS; write changes.gpkg with the stack CRS")
        if pred.crs != truth.crs:
            pred = pred.to_crs(truth.crs)

    pg, tg = _geoms(pred), _geoms(truth)
    pk, tk = _kinds(pred, "new"), _kinds(truth, "existing")
    pid = [str(c) for c in _column(pred, "change_id", None)]
    if "change_id" not in pred.columns:
        pid = [str(i) for i in range(len(pred))]
    tid = [str(b) for b in _column(truth, "building_id", None)]
    if "building_id" not in truth.columns:
        tid = [str(i) for i in range(len(truth))]
    p_last = [_to_date(x) for x in _column(pred, "last_absent")]
    p_first = [_to_date(x) for x in _column(pred, "first_present")]
    t_first = [_to_date(x) for x in _column(truth, "first_present")]
    t_pad = [_to_date(x) for x in _column(truth, "construction")]

    iou = iou_matrix(pg, tg)  # every prediction x every truth structure

    # new construction
    pn = np.flatnonzero(np.isin(pk, list(NEW_KINDS)))
    tn = np.flatnonzero(np.isin(tk, list(NEW_KINDS)))
    new_pairs = [(pn[i], tn[j], v) for i, j, v in
                 match(iou[np.ix_(pn, tn)], iou_threshold=iou_threshold)]
    matches, exact, bracket = [], [], []
    mod_found = mod_kind = 0
    for i, j, v in new_pairs:
        truths = [d for d in (t_pad[j], t_first[j]) if d is not None]
        ok = p_first[i] is not None and p_first[i] in truths
        inside = (p_first[i] is not None and p_last[i] is not None
                  and any(p_last[i] < d <= p_first[i] for d in truths))
        exact.append(ok)
        bracket.append(inside)
        matches.append((pid[i], tid[j], v, bool(ok)))
        if tk[j] == "modified":
            mod_found += 1
            mod_kind += pk[i] == "modified"
    tp = len(new_pairs)
    n_pred, n_truth = len(pn), len(tn)
    empty = 1.0 if n_pred == 0 and n_truth == 0 else 0.0
    precision = _ratio(tp, n_pred, empty=empty)
    recall = _ratio(tp, n_truth, empty=empty)
    f1 = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)

    # demolitions
    pd_ = np.flatnonzero(pk == "demolished")
    td = np.flatnonzero(tk == "demolished")
    dem_pairs = [(pd_[i], td[j], v) for i, j, v in
                 match(iou[np.ix_(pd_, td)], iou_threshold=iou_threshold)]

    # false polygons: unmatched and not overlapping any true change
    matched = {i for i, _, _ in new_pairs} | {i for i, _, _ in dem_pairs}
    tc = np.flatnonzero(np.isin(tk, list(CHANGE_KINDS)))
    near_change = (iou[:, tc] >= iou_threshold).any(axis=1) if len(tc) else np.zeros(len(pg), bool)
    false = int(sum(1 for i in range(len(pg)) if i not in matched and not near_change[i]))
    area_ha = None if area_m2 is None else area_m2 / 1e4

    return Scores(
        n_pred=n_pred, n_truth=n_truth, tp=tp,
        precision=float(precision), recall=float(recall), f1=float(f1),
        dating_exact=float(np.mean(exact)) if exact else None,
        dating_bracket=float(np.mean(bracket)) if bracket else None,
        demolitions_found=len(dem_pairs), demolitions_total=len(td),
        modifications_found=mod_found, modifications_kind_correct=int(mod_kind),
        modifications_total=int((tk == "modified").sum()),
        false_polygons=false,
        false_polygons_per_ha=None if area_ha is None else false / area_ha,
        matches=tuple(matches),
        demolition_matches=tuple((pid[i], tid[j], v) for i, j, v in dem_pairs),
        iou_threshold=float(iou_threshold), area_ha=area_ha,
    )


# --------------------------------------------------------------------------- registration


def _affine(m, what: str = "affine") -> np.ndarray:
    """A (3, 3) matrix from a 2x3 / 3x3 nested list, a 6/9-sequence or an ``affine.Affine``."""
    if hasattr(m, "a") and hasattr(m, "e") and hasattr(m, "f"):
        m = [m.a, m.b, m.c, m.d, m.e, m.f]
    a = np.asarray(m, dtype=np.float64)
    if a.shape in ((6,), (9,)):
        a = a[:6].reshape(2, 3)
    if a.shape == (3, 3):
        a = a[:2]
    if a.shape != (2, 3) or not np.isfinite(a).all():
        raise InputError(f"{what} must be a finite 2x3 affine [[a, b, c], [d, e, f]], got {m!r}")
    out = np.eye(3)
    out[:2] = a
    return out


@dataclass(frozen=True)
class PixelScores:
    """Pixel-level agreement of a binary change map with the truth (change = positive).

    Confusion counts add up, so scores of several pairs are pooled with ``+``
    (the pooled F1 of a dataset is the F1 of the summed counts, not the mean of
    per-pair F1s).

    Attributes
    ----------
    tp, fp, fn, tn : int
    """

    tp: int
    fp: int
    fn: int
    tn: int

    def __add__(self, other: "PixelScores") -> "PixelScores":
        return PixelScores(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn,
                           self.tn + other.tn)

    @property
    def n(self) -> int:
        return self.tp + self.fp + self.fn + self.tn

    @property
    def precision(self) -> float:
        return _ratio(self.tp, self.tp + self.fp, empty=1.0)

    @property
    def recall(self) -> float:
        return _ratio(self.tp, self.tp + self.fn, empty=1.0)

    @property
    def f1(self) -> float:
        return _ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn, empty=1.0)

    @property
    def iou(self) -> float:
        return _ratio(self.tp, self.tp + self.fp + self.fn, empty=1.0)

    @property
    def kappa(self) -> float:
        """Cohen's kappa: agreement beyond what the two maps' change rates give by chance."""
        n = self.n
        if n == 0:
            return 1.0
        po = (self.tp + self.tn) / n
        pe = ((self.tp + self.fp) * (self.tp + self.fn) + (self.fn + self.tn) * (self.fp + self.tn)) / n ** 2
        return 1.0 if pe == 1 else (po - pe) / (1 - pe)

    def as_dict(self) -> dict[str, Any]:
        return {"tp": self.tp, "fp": self.fp, "fn": self.fn, "tn": self.tn,
                "precision": round(self.precision, 4), "recall": round(self.recall, 4),
                "f1": round(self.f1, 4), "iou": round(self.iou, 4), "kappa": round(self.kappa, 4)}


def pixel_scores(pred, truth, *, valid=None) -> PixelScores:
    """Confusion counts of a binary change map against the truth, over valid pixels.

    Examples
    --------
    >>> p = np.array([[1, 1, 0, 0]], bool); t = np.array([[1, 0, 1, 0]], bool)
    >>> s = pixel_scores(p, t)
    >>> (s.tp, s.fp, s.fn, s.tn), s.f1, s.iou, s.kappa
    ((1, 1, 1, 1), 0.5, 0.3333333333333333, 0.0)
    """
    p = np.asarray(pred, bool)
    t = np.asarray(truth, bool)
    if p.shape != t.shape:
        raise InputError(f"Prediction and truth shapes differ: {p.shape} and {t.shape}.")
    if valid is not None:
        v = np.asarray(valid, bool)
        p, t = p[v], t[v]
    tp = int(np.count_nonzero(p & t))
    fp = int(np.count_nonzero(p & ~t))
    fn = int(np.count_nonzero(~p & t))
    return PixelScores(tp, fp, fn, int(p.size) - tp - fp - fn)


def registration_error(pred_affine, true_affine, *, shape: tuple[int, int], step: int = 16) -> float:
    """RMSE, in reference pixels, of a recovered reference-to-scene mapping.

    For the pixel centres ``q`` of every ``step``-th row and column of a
    reference grid of ``shape``, the residual is
    ``inv(true_affine)(pred_affine(q)) - q``: where the recovered mapping sends
    ``q``, brought back to the reference grid by the true mapping.

    Parameters
    ----------
    pred_affine, true_affine : array-like
        2x3 affines (or 3x3, 6-sequences, ``affine.Affine``) mapping reference
        pixel (col, row) to scene pixel (col, row). ``pred_affine`` may also be
        a (2, 6) second-order polynomial (see
        :func:`changedetect.stack.apply_mapping`).
    shape : (rows, cols), keyword-only
        Size of the reference grid.
    step : int, keyword-only
        Spacing of the sample points in pixels.

    Returns
    -------
    float

    Examples
    --------
    >>> registration_error([[1, 0, 0.5], [0, 1, 0]], [[1, 0, 0], [0, 1, 0]], shape=(64, 64))
    0.5
    """
    rows, cols = (int(v) for v in shape)
    if rows <= 0 or cols <= 0:
        raise InputError(f"shape must be positive (rows, cols), got {shape}")
    if int(step) <= 0:
        raise InputError(f"step must be a positive integer, got {step}")
    poly = np.asarray(pred_affine, dtype=np.float64) if not hasattr(pred_affine, "a") else None
    if poly is not None and poly.shape == (2, 6):
        if not np.isfinite(poly).all():
            raise InputError(f"pred_affine must be finite, got {pred_affine!r}")
    else:
        poly = _affine(pred_affine, "pred_affine")[:2]
    t = _affine(true_affine, "true_affine")
    try:
        ti = np.linalg.inv(t)
    except np.linalg.LinAlgError as exc:
        raise InputError(f"true_affine is singular: {true_affine!r}") from exc
    c, r = np.meshgrid(np.arange(0, cols, step) + 0.5, np.arange(0, rows, step) + 0.5)
    q = np.stack([c.ravel(), r.ravel()])
    px, py = apply_mapping(poly, q[0], q[1])
    d = ti[:2, :2] @ np.stack([px, py]) + ti[:2, 2:3] - q
    return float(np.sqrt(np.mean(np.sum(d * d, axis=0))))


def _lookup(mapping: Mapping[str, Any], name: str):
    """``mapping[name]``, else the entry with the same base name or stem."""
    if name in mapping:
        return name
    base = Path(name).name
    stem = Path(base).stem
    for k in mapping:
        if Path(k).name == base:
            return k
    for k in mapping:
        if Path(Path(k).name).stem == stem:
            return k
    return None


def _ref_to_scene(entry) -> Any:
    if isinstance(entry, Mapping):
        return entry.get("ref_to_scene")
    return entry


def evaluate_registration(run, misregistration, *, shape: tuple[int, int] | None = None,
                          step: int = 16) -> dict[str, float | None]:
    """Registration RMSE per scene against the true misregistration.

    Parameters
    ----------
    run : dict or path
        ``run.json`` (or its directory): ``registration`` maps image file names
        to ``{"ref_to_scene": 2x3}``; ``grid`` gives ``width`` and ``height``.
    misregistration : dict or path
        ``misregistration.json`` (or its directory): ``reference`` name and
        ``scenes`` mapping names to ``{"ref_to_scene": 2x3}`` (the truth).
    shape : (rows, cols), optional, keyword-only
        Reference grid size; by default ``run["grid"]`` height and width.
    step : int, keyword-only
        Sample spacing in pixels.

    Returns
    -------
    dict
        RMSE in reference pixels per scene present in both (names matched by file
        name, then by stem), and ``mean`` and ``max`` over those scenes except the
        reference. A scene whose error cannot be computed is None. Empty if either
        side has no registration record.

    Notes
    -----
    If the run used a different reference scene than the site (its scene with an
    identity ``ref_to_scene``, or ``run["reference"]``), the true mapping from the
    run's grid is ``T_scene o inv(T_run_reference)``, and both references are
    left out of ``mean``/``max``.

    Examples
    --------
    >>> run = {"grid": {"width": 32, "height": 32},
    ...        "registration": {"a.tif": {"ref_to_scene": [[1, 0, 0], [0, 1, 0]]},
    ...                         "b.tif": {"ref_to_scene": [[1, 0, 2.0], [0, 1, 0]]}}}
    >>> mis = {"reference": "a.tif", "scenes": {"a.tif": {"ref_to_scene": [[1, 0, 0], [0, 1, 0]]},
    ...                                         "b.tif": {"ref_to_scene": [[1, 0, 1.5], [0, 1, 0]]}}}
    >>> evaluate_registration(run, mis)
    {'b.tif': 0.5, 'a.tif': 0.0, 'mean': 0.5, 'max': 0.5}
    """
    run = _read_json(run, "run.json")
    mis = _read_json(misregistration, "misregistration.json")
    reg = run.get("registration") or {}
    scenes = mis.get("scenes") or {}
    if not isinstance(reg, Mapping) or not isinstance(scenes, Mapping) or not reg or not scenes:
        return {}
    if shape is None:
        grid = run.get("grid") or {}
        try:
            shape = (int(grid["height"]), int(grid["width"]))
        except (KeyError, TypeError, ValueError):
            shape = None

    pairs = {}  # run name -> truth name
    for name in reg:
        k = _lookup(scenes, name)
        if k is not None:
            pairs[name] = k
    truth_ref = mis.get("reference")
    truth_ref = _lookup(scenes, str(truth_ref)) if truth_ref is not None else None

    # the run's reference: declared, else the scene it maps by identity
    run_ref = None
    declared = run.get("reference")
    if isinstance(declared, Mapping):
        declared = declared.get("name") or declared.get("path")
    if isinstance(declared, str):
        run_ref = _lookup(reg, declared) or declared
    if run_ref is None:
        for name in pairs:
            try:
                if np.allclose(_affine(_ref_to_scene(reg[name])), np.eye(3), atol=1e-9):
                    run_ref = name
                    break
            except InputError:
                continue
    # true mapping from the run's grid to the truth reference grid
    base = np.eye(3)
    run_ref_truth = _lookup(scenes, run_ref) if run_ref is not None else None
    if run_ref_truth is not None and run_ref_truth != truth_ref:
        try:
            base = np.linalg.inv(_affine(_ref_to_scene(scenes[run_ref_truth])))
        except (InputError, np.linalg.LinAlgError):
            base = np.eye(3)

    out: dict[str, float | None] = {}
    refs = {run_ref, truth_ref, run_ref_truth} - {None}
    for name, k in pairs.items():
        if shape is None:
            out[name] = None
            continue
        try:
            true = _affine(_ref_to_scene(scenes[k]), f"misregistration {k}") @ base
            out[name] = registration_error(_ref_to_scene(reg[name]), true, shape=shape, step=step)
        except (InputError, TypeError):
            out[name] = None
    order = sorted(out, key=lambda n: (n in refs or pairs[n] in refs, n))
    out = {n: out[n] for n in order}
    vals = [v for n, v in out.items()
            if v is not None and n not in refs and pairs[n] not in refs]
    out["mean"] = float(np.mean(vals)) if vals else None
    out["max"] = float(np.max(vals)) if vals else None
    return out


# --------------------------------------------------------------------------- whole run


def _grid_area_m2(run: Mapping) -> float | None:
    grid = run.get("grid") or {}
    try:
        t = [float(v) for v in grid["transform"]][:6]
        w, h = int(grid["width"]), int(grid["height"])
        area = abs(t[0] * t[4] - t[1] * t[3]) * w * h
    except (KeyError, TypeError, ValueError, IndexError):
        return None
    return area if area > 0 else None


def evaluate_run(out_dir: PathLike, site_dir: PathLike, *, iou_threshold: float = 0.25) -> Report:
    """Score a ``detect-changes`` output directory against a synthetic site.

    Parameters
    ----------
    out_dir : path
        Holds ``changes.gpkg`` (preferred) or ``changes.geojson``, and ``run.json``.
    site_dir : path
        Holds ``truth.geojson`` and ``misregistration.json``.
    iou_threshold : float, keyword-only
        Smallest IoU of a true positive.

    Returns
    -------
    Report
        ``registration`` is empty when ``run.json`` or ``misregistration.json``
        is missing; ``false_polygons_per_ha`` is None when ``run.json`` has no grid.

    Raises
    ------
    FileNotFoundError
        A directory, the changes file or ``truth.geojson`` is missing.
    """
    out_dir, site_dir = Path(out_dir), Path(site_dir)
    for d, what, fix in ((out_dir, "output", "given to detect-changes --out"),
                         (site_dir, "site", "made by changedetect.synthetic.make_site")):
        if not d.is_dir():
            raise MissingFileError(f"{what} directory {d} does not exist; pass the directory {fix}")
    pred_path = next((p for p in (out_dir / "changes.gpkg", out_dir / "changes.geojson") if p.exists()), None)
    if pred_path is None:
        raise MissingFileError(f"{out_dir / 'changes.gpkg'} (or changes.geojson) does not exist; "
                               "run detect-changes --out on that directory first")
    truth_path = site_dir / "truth.geojson"
    if not truth_path.exists():
        raise MissingFileError(f"{truth_path} does not exist; create the site with "
                               "changedetect.synthetic.make_site")
    run = _read_json(out_dir / "run.json", "run.json") if (out_dir / "run.json").exists() else {}
    scores = evaluate(pred_path, truth_path, iou_threshold=iou_threshold, area_m2=_grid_area_m2(run))
    mis_path = site_dir / "misregistration.json"
    registration = evaluate_registration(run, mis_path) if run and mis_path.exists() else {}
    return Report(scores=scores, registration=registration, out_dir=str(out_dir), site_dir=str(site_dir))


# --------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m changedetect.evaluate OUT_DIR SITE_DIR [--json]``.

    Returns 0 on success, 2 (with a one-line message on stderr) if inputs are
    missing or unusable.
    """
    ap = argparse.ArgumentParser(prog="python -m changedetect.evaluate",
                                 description="Score a detect-changes output against a site's truth.")
    ap.add_argument("out_dir", help="directory written by detect-changes --out")
    ap.add_argument("site_dir", help="site directory with truth.geojson and misregistration.json")
    ap.add_argument("--json", action="store_true", help="print the full report as JSON")
    ap.add_argument("--iou", type=float, default=0.25, metavar="T",
                    help="IoU threshold of a match (default 0.25)")
    args = ap.parse_args(argv)
    try:
        report = evaluate_run(args.out_dir, args.site_dir, iou_threshold=args.iou)
    except (OSError, ValueError) as exc:
        print(f"{ap.prog}: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report.as_dict(), indent=2, default=str))
    else:
        print(report.format())
    return 0


# ``cd.evaluate(...)`` keeps working after ``import changedetect.evaluate``
_callable_module(__name__, evaluate)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
