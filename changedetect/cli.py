"""``detect-changes``: the command line. Parses, calls the pipeline, prints, exits.

Exit codes: 0 success, 1 a processing error, 2 bad usage or bad input. An
expected error prints one message that says how to fix it, never a traceback
(``-v`` adds the traceback for bug reports).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import warnings
from pathlib import Path
from typing import Sequence

__all__ = ["main", "build_parser", "config_from_args", "review_main", "build_review_parser"]


def _flag(f: dataclasses.Field) -> str:
    """The option of a Config field: its ``flag`` metadata, else ``--`` and the name with dashes."""
    return f.metadata["flag"] or "--" + f.name.replace("_", "-")


def _shown(value) -> str:
    """A Config value as ``--help`` shows it: 14.0 as 14, None as none, True as yes, a tuple as a, b."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, tuple):
        return ", ".join(map(str, value))
    return format(value, "g") if isinstance(value, float) else str(value)


def _index_or_name(text: str):
    """``--reference``: an int index (``0``, ``-1``), else the string (first, last, a date, a path)."""
    return int(text) if text.lstrip("-").isdigit() else text


def _roles(text: str):
    """``--bands``: comma-separated roles as a tuple; an empty value gives none."""
    return tuple(b.strip() for b in text.split(",")) if text else None


def _option_type(f: dataclasses.Field):
    """The ``type=`` of the option of Config field ``f``: parses and validates like Config does."""
    from .config import why_invalid

    kind = f.metadata["type"]
    parse = {"int": int, "float": float, "index or name": _index_or_name, "strings": _roles}.get(kind, str)

    def convert(text: str):
        try:
            value = parse(text)
        except ValueError:
            value = text                       # a str is never an int or a float: why_invalid says so
        problem = why_invalid(f, value)
        if problem is not None:
            raise argparse.ArgumentTypeError(f"{text!r} {problem}")
        return value

    return convert


class _Repeated(argparse.Action):
    """Like ``action="append"``, but the first use replaces the default instead of adding to it."""

    def __call__(self, parser, namespace, values, option_string=None):
        given = getattr(namespace, self.dest, None)
        items = () if given is None or given is self.default else tuple(given)
        setattr(namespace, self.dest, items + (values,))


def _add_option(group, f: dataclasses.Field) -> None:
    """Add the option of Config field ``f`` to ``group``: flag, type, default and help from the field."""
    meta = f.metadata
    notes = [str(meta["range"])] if meta["range"] is not None else []
    kwargs = dict(dest=f.name, default=f.default)
    if meta["type"] == "bool":
        kwargs["action"] = "store_true" if f.default is False else argparse.BooleanOptionalAction
    elif meta["repeat"]:
        kwargs.update(action=_Repeated, choices=meta["choices"])
    elif meta["choices"] is not None:          # argparse's check: "invalid choice: ... (choose from ...)"
        kwargs["choices"] = meta["choices"]
    else:
        kwargs.update(type=_option_type(f), metavar=meta["metavar"])
    if f.name == "detector":                   # the names installed here (plugins included)
        from .detector import available_detectors

        kwargs["choices"] = tuple(available_detectors())
        notes.insert(0, "installed: " + ", ".join(kwargs["choices"]))
    text = meta["help"] + (", repeatable" if meta["repeat"] else "")
    notes.append(f"default: {_shown(f.default)}")
    action = group.add_argument(_flag(f), **kwargs)
    action.help = f"{text} ({'; '.join(notes)})".replace("%", "%%")   # BooleanOptionalAction adds its own


def build_parser() -> argparse.ArgumentParser:
    """The ``detect-changes`` parser: one argument group per Config group, an option per Config field.

    Defaults, help texts, ranges and choices come from the :class:`~changedetect.config.Config`
    fields' metadata; an out-of-range value is a usage error (exit code 2) naming the option.
    """
    from . import __version__
    from .config import Config

    p = argparse.ArgumentParser(
        prog="detect-changes",
        description="Find and date new construction in a time series of satellite images of one "
                    "site. Writes changes.gpkg / changes.geojson (one polygon per change, with "
                    "last_absent and first_present dates) and run.json (inputs with SHA-256, "
                    "parameters, versions, registration per scene).",
        epilog="Example: detect-changes sample_data/*.tif --out results/. Then review the changes "
               "found, without running again: detect-changes review results/ --help")
    for name, members in Config.groups().items():
        group = p.add_argument_group(name)
        if name == "inputs":
            group.add_argument("images", nargs="*", metavar="IMAGE",
                               help="GeoTIFFs of the same site (two or more); may be left out with "
                                    "--manifest")
            group.add_argument("--manifest", metavar="CSV",
                               help="CSV with path,date columns, paths relative to its folder (overrides "
                                    "dates in names and tags); alone, it also says which images to use")
        elif name == "outputs":
            group.add_argument("--out", default="results", metavar="DIR",
                               help="output folder (default: results); it must be empty or absent unless "
                                    "--overwrite")
        for f in members:
            _add_option(group, f)
    p.add_argument("-q", "--quiet", action="store_true", help="print only errors")
    p.add_argument("-v", "--verbose", action="count", default=0, help="log more (twice: debug)")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return p


def config_from_args(args: argparse.Namespace):
    """The :class:`~changedetect.config.Config` of parsed ``detect-changes`` arguments.

    Every Config field has an option of the same ``dest`` whose default is the
    field's, so an empty command line gives ``Config()``.

    Raises
    ------
    InputError
        A combination Config refuses (``--detector onnx`` without ``--model``).
    """
    from .config import Config

    return Config(**{f.name: getattr(args, f.name) for f in dataclasses.fields(Config)})


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
    """Entry point of ``detect-changes``; returns the exit code.

    ``detect-changes review ...`` (``review`` first) is the review command, :func:`review_main`.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["review"]:
        return review_main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.images and not args.manifest:
        parser.error("give the IMAGE files, or a --manifest CSV that lists them")
    level = (logging.ERROR if args.quiet else logging.WARNING if args.verbose == 0
             else logging.INFO if args.verbose == 1 else logging.DEBUG)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    from .errors import ChangeDetectError, ChangeDetectWarning, InputError
    from .pipeline import detect_changes

    warnings.simplefilter("ignore" if args.quiet else "default", ChangeDetectWarning)
    if args.pixel_size is not None:           # the user knows; GDAL's own warning adds nothing
        from rasterio.errors import NotGeoreferencedWarning

        warnings.simplefilter("ignore", NotGeoreferencedWarning)
    warnings.formatwarning = lambda msg, cat, *a, **k: f"warning: {msg}\n"
    try:
        config = config_from_args(args)
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
            if result.run.get("footprint_decision"):
                from .buildings import describe_decision

                print(f"  {describe_decision(result.run['footprint_decision'])}")
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


def _ids(text: str) -> list[str]:
    """``--accept chg-0001,chg-0002``: ids separated by commas (or given one by one)."""
    return [t.strip() for t in text.split(",") if t.strip()]


def _probability(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{text} is out of range: give a confidence between 0 and 1")
    return value


def _area(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"{text} is out of range: give an area of at least 0 m2")
    return value


def _kinds(text: str) -> tuple[str, ...]:
    from .review import KINDS

    kinds = tuple(_ids(text))
    bad = [k for k in kinds if k not in KINDS]
    if bad or not kinds:
        raise argparse.ArgumentTypeError(f"{text!r} is not valid; choose one or more of {','.join(KINDS)}")
    return kinds


def build_review_parser() -> argparse.ArgumentParser:
    """The ``detect-changes review`` parser."""
    from .config import FORMATS

    p = argparse.ArgumentParser(
        prog="detect-changes review",
        description="Review the changes of a detect-changes run: mark them accepted, rejected or unsure "
                    "with a note, re-cut them (confidence, area, kinds) and rewrite the published "
                    "changes.* files, without running registration and detection again. Decisions, "
                    "who made them and when are kept in run.json and in detections.gpkg (layers "
                    "review and review_log); every detection of the run stays in detections.gpkg, so "
                    "a looser cut brings back what a stricter one left out. With no decision and no "
                    "cut, lists the changes and their status.",
        epilog="Example: detect-changes review results/ --accept chg-0003 --reject chg-0007 --note "
               "'roof seen on the 2016 image' --min-confidence 0.6. 'review' must come first; to "
               "detect changes in an image file named review, write ./review.")
    p.add_argument("results", metavar="RESULTS_DIR", help="the --out folder of a detect-changes run")
    g = p.add_argument_group("decisions (ids as listed, e.g. chg-0007; several: repeat, or separate "
                             "by commas)")
    for flag, what in (("accept", "accepted"), ("reject", "rejected"), ("unsure", "unsure"),
                       ("reset", "unreviewed again")):
        g.add_argument(f"--{flag}", metavar="ID", nargs="+", type=_ids, action="extend", default=[],
                       help=f"mark these changes {what}")
    g.add_argument("--note", metavar="TEXT", help="the note of these decisions (review_note in the exports)")
    g.add_argument("--reviewer", metavar="NAME", help="who decides (default: your login name)")
    c = p.add_argument_group("the cut (kept until changed; published: the changes that pass it, "
                             "accepted ones whatever their confidence and area, never rejected ones)")
    c.add_argument("--min-confidence", metavar="C", type=_probability,
                   help="publish changes of at least this confidence (0 to 1; 0: all)")
    c.add_argument("--min-area", metavar="M2", type=_area, help="publish changes of at least this area "
                                                                 "in m2 (0: all)")
    c.add_argument("--kinds", metavar="KINDS", type=_kinds,
                   help="publish these kinds, separated by commas (new,demolished,modified)")
    c.add_argument("--keep-rejected", action=argparse.BooleanOptionalAction, default=None,
                   help="keep rejected changes in the published files, marked rejected (default: left "
                        "out; they stay in detections.gpkg)")
    c.add_argument("--format", dest="formats", metavar="FORMAT", action="append", choices=FORMATS,
                   help=f"published formats ({', '.join(FORMATS)}; repeatable; default: those of the run)")
    p.add_argument("--list", action="store_true", help="print every change and its status (the default "
                                                       "when nothing is decided or cut)")
    p.add_argument("-q", "--quiet", action="store_true", help="print only errors")
    return p


def _review_table(state) -> None:
    print(f"{'change':<10} {'kind':<10} {'last absent .. first present':<26} {'area m2':>8} {'conf':>5}  "
          f"{'status':<10} {'published':<9} note")
    for _, row in state.changes.iterrows():
        print(f"{row.change_id:<10} {row.kind:<10} {_text(row.last_absent)} .. {_text(row.first_present)}"
              f"{'':<2} {row.area_m2:8.1f} {row.confidence:5.2f}  {row.review_status:<10} "
              f"{'yes' if row.published else 'no':<9} {_text(row.review_note)}")


def review_main(argv: Sequence[str]) -> int:
    """``detect-changes review``: returns the exit code (0, 1 a processing error, 2 bad usage or input)."""
    args = build_review_parser().parse_args(argv)
    for flag in ("accept", "reject", "unsure", "reset"):       # --accept a,b c: [[a, b], [c]]
        setattr(args, flag, [i for ids in getattr(args, flag) for i in ids])
    from .errors import ChangeDetectError, InputError
    from .review import read_review, review

    acting = any((args.accept, args.reject, args.unsure, args.reset, args.min_confidence is not None,
                  args.min_area is not None, args.kinds, args.keep_rejected is not None, args.formats,
                  args.note is not None))
    try:
        if acting:
            state = review(args.results, accept=args.accept, reject=args.reject, unsure=args.unsure,
                           reset=args.reset, note=args.note, reviewer=args.reviewer,
                           min_confidence=args.min_confidence, min_area=args.min_area, kinds=args.kinds,
                           keep_rejected=args.keep_rejected, formats=args.formats)
        else:
            state = read_review(args.results)
    except ChangeDetectError as exc:
        print(f"detect-changes review: error: {exc}", file=sys.stderr)
        if Path("review").is_file():
            print("detect-changes review: note: 'review' first is the review command; to detect changes "
                  "in the image file named review, write ./review.", file=sys.stderr)
        return 2 if isinstance(exc, InputError) else 1
    if args.quiet:
        return 0
    try:
        _review_report(state, table=args.list or not acting)
    except BrokenPipeError:                      # `| head`: the reader had enough
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def _review_report(state, *, table: bool) -> None:
    """What ``detect-changes review`` prints: the table (``--list``), the published count, the files."""
    if table:
        _review_table(state)
    ch = state.changes
    counts = ch.loc[ch["published"], "review_status"].value_counts()
    left = ch[~ch["published"]]
    cut = state.cut
    rules = [f"confidence >= {cut.min_confidence:g}" if cut.min_confidence is not None else None,
             f"area >= {cut.min_area_m2:g} m2" if cut.min_area_m2 is not None else None,
             "kinds " + ",".join(cut.kinds) if len(cut.kinds) < 3 else None,
             "rejected kept" if cut.keep_rejected else None]
    shown = ", ".join(f"{int(counts.get(s, 0))} {s}" for s in ("accepted", "unsure", "unreviewed", "rejected")
                      if counts.get(s, 0))
    print(f"{int(ch['published'].sum())} of {len(ch)} changes published" + (f" ({shown})" if shown else "")
          + f"; {len(left)} left out"
          + (f" ({int((left['review_status'] == 'rejected').sum())} rejected)" if len(left) else "")
          + f"; cut: {', '.join(r for r in rules if r) or 'none'}")
    for name, path in state.outputs.items():
        print(f"wrote {path}")
    if state.outputs:
        import os

        try:
            os.getcwd()
        except FileNotFoundError:          # the shell was in the folder, which was swapped out whole
            print(f"note: {state.folder} was replaced as a whole; this shell is still in "
                  "the old, removed folder: cd into it again.", file=sys.stderr)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
