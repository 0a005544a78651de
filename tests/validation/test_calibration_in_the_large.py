"""Calibration-in-the-large (intercept with logit p as offset) and calibration slope against statsmodels GLM.

Oracles: ``sm.GLM(y, 1, family=Binomial(), offset=logit p)`` (CITL) and ``sm.GLM(y, [1, logit p], Binomial())``
(slope and its intercept). Code paths: the held-out site's own fit (``local_calibration_fit``, what the study
runs at the site, read back by ``calibration_fit_from_site``) and the federated Newton over several sites'
terms (``fit_logistic_calibration``).
"""

from __future__ import annotations

import numpy as np
import pytest
import statsmodels.api as sm

from coordinator.validation import fit_logistic_calibration
from coordinator.validation.calibration import calibration_fit_from_site
from site_client.evaluation import local_calibration_fit, logistic_calibration_terms


def logit(p):
    return np.log(p) - np.log1p(-p)


def oracle(p, y):
    eta = logit(p)
    citl = sm.GLM(y, np.ones((y.size, 1)), family=sm.families.Binomial(), offset=eta).fit(tol=1e-13)
    joint = sm.GLM(y, sm.add_constant(eta), family=sm.families.Binomial()).fit(tol=1e-13)
    return citl, joint


@pytest.mark.parametrize("seed", range(5))
def test_site_fit_matches_statsmodels(make_sites, seed):
    s = make_sites(seed, [120])[0]
    fit = calibration_fit_from_site(local_calibration_fit(s.p, s.y))
    citl, joint = oracle(s.p, s.y)
    assert fit.citl.value == pytest.approx(citl.params[0], abs=1e-8)
    assert fit.citl.se == pytest.approx(citl.bse[0], rel=1e-6)
    assert fit.slope.value == pytest.approx(joint.params[1], abs=1e-8)
    assert fit.slope.se == pytest.approx(joint.bse[1], rel=1e-6)
    assert fit.intercept.value == pytest.approx(joint.params[0], abs=1e-8)


def test_federated_citl_matches_pooled_statsmodels(make_sites):
    sites = make_sites(3, [40, 70, 55])
    fit = fit_logistic_calibration(lambda a, b: [logistic_calibration_terms(s.p, s.y, a, b) for s in sites], slope_fixed=1.0)
    p, y = np.concatenate([s.p for s in sites]), np.concatenate([s.y for s in sites])
    citl, _ = oracle(p, y)
    assert fit.intercept.value == pytest.approx(citl.params[0], abs=1e-8)
    assert fit.intercept.se == pytest.approx(citl.bse[0], rel=1e-6)
    assert fit.slope.value == 1.0 and fit.slope.se is None


def test_citl_and_joint_intercept_are_different_quantities():
    """A model too extreme (true logit t = 0.5·η - 0.75): the joint fit's intercept estimates -0.75, CITL (the
    shift of the mean log-odds with the slope held at 1) is a different number; each matches its own GLM."""
    rng = np.random.default_rng(11)
    true = rng.normal(-1.5, 1.0, 4000)
    y = (rng.uniform(size=true.size) < 1 / (1 + np.exp(-true))).astype(int)
    p = 1 / (1 + np.exp(-(2.0 * true + 1.5)))
    fit = calibration_fit_from_site(local_calibration_fit(p, y))
    citl, joint = oracle(p, y)
    assert fit.citl.value == pytest.approx(citl.params[0], abs=1e-8)
    assert fit.intercept.value == pytest.approx(joint.params[0], abs=1e-8)
    assert fit.intercept.value == pytest.approx(-0.75, abs=0.1) and fit.slope.value == pytest.approx(0.5, abs=0.05)
    assert abs(fit.intercept.value - fit.citl.value) > 0.15


def test_separable_site_reports_nan_not_an_exception():
    p = np.array([0.1, 0.2, 0.3, 0.7, 0.8, 0.9])
    y = np.array([0, 0, 0, 1, 1, 1])
    out = local_calibration_fit(p, y)
    assert out["n"] == 6 and "citl" in out  # CITL exists (the offset model is not separable)
    citl, _ = oracle(p, y)
    assert out["citl"] == pytest.approx(citl.params[0], abs=1e-8)
