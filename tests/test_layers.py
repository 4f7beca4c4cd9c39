"""The shape of the package: lower stages never import higher ones; the public face is complete.

DESIGN.md: data flows one way (stack -> co-registration -> normalisation -> per-pixel
change -> objects -> dating -> exports), and a lower module never imports a higher
one, so every stage can be used, tested and mapped over Dask chunks on its own.
"""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import changedetect

PKG = Path(changedetect.__file__).resolve().parent

#: Every module and its layer: a module may import only modules of lower layers.
LAYERS = {
    "errors": 0,
    "portable": 1, "arrays": 1,
    "config": 2, "provenance": 2,
    "io": 3,
    "stack": 4,
    "coregister": 5, "mad": 5,
    "detect": 6, "radiometry": 6,
    "timeline": 7, "masks": 7, "confidence": 7,
    "series": 8,
    "detector": 9,
    "objects": 10, "onnx_detector": 10,
    "buildings": 11, "pair": 11, "evidence": 11,
    "vector": 12, "evaluate": 12, "plot": 12, "synthetic": 12,
    "report": 13,
    "output": 14,
    "pipeline": 15, "review": 15,
    "cli": 16,
}


def _imports(path: Path) -> set[str]:
    """changedetect modules that ``path`` imports, at the top or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 and node.module:
                found.add(node.module.split(".")[0])
            elif node.level == 1:                               # from . import a, b
                found.update(a.name for a in node.names)
            elif node.module and node.module.startswith("changedetect."):
                found.add(node.module.split(".")[1])
            elif node.module == "changedetect":
                found.update(a.name for a in node.names)
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("changedetect."):
                    found.add(a.name.split(".")[1])
    return found - {"__version__"}


def test_every_module_has_a_layer():
    modules = {p.stem for p in PKG.glob("*.py")} - {"__init__", "__main__"}
    assert modules == set(LAYERS), f"give these a layer: {sorted(modules ^ set(LAYERS))}"


@pytest.mark.parametrize("module", sorted(LAYERS))
def test_no_module_imports_a_higher_stage(module):
    wrong = {m: LAYERS[m] for m in _imports(PKG / f"{module}.py") if LAYERS.get(m, -1) >= LAYERS[module]}
    assert not wrong, f"{module} (layer {LAYERS[module]}) imports {wrong}"


def test_the_public_face():
    """``import changedetect as cd`` lists the entry points, loads them lazily, and each one works."""
    code = ("import sys, changedetect as cd; "
            "print(sorted(m for m in sys.modules if m.startswith('changedetect.'))); print(dir(cd))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    loaded, listed = out.splitlines()
    assert loaded == "[]"                       # nothing heavy imported by `import changedetect`
    for name in ("detect_changes", "Config", "Result", "open_stack", "detect_pair", "make_site",
                 "get_detector", "Detector", "ChangeDetectError", "InputError", "__version__"):
        assert repr(name) in listed
    cd = changedetect
    for name in cd.__all__:
        assert getattr(cd, name) is not None
    assert cd.Config is importlib.import_module("changedetect.config").Config
    assert cd.detect_changes is importlib.import_module("changedetect.pipeline").detect_changes
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        cd.nope
    with pytest.raises(cd.InputError, match="min_rectangularity"):
        cd.Config(min_rectangularity=5)


@pytest.mark.parametrize("module", sorted(LAYERS))
def test_all_names_exist(module):
    mod = importlib.import_module(f"changedetect.{module}")
    missing = [n for n in getattr(mod, "__all__", ()) if not hasattr(mod, n)]
    assert not missing, f"changedetect.{module}.__all__ names what it lacks: {missing}"
