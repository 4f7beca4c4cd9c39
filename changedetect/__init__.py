"""changedetect: dated polygons of new construction, demolition and modification from satellite time series.

    >>> import changedetect as cd
    >>> result = cd.detect_changes(["a_2019-05-01.tif", "b_2021-06-12.tif"], "results")  # doctest: +SKIP
    >>> result.changes[["change_id", "kind", "last_absent", "first_present", "confidence"]]  # doctest: +SKIP

The main entry points are importable from here; each is loaded the first time
it is used, so ``import changedetect`` stays cheap:

* a run: :func:`detect_changes`, :class:`Config`, :class:`Result`;
* the stages: :func:`open_stack`, :func:`coregister`, :func:`detect_pair`
  (two images, no series), :func:`read_footprints`, :func:`export`,
  :func:`write_report` (the HTML evidence report of a results folder);
* detectors: :class:`Detector`, :class:`SeriesWindow`, :class:`PixelChange`,
  :func:`get_detector`, :func:`available_detectors`;
* the analyst's review: :func:`review` (decisions, a re-cut, the exports
  rewritten without re-running), :func:`read_review`, :class:`ReviewState`;
* checking: :func:`evaluate`, :func:`evaluate_run`, :func:`make_site` (the
  generated test site with ground truth);
* errors: :class:`ChangeDetectError` and its subclasses, :class:`ChangeDetectWarning`.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

#: Public name -> the module that defines it.
_LAZY = {
    "detect_changes": "pipeline", "Result": "pipeline",
    "Config": "config",
    "open_stack": "stack", "Stack": "stack",
    "coregister": "coregister", "Registration": "coregister",
    "detect_pair": "pair", "PairConfig": "pair", "PairResult": "pair",
    "read_footprints": "buildings", "building_change": "buildings",
    "export": "vector", "write_report": "report",
    "review": "review", "read_review": "review", "ReviewState": "review",
    "Detector": "detector", "SeriesWindow": "detector", "PixelChange": "detector",
    "get_detector": "detector", "available_detectors": "detector",
    "evaluate": "evaluate", "evaluate_run": "evaluate",
    "make_site": "synthetic",
    "ChangeDetectError": "errors", "InputError": "errors", "UnreadableFileError": "errors",
    "CRSError": "errors", "DateError": "errors", "NoOverlapError": "errors",
    "EmptyDataError": "errors", "RegistrationError": "errors", "ProcessingError": "errors",
    "OutputError": "errors", "OutputExistsError": "errors", "ChangeDetectWarning": "errors",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value          # the next lookup is a plain attribute
        return value
    raise AttributeError(f"module 'changedetect' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


def _callable_module(name: str, function) -> None:
    """Make the submodule ``name`` callable as its ``function`` of the same name.

    ``cd.review`` and ``cd.evaluate`` are functions (see ``_LAZY``), but
    importing ``changedetect.review`` makes the package attribute the module;
    calling the module then calls the function, so both orders of import work.
    """
    import sys
    import types

    class _CallableModule(types.ModuleType):
        def __call__(self, *args, **kwargs):
            return function(*args, **kwargs)

    sys.modules[name].__class__ = _CallableModule
