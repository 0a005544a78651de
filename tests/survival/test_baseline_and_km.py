"""Baseline survival on a grid that respects k, and coarsened Kaplan-Meier curves, against lifelines."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from lifelines import CoxPHFitter, KaplanMeierFitter

from coordinator.validation.survival_baseline import BaselineReplyError, candidate_grid, carried_baseline, shared_grid
from fedmath.survival import Baseline, SurvivalMathError, linear_predictor, risk_at
from site_client.evaluation.survival_cox import SurvivalData, breslow_cumulative_hazard
from site_client.evaluation.survival_grid import coarse_kaplan_meier, releasable_grid

FEATURES = ["x0", "x1", "x2"]
K = 5


def _events_between(part: pd.DataFrame, lo: float, hi: float) -> int:
    return int(((part.time > lo) & (part.time <= hi) & (part.event == 1)).sum())


@pytest.fixture(scope="module")
def fitted(cohort: pd.DataFrame) -> CoxPHFitter:
    return CoxPHFitter().fit(cohort[[*FEATURES, "time", "event", "site"]], "time", "event", strata=["site"])


@pytest.fixture(scope="module")
def grid(cohort: pd.DataFrame) -> np.ndarray:
    candidates = candidate_grid([12.0, 24.0], steps=24)
    site_grids = {s: releasable_grid(p.time.to_numpy(), p.event.to_numpy(), candidates, K) for s, p in cohort.groupby("site")}
    return shared_grid(candidates, site_grids)


def test_every_grid_interval_holds_zero_or_at_least_k_events_at_every_site(cohort: pd.DataFrame, grid: np.ndarray) -> None:
    assert grid[0] == 0 and grid[-1] == 24.0 and grid.size > 3
    for _, part in cohort.groupby("site"):
        counts = [_events_between(part, lo, hi) for lo, hi in zip(grid[:-1], grid[1:])]
        assert all(c == 0 or c >= K for c in counts), counts


def test_breslow_per_site_equals_lifelines_at_grid_points(cohort: pd.DataFrame, fitted: CoxPHFitter, grid: np.ndarray) -> None:
    beta = fitted.params_[FEATURES].to_numpy()
    centre = cohort[FEATURES].mean().to_numpy()  # lifelines' baseline is that of a patient at the pooled mean
    for site, part in cohort.groupby("site"):
        data = SurvivalData.checked(part[FEATURES], part.time, part.event)
        ours = breslow_cumulative_hazard(data, beta, centre, grid)
        theirs = fitted.baseline_cumulative_hazard_[site]
        expected = [theirs[theirs.index <= g].iloc[-1] if (theirs.index <= g).any() else 0.0 for g in grid]
        np.testing.assert_allclose(ours, expected, rtol=1e-9, atol=1e-12)


def test_carried_baseline_is_the_patient_weighted_mean_and_gives_lifelines_risk(
    cohort: pd.DataFrame, fitted: CoxPHFitter, grid: np.ndarray
) -> None:
    beta = fitted.params_[FEATURES].to_numpy()
    centre = cohort[FEATURES].mean().to_numpy()
    replies, oracle_curves, sizes = {}, [], []
    for site, part in cohort.groupby("site"):
        data = SurvivalData.checked(part[FEATURES], part.time, part.event)
        replies[site] = (breslow_cumulative_hazard(data, beta, centre, grid), len(part))
        theirs = fitted.baseline_cumulative_hazard_[site]
        oracle_curves.append([theirs[theirs.index <= g].iloc[-1] if (theirs.index <= g).any() else 0.0 for g in grid])
        sizes.append(len(part))
    baseline = carried_baseline(grid, replies)
    np.testing.assert_allclose(baseline.cumulative_hazard, np.average(oracle_curves, axis=0, weights=sizes), rtol=1e-9)
    # a baseline made from one site predicts what lifelines predicts for a patient of that stratum
    site = "site1"
    own = carried_baseline(grid, {site: replies[site]})
    patients = cohort[cohort.site == site].head(4)
    eta = linear_predictor(patients[FEATURES].to_numpy(), beta, centre)
    ours = risk_at(own, eta, [grid[2], grid[-1]])
    survival = fitted.predict_survival_function(patients[[*FEATURES, "site"]], times=[grid[2], grid[-1]])
    np.testing.assert_allclose(ours, 1 - survival.to_numpy().T, rtol=1e-9)


def test_baseline_interpolates_and_never_extrapolates() -> None:
    baseline = Baseline(np.array([0.0, 10.0, 20.0]), np.array([0.0, 0.2, 0.6]))
    np.testing.assert_allclose(baseline.at([5.0, 15.0]), [0.1, 0.4])
    with pytest.raises(SurvivalMathError, match=r"horizons \[25.0\] outside the baseline's grid \[0, 20\]: no extrapolation"):
        baseline.at([25.0])


def test_site_with_fewer_than_k_events_releases_no_grid() -> None:
    time = np.array([1.0, 2.0, 3.0, 30.0])
    event = np.array([1, 1, 0, 1])
    assert releasable_grid(time, event, [10.0, 20.0], k=5) is None
    with pytest.raises(BaselineReplyError, match="site 'tiny' cannot release a baseline"):
        shared_grid(np.array([10.0, 20.0]), {"tiny": None})


def test_bad_baseline_replies_are_refused(grid: np.ndarray) -> None:
    with pytest.raises(BaselineReplyError, match="site 'evil': a cumulative hazard must have one finite, non-decreasing"):
        carried_baseline(grid, {"evil": (np.linspace(1, 0, grid.size), 50)})
    with pytest.raises(BaselineReplyError, match="site 'evil': its grid is not a subset of the candidates"):
        shared_grid(np.array([10.0, 20.0]), {"evil": np.array([10.0, 15.0, 20.0])})


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
