"""What a run was computed with: library versions and the CPU code paths taken.

Results are evidence, so ``run.json`` says which code produced them. Beyond
the package versions this includes the SIMD loops NumPy dispatched on the
machine (``X86_V3`` is AVX2, ``X86_V4`` AVX-512, …) and the OpenBLAS kernel
set: both are chosen by CPU at run time, and they are what could make a last
bit differ between two machines with the same versions (see "Reproducibility"
in the README for what is guaranteed).

Examples
--------
>>> from changedetect.provenance import cpu_dispatch, versions
>>> sorted(cpu_dispatch())
['npy_disable_cpu_features', 'numpy_baseline', 'numpy_dispatched', 'openblas_core', 'openblas_coretype_env']
>>> versions()["numpy"] is not None
True
"""

from __future__ import annotations

import ctypes
import os
import platform

__all__ = ["versions", "cpu_dispatch", "dispatch_paths"]

#: Packages whose versions every run records.
PACKAGES = ("numpy", "scipy", "rasterio", "shapely", "geopandas", "pyogrio", "pyproj", "scikit-image")


def versions() -> dict:
    """Versions of changedetect, Python, the platform, the libraries and GDAL.

    Returns
    -------
    dict
        ``{"changedetect": ..., "python": ..., "platform": ..., "numpy": ..., ..., "gdal": ...}``;
        ``None`` for a package that is not installed.
    """
    import importlib.metadata as md

    from . import __version__

    out = {"changedetect": __version__, "python": platform.python_version(),
           "platform": platform.platform()}
    for pkg in PACKAGES:
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = None
    try:
        import rasterio

        out["gdal"] = rasterio.__gdal_version__
    except Exception:  # pragma: no cover - rasterio is a dependency
        out["gdal"] = None
    return out


def _openblas_core() -> str | None:
    """Name of the OpenBLAS kernel set in use (``"Haswell"``, ``"SkylakeX"``, …), or None.

    NumPy's wheels carry OpenBLAS as ``libscipy_openblas``; the library is
    found among the process's loaded objects (Linux ``/proc/self/maps``) and
    asked with its own ``openblas_get_corename``. None where that is not
    possible (another BLAS, another OS).
    """
    try:
        with open("/proc/self/maps") as fh:
            libs = sorted({line.split()[-1] for line in fh if "openblas" in line.lower() and "/" in line})
    except OSError:
        return None
    for path in libs:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for name in ("scipy_openblas_get_corename64_", "scipy_openblas_get_corename",
                     "openblas_get_corename64_", "openblas_get_corename"):
            fn = getattr(lib, name, None)
            if fn is not None:
                fn.restype = ctypes.c_char_p
                try:
                    return fn().decode("ascii", "replace")
                except Exception:  # pragma: no cover - defensive
                    return None
    return None


def _numpy_cpu():
    try:
        from numpy._core import _multiarray_umath as m
    except ImportError:  # pragma: no cover - NumPy < 2
        from numpy.core import _multiarray_umath as m
    return m.__cpu_baseline__, m.__cpu_dispatch__, m.__cpu_features__


def dispatch_paths() -> dict[str, str]:
    """``NPY_DISABLE_CPU_FEATURES`` values that put NumPy on each of its code paths.

    NumPy reads the variable at import, so a path is taken by a new process
    started with it set. Keys: ``"native"`` (nothing disabled: what this CPU
    gets), ``"no-avx512"`` (the AVX-512 targets disabled, i.e. the AVX2 path
    of an AVX-512 machine), ``"baseline"`` (every dispatched target disabled:
    the code of a CPU with none of them, such as an x86-64 without AVX2).
    Built from NumPy's own dispatch list, so it holds on any architecture
    (on ARM "no-avx512" is the same as "native").

    Examples
    --------
    >>> paths = dispatch_paths()
    >>> sorted(paths), paths["native"]
    (['baseline', 'native', 'no-avx512'], '')
    """
    _, dispatch, _ = _numpy_cpu()
    avx512 = [f for f in dispatch if f.startswith(("X86_V4", "AVX512"))]
    return {"native": "", "no-avx512": " ".join(avx512), "baseline": " ".join(dispatch)}


def cpu_dispatch() -> dict:
    """CPU code paths of this process: NumPy's baseline and dispatched SIMD targets, OpenBLAS's kernels.

    Returns
    -------
    dict
        ``numpy_baseline``: features NumPy was compiled for (always used);
        ``numpy_dispatched``: the optional targets this CPU has and NumPy
        enabled (after ``NPY_DISABLE_CPU_FEATURES``), in NumPy's order;
        ``npy_disable_cpu_features``: that variable as set, or None;
        ``openblas_core``: OpenBLAS's kernel set, or None when unknown;
        ``openblas_coretype_env``: ``OPENBLAS_CORETYPE`` as set, or None.
    """
    __cpu_baseline__, __cpu_dispatch__, __cpu_features__ = _numpy_cpu()
    return {
        "numpy_baseline": list(__cpu_baseline__),
        "numpy_dispatched": [f for f in __cpu_dispatch__ if __cpu_features__.get(f)],
        "npy_disable_cpu_features": os.environ.get("NPY_DISABLE_CPU_FEATURES") or None,
        "openblas_core": _openblas_core(),
        "openblas_coretype_env": os.environ.get("OPENBLAS_CORETYPE") or None,
    }
