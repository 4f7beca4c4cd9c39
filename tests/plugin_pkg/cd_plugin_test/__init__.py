"""cd_plugin_test: a third-party detector, as a plugin package would ship one.

The test suite installs it (``plugin_pkg.build_plugin``) into a directory on
``sys.path`` with a ``dist-info`` that registers it in the
``changedetect.detectors`` entry point group as ``threshold-test``.
"""

from __future__ import annotations

import numpy as np

from changedetect.detector import PixelChange, SeriesWindow

__all__ = ["ThresholdDetector"]


class ThresholdDetector:
    """Change vector analysis against the first date, in noise standard deviations.

    A pair (date 0, date t) changed where the Euclidean norm over the spectral
    bands of ``(x_t - x_0) / noise`` reaches :attr:`sigmas`
    (``config.min_magnitude`` when the config has it); a pixel's change starts
    at the first such date that is followed by changed pairs on at least
    ``config.persistence`` usable dates, counting it (unusable dates skipped).
    """

    name = "threshold-test"
    #: Change vector norm, in noise standard deviations, that counts as a change.
    sigmas = 5.0

    def __init__(self, config):
        self.persistence = int(config.persistence)
        self.sigmas = float(getattr(config, "min_magnitude", self.sigmas))

    def detect(self, window: SeriesWindow) -> PixelChange:
        x = np.asarray(window.images, np.float32)[:, :-1]
        u = np.asarray(window.usable, bool)
        noise = np.asarray(window.noise, np.float32)[:-1, None, None]
        valid = u[1:] & u[0]
        with np.errstate(invalid="ignore"):
            norm = np.sqrt((((x[1:] - x[0]) / noise) ** 2).sum(axis=1))
            hit = valid & (norm >= self.sigmas)
        run = np.zeros(u.shape[1:], np.int32)
        first = np.full(u.shape[1:], -1, np.int16)
        for i in range(len(hit) - 1, -1, -1):
            run = np.where(hit[i], run + 1, np.where(valid[i], 0, run))
            first[hit[i] & (run >= self.persistence)] = i + 1
        return PixelChange(first, first >= 0)
