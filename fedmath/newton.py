"""Newton's method with step control on summed terms: the one driver every federated fit uses.

Each evaluation at θ gives the objective ℓ(θ) to *maximise* (a log-likelihood, or minus an NLL), its gradient
g = ∇ℓ and an information matrix I (minus the Hessian, or its expectation: Fisher scoring). In a federated fit an
evaluation is one round: every site computes its terms at θ and the coordinator sums them (the log-likelihood of
independent sites is a sum, so are g and I); at one site it is a local computation.

* **Step**: δ = I⁻¹g (:func:`newton_step`; a singular I is a :class:`SingularInformation` error).
* **Convergence**, checked at each accepted point before stepping: ``"step"``: max|δ| < tol; ``"decrement"``:
  the Newton decrement g·δ/2 < tol (the predicted gain of the step).
* **Step halving**: θ + δ/2ʰ, h = 0, 1, ..., is accepted at the first h where the objective is finite and did not
  fall (:func:`improves`, relative slack 1e-12 for rounding); after ``max_halvings`` halvings the last candidate
  is accepted (``on_no_ascent="accept"``) or the fit fails (``"raise"``). So with ``"raise"`` the iteration never
  goes downhill; with ``"accept"`` it can: that last, 2^max_halvings times shortened step is taken even where the
  objective fell (or is not finite), and the next step is computed from there.
* **Singular information** at an accepted point: :class:`SingularInformation` (``on_singular="raise"``) or the
  fit stops there, not converged (``"stop"``).
* **Budget**: at most ``max_iterations`` accepted steps and ``max_evaluations`` evaluations after the first
  (halvings count); running out leaves ``converged`` False.

Pure numpy; the callers supply the terms (logistic calibration, temperature, stratified Cox) and read the
information at the optimum for their variances.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: Relative slack of the ascent test: an objective that fell by less than this (rounding) still counts as no fall.
ASCENT_SLACK = 1e-12


class SingularInformation(ValueError):
    """The information matrix cannot be inverted, so no Newton step exists."""


class NoAscent(ValueError):
    """Every halved step lowered the objective (only with ``on_no_ascent="raise"``)."""


@dataclass(frozen=True)
class Evaluation:
    """Objective ℓ (to maximise), its gradient and information at one point; ``terms``: whatever the caller
    needs afterwards (e.g. the raw site sums), passed through untouched."""

    objective: float
    gradient: np.ndarray
    information: np.ndarray
    terms: Any = field(default=None, compare=False)


@dataclass(frozen=True)
class NewtonResult:
    theta: np.ndarray
    at_optimum: Evaluation       # the evaluation at ``theta``
    steps: int                   # accepted steps
    evaluations: int             # evaluations after the first (halvings included): federated rounds
    converged: bool


def newton_step(gradient: np.ndarray, information: np.ndarray) -> np.ndarray:
    """δ = I⁻¹g by a linear solve (not an inverse); one parameter: g/I, a plain division."""
    information, gradient = np.atleast_2d(information), np.atleast_1d(gradient)
    if information.shape == (1, 1):
        if information[0, 0] == 0 or not np.isfinite(information[0, 0]):
            raise SingularInformation("the information is zero: no Newton step")
        return gradient / information[0, 0]
    try:
        return np.linalg.solve(information, gradient)
    except np.linalg.LinAlgError:
        raise SingularInformation("the information matrix is singular: no Newton step") from None


def improves(new_objective: float, objective: float) -> bool:
    """Finite and not lower than ``objective`` beyond rounding (ASCENT_SLACK relative)."""
    return math.isfinite(new_objective) and new_objective >= objective - ASCENT_SLACK * max(1.0, abs(objective))


def has_converged(criterion: str, gradient: np.ndarray, step: np.ndarray, tolerance: float) -> bool:
    """``"step"``: max|δ| < tol; ``"decrement"``: g·δ/2 < tol."""
    if criterion == "step":
        return float(np.max(np.abs(step))) < tolerance if step.size else True
    if criterion == "decrement":
        return float(gradient @ step) / 2 < tolerance
    raise ValueError(f"unknown convergence criterion {criterion!r}; expected 'step' or 'decrement'")


def maximise(
    evaluate: Callable[[np.ndarray], Evaluation],
    start: np.ndarray,
    *,
    at_start: Evaluation | None = None,
    tolerance: float,
    criterion: str = "step",
    max_iterations: int = 50,
    max_evaluations: int | None = None,
    max_halvings: int = 30,
    on_no_ascent: str = "raise",
    on_singular: str = "raise",
) -> NewtonResult:
    """Newton ascent of ``evaluate`` from ``start`` (module docstring). Raises :class:`SingularInformation` when
    the information at an accepted point is singular, :class:`NoAscent` as configured. ``at_start``: the evaluation at
    ``start`` when the caller has already made it (saves a round)."""
    if on_no_ascent not in ("accept", "raise"):
        raise ValueError(f"on_no_ascent must be 'accept' or 'raise', got {on_no_ascent!r}")
    if on_singular not in ("stop", "raise"):
        raise ValueError(f"on_singular must be 'stop' or 'raise', got {on_singular!r}")
    theta = np.array(start, dtype=float)
    current = evaluate(theta) if at_start is None else at_start
    steps = evaluations = 0
    converged = False
    while steps < max_iterations and (max_evaluations is None or evaluations < max_evaluations):
        try:
            step = newton_step(current.gradient, current.information)
        except SingularInformation:
            if on_singular == "raise":
                raise
            break
        if has_converged(criterion, np.atleast_1d(current.gradient), step, tolerance):
            converged = True
            break
        for halvings in range(max_halvings + 1):
            candidate = theta + step
            new = evaluate(candidate)
            evaluations += 1
            if improves(new.objective, current.objective):
                break
            if halvings == max_halvings:
                if on_no_ascent == "raise":
                    raise NoAscent(f"Newton step halving ({max_halvings} halvings) failed to increase the objective")
                break
            step = step / 2
        theta, current = candidate, new
        steps += 1
    return NewtonResult(theta, current, steps, evaluations, converged)
