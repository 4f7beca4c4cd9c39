"""A dated stack of scenes on one common grid, read window by window.

A :class:`Stack` does not hold pixels. It knows every scene's file, date and
georeferencing, the reference grid (the reference scene's CRS, transform and
shape) and, per scene, the mapping ``ref_to_scene`` from reference-grid pixel
coordinates (col, row) to the scene's own pixel coordinates: a 2x3 affine, or a
2x6 second-order polynomial (:func:`apply_mapping`). Reading a window warps only
the scene pixels under it onto that window of the reference grid with GDAL
(``rasterio.warp.reproject``; GCP polynomial for a polynomial mapping), so
memory depends on the window, not on the raster.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from dataclasses import dataclass, field, replace
from typing import Iterator, Sequence

import numpy as np

from . import portable
from .errors import DateError, EmptyDataError, InputError, NoOverlapError
from .io import SceneInfo, is_unreferenced, role_of, read_manifest, read_pixels, read_scene

__all__ = ["Stack", "open_stack", "affine_to_matrix", "matrix_to_affine", "compose", "invert",
           "apply_mapping", "compose_mapping"]

log = logging.getLogger(__name__)
log.addHandler(logging.NullHandler())

_THREADS = max(1, min(4, os.cpu_count() or 1))
_RESAMPLING = ("nearest", "bilinear", "cubic", "cubic_spline", "lanczos", "average")


def affine_to_matrix(a) -> np.ndarray:
    """An ``affine.Affine`` as a (2, 3) float64 matrix [[a, b, c], [d, e, f]]."""
    return np.array([[a.a, a.b, a.c], [a.d, a.e, a.f]], dtype=np.float64)


def matrix_to_affine(m):
    """A (2, 3) matrix as an ``affine.Affine``."""
    from affine import Affine

    m = np.asarray(m, dtype=np.float64)
    return Affine(m[0, 0], m[0, 1], m[0, 2], m[1, 0], m[1, 1], m[1, 2])


def _full(m: np.ndarray) -> np.ndarray:
    out = np.eye(3)
    out[:2] = m
    return out


def compose(outer, inner) -> np.ndarray:
    """The (2, 3) affine ``outer ∘ inner`` (apply ``inner`` first).

    Examples
    --------
    >>> shift = np.array([[1.0, 0, 2], [0, 1, 3]])
    >>> compose(shift, shift)
    array([[1., 0., 4.],
           [0., 1., 6.]])
    """
    return portable.dot(_full(np.asarray(outer)), _full(np.asarray(inner)))[:2]


def invert(m) -> np.ndarray:
    """Inverse of a (2, 3) affine."""
    return portable.inv(_full(np.asarray(m)))[:2]


def _is_affine(m: np.ndarray) -> bool:
    return m.shape == (2, 3) or (m.shape == (2, 6) and not np.any(m[:, 3:]))


def apply_mapping(m, x, y) -> tuple[np.ndarray, np.ndarray]:
    """Apply a (2, 3) affine or a (2, 6) second-order polynomial mapping.

    The columns of ``m`` are the coefficients of ``x, y, 1`` and, for a
    polynomial, ``x², xy, y²``: ``x' = m[0, 0] x + m[0, 1] y + m[0, 2] + ...``.

    Examples
    --------
    >>> apply_mapping([[1, 0, 2.0, 0.001, 0, 0], [0, 1, 0, 0, 0, 0]], np.array([10.0]), np.array([5.0]))
    (array([12.1]), array([5.]))
    """
    m = np.asarray(m, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    out = []
    for r in range(2):
        v = m[r, 0] * x + m[r, 1] * y + m[r, 2]
        if m.shape[1] == 6:
            v = v + m[r, 3] * x * x + m[r, 4] * x * y + m[r, 5] * y * y
        out.append(v)
    return out[0], out[1]


def compose_mapping(outer, inner) -> np.ndarray:
    """``outer ∘ inner`` for an affine ``outer`` and an affine or polynomial ``inner``."""
    outer = np.asarray(outer, dtype=np.float64)
    inner = np.asarray(inner, dtype=np.float64)
    if inner.shape == (2, 3):
        return compose(outer, inner)
    out = portable.dot(outer[:, :2], inner)
    out[:, 2] += outer[:, 2]
    return out


@dataclass(frozen=True)
class Stack:
    """Dated scenes over one site, on the reference scene's grid.

    Attributes
    ----------
    scenes : tuple of SceneInfo
        Sorted by date.
    reference : int
        Index of the reference scene in ``scenes``.
    crs, transform, width, height :
        The reference grid.
    count : int
        Number of bands (the same for every scene).
    ref_to_scene : tuple of ndarray
        Per scene, the (2, 3) affine (or (2, 6) polynomial) from reference-grid
        pixel coordinates (col, row) to the scene's pixel coordinates
        (rasterio's continuous convention: pixel (0, 0) spans [0, 1) x [0, 1)).
    resampling : str
        GDAL resampling used when warping scenes onto the grid.
    """

    scenes: tuple[SceneInfo, ...]
    reference: int
    crs: object
    transform: object
    width: int
    height: int
    count: int
    ref_to_scene: tuple[np.ndarray, ...] = field(repr=False)
    resampling: str = "cubic"
    band_names: tuple[str, ...] = ()
    grid_note: str = ""

    def band_index(self, name: str) -> int | None:
        """Index of the band called ``name`` (``red``, ``nir``, ...), or None.

        The roles come from the reference file (see
        :func:`changedetect.io.band_roles`: ``--bands``, band descriptions, colour
        interpretation, or the documented guess for four undeclared bands).
        """
        role = role_of(name)
        names = [role_of(n) for n in self.band_names]
        return names.index(role) if role in names else None

    @property
    def band_roles(self) -> tuple[str, ...]:
        """The canonical role of every band (``red``, ``nir``, ...; see :meth:`band_index`)."""
        return tuple(role_of(n) for n in self.band_names)

    def __len__(self) -> int:
        return len(self.scenes)

    @property
    def dates(self) -> tuple:
        """Acquisition dates, in stack order."""
        return tuple(s.date for s in self.scenes)

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, cols) of the reference grid."""
        return (self.height, self.width)

    @property
    def pixel_size(self) -> float:
        """Ground size of a reference pixel (CRS units, usually metres)."""
        t = self.transform
        return float(math.sqrt(abs(t.a * t.e - t.b * t.d)))

    def nominal_ref_to_scene(self, i: int) -> np.ndarray:
        """``ref_to_scene`` implied by the files' georeferencing alone (no co-registration)."""
        return _nominal(self.scenes[i], self.crs, self.transform, self.width, self.height)

    def with_ref_to_scene(self, mappings: Sequence[np.ndarray]) -> "Stack":
        """A copy of this stack with new per-scene mappings (e.g. after co-registration)."""
        if len(mappings) != len(self.scenes):
            raise InputError(f"Need one mapping per scene ({len(self.scenes)}), got {len(mappings)}.")
        return replace(self, ref_to_scene=tuple(np.asarray(m, dtype=np.float64) for m in mappings))

    def window_transform(self, window):
        """Geotransform of a window of the reference grid."""
        from rasterio.windows import transform as wtransform

        return wtransform(window, self.transform)

    def windows(self, *, block: int = 1024, halo: int = 0) -> Iterator[tuple[object, object]]:
        """Tile the reference grid into blocks.

        Yields
        ------
        (inner, outer) : rasterio.windows.Window
            ``inner`` tiles the grid without overlap; ``outer`` is ``inner``
            grown by ``halo`` pixels on each side, clipped to the grid.
        """
        from rasterio.windows import Window

        for r0 in range(0, self.height, block):
            for c0 in range(0, self.width, block):
                h, w = min(block, self.height - r0), min(block, self.width - c0)
                or0, oc0 = max(0, r0 - halo), max(0, c0 - halo)
                or1, oc1 = min(self.height, r0 + h + halo), min(self.width, c0 + w + halo)
                yield Window(c0, r0, w, h), Window(oc0, or0, oc1 - oc0, or1 - or0)

    @contextlib.contextmanager
    def open_warped(self, i: int, *, ref_to_scene: np.ndarray | None = None,
                    resampling: str | None = None):
        """Open scene ``i`` warped onto the reference grid; yield a window reader.

        The reader is ``read(window=None, out_shape=None) -> (data, valid)`` with
        the same meaning as :meth:`read`. Use it to read many windows of one
        scene without reopening the file.
        """
        import rasterio

        scene = self.scenes[i]
        m = self.ref_to_scene[i] if ref_to_scene is None else np.asarray(ref_to_scene)
        rs = resampling or self.resampling
        with rasterio.open(scene.path) as src:

            def read(window=None, out_shape=None):
                return _warp_window(self, src, m, window, out_shape, rs, scene)

            yield read

    def read(self, i: int, window=None, *, out_shape: tuple[int, int] | None = None,
             ref_to_scene: np.ndarray | None = None,
             resampling: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Read scene ``i`` warped onto (a window of) the reference grid.

        Parameters
        ----------
        i : int
            Scene index.
        window : rasterio.windows.Window, optional
            Part of the reference grid; the whole grid by default.
        out_shape : (rows, cols), optional
            Read decimated (area-averaged) to this shape, e.g. for a quick look.
        ref_to_scene : ndarray, optional
            Use this mapping instead of the stack's.
        resampling : str, optional
            Override the stack's warp resampling.

        Returns
        -------
        data : ndarray, float32, shape (bands, rows, cols)
            Pixel values; 0 where invalid.
        valid : ndarray, bool, shape (rows, cols)
            True where every band holds data.
        """
        with self.open_warped(i, ref_to_scene=ref_to_scene, resampling=resampling) as read:
            return read(window, out_shape)


def _warp_window(stack: "Stack", src, m: np.ndarray, window, out_shape, resampling: str,
                 scene: SceneInfo):
    """Warp the part of an open scene that covers a window of the reference grid.

    Only the scene pixels under the window (plus a margin for the resampling
    kernel) are read, decimated first when the output is coarser, so memory
    depends on the window. Both grids are expressed in the reference CRS: the
    scene's geotransform is replaced by ``T_ref ∘ inv(ref_to_scene)``.
    """
    from rasterio.enums import Resampling
    from rasterio.warp import reproject
    from rasterio.windows import Window

    if window is None:
        window = Window(0, 0, stack.width, stack.height)
    h, w = int(window.height), int(window.width)
    oh, ow = out_shape or (h, w)
    bands = stack.count
    # destination pixel -> reference pixel
    d = np.array([[w / ow, 0.0, float(window.col_off)], [0.0, h / oh, float(window.row_off)]])
    if not _is_affine(m):
        return _warp_window_poly(stack, src, m, d, (oh, ow), resampling, scene)
    m = m[:, :3]
    md = compose(m, d)                                   # destination pixel -> scene pixel
    data = np.zeros((bands, oh, ow), dtype=np.float32)
    valid = np.zeros((oh, ow), dtype=bool)
    nodata = src.nodata
    lin = md[:, :2]
    if (np.allclose(lin, np.eye(2), atol=1e-9) and np.allclose(md[:, 2], np.round(md[:, 2]), atol=1e-6)):
        # integer offset, same pixel size: a plain read
        c0, r0 = int(round(md[0, 2])), int(round(md[1, 2]))
        win = Window(c0, r0, ow, oh)
        arr, ok = read_pixels(src, scene, win, boundless=True)
        inside = np.zeros((oh, ow), bool)
        rr0, cc0 = max(0, -r0), max(0, -c0)
        rr1, cc1 = min(oh, src.height - r0), min(ow, src.width - c0)
        if rr1 > rr0 and cc1 > cc0:
            inside[rr0:rr1, cc0:cc1] = True
        valid = inside & ok
        data = arr
        data[:, ~valid] = 0
        return data, valid
    corners = np.array([[0, 0, 1], [ow, 0, 1], [0, oh, 1], [ow, oh, 1]], dtype=np.float64).T
    sc, sr = portable.dot(md, corners)
    f = max(1, int(math.floor(math.sqrt(abs(portable.det(lin))))))   # scene px per output px
    pad = 4 * f
    c0 = int(max(0, math.floor(sc.min()) - pad))
    r0 = int(max(0, math.floor(sr.min()) - pad))
    c1 = int(min(src.width, math.ceil(sc.max()) + pad))
    r1 = int(min(src.height, math.ceil(sr.max()) + pad))
    if c1 <= c0 or r1 <= r0:
        return data, valid
    sw, sh = c1 - c0, r1 - r0
    sow, soh = max(1, -(-sw // f)), max(1, -(-sh // f))
    arr, ok = read_pixels(src, scene, Window(c0, r0, sw, sh), out_shape=(soh, sow),
                          resampling=Resampling.average if f > 1 else Resampling.nearest)
    src_valid = ok.astype(np.uint8)
    s = np.array([[sw / sow, 0.0, c0], [0.0, sh / soh, r0]])   # subset pixel -> scene pixel
    t_ref = affine_to_matrix(stack.transform)
    src_t = matrix_to_affine(compose(t_ref, compose(invert(m), s)))
    dst_t = matrix_to_affine(compose(t_ref, d))
    fill = nodata if nodata is not None else 0.0
    reproject(arr, data, src_transform=src_t, src_crs=stack.crs, dst_transform=dst_t,
              dst_crs=stack.crs, resampling=Resampling[resampling], src_nodata=fill,
              dst_nodata=fill, num_threads=_THREADS)
    if src_valid.all():
        # no nodata under the window: valid where the pixel centre falls on the scene
        jj, ii = np.meshgrid(np.arange(ow) + 0.5, np.arange(oh) + 0.5)
        col = md[0, 0] * jj + md[0, 1] * ii + md[0, 2]
        row = md[1, 0] * jj + md[1, 1] * ii + md[1, 2]
        valid = (col >= c0) & (col < c1) & (row >= r0) & (row < r1)
    else:
        vmask = np.zeros((oh, ow), np.uint8)
        reproject(src_valid, vmask, src_transform=src_t, src_crs=stack.crs, dst_transform=dst_t,
                  dst_crs=stack.crs, resampling=Resampling.nearest, src_nodata=0, dst_nodata=0)
        valid = vmask > 0
    data[:, ~valid] = 0
    return data, valid


#: Resampling kernels :func:`_resample_exact` computes itself (GDAL's definitions).
_EXACT = ("nearest", "bilinear", "cubic")


def _taps(frac: np.ndarray, resampling: str) -> tuple[int, list[np.ndarray]]:
    """First tap offset and the weights of each tap for fractional positions ``frac`` in [0, 1)."""
    if resampling == "bilinear":
        return 0, [1.0 - frac, frac]
    # Keys (1981) cubic convolution with a = -0.5, GDAL's "cubic"
    a = -0.5
    w = []
    for k in (-1, 0, 1, 2):
        t = np.abs(frac - k)
        w.append(np.where(t <= 1, ((a + 2) * t - (a + 3)) * t * t + 1,
                          np.where(t < 2, ((a * t - 5 * a) * t + 8 * a) * t - 4 * a, 0.0)))
    return -1, w


def _resample_exact(arr: np.ndarray, ok: np.ndarray, col: np.ndarray, row: np.ndarray,
                    resampling: str) -> tuple[np.ndarray, np.ndarray]:
    """Sample ``arr`` (bands, rows, cols) at continuous pixel positions (``col``, ``row``; centres at +0.5).

    Every output pixel depends only on the source pixels around its own
    position, so a window of a scene gets exactly the pixels the whole scene
    would. Source pixels off the array repeat the edge; an output pixel is valid
    where the source pixel under its centre is.
    """
    h, w = arr.shape[1:]
    u, v = col - 0.5, row - 0.5
    ci, ri = np.floor(col).astype(np.int64), np.floor(row).astype(np.int64)
    inside = (ci >= 0) & (ci < w) & (ri >= 0) & (ri < h)
    valid = inside & ok[np.clip(ri, 0, h - 1), np.clip(ci, 0, w - 1)]
    if resampling == "nearest":
        out = arr[:, np.clip(ri, 0, h - 1), np.clip(ci, 0, w - 1)].astype(np.float32)
        return out, valid
    i0, j0 = np.floor(v).astype(np.int64), np.floor(u).astype(np.int64)
    first, wy = _taps((v - i0).astype(np.float32), resampling)
    _, wx = _taps((u - j0).astype(np.float32), resampling)
    out = np.zeros((arr.shape[0],) + col.shape, np.float32)
    for a, wa in enumerate(wy):
        rr = np.clip(i0 + first + a, 0, h - 1)
        for b, wb in enumerate(wx):
            cc = np.clip(j0 + first + b, 0, w - 1)
            out += arr[:, rr, cc] * (wa * wb).astype(np.float32)
    return out, valid


def _warp_window_poly(stack: "Stack", src, m: np.ndarray, d: np.ndarray, out_shape, resampling: str,
                      scene: SceneInfo):
    """Warp through a second-order polynomial.

    At full resolution with a nearest, bilinear or cubic kernel the polynomial
    is applied to every output pixel and the scene sampled there
    (:func:`_resample_exact`): a window's pixels are then those of the whole
    scene warped at once, whatever the block size. (GDAL's GCP transformer,
    used otherwise, fits the inverse of the polynomial on each window's own
    control points, so windows differed by a few tenths of a pixel.) Coarser
    outputs and other kernels go through GDAL: ground control points are
    sampled exactly from the polynomial on a 7x7 grid over the window, and
    GDAL's second-order GCP polynomial reproduces it.
    """
    from rasterio.control import GroundControlPoint
    from rasterio.enums import Resampling
    from rasterio.warp import reproject
    from rasterio.windows import Window

    oh, ow = out_shape
    bands = stack.count
    data = np.zeros((bands, oh, ow), dtype=np.float32)
    if resampling in _EXACT and d[0, 0] == 1.0 and d[1, 1] == 1.0:
        jj, ii = np.meshgrid(np.arange(ow) + 0.5 + d[0, 2], np.arange(oh) + 0.5 + d[1, 2])
        col, row = apply_mapping(m, jj, ii)                              # scene pixels
        pad = 3
        c0 = int(min(max(0, math.floor(col.min()) - pad), src.width))
        r0 = int(min(max(0, math.floor(row.min()) - pad), src.height))
        c1 = int(max(min(src.width, math.ceil(col.max()) + pad), c0))
        r1 = int(max(min(src.height, math.ceil(row.max()) + pad), r0))
        if c1 <= c0 or r1 <= r0:
            return data, np.zeros((oh, ow), bool)
        arr, ok = read_pixels(src, scene, Window(c0, r0, c1 - c0, r1 - r0))
        out, valid = _resample_exact(np.asarray(arr, np.float32), np.asarray(ok, bool), col - c0, row - r0,
                                     resampling)
        # the scene's own extent, not the subset's: a subset edge is no scene edge
        valid &= (col >= 0) & (col < src.width) & (row >= 0) & (row < src.height)
        out[:, ~valid] = 0
        return out, valid
    gx, gy = np.meshgrid(np.linspace(0, ow, 7), np.linspace(0, oh, 7))
    qx, qy = d[0, 0] * gx + d[0, 2], d[1, 1] * gy + d[1, 2]            # reference pixels
    sx, sy = apply_mapping(m, qx, qy)                                    # scene pixels
    pad = 4
    c0 = int(max(0, math.floor(sx.min()) - pad))
    r0 = int(max(0, math.floor(sy.min()) - pad))
    c1 = int(min(src.width, math.ceil(sx.max()) + pad))
    r1 = int(min(src.height, math.ceil(sy.max()) + pad))
    if c1 <= c0 or r1 <= r0:
        return data, np.zeros((oh, ow), bool)
    arr, ok = read_pixels(src, scene, Window(c0, r0, c1 - c0, r1 - r0))
    nodata = src.nodata
    src_valid = ok.astype(np.uint8)
    t_ref = stack.transform
    mx, my = t_ref * (qx.ravel(), qy.ravel())
    gcps = [GroundControlPoint(row=float(r - r0), col=float(c - c0), x=float(x), y=float(y))
            for c, r, x, y in zip(sx.ravel(), sy.ravel(), mx, my)]
    dst_t = matrix_to_affine(compose(affine_to_matrix(t_ref), d))
    fill = nodata if nodata is not None else 0.0
    reproject(arr, data, gcps=gcps, src_crs=stack.crs, dst_transform=dst_t, dst_crs=stack.crs,
              resampling=Resampling[resampling], src_nodata=fill, dst_nodata=fill,
              num_threads=_THREADS, MAX_GCP_ORDER=2)
    vmask = np.zeros((oh, ow), np.uint8)
    reproject(src_valid, vmask, gcps=gcps, src_crs=stack.crs, dst_transform=dst_t, dst_crs=stack.crs,
              resampling=Resampling.nearest, src_nodata=0, dst_nodata=0, MAX_GCP_ORDER=2)
    jj, ii = np.meshgrid(d[0, 0] * (np.arange(ow) + 0.5) + d[0, 2], d[1, 1] * (np.arange(oh) + 0.5) + d[1, 2])
    col, row = apply_mapping(m, jj, ii)
    valid = (vmask > 0) & (col >= 0) & (col < src.width) & (row >= 0) & (row < src.height)
    data[:, ~valid] = 0
    return data, valid


def _nominal(scene: SceneInfo, crs, transform, width: int, height: int) -> np.ndarray:
    """Reference pixel -> scene pixel from georeferencing (affine fit if CRSs differ)."""
    ref_px_to_map = affine_to_matrix(transform)
    map_to_scene_px = invert(affine_to_matrix(scene.transform))
    if scene.crs == crs:
        return compose(map_to_scene_px, ref_px_to_map)
    from pyproj import Transformer

    tr = Transformer.from_crs(crs, scene.crs, always_xy=True)
    cols, rows = np.meshgrid(np.linspace(0, width, 9), np.linspace(0, height, 9))
    q = np.stack([cols.ravel(), rows.ravel(), np.ones(cols.size)])
    x, y = portable.dot(ref_px_to_map, q)
    sx, sy = tr.transform(x, y)
    p = portable.dot(map_to_scene_px, np.stack([sx, sy, np.ones(cols.size)]))
    return portable.lstsq(q.T, p.T).T


def _overlap_fraction(scene: SceneInfo, crs, transform, width, height) -> float:
    """Fraction of the reference grid covered by the scene's footprint."""
    m = _nominal(scene, crs, transform, width, height)
    cols, rows = np.meshgrid(np.linspace(0.5, width - 0.5, 24), np.linspace(0.5, height - 0.5, 24))
    c, r = portable.dot(m, np.stack([cols.ravel(), rows.ravel(), np.ones(cols.size)]))
    inside = (c >= 0) & (c < scene.width) & (r >= 0) & (r < scene.height)
    return float(inside.mean())


def open_stack(paths: Sequence[str | os.PathLike], *, manifest: str | os.PathLike | None = None,
               reference: str | int | os.PathLike = "first", resampling: str = "cubic",
               min_overlap: float = 0.2, bands=None, pixel_size: float | None = None) -> Stack:
    """Open dated scenes over one site as a :class:`Stack` on the reference grid.

    Parameters
    ----------
    paths : sequence of path-like
        Two or more rasters of the same site with the same band count; may be
        empty when ``manifest`` is given: then every file it lists is used.
    manifest : path-like, optional
        CSV with ``path,date`` columns (paths relative to its folder);
        overrides dates in names and tags.
    reference : ``"first"``, ``"last"``, int, ISO date string or path
        The scene whose grid the stack uses and against which others are
        registered and compared.
    resampling : str
        GDAL resampling for warping (``cubic`` by default).
    min_overlap : float
        Smallest fraction of the reference grid a scene must cover.
    bands : sequence of str, optional
        The role of every band (``("red", "green", "blue", "nir")``, ``alpha``
        for a validity band), for files that declare none.
    pixel_size : float, optional
        Metres per pixel of images that are not georeferenced (PNG/JPEG
        exports): they are put on a local grid (see
        :func:`changedetect.io.read_scene`); all images must then be so.

    Returns
    -------
    Stack

    Raises
    ------
    InputError
        Fewer than two scenes, different band counts, duplicate files, or an
        unknown reference.
    DateError, CRSError, UnreadableFileError
        From :func:`changedetect.io.read_scene`.
    NoOverlapError
        A scene does not cover the reference grid.
    """
    if resampling not in _RESAMPLING:
        raise InputError(f"Unknown resampling '{resampling}'; choose one of {', '.join(_RESAMPLING)}.")
    paths = [os.fspath(p) for p in paths]
    dates = read_manifest(manifest) if manifest is not None else None
    if not paths and dates:
        paths = list(dates)                       # --manifest alone: the files it lists
    if len(paths) < 2:
        only = f" (got only {paths[0]})" if paths else ""
        raise InputError(f"Change detection needs at least two dated images of the same site{only}. "
                         "Give two or more GeoTIFFs.")
    if len({os.path.realpath(p) for p in paths}) != len(paths):
        raise InputError("The same file was given twice; give each image once.")
    scenes = sorted((read_scene(p, manifest=dates, bands=bands, pixel_size=pixel_size) for p in paths),
                    key=lambda s: (s.date, s.name))
    local = [is_unreferenced(s.crs) for s in scenes]
    if any(local) and not all(local):
        names = ", ".join(s.name for s, loc in zip(scenes, local) if loc)
        raise InputError(f"Some images are georeferenced and some are not ({names}): georeference "
                         "those, or give only images that are not, with --pixel-size.")
    counts = {len(s.bands) for s in scenes}
    if len(counts) != 1:
        detail = ", ".join(f"{s.name}: {len(s.bands)}" for s in scenes)
        raise InputError(f"All images need the same bands; band counts differ ({detail}). "
                         "Select the same bands in every file.")
    for a, b in zip(scenes, scenes[1:]):
        if a.date == b.date:
            raise DateError(f"{a.path} and {b.path} have the same date {a.date}; give each "
                            "acquisition once, or fix the dates with --manifest.")
    ref = _pick_reference(scenes, reference)
    r = scenes[ref]
    for s in scenes:
        frac = _overlap_fraction(s, r.crs, r.transform, r.width, r.height)
        if frac < min_overlap:
            raise NoOverlapError(f"{s.path} covers {frac:.0%} of the reference image {r.name}; "
                                 f"it must cover at least {min_overlap:.0%}. Check that it shows "
                                 "the same site and that its CRS is right.")
    crs, transform, width, height, note = working_grid(r)
    if note:
        log.info("working grid: %s", note)
    stack = Stack(scenes=tuple(scenes), reference=ref, crs=crs, transform=transform,
                  width=width, height=height, count=len(r.bands),
                  ref_to_scene=tuple(np.zeros((2, 3)) for _ in scenes), resampling=resampling,
                  band_names=r.band_roles, grid_note=note)
    stack = stack.with_ref_to_scene([stack.nominal_ref_to_scene(i) for i in range(len(scenes))])
    log.info("stack: %d scenes %s .. %s, reference %s, grid %dx%d", len(scenes), scenes[0].date,
             scenes[-1].date, r.name, r.width, r.height)
    return stack


#: A projected CRS whose scale on the ground differs from 1 by more than this is not worked in.
MAX_SCALE_ERROR = 0.005


def ground_scale(crs, transform, width: int, height: int) -> tuple[float, float]:
    """Metres on the ground (WGS84 geodesic) of one pixel step in x and in y at the grid's centre."""
    from pyproj import Geod, Transformer

    tr = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    c, r = width / 2.0, height / 2.0
    pts = [transform * (c, r), transform * (c + 1, r), transform * (c, r + 1)]
    lon, lat = tr.transform([p[0] for p in pts], [p[1] for p in pts])
    geod = Geod(ellps="WGS84")
    gx = geod.inv(lon[0], lat[0], lon[1], lat[1])[2]
    gy = geod.inv(lon[0], lat[0], lon[2], lat[2])[2]
    return float(gx), float(gy)


def working_grid(scene: SceneInfo):
    """The grid a stack works on: the reference scene's own, unless its CRS is not true to scale.

    Every length and area in metres (opening widths, minimum areas, the
    ``area_m2`` of a change) needs a grid whose pixels have a known size on
    the ground. A projected CRS whose scale at the site is within
    :data:`MAX_SCALE_ERROR` of 1 (UTM, national grids) is used as it is. A
    geographic CRS (degrees) or one that is not (Web Mercator: 1/cos(latitude)
    in length, 1.43x in area at 45°) is replaced by the local UTM zone: the
    reference footprint's bounding box, with square pixels of the reference's
    geodesic pixel size (the finer of x and y). Scenes are warped onto it
    like onto any reference grid.

    Returns
    -------
    crs, transform, width, height, note
        ``note`` says why the grid was changed ("" when it was not).
    """
    from affine import Affine
    from pyproj import CRS, Transformer

    crs, t, w, h = scene.crs, scene.transform, scene.width, scene.height
    if is_unreferenced(crs):
        return crs, t, w, h, ("not georeferenced: a local grid in metres from the reference image's "
                              "upper-left corner (--pixel-size); positions are not on Earth")
    gx, gy = ground_scale(crs, t, w, h)
    pcrs = CRS.from_wkt(crs.to_wkt())
    if pcrs.is_projected:
        unit = pcrs.axis_info[0].unit_conversion_factor if pcrs.axis_info else 1.0
        nominal = math.sqrt(abs(t.a * t.e - t.b * t.d)) * unit
        k = math.sqrt(gx * gy) / nominal
        if abs(k - 1.0) <= MAX_SCALE_ERROR:
            return crs, t, w, h, ""
        why = f"{crs.to_string()} is not true to scale here (a pixel is {k:.3f} times its nominal size on the ground)"
    else:
        why = f"{crs.to_string()} is in degrees"
    tr = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    cx, cy = t * (w / 2.0, h / 2.0)
    lon, lat = tr.transform(cx, cy)
    zone = min(60, max(1, int((lon + 180.0) // 6.0) + 1))
    utm = CRS.from_epsg((32600 if lat >= 0 else 32700) + zone)
    to_utm = Transformer.from_crs(crs, utm, always_xy=True)
    s = np.linspace(0.0, 1.0, 33)
    edge = np.concatenate([np.stack([s * w, np.zeros_like(s)]), np.stack([s * w, np.full_like(s, h)]),
                           np.stack([np.zeros_like(s), s * h]), np.stack([np.full_like(s, w), s * h])], axis=1)
    mx, my = t * (edge[0], edge[1])
    ux, uy = to_utm.transform(mx, my)
    gsd = min(gx, gy)               # the finer of the two: resampling loses no detail
    x0, y1 = float(np.min(ux)), float(np.max(uy))
    width = int(math.ceil((float(np.max(ux)) - x0) / gsd))
    height = int(math.ceil((y1 - float(np.min(uy))) / gsd))
    note = (f"{why}: working on {utm.to_string()} (UTM zone {zone}{'N' if lat >= 0 else 'S'}) at "
            f"{gsd:.3f} m, {width} x {height} px; lengths and areas are on the ground")
    return utm, Affine(gsd, 0.0, x0, 0.0, -gsd, y1), width, height, note


def _pick_reference(scenes: Sequence[SceneInfo], reference) -> int:
    if isinstance(reference, int) and not isinstance(reference, bool):
        if -len(scenes) <= reference < len(scenes):
            return reference % len(scenes)
        raise InputError(f"Reference index {reference} is out of range for {len(scenes)} images.")
    ref = os.fspath(reference)
    if ref == "first":
        return 0
    if ref == "last":
        return len(scenes) - 1
    for i, s in enumerate(scenes):
        if ref in (s.date.isoformat(), s.name, os.fspath(s.path)):
            return i
    raise InputError(f"--reference '{ref}' matches no image; give 'first', 'last', a date "
                     f"({', '.join(s.date.isoformat() for s in scenes)}) or one of the files.")


def check_not_empty(stack: Stack, i: int) -> None:
    """Raise :class:`EmptyDataError` if scene ``i`` has no valid pixel on the grid."""
    f = max(1, int(max(stack.width, stack.height) // 256))
    _, valid = stack.read(i, out_shape=(max(1, stack.height // f), max(1, stack.width // f)))
    if not valid.any():
        raise EmptyDataError(f"{stack.scenes[i].path} holds no valid pixel over the site (all "
                             "nodata). Remove it from the inputs or check its nodata value.")


def area_m2(geom, crs) -> float:
    """Ground area of a geometry in square metres: geodesic in a geographic CRS, planar otherwise."""
    if crs is not None and getattr(crs, "is_geographic", False):
        from pyproj import Geod

        return float(abs(Geod(ellps="WGS84").geometry_area_perimeter(geom)[0]))
    return float(geom.area)
