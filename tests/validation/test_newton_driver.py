"""The one Newton driver (fedmath.newton): the optimum against statsmodels, step halving that never goes downhill,
and clear errors for singular information and for a step that cannot climb."""

from __future__ import annotations

import numpy as np
import pytest

from fedmath.newton import Evaluation, NoAscent, SingularInformation, maximise


@pytest.mark.parametrize("criterion", ["step", "decrement"])
def test_poisson_regression_split_over_sites_matches_statsmodels(criterion):
    import statsmodels.api as sm

    rng = np.random.default_rng(4)
    sites = []
    for n in (40, 90, 65):
        x = np.column_stack([np.ones(n), rng.normal(size=(n, 2))])
        sites.append((x, rng.poisson(np.exp(x @ [0.2, 0.5, -0.3]))))

    def summed(beta):  # log-likelihood (without log y!), score and information summed over the sites
        parts = [(x, y, np.exp(x @ beta)) for x, y in sites]
        return Evaluation(sum(float(y @ (x @ beta) - mu.sum()) for x, y, mu in parts),
                          sum(x.T @ (y - mu) for x, y, mu in parts), sum((x * mu[:, None]).T @ x for x, _, mu in parts))

    fit = maximise(summed, np.zeros(3), tolerance=1e-12, criterion=criterion)
    x_all, y_all = np.vstack([x for x, _ in sites]), np.concatenate([y for _, y in sites])
    ref = sm.GLM(y_all, x_all, family=sm.families.Poisson()).fit(tol=1e-12)
    assert fit.converged
    np.testing.assert_allclose(fit.theta, ref.params, atol=1e-8)
    np.testing.assert_allclose(np.linalg.inv(fit.at_optimum.information), ref.cov_params(), rtol=1e-6)


def test_an_overshooting_step_is_halved_and_the_objective_never_falls():
    """ℓ(θ) = -√(1 + θ²), maximum at 0: pure Newton θ ← θ - θ(1 + θ²) = -θ³ diverges from θ = 3 (3 → -27 → ...);
    with halving the driver climbs to 0, and no point it moved to is lower than one it left."""
    seen = []

    def evaluate(theta):
        t = float(theta[0])
        r = np.sqrt(1 + t * t)
        seen.append((t, -r))
        return Evaluation(-r, np.array([-t / r]), np.array([[1 / r ** 3]]))

    fit = maximise(evaluate, np.array([3.0]), tolerance=1e-10)
    assert fit.converged and abs(fit.theta[0]) < 1e-8
    assert fit.evaluations > fit.steps  # some steps needed halving
    assert seen[1][0] == pytest.approx(-3.0 ** 3 + 3.0 - 3.0)  # the first candidate is the full Newton step, -27
    assert fit.at_optimum.objective == max(v for _, v in seen) == pytest.approx(-1.0)


def test_singular_information_and_no_ascent_are_named():
    flat = lambda theta: Evaluation(0.0, np.array([1.0, 1.0]), np.zeros((2, 2)))
    with pytest.raises(SingularInformation, match="singular"):
        maximise(flat, np.zeros(2), tolerance=1e-10)
    assert not maximise(flat, np.zeros(2), tolerance=1e-10, on_singular="stop").converged

    # terms that disagree with the objective (the gradient points downhill): every halved step lowers it
    downhill = lambda theta: Evaluation(-float(theta[0]), np.array([1.0]), np.array([[1.0]]))
    with pytest.raises(NoAscent, match="failed to increase the objective"):
        maximise(downhill, np.array([0.0]), tolerance=1e-10, max_halvings=5)
