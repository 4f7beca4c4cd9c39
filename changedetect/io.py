"""Reading scenes and their dates; writing rasters and files atomically.

Dates come, in order of precedence, from an explicit manifest (CSV with
``path,date`` columns, paths relative to the manifest's folder), from the file
name, or from the file's metadata:

* product names whose fields are known: Landsat scene and product ids
  (``LC80440342016123LGN00``, ``LC08_L1TP_044034_20160502_20170223_01_T1``:
  the acquisition, never the processing date), Sentinel-2 products
  (``S2A_MSIL1C_20160529T153631_…``: the sensing time) and old ESA names with a
  validity start (``…_V20150821T105414_…``), Maxar catalogue names
  (``17MAY22084209-M1BS-…``);
* dates in any name: ``2016-05-29``, ``2016_05_29``, ``20160529`` (Planet's
  ``20180115_183456_…`` too), year and day of year (``2016-123``, ``2016123``),
  and year and month alone (``global_monthly_2018_01_mosaic``: marked as such,
  ``date_precision = "month"``, dated the 1st);
* GDAL's ``IMAGERY`` metadata (``ACQUISITIONDATETIME``, which GDAL reads from
  Maxar ``.IMD``, Landsat ``_MTL.txt`` and other sidecar files), then TIFF tags
  (``TIFFTAG_DATETIME``, ``ACQUISITIONDATETIME``, ``DATE_ACQUIRED``, …).

An old ESA Sentinel-2 tile name (``S2A_OPER_MSI_L1C_TL_EPA__20160706T155721_…``)
holds only the *processing* date: it is never taken for the acquisition; the
date must then come from the file's metadata or a manifest.
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
    "manifest_date",
    "find_date",
    "FoundDate",
    "band_roles",
    "read_pixels",
    "local_crs",
    "is_unreferenced",
    "ROLE_ALIASES",
    "sha256_file",
    "atomic_path",
    "write_raster",
    "write_text",
]

log = logging.getLogger(__name__)
log.addHandler(logging.NullHandler())

_IMAGERY_TAGS = ("ACQUISITIONDATETIME",)
_DATE_TAGS = ("TIFFTAG_DATETIME", "ACQUISITIONDATETIME", "ACQUISITION_DATETIME",
              "DATE_ACQUIRED", "ACQUISITION_DATE", "DATETIME", "DATE")
# Separated dates first (least ambiguous), then compact YYYYMMDD not glued to other digits.
_DATE_PATTERNS = (
    re.compile(r"(?<!\d)((?:19|20)\d{2})[-_.:/]([01]\d)[-_.:/]([0-3]\d)(?!\d)"),
    re.compile(r"(?<!\d)((?:19|20)\d{2})([01]\d)([0-3]\d)(?:T\d{2,6})?(?!\d)"),
)
_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
# (pattern, kind, label): named products first, whose fields say which date is the acquisition
_PRODUCT_PATTERNS = (
    (re.compile(r"S2[A-D]_OPER_\w*?_V((?:19|20)\d{6})T\d{6}"), "ymd", "Sentinel-2 validity start"),
    (re.compile(r"(?<![A-Z0-9])L[COTEM]\d{7}((?:19|20)\d{2})(\d{3})[A-Z]{3}\d{2}"), "yj",
     "Landsat scene id"),
    (re.compile(r"(?<![A-Z0-9])L[COTEM]\d{2}_L\w{3}_\d{6}_((?:19|20)\d{6})_\d{8}_"), "ymd",
     "Landsat product id"),
    (re.compile(r"(?<![A-Z0-9])S2[A-D]_MSI\w{3}_((?:19|20)\d{6})T\d{6}_"), "ymd", "Sentinel-2 product"),
    (re.compile(r"(?<![A-Za-z0-9])(\d{2})(" + "|".join(_MONTHS) + r")(\d{2})\d{6}-"), "dmy",
     "Maxar catalogue name"),
)
_OLD_ESA = re.compile(r"S2[A-D]_OPER_")
_DOY_PATTERNS = (
    re.compile(r"(?<!\d)((?:19|20)\d{2})[-_.]([0-3]\d{2})(?![-_.]?\d)"),
    re.compile(r"(?<!\d)((?:19|20)\d{2})([0-3]\d{2})(?!\d)"),
)
_MONTH_PATTERN = re.compile(r"(?<!\d)((?:19|20)\d{2})[-_.]([01]\d)(?![-_.]?\d)")


@dataclass(frozen=True)
class FoundDate:
    """A date read from a name or a tag: the date, its precision and the rule that found it."""

    date: _dt.date
    precision: str = "day"          # "day" or "month" (then dated the 1st)
    rule: str = ""


def find_date(text: str, *, products: bool = True) -> FoundDate | None:
    """The acquisition date in a file name or tag value, with how it was read.

    Named product formats first (their fields say which date is the
    acquisition), then full dates, year + day of year, and year + month.
    An old ESA Sentinel-2 tile name without a validity start gives None: its
    only date is the processing date.

    Examples
    --------
    >>> find_date("LC80440342016123LGN00_B4.TIF")
    FoundDate(date=datetime.date(2016, 5, 2), precision='day', rule='Landsat scene id')
    >>> find_date("global_monthly_2018_01_mosaic_L15-0357E-1223N.tif").precision
    'month'
    >>> find_date("S2A_OPER_MSI_L1C_TL_EPA__20160706T155721_A000849_T30UWU_B02.tif") is None
    True
    """
    text = str(text)
    if products:
        for pattern, kind, label in _PRODUCT_PATTERNS:
            for m in pattern.finditer(text):
                d = _date_from(m, kind)
                if d is not None:
                    return FoundDate(d, "day", label)
        if _OLD_ESA.search(text):
            return None
    for pattern in _DATE_PATTERNS:
        for m in pattern.finditer(text):
            try:
                return FoundDate(_dt.date(int(m.group(1)), int(m.group(2)), int(m.group(3))), "day", "date")
            except ValueError:
                continue
    for pattern in _DOY_PATTERNS:
        for m in pattern.finditer(text):
            d = _date_from(m, "yj")
            if d is not None:
                return FoundDate(d, "day", "year and day of year")
    for m in _MONTH_PATTERN.finditer(text):
        if 1 <= int(m.group(2)) <= 12:
            return FoundDate(_dt.date(int(m.group(1)), int(m.group(2)), 1), "month", "year and month")
    return None


def _date_from(m, kind: str) -> _dt.date | None:
    try:
        if kind == "ymd":
            g = m.group(1)
            return _dt.date(int(g[:4]), int(g[4:6]), int(g[6:8]))
        if kind == "yj":
            year, doy = int(m.group(1)), int(m.group(2))
            if not 1 <= doy <= (366 if year % 4 == 0 and (year % 100 or year % 400 == 0) else 365):
                return None
            return _dt.date(year, 1, 1) + _dt.timedelta(days=doy - 1)
        if kind == "dmy":
            return _dt.date(2000 + int(m.group(1)), _MONTHS.index(m.group(2)) + 1, int(m.group(3)))
    except ValueError:
        return None
    return None


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
        Where the date came from: ``manifest``, ``filename``, ``filename (<rule>)``
        for a named product format or a partial date, ``imagery:<NAME>`` (GDAL's
        IMAGERY metadata) or ``tag:<NAME>``.
    date_precision : str
        ``day``, or ``month`` for a name with a year and a month only (the date
        is then the 1st of that month).
    bands : tuple of int
        1-based indexes of the spectral bands read (every band but alpha).
    band_roles : tuple of str
        Role of each of those bands: ``blue``, ``green``, ``red``, ``nir``, …
        (``undefined`` where the file does not say).
    alpha : int or None
        1-based index of an alpha band: validity, never a spectral band.
    has_mask : bool
        The file has a per-dataset mask (GDAL mask band): validity too.
    band_source : str
        Where the roles came from (see :func:`band_roles`).
    metadata : tuple of (str, str)
        The file's dataset tags (sensor, acquisition time, processing), sorted,
        those of GDAL's IMAGERY domain as ``IMAGERY:<NAME>``; a value longer
        than :data:`METADATA_MAX_CHARS` is cut there (the run record keeps them).
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
    date_precision: str = "day"
    bands: tuple[int, ...] = ()
    band_roles: tuple[str, ...] = ()
    alpha: int | None = None
    has_mask: bool = False
    band_source: str = ""
    metadata: tuple[tuple[str, str], ...] = ()

    @property
    def name(self) -> str:
        """File name without folders, the key used in ``run.json``."""
        return self.path.name

    @property
    def res(self) -> tuple[float, float]:
        """Pixel size (x, y) in CRS units."""
        t = self.transform
        return (float(np.hypot(t.a, t.d)), float(np.hypot(t.b, t.e)))


#: Band roles understood in band descriptions and --bands, with their aliases.
ROLE_ALIASES = {
    "blue": ("blue", "b02"),
    "green": ("green", "b03"),
    "red": ("red", "r", "b4", "b04"),
    "nir": ("nir", "near-infrared", "near infrared", "nir1", "b8", "b08"),
    "alpha": ("alpha", "mask"),
}
_GUESS_4 = ("blue", "green", "red", "nir")


def role_of(text: str) -> str:
    """The canonical role of a band name (``Red``, ``B04``... -> ``red``; unknown names lower-cased)."""
    t = (text or "").strip().lower()
    for role, names in ROLE_ALIASES.items():
        if t in names:
            return role
    return t or "undefined"


def band_roles(src, declared=None) -> tuple[tuple[str, ...], str]:
    """The role of every band of an open raster, and where it came from.

    In order: ``declared`` (``--bands``: one role per band, ``alpha`` for a
    validity band, ``-`` for a band to ignore); the band descriptions; GDAL's
    colour interpretation (red, green, blue, alpha, as RGBA GeoTIFFs declare
    them); else, for four undeclared bands, the documented guess blue, green,
    red, NIR (the order of most commercial 4-band products). Anything else is
    ``undefined``.

    Returns
    -------
    roles : tuple of str
        One per band of the file.
    source : str
        ``--bands``, ``band descriptions``, ``colour interpretation``,
        ``guess (4 undeclared bands as blue, green, red, nir)`` or ``undeclared``.
    """
    n = src.count
    if declared:
        roles = tuple("-" if str(r).strip() in ("-", "skip", "") else role_of(r) for r in declared)
        if len(roles) != n:
            raise InputError(f"--bands gives {len(roles)} roles ({', '.join(roles)}) but {src.name} has "
                             f"{n} bands: give one role per band, e.g. --bands "
                             f"{','.join((list(_GUESS_4) + ['alpha'] * n)[:n])}.")
        return roles, "--bands"
    descs = [(d or "").strip() for d in src.descriptions]
    if any(descs):
        return tuple(role_of(d) for d in descs), "band descriptions"
    ci = [c.name.lower() for c in src.colorinterp]
    if any(c in ("red", "green", "blue", "alpha") for c in ci):
        return tuple(c if c in ("red", "green", "blue", "alpha") else "undefined" for c in ci), \
            "colour interpretation"
    if n == 4:
        return _GUESS_4, "guess (4 undeclared bands as blue, green, red, nir; --bands to say otherwise)"
    return ("undefined",) * n, "undeclared"


def read_pixels(src, scene: "SceneInfo", window=None, *, out_shape=None, boundless: bool = False,
                resampling=None):
    """The spectral bands of a window of an open scene as float32, and where they are valid.

    Valid means: not nodata in any band, alpha > 0 where the file has an alpha
    band, and inside its mask band where it has one. An alpha band is never
    returned as a spectral band.

    Returns
    -------
    data : ndarray, float32, (bands, rows, cols)
    valid : ndarray of bool, (rows, cols)
    """
    indexes = list(scene.bands) or list(range(1, src.count + 1))
    nodata = scene.nodata
    kw = dict(window=window, boundless=boundless)
    if boundless:
        kw["fill_value"] = nodata if nodata is not None else 0
    shape = None if out_shape is None else (len(indexes),) + tuple(out_shape)
    extra = {} if resampling is None else {"resampling": resampling}
    arr = src.read(indexes=indexes, out_shape=shape, out_dtype="float32", **kw, **extra)
    valid = np.ones(arr.shape[1:], bool) if nodata is None else np.all(arr != nodata, axis=0)
    if scene.alpha is not None:
        a = src.read(scene.alpha, out_shape=None if out_shape is None else tuple(out_shape),
                     **{**kw, "fill_value": 0} if boundless else kw)
        valid &= a > 0
    elif scene.has_mask:
        m = src.read_masks(1, out_shape=None if out_shape is None else tuple(out_shape),
                           window=window, boundless=boundless)
        valid &= m > 0
    return arr, valid


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
    found = find_date(text)
    return None if found is None else found.date


def read_manifest(path: str | os.PathLike) -> dict[str, _dt.date]:
    """Read a CSV manifest of acquisition dates.

    The CSV needs a header with a file column (``path``, ``file``, ``filename``
    or ``image``) and a ``date`` column (ISO ``YYYY-MM-DD``). Paths are read
    relative to the manifest's folder (absolute paths as they are), so
    ``pre/tile_0_107.tif`` and ``post/tile_0_107.tif`` are two files; a scene
    not found by its path is matched by its base name when only one line has
    that name (see :func:`manifest_date`).

    Returns
    -------
    dict
        Absolute, normalised path (str) to date, in the manifest's order.

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
        name = (row.get(file_col) or "").strip()
        if not name:
            raise DateError(f"Line {i} of the manifest {path} has no file in its "
                            f"'{file_col}' column.")
        out[os.path.normpath(os.path.join(path.parent.resolve(), name))] = date
    return out


def manifest_date(manifest: Mapping[str, _dt.date], path: str | os.PathLike) -> _dt.date | None:
    """The date a manifest gives a file: by its path, else by a base name that only one line has.

    Raises
    ------
    DateError
        The base name is on several lines with different dates and the path
        matches none of them.
    """
    path = Path(path)
    full = os.path.normpath(os.path.abspath(path))
    real = os.path.realpath(path)
    for key, date in manifest.items():
        if key in (full, real) or os.path.realpath(key) == real:
            return date
    same = {date for key, date in manifest.items() if Path(key).name == path.name}
    if len(same) > 1:
        raise DateError(f"The manifest lists {path.name} several times with different dates, and "
                        f"none of its paths is {path}: write the paths relative to the manifest's "
                        "folder (e.g. pre/tile.tif, post/tile.tif).")
    return same.pop() if same else None


def sha256_file(path: str | os.PathLike, *, chunk: int = 1 << 20) -> str:
    """SHA-256 hex digest of a file, read in chunks (bounded memory)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def local_crs(pixel_size: float):
    """The CRS of images that are not georeferenced: a local grid in metres (LOCAL_CS).

    Coordinates are metres from the upper-left corner of the reference image,
    x to the east (right), y to the north (up); nothing ties them to the Earth.
    """
    from rasterio.crs import CRS

    return CRS.from_wkt(f'LOCAL_CS["changedetect local grid: not georeferenced, pixel size {pixel_size:g} m",'
                        'UNIT["metre",1,AUTHORITY["EPSG","9001"]],AXIS["Easting",EAST],AXIS["Northing",NORTH]]')


def is_unreferenced(crs) -> bool:
    """True for the local grid of images that were not georeferenced (``--pixel-size``)."""
    if crs is None:
        return False
    try:
        from pyproj import CRS

        c = CRS.from_user_input(crs)
        return not c.is_geographic and not c.is_projected
    except Exception:  # pragma: no cover - an unparsable CRS is not ours
        return False


def read_scene(path: str | os.PathLike, *, date: _dt.date | None = None,
               manifest: Mapping[str, _dt.date] | None = None, bands=None,
               pixel_size: float | None = None) -> SceneInfo:
    """Open a raster, check it can be used, and find its acquisition date.

    Parameters
    ----------
    path : path-like
        A GeoTIFF (or any raster GDAL reads) with a CRS and a geotransform.
    date : datetime.date, optional
        Use this date and look nowhere else.
    manifest : mapping, optional
        Path (or base file name) to date, as returned by :func:`read_manifest`.
    bands : sequence of str, optional
        The role of every band (``--bands``), for files that declare none; see
        :func:`band_roles`.
    pixel_size : float, optional
        For images without a CRS or geotransform (PNG/JPEG/TIFF exports): put
        them on a local grid with pixels of this size in metres, upper-left
        corner at (0, 0) (:func:`local_crs`); co-registration then aligns them.
        Ignored for georeferenced files.

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
            try:
                imagery = src.tags(ns="IMAGERY")
            except Exception:  # pragma: no cover - a driver without the domain
                imagery = {}
            roles, band_source = band_roles(src, bands)
            if not any(r not in ("alpha", "-") for r in roles):
                raise InputError(f"{path}: no spectral band left ({', '.join(roles)}); check --bands.")
            flags = src.mask_flag_enums[0] if src.count else ()
            has_mask = any(f.name == "per_dataset" for f in flags) and not any(f.name == "alpha" for f in flags)
    except RasterioIOError as exc:
        raise UnreadableFileError(f"{path}: not a raster GDAL can read ({exc}). "
                                  "Give GeoTIFF files.") from None
    if (crs is None or transform.is_identity) and pixel_size is not None:
        from affine import Affine

        if not pixel_size > 0:
            raise InputError(f"--pixel-size {pixel_size} must be a positive size in metres.")
        crs, transform = local_crs(pixel_size), Affine(pixel_size, 0.0, 0.0, 0.0, -pixel_size, 0.0)
    if crs is None:
        raise CRSError(f"{path} has no coordinate reference system. Set it with "
                       f"'rio edit-info --crs EPSG:XXXX {path.name}' or "
                       f"'gdal_edit.py -a_srs EPSG:XXXX {path.name}', or, for an image that is not "
                       "georeferenced at all (a PNG or JPEG export), give its pixel size in metres "
                       "with --pixel-size (e.g. --pixel-size 0.5): it is then put on a local grid "
                       "and co-registration aligns the images.")
    if transform.is_identity:
        raise CRSError(f"{path} has no geotransform (pixel size and origin). Georeference it, "
                       "e.g. with gdal_translate -a_ullr, or give --pixel-size METRES to work on a "
                       "local grid.")
    source, precision = "argument", "day"
    if date is None and manifest is not None:
        date = manifest_date(manifest, path)
        source = "manifest"
    if date is None:
        found = find_date(path.name)
        if found is not None:
            date, precision = found.date, found.precision
            source = "filename" if found.rule == "date" else f"filename ({found.rule})"
    if date is None:
        for tag in _IMAGERY_TAGS:
            if tag in imagery and (f := find_date(imagery[tag], products=False)) is not None:
                date, source = f.date, f"imagery:{tag}"
                break
    if date is None:
        for tag in _DATE_TAGS:
            if tag in tags and (f := find_date(tags[tag], products=False)) is not None:
                date, source = f.date, f"tag:{tag}"
                break
    if date is None and _OLD_ESA.search(path.name):
        raise DateError(f"{path} has an old ESA Sentinel-2 tile name: its date is the processing "
                        "date, not the acquisition, and the file holds no acquisition date. Give "
                        "the acquisition date in a CSV with --manifest (columns path,date; for "
                        "OSCD, dates.txt beside the images has it).")
    if date is None:
        raise DateError(f"No acquisition date found for {path}: put it in the file name "
                        "(e.g. site_2016-05-29.tif), in the TIFFTAG_DATETIME tag, or in a "
                        "CSV given with --manifest (columns path,date).")
    return SceneInfo(path=path, date=date, crs=crs, transform=transform, width=width,
                     height=height, count=count, dtype=str(dtype), nodata=nodata,
                     sha256=sha256_file(path), date_source=source, date_precision=precision,
                     bands=tuple(i + 1 for i, r in enumerate(roles) if r not in ("alpha", "-")),
                     band_roles=tuple(r for r in roles if r not in ("alpha", "-")),
                     alpha=next((i + 1 for i, r in enumerate(roles) if r == "alpha"), None),
                     has_mask=has_mask, band_source=band_source, metadata=_metadata(tags, imagery))


#: Longest tag value kept in :attr:`SceneInfo.metadata` (XML blobs are cut here).
METADATA_MAX_CHARS = 2000


def _metadata(tags: Mapping[str, str], imagery: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """Dataset tags and IMAGERY tags as sorted (name, value) pairs, long values cut."""
    def cut(v) -> str:
        v = str(v)
        return v if len(v) <= METADATA_MAX_CHARS else f"{v[:METADATA_MAX_CHARS]}... ({len(v)} characters)"

    pairs = [(str(k), cut(v)) for k, v in tags.items()]
    pairs += [(f"IMAGERY:{k}", cut(v)) for k, v in imagery.items()]
    return tuple(sorted(pairs))


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


#: Side of the internal tiles of every GeoTIFF changedetect writes.
TILE = 256


def raster_profile(width: int, height: int, count: int, dtype, *, crs, transform, nodata=None,
                   compress: str | None = "deflate", tiled: bool = True, **options) -> dict:
    """The creation profile of every GeoTIFF changedetect writes: tiled (:data:`TILE`) and compressed.

    With ``tiled=False`` a raster smaller than a tile in either direction is
    written in strips (small exports stay small). Further GDAL creation
    ``options`` (e.g. ``predictor=2``) are added.

    Examples
    --------
    >>> p = raster_profile(512, 300, 1, "uint8", crs=None, transform=None)
    >>> p["tiled"], p["blockxsize"], p["compress"]
    (True, 256, 'deflate')
    """
    profile = dict(driver="GTiff", width=int(width), height=int(height), count=int(count),
                   dtype=np.dtype(dtype).name, crs=crs, transform=transform, nodata=nodata)
    if compress:
        profile["compress"] = compress
    if tiled or (width >= TILE and height >= TILE):
        profile.update(tiled=True, blockxsize=TILE, blockysize=TILE)
    profile.update(options)
    return profile


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
    profile = raster_profile(width, height, count, arr.dtype, crs=crs, transform=transform,
                             nodata=nodata, compress=compress, tiled=False,
                             **({"predictor": 2} if compress and arr.dtype.kind in "iu" else {}))
    with atomic_path(path) as tmp:
        with rasterio.open(tmp, "w", **profile) as dst:
            dst.write(arr)
            if tags:
                dst.update_tags(**tags)
            if band_descriptions:
                for i, d in enumerate(band_descriptions, start=1):
                    dst.set_band_description(i, d)
    return Path(path)
