"""Gradient/Hessian sums for federated Newton fits of calibration and recalibration models.

All fits are on the logit η = logit(p) of the model's probability. Each function evaluates the terms at the
parameters the coordinator broadcast; the coordinator sums them over sites and takes a Newton step.
"""

from __future__ import annotations

import numpy as np

from fedmath.calibration import binomial_temperature_terms, calibration_terms, local_calibration
from site_client.evaluation._checks import as_labels, as_probabilities, logit

Aggregate = dict[str, "np.ndarray | float | int"]


def logistic_calibration_terms(
    p: object, y: object, intercept: float, slope: float, site: str | None = None
) -> Aggregate:
    """Terms of the logistic calibration model y ~ σ(a + b·η) at (a, b): :func:`fedmath.calibration.calibration_terms`
    on η = logit(p) after the inputs are checked (``n``, ``grad``, ``info``, ``nll``). Also Platt scaling when p
    is the uncalibrated output on a calibration split.
    """
    p = as_probabilities(p, "p", site)
    y = as_labels(y, p.size, "y", site)
    if not (np.isfinite(intercept) and np.isfinite(slope)):
        raise ValueError(f"calibration parameters must be finite, got intercept={intercept!r}, slope={slope!r}")
    return calibration_terms(logit(p), y, float(intercept), float(slope))


def local_calibration_fit(p: object, y: object, site: str | None = None) -> Aggregate:
    """A held-out site's own calibration fits (:func:`fedmath.calibration.local_calibration`): joint (a, b) with
    covariance, and calibration-in-the-large (intercept with logit p as offset) with its variance."""
    p = as_probabilities(p, "p", site)
    y = as_labels(y, p.size, "y", site)
    return local_calibration(logit(p), y)


def log_temperature_terms(p: object, y: object, log_t: float, site: str | None = None) -> Aggregate:
    """Terms of temperature scaling p' = σ(η / T) in u = log T.

    w = η e^{-u}, μ = σ(w); d nll/du = -Σ(μ - y) w (``grad``); d² nll/du² = Σ[μ(1-μ) w² + (μ - y) w] (``hess``,
    can be negative far from the optimum); ``hess_fisher`` = Σ μ(1-μ) w² (its expectation, always >= 0).
    """
    p = as_probabilities(p, "p", site)
    y = as_labels(y, p.size, "y", site)
    if not np.isfinite(log_t):
        raise ValueError(f"log temperature must be finite, got {log_t!r}")
    return binomial_temperature_terms(logit(p), y, np.ones(p.size), float(log_t))
