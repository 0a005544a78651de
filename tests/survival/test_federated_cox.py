"""Federated stratified Cox (site halves summed, Newton at the coordinator) against lifelines and scikit-survival."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from lifelines import CoxPHFitter
from sksurv.linear_model import CoxPHSurvivalAnalysis
from sksurv.util import Surv

from coordinator.validation.survival_cox import CoxReplyError, checked_terms, fit_stratified_cox
from fedmath.survival import CoxTerms, SurvivalMathError
from site_client.evaluation.survival_cox import SurvivalData, cox_terms

from .conftest import stratified_cohort

FEATURES = ["x0", "x1", "x2"]
PRECISE = {"precision": 1e-12, "max_steps": 200}


def site_replies(frame: pd.DataFrame, features: list[str], ties: str = "efron") -> dict:
    """The in-process stand-in for one Flower round per evaluation: each site's own cox_terms."""
    replies = {}
    for site, part in frame.groupby("site"):
        data = SurvivalData.checked(part[features].to_numpy(), part["time"].to_numpy(), part["event"].to_numpy())
        replies[site] = lambda beta, data=data: cox_terms(data, beta, ties)
    return replies


def test_stratified_efron_equals_lifelines(cohort: pd.DataFrame) -> None:
    fit = fit_stratified_cox(site_replies(cohort, FEATURES), len(FEATURES))
    oracle = CoxPHFitter().fit(cohort[[*FEATURES, "time", "event", "site"]], "time", "event", strata=["site"], fit_options=PRECISE)
    np.testing.assert_allclose(fit.beta, oracle.params_[FEATURES].to_numpy(), atol=1e-6)
    np.testing.assert_allclose(fit.log_likelihood, oracle.log_likelihood_, atol=1e-6)
    np.testing.assert_allclose(fit.covariance, oracle.variance_matrix_.loc[FEATURES, FEATURES].to_numpy(), rtol=1e-5)


def test_volume_only_baseline_is_the_same_code_with_one_feature(cohort: pd.DataFrame) -> None:
    fit = fit_stratified_cox(site_replies(cohort, ["x0"]), 1)
    oracle = CoxPHFitter().fit(cohort[["x0", "time", "event", "site"]], "time", "event", strata=["site"], fit_options=PRECISE)
    np.testing.assert_allclose(fit.beta, oracle.params_[["x0"]].to_numpy(), atol=1e-6)


def test_many_ties_still_match_lifelines() -> None:
    frame = stratified_cohort(seed=3, sizes=(150, 90), rounding=4.0)
    assert frame.duplicated(["site", "time"]).sum() > 100
    fit = fit_stratified_cox(site_replies(frame, FEATURES), 3)
    oracle = CoxPHFitter().fit(frame[[*FEATURES, "time", "event", "site"]], "time", "event", strata=["site"], fit_options=PRECISE)
    np.testing.assert_allclose(fit.beta, oracle.params_[FEATURES].to_numpy(), atol=1e-6)


@pytest.mark.parametrize("ties", ["breslow", "efron"])
def test_one_site_and_ridge_equal_scikit_survival(ties: str) -> None:
    frame = stratified_cohort(seed=5, sizes=(200,), rounding=2.0)
    for alpha in (0.0, 7.5):
        fit = fit_stratified_cox(site_replies(frame, FEATURES, ties), 3, ridge=alpha)
        oracle = CoxPHSurvivalAnalysis(alpha=alpha, ties=ties, tol=1e-12, n_iter=200).fit(
            frame[FEATURES].to_numpy(), Surv.from_arrays(frame["event"] == 1, frame["time"])
        )
        np.testing.assert_allclose(fit.beta, oracle.coef_, atol=1e-6)


def test_stratified_ridge_equals_lifelines_penalizer(cohort: pd.DataFrame) -> None:
    """lifelines penalises n·λ/2·Σ(β_j·sd_j)²: on features scaled to sd 1 that is our ridge with α = n·λ."""
    frame = cohort.copy()
    frame[FEATURES] = frame[FEATURES] / frame[FEATURES].std()
    penalizer = 0.02
    fit = fit_stratified_cox(site_replies(frame, FEATURES), 3, ridge=penalizer * len(frame))
    oracle = CoxPHFitter(penalizer=penalizer).fit(
        frame[[*FEATURES, "time", "event", "site"]], "time", "event", strata=["site"], fit_options=PRECISE
    )
    np.testing.assert_allclose(fit.beta, oracle.params_[FEATURES].to_numpy(), atol=1e-6)


def test_site_reply_has_sizes_independent_of_n(cohort: pd.DataFrame) -> None:
    part = cohort[cohort.site == "site1"]
    data = SurvivalData.checked(part[FEATURES], part["time"], part["event"])
    terms = cox_terms(data, np.zeros(3))
    assert terms.gradient.shape == (3,) and terms.information.shape == (3, 3)
    assert isinstance(terms.log_likelihood, float)


@pytest.mark.parametrize(
    ("terms", "message"),
    [
        (CoxTerms(np.zeros(2), np.eye(3), -1.0), "site 'evil': Cox terms have shapes (2,) / (3, 3), expected (3,) / (3, 3)"),
        (CoxTerms(np.array([np.nan, 0, 0]), np.eye(3), -1.0), "site 'evil': Cox terms hold a non-finite value"),
        (CoxTerms(np.zeros(3), np.eye(3), np.nan), "site 'evil': Cox terms hold a non-finite value"),
        (CoxTerms(np.zeros(3), np.eye(3), np.inf), "site 'evil': Cox terms hold a non-finite value"),
        (CoxTerms(np.zeros(3), np.eye(3), 5.0), "site 'evil': a log partial likelihood cannot be positive, got 5.0"),
        (CoxTerms(np.zeros(3), np.triu(np.ones((3, 3))), -1.0), "site 'evil': the Cox information matrix is not symmetric"),
        (CoxTerms(np.zeros(3), -np.eye(3), -1.0), "site 'evil': the Cox information matrix is not positive semidefinite"),
    ],
)
def test_coordinator_rejects_bad_site_replies(terms: CoxTerms, message: str) -> None:
    with pytest.raises(CoxReplyError) as caught:
        checked_terms("evil", terms, 3)
    assert str(caught.value) == message


def test_constant_feature_is_a_clear_error(cohort: pd.DataFrame) -> None:
    frame = cohort.assign(x2=1.0)
    with pytest.raises(SurvivalMathError, match="information matrix is singular"):
        fit_stratified_cox(site_replies(frame, FEATURES), 3)


def test_badly_scaled_feature_matches_lifelines() -> None:
    """A volume in mm^3 (values ~1e4, coefficient ~1e-4): no rescaling needed."""
    frame = stratified_cohort(seed=8, sizes=(120, 90))
    frame["volume"] = 5000 + 4000 * frame["x0"] + 1.0
    fit = fit_stratified_cox(site_replies(frame, ["volume"]), 1)
    oracle = CoxPHFitter().fit(frame[["volume", "time", "event", "site"]], "time", "event", strata=["site"], fit_options=PRECISE)
    np.testing.assert_allclose(fit.beta, oracle.params_[["volume"]].to_numpy(), rtol=1e-6)


def test_underflowing_risk_sets_give_minus_infinity_which_the_coordinator_accepts(cohort: pd.DataFrame) -> None:
    """At an absurd beta every score of a late risk set underflows: the likelihood is 0, so Newton must halve."""
    part = cohort[cohort.site == "site0"]
    data = SurvivalData.checked(part[FEATURES], part["time"], part["event"])
    terms = cox_terms(data, np.array([2000.0, 0.0, 0.0]))
    assert terms.log_likelihood == -np.inf
    assert checked_terms("site0", terms, 3).log_likelihood == -np.inf
