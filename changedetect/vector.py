"""Change polygons as a GeoDataFrame, exported to GeoPackage, GeoJSON, KML and KMZ.

The schema is one row per detected change (see DESIGN.md): ``geometry``,
``change_id``, ``kind``, ``last_absent``, ``first_present``, ``area_m2``,
``confidence``, ``score``, ``registration_rmse_px``, ``n_observations``,
``n_before``, ``n_after``, ``building_id``. In memory the dates are ISO
strings; every export writes every column of the table it is given (columns
added later, such as a review's, flow through unchanged), and writes a missing
value as a real null (or leaves it out), never as the text ``None`` or ``nan``.

What each format holds
----------------------
GeoPackage (``gpkg``)
    The stack's CRS. Date columns (:data:`DATE_COLUMNS`, or any column of
    dates) are OGR ``Date`` fields (SQLite column type ``DATE``), so QGIS's
    temporal controller can play them; numbers are numbers, nulls are nulls.
GeoJSON (``geojson``)
    RFC 7946: EPSG:4326 longitude, latitude; no ``crs`` member; exterior
    rings counter-clockwise, holes clockwise; dates as ISO ``YYYY-MM-DD``
    strings; nulls as JSON ``null``. Coordinates keep :data:`COORDINATE_DECIMALS`
    (7) decimals, about 1 cm: RFC 7946 calls 6 (about 11 cm) sufficient in
    general, but the outlines come from 0.3 m (or finer) pixels, and a third of a
    pixel of rounding would move the area of a small building by a few percent
    and could fold a narrow one; 7 keeps the GeoJSON within a centimetre of the
    GeoPackage for about 10 % more bytes. Images that were not georeferenced
    (``--pixel-size``) give a GeoJSON in metres on the reference image's local
    grid instead, which no RFC 7946 reader can place on Earth.
KML (``kml``), KMZ (``kmz``)
    EPSG:4326, for Google Earth. One ``Style`` per kind (:data:`KIND_COLOURS`,
    outline opaque, fill at 40 %), one ``Folder`` per kind, one ``Placemark``
    per change named by its ``change_id``, with a balloon (kind, date bracket,
    area, confidence, and the change's image in a KMZ), every attribute in
    ``ExtendedData`` (missing ones left out) and a ``TimeSpan`` such that, at
    every acquisition date, the time slider shows the buildings standing in that
    acquisition:

    * ``new`` and ``modified``: ``begin`` = ``first_present``, no end (the
      building stays); it is not shown at ``last_absent``;
    * ``demolished``: ``begin`` = the first acquisition of the series (when the
      series dates are given, else unbounded), ``end`` = ``last_absent``, the
      last acquisition in which the building still stands; it is not shown at
      ``first_present``, the first acquisition in which it is gone. Between the
      two the building's fate is unknown, for either kind, and the polygon is
      not shown: the bracket is in the balloon.

    A KMZ is a zip of ``doc.kml`` (first) and ``files/<change_id>.png`` for
    the images given, with fixed time stamps and sorted entries, so the same
    input gives the same bytes. Neither is written for images that are not
    georeferenced (a warning says so).
"""

from __future__ import annotations

import datetime as _dt
import io as _io
import os
import re
import zipfile
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from .config import FORMATS
from .errors import InputError
from .io import atomic_path, is_unreferenced

__all__ = ["COLUMNS", "FORMATS", "BUILDING_COLUMNS", "BUILDING_DATE_COLUMNS", "DATE_COLUMNS",
           "KIND_COLOURS", "COORDINATE_DECIMALS", "to_geodataframe", "to_kml", "export",
           "buildings_to_frames", "export_buildings"]

COLUMNS = ("change_id", "kind", "last_absent", "first_present", "area_m2", "confidence", "score",
           "registration_rmse_px", "n_observations", "n_before", "n_after", "building_id")
#: Columns of the per-building table (one row per given footprint).
BUILDING_COLUMNS = ("building_id", "status", "kind", "last_absent", "first_present", "confidence",
                    "score", "fstat", "changed_fraction", "changed_area_m2", "area_m2", "n_observations",
                    "n_before", "n_after")
#: Columns of the per-building, per-date table.
BUILDING_DATE_COLUMNS = ("building_id", "date", "status", "mean_score", "max_score",
                         "changed_fraction", "valid_fraction")
#: Columns written as dates (OGR ``Date`` in a GeoPackage, ``YYYY-MM-DD`` elsewhere) whatever
#: their type in memory (ISO strings, ``datetime.date``, timestamps); a column of
#: ``datetime.date`` or ``datetime64`` values under another name is a date column too.
DATE_COLUMNS = ("last_absent", "first_present", "date")
#: Colour of each kind in the KML/KMZ (RGB, as in plot.py's figures); others are grey.
KIND_COLOURS = {"new": "#ff3b30", "modified": "#ff9500", "demolished": "#ffd60a"}
_OTHER_COLOUR = "#8e8e93"
_FILL_ALPHA = 0x66                   # 40 % opaque: the imagery stays visible under the fill
#: Decimals of a degree in the GeoJSON and KML coordinates (1e-7 degree is about 1 cm).
COORDINATE_DECIMALS = 7
_DTYPES = {"change_id": "str", "kind": "str", "last_absent": "str", "first_present": "str",
           "area_m2": "float64", "confidence": "float64", "score": "float64",
           "registration_rmse_px": "float64", "n_observations": "int64", "n_before": "int64", "n_after": "int64",
           "building_id": "object"}
_KML_NS = "http://www.opengis.net/kml/2.2"


def to_geodataframe(records: Iterable[Mapping], *, crs):
    """Build the change table from dicts holding ``geometry`` and the schema's columns.

    Examples
    --------
    >>> from shapely.geometry import box
    >>> gdf = to_geodataframe([{"geometry": box(0, 0, 10, 10), "change_id": "chg-0001",
    ...     "kind": "new", "last_absent": "2014-01-01", "first_present": "2015-01-01",
    ...     "area_m2": 100.0, "confidence": 0.9, "score": 5.0, "registration_rmse_px": 0.1,
    ...     "n_observations": 6, "n_before": 2, "n_after": 4, "building_id": None}],
    ...     crs="EPSG:32637")
    >>> list(gdf.columns)[:3], len(gdf)
    (['change_id', 'kind', 'last_absent'], 1)
    """
    import geopandas as gpd
    import pandas as pd

    records = list(records)
    missing = [c for c in COLUMNS + ("geometry",) if records and c not in records[0]]
    if missing:
        raise InputError(f"Change records lack the columns {missing}.")
    df = pd.DataFrame([{c: r.get(c) for c in COLUMNS} for r in records], columns=list(COLUMNS))
    for c, t in _DTYPES.items():
        df[c] = df[c].astype(t) if t != "object" else df[c].astype(object)
    return gpd.GeoDataFrame(df, geometry=[r["geometry"] for r in records], crs=crs)


def _is_missing(value) -> bool:
    """None, NaN, NA and NaT are missing; anything else (also the text ``"None"``) is a value."""
    import pandas as pd

    if value is None:
        return True
    try:
        return bool(pd.api.types.is_scalar(value) and pd.isna(value))
    except (TypeError, ValueError):
        return False


def _iso_date(value, column: str = "date") -> str | None:
    """``YYYY-MM-DD`` of a date given as ISO text, ``date``, ``datetime``, Timestamp or datetime64."""
    import numpy as np

    if _is_missing(value):
        return None
    if isinstance(value, _dt.datetime):             # also pandas.Timestamp
        return value.date().isoformat()
    if isinstance(value, _dt.date):
        return value.isoformat()
    if isinstance(value, np.datetime64):
        return str(value.astype("datetime64[D]"))
    try:
        return _dt.date.fromisoformat(str(value).strip()[:10]).isoformat()
    except ValueError:
        raise InputError(f"The column {column!r} holds {str(value)!r}, which is not a date; "
                         "write dates as YYYY-MM-DD (or datetime.date), or leave them empty.") from None


def _geometry_column(frame) -> str | None:
    import geopandas as gpd

    return frame.geometry.name if isinstance(frame, gpd.GeoDataFrame) else None


def _is_date_column(frame, column: str) -> bool:
    import pandas as pd

    s = frame[column]
    if column in DATE_COLUMNS:
        return True
    if s.dtype != object:
        return False
    values = [v for v in s if not _is_missing(v)]
    return bool(values) and all(isinstance(v, _dt.date) and not isinstance(v, _dt.datetime)
                                for v in values) and not isinstance(s.dtype, pd.CategoricalDtype)


def _ogr_fields(frame, *, dates_as: str):
    """Names, numpy arrays and null masks of every attribute column, as pyogrio writes them.

    Dates become ``datetime64[D]`` (an OGR ``Date`` field) or, with
    ``dates_as="text"``, ISO strings; numbers stay numbers (nullable ones with a
    mask); everything else is text, with ``None`` (a null) for a missing value.
    """
    import numpy as np
    import pandas as pd

    geom = _geometry_column(frame)
    names, data, masks = [], [], []
    for c in frame.columns:
        if c == geom:
            continue
        s = frame[c]
        mask = None
        if _is_date_column(frame, c):
            iso = [_iso_date(v, c) for v in s]
            if dates_as == "date":
                values = np.array(["NaT" if d is None else d for d in iso], dtype="datetime64[D]")
            else:
                values = np.array(iso, dtype=object)
        elif isinstance(s.dtype, pd.api.extensions.ExtensionDtype) and pd.api.types.is_bool_dtype(s.dtype):
            values, mask = s.to_numpy(dtype=bool, na_value=False), s.isna().to_numpy()
        elif isinstance(s.dtype, pd.api.extensions.ExtensionDtype) and pd.api.types.is_integer_dtype(s.dtype):
            values, mask = s.to_numpy(dtype="int64", na_value=0), s.isna().to_numpy()
        elif pd.api.types.is_float_dtype(s.dtype):
            values = s.to_numpy(dtype="float64", na_value=np.nan)        # NaN is written as null
        elif (pd.api.types.is_integer_dtype(s.dtype) or pd.api.types.is_bool_dtype(s.dtype)
              or (pd.api.types.is_datetime64_dtype(s.dtype) and not isinstance(s.dtype, pd.DatetimeTZDtype))):
            values = s.to_numpy()
        else:
            values = np.array([None if _is_missing(v) else str(v) for v in s], dtype=object)
        names.append(str(c))
        data.append(values)
        masks.append(mask)
    return names, data, masks


def _write_ogr(frame, path: Path, *, driver: str, layer: str | None = None, dates_as: str = "date",
               layer_options: Mapping | None = None) -> None:
    """Write a (Geo)DataFrame with OGR, date columns as OGR ``Date`` fields (see :func:`_ogr_fields`).

    geopandas/pyogrio would write a column of dates as text (or as a
    ``DateTime``); pyogrio's raw writer takes ``datetime64[D]`` as ``Date``.
    """
    import numpy as np
    import shapely
    from pyogrio.raw import write

    names, data, masks = _ogr_fields(frame, dates_as=dates_as)
    geometry = geometry_type = crs = promote = None
    if _geometry_column(frame) is not None:
        types = sorted(set(frame.geometry.geom_type.dropna()))
        geometry_type = types[0] if len(types) == 1 else "Unknown"
        if set(types) == {"Polygon", "MultiPolygon"}:
            geometry_type, promote = "MultiPolygon", True
        geometry = shapely.to_wkb(np.asarray(frame.geometry.values, dtype=object))
        if frame.crs is not None:
            epsg = frame.crs.to_epsg()
            crs = f"EPSG:{epsg}" if epsg else frame.crs.to_wkt("WKT1_GDAL")
    write(str(path), geometry, data, names, field_mask=masks, layer=layer, driver=driver,
          geometry_type=geometry_type, crs=crs, promote_to_multi=promote,
          layer_options=dict(layer_options or {}) or None)


# ---------------------------------------------------------------------------- KML / KMZ

_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_KIND_ORDER = ("new", "modified", "demolished")


def _x(value) -> str:
    """Text escaped for XML content and attributes (characters XML 1.0 forbids become U+FFFD)."""
    s = _XML_INVALID.sub("\ufffd", str(value))
    return (s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&quot;").replace("'", "&apos;"))


def _kml_colour(rgb: str, alpha: int) -> str:
    """KML's ``aabbggrr`` of an ``#rrggbb`` colour."""
    return f"{alpha:02x}{rgb[5:7]}{rgb[3:5]}{rgb[1:3]}".lower()


def _text(value, *, date: bool = False, column: str = "") -> str | None:
    """A value as KML text; ``None`` for a missing one (left out, never written as "None")."""
    import numbers

    import numpy as np

    if _is_missing(value):
        return None
    if date:
        return _iso_date(value, column)
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        return format(float(value), ".10g")
    if isinstance(value, (_dt.date, np.datetime64)):
        return _iso_date(value, column)
    return str(value)


def _coordinates(ring) -> str:
    d = COORDINATE_DECIMALS
    return " ".join(f"{x:.{d}f},{y:.{d}f}" for x, y in ring.coords)


def _kml_geometry(geom) -> str:
    polys = []
    for p in getattr(geom, "geoms", [geom]):
        if p.is_empty:
            continue
        inner = "".join(f"<innerBoundaryIs><LinearRing><coordinates>{_coordinates(r)}</coordinates>"
                        "</LinearRing></innerBoundaryIs>" for r in p.interiors)
        polys.append(f"<Polygon><outerBoundaryIs><LinearRing><coordinates>{_coordinates(p.exterior)}"
                     f"</coordinates></LinearRing></outerBoundaryIs>{inner}</Polygon>")
    return polys[0] if len(polys) == 1 else f"<MultiGeometry>{''.join(polys)}</MultiGeometry>"


#: How the balloon words the bracket [last_absent, first_present] of each kind.
_BRACKET_WORDS = {"new": ("not there on", "there on"), "demolished": ("standing on", "gone on"),
                  "modified": ("as before on", "changed on")}


def _balloon(values: Mapping[str, str], image: str | None) -> str:
    """The HTML of a placemark's balloon (HTML-escaped here, XML-escaped by the caller)."""
    from html import escape as h

    kind = values.get("kind", "change")
    la, fp = values.get("last_absent"), values.get("first_present")
    words = _BRACKET_WORDS.get(kind, ("last acquisition without the change", "first with it"))
    when = "; ".join(f"{w} {h(d)}" for w, d in zip(words, (la, fp)) if d) or "date unknown"
    lines = [f"<p><b>{h(kind)}</b>: {when}</p>"]
    facts = []
    if values.get("area_m2"):
        facts.append(f"area {float(values['area_m2']):.1f} m²")
    if values.get("confidence"):
        facts.append(f"confidence {float(values['confidence']):.2f}")
    if facts:
        lines.append(f"<p>{h(', '.join(facts))}</p>")
    if image is not None:
        lines.append(f'<p><img src="{h(image)}" alt="{h(values.get("change_id", ""))}"/></p>')
    rows = "".join(f"<tr><td>{h(k)}</td><td>{h(v)}</td></tr>" for k, v in values.items())
    lines.append(f"<table>{rows}</table>")
    return "".join(lines)


def to_kml(gdf, *, dates: Sequence | None = None, images: Mapping[str, str] | None = None,
           name: str = "changes") -> str:
    """The change table as a KML 2.2 document for Google Earth (see the module notes).

    Parameters
    ----------
    gdf : GeoDataFrame
        The change table (any CRS: reprojected to EPSG:4326); every column is
        written to ``ExtendedData``.
    dates : sequence, optional
        The series' acquisition dates: a demolished building is shown from the
        first of them (else from the beginning of the time slider).
    images : mapping, optional
        ``change_id`` to an image's address relative to the document (e.g.
        ``files/chg-0001.png`` inside a KMZ), shown in that change's balloon.
    name : str
        The document's name.

    Examples
    --------
    >>> from shapely.geometry import box
    >>> gdf = to_geodataframe([{"geometry": box(262000, 3729900, 262020, 3729930),
    ...     "change_id": "chg-0001", "kind": "demolished", "last_absent": "2014-01-01",
    ...     "first_present": "2015-01-01", "area_m2": 600.0, "confidence": 0.9, "score": 5.0,
    ...     "registration_rmse_px": 0.1, "n_observations": 6, "n_before": 2, "n_after": 4,
    ...     "building_id": None}], crs="EPSG:32637")
    >>> kml = to_kml(gdf, dates=["2013-06-01", "2014-01-01", "2015-01-01"])
    >>> "<TimeSpan><begin>2013-06-01</begin><end>2014-01-01</end></TimeSpan>" in kml, "None" in kml
    (True, False)
    """
    import shapely

    g = gdf.to_crs("EPSG:4326") if gdf.crs is not None else gdf
    geoms = shapely.orient_polygons(g.geometry.values, exterior_cw=False)   # as RFC 7946 asks
    geom_col = g.geometry.name
    columns = [c for c in g.columns if c != geom_col]
    date_cols = {c for c in columns if _is_date_column(g, c)}
    iso = sorted(d for d in (_iso_date(v, "dates") for v in (dates or ())) if d is not None)
    start = iso[0] if iso else None
    images = {str(k): v for k, v in (images or {}).items()}

    styles = []
    for kind, rgb in [*KIND_COLOURS.items(), ("other", _OTHER_COLOUR)]:
        styles.append(f'<Style id="kind-{kind}"><LineStyle><color>{_kml_colour(rgb, 0xFF)}</color>'
                      f"<width>2</width></LineStyle><PolyStyle><color>{_kml_colour(rgb, _FILL_ALPHA)}"
                      "</color><fill>1</fill><outline>1</outline></PolyStyle>"
                      "<BalloonStyle><text>$[description]</text></BalloonStyle></Style>")
    folders: dict[str, list[str]] = {}
    for i, (_, row) in enumerate(g.iterrows()):
        values = {c: t for c in columns
                  if (t := _text(row[c], date=c in date_cols, column=c)) is not None}
        kind = values.get("kind", "")
        cid = values.get("change_id", f"change {i + 1}")
        if kind == "demolished":            # standing from the start until the last image showing it
            begin, end = start, values.get("last_absent")
        else:                               # new, modified: from the first image showing it, and stays
            begin, end = values.get("first_present"), None
        span = "".join(f"<{t}>{v}</{t}>" for t, v in (("begin", begin), ("end", end)) if v)
        span = f"<TimeSpan>{span}</TimeSpan>" if span else ""
        style = kind if kind in KIND_COLOURS else "other"
        data = "".join(f'<Data name="{_x(c)}"><value>{_x(v)}</value></Data>' for c, v in values.items())
        folders.setdefault(kind, []).append(
            f"<Placemark><name>{_x(cid)}</name>"
            f"<description>{_x(_balloon(values, images.get(values.get('change_id'))))}</description>"
            f"{span}<styleUrl>#kind-{style}</styleUrl><ExtendedData>{data}</ExtendedData>"
            f"{_kml_geometry(geoms[i])}</Placemark>")
    legend = ("Changes found by changedetect. Colours: " +
              ", ".join(f"{k} {v}" for k, v in KIND_COLOURS.items()) +
              ". Time slider: a new or modified building appears at its first_present date and "
              "stays; a demolished one is shown from the first acquisition until its last_absent "
              "date (the last acquisition in which it still stands).")
    order = [k for k in _KIND_ORDER if k in folders] + sorted(k for k in folders if k not in _KIND_ORDER)
    body = "".join(f"<Folder><name>{_x(k or 'unknown')}</name>{''.join(folders[k])}</Folder>" for k in order)
    return ('<?xml version="1.0" encoding="UTF-8"?>\n'
            f'<kml xmlns="{_KML_NS}"><Document><name>{_x(name)}</name>'
            f"<description>{_x(legend)}</description>\n" + "\n".join(styles) + "\n" + body +
            "\n</Document></kml>\n")


_PNG, _JPEG = b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff"


def _kmz_files(gdf, images: Mapping[str, bytes] | None) -> list[tuple[str, str, bytes]]:
    """``(change_id, name in the KMZ, bytes)`` of the images of changes in the table, by name."""
    if not images:
        return []
    ids = {str(v) for v in gdf["change_id"]} if "change_id" in gdf.columns else set()
    out, used = [], set()
    for cid in sorted(str(k) for k in images):
        if cid not in ids:
            continue
        data = bytes(images[cid])
        ext = "png" if data.startswith(_PNG) else "jpg" if data.startswith(_JPEG) else None
        if ext is None:
            raise InputError(f"The image given for change {cid} is neither PNG nor JPEG; pass the "
                             "bytes of a PNG (or JPEG) file.")
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", cid).lstrip(".") or "change"
        name, n = f"files/{safe}.{ext}", 2
        while name in used:
            name, n = f"files/{safe}-{n}.{ext}", n + 1
        used.add(name)
        out.append((cid, name, data))
    return out


def _zip_entry(z: zipfile.ZipFile, name: str, data: bytes, *, deflate: bool) -> None:
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))     # fixed: same bytes every run
    info.create_system, info.external_attr = 3, 0o644 << 16
    info.compress_type = zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED
    z.writestr(info, data, compresslevel=9 if deflate else None)


def _write_kmz(gdf, path: Path, *, dates, files, name: str) -> None:
    doc = to_kml(gdf, dates=dates, images={cid: n for cid, n, _ in files}, name=name)
    buf = _io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        _zip_entry(z, "doc.kml", doc.encode("utf-8"), deflate=True)      # first, as Google Earth wants
        for _, n, data in sorted(files, key=lambda f: f[1]):
            _zip_entry(z, n, data, deflate=False)                          # PNG/JPEG: compressed already
    path.write_bytes(buf.getvalue())


def export(gdf, out_dir: str | os.PathLike, *, formats: Sequence[str] = ("gpkg", "geojson"),
           stem: str = "changes", dates: Sequence | None = None,
           images: Mapping[str, bytes] | None = None) -> dict[str, Path]:
    """Write the change table in each format, atomically (see the module notes for each format).

    Parameters
    ----------
    gdf : GeoDataFrame
        The change table; every column is written, also ones added after detection.
    out_dir : path-like
        Folder of ``<stem>.gpkg`` (layer ``<stem>``), ``.geojson``, ``.kml``, ``.kmz``.
    formats : sequence of str
        Among :data:`FORMATS`.
    stem : str
        File name (and GeoPackage layer) without extension.
    dates : sequence, optional
        The series' acquisition dates (``datetime.date`` or ISO text): in the
        KML/KMZ a demolished building is shown from the first of them.
    images : mapping, optional
        ``change_id`` to the bytes of a PNG (or JPEG) image of that change,
        packed into the KMZ as ``files/<change_id>.png`` and shown in the
        change's balloon. Images of ids not in the table are left out; the
        other formats ignore them.

    Returns
    -------
    dict
        Format to written path.

    Raises
    ------
    InputError
        An unknown format, a date column holding something else than dates, an
        image that is neither PNG nor JPEG (checked before anything is written).
    """
    import pyogrio

    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise InputError(f"Unknown output format {bad}; choose from {', '.join(FORMATS)}.")
    out_dir = Path(out_dir)
    files = _kmz_files(gdf, images) if "kmz" in formats else []
    written: dict[str, Path] = {}
    # a fixed timestamp keeps GeoPackage bytes identical from run to run
    pyogrio.set_gdal_config_options({"OGR_CURRENT_DATE": "2000-01-01T00:00:00Z"})
    local = is_unreferenced(gdf.crs)
    for fmt in formats:
        path = out_dir / f"{stem}.{fmt}"
        if fmt in ("kml", "kmz") and local:
            import warnings

            from .errors import ChangeDetectWarning

            warnings.warn(f"{path.name} not written: {fmt.upper()} needs positions on Earth and the "
                          "images are not georeferenced.", ChangeDetectWarning, stacklevel=2)
            continue
        with atomic_path(path) as tmp:
            if fmt == "gpkg":
                _write_ogr(gdf, tmp, layer=stem, driver="GPKG")
            elif fmt == "geojson" and local:
                # not georeferenced: metres on the reference image's local grid, not RFC 7946 lon/lat
                _write_ogr(gdf, tmp, driver="GeoJSON", dates_as="text", layer_options={"WRITE_NAME": "NO"})
            elif fmt == "geojson":
                _write_geojson(gdf, tmp)
            elif fmt == "kml":
                tmp.write_text(to_kml(gdf, dates=dates, name=stem), encoding="utf-8")
            else:
                _write_kmz(gdf, tmp, dates=dates, files=files, name=stem)
        written[fmt] = path
    return written


def _write_geojson(frame, path: Path) -> None:
    """RFC 7946 GeoJSON: EPSG:4326, right-hand rule, no ``crs``, dates as text, 7 decimals."""
    _write_ogr(frame.to_crs("EPSG:4326"), path, driver="GeoJSON", dates_as="text",
               layer_options={"RFC7946": "YES", "WRITE_NAME": "NO",
                              "COORDINATE_PRECISION": str(COORDINATE_DECIMALS)})


def buildings_to_frames(footprints, records: Sequence[Mapping], date_rows: Sequence[Mapping],
                        masks: Sequence[Mapping], *, crs):
    """The three per-building tables from the pipeline's records.

    Returns
    -------
    buildings : GeoDataFrame
        One row per footprint (its geometry), :data:`BUILDING_COLUMNS`.
    dates : DataFrame
        One row per footprint and date, :data:`BUILDING_DATE_COLUMNS`.
    masks : GeoDataFrame
        The changed part of each footprint that has one (``building_id``, ``area_m2``).
    """
    import geopandas as gpd
    import pandas as pd

    b = pd.DataFrame([{c: r.get(c) for c in BUILDING_COLUMNS} for r in records],
                     columns=list(BUILDING_COLUMNS))
    for c in ("confidence", "score", "fstat", "changed_fraction", "changed_area_m2", "area_m2"):
        b[c] = b[c].astype("float64")
    for c in ("n_observations", "n_before", "n_after"):
        b[c] = b[c].astype("int64")
    for c in ("kind", "last_absent", "first_present"):      # None stays None (pandas would say NaN)
        b[c] = pd.Series([r.get(c) for r in records], dtype=object)
    buildings = gpd.GeoDataFrame(b, geometry=list(footprints.geometry.values), crs=crs)
    dates = pd.DataFrame(list(date_rows), columns=list(BUILDING_DATE_COLUMNS))
    m = gpd.GeoDataFrame({"building_id": [r["building_id"] for r in masks],
                          "area_m2": [float(r["area_m2"]) for r in masks]},
                         geometry=[r["geometry"] for r in masks], crs=crs)
    return buildings, dates, m


def export_buildings(buildings, dates, masks, out_dir: str | os.PathLike, *,
                     formats: Sequence[str] = ("gpkg", "geojson")) -> dict[str, Path]:
    """Write the per-building tables next to the change table.

    * GeoPackage: layers ``buildings``, ``building_masks`` and ``building_dates``
      (an attribute table) added to ``changes.gpkg``, which must already exist;
      dates are OGR ``Date`` fields, as in the change table;
    * GeoJSON: ``buildings.geojson`` (RFC 7946, as the change table);
    * always ``building_dates.csv``, one row per building and date.

    Returns
    -------
    dict
        Output name to written path.
    """
    out_dir = Path(out_dir)
    written: dict[str, Path] = {}
    if "gpkg" in formats:
        path = out_dir / "changes.gpkg"
        if not path.exists():
            raise InputError(f"{path} does not exist; export the change table first.")
        _write_ogr(buildings, path, layer="buildings", driver="GPKG")
        _write_ogr(masks, path, layer="building_masks", driver="GPKG")
        _write_ogr(dates, path, layer="building_dates", driver="GPKG")
    if "geojson" in formats:
        path = out_dir / "buildings.geojson"
        with atomic_path(path) as tmp:
            if is_unreferenced(buildings.crs):
                _write_ogr(buildings, tmp, driver="GeoJSON", dates_as="text",
                           layer_options={"WRITE_NAME": "NO"})
            else:
                _write_geojson(buildings, tmp)
        written["buildings.geojson"] = path
    path = out_dir / "building_dates.csv"
    with atomic_path(path) as tmp:
        dates.to_csv(tmp, index=False, float_format="%.4f")
    written["building_dates.csv"] = path
    return written
