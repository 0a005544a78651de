"""Baseline survival on a grid that respects k, and coarsened Kaplan-Meier curves, against lifelines."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from lifelines import CoxPHFitter, KaplanMeierFitter

from coordinator.validation.survival_baseline import BaselineReplyError, candidate_grid, carried_baseline
from fedmath.survival import Baseline, SurvivalMathError, linear_predictor, risk_at
from site_client.evaluation.survival_cox import SurvivalData, breslow_cumulative_hazard
from site_client.evaluation.survival_grid import coarse_kaplan_meier, releasable_grid, site_baseline

FEATURES = ["x0", "x1", "x2"]
K = 5


def _events_between(part: pd.DataFrame, lo: float, hi: float) -> int:
    return int(((part.time > lo) & (part.time <= hi) & (part.event == 1)).sum())


@pytest.fixture(scope="module")
def fitted(cohort: pd.DataFrame) -> CoxPHFitter:
    return CoxPHFitter().fit(cohort[[*FEATURES, "time", "event", "site"]], "time", "event", strata=["site"])


CANDIDATES = candidate_grid([12.0, 24.0], steps=24)


def _lifelines_hazard(fitted: CoxPHFitter, site: str, times: np.ndarray) -> np.ndarray:
    theirs = fitted.baseline_cumulative_hazard_[site]
    return np.array([theirs[theirs.index <= g].iloc[-1] if (theirs.index <= g).any() else 0.0 for g in times])


def test_every_site_grid_interval_holds_zero_or_at_least_k_events_and_keeps_horizons(cohort: pd.DataFrame) -> None:
    kept_horizon = 0
    for _, part in cohort.groupby("site"):
        grid = releasable_grid(part.time.to_numpy(), part.event.to_numpy(), CANDIDATES, K, keep=[12.0, 24.0])
        assert grid[-1] == 24.0 and grid.size > 2
        if 12.0 in grid:
            kept_horizon += 1
        else:  # only dropped when one side of it holds 1..k-1 events
            assert 0 < _events_between(part, 0, 12.0) < K or 0 < _events_between(part, 12.0, 24.0) < K
        edges = np.concatenate([[0.0], grid])
        counts = [_events_between(part, lo, hi) for lo, hi in zip(edges[:-1], edges[1:])]
        assert all(c == 0 or c >= K for c in counts), counts
    assert kept_horizon >= 2


def test_breslow_per_site_equals_lifelines_at_its_grid_points(cohort: pd.DataFrame, fitted: CoxPHFitter) -> None:
    beta = fitted.params_[FEATURES].to_numpy()
    centre = cohort[FEATURES].mean().to_numpy()  # lifelines' baseline is that of a patient at the pooled mean
    for site, part in cohort.groupby("site"):
        data = SurvivalData.checked(part[FEATURES], part.time, part.event)
        grid, ours, n = site_baseline(data, beta, centre, CANDIDATES, K)
        assert n == len(part)
        np.testing.assert_allclose(ours, _lifelines_hazard(fitted, site, grid), rtol=1e-9, atol=1e-12)
        full = breslow_cumulative_hazard(data, beta, centre, CANDIDATES)
        np.testing.assert_allclose(full, _lifelines_hazard(fitted, site, CANDIDATES), rtol=1e-9, atol=1e-12)


def test_carried_baseline_is_the_patient_weighted_mean_and_gives_lifelines_risk(cohort: pd.DataFrame, fitted: CoxPHFitter) -> None:
    beta = fitted.params_[FEATURES].to_numpy()
    centre = cohort[FEATURES].mean().to_numpy()
    replies, oracle_curves, sizes = {}, [], []
    full_grid = np.concatenate([[0.0], CANDIDATES])
    for site, part in cohort.groupby("site"):
        data = SurvivalData.checked(part[FEATURES], part.time, part.event)
        replies[site] = site_baseline(data, beta, centre, CANDIDATES, K)
        points = np.concatenate([[0.0], replies[site][0]])
        oracle_curves.append(np.interp(full_grid, points, _lifelines_hazard(fitted, site, points)))
        sizes.append(len(part))
    baseline = carried_baseline(CANDIDATES, replies)
    np.testing.assert_allclose(baseline.times, full_grid)
    np.testing.assert_allclose(baseline.cumulative_hazard, np.average(oracle_curves, axis=0, weights=sizes), rtol=1e-9)
    # a baseline made from one site predicts, at that site's grid points, what lifelines predicts for its patients
    site = "site1"
    own = carried_baseline(CANDIDATES, {site: replies[site]})
    patients = cohort[cohort.site == site].head(4)
    eta = linear_predictor(patients[FEATURES].to_numpy(), beta, centre)
    at = [replies[site][0][1], 24.0]
    survival = fitted.predict_survival_function(patients[[*FEATURES, "site"]], times=at)
    np.testing.assert_allclose(risk_at(own, eta, at), 1 - survival.to_numpy().T, rtol=1e-9)


def test_baseline_interpolates_and_never_extrapolates() -> None:
    baseline = Baseline(np.array([0.0, 10.0, 20.0]), np.array([0.0, 0.2, 0.6]))
    np.testing.assert_allclose(baseline.at([5.0, 15.0]), [0.1, 0.4])
    with pytest.raises(SurvivalMathError, match=r"horizons \[25.0\] outside the baseline's grid \[0, 20\]: no extrapolation"):
        baseline.at([25.0])


def test_site_with_fewer_than_k_events_releases_no_grid_and_is_left_out() -> None:
    time = np.array([1.0, 2.0, 3.0, 30.0])
    event = np.array([1, 1, 0, 1])
    assert releasable_grid(time, event, [10.0, 20.0], k=5) is None
    with pytest.raises(BaselineReplyError, match=r"no training site could release a baseline"):
        carried_baseline(np.array([10.0, 20.0]), {"tiny": None})
    kept = carried_baseline(np.array([10.0, 20.0]), {"tiny": None, "big": (np.array([20.0]), np.array([0.4]), 30)})
    np.testing.assert_allclose(kept.cumulative_hazard, [0.0, 0.2, 0.4])


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        ((np.array([10.0, 15.0, 20.0]), np.array([0.1, 0.2, 0.3]), 9), "its grid is not an increasing subset of the candidates"),
        ((np.array([20.0]), np.array([0.4]), 9), None),
        ((np.array([10.0, 20.0]), np.array([0.5, 0.1]), 9), "a cumulative hazard must have one finite, non-negative, non-decreasing"),
        ((np.array([10.0, 20.0]), np.array([0.1, np.inf]), 9), "a cumulative hazard must have one finite"),
        ((np.array([10.0, 20.0]), np.array([0.1, 0.2]), 0), "patient count 0 is not a positive integer"),
    ],
)
def test_bad_baseline_replies_are_refused(reply, message) -> None:
    if message is None:
        carried_baseline(np.array([10.0, 20.0]), {"evil": reply})
        return
    with pytest.raises(BaselineReplyError, match=f"site 'evil': {message}"):
        carried_baseline(np.array([10.0, 20.0]), {"evil": reply})


def test_coarse_km_matches_lifelines_and_hides_small_steps(cohort: pd.DataFrame) -> None:
    part = cohort[cohort.site == "site1"]
    time, event = part.time.to_numpy(), part.event.to_numpy()
    curve = coarse_kaplan_meier(time, event, candidate_grid([24.0], steps=48), K)
    assert curve is not None and curve["n"] == len(part)
    oracle = KaplanMeierFitter().fit(time, event)
    np.testing.assert_allclose(curve["survival"], oracle.survival_function_at_times(curve["times"]).to_numpy(), rtol=1e-12)
    times = curve["times"]
    for lo, hi in zip(times[:-1], times[1:]):
        assert _events_between(part, lo, hi) in (0,) or _events_between(part, lo, hi) >= K
        assert (time >= hi).sum() >= K
    assert np.any(np.diff(curve["survival"]) < 0)


def test_registered_model_round_trips_and_predicts_like_lifelines(cohort: pd.DataFrame, fitted: CoxPHFitter) -> None:
    import json

    from fedmath.survival import CoxModel

    beta = fitted.params_[FEATURES].to_numpy()
    centre = cohort[FEATURES].mean().to_numpy()
    part = cohort[cohort.site == "site2"]
    reply = site_baseline(SurvivalData.checked(part[FEATURES], part.time, part.event), beta, centre, CANDIDATES, K)
    model = CoxModel(tuple(FEATURES), beta, centre, carried_baseline(CANDIDATES, {"site2": reply}))
    loaded = CoxModel.from_dict(json.loads(json.dumps(model.to_dict())))
    patients = part.head(3)
    out = loaded.predict(patients[FEATURES].to_numpy(), [24.0])
    np.testing.assert_allclose(out["linear_predictor"], np.log(fitted.predict_partial_hazard(patients)), rtol=1e-9)
    survival = fitted.predict_survival_function(patients[[*FEATURES, "site"]], times=[24.0])
    np.testing.assert_allclose(out["risk"], 1 - survival.to_numpy().T, rtol=1e-9)
    broken = {**model.to_dict(), "beta": [0.1, 0.2]}
    with pytest.raises(SurvivalMathError, match=r"one coefficient and one centre value per feature \(3\)"):
        CoxModel.from_dict(broken)
    with pytest.raises(SurvivalMathError, match="not a Cox model: 'centre'"):
        CoxModel.from_dict({k: v for k, v in model.to_dict().items() if k != "centre"})


def test_kaplan_meier_of_a_group_without_events_is_one_like_lifelines():
    """A merged risk group may hold no event (0 is allowed by small-cell control): S(t) = 1, Greenwood 0."""
    from lifelines import KaplanMeierFitter

    from site_client.evaluation.survival_grid import kaplan_meier

    time, event = np.array([3.0, 5.0, 8.0, 13.0]), np.zeros(4, dtype=int)
    at = np.array([1.0, 5.0, 20.0])
    survival, variance, at_risk = kaplan_meier(time, event, at)
    reference = KaplanMeierFitter().fit(time, event).survival_function_at_times(at).to_numpy()
    np.testing.assert_allclose(survival, reference)
    np.testing.assert_array_equal(variance, 0.0)
    np.testing.assert_array_equal(at_risk, [4, 3, 0])
