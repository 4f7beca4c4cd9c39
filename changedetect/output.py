"""What a run leaves behind: the output folder, swapped in whole, the per-pixel rasters, the run record.

* :func:`check_out_dir` refuses, before any work, an output folder that holds
  files (unless ``overwrite`` and it holds an earlier run);
* :func:`write_outputs` writes every file into a staging folder beside the
  output folder and swaps it in only when all of them are written: a run that
  fails leaves nothing behind and the earlier run as it was; besides the
  published ``changes.*`` it always writes ``detections.gpkg`` (layer
  ``detections``), every detection as found, which the review re-cuts from;
* :func:`write_pixel_products` writes ``first_change.tif`` and
  ``change_count.tif`` from the per-pixel stage's rasters;
* :func:`run_record` is ``run.json``: inputs with their SHA-256, dates and
  where the dates came from, the grid, parameters, versions, the CPU's code
  paths, registration per scene, statistics and timings.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from . import __version__
from .coregister import save_registered
from .detector import hysteresis
from .errors import OutputError, OutputExistsError
from .evidence import balloon_images, write_evidence
from .io import raster_profile, sha256_file, write_text
from .provenance import cpu_dispatch, versions
from .stack import Stack
from .vector import KIND_COLOURS, export, export_buildings

__all__ = ["check_out_dir", "write_outputs", "write_pixel_products", "run_record"]


_STAGING = ".changedetect-staging-"


def _is_earlier_run(folder: Path) -> bool:
    try:
        return "changedetect" in json.loads((folder / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, TypeError):
        return False


def check_out_dir(out_dir: Path, overwrite: bool) -> None:
    """Refuse, before any work, an output folder that holds an earlier run (unless ``overwrite``)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"--out {out_dir} is a file, not a folder. Choose a folder.")
    entries = sorted(p.name for p in out_dir.iterdir()) if out_dir.is_dir() else []
    if not entries:
        return
    shown = ", ".join(entries[:4]) + (", ..." if len(entries) > 4 else "")
    if not overwrite:
        raise OutputExistsError(
            f"The output folder {out_dir} is not empty ({len(entries)} entries: {shown}). Choose "
            "another --out, or add --overwrite to replace the earlier run there as a whole.")
    if not _is_earlier_run(out_dir):
        raise OutputExistsError(
            f"The output folder {out_dir} holds files ({shown}) but no run.json of changedetect: "
            "--overwrite only replaces an earlier run, it does not empty other folders. Choose "
            "another --out.")
    try:
        decisions = (json.loads((out_dir / "run.json").read_text(encoding="utf-8")).get("review")
                     or {}).get("decisions", [])
    except (OSError, ValueError, AttributeError):
        decisions = []
    if decisions:
        # an analyst's review is work no re-run can give back
        raise OutputExistsError(
            f"The output folder {out_dir} holds a reviewed run ({len(decisions)} review decisions in "
            "run.json): --overwrite would lose them. Choose another --out, or move the reviewed "
            "folder away first.")


def write_outputs(out_dir: Path, changes, run: dict, config, stack, regs, progress, *,
                   buildings=(None, None, None), rasters: dict | None = None,
                   evidence: dict | None = None) -> dict:
    """Write the whole set into a staging folder beside ``out_dir``, then swap it in.

    ``out_dir`` is either absent, empty, or (with ``overwrite``) an earlier run,
    which is moved aside and deleted only once the new set is in place: no
    file of it survives, and a failure leaves it as it was. ``evidence`` (change
    id to the dates its dating used), when given, writes the evidence store
    ``evidence/`` (:func:`changedetect.evidence.write_evidence`) from the
    co-registered ``stack``; run.json lists the SHA-256 of its ``index.json``,
    which lists those of the other evidence files.
    """
    check_out_dir(out_dir, config.overwrite)        # again: the folder may have changed meanwhile
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}{_STAGING}", dir=out_dir.parent))
    except OSError as exc:
        raise OutputError(f"Cannot create the output folder {out_dir}: {exc.strerror}. "
                          "Choose another --out.") from None
    try:
        images = None
        if evidence is not None:
            t0 = time.perf_counter()
            skipped = [bool(r.flagged) and config.on_registration_failure == "skip" for r in regs]
            stored = write_evidence(staging / "evidence", stack, regs, changes, evidence, skipped=skipped)
            if "kmz" in config.formats:       # the before | after chips as the KMZ's balloon images
                images = balloon_images(staging / "evidence", changes, colours=KIND_COLOURS)
            evidence_time = round(time.perf_counter() - t0, 3)
        written = export(changes, staging, formats=config.formats, dates=stack.dates, images=images)
        # every detection as the run found it, whatever the formats: what `detect-changes review`
        # re-cuts from, never rewritten by it (the published changes.* become the reviewed cut)
        written["detections.gpkg"] = export(changes, staging, formats=("gpkg",), stem="detections")["gpkg"]
        if buildings[0] is not None:
            written.update(export_buildings(*buildings, staging, formats=config.formats))
        for name, path in (rasters or {}).items():
            shutil.move(str(path), staging / name)
            written[name] = staging / name
        run["outputs"] = {p.name: sha256_file(p) for p in written.values()}
        if evidence is not None:
            for name, p in stored.items():
                run["outputs"][name] = sha256_file(p)
            run.setdefault("timings_s", {})["evidence"] = evidence_time
        registered = {}
        if config.save_registered:
            def reg_progress(done, total, name):
                if progress is not None:
                    progress("registered", done, total)
            registered = save_registered(stack, regs, staging / ".registered", block=max(config.block, 1024),
                                         progress=reg_progress)
            run["registered"] = {"folder": str(Path(config.save_registered).resolve()),
                                 "files": {name: sha256_file(p) for name, p in registered.items()}}
        write_text(staging / "run.json", json.dumps(run, indent=2, default=str) + "\n")
        if config.report:                  # from the staged folder alone, as for any results folder
            from .report import write_report

            # the page shows every output's hash but its own, so it is the same whether written
            # before its hash is added to run.json or again later from the folder (after a review)
            run["outputs"]["report.html"] = sha256_file(write_report(staging))
            write_text(staging / "run.json", json.dumps(run, indent=2, default=str) + "\n")
        final = {}
        nested = None
        if registered:
            target = Path(config.save_registered)
            try:       # a folder inside out_dir moves in with the rest (else the swap would drop it)
                nested = target.resolve().relative_to(out_dir.resolve())
            except ValueError:
                nested = None
            place = staging / nested if nested is not None else target
            place.mkdir(parents=True, exist_ok=True)
            for name, p in registered.items():
                os.replace(p, place / name)
                final[name] = (out_dir / nested if nested is not None else target) / name
        shutil.rmtree(staging / ".registered", ignore_errors=True)
        names = sorted(p.name for p in staging.iterdir()
                       if nested is None or not nested.parts or p.name != nested.parts[0])
        old = None
        try:
            if out_dir.is_dir() and any(out_dir.iterdir()):
                old = out_dir.parent / f".{out_dir.name}.replaced-{os.getpid()}"
                shutil.rmtree(old, ignore_errors=True)
                os.replace(out_dir, old)
            elif out_dir.is_dir():
                out_dir.rmdir()
            os.replace(staging, out_dir)
        except OSError as exc:
            if old is not None and not out_dir.exists():
                os.replace(old, out_dir)             # put the earlier run back
            raise OutputError(f"Cannot move the results into {out_dir}: {exc.strerror}. "
                              "Choose another --out.") from None
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        final.update({name: out_dir / name for name in names})
        return final
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def write_pixel_products(stack: Stack, step_path: Path, count_path: Path, folder: Path, *,
                          block: int = 1024, halo: int = 128) -> dict[str, Path]:
    """``first_change.tif`` and ``change_count.tif`` from the per-pixel rasters, block by block.

    The pixels are those of the change map after hysteresis (weak pixels kept where
    they join strong ones of the same date), read with a halo so that blocks agree.
    """
    import rasterio

    epoch = _dt.date(1970, 1, 1)
    days = np.array([(d - epoch).days for d in stack.dates], dtype=np.int32)
    tags = {"DATES": ",".join(d.isoformat() for d in stack.dates),
            "UNITS": "days since 1970-01-01 of the first acquisition showing the change; -1: none"}
    out_first, out_count = folder / "first_change.tif", folder / "change_count.tif"
    grid = dict(crs=stack.crs, transform=stack.transform)
    with rasterio.open(step_path) as step_ds, rasterio.open(count_path) as count_ds, \
            rasterio.open(out_first, "w", **raster_profile(stack.width, stack.height, 1, "int32", nodata=-1,
                                                           **grid)) as f_dst, \
            rasterio.open(out_count, "w", **raster_profile(stack.width, stack.height, 1, "uint8",
                                                           **grid)) as c_dst:
        f_dst.update_tags(**tags)
        f_dst.set_band_description(1, "first_change_days_since_1970")
        c_dst.update_tags(DATES=tags["DATES"], UNITS="lasting changes in the pixel's series")
        c_dst.set_band_description(1, "change_count")
        for inner, outer in stack.windows(block=block, halo=halo):
            codes, strength = step_ds.read(window=outer)
            keep, _ = hysteresis(codes, strength)
            sl = (slice(int(inner.row_off - outer.row_off), int(inner.row_off - outer.row_off + inner.height)),
                  slice(int(inner.col_off - outer.col_off), int(inner.col_off - outer.col_off + inner.width)))
            keep, codes = keep[sl], codes[sl]
            first = np.where(keep, days[np.clip(codes, 0, len(days) - 1)], -1).astype(np.int32)
            f_dst.write(first, 1, window=inner)
            c_dst.write(np.where(keep, count_ds.read(1, window=inner), 0).astype(np.uint8), 1,
                        window=inner)
    return {"first_change.tif": out_first, "change_count.tif": out_count}


def run_record(stack: Stack, regs, *, requested, config, manifest, warnings, unexamined, stats: dict,
               changes, buildings=None, timings: dict | None = None) -> dict:
    """The run record (``run.json``): everything needed to reproduce and defend the result.

    ``requested`` is the configuration as given, ``config`` the one that ran
    (e.g. persistence lowered for a short series); ``stats`` the per-run
    statistics (thresholds, noise, normalisation); ``timings`` is filled in by
    the caller as the stages run.
    """
    from .io import is_unreferenced

    run = {
        "changedetect": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "inputs": [{"name": s.name, "path": str(Path(s.path).resolve()), "sha256": s.sha256,
                    "date": s.date.isoformat(), "date_source": s.date_source,
                    "date_precision": s.date_precision,
                    "crs": s.crs.to_string(), "transform": list(s.transform)[:6],
                    "width": s.width, "height": s.height, "bands": s.count, "dtype": s.dtype,
                    "nodata": s.nodata, "bands_read": list(s.bands),
                    "band_roles": list(s.band_roles), "alpha_band": s.alpha,
                    "mask_band": s.has_mask, "band_roles_source": s.band_source,
                    "metadata": dict(getattr(s, "metadata", ()))}
                   for s in stack.scenes],
        "manifest": None if manifest is None else {"path": str(Path(manifest).resolve()),
                                                   "sha256": sha256_file(manifest)},
        "reference": stack.scenes[stack.reference].name,
        "baseline": stack.scenes[0].name,
        "grid": {"crs": stack.crs.to_string(), "transform": list(stack.transform)[:6],
                 "note": stack.grid_note or None, "georeferenced": not is_unreferenced(stack.crs),
                 "width": stack.width, "height": stack.height},
        "parameters": dataclasses.asdict(requested),
        "effective_parameters": dataclasses.asdict(config),
        "warnings": list(warnings),
        "unexamined_intervals": list(unexamined),
        "versions": versions(),
        "cpu": cpu_dispatch(),
        "registration": {r.scene: r.to_dict() for r in regs},
        **stats,
        "n_changes": int(len(changes)),
        "changes_by_kind": {k: int(v) for k, v in changes["kind"].value_counts().sort_index().items()},
        "timings_s": timings if timings is not None else {},
    }
    if buildings is not None:
        run["buildings"] = {
            "path": str(Path(config.buildings).resolve()), "sha256": sha256_file(config.buildings),
            "n": int(len(buildings)),
            "by_status": {k: int(v) for k, v in buildings["status"].value_counts().sort_index().items()},
            "changes_on_footprints": int(changes["building_id"].notna().sum())}
    return run
