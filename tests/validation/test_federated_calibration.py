"""Counts, Brier, O/E, ECE, net benefit and Newton calibration fits against pooled references."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import optimize, stats
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import brier_score_loss, confusion_matrix

from coordinator.validation import (
    brier_scores,
    clopper_pearson_ci,
    combine_aggregates,
    fit_logistic_calibration,
    fit_platt,
    fit_temperature,
    net_benefit,
    observed_expected,
    reliability,
    threshold_metrics,
    wilson_ci,
)
from site_client.evaluation import (
    calibration_sums,
    confusion_counts,
    log_temperature_terms,
    logistic_calibration_terms,
    reliability_bins,
)

SIZES = [150, 220, 300, 180]


def pooled(sites):
    return np.concatenate([s.p for s in sites]), np.concatenate([s.y for s in sites])


def test_confusion_counts_and_threshold_metrics_equal_pooled(make_sites):
    sites = make_sites(10, SIZES)
    grid = [0.1, 0.2, 0.35, 0.5, 0.7]
    agg = combine_aggregates([confusion_counts(s.p, s.y, grid, site=s.name) for s in sites])
    p, y = pooled(sites)
    for i, t in enumerate(grid):
        tn, fp, fn, tp = confusion_matrix(y, (p >= t).astype(int), labels=[0, 1]).ravel()
        assert (agg["n_tp"][i], agg["n_fp"][i], agg["n_fn"][i], agg["n_tn"][i]) == (tp, fp, fn, tn)
    m = threshold_metrics(agg, 0.5, "clopper-pearson")
    tn, fp, fn, tp = confusion_matrix(y, (p >= 0.5).astype(int)).ravel()
    assert m["sensitivity"].value == tp / (tp + fn)
    assert m["specificity"].value == tn / (tn + fp)
    assert m["ppv"].value == tp / (tp + fp)
    assert m["npv"].value == tn / (tn + fn)
    ref = stats.binomtest(int(tp), int(tp + fn)).proportion_ci(0.95, method="exact")
    assert (m["sensitivity"].ci_low, m["sensitivity"].ci_high) == pytest.approx((ref.low, ref.high), abs=1e-10)


@pytest.mark.parametrize("x,n", [(0, 10), (3, 10), (10, 10), (57, 130)])
def test_intervals_match_scipy(x, n):
    w = stats.binomtest(x, n).proportion_ci(0.95, method="wilson")
    e = stats.binomtest(x, n).proportion_ci(0.95, method="exact")
    assert wilson_ci(x, n) == pytest.approx((w.low, w.high), abs=1e-10)
    assert clopper_pearson_ci(x, n) == pytest.approx((e.low, e.high), abs=1e-10)


def test_brier_oe_and_ece_equal_pooled(make_sites):
    sites = make_sites(11, SIZES)
    p, y = pooled(sites)
    cal = combine_aggregates([calibration_sums(s.p, s.y) for s in sites])
    bs, sbs = brier_scores(cal)
    assert bs == pytest.approx(brier_score_loss(y, p), abs=1e-13)
    assert sbs == pytest.approx(1 - brier_score_loss(y, p) / (y.mean() * (1 - y.mean())), abs=1e-12)
    assert observed_expected(cal).value == pytest.approx(y.sum() / p.sum(), abs=1e-13)
    rel = combine_aggregates([reliability_bins(s.p, s.y, 10) for s in sites])
    ece, points = reliability(rel)
    # direct ECE on the same 10 equal-width bins, pooled
    b = np.minimum((p * 10).astype(int), 9)
    ref = sum(abs(y[b == m].sum() - p[b == m].sum()) for m in range(10)) / p.size
    assert ece == pytest.approx(ref, abs=1e-13)
    for pt in points:
        sel = b == int(round(pt.bin_low * 10))
        assert pt.n == sel.sum()
        assert pt.observed == pytest.approx(y[sel].mean(), abs=1e-14)
        assert pt.mean_predicted == pytest.approx(p[sel].mean(), abs=1e-14)
        assert pt.ci_low <= pt.observed <= pt.ci_high


def test_net_benefit_equals_pooled(make_sites):
    sites = make_sites(12, SIZES)
    grid = [0.05, 0.1, 0.2, 0.3, 0.5]
    dc = net_benefit(combine_aggregates([confusion_counts(s.p, s.y, grid) for s in sites]))
    p, y = pooled(sites)
    n = p.size
    for t, nb, all_ in zip(grid, dc.net_benefit, dc.treat_all):
        tp = np.sum((p >= t) & (y == 1))
        fp = np.sum((p >= t) & (y == 0))
        assert nb == pytest.approx(tp / n - fp / n * t / (1 - t), abs=1e-14)
        assert all_ == pytest.approx(y.mean() - (1 - y.mean()) * t / (1 - t), abs=1e-14)


def _logit(p):
    return np.log(p) - np.log1p(-p)


def test_calibration_intercept_slope_match_unpenalised_sklearn(make_sites):
    sites = make_sites(13, SIZES)
    fit = fit_logistic_calibration(lambda a, b: [logistic_calibration_terms(s.p, s.y, a, b) for s in sites])
    p, y = pooled(sites)
    eta = _logit(p)
    lr = LogisticRegression(C=np.inf, tol=1e-12, max_iter=10_000).fit(eta[:, None], y)
    assert fit.converged
    assert fit.intercept.value == pytest.approx(lr.intercept_[0], abs=1e-6)
    assert fit.slope.value == pytest.approx(lr.coef_[0, 0], abs=1e-6)
    # SEs: inverse observed information at sklearn's optimum, computed here directly
    mu = 1 / (1 + np.exp(-(lr.intercept_[0] + lr.coef_[0, 0] * eta)))
    x = np.column_stack([np.ones_like(eta), eta])
    cov = np.linalg.inv(x.T @ (x * (mu * (1 - mu))[:, None]))
    assert fit.intercept.se == pytest.approx(np.sqrt(cov[0, 0]), rel=1e-5)
    assert fit.slope.se == pytest.approx(np.sqrt(cov[1, 1]), rel=1e-5)
    assert fit.slope.ci_low < fit.slope.value < fit.slope.ci_high
    # the generator miscalibrates with slope 0.8 on the truth: the model is overconfident (slope < 1)
    assert fit.slope.value < 1


def test_calibration_in_the_large_matches_scipy(make_sites):
    sites = make_sites(14, SIZES)
    fit = fit_logistic_calibration(lambda a, b: [logistic_calibration_terms(s.p, s.y, a, b) for s in sites], slope_fixed=1.0)
    p, y = pooled(sites)
    eta = _logit(p)
    res = optimize.minimize_scalar(lambda a: np.sum(np.logaddexp(0, a + eta) - y * (a + eta)), bracket=(-1, 1), tol=1e-12)
    assert fit.intercept.value == pytest.approx(res.x, abs=1e-6)
    assert fit.slope.value == 1.0


def test_temperature_matches_scipy_optimum(make_sites):
    sites = make_sites(15, SIZES)
    rec = fit_temperature(lambda u: [log_temperature_terms(s.p, s.y, u) for s in sites])
    p, y = pooled(sites)
    eta = _logit(p)
    res = optimize.minimize_scalar(
        lambda t: np.sum(np.logaddexp(0, eta / t) - y * eta / t), bounds=(0.05, 20), method="bounded", options={"xatol": 1e-12}
    )
    assert rec.converged
    assert rec.params["temperature"] == pytest.approx(res.x, abs=1e-6)
    assert rec.params["temperature"] > 1  # overconfident model is softened


def test_platt_recalibration_improves_calibration_slope_on_new_data(make_sites):
    train = make_sites(16, [300, 300, 300])
    rec = fit_platt(lambda a, b: [logistic_calibration_terms(s.p, s.y, a, b) for s in train])
    test = make_sites(17, [2000], shift=0.0)[0]
    before = fit_logistic_calibration(lambda a, b: [logistic_calibration_terms(test.p, test.y, a, b)])
    after = fit_logistic_calibration(lambda a, b: [logistic_calibration_terms(rec.apply(test.p), test.y, a, b)])
    assert abs(after.slope.value - 1) < abs(before.slope.value - 1)


def test_wilson_interval_holds_its_estimate_at_the_ends():
    """x = 0 and x = n: rounding once put the lower bound 1e-17 above 0, which made matplotlib refuse the
    reliability diagram of a bin without events (negative error bar) and failed the MLflow logging."""
    from coordinator.validation.intervals import wilson_ci
    from scipy import stats

    for n in range(1, 120):
        for x in range(n + 1):
            lo, hi = wilson_ci(x, n)
            assert lo <= x / n <= hi
        assert wilson_ci(0, n)[0] == 0.0 and wilson_ci(n, n)[1] == 1.0
    # the interior agrees with the textbook formula computed independently (statsmodels' definition)
    z = stats.norm.ppf(0.975)
    x, n = 7, 23
    centre = (x + z * z / 2) / (n + z * z)
    half = z * np.sqrt(n) / (n + z * z) * np.sqrt(x / n * (1 - x / n) + z * z / (4 * n))
    assert wilson_ci(x, n) == pytest.approx((centre - half, centre + half), abs=1e-12)
