"""The logistic link and the recalibration maps, as the study applies them and the registered model repeats them.

* σ(w) = 1/(1 + e^-w), computed as ½(1 + tanh(w/2)) so that it never overflows;
* logit(p) = log p - log(1 - p) with p clipped to [1e-12, 1 - 1e-12] (a probability of exactly 0 or 1 stays
  finite);
* recalibration of a probability p on the logit scale η = logit(p), with the parameter vector the sites receive:
  ``platt`` [a, b]: p' = σ(a + b·η); ``temperature`` [log T]: p' = σ(η·e^(-log T)) = σ(η/T); ``none`` []: p' = p.

Pure numpy. The study (site_client.study.evaluate) and the registered MLflow model (coordinator.pyfunc_model)
call these same functions, so the probabilities a new site gets are the ones whose calibration was validated.
"""

from __future__ import annotations

import math

import numpy as np

RECALIBRATION_METHODS = ("platt", "temperature", "none")


def sigmoid(w: np.ndarray) -> np.ndarray:
    """σ(w) = ½(1 + tanh(w/2))."""
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(w, dtype=np.float64)))


def logit(p: np.ndarray) -> np.ndarray:
    """log p - log(1 - p) of p clipped to [1e-12, 1 - 1e-12]."""
    q = np.clip(np.asarray(p, dtype=np.float64), 1e-12, 1 - 1e-12)
    return np.log(q) - np.log1p(-q)


def recalibration_vector(method: str, params: dict[str, float]) -> np.ndarray:
    """The parameter vector the sites apply: platt {a, b} → [a, b], temperature {temperature: T} → [log T],
    none → []."""
    if method == "platt":
        return np.array([params["a"], params["b"]], dtype=np.float64)
    if method == "temperature":
        return np.array([math.log(params["temperature"])], dtype=np.float64)
    if method == "none":
        return np.zeros(0)
    raise ValueError(f"unknown recalibration method {method!r}; expected one of {', '.join(RECALIBRATION_METHODS)}")


def recalibrate(p: np.ndarray, method: str, params: np.ndarray) -> np.ndarray:
    """Platt σ(a + b·logit p) (params [a, b]), temperature σ(logit p · e^(-log T)) (params [log T]) or identity."""
    if method == "none":
        return np.asarray(p, dtype=np.float64)
    params = np.asarray(params, dtype=np.float64)
    eta = logit(p)
    if method == "platt":
        return sigmoid(params[0] + params[1] * eta)
    if method == "temperature":
        return sigmoid(eta * np.exp(-params[0]))
    raise ValueError(f"unknown recalibration method {method!r}; expected one of {', '.join(RECALIBRATION_METHODS)}")
