"""How sure a change is: one rule for detected changes and for given footprints.

``confidence = significance x cleanliness x persistence x registration x form``,
each factor in [0, 1] (cleanliness and form in [0.5, 1]):

* significance ``1 - exp(-(m / (min_magnitude / 2) - 1))`` of the net step
  ``m`` (noise sigmas): 0 at the object threshold (half ``min_magnitude``),
  0.63 at ``min_magnitude``, 0.86 at 1.5 times it;
* cleanliness ``0.5 + 0.5 F / (F + 4 min_fstat)`` of the step's F statistic: a
  step that barely passes the F test still counts half;
* persistence ``min(1, n_after / (persistence + 1))``: seen on one more usable
  acquisition than required is full;
* registration, :func:`changedetect.coregister.registration_term` of the two
  scenes around the step;
* form: :func:`shape_form` for a detected change (a building is compact),
  :func:`extent_form` for a given footprint (a building changes as a whole).

With two acquisitions there is no noise to measure a step against: the run's
noise sigma is then the scene's typical difference between the two images, so
a detected change's significance is its rank among the run's changes by step
size instead (:func:`site_significance`), and its persistence term is a half
(one acquisition after the change). A two-image change's confidence is at most
0.5: one image after a change cannot tell a building from a parked lorry, a
shadow or a season.
"""

from __future__ import annotations

import math

__all__ = ["confidence", "confidence_terms", "shape_form", "extent_form", "site_significance"]

#: The factors of a confidence, in the order of the product (the keys of :func:`confidence_terms`).
TERMS = ("significance", "cleanliness", "persistence", "registration", "form")

#: F statistic, in multiples of the F threshold, at which cleanliness is three quarters.
CLEAN_F_MULTIPLE = 4.0
#: Share of a footprint that, changed, gives a full extent factor.
FULL_EXTENT = 0.5


def confidence_terms(magnitude: float, fstat: float, n_after: int, *, min_magnitude: float,
                     min_fstat: float, persistence: int, registration: float, form: float) -> dict:
    """The factors (each 0-1) whose product is a change's confidence, by name (:data:`TERMS`).

    Stored with every change in ``run.json`` (``confidence_terms``) so that a
    report can say what a confidence is made of.

    Examples
    --------
    >>> t = confidence_terms(21.0, 30.0, 3, min_magnitude=14.0, min_fstat=5.0, persistence=2,
    ...                      registration=1.0, form=1.0)
    >>> {k: round(v, 3) for k, v in t.items()}
    {'significance': 0.865, 'cleanliness': 0.8, 'persistence': 1.0, 'registration': 1.0, 'form': 1.0}
    """
    significance = 1.0 - math.exp(-max(0.0, magnitude / (0.5 * min_magnitude) - 1.0))
    clean = fstat / (fstat + CLEAN_F_MULTIPLE * min_fstat) if min_fstat > 0 else 1.0
    persistent = min(1.0, n_after / max(persistence + 1, 1))
    return {"significance": significance, "cleanliness": 0.5 + 0.5 * clean, "persistence": persistent,
            "registration": float(registration), "form": float(form)}


def confidence(magnitude: float, fstat: float, n_after: int, *, min_magnitude: float, min_fstat: float,
               persistence: int, registration: float, form: float) -> float:
    """Confidence (0-1) of a dated change: the product of :func:`confidence_terms`.

    Examples
    --------
    >>> round(confidence(21.0, 30.0, 3, min_magnitude=14.0, min_fstat=5.0, persistence=2,
    ...                  registration=1.0, form=1.0), 3)
    0.692
    """
    terms = confidence_terms(magnitude, fstat, n_after, min_magnitude=min_magnitude, min_fstat=min_fstat,
                             persistence=persistence, registration=registration, form=form)
    return math.prod(terms[k] for k in TERMS)


def shape_form(rectangularity: float, solidity: float) -> float:
    """Form factor of a detected change: 0.5 + a quarter each for filling its rectangle and hull."""
    return 0.5 + 0.25 * min(1.0, rectangularity) + 0.25 * min(1.0, solidity)


def extent_form(changed_fraction: float) -> float:
    """Form factor of a footprint: 0.5, up to 1 once :data:`FULL_EXTENT` of it changed."""
    return 0.5 + 0.5 * min(1.0, changed_fraction / FULL_EXTENT)


def site_significance(magnitudes) -> list[float]:
    """Each step's mid-rank among a run's steps, in (0, 1): the significance of a two-image change.

    Ties share their mean rank; a single change gets 0.5.

    Examples
    --------
    >>> site_significance([3.0, 9.0, 5.0, 5.0])
    [0.125, 0.875, 0.5, 0.5]
    >>> site_significance([4.0])
    [0.5]
    """
    import numpy as np

    m = np.asarray(magnitudes, np.float64)
    if m.size == 0:
        return []
    order = np.sort(m)
    below = np.searchsorted(order, m, side="left")
    upto = np.searchsorted(order, m, side="right")
    return [float(v) for v in (below + upto) / (2.0 * m.size)]

