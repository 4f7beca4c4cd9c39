"""The change table and its exports."""

from __future__ import annotations

import geopandas as gpd
import pytest
from shapely.geometry import box

from changedetect.errors import InputError
from changedetect.vector import COLUMNS, export, to_geodataframe


def records():
    return [{"geometry": box(262000, 3729900, 262020, 3729930), "change_id": "chg-0001", "kind": "new",
             "last_absent": "2014-01-01", "first_present": "2015-06-01", "area_m2": 600.0,
             "confidence": 0.9, "score": 12.5, "registration_rmse_px": 0.08, "n_observations": 7, "n_before": 3, "n_after": 4,
             "building_id": None}]


def test_export_round_trip(tmp_path):
    gdf = to_geodataframe(records(), crs="EPSG:32637")
    paths = export(gdf, tmp_path, formats=("gpkg", "geojson", "kml"))
    g = gpd.read_file(paths["gpkg"], layer="changes")
    assert g.crs.to_epsg() == 32637
    assert list(g.columns) == list(COLUMNS) + ["geometry"]
    assert g.geometry.iloc[0].equals(gdf.geometry.iloc[0])
    j = gpd.read_file(paths["geojson"])
    assert j.crs.to_epsg() == 4326
    # RFC 7946 keeps 7 decimals of a degree: about a centimetre
    assert j.to_crs(32637).geometry.iloc[0].hausdorff_distance(gdf.geometry.iloc[0]) < 0.02
    assert j["first_present"].astype(str).iloc[0].startswith("2015-06-01")
    kml = paths["kml"].read_text()
    assert "<TimeSpan><begin>2015-06-01</begin></TimeSpan>" in kml and "chg-0001" in kml
    assert sorted(p.name for p in tmp_path.iterdir()) == ["changes.geojson", "changes.gpkg", "changes.kml"]


def test_gpkg_bytes_are_reproducible(tmp_path):
    gdf = to_geodataframe(records(), crs="EPSG:32637")
    a = export(gdf, tmp_path / "a", formats=("gpkg",))["gpkg"].read_bytes()
    b = export(gdf, tmp_path / "b", formats=("gpkg",))["gpkg"].read_bytes()
    assert a == b


def test_bad_records_and_formats(tmp_path):
    with pytest.raises(InputError, match="columns"):
        to_geodataframe([{"geometry": box(0, 0, 1, 1)}], crs="EPSG:32637")
    with pytest.raises(InputError, match="gpkg, geojson, kml"):
        export(to_geodataframe(records(), crs="EPSG:32637"), tmp_path, formats=("shp",))
