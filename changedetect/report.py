"""The evidence report: one self-contained HTML page per results folder.

:func:`write_report` reads a results folder (``run.json``, the change table
``changes.gpkg`` or ``changes.geojson``, and the evidence store ``evidence/``
when the run wrote one) and writes ``report.html``:

* a summary (acquisitions, changes by kind, warnings) and a table of the changes;
* an overview map of the site with every change outlined;
* one section per change: the image chips before and after, the date bracket,
  the kind, the area and the measured length x width (the polygon's minimum
  rotated rectangle, in metres on the ground), the confidence and the factors
  it is the product of (:mod:`changedetect.confidence`), and the
  co-registration residual of the two scenes that bracket it;
* the provenance: every input with its SHA-256, acquisition date and where the
  date came from, the sensor metadata of its tags, the parameters, versions,
  run time and warnings.

The page needs nothing else: images are PNGs embedded as ``data:`` URIs, the
style sheet is inline, there is no script, and a Content-Security-Policy
forbids loading anything. Every text that comes from a file (file names, tag
values, footprint ids, table values) is HTML-escaped, so a hostile tag or file
name is shown as text and never becomes markup. The page prints to PDF (one
change per page where they fit).

The report is written from the results folder alone, so it can be written
again after the folder changed (e.g. a review re-cut the table)::

    >>> import changedetect as cd
    >>> cd.write_report("results")            # doctest: +SKIP
    PosixPath('results/report.html')
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io as _io
import json
import logging
import math
import os
import time
from pathlib import Path

from .confidence import TERMS
from .errors import InputError
from .io import write_text

__all__ = ["write_report", "render_report", "measure", "REPORT_NAME"]

log = logging.getLogger(__name__)
log.addHandler(logging.NullHandler())

#: File name of the report in a results folder.
REPORT_NAME = "report.html"

#: Outline colours by kind (the same as :mod:`changedetect.plot`).
KIND_COLOURS = {"new": "#e0321f", "modified": "#f08c00", "demolished": "#c9a800"}

#: What each confidence factor means (see :mod:`changedetect.confidence`).
TERM_HELP = {
    "significance": "size of the step, in noise standard deviations, against the detection threshold",
    "cleanliness": "how clearly the step stands out from seasons, moisture and haze (F test)",
    "persistence": "how many later acquisitions still show the change",
    "registration": "how well the two scenes around the step were co-registered",
    "form": "how building-like the outline is: fills its rectangle and its hull",
}


def _e(value) -> str:
    """``value`` as HTML text: escaped, quotes included (safe in text and in attribute values)."""
    return html.escape("" if value is None else str(value), quote=True)


def _missing(value) -> bool:
    if value is None:
        return True
    try:
        return bool(value != value)            # NaN, NaT, pd.NA compare unequal or raise
    except (TypeError, ValueError):
        return False


def _num(value, spec: str = ".2f", unit: str = "") -> str:
    """A number as escaped text, ``-`` when missing or not a number."""
    try:
        if _missing(value):
            return "-"
        return _e(format(float(value), spec) + unit)
    except (TypeError, ValueError):
        return _e(value)


def _day(value) -> str | None:
    """An ISO date string of a table value (str, date, datetime, Timestamp), None when missing."""
    if _missing(value):
        return None
    if hasattr(value, "isoformat"):
        return value.isoformat()[:10]
    return str(value)[:10]


def _anchor(change_id) -> str:
    """An id attribute for a change section: letters, digits, ``-`` and ``_`` only."""
    return "change-" + "".join(c if c.isalnum() or c in "-_" else "_" for c in str(change_id))


# --------------------------------------------------------------------------- reading a results folder

def _read_run(folder: Path) -> dict:
    from .evidence import read_run

    return read_run(folder)


def _read_changes(folder: Path, run: dict):
    """The change table in the grid's CRS, from changes.gpkg, else changes.geojson, else detections.gpkg."""
    import geopandas as gpd

    gpkg, geojson = folder / "changes.gpkg", folder / "changes.geojson"
    if gpkg.exists():
        gdf = gpd.read_file(gpkg, layer="changes")
    elif geojson.exists():
        gdf = gpd.read_file(geojson)
        grid = run.get("grid", {})
        if grid.get("georeferenced", True) and gdf.crs is not None and grid.get("crs"):
            gdf = gdf.to_crs(grid["crs"])
        elif not grid.get("georeferenced", True):
            gdf = gdf.set_crs(None, allow_override=True)
    elif (folder / "detections.gpkg").exists():          # a run that published KML/KMZ only
        from .evidence import published_detections

        gdf = published_detections(folder, run)
    else:
        raise InputError(f"{folder} holds no change table (changes.gpkg, changes.geojson or "
                         "detections.gpkg); the report reads one of them. Run detect-changes again "
                         "with this version.")
    if "change_id" not in gdf.columns:
        raise InputError(f"The change table in {folder} has no change_id column: it was not written "
                         "by detect-changes.")
    return gdf.reset_index(drop=True)


# --------------------------------------------------------------------------- measures

def _metric_crs(crs, geoms):
    """A CRS in which lengths are metres on the ground: ``crs`` itself, or a UTM zone.

    A geographic CRS (degrees) and Web Mercator (metres stretched by 1/cos
    latitude) are replaced by the UTM zone of the geometries.
    """
    if crs is None:
        return None, None
    try:
        from pyproj import CRS

        c = CRS.from_user_input(crs)
    except Exception:                            # a local grid: already metres
        return None, None
    op = c.coordinate_operation
    method = op.method_name.lower() if op is not None else ""
    stretched = c.is_geographic or ("mercator" in method and "transverse" not in method)   # not UTM
    if not stretched:
        return None, None
    import geopandas as gpd

    utm = gpd.GeoSeries(geoms, crs=c).estimate_utm_crs()
    why = "degrees" if c.is_geographic else "Mercator metres, stretched away from the equator"
    return utm, f"measured in {utm.name} (the grid's CRS is in {why})"


def measure(geom) -> tuple[float, float]:
    """Length and width of a polygon: the long and short sides of its minimum rotated rectangle.

    In the units of the geometry's coordinates (metres in a projected CRS).

    Examples
    --------
    >>> from shapely.geometry import box
    >>> from shapely import affinity
    >>> [round(v, 6) for v in measure(affinity.rotate(box(0, 0, 30, 12), 33))]
    [30.0, 12.0]
    """
    import shapely

    if geom is None or geom.is_empty:
        return float("nan"), float("nan")
    rect = shapely.oriented_envelope(geom)
    if rect.geom_type != "Polygon":               # a line or a point: no width
        return float(rect.length), 0.0
    xy = list(rect.exterior.coords)
    sides = [math.dist(xy[i], xy[i + 1]) for i in range(2)]
    return max(sides), min(sides)


# --------------------------------------------------------------------------- figures

def _png(fig, *, dpi: float = 80, palette: bool = False) -> str:
    """A matplotlib figure as a ``data:`` URI (PNG, no time stamp: the same figure gives the same bytes).

    ``palette``: stored with 256 colours (median cut, no dithering), about half
    the bytes; used for the strip of every acquisition only, the before/after
    chips and the overview keep every colour.
    """
    import matplotlib.pyplot as plt

    buf = _io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None}, bbox_inches="tight")
    plt.close(fig)
    if palette:
        from PIL import Image

        img = Image.open(_io.BytesIO(buf.getvalue())).convert("RGB")
        buf = _io.BytesIO()
        img.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _img(uri: str, alt: str, cls: str = "fig") -> str:
    return f'<img class="{cls}" src="{uri}" alt="{_e(alt)}">'


def _svg_overview(changes, run: dict, *, width: int = 760) -> str:
    """The site as an SVG map: the grid's outline and every change outlined, labelled with its number.

    Used when the results folder has no evidence store (no imagery to show).
    """
    grid = run.get("grid", {})
    t = grid.get("transform") or [1, 0, 0, 0, -1, 0]
    w, h = grid.get("width") or 1, grid.get("height") or 1
    x0, y1 = t[2], t[5]
    x1, y0 = t[2] + t[0] * w, t[5] + t[4] * h
    sx = width / max(x1 - x0, 1e-9)
    height = max(1, round((y1 - y0) * sx))

    def pt(x, y):
        return f"{(x - x0) * sx:.1f},{(y1 - y) * sx:.1f}"

    parts = [f'<svg class="overview" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
             f'width="{width}" height="{height}" role="img" aria-label="overview map">',
             f'<rect x="0" y="0" width="{width}" height="{height}" fill="#f4f4f0" stroke="#888"/>']
    for i, row in changes.iterrows():
        colour = KIND_COLOURS.get(str(row.get("kind")), "#1f6fe0")
        geom = row.geometry
        if geom is None or geom.is_empty:
            continue
        for part in getattr(geom, "geoms", [geom]):
            rings = [part.exterior, *part.interiors]
            d = " ".join("M" + " L".join(pt(x, y) for x, y in r.coords) + " Z" for r in rings)
            parts.append(f'<path d="{d}" fill="{colour}" fill-opacity="0.25" stroke="{colour}" '
                         f'stroke-width="1.5" fill-rule="evenodd"/>')
        c = geom.representative_point()
        px, py = (c.x - x0) * sx, (y1 - c.y) * sx
        anchor = "end" if px > width - 60 else "start"          # labels stay inside the map
        label = str(row.change_id)
        label = label[4:] if label.startswith("chg-") else label
        tx = px + (-4 if anchor == "end" else 4)
        parts.append(f'<a href="#{_anchor(row.change_id)}"><text x="{tx:.1f}" '
                     f'y="{min(max(py, 12), height - 4):.1f}" text-anchor="{anchor}" class="lbl">'
                     f"{_e(label)}</text></a>")
    bar = _nice_length((x1 - x0) / 4)
    parts.append(f'<g class="scale"><rect x="10" y="{height - 22}" width="{bar * sx:.1f}" height="5" '
                 f'fill="#222"/><text x="10" y="{height - 27}">{_e(f"{bar:g} m")}</text></g>')
    parts.append(f'<g class="north"><path d="M{width - 20},12 l6,16 l-6,-4 l-6,4 Z" fill="#222"/>'
                 f'<text x="{width - 24}" y="42">N</text></g>')
    parts.append("</svg>")
    return "".join(parts)


def _nice_length(x: float) -> float:
    """1, 2 or 5 times a power of ten, not more than ``x``."""
    if not x > 0:
        return 1.0
    p = 10 ** math.floor(math.log10(x))
    return max(m * p for m in (1, 2, 5) if m * p <= x)


def _svg_timeline(dates: list[str], last: str | None, first: str | None, *, width: int = 760) -> str:
    """The acquisitions as ticks on a time line, the change's bracket shaded between them."""
    if not dates:
        return ""
    days = [_dt.date.fromisoformat(d).toordinal() for d in dates]
    lo, hi = min(days), max(days)
    span = max(hi - lo, 1)

    def x(d):
        return 20 + (d - lo) / span * (width - 40)

    parts = [f'<svg class="timeline" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} 46" '
             f'width="{width}" height="46" role="img" aria-label="acquisitions and date bracket">',
             f'<line x1="20" y1="20" x2="{width - 20}" y2="20" stroke="#999"/>']
    if last and first:
        a, b = _dt.date.fromisoformat(last).toordinal(), _dt.date.fromisoformat(first).toordinal()
        parts.append(f'<rect x="{x(a):.1f}" y="10" width="{max(x(b) - x(a), 2):.1f}" height="20" '
                     f'fill="#e0321f" fill-opacity="0.25" stroke="#e0321f"/>')
    for d, day in zip(dates, days):
        mark = "#e0321f" if d in (last, first) else "#333"
        parts.append(f'<line x1="{x(day):.1f}" y1="12" x2="{x(day):.1f}" y2="28" stroke="{mark}" '
                     f'stroke-width="2"/>')
    labels = [(d, 42) for d in dict.fromkeys((dates[0], dates[-1]))]
    labels += [(d, 8) for d in (last, first) if d and d not in (dates[0], dates[-1])]
    for d, y in labels:                        # the series' ends below, the bracket above
        anchor = "middle" if y == 8 else "start" if d == dates[0] else "end"
        if y == 8 and last and first and last != first:
            anchor = "end" if d == last else "start"
        if d == dates[0] and anchor == "end" or d == dates[-1] and anchor == "start":
            anchor = "start" if d == dates[0] else "end"           # inside the strip, never cut off
        parts.append(f'<text x="{x(_dt.date.fromisoformat(d).toordinal()):.1f}" y="{y}" '
                     f'text-anchor="{anchor}">{_e(d)}</text>')
    parts.append("</svg>")
    return "".join(parts)


#: Resolution of the embedded figures: sharp on a screen and on paper, a few hundred kB each at most.
DPI = 80
#: Width of the page's column in CSS pixels: a wider figure is rendered at a lower dpi to fit it
#: (a long series' strip of every acquisition would otherwise be drawn wider than it is shown).
PAGE_PX = 1040


def _figures(folder: Path, changes, run: dict) -> dict:
    """The figures of the evidence store (:mod:`changedetect.plot`), as ``data:`` URIs.

    ``overview`` and ``registration``, and per change id ``chips`` (before and
    after) and ``timelines`` (every acquisition; only for series of more than
    two). Empty when the folder has no ``evidence/`` store; a figure that
    cannot be drawn is left out with a note in ``notes``, the rest of the report
    is written.
    """
    if not (folder / "evidence" / "index.json").is_file():
        return {}
    from .evidence import load_results

    try:
        import matplotlib.pyplot as plt

        from . import plot
    except ImportError:
        return {"notes": ["the figures need matplotlib: pip install 'changedetect[plot]'"]}
    try:
        res = load_results(folder)
    except InputError as exc:
        return {"notes": [f"The evidence store cannot be read: {exc}"]}
    figs: dict = {"chips": {}, "timelines": {}, "notes": []}
    cache = _FigureCache(folder, res, changes)

    def draw(key, make, *, sub=None, dpi=DPI, palette=False):
        uri = cache.get(key, sub)
        if uri is None:
            try:
                out = make()
            except (InputError, KeyError, ValueError) as exc:
                figs["notes"].append(f"{sub or key}: {exc}")
                return
            fig = getattr(out, "figure", out)          # an Axes or a Figure
            uri = _png(fig, dpi=min(dpi, PAGE_PX / max(float(fig.get_size_inches()[0]), 1e-3)),
                       palette=palette)
            cache.put(key, sub, uri)
        if sub is None:
            figs[key] = uri
        else:
            figs[key][sub] = uri

    # the page's width, and sharper: its labels are small and many
    draw("overview", lambda: plot.plot_overview(res, ax=plt.subplots(figsize=(11, 11))[1]), dpi=100)
    series = len(res.dates) > 2
    for cid in (str(c) for c in changes["change_id"]):
        draw("chips", lambda: plot.plot_before_after(res, cid), sub=cid)
        if series:
            draw("timelines", lambda: plot.plot_timeline(res, cid), sub=cid, palette=True)
    draw("registration", lambda: plot.plot_registration(res))
    cache.save()
    return figs


class _FigureCache:
    """The figures of one change (and the registration's), kept beside the evidence they are drawn from.

    ``evidence/report/`` holds each drawn PNG under a key made of what the
    figure shows (the chip file's SHA-256, the change's row, this version), so
    a review's re-cut writes the report again without drawing its figures
    again: the same bytes as drawn afresh, in a fraction of the time. The
    overview depends on the cut and is always drawn. A figure whose key no
    longer matches (another version, another evidence store) is drawn again.
    """

    def __init__(self, folder: Path, res, changes):
        from . import __version__

        self.dir = folder / "evidence" / "report"
        try:
            self.index = json.loads((self.dir / "index.json").read_text("utf-8"))
        except (OSError, ValueError):
            self.index = {}
        self.keys = {}
        chips = res.index.get("chips", {})
        reg = res.index.get("registration", {}).get("sha256")
        self.keys[("registration", None)] = _key(__version__, reg, res.run.get("inputs"))
        for _, row in changes.iterrows():
            cid = str(row["change_id"])
            fields = [str(row.get(c)) for c in ("kind", "last_absent", "first_present", "confidence", "area_m2")]
            k = _key(__version__, (chips.get(cid) or {}).get("sha256"), fields, row.geometry.wkb_hex,
                     res.run.get("inputs"))
            self.keys[("chips", cid)] = self.keys[("timelines", cid)] = k
        self.new = {}

    def _name(self, key, sub):
        return f"{key}.png" if sub is None else f"{key}-{_anchor(sub)}.png"

    def get(self, key, sub):
        k = self.keys.get((key, sub))
        name = self._name(key, sub)
        if k is None or self.index.get(name) != k:
            return None
        try:
            return "data:image/png;base64," + base64.b64encode((self.dir / name).read_bytes()).decode("ascii")
        except OSError:
            return None

    def put(self, key, sub, uri):
        k = self.keys.get((key, sub))
        if k is not None:
            self.new[self._name(key, sub)] = (k, base64.b64decode(uri.split(",", 1)[1]))

    def save(self):
        if not self.new:
            return
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            for name, (k, data) in sorted(self.new.items()):
                tmp = self.dir / f".{name}.tmp"
                tmp.write_bytes(data)
                os.replace(tmp, self.dir / name)
                self.index[name] = k
            write_text(self.dir / "index.json", json.dumps(dict(sorted(self.index.items())), indent=1) + "\n")
        except OSError:                     # a read-only results folder: the report is still written
            pass


def _key(*parts) -> str:
    import hashlib

    return hashlib.sha256(json.dumps(parts, default=str, sort_keys=True).encode("utf-8")).hexdigest()


# --------------------------------------------------------------------------- page parts

_CSS = """
:root { --ink:#1d1d1f; --muted:#5f6368; --rule:#d8d8d8; --band:#f6f6f4; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
       color: var(--ink); margin: 0 auto; max-width: 1100px; padding: 24px 28px 60px; }
h1 { font-size: 24px; margin: 0 0 4px; } h2 { font-size: 19px; margin: 34px 0 10px;
     border-bottom: 2px solid var(--ink); padding-bottom: 3px; } h3 { font-size: 16px; margin: 0 0 8px; }
p.sub, .muted { color: var(--muted); }
table { border-collapse: collapse; margin: 6px 0 14px; font-size: 13px; }
th, td { text-align: left; padding: 3px 10px 3px 0; border-bottom: 1px solid var(--rule);
         vertical-align: top; }
th { font-weight: 600; white-space: nowrap; }
td a, .nowrap { white-space: nowrap; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; }
code, .mono { font-family: "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: 12px;
              overflow-wrap: anywhere; word-break: break-all; }
.kind { display: inline-block; padding: 0 7px; border-radius: 3px; color: #fff; font-weight: 600; }
.kind-new { background: #e0321f; } .kind-modified { background: #f08c00; }
.kind-demolished { background: #c9a800; } .kind-other { background: #1f6fe0; }
section.change { border: 1px solid var(--rule); border-radius: 6px; padding: 14px 16px;
                 margin: 16px 0; break-inside: avoid; page-break-inside: avoid; }
.facts { display: grid; grid-template-columns: 1fr 1fr; gap: 4px 30px; }
img.fig { max-width: 100%; height: auto; display: block; margin: 6px 0; }
svg text { font: 11px system-ui, "DejaVu Sans", sans-serif; fill: #222; }
svg text.lbl { font-weight: 700; paint-order: stroke; stroke: #fff; stroke-width: 3px; }
.bar { display: inline-block; height: 9px; background: #1f6fe0; vertical-align: middle; }
.warn { background: #fff4e0; border-left: 4px solid #f08c00; padding: 6px 10px; margin: 6px 0; }
details summary { cursor: pointer; color: var(--muted); }
.tags td:first-child { white-space: nowrap; }
@page { size: A4; margin: 12mm; }
@media print {
  body { max-width: none; padding: 0; font-size: 10px; }
  table { font-size: 10px; }
  img.fig { max-height: 10cm; width: auto; max-width: 100%; }
  img.strip { max-height: 4.5cm; }
  img.overview { max-height: 24cm; }
  section.change { padding: 8px 10px; margin: 0 0 8px; }
  h2 { break-after: avoid; } a { color: inherit; text-decoration: none; }
  details > *:not(summary) { display: block; }
  section.change { break-inside: avoid; }
}
"""


def _kind(kind) -> str:
    k = str(kind)
    cls = f"kind-{k}" if k in KIND_COLOURS else "kind-other"
    return f'<span class="kind {cls}">{_e(k)}</span>'


def _table(rows, header=None, *, cls: str = "") -> str:
    """An HTML table of already-escaped cells."""
    out = [f'<table class="{cls}">' if cls else "<table>"]
    if header:
        out.append("<tr>" + "".join(f"<th>{h}</th>" for h in header) + "</tr>")
    for r in rows:
        out.append("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>")
    out.append("</table>")
    return "".join(out)


def _scenes_by_date(run: dict) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for s in run.get("inputs", []):
        out.setdefault(str(s.get("date")), []).append(s)
    return out


def _registration_line(run: dict, scene: dict) -> str:
    reg = run.get("registration", {}).get(scene.get("name"), {})
    name = _e(scene.get("name"))
    if not reg:
        return f"{name}: no registration record"
    if reg.get("model") == "identity":
        return f"{name}: the reference (not moved)"
    text = (f"{name}: {_e(reg.get('model'))}, residual {_num(reg.get('rmse_px'), '.3f', ' px')} over "
            f"{_e(reg.get('n_inliers'))} tie points, shift {_num((reg.get('shift_m') or [None])[0], '.2f')}, "
            f"{_num((reg.get('shift_m') or [None, None])[1], '.2f', ' m')}")
    if reg.get("flagged"):
        text += (' <strong>kept on its georeferencing alone</strong> (estimated error '
                 f"{_num(reg.get('uncertainty_px'), '.1f', ' px')})")
    return text


def _confidence_block(conf, terms: dict | None) -> str:
    head = f"<p><strong>Confidence {_num(conf, '.2f')}</strong>"
    if not terms:
        return head + ' <span class="muted">(the run record does not list its factors: written by an ' \
                      "older changedetect)</span></p>"
    head += " = " + " &times; ".join(_num(terms.get(t), ".2f") for t in TERMS if t in terms) + "</p>"
    rows = []
    for t in TERMS:
        if t not in terms:
            continue
        v = terms[t]
        width = 0 if _missing(v) else max(0.0, min(1.0, float(v))) * 120
        rows.append([_e(t), f'<span class="n">{_num(v, ".3f")}</span>',
                     f'<span class="bar" style="width:{width:.0f}px"></span>', _e(TERM_HELP.get(t, ""))])
    return head + _table(rows, ["factor", "value", "", "what it measures"], cls="terms")


def _change_section(row, run: dict, figs: dict, dates: list[str], by_date: dict, metric) -> str:
    cid = row.change_id
    last, first = _day(row.get("last_absent")), _day(row.get("first_present"))
    gap = ""
    if last and first:
        try:
            gap = f" ({(_dt.date.fromisoformat(first) - _dt.date.fromisoformat(last)).days} days)"
        except ValueError:
            gap = ""
    length, width = metric(row.geometry)
    conf_terms = run.get("confidence_terms", {}).get(str(cid))
    facts = [
        ("kind", _kind(row.get("kind"))),
        ("date bracket", f"after {_e(last or '-')} (last absent), by {_e(first or '-')} (first present)"
                         f"{_e(gap)}"),
        ("area", _num(row.get("area_m2"), ".0f", " m²")),
        ("length × width", f"{_num(length, '.1f')} × {_num(width, '.1f', ' m')}"
                           ' <span class="muted">(minimum rotated rectangle)</span>'),
        ("detector score", _num(row.get("score"), ".1f", " σ")),
        ("acquisitions", f"{_e(row.get('n_observations'))} used: {_e(row.get('n_before'))} before, "
                         f"{_e(row.get('n_after'))} after"),
    ]
    if not _missing(row.get("building_id")):
        facts.append(("on footprint", f"<code>{_e(row.get('building_id'))}</code>"))
    c = row.geometry.centroid if row.geometry is not None and not row.geometry.is_empty else None
    if c is not None:
        facts.append(("centroid", f"<code>{c.x:.2f}, {c.y:.2f}</code> "
                                  f'<span class="muted">{_e(run.get("grid", {}).get("crs"))}</span>'))
    regs = [_registration_line(run, s) for d in (last, first) for s in by_date.get(d or "", [])]
    out = [f'<section class="change" id="{_anchor(cid)}">',
           f"<h3>{_e(cid)} {_kind(row.get('kind'))}</h3>"]
    chip = figs.get("chips", {}).get(str(cid))
    if chip:
        out.append(_img(chip, f"{cid}: before and after"))
    elif "chips" in figs:
        out.append('<p class="muted">No image chips for this change (see the note in the summary).</p>')
    else:
        out.append('<p class="muted">No image chips: this results folder has no evidence store.</p>')
    timeline = figs.get("timelines", {}).get(str(cid))
    if timeline:
        out.append(_img(timeline, f"{cid} on every acquisition", "fig strip"))
    out.append(_svg_timeline(dates, last, first))
    facts_table = "<table>" + "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in facts) + "</table>"
    out.append('<div class="facts"><div>' + facts_table + "</div><div>"
               + _confidence_block(row.get("confidence"), conf_terms)
               + "<p><strong>Co-registration of the two scenes</strong> (residual "
               + _num(row.get("registration_rmse_px"), ".3f", " px") + ")</p><ul>"
               + "".join(f"<li>{r}</li>" for r in regs) + "</ul></div></div>")
    out.append("</section>")
    return "".join(out)


def _provenance(run: dict, folder_outputs: dict) -> str:
    out = ['<h2 id="provenance">Provenance</h2>', "<h3>Inputs</h3>"]
    rows = []
    for s in run.get("inputs", []):
        prec = " (month only)" if s.get("date_precision") == "month" else ""
        rows.append([_e(s.get("name")), f"{_e(s.get('date'))}{_e(prec)}", _e(s.get("date_source")),
                     f"{_e(s.get('width'))} × {_e(s.get('height'))} px, {_e(s.get('bands'))} bands "
                     f"{_e(s.get('dtype'))}<br>{_e(', '.join(map(str, s.get('band_roles') or [])))} "
                     f"<span class=\"muted\">({_e(s.get('band_roles_source'))})</span>",
                     f"<code>{_e(s.get('sha256'))}</code>"])
    out.append(_table(rows, ["file", "acquired", "date from", "raster", "SHA-256"]))
    out.append("<h3>Sensor metadata (file tags)</h3>")
    for s in run.get("inputs", []):
        meta = s.get("metadata")
        if meta is None:
            body = '<p class="muted">not recorded (run.json written by an older changedetect)</p>'
        elif not meta:
            body = '<p class="muted">the file has no tags</p>'
        else:
            body = _table([[f"<code>{_e(k)}</code>", f"<code>{_e(v)}</code>"] for k, v in meta.items()],
                          cls="tags")
        out.append(f"<details open><summary>{_e(s.get('name'))} <span class=\"muted\">"
                   f"({_e(s.get('path'))})</span></summary>{body}</details>")
    if run.get("manifest"):
        m = run["manifest"]
        out.append(f"<p>Dates from the manifest <code>{_e(m.get('path'))}</code>, SHA-256 "
                   f"<code>{_e(m.get('sha256'))}</code></p>")
    if run.get("buildings"):
        b = run["buildings"]
        out.append(f"<p>Footprints <code>{_e(b.get('path'))}</code>, SHA-256 <code>{_e(b.get('sha256'))}"
                   f"</code>: {_e(b.get('n'))} footprints.</p>")
    grid = run.get("grid", {})
    out.append("<h3>Grid and co-registration</h3>")
    out.append(f"<p>Reference <code>{_e(run.get('reference'))}</code>; grid {_e(grid.get('width'))} × "
               f"{_e(grid.get('height'))} px in <code>{_e(grid.get('crs'))}</code>, transform "
               f"<code>{_e(grid.get('transform'))}</code>"
               + ("" if grid.get("georeferenced", True) else " — <strong>not georeferenced</strong> "
                  "(a local grid)") + (f"; {_e(grid.get('note'))}" if grid.get("note") else "") + "</p>")
    rows = []
    for name, r in run.get("registration", {}).items():
        rows.append([_e(name), _e(r.get("model")), _num(r.get("rmse_px"), ".3f"),
                     f"{_e(r.get('n_inliers'))} / {_e(r.get('n_tiepoints'))}",
                     _num((r.get("shift_m") or [None])[0], ".2f") + ", "
                     + _num((r.get("shift_m") or [None, None])[1], ".2f"),
                     _num(r.get("rotation_deg"), ".3f"), "yes" if r.get("flagged") else "no"])
    out.append(_table(rows, ["scene", "model", "residual (px)", "inliers / tie points", "shift (m)",
                             "rotation (°)", "kept on georeferencing"]))
    eff, req = run.get("effective_parameters", {}), run.get("parameters", {})
    rows = []
    for k, v in eff.items():
        note = "" if req.get(k, v) == v else f' <span class="muted">(asked: {_e(req.get(k))})</span>'
        rows.append([f"<code>{_e(k)}</code>", f"<code>{_e(json.dumps(v))}</code>{note}"])
    out.append("<h3>Parameters</h3>" + _table(rows, cls="params"))
    extra = {k: run[k] for k in ("detector", "thresholds", "noise_sigma") if k in run}
    if extra:
        out.append(_table([[f"<code>{_e(k)}</code>", f"<code>{_e(json.dumps(v))}</code>"]
                           for k, v in extra.items()]))
    out.append("<h3>Software and machine</h3>")
    vers = dict(run.get("versions", {}))
    out.append(_table([[_e(k), f"<code>{_e(v)}</code>"] for k, v in vers.items()]
                      + [[_e(f"cpu: {k}"), f"<code>{_e(v)}</code>"] for k, v in run.get("cpu", {}).items()]))
    timings = run.get("timings_s", {})
    out.append("<h3>Run</h3><p>Run at " + _e(run.get("created")) + "; stages (s): "
               + _e(", ".join(f"{k} {v:g}" if isinstance(v, (int, float)) else f"{k} {v}"
                              for k, v in timings.items()))
               + (f" (together {sum(v for v in timings.values() if isinstance(v, (int, float))):.1f} s)"
                  if timings else "") + "</p>")
    if folder_outputs:
        out.append(_table([[_e(k), f"<code>{_e(v)}</code>"] for k, v in folder_outputs.items()],
                          ["output", "SHA-256"]))
    return "".join(out)


def render_report(results_dir: str | os.PathLike) -> str:
    """The evidence report of a results folder, as HTML text (see :func:`write_report`)."""
    folder = Path(results_dir)
    t0 = time.perf_counter()
    run = _read_run(folder)
    changes = _read_changes(folder, run)
    metric_crs, metric_note = _metric_crs(changes.crs, list(changes.geometry))
    if metric_crs is not None:
        projected = changes.geometry.to_crs(metric_crs)
        lengths = {i: measure(g) for i, g in zip(changes.index, projected)}
    else:
        lengths = {i: measure(g) for i, g in zip(changes.index, changes.geometry)}
    if not run.get("grid", {}).get("georeferenced", True):
        metric_note = "measured on the local grid of --pixel-size (metres if that pixel size is right)"
    figs = _figures(folder, changes, run)
    t_fig = time.perf_counter()
    inputs = run.get("inputs", [])
    dates = sorted({str(s.get("date")) for s in inputs})
    by_date = _scenes_by_date(run)
    kinds = changes["kind"].astype(str).value_counts().sort_index() if len(changes) else {}
    title = (f"Change evidence: {len(changes)} change{'s' if len(changes) != 1 else ''}, "
             f"{len(inputs)} acquisitions {dates[0] if dates else ''} .. {dates[-1] if dates else ''}")
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; img-src data:; '
             'style-src \'unsafe-inline\'">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>",
             f"<h1>{_e(title)}</h1>",
             f'<p class="sub">changedetect {_e(run.get("changedetect"))}, run of {_e(run.get("created"))}; '
             f"grid <code>{_e(run.get('grid', {}).get('crs'))}</code>. Written from the results folder "
             "by <code>changedetect.report.write_report</code>.</p>"]
    # summary
    parts.append('<h2 id="summary">Summary</h2>')
    by_kind = ", ".join(f"{int(n)} {_e(k)}" for k, n in getattr(kinds, "items", lambda: [])())
    parts.append(f"<p>{len(changes)} changes ({by_kind or 'none'}) found in {len(inputs)} acquisitions "
                 f"from {_e(dates[0] if dates else '-')} to {_e(dates[-1] if dates else '-')}, "
                 f"detector <code>{_e(run.get('detector', '-'))}</code>.</p>")
    if run.get("buildings"):
        b = run["buildings"]
        status = ", ".join(f"{int(n)} {_e(str(k).replace('_', ' '))}"
                           for k, n in b.get("by_status", {}).items())
        parts.append(f"<p>{_e(b.get('n'))} given footprints ({status}); {_e(b.get('changes_on_footprints'))} "
                     "of the changes lie on one (their footprint id is in their section).</p>")
        if run.get("footprint_decision"):
            from .buildings import describe_decision      # only for runs with footprints: it imports SciPy

            parts.append(f"<p>{_e(describe_decision(run['footprint_decision']))}</p>")
    for w in run.get("warnings", []):
        parts.append(f'<div class="warn">{_e(w)}</div>')
    for note in figs.get("notes", []):
        parts.append(f'<div class="warn">Figure left out: {_e(note)}</div>')
    if metric_note:
        parts.append(f'<p class="muted">Lengths and widths {_e(metric_note)}.</p>')
    rows = []
    for i, row in changes.iterrows():
        ln, wd = lengths[i]
        rows.append([f'<a href="#{_anchor(row.change_id)}">{_e(row.change_id)}</a>', _kind(row.get("kind")),
                     f"{_e(_day(row.get('last_absent')) or '-')} .. "
                     f"{_e(_day(row.get('first_present')) or '-')}",
                     _num(row.get("area_m2"), ".0f"), f"{_num(ln, '.1f')} × {_num(wd, '.1f')}",
                     _num(row.get("confidence"), ".2f"), _num(row.get("registration_rmse_px"), ".3f")])
    if rows:
        parts.append(_table(rows, ["change", "kind", "last absent .. first present", "area (m²)",
                                   "length × width (m)", "confidence", "registration (px)"]))
    # overview
    parts.append('<h2 id="overview">Overview map</h2>')
    if figs.get("overview"):
        parts.append(_img(figs["overview"], "overview map of the site with every change outlined",
                          "fig overview"))
    else:
        parts.append(_svg_overview(changes, run))
        parts.append('<p class="muted">Outlines on the grid of the run (no imagery: this results folder '
                     "has no evidence store). Each number is a change (chg-0001 is 0001) and links to its "
                     "section.</p>")
    # changes
    parts.append('<h2 id="changes">Changes</h2>')
    if not len(changes):
        parts.append("<p>No change was found.</p>")
    for i, row in changes.iterrows():
        parts.append(_change_section(row, run, figs, dates, by_date, lambda g, i=i: lengths[i]))
    if figs.get("registration"):
        parts.append('<h2 id="registration">Co-registration</h2>'
                     + _img(figs["registration"], "co-registration tie points and residuals"))
    outputs = {k: v for k, v in (run.get("outputs") or {}).items() if k != REPORT_NAME}
    parts.append(_provenance(run, outputs))
    parts.append("</body></html>\n")
    log.info("report: figures %.2f s, page %.2f s", t_fig - t0, time.perf_counter() - t_fig)
    return "\n".join(parts)


def write_report(results_dir: str | os.PathLike, path: str | os.PathLike | None = None) -> Path:
    """Write the self-contained HTML evidence report of a results folder.

    Parameters
    ----------
    results_dir : path-like
        The ``--out`` folder of a run: ``run.json`` and ``changes.gpkg`` or
        ``changes.geojson``; with an ``evidence/`` store (image chips, overview)
        the report shows the imagery too.
    path : path-like, optional
        Where to write the page; default ``results_dir/report.html``.

    Returns
    -------
    Path
        The report, written atomically.

    Raises
    ------
    InputError
        The folder is not a results folder (no or unreadable ``run.json``, no change table).
    """
    target = Path(path) if path is not None else Path(results_dir) / REPORT_NAME
    return write_text(target, render_report(results_dir))
