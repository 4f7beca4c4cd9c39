"""The evidence store: what a figure of a change needs, kept in the results folder by the run.

Every figure of a change (:mod:`changedetect.plot`, the report, the review) is
drawn from the results folder alone, without the input images and without
registering them again. The run writes, next to ``changes.gpkg`` and
``run.json``, a folder ``evidence/`` (format version 1):

``evidence/index.json``
    ``format`` (``"changedetect-evidence"``), ``version`` (1), the grid
    (``crs`` WKT or authority string, ``transform`` 6 floats, ``width``,
    ``height``, ``pixel_size``), ``dates`` (ISO, stack order), ``scenes``
    (file names, stack order), ``sensors`` (per scene: the file's
    ``TIFFTAG_MAKE``/``SENSOR``/``SATELLITE`` tag, else null), ``colour``
    (which bands made red, green, blue and the stretch rule), ``chips``:
    per change id, ``file``, ``sha256``, ``window`` (``col_off``, ``row_off``,
    ``width``, ``height`` in grid pixels) and ``step`` (grid pixels per chip
    pixel, 1 unless the window was larger than :data:`MAX_CHIP` px); and
    ``overview``, ``series`` and ``registration`` (``file``, ``sha256``,
    ``step`` for the images). ``run.json``
    lists the SHA-256 of ``evidence/index.json`` among its outputs, so every
    evidence file is covered by the run record.
``evidence/chips/<change_id>.npz``
    * ``rgb`` uint8 (n_dates, h, w, 3): true colour of every acquisition,
      read from the *co-registered* stack (the grid the polygons are on);
    * ``valid`` bool (n_dates, h, w): the scene has data there;
    * ``usable`` bool (n_dates,): the dates the dating of this change used
      (clear, registered, not a cloud over it);
    * ``dates`` str (n_dates,): ISO dates;
    * ``transform`` float64 (6,): affine (a, b, c, d, e, f) of the chip in
      the grid CRS;
    * ``stretch`` float64 (2,): the image values mapped to 0 and 255.
    The window is the polygon's bounds padded by ``max(16 px, half its
    size)`` on each side, clipped to the grid; a window wider than
    :data:`MAX_CHIP` px is read decimated (area average) by an integer step.
``evidence/overview.npz``
    ``rgb`` uint8 (2, h, w, 3), ``valid`` bool (2, h, w), ``dates`` str (2,),
    ``scene_index`` int (2,), ``transform`` (6,), ``stretch`` (2,): the first
    and the last usable acquisition (not left out, at least 90 % of the grid
    valid, else as much as the fullest) over the whole grid, longest side at most :data:`MAX_OVERVIEW` px.
``evidence/series.npz``
    ``rgb`` uint8 (n_dates, h, w, 3), ``valid`` bool (n_dates, h, w),
    ``usable`` bool (n_dates,) (the scene was not left out), ``dates``,
    ``transform``, ``stretch``: every acquisition over the whole grid, longest
    side at most :data:`MAX_SERIES` px, one stretch for all dates (for
    animations).
``evidence/registration.json``
    Per scene in stack order: ``scene``, ``date``, ``model``, ``flagged``,
    ``rmse_px``, ``shift_px``, and ``tiepoints``: ``columns`` and ``rows``
    with, per tie point, its position (``col``, ``row`` in grid pixels;
    ``x``, ``y`` in the grid CRS), the model's shift there (``model_dx``,
    ``model_dy``), the shift measured there (``measured_dx``,
    ``measured_dy`` = model + residual), the residual about the model
    (``dx``, ``dy``), its peak significance ``z`` and ``inlier`` (kept by the
    model). Shifts are in grid pixels, from the reference grid to the scene
    (the content of the scene sits that far away from where its
    georeferencing put it).

Colour: red, green and blue are the bands whose roles
(:attr:`changedetect.stack.Stack.band_roles`) say so; a stack without them
uses its first band as grey (one or two bands) or its first three bands in
file order (recorded in ``colour.bands``). The stretch is one linear map for
the three channels and every date of a chip (so colours and dates compare):
the 1st and 99th percentiles of the valid pixels of all dates.

The ``.npz`` files are zip archives written with a fixed time stamp and fixed
compression, so the same run gives the same bytes; ``numpy.load`` reads them.

:func:`load_results` opens a results folder (:class:`Results`: the change
table, the run record, chips, the overview and the tie points).
"""

from __future__ import annotations

import hashlib
import io as _io
import json
import math
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Sequence

import numpy as np

from .errors import InputError
from .io import sha256_file, write_text

if TYPE_CHECKING:          # reading a results folder (the report, a review) needs no Stack, nor SciPy
    from .stack import Stack

__all__ = ["write_evidence", "load_results", "Results", "Chip", "Overview", "true_colour_bands",
           "chip_window", "stretch_to_uint8", "balloon_images", "published_detections", "read_run", "MAX_CHIP", "MAX_OVERVIEW", "MAX_SERIES", "FORMAT_VERSION"]

FORMAT_VERSION = 1
#: Longest side of a chip, in pixels; larger windows are read decimated.
MAX_CHIP = 512
#: Longest side of the overview image, in pixels.
MAX_OVERVIEW = 1024
#: Longest side of the every-date series (for animations), in pixels.
MAX_SERIES = 384
#: Smallest margin around a change's bounds, in grid pixels.
MIN_PAD_PX = 16
#: Percentiles of the valid pixels mapped to 0 and 255.
STRETCH_PERCENTILES = (1.0, 99.0)
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


# ---------------------------------------------------------------------------------------- writing

def true_colour_bands(roles: Sequence[str]) -> tuple[tuple[int, int, int], str]:
    """Band indices (0-based) for red, green, blue from the band roles, and how they were chosen.

    Examples
    --------
    >>> true_colour_bands(("blue", "green", "red", "nir"))
    ((2, 1, 0), 'band roles')
    >>> true_colour_bands(("undefined",))
    ((0, 0, 0), 'grey: first band')
    """
    roles = [str(r).lower() for r in roles]
    if all(c in roles for c in ("red", "green", "blue")):
        return (roles.index("red"), roles.index("green"), roles.index("blue")), "band roles"
    if len(roles) >= 3:
        return (0, 1, 2), "first three bands in file order (no red, green, blue roles)"
    return (0, 0, 0), "grey: first band"


def stretch_limits(values: np.ndarray, valid: np.ndarray) -> tuple[float, float]:
    """The 1st and 99th percentiles of ``values`` (..., bands, rows, cols) where ``valid`` (..., rows, cols)."""
    v = np.moveaxis(values, -3, -1)[valid]
    if v.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(v, STRETCH_PERCENTILES)
    return float(lo), float(hi if hi > lo else lo + 1.0)


def stretch_to_uint8(values: np.ndarray, limits: tuple[float, float]) -> np.ndarray:
    """Map (..., 3, rows, cols) values linearly so that ``limits`` become 0 and 255; channels last."""
    lo, hi = limits
    x = (np.moveaxis(values, -3, -1).astype(np.float64) - lo) * (255.0 / (hi - lo))
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


def chip_window(bounds_px: tuple[float, float, float, float], width: int, height: int, *,
                max_size: int = MAX_CHIP) -> tuple[tuple[int, int, int, int], int]:
    """The chip window ((col_off, row_off, width, height), step) around pixel bounds (c0, r0, c1, r1).

    Padded by ``max(16, half the size)`` on each side, clipped to the grid; the
    step is the decimation that keeps the longest side within ``max_size``, and
    the window is shrunk to a multiple of it.

    Examples
    --------
    >>> chip_window((100, 100, 110, 120), 512, 512)
    ((84, 84, 42, 52), 1)
    """
    c0, r0, c1, r1 = bounds_px
    w, h = c1 - c0, r1 - r0
    pc, pr = max(MIN_PAD_PX, w / 2), max(MIN_PAD_PX, h / 2)
    a0, b0 = max(0, int(math.floor(c0 - pc))), max(0, int(math.floor(r0 - pr)))
    a1, b1 = min(width, int(math.ceil(c1 + pc))), min(height, int(math.ceil(r1 + pr)))
    step = max(1, -(-max(a1 - a0, b1 - b0) // max_size))
    ww, hh = max(step, (a1 - a0) // step * step), max(step, (b1 - b0) // step * step)
    return (a0, b0, min(ww, width - a0), min(hh, height - b0)), step


def _npz_bytes(arrays: Mapping[str, np.ndarray]) -> bytes:
    """An ``.npz`` archive with a fixed time stamp and compression: the same arrays, the same bytes."""
    buf = _io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, arr in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            one = _io.BytesIO()
            np.lib.format.write_array(one, np.ascontiguousarray(arr), allow_pickle=False)
            z.writestr(info, one.getvalue(), compresslevel=6)
    return buf.getvalue()


def _write_npz(path: Path, arrays: Mapping[str, np.ndarray]) -> str:
    data = _npz_bytes(arrays)
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def _read_chips(stack: Stack, windows: Sequence[tuple], bands: tuple[int, int, int]):
    """Every date of some windows of the co-registered stack, each file opened once per date.

    ``windows`` holds (Window, step); yields, per window, values (dates, 3, h, w)
    float32 and valid (dates, h, w).
    """
    vals = [np.empty((len(stack), 3, int(w.height) // s, int(w.width) // s), np.float32) for w, s in windows]
    valid = [np.empty((len(stack), int(w.height) // s, int(w.width) // s), bool) for w, s in windows]
    for t in range(len(stack)):
        with stack.open_warped(t) as read:
            for k, (w, s) in enumerate(windows):
                data, v = read(w, vals[k].shape[2:] if s > 1 else None)
                vals[k][t] = data[list(bands)]
                valid[k][t] = v
    return list(zip(vals, valid))


#: Float32 bytes of chips read in one pass over the files (memory follows this, not the grid).
_BATCH_BYTES = 64 * 2**20


def _sensor(path) -> str | None:
    import rasterio

    try:
        with rasterio.open(path) as src:
            tags = src.tags()
    except Exception:                       # the name is used instead; never fail the run for a label
        return None
    for key in ("SENSOR", "SATELLITE", "SATELLITEID", "SPACECRAFT", "TIFFTAG_MAKE", "PLATFORM"):
        for k, v in tags.items():
            if k.upper() == key and str(v).strip():
                return str(v).strip()
    return None


def _affine6(t) -> list[float]:
    return [float(t.a), float(t.b), float(t.c), float(t.d), float(t.e), float(t.f)]


def registration_record(stack: Stack, regs) -> list[dict]:
    """``registration.json``: per scene, the tie points with position, model shift, measured shift, residual."""
    from .stack import apply_mapping

    t = stack.transform
    out = []
    cols = ["col", "row", "x", "y", "model_dx", "model_dy", "measured_dx", "measured_dy", "dx", "dy", "z",
            "inlier"]

    def r(v, n=4):
        return None if v is None or not math.isfinite(float(v)) else round(float(v), n)

    for scene, reg in zip(stack.scenes, regs):
        tp = np.asarray(reg.tiepoints, dtype=np.float64).reshape(-1, 6)
        q = tp[:, :2]
        if len(tp):
            px, py = apply_mapping(np.asarray(reg.correction, dtype=np.float64), q[:, 0], q[:, 1])
            mdx, mdy = px - q[:, 0], py - q[:, 1]
        else:
            mdx = mdy = np.zeros(0)
        rows = []
        for k in range(len(tp)):
            c, rr = q[k]
            rows.append([r(c, 2), r(rr, 2), r(t.c + t.a * c + t.b * rr, 3), r(t.f + t.d * c + t.e * rr, 3),
                         r(mdx[k]), r(mdy[k]), r(mdx[k] + tp[k, 2]), r(mdy[k] + tp[k, 3]),
                         r(tp[k, 2]), r(tp[k, 3]), r(tp[k, 4], 2), bool(tp[k, 5])])
        out.append({"scene": scene.name, "date": scene.date.isoformat(), "model": reg.model,
                    "flagged": bool(reg.flagged), "rmse_px": r(reg.rmse_px),
                    "shift_px": [r(reg.shift_px[0]), r(reg.shift_px[1])],
                    "tiepoints": {"columns": cols, "rows": rows}})
    return out


def _rows_json(scenes: list[dict]) -> str:
    """JSON of the registration record with one line per scene header and per tie point (diffable, small)."""
    parts = []
    for rec in scenes:
        head = {k: v for k, v in rec.items() if k != "tiepoints"}
        rows = ",\n   ".join(json.dumps(r) for r in rec["tiepoints"]["rows"])
        parts.append(f' {json.dumps(head)[:-1]}, "tiepoints": {{"columns": '
                     f'{json.dumps(rec["tiepoints"]["columns"])}, "rows": [\n   {rows}]}}}}')
    return "[\n" + ",\n".join(parts) + "\n]\n"


def write_evidence(folder: str | Path, stack: Stack, regs, changes, usable: Mapping[str, Sequence[bool]], *,
                   skipped: Sequence[bool] = (), max_chip: int = MAX_CHIP,
                   max_overview: int = MAX_OVERVIEW, max_series: int = None) -> dict[str, Path]:
    """Write the evidence store (module docstring) into ``folder`` (``<results>/evidence``).

    Parameters
    ----------
    folder : path-like
        Created; usually inside the run's staging folder.
    stack : Stack
        The *co-registered* stack (the grid of the polygons).
    regs : sequence of Registration
        Per scene, for the tie points.
    changes : GeoDataFrame
        The change table (``change_id``, geometry in the stack's CRS).
    usable : mapping of change id to sequence of bool
        Per change, the dates its dating used.
    skipped : sequence of bool
        Per scene, left out of the run (never the overview).

    Returns
    -------
    dict
        ``index.json`` to its path (the one file run.json must list).
    """
    from rasterio.transform import Affine
    from rasterio.windows import Window

    folder = Path(folder)
    max_series = MAX_SERIES if max_series is None else max_series
    (folder / "chips").mkdir(parents=True, exist_ok=True)
    bands, how = true_colour_bands(stack.band_roles)
    dates = np.array([d.isoformat() for d in stack.dates])
    inv = ~stack.transform
    jobs = []
    for cid, geom in zip(changes["change_id"], changes.geometry):
        x0, y0, x1, y1 = geom.bounds
        cs, rs = zip(*(inv * (x, y) for x, y in ((x0, y0), (x0, y1), (x1, y0), (x1, y1))))
        (c0, r0, w, h), step = chip_window((min(cs), min(rs), max(cs), max(rs)), stack.width, stack.height,
                                           max_size=max_chip)
        jobs.append((str(cid), Window(c0, r0, w, h), step))
    batches, size = [[]], 0
    for job in jobs:
        nbytes = len(stack) * 4 * (job[1].width // job[2]) * (job[1].height // job[2]) * 4
        if batches[-1] and size + nbytes > _BATCH_BYTES:
            batches.append([])
            size = 0
        batches[-1].append(job)
        size += nbytes
    chips = {}
    for batch in batches:
        for (cid, window, step), (vals, valid) in zip(batch, _read_chips(stack, [(w, s) for _, w, s in batch],
                                                                         bands)):
            limits = stretch_limits(vals, valid)
            u = np.asarray(usable.get(cid, [True] * len(stack)), dtype=bool)
            tr = stack.window_transform(window) * Affine.scale(step)
            name = f"{cid}.npz"
            digest = _write_npz(folder / "chips" / name, {
                "rgb": stretch_to_uint8(vals, limits), "valid": valid, "usable": u, "dates": dates,
                "transform": np.array(_affine6(tr)), "stretch": np.array(limits)})
            chips[cid] = {"file": f"chips/{name}", "sha256": digest,
                          "window": {"col_off": int(window.col_off), "row_off": int(window.row_off),
                                     "width": int(window.width), "height": int(window.height)}, "step": step}
    # the series (every date, small) and the overview (first and last usable date, larger)
    def grid_shape(longest):
        step = max(1, -(-max(stack.width, stack.height) // longest))
        return step, (-(-stack.height // step), -(-stack.width // step))

    s_step, (sh, sw) = grid_shape(max_series)
    o_step, (oh, ow) = grid_shape(max_overview)
    svals = np.empty((len(stack), 3, sh, sw), np.float32)
    svalid = np.empty((len(stack), sh, sw), bool)
    for t in range(len(stack)):
        data, v = stack.read(t, None, out_shape=(sh, sw), resampling="bilinear")
        svals[t], svalid[t] = data[list(bands)], v
    not_skipped = np.array([not (skipped and skipped[t]) for t in range(len(stack))])
    slimits = stretch_limits(svals[not_skipped], svalid[not_skipped]) if not_skipped.any() else (0.0, 1.0)
    series_sha = _write_npz(folder / "series.npz", {
        "rgb": stretch_to_uint8(svals, slimits), "valid": svalid, "usable": not_skipped, "dates": dates,
        "transform": np.array(_affine6(stack.transform * Affine.scale(stack.width / sw, stack.height / sh))),
        "stretch": np.array(slimits)})
    del svals
    order = [t for t in range(len(stack)) if not_skipped[t]] or list(range(len(stack)))
    share = svalid.mean(axis=(1, 2))
    best = max(share[t] for t in order)
    good = [t for t in order if share[t] >= min(0.9, best)]            # nearly whole, else the fullest
    first, last = good[0], good[-1]
    picked = [first, last]
    parts = []
    for t in picked:
        data, v = stack.read(t, None, out_shape=(oh, ow), resampling="bilinear")
        parts.append((data[list(bands)], v))
    ovals, ovalid = np.stack([p[0] for p in parts]), np.stack([p[1] for p in parts])
    olimits = stretch_limits(ovals, ovalid)
    otr = stack.transform * Affine.scale(stack.width / ow, stack.height / oh)
    over_sha = _write_npz(folder / "overview.npz", {
        "rgb": stretch_to_uint8(ovals, olimits), "valid": ovalid, "dates": dates[picked],
        "scene_index": np.array(picked, dtype=np.int64), "transform": np.array(_affine6(otr)),
        "stretch": np.array(olimits)})
    reg_text = _rows_json(registration_record(stack, regs))
    write_text(folder / "registration.json", reg_text)
    index = {
        "format": "changedetect-evidence", "version": FORMAT_VERSION,
        "grid": {"crs": stack.crs.to_string(), "transform": _affine6(stack.transform), "width": stack.width,
                 "height": stack.height, "pixel_size": stack.pixel_size},
        "dates": [str(d) for d in dates], "scenes": [s.name for s in stack.scenes],
        "sensors": [_sensor(s.path) for s in stack.scenes],
        "colour": {"bands": [int(b) for b in bands], "roles": list(stack.band_roles), "chosen_by": how,
                   "stretch": "one linear map for the three channels and all dates: percentiles "
                              f"{STRETCH_PERCENTILES[0]:g} and {STRETCH_PERCENTILES[1]:g} of the valid "
                              "pixels to 0 and 255"},
        "chips": chips,
        "overview": {"file": "overview.npz", "sha256": over_sha, "step": o_step},
        "series": {"file": "series.npz", "sha256": series_sha, "step": s_step},
        "registration": {"file": "registration.json", "sha256": sha256_file(folder / "registration.json")},
    }
    write_text(folder / "index.json", json.dumps(index, indent=1) + "\n")
    return {"evidence/index.json": folder / "index.json"}


# ---------------------------------------------------------------------------------------- reading

@dataclass(frozen=True)
class Chip:
    """The evidence of one change: every acquisition around it, on the co-registered grid.

    Attributes
    ----------
    change_id : str
    rgb : ndarray, uint8 (n_dates, h, w, 3)
    valid : ndarray, bool (n_dates, h, w)
    usable : ndarray, bool (n_dates,)
    dates : tuple of str
    transform : affine.Affine
        Of the chip, in the grid CRS.
    stretch : (float, float)
    """

    change_id: str
    rgb: np.ndarray
    valid: np.ndarray
    usable: np.ndarray
    dates: tuple[str, ...]
    transform: object
    stretch: tuple[float, float]

    @property
    def extent(self) -> tuple[float, float, float, float]:
        """(left, right, bottom, top) in the grid CRS, for ``imshow(extent=...)``."""
        t = self.transform
        h, w = self.rgb.shape[1:3]
        xs, ys = (t.c, t.c + t.a * w), (t.f, t.f + t.e * h)
        return min(xs), max(xs), min(ys), max(ys)

    @property
    def pixel_size(self) -> float:
        t = self.transform
        return float(math.sqrt(abs(t.a * t.e - t.b * t.d)))


@dataclass(frozen=True)
class Overview:
    """The whole grid at the first and last usable acquisitions (see :class:`Chip` for the fields)."""

    rgb: np.ndarray
    valid: np.ndarray
    dates: tuple[str, ...]
    scene_index: tuple[int, ...]
    transform: object
    stretch: tuple[float, float]
    usable: np.ndarray | None = None

    @property
    def extent(self) -> tuple[float, float, float, float]:
        return Chip.extent.fget(self)                      # same geometry

    @property
    def pixel_size(self) -> float:
        return Chip.pixel_size.fget(self)


def _load_npz(path: Path) -> dict:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _iso_dates(df, columns=("last_absent", "first_present")):
    import pandas as pd

    for c in columns:
        if c in df.columns:
            s = df[c]
            if pd.api.types.is_datetime64_any_dtype(s):
                df[c] = s.dt.strftime("%Y-%m-%d")
            else:
                df[c] = [None if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)[:10]
                         for v in s]
    return df


class Results:
    """A results folder opened for figures: the change table, the run record and the evidence.

    Use :func:`load_results`.

    Attributes
    ----------
    folder : Path
    changes : geopandas.GeoDataFrame
        The change table in the grid CRS (dates as ISO strings).
    run : dict
        ``run.json``.
    index : dict
        ``evidence/index.json``.
    """

    def __init__(self, folder: Path, changes, run: dict, index: dict):
        self.folder, self.changes, self.run, self.index = folder, changes, run, index
        self._chips: dict[str, Chip] = {}

    def __repr__(self) -> str:
        return f"Results({str(self.folder)!r}: {len(self.changes)} changes, {len(self.dates)} dates)"

    @property
    def dates(self) -> tuple[str, ...]:
        return tuple(self.index["dates"])

    @property
    def scenes(self) -> tuple[str, ...]:
        return tuple(self.index["scenes"])

    @property
    def crs(self):
        from rasterio.crs import CRS

        return CRS.from_user_input(self.index["grid"]["crs"])

    @property
    def transform(self):
        from rasterio.transform import Affine

        return Affine(*self.index["grid"]["transform"])

    def sensor(self, i: int) -> str:
        """A label for acquisition ``i``: its sensor tag when the file had one, else the file name."""
        s = (self.index.get("sensors") or [None] * len(self.scenes))[i]
        return s if s else self.scenes[i]

    def change(self, change_id: str):
        """The row of one change (a pandas Series); KeyError naming the ids there are."""
        rows = self.changes.loc[self.changes["change_id"] == change_id]
        if rows.empty:
            ids = list(self.changes["change_id"])
            shown = ", ".join(ids[:8]) + (", ..." if len(ids) > 8 else "") if ids else "none"
            raise KeyError(f"No change {change_id!r} in {self.folder} (it has {len(ids)}: {shown}).")
        return rows.iloc[0]

    def chip(self, change_id: str) -> Chip:
        """The evidence chip of one change (cached)."""
        if change_id not in self._chips:
            entry = self.index["chips"].get(change_id)
            if entry is None:
                self.change(change_id)                       # KeyError for an unknown id
                raise InputError(f"{self.folder / 'evidence'} has no chip for {change_id}; the evidence "
                                 "was not written by the run that made this change table. Run "
                                 "detect-changes again to rebuild it.")
            from rasterio.transform import Affine

            z = _load_npz(self.folder / "evidence" / entry["file"])
            self._chips[change_id] = Chip(change_id, z["rgb"], z["valid"], z["usable"],
                                          tuple(str(d) for d in z["dates"]), Affine(*z["transform"]),
                                          (float(z["stretch"][0]), float(z["stretch"][1])))
        return self._chips[change_id]

    def overview(self) -> Overview:
        from rasterio.transform import Affine

        z = _load_npz(self.folder / "evidence" / self.index["overview"]["file"])
        return Overview(z["rgb"], z["valid"], tuple(str(d) for d in z["dates"]),
                        tuple(int(i) for i in z["scene_index"]), Affine(*z["transform"]),
                        (float(z["stretch"][0]), float(z["stretch"][1])))

    def series(self) -> Overview:
        """Every acquisition over the whole grid, small (``scene_index`` is every index)."""
        from rasterio.transform import Affine

        z = _load_npz(self.folder / "evidence" / self.index["series"]["file"])
        return Overview(z["rgb"], z["valid"], tuple(str(d) for d in z["dates"]), tuple(range(len(z["dates"]))),
                        Affine(*z["transform"]), (float(z["stretch"][0]), float(z["stretch"][1])), z["usable"])

    def registration(self) -> list[dict]:
        """``registration.json``: per scene, its tie points (see the module docstring)."""
        return json.loads((self.folder / "evidence" / self.index["registration"]["file"]).read_text("utf-8"))


def balloon_images(evidence_dir: str | Path, changes, *, colours: Mapping[str, str] | None = None,
                   size: int = 200) -> dict[str, bytes]:
    """Per change: a PNG of its chip before | after, outline drawn, for a KMZ balloon.

    The ``last_absent`` and ``first_present`` chips side by side (each scaled to
    ``size`` px on its longer side, nearest neighbour), with the change's outline
    in its kind's colour (``colours``: kind to ``#rrggbb``; white otherwise).
    Changes without a chip are left out, and so is everything when
    ``evidence_dir`` holds no evidence store (a run with ``--no-evidence``).
    Deterministic bytes (Pillow writes no time into a PNG).
    """
    from PIL import Image, ImageDraw

    folder = Path(evidence_dir)
    try:
        index = json.loads((folder / "index.json").read_text("utf-8"))
    except (OSError, ValueError):
        return {}
    out: dict[str, bytes] = {}
    for _, row in changes.iterrows():
        cid = str(row["change_id"])
        entry = index.get("chips", {}).get(cid)
        if entry is None:
            continue
        z = _load_npz(folder / entry["file"])
        dates = [str(d) for d in z["dates"]]
        picks = [dates.index(str(row[c])[:10]) for c in ("last_absent", "first_present")
                 if not _missing(row[c]) and str(row[c])[:10] in dates]
        if not picks:
            continue
        h, w = z["rgb"].shape[1:3]
        k = size / max(h, w)
        a, b, c, d, e, f = (float(v) for v in z["transform"])
        det = a * e - b * d
        colour = (colours or {}).get(str(row.get("kind")), "#ffffff")
        panels = []
        for t in picks:
            im = Image.fromarray(np.ascontiguousarray(z["rgb"][t])).resize(
                (max(1, round(w * k)), max(1, round(h * k))), Image.NEAREST)
            draw = ImageDraw.Draw(im)
            for poly in getattr(row.geometry, "geoms", [row.geometry]):
                xy = np.asarray(poly.exterior.coords)
                # grid CRS -> chip pixel (inverse of the chip's affine), then the scaling
                col = (e * (xy[:, 0] - c) - b * (xy[:, 1] - f)) / det
                rr = (-d * (xy[:, 0] - c) + a * (xy[:, 1] - f)) / det
                draw.line([(float(x), float(y)) for x, y in zip(col * k, rr * k)], fill=colour, width=2)
            panels.append(im)
        sheet = Image.new("RGB", (sum(p.width for p in panels) + 4 * (len(panels) - 1), panels[0].height),
                          "white")
        x = 0
        for p in panels:
            sheet.paste(p, (x, 0))
            x += p.width + 4
        buf = _io.BytesIO()
        sheet.save(buf, format="PNG", optimize=False)
        out[cid] = buf.getvalue()
    return out


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or str(value) in ("", "NaT")


def read_run(folder: str | Path) -> dict:
    """The run record (``run.json``) of a results folder, or an error that says what the folder is not.

    The one check of "is this a results folder" for the figures, the report and the review.

    Raises
    ------
    InputError
        ``folder`` is not a folder, has no ``run.json``, or holds one that is not
        JSON or not written by changedetect.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder} is not a folder. Give the --out folder of a detect-changes run.")
    path = folder / "run.json"
    try:
        run = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{folder} is not a changedetect results folder: it has no run.json. Give the "
                         "--out folder of a detect-changes run.") from None
    except (OSError, ValueError) as exc:
        raise InputError(f"{path} cannot be read as JSON ({exc}). Give the --out folder of a "
                         "detect-changes run, as the run wrote it.") from None
    if not isinstance(run, dict) or "changedetect" not in run:
        raise InputError(f"{path} is not the run record of changedetect. Give the --out folder of a "
                         "detect-changes run.")
    return run


def published_detections(folder: str | Path, run: dict):
    """The published changes read from ``detections.gpkg``, for a run whose formats hold no table (KML/KMZ only).

    Every detection as the run found it, less those a review left out
    (``run.json`` ``review.published.change_ids``), in the grid's CRS.
    """
    import geopandas as gpd

    changes = gpd.read_file(Path(folder) / "detections.gpkg", layer="detections", engine="pyogrio")
    ids = ((run.get("review") or {}).get("published") or {}).get("change_ids")
    if ids is not None:
        changes = changes[changes["change_id"].isin(ids)].reset_index(drop=True)
    return changes


def load_results(folder: str | Path) -> Results:
    """Open a results folder (``detect-changes --out``) for figures, without its input images.

    Raises
    ------
    InputError
        The folder does not exist, is not a changedetect results folder (no
        ``run.json`` of changedetect), holds no change table, or has no
        evidence store (written by a version before it, or with
        ``--no-evidence``).
    """
    import geopandas as gpd

    folder = Path(folder)
    run = read_run(folder)
    index_path = folder / "evidence" / "index.json"
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise InputError(f"{folder} has no evidence store ({index_path} is missing): it was written by "
                         f"changedetect {run.get('changedetect')} or with --no-evidence. Run detect-changes "
                         "again with this version to draw its figures.") from None
    if index.get("format") != "changedetect-evidence" or int(index.get("version", 0)) > FORMAT_VERSION:
        raise InputError(f"{index_path} is evidence format {index.get('version')!r}, this version of "
                         f"changedetect reads format {FORMAT_VERSION}; upgrade changedetect.")
    if (folder / "changes.gpkg").is_file():
        changes = gpd.read_file(folder / "changes.gpkg", layer="changes", engine="pyogrio")
    elif (folder / "changes.geojson").is_file():
        changes = gpd.read_file(folder / "changes.geojson", engine="pyogrio")
        from rasterio.crs import CRS

        changes = changes.to_crs(CRS.from_user_input(index["grid"]["crs"]).to_wkt())
    elif (folder / "detections.gpkg").is_file():
        changes = published_detections(folder, run)
    else:
        raise InputError(f"{folder} holds no change table (changes.gpkg, changes.geojson or "
                         "detections.gpkg); run detect-changes again with this version.")
    changes = _iso_dates(changes)
    return Results(folder, changes, run, index)
