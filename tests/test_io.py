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
    # named products: the acquisition, never the processing date
    ("LC80440342016123LGN00_B4.TIF", dt.date(2016, 5, 2)),                  # Landsat scene id (day 123)
    ("LC08_L1TP_044034_20160502_20170223_01_T1_B4.TIF", dt.date(2016, 5, 2)),  # processed 2017-02-23
    ("LT05_L1TP_119038_19950612_20160926_01_T1.tif", dt.date(1995, 6, 12)),
    ("S2A_MSIL1C_20170621T105031_N0205_R051_T30UWU_20170621T105351.tif", dt.date(2017, 6, 21)),
    ("S2A_OPER_PRD_MSIL1C_PDMC_20160707T021012_R008_V20150821T105414_20150821T105414.SAFE",
     dt.date(2015, 8, 21)),                                                  # validity start
    ("S2A_OPER_MSI_L1C_TL_EPA__20160706T155721_A000849_T30UWU_B02.tif", None),  # processing only
    ("17MAY22084209-M1BS-058045890010_01_P001.TIF", dt.date(2017, 5, 22)),   # Maxar catalogue name
    ("20180115_183456_1012_3B_AnalyticMS.tif", dt.date(2018, 1, 15)),        # Planet scene
    ("site_2016-123.tif", dt.date(2016, 5, 2)),                              # year and day of year
    ("site_2016123.tif", dt.date(2016, 5, 2)),
    ("site_2015-366.tif", None),                                             # 2015 has 365 days
    ("global_monthly_2018_01_mosaic_L15-0357E-1223N_1429_3296_13.tif", dt.date(2018, 1, 1)),
    ("pre/tile_0_107.tif", None),
])
def test_parse_date(text, expected):
    assert parse_date(text) == expected


def test_year_month_names_are_marked(tmp_path):
    arr = np.ones((1, 8, 8), "uint16")
    p = write_raster(tmp_path / "global_monthly_2018_07_mosaic_x.tif", arr, transform=T0, crs="EPSG:32637")
    s = read_scene(p)
    assert (s.date, s.date_precision, s.date_source) == (dt.date(2018, 7, 1), "month",
                                                          "filename (year and month)")
    q = write_raster(tmp_path / "LC80440342016123LGN00.tif", arr, transform=T0, crs="EPSG:32637")
    s = read_scene(q)
    assert s.date == dt.date(2016, 5, 2) and s.date_precision == "day"
    assert s.date_source == "filename (Landsat scene id)"


def test_old_esa_name_never_gives_its_processing_date(tmp_path):
    arr = np.ones((1, 8, 8), "uint16")
    name = "S2A_OPER_MSI_L1C_TL_EPA__20160706T155721_A000849_T30UWU_B02.tif"
    p = write_raster(tmp_path / name, arr, transform=T0, crs="EPSG:32637")
    with pytest.raises(DateError, match="processing date.*--manifest"):
        read_scene(p)
    # what the file holds is used instead
    q = write_raster(tmp_path / "held" / name, arr, transform=T0, crs="EPSG:32637",
                     tags={"ACQUISITION_DATE": "2015-08-21"})
    s = read_scene(q)
    assert s.date == dt.date(2015, 8, 21) and s.date_source == "tag:ACQUISITION_DATE"


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
    assert read_manifest(m) == {"/data/a.tif": dt.date(2015, 3, 4),
                                str(tmp_path / "b.tif"): dt.date(2016, 1, 2)}
    m.write_text("file,when\na.tif,2015-03-04\n")
    with pytest.raises(DateError, match="'date' column"):
        read_manifest(m)
    m.write_text("path,date\na.tif,March\n")
    with pytest.raises(DateError, match="Line 2"):
        read_manifest(m)


def test_manifest_matches_paths_relative_to_its_folder(tmp_path):
    """pre/tile.tif and post/tile.tif are two files with two dates (they had one: "same date")."""
    from changedetect.io import manifest_date

    arr = np.ones((1, 8, 8), "uint16")
    pre = write_raster(tmp_path / "pre" / "tile_0_107.tif", arr, transform=T0, crs="EPSG:32637")
    post = write_raster(tmp_path / "post" / "tile_0_107.tif", arr, transform=T0, crs="EPSG:32637")
    m = tmp_path / "dates.csv"
    m.write_text("path,date\npre/tile_0_107.tif,2012-06-01\npost/tile_0_107.tif,2017-06-01\n")
    dates = read_manifest(m)
    assert read_scene(pre, manifest=dates).date == dt.date(2012, 6, 1)
    assert read_scene(post, manifest=dates).date == dt.date(2017, 6, 1)
    assert read_scene(post, manifest=dates).date_source == "manifest"
    # a base name listed once still matches from anywhere; listed twice with two dates it cannot
    other = write_raster(tmp_path / "elsewhere" / "tile_0_107.tif", arr, transform=T0, crs="EPSG:32637")
    with pytest.raises(DateError, match="several times"):
        manifest_date(dates, other)
    assert manifest_date({"x/a.tif": dt.date(2015, 1, 1)}, tmp_path / "a.tif") == dt.date(2015, 1, 1)


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


def _rgba(path, rgb, alpha, *, declare=True):
    import rasterio
    from rasterio.enums import ColorInterp

    arr = np.concatenate([rgb, alpha[None]]).astype("uint8")
    kw = dict(driver="GTiff", width=arr.shape[2], height=arr.shape[1], count=4, dtype="uint8",
              crs="EPSG:32637", transform=T0)
    if declare:
        kw.update(photometric="RGB", alpha="YES")
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", **kw) as dst:
        dst.write(arr)
        if declare:
            dst.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.alpha]
    return path


def test_rgba_alpha_is_validity_never_a_band(tmp_path):
    """SpaceNet 7 / Planet / QGIS RGBA exports: the alpha band was read as near-infrared."""
    from changedetect.stack import open_stack

    rng = np.random.default_rng(0)
    alpha = np.full((32, 32), 255, "uint8")
    alpha[:, :8] = 0                                     # outside the mosaic
    rgb = rng.integers(20, 230, (3, 32, 32))
    a = _rgba(tmp_path / "a_2018-01-15.tif", rgb, alpha)
    b = _rgba(tmp_path / "b_2018-06-15.tif", rgb, alpha)
    s = read_scene(a)
    assert (s.bands, s.band_roles, s.alpha, s.band_source) == ((1, 2, 3), ("red", "green", "blue"), 4,
                                                              "colour interpretation")
    stack = open_stack([a, b])
    assert stack.count == 3 and stack.band_index("nir") is None and stack.band_index("red") == 0
    data, valid = stack.read(0)
    assert data.shape == (3, 32, 32)
    assert not valid[:, :8].any() and valid[:, 8:].all()
    assert np.array_equal(data[:, :, 8:], rgb[:, :, 8:].astype("float32"))


def test_band_roles_from_descriptions_guess_and_declared(tmp_path):
    from changedetect.errors import InputError
    from changedetect.stack import open_stack

    arr = np.ones((4, 8, 8), "uint16")
    plain = write_raster(tmp_path / "p_2015-01-01.tif", arr, transform=T0, crs="EPSG:32637")
    s = read_scene(plain)
    assert s.band_roles == ("blue", "green", "red", "nir") and s.band_source.startswith("guess")
    s = read_scene(plain, bands=("red", "green", "blue", "nir"))
    assert s.band_roles == ("red", "green", "blue", "nir") and s.band_source == "--bands"
    s = read_scene(plain, bands=("red", "green", "blue", "alpha"))
    assert s.bands == (1, 2, 3) and s.alpha == 4
    with pytest.raises(InputError, match="p_2015-01-01.tif has 4 bands"):
        read_scene(plain, bands=("red", "green", "blue"))
    named = write_raster(tmp_path / "n_2015-01-01.tif", arr, transform=T0, crs="EPSG:32637",
                         band_descriptions=("B04", "B03", "B02", "B08"))
    assert read_scene(named).band_roles == ("red", "green", "blue", "nir")
    # a per-dataset mask band is validity too
    import rasterio

    m = write_raster(tmp_path / "m_2016-01-01.tif", np.full((4, 8, 8), 7, "uint16"), transform=T0,
                     crs="EPSG:32637", band_descriptions=("blue", "green", "red", "nir"))
    with rasterio.open(m, "r+") as dst:
        mask = np.full((8, 8), 255, "uint8")
        mask[:2] = 0
        dst.write_mask(mask)
    assert read_scene(m).has_mask
    _, valid = open_stack([named, m], reference=0).read(1)
    assert not valid[:2].any() and valid[2:].all()


def test_date_from_a_maxar_imd_sidecar(tmp_path):
    """GDAL reads a Maxar .IMD beside the image into its IMAGERY metadata; that date is used."""
    arr = np.ones((1, 8, 8), "uint16")
    p = write_raster(tmp_path / "scene.tif", arr, transform=T0, crs="EPSG:32637")
    (tmp_path / "scene.IMD").write_text('version = "28.4";\nBEGIN_GROUP = IMAGE_1\n\tsatId = "WV02";\n'
                                        "\tfirstLineTime = 2011-05-29T16:55:33.123456Z;\n"
                                        "END_GROUP = IMAGE_1\nEND;\n")
    s = read_scene(p)
    assert s.date == dt.date(2011, 5, 29) and s.date_source == "imagery:ACQUISITIONDATETIME"
