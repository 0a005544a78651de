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


def test_binned_warm_start_equals_statsmodels_binomial_glm_on_the_bin_counts():
    """The coordinator's warm start fits the recalibration on calibration histograms through the sites' own
    terms with bin counts as cases (fedmath.calibration.binomial_*_terms): equal to a binomial GLM on
    (positives, negatives) per bin midpoint."""
    import statsmodels.api as sm

    from coordinator.study.calibrate import warm_start
    from fedmath.logistic import logit

    rng = np.random.default_rng(3)
    edges = np.linspace(0.0, 1.0, 11)
    mid = logit(0.5 * (edges[:-1] + edges[1:]))
    n = rng.integers(5, 40, size=10)
    pos = rng.binomial(n, 1 / (1 + np.exp(-0.6 * mid))).astype(float)  # an over-confident model: T about 1.7
    neg = n - pos
    hist = {"edges": edges, "bin_n_pos": pos, "bin_n_neg": neg}
    glm = sm.GLM(np.column_stack([pos, neg]), sm.add_constant(mid), family=sm.families.Binomial()).fit(tol=1e-14)
    np.testing.assert_allclose(warm_start("platt", hist), glm.params, atol=1e-8)
    # temperature: σ(η / T) is a GLM without intercept in η, slope 1/T
    glm_t = sm.GLM(np.column_stack([pos, neg]), mid[:, None], family=sm.families.Binomial()).fit(tol=1e-14)
    np.testing.assert_allclose(np.exp(-warm_start("temperature", hist)[0]), glm_t.params[0], rtol=1e-7)
