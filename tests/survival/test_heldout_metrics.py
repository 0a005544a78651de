"""Held-out survival metrics at a site against lifelines and scikit-survival (never against our own code)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from lifelines import CoxPHFitter, KaplanMeierFitter
from lifelines.utils import concordance_index
from sksurv.metrics import brier_score, concordance_index_ipcw, cumulative_dynamic_auc as sk_auc
from sksurv.util import Surv

from site_client.evaluation.survival_calibration import (
    calibration_groups,
    calibration_slope,
    ipcw_brier,
    net_benefit,
    observed_expected,
)
from site_client.evaluation.survival_concordance import cumulative_dynamic_auc, harrell_c, paired_delta_c, uno_c

from .conftest import stratified_cohort

HORIZON = 12.0
K = 5


@pytest.fixture(scope="module")
def site() -> dict:
    frame = stratified_cohort(seed=11, sizes=(140,), rounding=0.5)
    rng = np.random.default_rng(1)
    eta = 0.7 * frame.x0 - 0.5 * frame.x1 + rng.normal(0, 0.3, len(frame))
    volume = frame.x0.to_numpy() + rng.normal(0, 1.0, len(frame))
    risk = 1 - np.exp(-0.3 * np.exp(eta.to_numpy()))
    return {"time": frame.time.to_numpy(), "event": frame.event.to_numpy(), "eta": eta.to_numpy(), "volume": volume, "risk": risk}


def _surv(time: np.ndarray, event: np.ndarray) -> np.ndarray:
    return Surv.from_arrays(event == 1, time)


def _jackknife(values: list[float]) -> float:
    v = np.asarray(values)
    return float(np.sqrt((v.size - 1) / v.size * np.sum((v - v.mean()) ** 2)))


def test_harrell_c_and_jackknife_se_equal_lifelines(site: dict) -> None:
    t, e, eta = site["time"], site["event"], site["eta"]
    ours = harrell_c(t, e, eta)
    assert ours["c"] == pytest.approx(concordance_index(t, -eta, e), abs=1e-12)
    keep = lambda i: np.arange(t.size) != i  # noqa: E731
    loo = [concordance_index(t[keep(i)], -eta[keep(i)], e[keep(i)]) for i in range(t.size)]
    assert ours["se"] == pytest.approx(_jackknife(loo), rel=1e-9)


def test_paired_delta_c_equals_difference_of_lifelines_c(site: dict) -> None:
    t, e, eta, vol = site["time"], site["event"], site["eta"], site["volume"]
    ours = paired_delta_c(t, e, eta, vol)
    assert ours["delta"] == pytest.approx(concordance_index(t, -eta, e) - concordance_index(t, -vol, e), abs=1e-12)
    keep = lambda i: np.arange(t.size) != i  # noqa: E731
    loo = [concordance_index(t[keep(i)], -eta[keep(i)], e[keep(i)]) - concordance_index(t[keep(i)], -vol[keep(i)], e[keep(i)])
           for i in range(t.size)]
    assert ours["se"] == pytest.approx(_jackknife(loo), rel=1e-9)


def test_uno_c_equals_scikit_survival_with_its_own_censoring_distribution(site: dict) -> None:
    t, e, eta = site["time"], site["event"], site["eta"]
    ours = uno_c(t, e, eta, tau=HORIZON)
    full = _surv(t, e)
    assert ours["c"] == pytest.approx(concordance_index_ipcw(full, full, eta, tau=HORIZON)[0], abs=1e-12)
    keep = lambda i: np.arange(t.size) != i  # noqa: E731
    loo = [concordance_index_ipcw(full, _surv(t[keep(i)], e[keep(i)]), eta[keep(i)], tau=HORIZON)[0] for i in range(t.size)]
    assert ours["se"] == pytest.approx(_jackknife(loo), rel=1e-9)


@pytest.mark.parametrize("horizon", [6.0, 12.0, 18.0])
def test_time_dependent_auc_equals_scikit_survival(site: dict, horizon: float) -> None:
    t, e, risk = site["time"], site["event"], site["risk"]
    ours = cumulative_dynamic_auc(t, e, risk, horizon)
    full = _surv(t, e)
    assert ours["auc"] == pytest.approx(sk_auc(full, full, risk, [horizon])[0][0], abs=1e-12)
    assert 0 < ours["se"] < 0.2


def test_time_dependent_auc_se_is_the_jackknife_of_scikit_survival(site: dict) -> None:
    t, e, risk = site["time"], site["event"], site["risk"]
    full = _surv(t, e)
    keep = lambda i: np.arange(t.size) != i  # noqa: E731
    loo = [sk_auc(full, _surv(t[keep(i)], e[keep(i)]), risk[keep(i)], [HORIZON])[0][0] for i in range(t.size)]
    assert cumulative_dynamic_auc(t, e, risk, HORIZON)["se"] == pytest.approx(_jackknife(loo), rel=1e-9)


def test_ipcw_brier_equals_scikit_survival(site: dict) -> None:
    t, e, risk = site["time"], site["event"], site["risk"]
    full = _surv(t, e)
    _, theirs = brier_score(full, full, (1 - risk)[:, None], [HORIZON])
    assert ipcw_brier(t, e, risk, HORIZON)["brier"] == pytest.approx(theirs[0], abs=1e-12)


def test_calibration_groups_equal_lifelines_km_per_group(site: dict) -> None:
    t, e, risk = site["time"], site["event"], site["risk"]
    groups = calibration_groups(t, e, risk, HORIZON, groups=4, k=K)
    assert groups is not None and sum(groups["n"]) == t.size
    order = np.argsort(risk, kind="mergesort")
    start = 0
    for n, predicted, observed, se in zip(groups["n"], groups["predicted"], groups["observed"], groups["observed_se"]):
        members = order[start : start + n]
        start += n
        km = KaplanMeierFitter().fit(t[members], e[members])
        assert observed == pytest.approx(1 - km.survival_function_at_times(HORIZON).iloc[0], abs=1e-12)
        assert predicted == pytest.approx(risk[members].mean())
        assert n >= K and (((e[members] == 1) & (t[members] <= HORIZON)).sum() in (0,) or
                           ((e[members] == 1) & (t[members] <= HORIZON)).sum() >= K)
        assert se > 0


def test_observed_expected_equals_lifelines_km(site: dict) -> None:
    t, e, risk = site["time"], site["event"], site["risk"]
    km = KaplanMeierFitter().fit(t, e)
    observed = 1 - km.survival_function_at_times(HORIZON).iloc[0]
    ours = observed_expected(t, e, risk, HORIZON, K)
    assert ours["oe"] == pytest.approx(observed / risk.mean(), rel=1e-12)
    # Greenwood SE of lifelines' KM: half-width of its log-log CI is not Greenwood, so use its variance formula
    table = km.event_table
    table = table[(table.index <= HORIZON) & (table.observed > 0)]
    greenwood = (1 - observed) ** 2 * np.sum(table.observed / (table.at_risk * (table.at_risk - table.observed)))
    assert ours["log_oe_se"] == pytest.approx(np.sqrt(greenwood) / observed, rel=1e-10)


def test_calibration_slope_equals_lifelines(site: dict) -> None:
    t, e, eta = site["time"], site["event"], site["eta"]
    oracle = CoxPHFitter().fit(pd.DataFrame({"eta": eta, "t": t, "e": e}), "t", "e", fit_options={"precision": 1e-12})
    ours = calibration_slope(t, e, eta)
    assert ours["slope"] == pytest.approx(oracle.params_["eta"], abs=1e-6)
    assert ours["se"] == pytest.approx(oracle.standard_errors_["eta"], rel=1e-5)


def test_net_benefit_equals_lifelines_km_formula(site: dict) -> None:
    t, e, risk = site["time"], site["event"], site["risk"]
    thresholds = [float(q) for q in np.quantile(risk, [0.2, 0.4, 0.6, 0.8])]
    ours = net_benefit(t, e, risk, HORIZON, thresholds, K)
    assert None not in ours["model"]
    overall = KaplanMeierFitter().fit(t, e).survival_function_at_times(HORIZON).iloc[0]
    for p, nb, all_nb in zip(thresholds, ours["model"], ours["treat_all"]):
        treated = risk >= p
        s = KaplanMeierFitter().fit(t[treated], e[treated]).survival_function_at_times(HORIZON).iloc[0]
        f = treated.mean()
        assert nb == pytest.approx((1 - s) * f - s * f * p / (1 - p), abs=1e-12)
        assert all_nb == pytest.approx((1 - overall) - overall * p / (1 - p), abs=1e-12)


def test_small_groups_are_withheld_not_estimated(site: dict) -> None:
    t, e, risk = site["time"], site["event"], site["risk"]
    top = np.sort(risk)[-3]  # only 3 patients at or above this threshold
    ours = net_benefit(t, e, risk, HORIZON, [float(top)], K)
    assert ours["model"] == [None]
    assert observed_expected(t[:8], e[:8], risk[:8], HORIZON, k=50) is None


def test_blocked_pair_sums_give_the_same_answers(site: dict, monkeypatch) -> None:
    """Large sites are processed a few rows at a time: force tiny blocks and compare with the oracles again."""
    import site_client.evaluation.survival_concordance as concordance

    monkeypatch.setattr(concordance, "PAIRS_PER_BLOCK", 300)  # 2 rows per block for 140 patients
    t, e, eta, risk = site["time"], site["event"], site["eta"], site["risk"]
    full = _surv(t, e)
    assert harrell_c(t, e, eta)["c"] == pytest.approx(concordance_index(t, -eta, e), abs=1e-12)
    assert uno_c(t, e, eta, tau=HORIZON)["c"] == pytest.approx(concordance_index_ipcw(full, full, eta, tau=HORIZON)[0], abs=1e-12)
    assert cumulative_dynamic_auc(t, e, risk, HORIZON)["auc"] == pytest.approx(sk_auc(full, full, risk, [HORIZON])[0][0], abs=1e-12)
    keep = lambda i: np.arange(t.size) != i  # noqa: E731
    loo = [concordance_index(t[keep(i)], -eta[keep(i)], e[keep(i)]) for i in range(t.size)]
    assert harrell_c(t, e, eta)["se"] == pytest.approx(_jackknife(loo), rel=1e-9)
