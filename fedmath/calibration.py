"""Logistic calibration of a risk model, both halves: the site's Newton terms and the coordinator's Newton fit.

On η = logit(p) of the model's probability:

* **calibration slope** b and its intercept a: the joint fit y ~ σ(a + b·η);
* **calibration-in-the-large (CITL)**: the intercept a of y ~ σ(a + 1·η), i.e. with η as an *offset* (slope
  fixed at 1). CITL = 0 when the mean risk is right; it is not the intercept of the joint fit, which measures
  something else (the predicted log-odds at η = 0 after the slope is corrected) and can be far from 0 for a model
  whose mean risk is right (Van Calster et al. 2016, Steyerberg 2019 ch. 15).

Site half, :func:`calibration_terms` at (a, b): μ = σ(a + bη), ``grad`` = Σ(y - μ)(1, η) (the score),
``info`` = Σ μ(1-μ)(1, η)(1, η)ᵀ (observed = expected information), ``nll`` = Σ[log(1 + e^w) - y·w].

Coordinator half, :func:`newton_fit`: θ ← θ + (ΣI)⁻¹Σg from (0, 1), halving a step that increases the summed nll
(the one Newton driver, :mod:`fedmath.newton`); with ``slope_fixed`` only a moves (g₀/I₀₀). Var(θ̂) = (ΣI)⁻¹ at the optimum (for CITL, 1/I₀₀).

The same Newton fit runs at a held-out site on its own terms (:func:`local_calibration`), so only the estimates
and their variances leave the site. Pure numpy; no I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from fedmath.logistic import sigmoid
from fedmath.newton import Evaluation, SingularInformation, maximise

#: Halvings of a step that raises the summed nll before the last, 2⁻²⁰-scaled step is kept anyway.
_HALVINGS = 20

Terms = dict[str, "np.ndarray | float | int"]


#: Rows of :func:`platt_case_terms`: one case's nll, score (2) and information (upper triangle, 3).
PLATT_TERM_ROWS = ("nll", "grad_a", "grad_b", "info_aa", "info_ab", "info_bb")


def platt_case_terms(eta: np.ndarray, intercept: float, slope: float) -> np.ndarray:
    """One case's terms of y ~ σ(a + b·η) at (a, b), for a negative and for a positive case at each η:
    a 6 × 2m matrix (rows :data:`PLATT_TERM_ROWS`; columns: a negative case at each of the m logits, then a
    positive one). With w = a + bη, μ = σ(w), x = (1, η): nll = log(1 + e^w) - y·w, score (y - μ)x,
    information μ(1-μ)xxᵀ. Every summed term below is this matrix times case counts, so a weighted set of
    stand-in cases (the coordinator's pseudo-data surrogate) has its terms from the same formula."""
    eta = np.asarray(eta, dtype=float)
    w = intercept + slope * eta
    mu = sigmoid(w)
    v = mu * (1.0 - mu)
    soft = np.logaddexp(0.0, w)
    columns = []
    for y in (0.0, 1.0):
        r = y - mu
        columns.append(np.vstack([soft - y * w, r, r * eta, v, v * eta, v * eta * eta]))
    return np.hstack(columns)


def binomial_platt_terms(eta: np.ndarray, successes: np.ndarray, trials: np.ndarray, intercept: float,
                         slope: float) -> Terms:
    """Terms of y ~ σ(a + b·η) at (a, b) from ``successes`` out of ``trials`` cases at each η (one case each:
    per-case data; bin counts: a calibration histogram): :func:`platt_case_terms` summed with the counts,
    i.e. ``grad`` = Σ(s - t·μ)(1, η), ``info`` = Σ t·μ(1-μ)(1, η)(1, η)ᵀ, ``nll`` = Σ[t·log(1 + e^w) - s·w]."""
    successes, trials = np.asarray(successes, dtype=float), np.asarray(trials, dtype=float)
    counts = np.concatenate([np.broadcast_to(trials - successes, np.shape(eta)), np.broadcast_to(successes, np.shape(eta))])
    nll, ga, gb, iaa, iab, ibb = platt_case_terms(eta, intercept, slope) @ counts
    return {
        "n": int(np.sum(trials)),
        "grad": np.array([ga, gb]),
        "info": np.array([[iaa, iab], [iab, ibb]]),
        "nll": float(nll),
    }


def calibration_terms(eta: np.ndarray, y: np.ndarray, intercept: float, slope: float) -> Terms:
    """Site half: n, score ``grad``, information ``info`` and ``nll`` of y ~ σ(a + b·η) at (a, b), one case per η."""
    eta = np.asarray(eta, dtype=float)
    return binomial_platt_terms(eta, np.asarray(y, dtype=float), np.ones(eta.size), intercept, slope)


#: Rows of :func:`temperature_case_terms`.
TEMPERATURE_TERM_ROWS = ("nll", "grad", "hess", "hess_fisher")


def temperature_case_terms(eta: np.ndarray, log_t: float) -> np.ndarray:
    """One case's terms of temperature scaling p' = σ(η / T) in u = log T, for a negative and for a positive
    case at each η: a 4 × 2m matrix (rows :data:`TEMPERATURE_TERM_ROWS`; columns as :func:`platt_case_terms`).
    w = η e^{-u}, μ = σ(w), r = μ - y: nll = log(1 + e^w) - y·w; d nll/du = -r·w; d² nll/du² = μ(1-μ)w² + r·w;
    its expectation μ(1-μ)w²."""
    w = np.asarray(eta, dtype=float) * np.exp(-log_t)
    mu = sigmoid(w)
    fisher = mu * (1.0 - mu) * w * w
    soft = np.logaddexp(0.0, w)
    columns = []
    for y in (0.0, 1.0):
        r = mu - y
        columns.append(np.vstack([soft - y * w, -r * w, fisher + r * w, fisher]))
    return np.hstack(columns)


def binomial_temperature_terms(eta: np.ndarray, successes: np.ndarray, trials: np.ndarray, log_t: float) -> Terms:
    """Terms of temperature scaling p' = σ(η / T) in u = log T, from ``successes`` out of ``trials`` cases at
    each η: :func:`temperature_case_terms` summed with the counts. d nll/du (``grad``); d² nll/du² (``hess``,
    can be negative far from the optimum); ``hess_fisher`` = Σ t·μ(1-μ)w² (its expectation, >= 0); ``nll``."""
    successes, trials = np.asarray(successes, dtype=float), np.asarray(trials, dtype=float)
    counts = np.concatenate([np.broadcast_to(trials - successes, np.shape(eta)), np.broadcast_to(successes, np.shape(eta))])
    nll, grad, hess, fisher = temperature_case_terms(eta, log_t) @ counts
    return {"n": int(np.sum(trials)), "grad": float(grad), "hess": float(hess), "hess_fisher": float(fisher),
            "nll": float(nll)}


def temperature_curvature(hess: float, hess_fisher: float) -> float:
    """Information for a Newton step in u = log T: the observed d²nll/du² when positive, else its expectation
    Σμ(1-μ)w² (Fisher scoring), so the step still points uphill far from the optimum."""
    return hess if hess > 0 else hess_fisher


def _summed(terms: Sequence[Terms], key: str) -> np.ndarray:
    return np.sum([np.asarray(t[key], dtype=float) for t in terms], axis=0)


def newton_fit(
    evaluate: Callable[[float, float], Sequence[Terms]],
    slope_fixed: float | None = None,
    max_rounds: int = 50,
    tol: float = 1e-10,
) -> dict:
    """Coordinator half: Newton on the summed terms of ``evaluate(a, b)`` (one list of site terms per call), by
    :func:`fedmath.newton.maximise` on ℓ = -Σnll: converged when max|step| < ``tol``, a step that raises the nll
    halved up to 20 times (the last kept), at most ``max_rounds`` calls of ``evaluate`` after the first.

    Returns ``theta`` (a, b), ``cov`` ((ΣI)⁻¹; with ``slope_fixed`` only [0, 0] = 1/I₀₀ is set, the rest 0),
    ``rounds`` (calls of ``evaluate`` after the first), ``converged`` and ``nll``. Raises ValueError when the
    summed information is singular (e.g. all logits equal).
    """
    free = slice(None) if slope_fixed is None else slice(0, 1)  # with the slope fixed only a moves

    def summed(theta: np.ndarray) -> Evaluation:
        a, b = (theta[0], theta[1]) if slope_fixed is None else (theta[0], float(slope_fixed))
        terms = evaluate(a, b)
        return Evaluation(-float(_summed(terms, "nll")), _summed(terms, "grad")[free], _summed(terms, "info")[free, free])

    start = np.array([0.0, 1.0]) if slope_fixed is None else np.array([0.0])
    try:
        fit = maximise(summed, start, tolerance=tol, criterion="step", max_iterations=max_rounds,
                       max_evaluations=max_rounds, max_halvings=_HALVINGS, on_no_ascent="accept")
    except SingularInformation as exc:
        if slope_fixed is None:
            raise ValueError("calibration fit: the summed information matrix is singular (all logits equal?)") from exc
        raise ValueError("calibration-in-the-large: zero information (every predicted risk is 0 or 1)") from exc
    info = fit.at_optimum.information
    if slope_fixed is None:
        theta = fit.theta
        try:
            cov = np.linalg.inv(info)
        except np.linalg.LinAlgError:
            cov = np.full((2, 2), np.nan)
    else:
        theta = np.array([fit.theta[0], float(slope_fixed)])
        cov = np.zeros((2, 2))
        cov[0, 0] = 1.0 / info[0, 0] if info[0, 0] > 0 else np.nan
    return {"theta": theta, "cov": cov, "rounds": fit.evaluations, "converged": fit.converged,
            "nll": -fit.at_optimum.objective}


def local_calibration(eta: np.ndarray, y: np.ndarray) -> dict:
    """Both calibration fits at one site on its own patients: what a held-out site releases.

    ``theta``/``cov``: joint (a, b) and its covariance; ``citl``/``citl_var``: intercept with η as offset and its
    variance; ``iterations``/``converged`` of the joint fit and ``citl_converged``. A fit that fails (separable
    data, singular information) comes back with NaN estimates and converged = 0, never an exception.
    """
    eta = np.asarray(eta, dtype=float)
    y = np.asarray(y, dtype=float)
    out: dict = {"n": int(eta.size)}

    def evaluate(a: float, b: float) -> list[Terms]:
        return [calibration_terms(eta, y, a, b)]

    try:
        joint = newton_fit(evaluate)
        out.update(theta=joint["theta"], cov=joint["cov"], iterations=joint["rounds"], converged=int(joint["converged"]))
    except ValueError:
        out.update(theta=np.full(2, np.nan), cov=np.full((2, 2), np.nan), iterations=0, converged=0)
    try:
        citl = newton_fit(evaluate, slope_fixed=1.0)
        out.update(citl=float(citl["theta"][0]), citl_var=float(citl["cov"][0, 0]), citl_converged=int(citl["converged"]))
    except ValueError:
        out.update(citl=float("nan"), citl_var=float("nan"), citl_converged=0)
    return out
