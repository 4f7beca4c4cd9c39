"""One exception hierarchy for changedetect.

Every error says what was wrong, with which file, and how to fix it. Each class
also inherits the matching built-in exception, so ``except ValueError`` keeps
working for callers who do not know this library.

Examples
--------
>>> from changedetect.errors import InputError, ChangeDetectError
>>> issubclass(InputError, ValueError) and issubclass(InputError, ChangeDetectError)
True
"""

from __future__ import annotations

__all__ = [
    "ChangeDetectError",
    "InputError",
    "UnreadableFileError",
    "CRSError",
    "DateError",
    "NoOverlapError",
    "EmptyDataError",
    "RegistrationError",
    "ProcessingError",
    "OutputError",
    "OutputExistsError",
    "ChangeDetectWarning",
]


class ChangeDetectError(Exception):
    """Root of every error raised on purpose by changedetect."""


class InputError(ChangeDetectError, ValueError):
    """The input cannot be used as given (bad value, bad file, bad combination)."""


class UnreadableFileError(InputError, OSError):
    """A file is missing or is not a raster/vector file that GDAL can read."""


class CRSError(InputError):
    """A raster has no coordinate reference system, or one that cannot be used."""


class DateError(InputError):
    """No acquisition date could be found for a scene, or dates are inconsistent."""


class NoOverlapError(InputError):
    """A scene does not overlap the reference grid."""


class EmptyDataError(InputError):
    """A scene, or the whole stack, holds no valid pixel."""


class RegistrationError(ChangeDetectError, RuntimeError):
    """A scene could not be co-registered to the reference."""


class ProcessingError(ChangeDetectError, RuntimeError):
    """A stage produced something the next one cannot use (e.g. a plugin detector's answer)."""


class OutputError(ChangeDetectError, OSError):
    """An output cannot be written where it was asked for."""


class OutputExistsError(OutputError, InputError):
    """The output folder already holds files (an earlier run?) and overwriting was not asked for."""


class ChangeDetectWarning(UserWarning):
    """Warnings issued by changedetect (filter them with this class)."""
