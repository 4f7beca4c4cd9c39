"""``detect-changes``: the command line. Parses, calls the pipeline, prints, exits.

Exit codes: 0 success, 1 a processing error, 2 bad usage or bad input. An
expected error prints one message that says how to fix it, never a traceback
(``-v`` adds the traceback for bug reports).
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from pathlib import Path
from typing import Sequence

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    from .config import FORMATS

    p = argparse.ArgumentParser(
        prog="detect-changes",
        description="Find and date new construction in a time series of satellite images of one "
                    "site. Writes changes.gpkg / changes.geojson (one polygon per change, with "
                    "last_absent and first_present dates) and run.json (inputs with SHA-256, "
                    "parameters, versions, registration per scene).",
        epilog="Example: detect-changes sample_data/*.tif --out results/")
    p.add_argument("images", nargs="*", metavar="IMAGE",
                   help="GeoTIFFs of the same site (two or more); may be left out with --manifest")
    p.add_argument("--manifest", metavar="CSV",
                   help="CSV with path,date columns, paths relative to its folder (overrides dates in "
                        "names and tags); alone, it also says which images to use")
    p.add_argument("--reference", default="first", metavar="DATE|first|last|PATH",
                   help="image whose grid is used and to which others are registered (default: first)")
    p.add_argument("--coregister", choices=("local", "global", "none"), default="local",
                   help="co-registration: tie points + the best of translation/affine/2nd-order "
                        "polynomial (local, default), one subpixel shift (global), none")
    p.add_argument("--save-registered", metavar="DIR",
                   help="also write every scene co-registered onto the reference grid to DIR")
    p.add_argument("--on-registration-failure", choices=("keep", "raise", "skip"), default="keep",
                   help="a scene that cannot be co-registered: keep it on its georeferencing, flagged, "
                        "with a lower confidence for its changes (default); raise (stop); skip (leave "
                        "it out)")
    p.add_argument("--min-magnitude", type=float, default=14.0, metavar="SIGMA",
                   help="smallest change of a pixel, in noise standard deviations (default: 14)")
    p.add_argument("--alpha", type=float, default=0.01,
                   help="significance of a step against seasonal variation (default: 0.01)")
    p.add_argument("--persistence", type=int, default=2,
                   help="usable acquisitions a change must stay visible in (default: 2)")
    p.add_argument("--min-area", type=float, default=30.0, metavar="M2",
                   help="minimum mapping unit in square metres (default: 30)")
    p.add_argument("--max-elongation", type=float, default=6.0, metavar="RATIO",
                   help="drop changes longer than RATIO times their width (shadow slivers; default: 6)")
    p.add_argument("--buildings", metavar="FILE",
                   help="footprints of known buildings (GeoPackage, GeoJSON, Shapefile; any CRS, e.g. "
                        "an OpenStreetMap extract): adds per-building status and change dates "
                        "(buildings layer, buildings.geojson, building_dates.csv)")
    p.add_argument("--building-id-column", metavar="NAME",
                   help="column of --buildings holding the ids (default: building_id, id, Id, ID, "
                        "osm_id, osm_way_id or fid, else numbered in file order)")
    p.add_argument("--bands", metavar="ROLES",
                   help="role of every band, comma-separated, for files that declare none: blue, "
                        "green, red, nir, alpha (validity, never spectral), - (ignore), e.g. "
                        "red,green,blue,nir (default: from band descriptions or colour "
                        "interpretation; 4 undeclared bands are read as blue,green,red,nir)")
    p.add_argument("--pixel-size", type=float, metavar="METRES",
                   help="for images with no georeferencing (PNG/JPEG/TIFF exports): their pixel size; "
                        "they are put on a local grid and co-registration aligns them")
    p.add_argument("--out", default="results", metavar="DIR",
                   help="output folder (default: results); it must be empty or absent unless --overwrite")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier run in --out as a whole (no file of it is kept)")
    p.add_argument("--format", action="append", choices=FORMATS, dest="formats",
                   help="output format, repeatable (default: gpkg and geojson)")
    p.add_argument("--block", type=int, default=512, help="block size in pixels (memory use)")
    p.add_argument("-q", "--quiet", action="store_true", help="print only errors")
    p.add_argument("-v", "--verbose", action="count", default=0, help="log more (twice: debug)")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return p


def _text(value, spec: str = "") -> str:
    """``format(value, spec)``, or ``-`` for a missing value (None, NaN, NA)."""
    import pandas as pd

    try:
        missing = value is None or bool(pd.isna(value))
    except (TypeError, ValueError):           # an array-like: not a missing scalar
        missing = False
    return "-" if missing else format(value, spec)


class _Progress:
    """One updating line on a terminal, or nothing when quiet."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.tty = sys.stderr.isatty()
        self.last = None

    def __call__(self, stage: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        if self.tty:
            end = "\n" if done == total else ""
            count = f"{done}/{total}" if total else f"{done}"
            print(f"\r{stage:>16}: {count}", end=end, file=sys.stderr, flush=True)
        elif done == total and stage != self.last:
            print(f"{stage:>16}: {total}/{total} done", file=sys.stderr)
            self.last = stage


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``detect-changes``; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.images and not args.manifest:
        parser.error("give the IMAGE files, or a --manifest CSV that lists them")
    level = (logging.ERROR if args.quiet else logging.WARNING if args.verbose == 0
             else logging.INFO if args.verbose == 1 else logging.DEBUG)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    from .errors import ChangeDetectError, ChangeDetectWarning, InputError
    from .pipeline import Config, detect_changes

    warnings.simplefilter("ignore" if args.quiet else "default", ChangeDetectWarning)
    if args.pixel_size is not None:           # the user knows; GDAL's own warning adds nothing
        from rasterio.errors import NotGeoreferencedWarning

        warnings.simplefilter("ignore", NotGeoreferencedWarning)
    warnings.formatwarning = lambda msg, cat, *a, **k: f"warning: {msg}\n"
    try:
        reference = int(args.reference) if args.reference.lstrip("-").isdigit() else args.reference
        config = Config(reference=reference, coregister=args.coregister,
                        on_registration_failure=args.on_registration_failure,
                        min_magnitude=args.min_magnitude, alpha=args.alpha, persistence=args.persistence,
                        min_area_m2=args.min_area, max_elongation=args.max_elongation,
                        block=args.block, save_registered=args.save_registered,
                        buildings=args.buildings, building_id_column=args.building_id_column,
                        overwrite=args.overwrite, pixel_size=args.pixel_size,
                        bands=tuple(b.strip() for b in args.bands.split(",")) if args.bands else None,
                        formats=tuple(args.formats or ("gpkg", "geojson")))
        result = detect_changes(args.images, args.out, config=config, manifest=args.manifest,
                                progress=_Progress(not args.quiet))
    except ChangeDetectError as exc:
        if args.verbose:
            logging.exception("details")
        print(f"detect-changes: error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, InputError) else 1
    except KeyboardInterrupt:
        print("detect-changes: interrupted; nothing was written.", file=sys.stderr)
        return 130
    if not args.quiet:
        ch = result.changes
        inputs = result.run["inputs"]
        print(f"{len(inputs)} acquisitions (date, where it came from):")
        for s in inputs:
            day = s["date"][:7] + " (year and month only)" if s.get("date_precision") == "month" else s["date"]
            print(f"  {day:<32} {s['date_source']:<28} {s['name']}")
        ref = next((s for s in inputs if s["name"] == result.run["reference"]), inputs[0])
        alpha = f"; band {ref['alpha_band']} is alpha (validity)" if ref.get("alpha_band") else ""
        print(f"bands: {', '.join(ref['band_roles'])} ({ref['band_roles_source']}){alpha}")
        if result.run["grid"].get("note"):
            print(f"grid: {result.run['grid']['note']}")
        print(f"{len(ch)} changes over {len(inputs)} acquisitions "
              f"({inputs[0]['date']} .. {inputs[-1]['date']})")
        for _, row in ch.iterrows():
            print(f"  {row.change_id}  {row.kind:<10} {row.last_absent} .. {row.first_present}  "
                  f"{row.area_m2:8.1f} m2  confidence {row.confidence:.2f}")
        if result.buildings is not None:
            counts = result.buildings["status"].value_counts()
            print(f"{len(result.buildings)} given footprints: "
                  + ", ".join(f"{int(counts.get(k, 0))} {k.replace('_', ' ')}"
                              for k in ("changed", "demolished", "unchanged", "not_observable")))
            for _, row in result.buildings[result.buildings["status"].isin(("changed", "demolished"))].iterrows():
                # a footprint too small for an interior has no kind (and may lack other fields)
                print(f"  {row.building_id}  {_text(row.kind):<10} {_text(row.last_absent)} .. "
                      f"{_text(row.first_present)}  {_text(row.changed_fraction, '5.1%')} changed  "
                      f"confidence {_text(row.confidence, '.2f')}")
        regs = [r for r in result.registrations if r.model not in ("identity",)]
        if regs:
            worst = max((r.rmse_px for r in regs if r.rmse_px == r.rmse_px), default=float("nan"))
            kept = sum(r.flagged for r in regs)
            note = (f" ({kept} kept on its georeferencing alone: see the warnings)" if kept == 1 else
                    f" ({kept} kept on their georeferencing alone: see the warnings)" if kept else "")
            print(f"co-registration: {len(regs)} scenes{note}, worst tie-point residual {worst:.3f} px")
        for name, path in result.outputs.items():
            print(f"wrote {Path(path)}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
