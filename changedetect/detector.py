"""The per-pixel change stage: the :class:`Detector` protocol, the built-in detector, the registry.

A detector sees one window of every acquisition at once and says, per pixel,
whether it changed and on which date. Everything around it — the stack,
co-registration, radiometric normalisation, objects, dating, the buildings
table, exports and the run record — is the pipeline's, so a trained model
(open-cd, torchange, one's own) gets our registration, dating and evidence by
implementing this one method::

    class MyDetector:
        name = "mine"

        def __init__(self, config):          # a changedetect.Config
            ...

        def detect(self, window: SeriesWindow) -> PixelChange:
            ...

and registering its factory (a class, or any callable ``factory(config)``) in
the ``changedetect.detectors`` entry point group of its package::

    [project.entry-points."changedetect.detectors"]
    mine = "my_package:MyDetector"

after which ``detect-changes --detector mine`` and ``Config(detector="mine")``
use it.

The contract
------------
In (:class:`SeriesWindow`): ``images`` (dates, bands + 1, rows, cols) float32,
every date normalised to the first acquisition's radiometry, the spectral
bands in the order of ``band_roles`` and, last, the local texture (standard
deviation of the band mean over 5 x 5 pixels); ``usable`` (dates, rows, cols)
bool, False where a date has no valid data, was not co-registered (and the
run skips such scenes) or is a cloud or cloud shadow; ``noise`` (bands + 1,)
the standard deviation of one observation per channel, measured on the run.

Out (:class:`PixelChange`): per pixel, ``first_present`` — the index of the
first date showing its change (-1: none) — and ``strong``, whether it changed
on its own. Optionally ``weak``: pixels that changed only a little, kept only
where they are 8-connected, through pixels of the same date, to strong pixels
of that date (a hysteresis, :func:`hysteresis`). A change first seen on date
``k`` should stay visible on ``config.persistence`` usable dates from ``k``
on; the pipeline then dates every object again on its mean series.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

__all__ = ["Detector", "PixelChange", "SeriesWindow", "available_detectors", "get_detector", "ENTRY_POINT_GROUP"]


@dataclass(frozen=True)
class SeriesWindow:
    """One window of every acquisition, as a detector sees it.

    Attributes
    ----------
    images : ndarray, (dates, bands + 1, rows, cols) float32
        Normalised to the first acquisition; the last channel is the local texture.
    usable : ndarray, (dates, rows, cols) bool
        Valid, registered (or kept) and not a transient (cloud, cloud shadow).
    dates : tuple of datetime.date
        The acquisition dates, in order.
    band_roles : tuple of str
        Role of every spectral channel (``red``, ``green``, ``blue``, ``nir``, ...).
    noise : ndarray, (bands + 1,) float32
        Standard deviation of one observation per channel (texture last).
    transform : affine.Affine
        Georeferencing of the window's upper-left pixel.
    crs : rasterio.crs.CRS
        Of the grid (a local metric CRS for images that are not georeferenced).
    pixel_size : float
        Metres per pixel.
    """

    images: np.ndarray
    usable: np.ndarray
    dates: tuple[_dt.date, ...]
    band_roles: tuple[str, ...]
    noise: np.ndarray
    transform: object
    crs: object
    pixel_size: float

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, cols) of the window."""
        return self.usable.shape[1:]

    def band(self, role: str) -> int | None:
        """Index of the channel with this role, or None."""
        return self.band_roles.index(role) if role in self.band_roles else None


@dataclass(frozen=True)
class PixelChange:
    """A detector's per-pixel answer over one window.

    Attributes
    ----------
    first_present : ndarray, (rows, cols) integer
        Index of the first date showing the pixel's change; -1 where none.
    strong : ndarray, (rows, cols) bool
        Changed on its own.
    weak : ndarray, (rows, cols) bool, optional
        Changed a little: kept only where joined to strong pixels of the same
        date (:func:`hysteresis`). None: no weak pixels.
    """

    first_present: np.ndarray
    strong: np.ndarray
    weak: np.ndarray | None = None

    def __post_init__(self):
        shape = np.shape(self.strong)
        for name in ("first_present", "weak"):
            v = getattr(self, name)
            if v is not None and np.shape(v) != shape:
                raise ValueError(f"PixelChange.{name} has shape {np.shape(v)}; strong has {shape}")


@runtime_checkable
class Detector(Protocol):
    """The per-pixel change stage: a window of every date in, :class:`PixelChange` out."""

    name: str

    def detect(self, window: SeriesWindow) -> PixelChange:
        ...


#: Entry point group where packages register detector factories by name.
ENTRY_POINT_GROUP = "changedetect.detectors"

#: Detectors that come with changedetect (name -> "module:attribute").
BUILTIN = {"statistical": "changedetect.detector:StepDetector",
           "onnx": "changedetect.onnx_detector:OnnxDetector"}


def _load(target: str):
    import importlib

    module, _, attr = target.partition(":")
    obj = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def _entry_points() -> dict:
    from importlib.metadata import entry_points

    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def available_detectors() -> dict[str, str]:
    """Every detector name that ``Config(detector=...)`` accepts, with where it comes from.

    The built-in ones first, then those that installed packages register in the
    ``changedetect.detectors`` entry point group (a built-in name cannot be taken).
    """
    found = dict(BUILTIN)
    for name, ep in sorted(_entry_points().items()):
        found.setdefault(name, ep.value)
    return found


def get_detector(name: str, config) -> Detector:
    """The detector registered as ``name``, made for ``config``.

    Raises
    ------
    InputError
        No detector has that name (the message lists those installed), its
        package fails to import, or what it makes has no ``detect`` method.
    """
    from .errors import InputError

    if name in BUILTIN:
        target, load = BUILTIN[name], lambda: _load(BUILTIN[name])
    else:
        eps = _entry_points()
        if name not in eps:
            raise InputError(f"No detector is called {name!r}; installed: "
                             f"{', '.join(available_detectors())}. A plugin registers its factory in "
                             f"the {ENTRY_POINT_GROUP!r} entry point group of its package.")
        target, load = eps[name].value, eps[name].load
    try:
        factory = load()
    except ImportError as exc:
        raise InputError(f"The detector {name!r} ({target}) cannot be imported: {exc}. Install the "
                         "package that provides it (for onnx: pip install 'changedetect[onnx]').") from None
    detector = factory(config)
    if not callable(getattr(detector, "detect", None)):
        raise InputError(f"The detector {name!r} ({target}) made {type(detector).__name__}, which has no "
                         "detect(window) method (see changedetect.detector.Detector).")
    return detector
