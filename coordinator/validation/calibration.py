"""Calibration metrics from summed site aggregates, and federated Newton fits.

The fits take ``evaluate(params) -> list of site aggregates`` (in the deployment: one Flower round that
broadcasts ``params`` and collects each site's ``logistic_calibration_terms`` / ``log_temperature_terms``; in
tests: a local closure). They sum the terms over sites and step with the one Newton driver
(:mod:`fedmath.newton`); a step that increases the summed negative log-likelihood is halved (one extra round).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
from scipy import stats

from coordinator.validation.intervals import wilson_ci
from fedmath.calibration import newton_fit, temperature_curvature
from fedmath.newton import Evaluation, SingularInformation, maximise
from coordinator.validation.results import CalibrationFit, Estimate, Recalibration, ReliabilityPoint

Aggregate = dict[str, "np.ndarray | float | int"]
Z95 = float(stats.norm.ppf(0.975))


def brier_scores(agg: Aggregate) -> tuple[float, float | None]:
    """Brier = Σ(p-y)²/N; scaled Brier = 1 - Brier/(ȳ(1-ȳ)) (None when ȳ is 0 or 1)."""
    n = int(agg["n"])
    if n == 0:
        raise ValueError("Brier score needs at least one patient")
    bs = float(agg["brier_sum"]) / n
    ybar = int(agg["n_events"]) / n
    ref = ybar * (1 - ybar)
    return bs, (1 - bs / ref if ref > 0 else None)


def observed_expected(agg: Aggregate) -> Estimate:
    """O/E = E_obs/Σp with CI exp(ln(O/E) ± 1.96·√((1 - O/N)/O)) (binomial O, Σp taken as fixed)."""
    o, n, e = int(agg["n_events"]), int(agg["n"]), float(agg["sum_p"])
    if e <= 0:
        raise ValueError("O/E needs a positive sum of predicted probabilities")
    ratio = o / e
    if o == 0:
        return Estimate(ratio, None, None, None)
    se_log = math.sqrt((1 - o / n) / o)
    return Estimate(ratio, se_log, ratio * math.exp(-Z95 * se_log), ratio * math.exp(Z95 * se_log))


def reliability(agg: Aggregate) -> tuple[float, list[ReliabilityPoint]]:
    """ECE = Σ_m |Σy_m - Σp_m| / N and one point per non-empty bin (mean p, observed rate, Wilson CI)."""
    e = np.asarray(agg["edges"], dtype=float)
    neg, pos = np.asarray(agg["bin_n_neg"]), np.asarray(agg["bin_n_pos"])
    sp = np.asarray(agg["bin_sum_p"], dtype=float)
    nm = neg + pos
    n = int(nm.sum())
    if n == 0:
        raise ValueError("reliability needs at least one patient")
    ece = float(np.sum(np.abs(pos - sp)) / n)
    points = []
    for m in np.flatnonzero(nm > 0):
        lo, hi = wilson_ci(int(pos[m]), int(nm[m]))
        points.append(ReliabilityPoint(float(e[m]), float(e[m + 1]), int(nm[m]), float(sp[m] / nm[m]), float(pos[m] / nm[m]), lo, hi))
    return ece, points


def _sum(aggs: Sequence[Aggregate], key: str) -> np.ndarray:
    return np.sum([np.asarray(a[key], dtype=float) for a in _checked(aggs)], axis=0)


def fit_logistic_calibration(
    evaluate: Callable[[float, float], Sequence[Aggregate]],
    slope_fixed: float | None = None,
    max_rounds: int = 50,
    tol: float = 1e-10,
) -> CalibrationFit:
    """Federated Newton for y ~ σ(a + b·η) (:func:`fedmath.calibration.newton_fit`), Wald 95% CIs from (ΣI)⁻¹.

    ``evaluate(a, b)`` returns the sites' ``logistic_calibration_terms``. With ``slope_fixed`` (1.0:
    calibration-in-the-large, η as offset) only the intercept is fitted. Starts at (0, 1).
    """
    def checked(a: float, b: float) -> Sequence[Aggregate]:  # suppressed terms must stop the fit
        return _checked(evaluate(a, b))

    fit = newton_fit(checked, slope_fixed=slope_fixed, max_rounds=max_rounds, tol=tol)
    (a, b), cov = fit["theta"], fit["cov"]
    intercept = _wald(a, cov[0, 0])
    slope = _wald(b, cov[1, 1]) if slope_fixed is None else Estimate(b)
    return CalibrationFit(intercept, slope, fit["rounds"], fit["converged"], fit["nll"])


def _wald(value: float, var: float) -> Estimate:
    if not (np.isfinite(value) and np.isfinite(var) and var >= 0):
        return Estimate(float(value))
    se = math.sqrt(var)
    return Estimate(float(value), se, float(value) - Z95 * se, float(value) + Z95 * se)


def _checked(aggs: Sequence[Aggregate]) -> Sequence[Aggregate]:
    for a in aggs:
        if a.get("suppressed", 0):
            raise ValueError("a site's Newton terms were suppressed (fewer than k patients); the fit cannot use it")
    return aggs


def calibration_fit_from_site(agg: Aggregate | None) -> CalibrationFit | None:
    """A held-out site's own fits (``local_calibration_fit``) as a CalibrationFit: slope and joint intercept from
    (θ, covariance), CITL from (citl, citl_var); Wald 95% CIs. None when suppressed or absent."""
    if not agg or agg.get("suppressed", 0) or "theta" not in agg:
        return None
    theta = np.asarray(agg["theta"], dtype=float)
    cov = np.asarray(agg["cov"], dtype=float)
    citl = _wald(float(agg["citl"]), float(agg["citl_var"])) if "citl" in agg and np.isfinite(float(agg["citl"])) else None
    return CalibrationFit(_wald(theta[0], cov[0, 0]), _wald(theta[1], cov[1, 1]), int(agg.get("iterations", 0)),
                          bool(agg.get("converged", 0)), float("nan"), citl)


def fit_platt(evaluate: Callable[[float, float], Sequence[Aggregate]], **kw: float) -> Recalibration:
    """Platt scaling p' = σ(a + b·logit p) = the logistic calibration fit on the training calibration parts."""
    fit = fit_logistic_calibration(evaluate, **kw)
    return Recalibration(
        "platt",
        {"a": fit.intercept.value, "b": fit.slope.value},
        {"a": fit.intercept.se or 0.0, "b": fit.slope.se or 0.0},
        fit.iterations,
        fit.converged,
    )


def fit_temperature(
    evaluate: Callable[[float], Sequence[Aggregate]], max_rounds: int = 50, tol: float = 1e-10
) -> Recalibration:
    """Federated Newton on u = log T for p' = σ(logit p / T) (:func:`fedmath.newton.maximise`, as the logistic
    fit); Fisher scoring when the observed Hessian <= 0.

    ``evaluate(u)`` returns the sites' ``log_temperature_terms``. SE of T by the delta method: T·SE(u).
    """
    def summed(theta: np.ndarray) -> Evaluation:
        aggs = evaluate(float(theta[0]))
        h = temperature_curvature(float(_sum(aggs, "hess")), float(_sum(aggs, "hess_fisher")))
        # sites send d NLL/du; zero curvature becomes a singular information, an error only where a step is taken
        return Evaluation(-float(_sum(aggs, "nll")), -np.atleast_1d(_sum(aggs, "grad")), np.array([[max(h, 0.0)]]), aggs)

    try:
        fit = maximise(summed, np.array([0.0]), tolerance=tol, criterion="step", max_iterations=max_rounds,
                       max_evaluations=max_rounds, max_halvings=20, on_no_ascent="accept")
    except SingularInformation:
        raise ValueError("temperature fit: zero curvature (all logits are 0?)") from None
    h = float(_sum(fit.at_optimum.terms, "hess"))
    t = math.exp(float(fit.theta[0]))
    se_t = t / math.sqrt(h) if h > 0 else float("nan")
    return Recalibration("temperature", {"temperature": t}, {"temperature": se_t}, fit.evaluations, fit.converged)
