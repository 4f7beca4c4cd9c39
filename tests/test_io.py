"""Scene reading, dates, manifests and atomic writes."""

from __future__ import annotations

import datetime as dt
import hashlib

import numpy as np
import pytest
import rasterio

from changedetect.errors import CRSError, DateError, OutputError, UnreadableFileError
from changedetect.io import atomic_path, parse_date, read_manifest, read_scene, write_raster

from conftest import T0


@pytest.mark.parametrize("text,expected", [
    ("site_2016-05-29.tif", dt.date(2016, 5, 29)),
    ("site_2016_05_29.tif", dt.date(2016, 5, 29)),
    ("20160529_ps.tif", dt.date(2016, 5, 29)),
    ("S2A_MSIL1C_20160529T153631_N0202.tif", dt.date(2016, 5, 29)),
    ("2016:05:29 10:30:00", dt.date(2016, 5, 29)),
    ("tile_123456789.tif", None),          # digits, but no date
    ("site_2016-13-40.tif", None),         # not a valid calendar date
])
def test_parse_date(text, expected):
    assert parse_date(text) == expected


def test_date_precedence_manifest_name_tag(tmp_path):
    arr = np.ones((1, 8, 8), "uint16")
    p = write_raster(tmp_path / "a_2015-01-01.tif", arr, transform=T0, crs="EPSG:32637",
                     tags={"TIFFTAG_DATETIME": "2014:02:03 10:00:00"})
    assert read_scene(p).date == dt.date(2015, 1, 1)
    assert read_scene(p).date_source == "filename"
    assert read_scene(p, manifest={"a_2015-01-01.tif": dt.date(2012, 1, 1)}).date == dt.date(2012, 1, 1)
    q = write_raster(tmp_path / "noname.tif", arr, transform=T0, crs="EPSG:32637",
                     tags={"TIFFTAG_DATETIME": "2014:02:03 10:00:00"})
    s = read_scene(q)
    assert s.date == dt.date(2014, 2, 3) and s.date_source == "tag:TIFFTAG_DATETIME"
    assert s.sha256 == hashlib.sha256(q.read_bytes()).hexdigest()


def test_read_scene_errors_name_the_file(tmp_path):
    with pytest.raises(UnreadableFileError, match="nope.tif"):
        read_scene(tmp_path / "nope.tif")
    bad = tmp_path / "text_2015-01-01.tif"
    bad.write_text("hello")
    with pytest.raises(UnreadableFileError, match="text_2015-01-01.tif"):
        read_scene(bad)
    p = write_raster(tmp_path / "x_2015-01-01.tif", np.ones((1, 4, 4), "uint8"), transform=T0, crs=None)
    with pytest.raises(CRSError, match="rio edit-info"):
        read_scene(p)
    q = write_raster(tmp_path / "nodate.tif", np.ones((1, 4, 4), "uint8"), transform=T0, crs="EPSG:32637")
    with pytest.raises(DateError, match="--manifest"):
        read_scene(q)


def test_manifest(tmp_path):
    m = tmp_path / "m.csv"
    m.write_text("file,date\n/data/a.tif,2015-03-04\nb.tif,2016-01-02T10:00:00\n")
    assert read_manifest(m) == {"a.tif": dt.date(2015, 3, 4), "b.tif": dt.date(2016, 1, 2)}
    m.write_text("file,when\na.tif,2015-03-04\n")
    with pytest.raises(DateError, match="'date' column"):
        read_manifest(m)
    m.write_text("path,date\na.tif,March\n")
    with pytest.raises(DateError, match="Line 2"):
        read_manifest(m)


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.tif"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []


def test_atomic_path_unwritable_folder(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputError, match="Choose another output folder"):
        with atomic_path(blocker / "sub" / "a.txt"):
            pass


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "float32"])
def test_write_raster_round_trip(tmp_path, dtype):
    arr = (np.arange(3 * 300 * 260).reshape(3, 300, 260) % 200).astype(dtype)
    p = write_raster(tmp_path / "r.tif", arr, transform=T0, crs="EPSG:32637", nodata=0,
                     band_descriptions=("blue", "green", "red"))
    with rasterio.open(p) as src:
        np.testing.assert_array_equal(src.read(), arr)
        assert src.crs.to_epsg() == 32637 and src.transform == T0 and src.nodata == 0
        assert src.descriptions == ("blue", "green", "red")
