"""Reading scenes and their dates; writing rasters and files atomically.

Dates come, in order of precedence, from an explicit manifest (CSV with
``path,date`` columns), from the file name (``2016-05-29``, ``2016_05_29``,
``20160529``), or from a TIFF tag (``TIFFTAG_DATETIME``, ``ACQUISITIONDATETIME``,
``DATE_ACQUIRED``, ``ACQUISITION_DATE``).
"""

from __future__ import annotations

import contextlib
import csv
import datetime as _dt
import hashlib
import logging
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping

import numpy as np

from .errors import CRSError, DateError, InputError, OutputError, UnreadableFileError

__all__ = [
    "SceneInfo",
    "read_scene",
    "parse_date",
    "read_manifest",
    "sha256_file",
    "atomic_path",
    "write_raster",
    "write_text",
]

log = logging.getLogger(__name__)
log.addHandler(logging.NullHandler())

_DATE_TAGS = ("TIFFTAG_DATETIME", "ACQUISITIONDATETIME", "ACQUISITION_DATETIME",
              "DATE_ACQUIRED", "ACQUISITION_DATE", "DATETIME", "DATE")
# Separated dates first (least ambiguous), then compact YYYYMMDD not glued to other digits.
_DATE_PATTERNS = (
    re.compile(r"(?<!\d)((?:19|20)\d{2})[-_.:/]([01]\d)[-_.:/]([0-3]\d)(?!\d)"),
    re.compile(r"(?<!\d)((?:19|20)\d{2})([01]\d)([0-3]\d)(?:T\d{2,6})?(?!\d)"),
)


@dataclass(frozen=True)
class SceneInfo:
    """What changedetect knows about one input raster, without its pixels.

    Attributes
    ----------
    path : Path
        The file.
    date : datetime.date
        Acquisition date.
    crs : rasterio.crs.CRS
        Coordinate reference system.
    transform : affine.Affine
        Pixel (col, row) to map coordinates (upper-left corner convention).
    width, height, count : int
        Raster size and band count.
    dtype : str
        Data type of the bands.
    nodata : float or None
        Nodata value, if the file declares one.
    sha256 : str
        SHA-256 of the file's bytes, for the run record.
    date_source : str
        Where the date came from: ``manifest``, ``filename`` or ``tag:<NAME>``.
    """

    path: Path
    date: _dt.date
    crs: object
    transform: object
    width: int
    height: int
    count: int
    dtype: str
    nodata: float | None
    sha256: str
    date_source: str

    @property
    def name(self) -> str:
        """File name without folders, the key used in ``run.json``."""
        return self.path.name

    @property
    def res(self) -> tuple[float, float]:
        """Pixel size (x, y) in CRS units."""
        t = self.transform
        return (float(np.hypot(t.a, t.d)), float(np.hypot(t.b, t.e)))


def parse_date(text: str) -> _dt.date | None:
    """Find an acquisition date in a string (a file name or a tag value).

    Parameters
    ----------
    text : str
        File name, path or tag value.

    Returns
    -------
    datetime.date or None
        The first valid date found, or None.

    Examples
    --------
    >>> parse_date("site_2016-05-29.tif")
    datetime.date(2016, 5, 29)
    >>> parse_date("S2A_MSIL1C_20160529T153631_N0202.tif")
    datetime.date(2016, 5, 29)
    >>> parse_date("2014:03:02 10:30:00")
    datetime.date(2014, 3, 2)
    >>> parse_date("scene_final.tif") is None
    True
    """
    for pattern in _DATE_PATTERNS:
        for m in pattern.finditer(str(text)):
            try:
                return _dt.date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
            except ValueError:
                continue
    return None


def read_manifest(path: str | os.PathLike) -> dict[str, _dt.date]:
    """Read a CSV manifest of acquisition dates.

    The CSV needs a header with a file column (``path``, ``file``, ``filename``
    or ``image``) and a ``date`` column (ISO ``YYYY-MM-DD``). File names are
    matched on their base name, so the manifest may list paths or names.

    Returns
    -------
    dict
        Base file name to date.

    Raises
    ------
    UnreadableFileError
        If the file cannot be opened.
    DateError
        If a column is missing or a date cannot be parsed.
    """
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.DictReader(fh))
    except OSError as exc:
        raise UnreadableFileError(f"Cannot read the manifest {path}: {exc.strerror}. "
                                  "Check the path given to --manifest.") from None
    if not rows:
        raise DateError(f"The manifest {path} has no rows. Give one line per image: path,date.")
    cols = {c.lower().strip(): c for c in rows[0] if c}
    file_col = next((cols[c] for c in ("path", "file", "filename", "image") if c in cols), None)
    date_col = cols.get("date")
    if file_col is None or date_col is None:
        raise DateError(f"The manifest {path} needs a header with a 'path' and a 'date' column "
                        f"(found: {', '.join(cols.values())}).")
    out: dict[str, _dt.date] = {}
    for i, row in enumerate(rows, start=2):
        raw = (row.get(date_col) or "").strip()
        try:
            date = _dt.date.fromisoformat(raw[:10])
        except ValueError:
            raise DateError(f"Line {i} of the manifest {path}: '{raw}' is not a date; "
                            "write it as YYYY-MM-DD.") from None
        out[Path(row[file_col].strip()).name] = date
    return out


def sha256_file(path: str | os.PathLike, *, chunk: int = 1 << 20) -> str:
    """SHA-256 hex digest of a file, read in chunks (bounded memory)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def read_scene(path: str | os.PathLike, *, date: _dt.date | None = None,
               manifest: Mapping[str, _dt.date] | None = None) -> SceneInfo:
    """Open a raster, check it can be used, and find its acquisition date.

    Parameters
    ----------
    path : path-like
        A GeoTIFF (or any raster GDAL reads) with a CRS and a geotransform.
    date : datetime.date, optional
        Use this date and look nowhere else.
    manifest : mapping, optional
        Base file name to date, as returned by :func:`read_manifest`.

    Returns
    -------
    SceneInfo

    Raises
    ------
    UnreadableFileError
        The file is missing or GDAL cannot read it.
    CRSError
        The raster has no CRS or no geotransform.
    DateError
        No date in the manifest, the file name or the tags.
    """
    import rasterio
    from rasterio.errors import RasterioIOError

    path = Path(path)
    if not path.exists():
        raise UnreadableFileError(f"{path}: no such file. Check the path.")
    try:
        with rasterio.open(path) as src:
            crs, transform = src.crs, src.transform
            width, height, count = src.width, src.height, src.count
            dtype, nodata, tags = src.dtypes[0], src.nodata, src.tags()
    except RasterioIOError as exc:
        raise UnreadableFileError(f"{path}: not a raster GDAL can read ({exc}). "
                                  "Give GeoTIFF files.") from None
    if crs is None:
        raise CRSError(f"{path} has no coordinate reference system. Set it with "
                       f"'rio edit-info --crs EPSG:XXXX {path.name}' or "
                       f"'gdal_edit.py -a_srs EPSG:XXXX {path.name}'.")
    if transform.is_identity:
        raise CRSError(f"{path} has no geotransform (pixel size and origin). Georeference it, "
                       "e.g. with gdal_translate -a_ullr, before running change detection.")
    source = "argument"
    if date is None and manifest is not None and path.name in manifest:
        date, source = manifest[path.name], "manifest"
    if date is None:
        date = parse_date(path.name)
        source = "filename"
    if date is None:
        for tag in _DATE_TAGS:
            if tag in tags and (d := parse_date(tags[tag])) is not None:
                date, source = d, f"tag:{tag}"
                break
    if date is None:
        raise DateError(f"No acquisition date found for {path}: put it in the file name "
                        "(e.g. site_2016-05-29.tif), in the TIFFTAG_DATETIME tag, or in a "
                        "CSV given with --manifest (columns path,date).")
    return SceneInfo(path=path, date=date, crs=crs, transform=transform, width=width,
                     height=height, count=count, dtype=str(dtype), nodata=nodata,
                     sha256=sha256_file(path), date_source=source)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it into place only on success.

    An interrupted or failed write leaves no half-written file at ``path``.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> with atomic_path(d / "a.txt") as tmp:
    ...     _ = tmp.write_text("done")
    >>> (d / "a.txt").read_text()
    'done'
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix or ".tmp",
                                   dir=path.parent)
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        raise OutputError(f"Cannot write in {path.parent}: {exc.strerror}. "
                          "Choose another output folder.") from None
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write a text file atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_raster(path: str | os.PathLike, array: np.ndarray, *, transform, crs,
                 nodata: float | None = None, tags: Mapping[str, str] | None = None,
                 band_descriptions: tuple[str, ...] | None = None,
                 compress: str = "deflate") -> Path:
    """Write a (bands, rows, cols) or (rows, cols) array as a tiled GeoTIFF, atomically.

    Parameters
    ----------
    path : path-like
        Destination.
    array : ndarray
        Pixel values; 2-D arrays are written as one band.
    transform : affine.Affine
        Georeferencing of pixel (0, 0)'s upper-left corner.
    crs : CRS or str
        Coordinate reference system.
    nodata : float, optional
        Value flagged as nodata.
    tags : mapping, optional
        Dataset tags (e.g. ``TIFFTAG_DATETIME``).
    band_descriptions : tuple of str, optional
        One per band.
    compress : str
        GDAL compression.
    """
    import rasterio

    arr = np.asarray(array)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise InputError(f"write_raster needs a 2-D or 3-D array, got shape {arr.shape}.")
    count, height, width = arr.shape
    profile = dict(driver="GTiff", width=width, height=height, count=count, dtype=arr.dtype,
                   crs=crs, transform=transform, nodata=nodata, compress=compress)
    if width >= 256 and height >= 256:
        profile.update(tiled=True, blockxsize=256, blockysize=256)
    if compress and arr.dtype.kind in "iu":
        profile["predictor"] = 2
    with atomic_path(path) as tmp:
        with rasterio.open(tmp, "w", **profile) as dst:
            dst.write(arr)
            if tags:
                dst.update_tags(**tags)
            if band_descriptions:
                for i, d in enumerate(band_descriptions, start=1):
                    dst.set_band_description(i, d)
    return Path(path)
