"""Survival maths shared by the site, the coordinator and the registered model.

* **Cox linear predictor** ``eta = (x - centre) . beta``. The centre is the training sites' pooled feature mean; the
  baseline cumulative hazard the model carries is the one of a patient at the centre, so ``exp(eta)`` stays near 1.
* **Newton maximiser** of a concave objective (penalised log partial likelihood) from summed site terms, by the
  one Newton driver :mod:`fedmath.newton`, with step halving: a step that lowers the objective is halved (up to
  ``max_halvings``), so the iteration never goes downhill.
  ``objective(beta) = loglik(beta) - ridge/2 * |beta|^2``, gradient ``g - ridge*beta``, information ``I + ridge*Id``.
  Converged when the Newton decrement ``g' I^-1 g / 2`` of the accepted point is below ``tolerance``. A
  maximum where the information has collapsed (smallest eigenvalue below 1e-6 of that at beta = 0) is the
  monotone likelihood of a perfectly ordering feature, an error rather than an infinite coefficient.
* **Baseline for a new site.** Each training site s releases its Breslow cumulative hazard H_s(g) at the shared grid
  g_0 = 0 < g_1 < ... < g_m (every grid interval holds 0 or >= k events at every site) and its patient count n_s.
  A new hospital's baseline is unknown; the model carries the patient-weighted mean
  ``H_new(g) = sum_s n_s H_s(g) / sum_s n_s``: the expected cumulative hazard of a patient at the centre in a
  hospital drawn like the training ones (weights n_s so that equal site baselines give the pooled estimate's scale,
  and a small site does not count as much as a large one). Between grid points H is interpolated linearly (a
  constant hazard within each interval); beyond the last grid point nothing is extrapolated.
* **Absolute risk** at horizon t: ``1 - exp(-H(t) exp(eta))``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from fedmath.newton import Evaluation, NoAscent, SingularInformation, maximise


class SurvivalMathError(ValueError):
    """Inputs that the survival maths cannot use; the message says which and why."""


@dataclass(frozen=True)
class CoxTerms:
    """Sums of a stratified Cox log partial likelihood at one beta: sizes p, p x p, 1, never n."""

    gradient: np.ndarray
    information: np.ndarray
    log_likelihood: float


def sum_terms(terms: Sequence[CoxTerms]) -> CoxTerms:
    """The stratified partial likelihood is a sum over strata, so its gradient and information are too."""
    if not terms:
        raise SurvivalMathError("no site terms to sum")
    return CoxTerms(
        gradient=np.sum([t.gradient for t in terms], axis=0),
        information=np.sum([t.information for t in terms], axis=0),
        log_likelihood=float(sum(t.log_likelihood for t in terms)),
    )


@dataclass(frozen=True)
class CoxFit:
    """Result of :func:`newton_maximise`. ``covariance`` = inverse penalised information at beta."""

    beta: np.ndarray
    covariance: np.ndarray
    log_likelihood: float
    objective: float
    iterations: int


def _penalised(terms: CoxTerms, beta: np.ndarray, ridge: float) -> tuple[float, np.ndarray, np.ndarray]:
    objective = terms.log_likelihood - 0.5 * ridge * float(beta @ beta)
    gradient = terms.gradient - ridge * beta
    information = terms.information + ridge * np.eye(beta.size)
    return objective, gradient, information


def newton_maximise(
    evaluate: Callable[[np.ndarray], CoxTerms],
    n_parameters: int,
    ridge: float = 0.0,
    tolerance: float = 1e-12,
    max_iterations: int = 50,
    max_halvings: int = 30,
) -> CoxFit:
    """Maximise ``loglik - ridge/2 |beta|^2`` where ``evaluate(beta)`` returns the summed terms at beta, by the one
    Newton driver (:func:`fedmath.newton.maximise`, Newton-decrement convergence, failing when halving cannot
    climb).

    In a federated study ``evaluate`` is one round: every site computes its terms at beta, the coordinator sums them.
    """
    if ridge < 0 or not np.isfinite(ridge):
        raise SurvivalMathError(f"ridge must be a finite number >= 0, got {ridge}")

    def penalised(beta: np.ndarray) -> Evaluation:
        return Evaluation(*_penalised(evaluate(beta), beta, ridge))

    start = penalised(np.zeros(n_parameters))
    start_information = np.linalg.eigvalsh(start.information).min() if n_parameters else 0.0
    try:
        fit = maximise(penalised, np.zeros(n_parameters), at_start=start, tolerance=tolerance, criterion="decrement",
                       max_iterations=max_iterations, max_halvings=max_halvings, on_no_ascent="raise")
    except SingularInformation:
        raise SurvivalMathError(
            "the Cox information matrix is singular: a feature is constant within every site or features are collinear"
        ) from None
    except NoAscent:
        raise SurvivalMathError("Newton step halving failed to increase the Cox partial likelihood") from None
    if not fit.converged:
        raise SurvivalMathError(
            f"the Cox model did not converge in {max_iterations} Newton steps (monotone likelihood: a feature may "
            "separate events from non-events; consider a ridge penalty)"
        )
    beta, information, objective = fit.theta, fit.at_optimum.information, fit.at_optimum.objective
    if n_parameters and np.linalg.eigvalsh(information).min() < 1e-6 * start_information:
        raise SurvivalMathError(
            "the Cox likelihood has no finite maximum (monotone likelihood: a feature orders the events perfectly); "
            "consider a ridge penalty"
        )
    covariance = np.linalg.inv(information)
    return CoxFit(beta, covariance, objective + 0.5 * ridge * float(beta @ beta), objective, fit.steps + 1)


def linear_predictor(features: np.ndarray, beta: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """eta_i = (x_i - centre) . beta."""
    features = np.asarray(features, dtype=float)
    if features.ndim != 2 or features.shape[1] != beta.size or centre.shape != beta.shape:
        raise SurvivalMathError(
            f"features of shape {features.shape} do not match a model with {beta.size} coefficients"
        )
    return (features - centre) @ beta


@dataclass(frozen=True)
class Baseline:
    """Cumulative baseline hazard at the grid times (first time 0, hazard 0; both increasing)."""

    times: np.ndarray
    cumulative_hazard: np.ndarray

    def __post_init__(self) -> None:
        times, hazard = np.asarray(self.times, float), np.asarray(self.cumulative_hazard, float)
        if times.ndim != 1 or times.shape != hazard.shape or times.size < 2 or times[0] != 0 or hazard[0] != 0:
            raise SurvivalMathError("a baseline needs matching grid times and hazards starting at (0, 0)")
        if np.any(np.diff(times) <= 0) or np.any(np.diff(hazard) < 0) or not np.all(np.isfinite(hazard)):
            raise SurvivalMathError("baseline grid times must increase and the cumulative hazard must not decrease")

    def at(self, horizons: Sequence[float] | np.ndarray) -> np.ndarray:
        """H(t) by linear interpolation between grid points; a horizon beyond the grid is an error."""
        horizons = np.asarray(horizons, dtype=float)
        if np.any(horizons < 0) or np.any(horizons > self.times[-1]):
            raise SurvivalMathError(
                f"horizons {horizons.tolist()} outside the baseline's grid [0, {self.times[-1]:g}]: no extrapolation"
            )
        return np.interp(horizons, self.times, self.cumulative_hazard)


def combine_baselines(site_hazards: Sequence[np.ndarray], site_sizes: Sequence[int], grid: np.ndarray) -> Baseline:
    """The baseline a model carries for a new site: patient-weighted mean of the sites' H_s on the shared grid."""
    hazards = np.asarray(site_hazards, dtype=float)
    sizes = np.asarray(site_sizes, dtype=float)
    if hazards.ndim != 2 or hazards.shape != (sizes.size, np.asarray(grid).size) or np.any(sizes <= 0):
        raise SurvivalMathError("need one cumulative hazard on the grid and one positive size per site")
    return Baseline(np.asarray(grid, dtype=float), sizes @ hazards / sizes.sum())


def risk_at(baseline: Baseline, eta: np.ndarray, horizons: Sequence[float]) -> np.ndarray:
    """Absolute risk of the event by each horizon, shape (n, len(horizons)): 1 - exp(-H(t) exp(eta))."""
    hazard = baseline.at(horizons)
    return -np.expm1(-np.outer(np.exp(np.asarray(eta, dtype=float)), hazard))


@dataclass(frozen=True)
class CoxModel:
    """What a survival study registers: coefficients, centre, carried baseline; predicts eta and risk at horizons."""

    features: tuple[str, ...]
    beta: np.ndarray
    centre: np.ndarray
    baseline: Baseline

    def linear_predictor(self, features: np.ndarray) -> np.ndarray:
        return linear_predictor(features, self.beta, self.centre)

    def risk(self, features: np.ndarray, horizons: Sequence[float]) -> np.ndarray:
        return risk_at(self.baseline, self.linear_predictor(features), horizons)

    def to_dict(self) -> dict:
        """Plain JSON-able form (what the registered model stores)."""
        return {
            "features": list(self.features),
            "beta": self.beta.tolist(),
            "centre": self.centre.tolist(),
            "baseline_times": self.baseline.times.tolist(),
            "baseline_cumulative_hazard": self.baseline.cumulative_hazard.tolist(),
        }

    @classmethod
    def from_dict(cls, data: dict) -> "CoxModel":
        """Inverse of :meth:`to_dict`; refuses a model whose parts disagree or are not finite."""
        try:
            features = tuple(str(name) for name in data["features"])
            beta = np.asarray(data["beta"], dtype=float)
            centre = np.asarray(data["centre"], dtype=float)
            baseline = Baseline(np.asarray(data["baseline_times"], dtype=float),
                                np.asarray(data["baseline_cumulative_hazard"], dtype=float))
        except (KeyError, TypeError, ValueError) as exc:
            raise SurvivalMathError(f"not a Cox model: {exc}") from None
        if beta.shape != (len(features),) or centre.shape != beta.shape:
            raise SurvivalMathError(f"a Cox model needs one coefficient and one centre value per feature ({len(features)})")
        if not (np.all(np.isfinite(beta)) and np.all(np.isfinite(centre))):
            raise SurvivalMathError("a Cox model's coefficients and centre must be finite")
        return cls(features, beta, centre, baseline)

    def predict(self, features: np.ndarray, horizons: Sequence[float]) -> dict[str, np.ndarray]:
        """What the registered model returns: the linear predictor and the risk by each horizon (n x horizons)."""
        return {"linear_predictor": self.linear_predictor(features), "risk": self.risk(features, horizons)}
