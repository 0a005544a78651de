"""The coordinator's recalibration surrogate (coordinator/study/recalibration_surrogate.py) against statsmodels.

Stand-in cases matched to the exact Platt terms of step 0's ten points must put their optimum next to the
maximum-likelihood fit of the pooled calibration cases (statsmodels' Logit of y on (1, logit p)) for models whose
optimum is far from the identity map: one Newton step from the identity lands 0.09 to 34 SEs away on these data."""

from __future__ import annotations

import numpy as np
import pytest
import statsmodels.api as sm

from coordinator.study.calibrate import FIRST_POINTS
from coordinator.study.recalibration_surrogate import ExactTerms, platt_rows, proposed_optimum
from fedmath.calibration import calibration_terms
from fedmath.newton import newton_step


def _exact(eta: np.ndarray, y: np.ndarray, point: np.ndarray) -> ExactTerms:
    t = calibration_terms(eta, y, float(point[0]), float(point[1]))
    return ExactTerms(np.asarray(point, dtype=float), t["n"], platt_rows(t["nll"], t["grad"], t["info"]), frozenset({"pooled"}))


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("confidence", [0.15, 0.5, 3.0])  # pooled Platt slopes 1.2-2.5 (under-confident) and 0.3-0.4 (over)
def test_the_surrogate_optimum_is_next_to_the_statsmodels_fit(make_sites, seed, confidence):
    sites = make_sites(seed, [40, 60, 50], miscal=(-0.4, 1.0 / confidence))
    eta = np.concatenate([np.log(s.p) - np.log1p(-s.p) for s in sites])
    y = np.concatenate([s.y for s in sites]).astype(float)
    fit = sm.Logit(y, sm.add_constant(eta)).fit(disp=0, tol=1e-12, maxiter=100)
    se = np.sqrt(np.diag(fit.cov_params()))
    step0 = [_exact(eta, y, p) for p in FIRST_POINTS["platt"]]
    identity = step0[0]
    newton_point = identity.point + newton_step(identity.rows[1:3], np.array([[identity.rows[3], identity.rows[4]],
                                                                                [identity.rows[4], identity.rows[5]]]))
    proposed = proposed_optimum("platt", step0, frozenset({"pooled"}), newton_point)
    assert proposed is not None
    assert np.max(np.abs(proposed - fit.params) / se) < 0.05, (proposed, fit.params, se)


def test_evaluations_over_other_sites_are_not_matched():
    rng = np.random.default_rng(1)
    eta, y = rng.normal(size=80), (rng.random(80) < 0.4).astype(float)
    other = [ExactTerms(e.point, e.n, e.rows, frozenset({"a", "b"})) for e in (_exact(eta, y, p) for p in FIRST_POINTS["platt"])]
    assert proposed_optimum("platt", other, frozenset({"a"}), np.array([0.0, 1.0])) is None
