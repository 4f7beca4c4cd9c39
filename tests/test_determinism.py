"""The same bits on every CPU: the generator and detect-changes under each of NumPy's code paths.

NumPy picks its SIMD loops when it is imported (``NPY_DISABLE_CPU_FEATURES``
sends a new process down an older CPU's path) and OpenBLAS picks its kernels
(``OPENBLAS_CORETYPE``), so each check runs in a fresh process per setting:
the native path, the AVX2 path of an AVX-512 machine, the baseline path of a
CPU with neither, and OpenBLAS's Haswell kernels (what an AVX2 machine runs).
On a machine without AVX-512 the first two are the same path, and so on: the
test still runs and says which features each process dispatched.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio

from changedetect.provenance import dispatch_paths

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sample_data"
EXE = Path(sys.executable).parent / "detect-changes"

_P = dispatch_paths()
SETTINGS = {
    "no-avx512": {"NPY_DISABLE_CPU_FEATURES": _P["no-avx512"]},
    "baseline": {"NPY_DISABLE_CPU_FEATURES": _P["baseline"]},
}
if platform.machine().lower() in ("x86_64", "amd64"):
    SETTINGS["openblas-haswell"] = {"OPENBLAS_CORETYPE": "Haswell"}


def _env(extra: dict) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("NPY_DISABLE_CPU_FEATURES", "NPY_ENABLE_CPU_FEATURES", "OPENBLAS_CORETYPE")}
    env.update(extra)
    return env


def _dispatched(extra: dict) -> dict:
    code = "import json; from changedetect.provenance import cpu_dispatch; print(json.dumps(cpu_dispatch()))"
    p = subprocess.run([sys.executable, "-c", code], env=_env(extra), capture_output=True, text=True,
                       check=True)
    return json.loads(p.stdout)


def test_settings_take_effect():
    """Each setting really changes this process's code path (where the CPU has a path to leave)."""
    native = _dispatched({})
    base = _dispatched(SETTINGS["baseline"])
    assert base["numpy_dispatched"] == []
    assert base["npy_disable_cpu_features"] == _P["baseline"]
    no512 = _dispatched(SETTINGS["no-avx512"])
    assert not any(f.startswith(("X86_V4", "AVX512")) for f in no512["numpy_dispatched"])
    assert set(no512["numpy_dispatched"]) <= set(native["numpy_dispatched"])
    if "openblas-haswell" in SETTINGS and native["openblas_core"] is not None:
        assert _dispatched(SETTINGS["openblas-haswell"])["openblas_core"].lower() == "haswell"


@pytest.mark.parametrize("setting", sorted(SETTINGS))
def test_sample_regenerates_identically_on_every_path(setting, tmp_path):
    """`make sample` writes the bundled sample_data/ bit for bit under every NumPy and OpenBLAS path."""
    out = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "changedetect.synthetic", str(out), "--seed", "7"],
                   env=_env(SETTINGS[setting]), check=True, capture_output=True)
    names = sorted(p.name for p in SAMPLE.glob("site_*.tif"))
    assert names == sorted(p.name for p in out.glob("site_*.tif"))
    for name in names:
        with rasterio.open(out / name) as a, rasterio.open(SAMPLE / name) as b:
            assert np.array_equal(a.read(), b.read()), f"{name} differs on the {setting} path"
    for name in ("truth.geojson", "misregistration.json"):
        assert json.loads((out / name).read_text()) == json.loads((SAMPLE / name).read_text())


def _detect(out: Path, extra: dict) -> Path:
    p = subprocess.run([str(EXE), *sorted(map(str, SAMPLE.glob("site_*.tif"))), "--out", str(out),
                        "--format", "geojson", "--format", "kml", "-q"],
                       env=_env(extra), capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    return out


@pytest.fixture(scope="module")
def native_run(tmp_path_factory):
    return _detect(tmp_path_factory.mktemp("native") / "out", {})


_STABLE = ("registration", "normalization", "thresholds", "noise")


@pytest.mark.parametrize("setting", sorted(SETTINGS))
def test_detect_changes_identical_on_every_path(setting, native_run, tmp_path):
    """Change files byte-identical, every per-pixel product pixel-identical, the same registration
    and normalisation in run.json, whichever code path NumPy and OpenBLAS take."""
    out = _detect(tmp_path / "out", SETTINGS[setting])
    for name in ("changes.geojson", "changes.kml"):
        assert (out / name).read_bytes() == (native_run / name).read_bytes(), f"{name} on {setting}"
    for name in ("first_change.tif", "change_count.tif"):
        with rasterio.open(out / name) as a, rasterio.open(native_run / name) as b:
            assert np.array_equal(a.read(), b.read()), f"{name} on {setting}"
    run, ref = (json.loads((d / "run.json").read_text()) for d in (out, native_run))
    assert run["cpu"]["npy_disable_cpu_features"] == (SETTINGS[setting].get("NPY_DISABLE_CPU_FEATURES")
                                                      or None)
    for key in ref:
        if any(key.startswith(s) for s in _STABLE):
            assert run[key] == ref[key], f"run.json {key} on {setting}"
    assert run["registration"] == ref["registration"]
    for name in ("changes.geojson", "changes.kml", "first_change.tif", "change_count.tif"):
        assert run["outputs"][name] == ref["outputs"][name]      # the SHA-256 that run.json records
    assert len(json.loads((out / "changes.geojson").read_text())["features"]) > 0
