"""Change polygons as a GeoDataFrame, exported to GeoPackage, GeoJSON and KML.

The schema is one row per detected change (see DESIGN.md): ``geometry``,
``change_id``, ``kind``, ``last_absent``, ``first_present``, ``area_m2``,
``confidence``, ``score``, ``registration_rmse_px``, ``n_observations``,
``n_before``, ``n_after``, ``building_id``. Dates are ISO strings so that every format keeps them alike.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Mapping, Sequence
from xml.sax.saxutils import escape

from .config import FORMATS
from .errors import InputError
from .io import atomic_path, is_unreferenced

__all__ = ["COLUMNS", "FORMATS", "BUILDING_COLUMNS", "BUILDING_DATE_COLUMNS", "to_geodataframe",
           "export", "buildings_to_frames", "export_buildings"]

COLUMNS = ("change_id", "kind", "last_absent", "first_present", "area_m2", "confidence", "score",
           "registration_rmse_px", "n_observations", "n_before", "n_after", "building_id")
#: Columns of the per-building table (one row per given footprint).
BUILDING_COLUMNS = ("building_id", "status", "kind", "last_absent", "first_present", "confidence",
                    "score", "fstat", "changed_fraction", "changed_area_m2", "area_m2", "n_observations",
                    "n_before", "n_after")
#: Columns of the per-building, per-date table.
BUILDING_DATE_COLUMNS = ("building_id", "date", "status", "mean_score", "max_score",
                         "changed_fraction", "valid_fraction")
_DTYPES = {"change_id": "str", "kind": "str", "last_absent": "str", "first_present": "str",
           "area_m2": "float64", "confidence": "float64", "score": "float64",
           "registration_rmse_px": "float64", "n_observations": "int64", "n_before": "int64", "n_after": "int64",
           "building_id": "object"}


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


def _write_kml(gdf, path: Path) -> None:
    g = gdf.to_crs("EPSG:4326")
    # the schema's columns, then any the table adds (review_status, review_note after a review)
    columns = [*COLUMNS, *(c for c in g.columns if c not in COLUMNS and c != g.geometry.name)]
    parts = ['<?xml version="1.0" encoding="UTF-8"?>',
             '<kml xmlns="http://www.opengis.net/kml/2.2"><Document><name>changedetect</name>']
    for _, row in g.iterrows():
        geoms = list(getattr(row.geometry, "geoms", [row.geometry]))
        polys = []
        for p in geoms:
            rings = [p.exterior] + list(p.interiors)
            coords = [" ".join(f"{x:.8f},{y:.8f}" for x, y in r.coords) for r in rings]
            inner = "".join(f"<innerBoundaryIs><LinearRing><coordinates>{c}</coordinates>"
                            f"</LinearRing></innerBoundaryIs>" for c in coords[1:])
            polys.append(f"<Polygon><outerBoundaryIs><LinearRing><coordinates>{coords[0]}"
                         f"</coordinates></LinearRing></outerBoundaryIs>{inner}</Polygon>")
        geom = polys[0] if len(polys) == 1 else f"<MultiGeometry>{''.join(polys)}</MultiGeometry>"
        data = "".join(f'<Data name="{c}"><value>{escape(str(row[c]))}</value></Data>' for c in columns)
        # TimeSpan begins at the first acquisition that shows the change
        parts.append(f"<Placemark><name>{escape(row.change_id)} ({escape(row.kind)})</name>"
                     f"<TimeSpan><begin>{row.first_present}</begin></TimeSpan>"
                     f"<ExtendedData>{data}</ExtendedData>{geom}</Placemark>")
    parts.append("</Document></kml>")
    path.write_text("\n".join(parts), encoding="utf-8")


def export(gdf, out_dir: str | os.PathLike, *, formats: Sequence[str] = ("gpkg", "geojson"),
           stem: str = "changes") -> dict[str, Path]:
    """Write the change table in each format, atomically.

    GeoPackage keeps the stack's CRS (layer ``changes``); GeoJSON is written in
    EPSG:4326 as RFC 7946 asks; KML (EPSG:4326) has a ``TimeSpan`` per change so
    Google Earth's time slider shows when each one appeared.

    Returns
    -------
    dict
        Format to written path.
    """
    import pyogrio

    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise InputError(f"Unknown output format {bad}; choose from {', '.join(FORMATS)}.")
    out_dir = Path(out_dir)
    written: dict[str, Path] = {}
    # a fixed timestamp keeps GeoPackage bytes identical from run to run
    pyogrio.set_gdal_config_options({"OGR_CURRENT_DATE": "2000-01-01T00:00:00Z"})
    local = is_unreferenced(gdf.crs)
    for fmt in formats:
        path = out_dir / f"{stem}.{fmt}"
        if fmt == "kml" and local:
            import warnings

            from .errors import ChangeDetectWarning

            warnings.warn(f"{path.name} not written: KML needs positions on Earth and the images are "
                          "not georeferenced.", ChangeDetectWarning, stacklevel=2)
            continue
        with atomic_path(path) as tmp:
            if fmt == "gpkg":
                gdf.to_file(tmp, layer=stem, driver="GPKG", engine="pyogrio")
            elif fmt == "geojson" and local:
                # not georeferenced: metres on the reference image's local grid, not RFC 7946 lon/lat
                gdf.to_file(tmp, driver="GeoJSON", engine="pyogrio", layer_options={"WRITE_NAME": "NO"})
            elif fmt == "geojson":
                gdf.to_crs("EPSG:4326").to_file(tmp, driver="GeoJSON", engine="pyogrio",
                                                 layer_options={"RFC7946": "YES",
                                                                "WRITE_NAME": "NO"})
            else:
                _write_kml(gdf, tmp)
        written[fmt] = path
    return written


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
    * GeoJSON: ``buildings.geojson`` (EPSG:4326);
    * always ``building_dates.csv``, one row per building and date.

    Returns
    -------
    dict
        Output name to written path.
    """
    import pyogrio

    out_dir = Path(out_dir)
    written: dict[str, Path] = {}
    if "gpkg" in formats:
        path = out_dir / "changes.gpkg"
        if not path.exists():
            raise InputError(f"{path} does not exist; export the change table first.")
        buildings.to_file(path, layer="buildings", driver="GPKG", engine="pyogrio")
        masks.to_file(path, layer="building_masks", driver="GPKG", engine="pyogrio")
        pyogrio.write_dataframe(dates, path, layer="building_dates", driver="GPKG")
    if "geojson" in formats:
        path = out_dir / "buildings.geojson"
        with atomic_path(path) as tmp:
            buildings.to_crs("EPSG:4326").to_file(tmp, driver="GeoJSON", engine="pyogrio",
                                                   layer_options={"RFC7946": "YES", "WRITE_NAME": "NO"})
        written["buildings.geojson"] = path
    path = out_dir / "building_dates.csv"
    with atomic_path(path) as tmp:
        dates.to_csv(tmp, index=False, float_format="%.4f")
    written["building_dates.csv"] = path
    return written
