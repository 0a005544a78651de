"""NCCTG lung (lifelines.datasets.load_lung; inst = the site): leave-one-institution-out federated Cox validation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from lifelines import CoxPHFitter
from lifelines.utils import concordance_index
from sksurv.metrics import brier_score
from sksurv.util import Surv

from coordinator.validation.meta import random_effects

from .lung_driver import FEATURES, HORIZONS, REFERENCE, K, leave_one_site_out, lung_sites


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return lung_sites()


@pytest.fixture(scope="module")
def folds(frame: pd.DataFrame):
    return leave_one_site_out(frame)


def test_sites_are_the_institutions_with_enough_events(frame: pd.DataFrame) -> None:
    assert frame["site"].nunique() >= 8
    assert frame.groupby("site")["status"].sum().min() >= 10


def test_each_fold_equals_lifelines_stratified_cox_on_pooled_training_data(frame: pd.DataFrame, folds) -> None:
    for fold in folds:
        train = frame[frame.site != fold.held_out]
        for columns, fit in ((FEATURES, fold.fit), (REFERENCE, fold.volume_fit)):
            oracle = CoxPHFitter().fit(train[[*columns, "time", "status", "site"]], "time", "status", strata=["site"],
                                       fit_options={"precision": 1e-12})
            np.testing.assert_allclose(fit.beta, oracle.params_[columns].to_numpy(), atol=1e-6)


def test_heldout_metrics_agree_with_lifelines_and_scikit_survival(frame: pd.DataFrame, folds) -> None:
    reported = 0
    for fold in folds:
        test = frame[frame.site == fold.held_out]
        t, e = test["time"].to_numpy(float), test["status"].to_numpy()
        eta = fold.model.linear_predictor(test[FEATURES].to_numpy(float))
        assert fold.metrics["harrell"]["c"] == pytest.approx(concordance_index(t, -eta, e), abs=1e-12)
        eta_ref = fold.volume_model.linear_predictor(test[REFERENCE].to_numpy(float))
        delta = concordance_index(t, -eta, e) - concordance_index(t, -eta_ref, e)
        assert fold.metrics["delta_c_vs_volume"]["delta"] == pytest.approx(delta, abs=1e-12)
        for horizon, result in fold.metrics["horizons"].items():
            if result.get("suppressed"):
                assert (t > horizon).sum() < K or ((e == 1) & (t <= horizon)).sum() < K
                continue
            reported += 1
            risk = fold.model.risk(test[FEATURES].to_numpy(float), [horizon])[:, 0]
            y = Surv.from_arrays(e == 1, t)
            assert result["brier"]["brier"] == pytest.approx(brier_score(y, y, (1 - risk)[:, None], [horizon])[1][0], abs=1e-12)
            assert 0 < result["oe"]["oe"] < 5 if result["oe"] else True
    assert reported >= len(folds)


def test_pooled_c_by_random_effects(folds) -> None:
    c = [f.metrics["harrell"]["c"] for f in folds]
    se = [f.metrics["harrell"]["se"] for f in folds]
    pooled = random_effects(c, se, scale="logit")
    # published NCCTG lung Cox models (age, sex, ECOG, Karnofsky) discriminate modestly: C around 0.6
    assert 0.52 < pooled.estimate < 0.72


def test_nothing_released_reveals_fewer_than_k_patients(folds) -> None:
    for fold in folds:
        for horizon, result in fold.metrics["horizons"].items():
            calibration = result.get("calibration")
            if calibration:
                assert min(calibration["n"]) >= K
        for curve in fold.metrics["km_by_risk_group"].values():
            assert curve is None or curve["n"] >= K


def _reml_mean_by_direct_optimisation(y: np.ndarray, v: np.ndarray) -> float:
    """Independent oracle: maximise the restricted log-likelihood over tau^2 >= 0 numerically (scipy), then the
    inverse-variance mean; the product fits REML by Fisher scoring."""
    from scipy.optimize import minimize_scalar

    def negative_restricted_loglik(tau2: float) -> float:
        w = 1.0 / (v + tau2)
        mu = np.sum(w * y) / np.sum(w)
        return 0.5 * (np.sum(np.log(v + tau2)) + np.log(np.sum(w)) + np.sum(w * (y - mu) ** 2))

    upper = 10 * (np.var(y) + np.max(v))
    tau2 = minimize_scalar(negative_restricted_loglik, bounds=(0.0, upper), method="bounded",
                           options={"xatol": 1e-12}).x
    if negative_restricted_loglik(0.0) <= negative_restricted_loglik(tau2):
        tau2 = 0.0
    w = 1.0 / (v + tau2)
    return float(np.sum(w * y) / np.sum(w))


def test_pooled_measures_are_reml_random_effects_on_their_scales(folds) -> None:
    """Survival measures pool as the binary ones do (REML; HKSJ CI): C on the logit scale, O/E on the log scale."""
    from coordinator.validation.survival_pooling import pool_survival_results

    pooled = pool_survival_results({f.held_out: f.metrics for f in folds}, HORIZONS)
    c = np.array([f.metrics["harrell"]["c"] for f in folds])
    se = np.array([f.metrics["harrell"]["se"] for f in folds])
    logit, logit_se = np.log(c / (1 - c)), se / (c * (1 - c))
    expected = _reml_mean_by_direct_optimisation(logit, logit_se**2)
    assert pooled["harrell_c"].estimate == pytest.approx(1 / (1 + np.exp(-expected)), rel=1e-6)
    oe = [(f.metrics["horizons"][365.0]["oe"]) for f in folds if f.metrics["horizons"][365.0].get("oe")]
    log_oe = np.log([o["oe"] for o in oe])
    expected = _reml_mean_by_direct_optimisation(log_oe, np.array([o["log_oe_se"] for o in oe]) ** 2)
    assert pooled["oe@365"].estimate == pytest.approx(np.exp(expected), rel=1e-6)
    assert pooled["oe@365"].k == len(oe) < len(folds) + 1
