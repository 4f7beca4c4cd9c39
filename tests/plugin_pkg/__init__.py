"""A detector plugin really installed for tests: :func:`build_plugin` and the ``detector_plugin`` fixture.

:func:`build_plugin` writes the package ``cd_plugin_test`` (the source beside
this file) and a ``cd_plugin_test-0.1.dist-info`` whose ``entry_points.txt``
registers ``threshold-test = cd_plugin_test:ThresholdDetector`` in the
``changedetect.detectors`` group into a directory. With that directory on
``sys.path`` (or ``PYTHONPATH`` for a subprocess), ``importlib.metadata`` finds
it exactly as it finds a package that pip installed.

Use the fixture in a test module with ``detector_plugin = plugin_pkg.detector_plugin``::

    def test_mine(detector_plugin):                 # installed for this test only
        get_detector(detector_plugin.name, config)
        subprocess.run([...], env=detector_plugin.env())   # also in a child process
"""

from __future__ import annotations

import importlib
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

__all__ = ["PLUGIN_NAME", "PLUGIN_MODULE", "InstalledPlugin", "build_plugin", "detector_plugin"]

#: The name the plugin registers its detector under.
PLUGIN_NAME = "threshold-test"
#: The plugin's importable package.
PLUGIN_MODULE = "cd_plugin_test"
_SOURCE = Path(__file__).resolve().parent / PLUGIN_MODULE


def build_plugin(dest: Path) -> Path:
    """Install the plugin into ``dest`` (created if needed) and return ``dest``.

    ``dest`` then holds ``cd_plugin_test/`` and ``cd_plugin_test-0.1.dist-info/``
    (``METADATA``, ``entry_points.txt``): put it on ``sys.path`` or ``PYTHONPATH``.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copytree(_SOURCE, dest / PLUGIN_MODULE, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("__pycache__"))
    info = dest / f"{PLUGIN_MODULE}-0.1.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {PLUGIN_MODULE}\nVersion: 0.1\n"
                                   "Summary: A changedetect detector plugin for the test suite.\n")
    (info / "entry_points.txt").write_text(
        f"[changedetect.detectors]\n{PLUGIN_NAME} = {PLUGIN_MODULE}:ThresholdDetector\n")
    return dest


@dataclass(frozen=True)
class InstalledPlugin:
    """Where the plugin is installed, and what it registers."""

    path: Path
    name: str = PLUGIN_NAME
    module: str = PLUGIN_MODULE

    def env(self, base: dict | None = None) -> dict:
        """Environment for a subprocess that sees the plugin (``PYTHONPATH`` first entry)."""
        env = dict(os.environ if base is None else base)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(self.path), env.get("PYTHONPATH")) if p)
        return env


@pytest.fixture
def detector_plugin(tmp_path_factory, monkeypatch) -> InstalledPlugin:
    """The plugin installed on ``sys.path`` for one test, gone (path and module) after it."""
    path = build_plugin(tmp_path_factory.mktemp("plugin"))
    monkeypatch.syspath_prepend(str(path))
    yield InstalledPlugin(path)
    for name in [m for m in sys.modules if m == PLUGIN_MODULE or m.startswith(PLUGIN_MODULE + ".")]:
        del sys.modules[name]
    importlib.invalidate_caches()
