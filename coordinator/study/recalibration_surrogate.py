"""Where the next recalibration round should look: the pooled log-likelihood rebuilt from stand-in cases.

The recalibration log-likelihood of the pooled calibration parts depends on the data only through how many
cases of each class sit at each logit η. Every exact evaluation the sites have returned (Σnll, Σscore,
Σinformation at a point θ) is therefore a *linear* function of those counts. The coordinator places stand-in
cases of both classes on a fixed grid of logits and finds non-negative weights whose terms match every exact
evaluation so far (non-negative least squares, :func:`pseudo_data_weights`); the maximum of that weighted
log-likelihood (:func:`surrogate_optimum`, the one Newton driver) is where the next round evaluates.

Why it works where Newton from one point does not: the stand-ins have the exact functional form of the
likelihood (a sum of logistic terms), so the surrogate stays faithful far from the points it was matched at;
a quadratic model (one Newton step) does not, and steep optima (Platt slopes 4–11 of under-confident models,
near-separable calibration parts) took Newton 4–5 rounds. The surrogate only proposes points: every point the
study keeps was evaluated exactly by the sites, and convergence is judged on exact terms only.

Pure numpy/scipy, coordinator side only; nothing here is sent to a site.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import nnls

from fedmath.calibration import platt_case_terms, temperature_case_terms
from fedmath.newton import Evaluation, SingularInformation, maximise

#: Grid half-widths: a core of ±6 (weighted) SDs of the logits around their weighted mean, for scores
#: compressed into a narrow range, plus a fixed ±12 span for wide or near-separable ones.
CORE_SDS, WIDE_SPAN, GRID_POINTS = 6.0, 12.0, 97


@dataclass(frozen=True)
class ExactTerms:
    """The sites' summed terms at one point, in the form the surrogate matches: the rows of
    :func:`fedmath.calibration.platt_case_terms` (Platt) or ``(nll, grad, hess_fisher)`` (temperature)."""

    point: np.ndarray
    n: int
    rows: np.ndarray
    sites: frozenset[str]  # whose terms the sums hold: only evaluations over the same cases describe one likelihood


def platt_rows(nll: float, grad: np.ndarray, info: np.ndarray) -> np.ndarray:
    return np.array([nll, grad[0], grad[1], info[0, 0], info[0, 1], info[1, 1]], dtype=float)


def temperature_rows(nll: float, grad: float, hess_fisher: float) -> np.ndarray:
    return np.array([nll, grad, hess_fisher], dtype=float)


def logit_grid(method: str, first: ExactTerms) -> np.ndarray:
    """Stand-in logits from the terms at the first (identity) point: its information is Σμ(1-μ)(1, η)(1, η)ᵀ
    (Platt), i.e. a weighted mean and SD of η; temperature has only Σμ(1-μ)η², taken as a spread about 0."""
    if method == "platt":
        i_aa, i_ab, i_bb = first.rows[3:6]
        centre = i_ab / i_aa if i_aa > 0 else 0.0
        spread = np.sqrt(max(i_bb / i_aa - centre * centre, 1e-12)) if i_aa > 0 else 1.0
    else:
        centre, spread = 0.0, np.sqrt(max(first.rows[2] / max(0.25 * first.n, 1e-12), 1e-12))
    core = centre + spread * np.linspace(-CORE_SDS, CORE_SDS, GRID_POINTS)
    return np.unique(np.concatenate([core, np.linspace(-WIDE_SPAN, WIDE_SPAN, GRID_POINTS)]))


def _case_rows(method: str, grid: np.ndarray, point: np.ndarray) -> np.ndarray:
    if method == "platt":
        return platt_case_terms(grid, float(point[0]), float(point[1]))
    rows = temperature_case_terms(grid, float(point[0]))
    return rows[[0, 1, 3]]  # nll, grad, hess_fisher (hess is their sum with Σr·w: no new information)


def pseudo_data_weights(method: str, grid: np.ndarray, evaluations: list[ExactTerms]) -> np.ndarray:
    """Non-negative weights of a negative and a positive stand-in case at each grid logit (2m) whose terms
    match every exact evaluation and whose total is the cases' n: non-negative least squares (Lawson-Hanson),
    each point's rows scaled by 1/√(its leading information) so that points far out, where the information is
    small, count as much."""
    design, target = [], []
    for ev in evaluations:
        scale = 1.0 / np.sqrt(max(float(ev.rows[3] if method == "platt" else ev.rows[2]), 1e-9))
        design.append(_case_rows(method, grid, ev.point) * scale)
        target.append(ev.rows * scale)
    n = max(ev.n for ev in evaluations)
    design.append(np.full((1, 2 * grid.size), 100.0))
    target.append(np.array([100.0 * n]))
    weights, _ = nnls(np.vstack(design), np.concatenate(target), maxiter=50 * 2 * grid.size)
    return weights


def surrogate_optimum(method: str, grid: np.ndarray, weights: np.ndarray, start: np.ndarray) -> np.ndarray | None:
    """Maximum of the stand-in cases' log-likelihood (Newton driver from ``start``); None when it has none
    (singular information, not finite)."""
    def evaluate(point: np.ndarray) -> Evaluation:
        rows = _case_rows(method, grid, point) @ weights
        if method == "platt":
            return Evaluation(-rows[0], rows[1:3], np.array([[rows[3], rows[4]], [rows[4], rows[5]]]))
        return Evaluation(-rows[0], np.array([-rows[1]]), np.array([[rows[2]]]))

    try:
        fit = maximise(evaluate, np.asarray(start, dtype=float), tolerance=1e-8, max_iterations=100,
                       max_halvings=30, on_no_ascent="accept", on_singular="stop")
    except SingularInformation:
        return None
    return fit.theta if np.all(np.isfinite(fit.theta)) else None


def proposed_optimum(method: str, evaluations: list[ExactTerms], sites: frozenset[str], start: np.ndarray) -> np.ndarray | None:
    """The surrogate's optimum from everything evaluated so far over the same ``sites`` (a site whose terms were
    suppressed at a point, or that dropped out, makes the sums describe other cases); the grid comes from the
    first such evaluation (the identity map's, when every site sent it)."""
    evaluations = [ev for ev in evaluations if ev.sites == sites]
    if not evaluations:
        return None
    try:
        grid = logit_grid(method, evaluations[0])
        weights = pseudo_data_weights(method, grid, evaluations)
        if not np.any(weights > 0):
            return None
        return surrogate_optimum(method, grid, weights, start)
    except (RuntimeError, ValueError, np.linalg.LinAlgError, FloatingPointError):
        return None  # no proposal (e.g. NNLS out of iterations): the round still has the exact Newton point
