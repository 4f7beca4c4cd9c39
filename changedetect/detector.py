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
import math
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
from scipy import ndimage as ndi

from .masks import green_both_sides, illumination_change
from .series import f_threshold
from .timeline import step_change

__all__ = ["Detector", "PixelChange", "SeriesWindow", "StepDetector", "available_detectors", "get_detector",
           "ENTRY_POINT_GROUP", "AUTO", "resolve", "check_answer", "hysteresis", "change_count", "step_level",
           "coarse_grid", "NONE", "WEAK", "STRONG"]


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
    dark : float
        Brightness (band mean) below which a state can be a shadow: a low
        quantile of the first acquisition's, over the whole site.
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
    dark: float
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
        object.__setattr__(self, "strong", np.asarray(self.strong, bool))
        if self.weak is not None:
            object.__setattr__(self, "weak", np.asarray(self.weak, bool) & ~self.strong)
        shape = np.shape(self.strong)
        for name in ("first_present", "weak"):
            v = getattr(self, name)
            if v is not None and np.shape(v) != shape:
                raise ValueError(f"PixelChange.{name} has shape {np.shape(v)}; strong has {shape}")

    @property
    def changed(self) -> np.ndarray:
        """Strong or weak (before the hysteresis)."""
        return self.strong if self.weak is None else self.strong | self.weak

    def codes(self) -> tuple[np.ndarray, np.ndarray]:
        """The two bands of the step raster: date index where changed (-1 elsewhere), strength code."""
        changed = self.changed
        date = np.where(changed, self.first_present, -1).astype(np.int32)
        strength = np.where(self.strong, STRONG, np.where(changed, WEAK, NONE)).astype(np.uint8)
        return date, strength


#: Strength codes of a pixel in the step raster the pipeline keeps on disk.
NONE, WEAK, STRONG = 0, 1, 2


@runtime_checkable
class Detector(Protocol):
    """The per-pixel change stage: a window of every date in, :class:`PixelChange` out.

    Two optional members: ``halo`` (int), the pixels of context a detector
    needs around a window (filters, neighbourhoods): the pipeline hands it the
    window grown by that much and keeps the answer for the window itself; and
    ``fit(sample)``, called once before the first window with a
    :class:`SeriesWindow` of windows spread over the site, for statistics of
    the whole scene (then every window is judged alike, whatever the block
    size).
    """

    name: str

    def detect(self, window: SeriesWindow) -> PixelChange:
        ...


#: Entry point group where packages register detector factories by name.
ENTRY_POINT_GROUP = "changedetect.detectors"

#: Detectors that come with changedetect (name -> "module:attribute").
BUILTIN = {"statistical": "changedetect.detector:StepDetector",
           "pair": "changedetect.pair:PairDetector",
           "onnx": "changedetect.onnx_detector:OnnxDetector"}

#: The name that picks a built-in detector by the number of acquisitions (:func:`resolve`).
AUTO = "auto"


def resolve(name: str, n_dates: int) -> str:
    """The detector a run uses: ``auto`` is ``pair`` for two acquisitions, ``statistical`` for more.

    With two acquisitions the series model has one observation on each side of
    every step and no spread to test a step against; the pair method's
    normalisation, score and threshold were chosen on labelled real pairs.

    >>> resolve("auto", 2), resolve("auto", 8), resolve("onnx", 2)
    ('pair', 'statistical', 'onnx')
    """
    if name != AUTO:
        return name
    return "pair" if n_dates == 2 else "statistical"


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
    found = {AUTO: "pair for two acquisitions, statistical for more", **BUILTIN}
    for name, ep in sorted(_entry_points().items()):
        if name in found:
            import warnings

            from .errors import ChangeDetectWarning

            warnings.warn(f"The detector {ep.value} registers the built-in name {name!r} and is ignored; "
                          "its package should register another name.", ChangeDetectWarning, stacklevel=2)
            continue
        found[name] = ep.value
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

    available = available_detectors()           # warns about plugins that take a built-in name
    if name == AUTO:
        raise InputError("get_detector needs a detector's name; resolve 'auto' first with "
                         "resolve('auto', n_dates).")
    if name in BUILTIN:
        target, load = BUILTIN[name], lambda: _load(BUILTIN[name])
    else:
        eps = _entry_points()
        if name not in eps:
            raise InputError(f"No detector is called {name!r}; installed: "
                             f"{', '.join(available)}. A plugin registers its factory in "
                             f"the {ENTRY_POINT_GROUP!r} entry point group of its package.")
        target, load = eps[name].value, eps[name].load
    try:
        factory = load()
    except (ImportError, AttributeError) as exc:
        raise InputError(f"The detector {name!r} ({target}) cannot be imported: {exc}. Install the "
                         "package that provides it (for onnx: pip install 'changedetect[onnx]').") from None
    detector = factory(config)
    if not callable(getattr(detector, "detect", None)):
        raise InputError(f"The detector {name!r} ({target}) made {type(detector).__name__}, which has no "
                         "detect(window) method (see changedetect.detector.Detector).")
    return detector


class StepDetector:
    """The built-in statistical detector: the best step of every pixel's series, in noise sigmas.

    Every pixel's series (bands and texture) is fitted with one step
    (:func:`changedetect.timeline.step_change`); a pixel is *strong* when the
    step reaches ``min_magnitude`` noise sigmas and passes the F test at
    ``alpha``, with ``persistence`` usable dates after it, and *weak* when it
    reaches ``weak_fraction`` of that with the same F test: a demolished roof
    whose rubble has the roof's colour, or a roof close to the ground's colour,
    changes only a little per pixel, but all of it on the date the strong part
    (its vanished or new shadow, its outline) changed. Steps that are a shadow
    (:func:`changedetect.masks.illumination_change`) or vegetation in season
    (:func:`changedetect.masks.green_both_sides`, with red and NIR bands) are
    not changes.

    On a coarse grid (:func:`coarse_grid`), where a building is a handful of
    pixels and the per-pixel decision is the whole of its detection, the
    threshold follows the step's standard error (:func:`step_level`): a step
    between two states seen on many dates is measured more precisely than one
    between a few, so a monthly series of two years finds the smaller steps a
    series of a few dates cannot tell from noise (a series of up to 8 dates is
    judged by ``min_magnitude`` itself). On a finer grid a building is hundreds
    of pixels whose region is dated on its mean series, far less noisy than a
    pixel: ``min_magnitude`` stays, as a lower one mostly joins the moving
    shadows and seasonal ground around a building to its region (generated
    monthly sites lose annexes that way).
    """

    name = "statistical"

    def __init__(self, config):
        self.min_magnitude = float(config.min_magnitude)
        self.weak_fraction = float(config.weak_fraction)
        self.alpha = float(config.alpha)
        self.persistence = int(config.persistence)
        self.max_ndvi = float(config.max_ndvi)
        self.min_core_width_m = float(config.min_core_width_m)

    def detect(self, window: SeriesWindow) -> PixelChange:
        steps = step_change(window.images, window.usable, scale=window.noise, min_before=1,
                            min_after=self.persistence)
        min_fstat = f_threshold(self.alpha, len(window.dates), window.images.shape[1])
        clean = steps.fstat >= min_fstat
        level = (step_level(self.min_magnitude, steps.n_before, steps.n_after)
                 if coarse_grid(window.pixel_size, self.min_core_width_m) else self.min_magnitude)
        strong = (steps.magnitude >= level) & clean
        weak = (steps.magnitude >= self.weak_fraction * level) & clean & ~strong
        light = illumination_change(steps.before, steps.after, n_before=steps.n_before,
                                    n_after=steps.n_after, dark=window.dark)
        strong &= ~light
        weak &= ~light
        red, nir = window.band("red"), window.band("nir")
        if red is not None and nir is not None:
            veg = green_both_sides(window.images, window.usable, steps.first_present, (red, nir),
                                   self.max_ndvi)
            strong &= ~veg
            weak &= ~veg
        return PixelChange(first_present=steps.first_present, strong=strong, weak=weak)


def coarse_grid(pixel_size: float, min_core_width_m: float) -> bool:
    """Whether a building's core spans at most one pixel: buildings are a few pixels across.

    On such a grid (coarser than about 2.7 m with the default 4 m core) a
    building is a handful of pixels, so the per-pixel decision is the whole of
    its detection: :class:`StepDetector` holds each pixel's step to its
    standard error (:func:`step_level`). And the outline of a change can
    neither separate buildings that stand close together nor tell a
    building's shape from a strip's
    (:func:`changedetect.objects.core_fraction` has no core to measure):
    :func:`changedetect.objects.extract_objects` cuts every region at the
    peaks of its change and judges each piece by what it shows (the ground's
    pattern), not by its outline.

    Examples
    --------
    >>> coarse_grid(0.5, 4.0), coarse_grid(2.0, 4.0), coarse_grid(4.0, 4.0), coarse_grid(10.0, 4.0)
    (False, False, True, True)
    """
    return int(round(min_core_width_m / pixel_size)) <= 1


#: Dates on each side of the steps ``min_magnitude`` was set for: series of about 8 acquisitions.
REFERENCE_SIDE = 4
#: The threshold of a step never falls below this share of ``min_magnitude``, however many dates.
MIN_LEVEL_SHARE = 0.5


def step_level(min_magnitude: float, n_before, n_after) -> np.ndarray:
    """The size (noise sigmas) a pixel's step must reach, given the dates on each side of it.

    The difference of two segment means of ``n_before`` and ``n_after``
    observations has a standard error of ``sqrt(1/n_before + 1/n_after)``
    noise sigmas. ``min_magnitude`` is the threshold of a step between two
    states of :data:`REFERENCE_SIDE` dates each (what it was set for, on series
    of about 8 dates); a step whose states are seen on more dates has a smaller
    error and its threshold shrinks in proportion, so every step is held to the
    same significance. Steps with fewer dates on a side keep ``min_magnitude``
    (never more), so series of up to ``2 * REFERENCE_SIDE`` dates are judged as
    before. The dates of a real series are not independent draws (seasons,
    haze, glare last for months), so more dates stop sharpening the measure:
    the threshold never falls below :data:`MIN_LEVEL_SHARE` of ``min_magnitude``.

    Examples
    --------
    >>> [round(float(v), 2) for v in step_level(14.0, np.array([4, 1, 12, 100]), np.array([4, 7, 13, 100]))]
    [14.0, 14.0, 7.93, 7.0]
    """
    se = np.sqrt(1.0 / np.maximum(n_before, 1) + 1.0 / np.maximum(n_after, 1))
    ref = math.sqrt(2.0 / REFERENCE_SIDE)
    share = np.clip(se / ref, MIN_LEVEL_SHARE, 1.0)
    return (min_magnitude * share).astype(np.float32)


def check_answer(answer, window: SeriesWindow, name: str) -> PixelChange:
    """A detector's answer, checked against the window it was given.

    Raises
    ------
    ProcessingError
        Not a :class:`PixelChange`, another shape than the window, or a
        changed pixel whose date is not one of the window's (0 to dates - 1).
    """
    from .errors import ProcessingError

    if not isinstance(answer, PixelChange):
        raise ProcessingError(f"The detector {name!r} returned {type(answer).__name__}, not a PixelChange "
                              "(see changedetect.detector).")
    if answer.strong.shape != window.shape:
        raise ProcessingError(f"The detector {name!r} answered for {answer.strong.shape} pixels; the window "
                              f"has {window.shape}.")
    d = np.asarray(answer.first_present)[answer.changed]
    if d.size and (d.min() < 0 or d.max() >= len(window.dates)):
        raise ProcessingError(f"The detector {name!r} marked pixels changed on date index {int(d.min())}.."
                              f"{int(d.max())}; there are {len(window.dates)} dates (0 to "
                              f"{len(window.dates) - 1}).")
    return answer


def hysteresis(date: np.ndarray, strength: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Changed pixels of a window of the step raster, weak ones kept where they join strong ones.

    ``date`` holds every changed pixel's date index (-1: none), ``strength`` its
    code (:data:`STRONG`, :data:`WEAK`, :data:`NONE`). A weak pixel is kept
    when it is 8-connected, through changed pixels of the same date, to a strong
    pixel of that date, or when its group reaches the window's edge (it may
    join a strong pixel outside; the object stage checks whole regions).
    Returns the kept mask and the strong mask.

    This is not :func:`skimage.filters.apply_hysteresis_threshold`: the
    connection must run through pixels of one date, and a group cut by the
    window's edge is kept for the caller to judge whole.

    Examples
    --------
    >>> date = np.array([[2, 2, -1, 3, 3]]); s = np.array([[STRONG, WEAK, NONE, WEAK, WEAK]])
    >>> [m.astype(int).tolist() for m in hysteresis(date, s)]      # the right group touches the edge
    [[[1, 1, 0, 1, 1]], [[1, 0, 0, 0, 0]]]
    """
    strong = strength == STRONG
    weak = strength == WEAK
    if not weak.any():
        return strong, strong
    keep = strong.copy()
    eight = np.ones((3, 3), bool)
    for d in np.unique(date[weak]):
        group = (date == d) & (strong | weak)
        lab, n = ndi.label(group, structure=eight)
        ok = np.zeros(n + 1, bool)
        ok[np.unique(lab[strong & (date == d)])] = True
        edge = np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]])
        ok[np.unique(edge)] = True
        ok[0] = False
        keep |= ok[lab]
    return keep, strong


def change_count(images: np.ndarray, usable: np.ndarray, first_present: np.ndarray, changed: np.ndarray, *,
                 noise: np.ndarray, min_magnitude: float, min_fstat: float, persistence: int) -> np.ndarray:
    """How many lasting changes each pixel's series holds (0-3), uint8.

    A changed pixel counts its step (dated ``first_present``), plus one for a
    further significant step (``min_magnitude``, ``min_fstat`` and
    ``persistence`` as for the first) inside the segment before it and one
    inside the segment after it: a building put up and later demolished counts
    2. Each segment is fitted with the same linear-time step model, for the
    changed pixels only (usually a small share).
    """
    count = changed.astype(np.uint8)
    if not changed.any():
        return count
    x = images[:, :, changed][..., None]              # (dates, bands, n, 1)
    u = usable[:, changed][..., None]
    k = first_present[changed].astype(np.int32)[:, None]
    t = np.arange(images.shape[0])[:, None, None]
    extra = np.zeros(k.shape, np.uint8)
    for side in (t < k[None], t >= k[None]):
        seg = step_change(x, u & side, scale=noise, min_before=1, min_after=persistence)
        extra += ((seg.magnitude >= min_magnitude) & (seg.fstat >= min_fstat)).astype(np.uint8)
    count[changed] += extra[:, 0]
    return count
