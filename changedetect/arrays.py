"""Plumbing shared by the array kernels: argument checks, output buffers, row-chunked threads, sampling.

Every kernel module (:mod:`changedetect.detect`, :mod:`changedetect.mad`,
:mod:`changedetect.masks`) takes ``(bands, rows, cols)`` arrays with an
optional ``valid`` mask and checks, allocates and streams them the same way.
"""

from __future__ import annotations

import os

import numpy as np

from .errors import InputError

__all__ = ["check_pair", "out_array", "zero_invalid", "sample_pixels", "take_pixels", "n_threads", "run_rows"]


def check_pair(before: np.ndarray, after: np.ndarray, valid=None) -> None:
    """Refuse a pair whose shapes differ, that is not (bands, rows, cols), or whose ``valid`` does not fit."""
    if before.shape != after.shape:
        raise InputError(f"before and after must have the same shape, got {before.shape} and {after.shape}.")
    if before.ndim != 3:
        raise InputError(f"Kernels take (bands, rows, cols) arrays, got {before.ndim} dimensions.")
    if before.shape[0] < 1:
        raise InputError("Kernels need at least one band.")
    if valid is not None and np.shape(valid) != before.shape[1:]:
        raise InputError(f"valid must have shape (rows, cols) = {before.shape[1:]}, got {np.shape(valid)}.")


def out_array(out, shape, name: str = "out") -> np.ndarray:
    """``out`` checked to be float32 of ``shape``, or a new float32 array."""
    if out is None:
        return np.empty(shape, dtype=np.float32)
    if out.shape != tuple(shape) or out.dtype != np.float32:
        raise InputError(f"{name} must be a float32 array of shape {tuple(shape)}, got "
                         f"{out.dtype} {out.shape}.")
    return out


def zero_invalid(out: np.ndarray, valid) -> np.ndarray:
    """Set ``out`` to 0 (no change) wherever ``valid`` is False; in place."""
    if valid is not None:
        inv = ~np.asarray(valid, bool)
        if inv.any():
            out[..., inv] = 0
    return out


def sample_pixels(valid: np.ndarray | None, shape: tuple[int, int], max_pixels: int) -> np.ndarray:
    """Flat indices of at most ``max_pixels`` valid pixels at a regular stride (deterministic).

    Statistics (noise scales, IR-MAD covariances, cluster centres) converge long
    before every pixel is used; a regular stride keeps them reproducible.

    Examples
    --------
    >>> sample_pixels(None, (10, 10), 25)[:5].tolist()
    [0, 4, 8, 12, 16]
    """
    if valid is None:
        n = shape[0] * shape[1]
        return np.arange(0, n, max(1, -(-n // max_pixels)), dtype=np.int64)
    idx = np.flatnonzero(np.asarray(valid, bool).ravel())
    if idx.size > max_pixels:
        idx = idx[:: -(-idx.size // max_pixels)]
    return idx


def take_pixels(image: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """(bands, n) float64 values of ``image`` at flat pixel indices."""
    b = image.shape[0]
    flat = image.reshape(b, -1) if image.flags.c_contiguous else image.reshape(b, -1).copy()
    return flat[:, idx].astype(np.float64)


def n_threads(threads: int | None) -> int:
    """Worker threads for the row-chunked kernels: ``threads``, or up to 8 of the CPUs."""
    if threads is None:
        return max(1, min(os.cpu_count() or 1, 8))
    if threads < 1:
        raise InputError(f"threads={threads} must be at least 1.")
    return int(threads)


def run_rows(rows: int, row_pixels: int, work, buffers, threads: int | None,
              chunk_pixels: int = 1 << 17) -> None:
    """Call ``work(row_slice, buffers)`` over row chunks of about ``chunk_pixels`` values.

    Chunks are dealt round-robin to ``threads`` workers, each with its own
    scratch ``buffers(step)``; NumPy releases the GIL inside ufuncs, so the
    workers run in parallel.
    """
    step = max(1, chunk_pixels // max(row_pixels, 1))
    slices = [slice(r, min(rows, r + step)) for r in range(0, rows, step)]
    n = min(n_threads(threads), len(slices))

    def run(part):
        buf = buffers(step)
        for sl in part:
            work(sl, buf)

    if n <= 1:
        run(slices)
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(n) as ex:
        for f in [ex.submit(run, slices[i::n]) for i in range(n)]:
            f.result()
