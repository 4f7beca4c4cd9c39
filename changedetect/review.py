"""The analyst's review of a run: decisions per change, a re-cut, the exports rewritten — no re-run.

A results folder written by :func:`~changedetect.pipeline.detect_changes` holds
``detections.gpkg`` (layer ``detections``): every change the run found, as it
found it. :func:`review` never changes that layer. It records the analyst's
decisions (``accepted``, ``rejected``, ``unsure``, or back to ``unreviewed``)
with a note, who and when, sets the cut (a confidence and an area threshold,
the kinds), and rewrites the published ``changes.*`` files from the detections:

* the published files (``changes.gpkg`` layer ``changes``, ``changes.geojson``,
  ``changes.kml``, in the formats the run wrote) are the current cut, with two
  more columns, ``review_status`` and ``review_note``. Rejected changes are left
  out of them (``keep_rejected=True`` keeps them, marked ``rejected``). An
  accepted change is one the analyst checked on the imagery: the confidence and
  area thresholds do not drop it (the kinds do). They hold no reviewer name and
  no time, so the same decisions and cut give the same bytes;
* ``detections.gpkg`` gains layer ``review`` (every detection with its status,
  note, reviewer, time of the decision and whether it is published) and layer
  ``review_log`` (every decision in order);
* ``run.json`` gains a ``review`` section: the current cut, every decision and
  every cut in the order they were made (appended to, never rewritten), what is
  published; its ``outputs`` hashes follow the rewritten files.

Only these files are touched, and all at once: the new folder is staged beside
the results folder (unchanged files hard-linked, else copied) and swapped in
whole, so a failure leaves the folder as it was. A re-cut reads one GeoPackage
and writes the exports: registration and the per-pixel stages are not re-run,
and a looser cut brings back what a stricter one left out.

Examples
--------
>>> import changedetect as cd
>>> state = cd.review("results", accept=["chg-0003"], reject=["chg-0007"],
...                   note="checked on the 2016 image", min_confidence=0.6)  # doctest: +SKIP
>>> state.published[["change_id", "review_status", "confidence"]]  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import getpass
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from . import _callable_module
from .config import FORMATS
from .errors import ChangeDetectError, InputError, OutputError
from .evidence import balloon_images, read_run
from .io import sha256_file, write_text
from .vector import COLUMNS, KIND_COLOURS, export, to_geodataframe

__all__ = ["STATUSES", "KINDS", "Cut", "Decision", "ReviewState", "review", "read_review"]

#: A change's review status; ``unreviewed`` until a decision is made.
STATUSES = ("accepted", "rejected", "unsure", "unreviewed")
#: The kinds of change a cut may keep.
KINDS = ("new", "demolished", "modified")
#: The columns the published files gain.
REVIEW_COLUMNS = ("review_status", "review_note")

_DETECTIONS = "detections.gpkg"
_CHANGE_FILES = {fmt: f"changes.{fmt}" for fmt in FORMATS}


@dataclass(frozen=True)
class Cut:
    """Which detections are published.

    Attributes
    ----------
    min_confidence : float or None
        Keep changes of at least this confidence (None: every confidence).
    min_area_m2 : float or None
        Keep changes of at least this area (None: every area).
    kinds : tuple of str
        Keep changes of these kinds.
    keep_rejected : bool
        Publish rejected changes too (marked ``rejected``); by default they are left out.

    An accepted change is published whatever its confidence and area, if its kind is kept.
    """

    min_confidence: float | None = None
    min_area_m2: float | None = None
    kinds: tuple[str, ...] = KINDS
    keep_rejected: bool = False

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "kinds": list(self.kinds)}


@dataclass(frozen=True)
class Decision:
    """One decision of an analyst on one change: status, note, who and when (UTC, ISO 8601)."""

    change_id: str
    status: str
    note: str | None
    reviewer: str
    time: str


@dataclass(frozen=True)
class ReviewState:
    """A results folder's review.

    Attributes
    ----------
    folder : Path
        The results folder (absolute after a rewrite).
    changes : geopandas.GeoDataFrame
        Every detection (the run's schema) with ``review_status``, ``review_note``,
        ``reviewer``, ``reviewed_at`` (of the latest decision) and ``published``.
    cut : Cut
        The current cut.
    formats : tuple of str
        The formats of the published files.
    decisions : tuple of Decision
        Every decision, in the order they were made.
    outputs : dict
        File name to path of what this call wrote (empty when nothing was written).
    """

    folder: Path
    changes: object
    cut: Cut
    formats: tuple[str, ...]
    decisions: tuple[Decision, ...]
    outputs: dict

    @property
    def published(self):
        """The rows of the published files, with their columns."""
        rows = self.changes[self.changes["published"]]
        return rows[[*COLUMNS, *REVIEW_COLUMNS, "geometry"]].reset_index(drop=True)


def _utcnow() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _load_run(folder: Path) -> dict:
    run = read_run(folder)
    if not (folder / _DETECTIONS).is_file():
        raise InputError(f"{folder} has no {_DETECTIONS} (every detection of the run, which the review "
                         "re-cuts from): it was written by an earlier changedetect. Run detect-changes "
                         "again with --out there and --overwrite.")
    return run


def _iso_date(value):
    """A date read back from a GeoPackage (string, date, timestamp or null) as ``YYYY-MM-DD`` or None."""
    import pandas as pd

    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    if isinstance(value, str):
        return value[:10]
    return pd.Timestamp(value).date().isoformat()


def _read_detections(folder: Path):
    """Layer ``detections`` as the run's change table (same columns and types as the run gave)."""
    import geopandas as gpd
    import pandas as pd

    try:
        gdf = gpd.read_file(folder / _DETECTIONS, layer="detections", engine="pyogrio")
    except Exception as exc:           # pyogrio's errors for a damaged file or a missing layer
        raise InputError(f"{folder / _DETECTIONS} cannot be read as the run's detections ({exc}). Run "
                         "detect-changes again with --out there and --overwrite.") from None
    records = []
    for row in gdf.to_dict("records"):
        for c in ("last_absent", "first_present"):
            row[c] = _iso_date(row.get(c))
        b = row.get("building_id")
        row["building_id"] = None if b is None or (not isinstance(b, str) and pd.isna(b)) else str(b)
        records.append(row)
    if not records:
        return gpd.GeoDataFrame({c: [] for c in COLUMNS}, geometry=[], crs=gdf.crs)
    return to_geodataframe(records, crs=gdf.crs)


def _decisions(run: dict) -> list[Decision]:
    return [Decision(**d) for d in (run.get("review") or {}).get("decisions", [])]


def _cut(run: dict) -> Cut:
    c = (run.get("review") or {}).get("cut")
    return Cut() if c is None else Cut(**{**c, "kinds": tuple(c["kinds"])})


def _formats(run: dict) -> tuple[str, ...]:
    review = run.get("review") or {}
    if "formats" in review:
        return tuple(review["formats"])
    params = run.get("effective_parameters") or run.get("parameters") or {}
    return tuple(params.get("formats") or ("gpkg", "geojson"))


def _state(folder: Path, detections, cut: Cut, formats, decisions: Sequence[Decision], outputs: dict):
    """Every detection with its latest decision and whether the cut publishes it."""
    import numpy as np
    import pandas as pd

    latest = {d.change_id: d for d in decisions}
    ids = list(detections["change_id"])
    status = np.array([latest[i].status if i in latest else "unreviewed" for i in ids], dtype=object)
    gdf = detections.copy()
    gdf["review_status"] = pd.Series(list(status), index=gdf.index, dtype=object)
    for column, field in (("review_note", "note"), ("reviewer", "reviewer"), ("reviewed_at", "time")):
        # object, so that a missing value stays None (a string column would make it NaN)
        gdf[column] = pd.Series([getattr(latest[i], field) if i in latest else None for i in ids],
                                index=gdf.index, dtype=object)
    keep = gdf["kind"].isin(cut.kinds).to_numpy()
    passes = np.ones(len(gdf), dtype=bool)
    if cut.min_confidence is not None:
        passes &= gdf["confidence"].to_numpy(dtype=float) >= cut.min_confidence
    if cut.min_area_m2 is not None:
        passes &= gdf["area_m2"].to_numpy(dtype=float) >= cut.min_area_m2
    accepted = status == "accepted"
    rejected = status == "rejected"
    gdf["published"] = keep & (passes | accepted) & (~rejected | cut.keep_rejected)
    return ReviewState(folder=folder, changes=gdf, cut=cut, formats=tuple(formats),
                       decisions=tuple(decisions), outputs=dict(outputs))


def read_review(results_dir: str | os.PathLike) -> ReviewState:
    """The review of a results folder as it stands (before any review: everything unreviewed, no cut).

    Raises
    ------
    InputError
        ``results_dir`` is not the output folder of a detect-changes run.
    """
    folder = Path(results_dir)
    run = _load_run(folder)
    return _state(folder, _read_detections(folder), _cut(run), _formats(run), _decisions(run), {})


def _check_ids(groups: dict[str, list[str]], valid: Sequence[str], folder: Path) -> None:
    seen: dict[str, str] = {}
    for status, ids in groups.items():
        for i in ids:
            if i in seen and seen[i] != status:
                raise InputError(f"{i} is given as both {seen[i]} and {status}; give each change one status.")
            seen[i] = status
    unknown = sorted(set(seen) - set(valid))
    if unknown:
        shown = (", ".join(valid) if len(valid) <= 12 else
                 f"{', '.join(valid[:5])}, ..., {', '.join(valid[-3:])}")
        raise InputError(f"{folder} has no change {', '.join(unknown)}. Its {len(valid)} changes are "
                         f"{shown}." if valid else f"{folder} has no change {', '.join(unknown)}: the "
                         "run found no change.")


def _check_cut(min_confidence, min_area, kinds, formats) -> None:
    if min_confidence is not None and not 0 <= min_confidence <= 1:
        raise InputError(f"min_confidence={min_confidence} is out of range: give a confidence between 0 "
                         "and 1.")
    if min_area is not None and not min_area >= 0:
        raise InputError(f"min_area={min_area} is out of range: give an area of at least 0 m2.")
    if kinds is not None:
        bad = [k for k in kinds if k not in KINDS]
        if bad or not kinds:
            raise InputError(f"kinds={tuple(kinds)} is not valid; choose one or more of {', '.join(KINDS)}.")
    if formats is not None:
        bad = [f for f in formats if f not in FORMATS]
        if bad or not formats:
            raise InputError(f"formats={tuple(formats)} is not valid; choose one or more of "
                             f"{', '.join(FORMATS)}.")


def review(results_dir: str | os.PathLike, *, accept: Iterable[str] = (), reject: Iterable[str] = (),
           unsure: Iterable[str] = (), reset: Iterable[str] = (), note: str | None = None,
           reviewer: str | None = None, min_confidence: float | None = None, min_area: float | None = None,
           kinds: Sequence[str] | None = None, keep_rejected: bool | None = None,
           formats: Sequence[str] | None = None) -> ReviewState:
    """Record decisions on changes of a results folder, re-cut it and rewrite its published files.

    Registration and the per-pixel stages are not re-run: the published files
    are cut again from ``detections.gpkg``, every detection of the run.

    Parameters
    ----------
    results_dir : path-like
        The output folder of a detect-changes run.
    accept, reject, unsure : iterable of str
        Change ids (``chg-0007``) to mark so.
    reset : iterable of str
        Change ids to set back to ``unreviewed`` (a decision too, so it is in the log).
    note : str, optional
        The note of these decisions (``review_note`` in the published files).
    reviewer : str, optional
        Who decides; by default the login name.
    min_confidence, min_area : float, optional
        New thresholds of the cut (``min_area`` in m2); None keeps the current
        ones, 0 publishes every confidence or area again.
    kinds : sequence of str, optional
        The kinds to publish (``new``, ``demolished``, ``modified``); None keeps the current ones.
    keep_rejected : bool, optional
        Publish rejected changes (marked ``rejected``); None keeps the current choice (False at first).
    formats : sequence of str, optional
        The formats of the published files; None keeps those the run wrote.
        Files of formats no longer asked for are removed.

    Returns
    -------
    ReviewState
        The new state; ``outputs`` names the files written. When there is
        nothing to record or change, nothing is written.

    Raises
    ------
    InputError
        Not a results folder, an unknown change id (the message lists the valid
        ones), a change given two statuses, a threshold out of range.
    OutputError
        The files cannot be written; the folder is left as it was.
    """
    folder = Path(results_dir)
    groups = {s: [ids] if isinstance(ids, str) else list(ids)     # one id alone, or several
              for s, ids in (("accepted", accept), ("rejected", reject), ("unsure", unsure),
                             ("unreviewed", reset))}
    _check_cut(min_confidence, min_area, kinds, formats)
    if note is not None and not any(groups.values()):
        raise InputError("note is the note of decisions: give the changes it is about (accept, reject, "
                         "unsure or reset).")
    run = _load_run(folder)
    detections = _read_detections(folder)
    _check_ids(groups, list(detections["change_id"]), folder)
    old_cut, old_formats = _cut(run), _formats(run)
    cut = Cut(min_confidence=old_cut.min_confidence if min_confidence is None else float(min_confidence),
              min_area_m2=old_cut.min_area_m2 if min_area is None else float(min_area),
              kinds=old_cut.kinds if kinds is None else tuple(k for k in KINDS if k in kinds),
              keep_rejected=old_cut.keep_rejected if keep_rejected is None else bool(keep_rejected))
    new_formats = old_formats if formats is None else tuple(dict.fromkeys(formats))
    decided = [(i, s) for s, ids in groups.items() for i in dict.fromkeys(ids)]
    if not decided and cut == old_cut and new_formats == old_formats:          # nothing to record
        return _state(folder, detections, cut, new_formats, _decisions(run), {})
    who = reviewer or _login()
    now = _utcnow()
    decisions = _decisions(run) + [Decision(i, s, note, who, now) for i, s in sorted(decided)]
    state = _state(folder, detections, cut, new_formats, decisions, {})
    section = dict(run.get("review") or {})
    section["cut"] = cut.to_dict()
    section["formats"] = list(new_formats)
    section["decisions"] = [dataclasses.asdict(d) for d in decisions]
    cuts = list(section.get("cuts", []))
    if cut != old_cut or new_formats != old_formats or not cuts:
        cuts.append({"time": now, "reviewer": who, **cut.to_dict(), "formats": list(new_formats)})
    section["cuts"] = cuts
    published = state.published
    section["published"] = {
        "n": int(len(published)),
        "by_status": {k: int(v) for k, v in published["review_status"].value_counts().sort_index().items()},
        "change_ids": list(published["change_id"])}
    run = {**run, "review": section}
    absolute = folder.resolve()              # before the swap: a shell may be in the folder
    written = _rewrite(absolute, state, run, old_formats)
    return dataclasses.replace(state, folder=absolute, outputs=written)


def _login() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError, ImportError):
        return "unknown"


def _write_files(staging: Path, folder: Path, state: ReviewState, run: dict) -> dict[str, Path]:
    """The published files, detections.gpkg with the review layers, and the report, into ``staging``."""
    import pandas as pd
    import pyogrio

    written = {}
    published = state.published
    images = None
    if "kmz" in state.formats:              # the KMZ's balloons keep the run's before | after chips
        images = balloon_images(folder / "evidence", published, colours=KIND_COLOURS)
    dates = [i["date"] for i in run.get("inputs", []) if i.get("date")]
    for fmt, path in export(published, staging, formats=state.formats, dates=dates or None,
                            images=images).items():
        written[path.name] = path
    if "gpkg" in state.formats and (folder / "changes.gpkg").is_file():
        # the other layers of changes.gpkg (given footprints) stay as the run wrote them
        for name, _ in pyogrio.list_layers(folder / "changes.gpkg"):
            if name != "changes":
                table = pyogrio.read_dataframe(folder / "changes.gpkg", layer=name)
                pyogrio.write_dataframe(table, staging / "changes.gpkg", layer=name, driver="GPKG")
    det = staging / _DETECTIONS
    shutil.copy2(folder / _DETECTIONS, det)
    layer = state.changes.copy()
    layer["published"] = layer["published"].astype(bool)
    pyogrio.write_dataframe(layer, det, layer="review", driver="GPKG")
    log = pd.DataFrame([dataclasses.asdict(d) for d in state.decisions],
                       columns=[f.name for f in dataclasses.fields(Decision)])
    pyogrio.write_dataframe(log.astype(object).where(log.notna(), None), det, layer="review_log",
                            driver="GPKG")
    written[_DETECTIONS] = det
    return written


def _rewrite_report(staging: Path, run: dict) -> dict[str, Path]:
    """The run's HTML report, written again for the new cut into ``staging``; nothing when it has none.

    This is the one place where the review regenerates the report (from the
    staged folder: the new cut, run.json and the evidence), so the report never
    disagrees with the published files.
    """
    if "report.html" not in (run.get("outputs") or {}):
        return {}
    from .report import write_report

    return {"report.html": write_report(staging)}


def _mirror(src: Path, dst: Path, skip: set[str]) -> None:
    """Every file of ``src`` (but the top-level names in ``skip``) into ``dst``: hard links, else copies.

    Folders keep their permissions (set once filled, so a read-only one can be filled).
    """
    made = []
    for root, dirs, files in os.walk(src):
        rel = Path(root).relative_to(src)
        if rel == Path("."):
            dirs[:] = [d for d in dirs if d not in skip]
            files = [f for f in files if f not in skip]
        (dst / rel).mkdir(parents=True, exist_ok=True)
        made.append((Path(root), dst / rel))
        for d in dirs:
            if (Path(root) / d).is_symlink():
                os.symlink(os.readlink(Path(root) / d), dst / rel / d)
        dirs[:] = [d for d in dirs if not (Path(root) / d).is_symlink()]
        for f in files:
            a, b = Path(root) / f, dst / rel / f
            if a.is_symlink():
                os.symlink(os.readlink(a), b)
                continue
            try:
                os.link(a, b)
            except OSError:
                shutil.copy2(a, b)
    for a, b in reversed(made):
        shutil.copystat(a, b)


def _rewrite(folder: Path, state: ReviewState, run: dict, old_formats: Sequence[str]) -> dict[str, Path]:
    """Stage the new folder beside ``folder`` and swap it in whole; a failure leaves ``folder`` as it was."""
    folder = folder.resolve()
    try:
        staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.review-", dir=folder.parent))
    except OSError as exc:
        raise OutputError(f"Cannot write beside {folder} to stage the review: {exc.strerror}. The review "
                          "writes a new folder there and swaps it in; make the parent folder "
                          "writable.") from None
    old = None
    try:
        written = _write_files(staging, folder, state, run)
        outputs = dict(run.get("outputs") or {})
        for fmt in set(old_formats) - set(state.formats):
            outputs.pop(_CHANGE_FILES[fmt], None)
        outputs.update({name: sha256_file(p) for name, p in written.items()})
        run["outputs"] = dict(sorted(outputs.items()))
        write_text(staging / "run.json", json.dumps(run, indent=2, default=str) + "\n")
        stale = {_CHANGE_FILES[f] for f in old_formats}
        _mirror(folder, staging, skip=set(written) | {"run.json", "report.html"} | stale)
        report = _rewrite_report(staging, run)
        if report:
            written.update(report)
            run["outputs"] = dict(sorted({**run["outputs"], "report.html": sha256_file(report["report.html"])}.items()))
            write_text(staging / "run.json", json.dumps(run, indent=2, default=str) + "\n")
        old = folder.parent / f".{folder.name}.reviewed-{os.getpid()}"
        shutil.rmtree(old, ignore_errors=True)
        try:
            os.replace(folder, old)
            os.replace(staging, folder)
        except OSError as exc:
            if not folder.exists() and old.exists():
                os.replace(old, folder)               # put the folder back as it was
            raise OutputError(f"Cannot move the reviewed files into {folder}: {exc.strerror}. Nothing "
                              "was changed; close programs that hold files of it open and try "
                              "again.") from None
        shutil.rmtree(old, ignore_errors=True)
        return {name: folder / name for name in sorted([*written, "run.json"])}
    except ChangeDetectError:
        raise
    except (OSError, RuntimeError) as exc:       # RuntimeError: GDAL's, through pyogrio (a full disk)
        raise OutputError(f"Cannot write the reviewed files for {folder}: {exc}. Nothing was "
                          "changed.") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# ``cd.review(...)`` keeps working after ``import changedetect.review``
_callable_module(__name__, review)
