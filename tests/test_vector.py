"""The change table and its exports."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import struct
import warnings
import xml.etree.ElementTree as ET
import zipfile
import zlib

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import pytest
import shapely
from shapely.geometry import Polygon, box

from changedetect.errors import ChangeDetectWarning, InputError
from changedetect.io import local_crs
from changedetect.vector import COLUMNS, FORMATS, KIND_COLOURS, export, export_buildings, to_geodataframe, to_kml


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


# ------------------------------------------------------------------ the exports as users open them

K = "{http://www.opengis.net/kml/2.2}"
SERIES = ["2013-03-01", "2014-01-01", "2014-07-01", "2015-06-01", "2016-02-01"]
HOSTILE = "<script>alert(\"x\")</script> & 'q' ]]> \x01"


def _png(w=2, h=1) -> bytes:
    """A real (tiny) PNG file."""
    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))
    raw = b"".join(b"\x00" + bytes([255, 0, 0] * w) for _ in range(h))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def table():
    """One change of each kind, a clockwise outline with a hole, missing values and hostile text."""
    base = dict(area_m2=600.0, confidence=0.9, score=12.5, registration_rmse_px=0.08, n_observations=5,
                n_before=2, n_after=3, building_id=None)
    cw_with_hole = Polygon([(262100, 3729900), (262100, 3729940), (262140, 3729940), (262140, 3729900)],
                           [[(262110, 3729910), (262130, 3729910), (262130, 3729930), (262110, 3729930)]])
    recs = [dict(base, geometry=box(262000, 3729900, 262020, 3729930), change_id="chg-0001", kind="new",
                 last_absent="2014-01-01", first_present="2014-07-01", registration_rmse_px=float("nan")),
            dict(base, geometry=cw_with_hole, change_id="chg-0002", kind="demolished",
                 last_absent="2014-07-01", first_present="2015-06-01", building_id=HOSTILE),
            dict(base, geometry=box(262200, 3729900, 262230, 3729920), change_id="chg-0003", kind="modified",
                 last_absent="2015-06-01", first_present="2016-02-01", building_id="b-7")]
    gdf = to_geodataframe(recs, crs="EPSG:32637")
    # columns added after detection (the review's) flow into every format with no code change
    gdf["review_status"] = ["accepted", None, "rejected"]
    gdf["review_note"] = [None, HOSTILE, "roof & walls"]
    return gdf


def _placemarks(root):
    return {pm.find(f"{K}name").text: pm for pm in root.iter(f"{K}Placemark")}


def _data(pm):
    return {d.get("name"): d.find(f"{K}value").text for d in pm.iter(f"{K}Data")}


def _rings(pm):
    """Every ring's (lon, lat) array, exteriors first per polygon, as ('outer'|'inner', array)."""
    out = []
    for poly in pm.iter(f"{K}Polygon"):
        for tag, which in (("outerBoundaryIs", "outer"), ("innerBoundaryIs", "inner")):
            for b in poly.findall(f"{K}{tag}"):
                text = b.find(f"{K}LinearRing/{K}coordinates").text
                out.append((which, np.array([[float(v) for v in p.split(",")] for p in text.split()])))
    return out


def _visible(pm, day: str) -> bool:
    """Google Earth's rule: shown when the slider's time lies in [begin, end] (a missing end is open)."""
    span = pm.find(f"{K}TimeSpan")
    begin, end = span.findtext(f"{K}begin"), span.findtext(f"{K}end")
    return (begin is None or begin <= day) and (end is None or day <= end)


def test_kml_structure_styles_and_attributes(tmp_path):
    gdf = table()
    paths = export(gdf, tmp_path, formats=("geojson", "kml"), dates=SERIES)
    root = ET.parse(paths["kml"]).getroot()                       # parses: everything was escaped
    assert root.tag == f"{K}kml" and root.find(f"{K}Document") is not None
    styles = {s.get("id"): s for s in root.iter(f"{K}Style")}
    assert {"kind-new", "kind-demolished", "kind-modified"} <= set(styles)
    fills = set()
    for kind, rgb in KIND_COLOURS.items():
        line = styles[f"kind-{kind}"].findtext(f"{K}LineStyle/{K}color")
        fill = styles[f"kind-{kind}"].findtext(f"{K}PolyStyle/{K}color")
        # KML colours are aabbggrr: an opaque outline, a semi-transparent fill of the same colour
        assert line == "ff" + rgb[5:7] + rgb[3:5] + rgb[1:3] and fill[2:] == line[2:]
        assert 0 < int(fill[:2], 16) < 255
        fills.add(fill)
    assert len(fills) == 3
    pms = _placemarks(root)
    assert sorted(pms) == ["chg-0001", "chg-0002", "chg-0003"]
    geojson = {f["properties"]["change_id"]: f for f in json.loads(paths["geojson"].read_text())["features"]}
    for cid, pm in pms.items():
        kind = gdf.set_index("change_id").loc[cid, "kind"]
        assert pm.findtext(f"{K}styleUrl") == f"#kind-{kind}"
        assert pm.find(f"{K}TimeSpan") is not None and pm.find(f".//{K}Polygon") is not None
        rings = _rings(pm)
        assert rings and rings[0][0] == "outer"
        for which, r in rings:
            assert (r[0] == r[-1]).all() and len(r) >= 4                  # closed
            assert (np.abs(r[:, 0]) <= 180).all() and (np.abs(r[:, 1]) <= 90).all()
            assert 36 < r[0, 0] < 37 and 33 < r[0, 1] < 34                 # lon, lat (UTM 37N)
            # exteriors counter-clockwise, holes clockwise, as in the GeoJSON
            assert shapely.LinearRing(r).is_ccw == (which == "outer")
        # the same coordinates as the GeoJSON's
        gj = geojson[cid]["geometry"]["coordinates"]
        assert [len(x) for x in gj] == [len(r) for _, r in rings]
        for ring_json, (_, r) in zip(gj, rings):
            assert np.abs(np.array(ring_json) - r).max() < 1.5e-7
        # every attribute in ExtendedData, missing ones left out, never as "None"/"nan"
        data = _data(pm)
        row = gdf[gdf["change_id"] == cid].iloc[0]
        expected = {c for c in gdf.columns if c != "geometry" and not pd_isna(row[c])}
        assert set(data) == expected
        assert "None" not in data.values() and "nan" not in data.values()
    assert not {"building_id", "registration_rmse_px"} & set(_data(pms["chg-0001"]))
    assert _data(pms["chg-0003"])["review_note"] == "roof & walls"
    # hostile text survives the escaping, as text (the control character XML forbids is replaced)
    assert _data(pms["chg-0002"])["building_id"] == HOSTILE.replace("\x01", "\ufffd")
    assert _data(pms["chg-0002"])["review_note"] == HOSTILE.replace("\x01", "\ufffd")
    balloon = pms["chg-0002"].findtext(f"{K}description")
    assert "<script>" not in balloon and "&lt;script&gt;" in balloon        # HTML-escaped inside
    for needle in ("demolished", "2014-07-01", "2015-06-01", "area 600.0 m²", "confidence 0.90"):
        assert needle in balloon, needle


def pd_isna(v):
    return v is None or (pd.api.types.is_scalar(v) and pd.isna(v))


def test_kml_time_spans_show_what_stands_at_each_acquisition(tmp_path):
    gdf = table()
    pms = _placemarks(ET.fromstring(to_kml(gdf, dates=SERIES).encode()))
    columns = ["change_id", "kind", "last_absent", "first_present"]
    for cid, kind, la, fp in gdf[columns].itertuples(index=False):
        pm = pms[cid]
        span = {e.tag[len(K):]: e.text for e in pm.find(f"{K}TimeSpan")}
        if kind == "demolished":
            # from the first acquisition until the last one in which it still stands
            assert span == {"begin": SERIES[0], "end": la}
        else:
            assert span == {"begin": fp}                         # appears, and stays
        for day in SERIES:
            stands = day <= la if kind == "demolished" else day >= fp
            assert _visible(pm, day) == stands, (cid, day)
    # before the demolition it is shown, after it it is not
    assert _visible(pms["chg-0002"], "2014-01-01") and not _visible(pms["chg-0002"], "2015-06-01")
    assert not _visible(pms["chg-0001"], "2014-01-01") and _visible(pms["chg-0001"], "2016-02-01")
    # without the series' dates a demolished building is shown from the slider's start
    pm = _placemarks(ET.fromstring(to_kml(gdf).encode()))["chg-0002"]
    assert pm.find(f"{K}TimeSpan/{K}begin") is None and pm.findtext(f"{K}TimeSpan/{K}end") == "2014-07-01"


def test_kmz_packs_doc_kml_first_and_the_images_it_shows(tmp_path):
    gdf = table()
    images = {"chg-0001": _png(), "chg-0003": _png(3, 2), "chg-9999": _png()}   # 9999: not in the table
    a = export(gdf, tmp_path / "a", formats=("kmz",), dates=SERIES, images=images)["kmz"]
    b = export(gdf, tmp_path / "b", formats=("kmz",), dates=SERIES, images=dict(reversed(images.items())))
    assert a.read_bytes() == b["kmz"].read_bytes()                       # deterministic bytes
    with zipfile.ZipFile(a) as z:
        names = z.namelist()
        assert names == ["doc.kml", "files/chg-0001.png", "files/chg-0003.png"]
        assert {i.date_time for i in z.infolist()} == {(1980, 1, 1, 0, 0, 0)}
        assert z.read("files/chg-0003.png") == images["chg-0003"]
        pms = _placemarks(ET.fromstring(z.read("doc.kml")))
    srcs = {}
    for cid, pm in pms.items():
        balloon = pm.findtext(f"{K}description")
        found = [s.split('"')[0] for s in balloon.split('<img src="')[1:]]
        srcs[cid] = found
        assert all(s in names for s in found)                             # every image referenced exists
    assert srcs == {"chg-0001": ["files/chg-0001.png"], "chg-0002": [], "chg-0003": ["files/chg-0003.png"]}
    # GDAL (as QGIS) reads it: one layer per kind, with the time spans and attributes
    layers = sorted(name for name, _ in pyogrio.list_layers(a))
    assert layers == ["demolished", "modified", "new"]
    demolished = pyogrio.read_dataframe(a, layer="demolished")
    assert str(demolished["end"].iloc[0])[:10] == "2014-07-01"
    assert demolished["change_id"].iloc[0] == "chg-0002"
    # without images: doc.kml alone
    with zipfile.ZipFile(export(gdf, tmp_path / "c", formats=("kmz",))["kmz"]) as z:
        assert z.namelist() == ["doc.kml"]


def test_kmz_refuses_an_image_that_is_not_one_before_writing(tmp_path):
    with pytest.raises(InputError, match="chg-0001.*PNG"):
        export(table(), tmp_path, formats=("gpkg", "kmz"), images={"chg-0001": b"GIF89a..."})
    assert not tmp_path.exists() or not any(tmp_path.iterdir())


def test_gpkg_dates_are_date_fields_and_nulls_are_null(tmp_path):
    gdf = table()
    path = export(gdf, tmp_path, formats=("gpkg",))["gpkg"]
    info = pyogrio.read_info(path, layer="changes")
    types = dict(zip(info["fields"], info["ogr_types"]))
    assert types["last_absent"] == types["first_present"] == "OFTDate"
    assert types["area_m2"] == "OFTReal" and types["n_after"].startswith("OFTInteger")
    assert types["review_status"] == types["building_id"] == "OFTString"
    with sqlite3.connect(path) as con:
        sql = con.execute("select sql from sqlite_master where name = 'changes'").fetchone()[0]
        rows = con.execute("select change_id, last_absent, first_present, building_id, registration_rmse_px, "
                           "review_status from changes order by fid").fetchall()
    assert '"last_absent" DATE' in sql and '"first_present" DATE' in sql
    assert rows[0] == ("chg-0001", "2014-01-01", "2014-07-01", None, None, "accepted")   # real nulls
    assert rows[1][3] == HOSTILE and rows[1][5] is None
    # read back, the dates are dates; re-exported from there (as a review does), they stay the same
    back = gpd.read_file(path, layer="changes")
    assert str(back["first_present"].dtype).startswith("datetime64")
    again = export(back, tmp_path / "again", formats=("gpkg", "kml"), dates=SERIES)
    with sqlite3.connect(again["gpkg"]) as con:
        assert con.execute("select first_present from changes order by fid").fetchall() == [
            ("2014-07-01",), ("2015-06-01",), ("2016-02-01",)]
    assert "<TimeSpan><begin>2014-07-01</begin></TimeSpan>" in again["kml"].read_text()


def test_no_none_strings_in_any_format(tmp_path):
    gdf = table()
    paths = export(gdf, tmp_path, formats=FORMATS, dates=SERIES, images={"chg-0001": _png()})
    with zipfile.ZipFile(paths["kmz"]) as z:
        texts = {"kml": paths["kml"].read_text(), "kmz": z.read("doc.kml").decode(),
                 "geojson": paths["geojson"].read_text()}
    for name, text in texts.items():
        for word in (">None<", '"None"', ">nan<", '"nan"', "NaN", "NaT"):
            assert word not in text, (name, word)
    features = json.loads(texts["geojson"])["features"]
    assert features[0]["properties"]["building_id"] is None
    assert features[0]["properties"]["registration_rmse_px"] is None
    assert features[1]["properties"]["review_status"] is None
    with sqlite3.connect(paths["gpkg"]) as con:
        cells = [v for row in con.execute("select * from changes") for v in row]
    assert "None" not in cells and "nan" not in cells and None in cells


def test_geojson_is_rfc7946(tmp_path):
    path = export(table(), tmp_path, formats=("geojson",))["geojson"]
    doc = json.loads(path.read_text())
    assert "crs" not in doc and doc["type"] == "FeatureCollection"
    for f in doc["features"]:
        assert "crs" not in f
        rings = f["geometry"]["coordinates"]
        # right-hand rule: exterior counter-clockwise, holes clockwise
        assert shapely.LinearRing(rings[0]).is_ccw
        assert all(not shapely.LinearRing(r).is_ccw for r in rings[1:])
        for x, y in (p for r in rings for p in r):
            assert 36 < x < 37 and 33 < y < 34
            assert len(repr(x).split(".")[1]) <= 7 and len(repr(y).split(".")[1]) <= 7
        assert dt.date.fromisoformat(f["properties"]["first_present"])      # ISO text
    assert len(doc["features"][1]["geometry"]["coordinates"]) == 2          # the hole is kept
    # within a couple of centimetres of the table's outlines (7 decimals of a degree)
    back = gpd.read_file(path).to_crs(32637)
    for g0, g1 in zip(table().geometry, back.geometry):
        assert g0.hausdorff_distance(g1) < 0.02


def test_building_tables_have_date_fields(tmp_path):
    gdf = table()
    export(gdf, tmp_path, formats=("gpkg",))
    buildings = gpd.GeoDataFrame({"building_id": ["b-1", "b-2"], "status": ["unchanged", "changed"],
                                  "kind": pd.Series([None, "new"], dtype=object),
                                  "last_absent": pd.Series([None, "2014-01-01"], dtype=object),
                                  "first_present": pd.Series([None, "2014-07-01"], dtype=object)},
                                 geometry=[box(262000, 3729900, 262010, 3729910)] * 2, crs="EPSG:32637")
    dates = pd.DataFrame({"building_id": ["b-1", "b-1"], "date": ["2014-01-01", "2014-07-01"],
                          "status": ["unchanged", "not_observable"], "mean_score": [1.5, np.nan]})
    masks = gpd.GeoDataFrame({"building_id": ["b-2"], "area_m2": [100.0]},
                             geometry=[box(262000, 3729900, 262010, 3729910)], crs="EPSG:32637")
    written = export_buildings(buildings, dates, masks, tmp_path, formats=("gpkg", "geojson"))
    with sqlite3.connect(tmp_path / "changes.gpkg") as con:
        b_sql = con.execute("select sql from sqlite_master where name = 'buildings'").fetchone()[0]
        d_sql = con.execute("select sql from sqlite_master where name = 'building_dates'").fetchone()[0]
        assert con.execute("select kind, last_absent from buildings order by fid").fetchall() == [
            (None, None), ("new", "2014-01-01")]
        scores = con.execute("select mean_score from building_dates order by fid").fetchall()
        assert scores == [(1.5,), (None,)]
    assert '"last_absent" DATE' in b_sql and '"first_present" DATE' in b_sql and '"date" DATE' in d_sql
    props = [f["properties"] for f in json.loads(written["buildings.geojson"].read_text())["features"]]
    assert props[0]["kind"] is None and props[0]["last_absent"] is None
    assert props[1]["first_present"] == "2014-07-01"
    csv = written["building_dates.csv"].read_text()
    assert "None" not in csv and "nan" not in csv.lower()


def test_kml_and_kmz_are_not_written_for_a_local_grid(tmp_path):
    gdf = table().set_crs(local_crs(0.5), allow_override=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        paths = export(gdf, tmp_path, formats=("geojson", "kml", "kmz"))
    assert sorted(paths) == ["geojson"]
    assert sum(issubclass(w.category, ChangeDetectWarning) for w in caught) == 2
    xs = [p[0] for f in json.loads(paths["geojson"].read_text())["features"]
          for p in f["geometry"]["coordinates"][0]]
    assert min(xs) >= 262000                                       # metres on the grid, not degrees
