"""Class-conditional federated conformal: exact bisection, conservative histogram quantile, held-out coverage."""

from __future__ import annotations

import math

import numpy as np
import pytest

from coordinator.validation import (
    bisect_class_quantiles,
    combine_aggregates,
    conformal_stats,
    fcp_rank,
    quantile_from_histogram,
    thresholds_from_histograms,
)
from site_client.evaluation import (
    conformal_counts_at_most,
    conformal_histogram,
    prediction_set_coverage,
    prediction_set_sizes,
    suppress_small_cells,
)


def scores_by_class(sites):
    p = np.concatenate([s.p for s in sites])
    y = np.concatenate([s.y for s in sites])
    return np.sort(p[y == 0]), np.sort(1 - p[y == 1])  # s = 1 - p̂ of the true class


def test_fcp_rank_formula():
    assert fcp_rank(100, 4, 0.1) == math.ceil(0.9 * 104)
    assert fcp_rank(86, 4, 0.1) == 81  # 0.9 * 90 = 81.00000000000001 in floats: must not round up to 82


def test_bisection_equals_pooled_order_statistic_exactly(make_sites):
    sites = make_sites(20, [120, 90, 150])
    alpha = 0.1
    q_neg, q_pos = bisect_class_quantiles(
        lambda tn, tp: [conformal_counts_at_most(s.p, s.y, tn, tp) for s in sites], n_sites=3, alpha=alpha
    )
    neg, pos = scores_by_class(sites)
    assert q_neg == neg[fcp_rank(neg.size, 3, alpha) - 1]
    assert q_pos == pos[fcp_rank(pos.size, 3, alpha) - 1]


def test_histogram_quantile_is_conservative_and_within_one_bin(make_sites):
    sites = make_sites(21, [120, 90, 150])
    neg = combine_aggregates([conformal_histogram(s.p, s.y, 50, 0) for s in sites])
    pos = combine_aggregates([conformal_histogram(s.p, s.y, 50, 1) for s in sites])
    q_neg, q_pos, info = thresholds_from_histograms(neg, pos, n_sites=3, alpha=0.1)
    neg, pos = scores_by_class(sites)
    exact_neg, exact_pos = neg[info["k_neg"] - 1], pos[info["k_pos"] - 1]
    assert exact_neg <= q_neg < exact_neg + 1 / 50 + 1e-12
    assert exact_pos <= q_pos < exact_pos + 1 / 50 + 1e-12
    assert quantile_from_histogram([0, 0.5, 1], [2, 1], 4) == 1.0  # k* > N: always include the class


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
@pytest.mark.parametrize("method", ["histogram", "bisection"])
def test_heldout_coverage_with_exchangeable_sites(make_sites, seed, method):
    """Sites drawn from one distribution (no site shift): held-out coverage >= 1 - alpha within its CP CI."""
    alpha = 0.1
    sites = make_sites(100 + seed, [150, 200, 250, 180, 1500], shift=0.0)
    calib, heldout = sites[:4], sites[4]
    if method == "histogram":
        neg = combine_aggregates([suppress_small_cells(conformal_histogram(s.p, s.y, 100, 0), 5) for s in calib])
        pos = combine_aggregates([suppress_small_cells(conformal_histogram(s.p, s.y, 100, 1), 5) for s in calib])
        q_neg, q_pos, _ = thresholds_from_histograms(neg, pos, n_sites=4, alpha=alpha)
    else:
        q_neg, q_pos = bisect_class_quantiles(
            lambda tn, tp: [conformal_counts_at_most(s.p, s.y, tn, tp) for s in calib], n_sites=4, alpha=alpha
        )
    st = conformal_stats(alpha, q_neg, q_pos, prediction_set_coverage(heldout.p, heldout.y, q_neg, q_pos),
                         prediction_set_sizes(heldout.p, q_neg, q_pos))
    for cov in (st.coverage, st.coverage_neg, st.coverage_pos):  # marginal and per class (Mondrian)
        assert cov.ci_high >= 1 - alpha, f"coverage {cov.value:.3f} CI {cov.ci_low:.3f}-{cov.ci_high:.3f}"
        assert cov.method == "clopper-pearson"
    assert 1 <= st.mean_set_size <= 2
    assert st.rate_empty + st.rate_single + st.rate_both == pytest.approx(1.0)


def test_prediction_set_counts_equal_direct(make_sites):
    s = make_sites(30, [500])[0]
    q_neg, q_pos = 0.55, 0.62
    cov = prediction_set_coverage(s.p, s.y, q_neg, q_pos)
    size = prediction_set_sizes(s.p, q_neg, q_pos)
    has0 = (1 - (1 - s.p)) <= q_neg  # class 0 in the set iff 1 - p̂_0 <= q̂_0
    has1 = (1 - s.p) <= q_pos
    covered = np.where(s.y == 1, has1, has0)
    assert cov["n_covered"] == covered.sum() and cov["n_missed"] == (~covered).sum()
    assert cov["n_pos_covered"] == covered[s.y == 1].sum() and cov["n_neg_covered"] == covered[s.y == 0].sum()
    assert size["n_both"] == np.sum(has0 & has1) and size["n_empty"] == np.sum(~has0 & ~has1)
    assert size["n_single_pos"] == np.sum(~has0 & has1)
    st = conformal_stats(0.1, q_neg, q_pos, cov, size)
    assert st.mean_set_size == pytest.approx((has0.astype(int) + has1).mean())
    assert st.coverage.value == pytest.approx(covered.mean())


def test_suppressed_conformal_counts_are_reported_not_invented():
    st = conformal_stats(0.1, 0.5, 0.5, {"suppressed": 1, "k": 5}, None)
    assert st.coverage is None and st.mean_set_size is None
    assert "coverage counts suppressed" in st.note and "no set-size counts" in st.note


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_site_histogram_quantile_is_conservative_and_not_worse_than_common_edges(make_sites, seed):
    from coordinator.validation import thresholds_from_site_histograms

    sites = make_sites(50 + seed, [90, 130, 160], strength=2.0)
    alpha = 0.2
    per_class = [[suppress_small_cells(conformal_histogram(s.p, s.y, 100, lab), 5) for s in sites] for lab in (0, 1)]
    q_neg, q_pos, info = thresholds_from_site_histograms(per_class[0], per_class[1], alpha)
    neg, pos = scores_by_class(sites)
    assert q_neg >= neg[info["k_neg"] - 1] and q_pos >= pos[info["k_pos"] - 1]
    cn, cp_, _ = thresholds_from_histograms(combine_aggregates(per_class[0]), combine_aggregates(per_class[1]), 3, alpha)
    assert q_neg <= cn and q_pos <= cp_


@pytest.mark.parametrize(("missed", "k"), [(1, 5), (3, 5), (4, 5), (2, 3)])
def test_coverage_with_few_misses_is_released_censored_and_its_interval_holds_the_truth(missed, k):
    """Fewer than k missed cases: the site releases n and '<k missed', never the count; the coordinator's
    interval contains the exact coverage and the exact Clopper-Pearson interval (scipy) of the true count."""
    from scipy import stats

    from site_client.evaluation.conformal import released_set_statistics
    from site_client.evaluation.privacy import emitted_count_cells

    n = 30
    y = np.array([1] * 12 + [0] * 18)
    p = np.where(y == 1, 0.9, 0.1)
    p[:missed] = 0.05  # positives scored as clearly negative: their set {0} misses the true class
    coverage, _ = released_set_statistics(p, y, q_neg=0.5, q_pos=0.5, k=k)
    assert coverage["censored"] == 1 and coverage["missed_below_k"] == 1 and "n_missed" not in coverage
    cells = emitted_count_cells(coverage)
    assert np.all((cells == 0) | (cells >= k))
    stats_ = conformal_stats(0.1, 0.5, 0.5, coverage, None)
    truth = (n - missed) / n
    cov = stats_.coverage
    assert cov.value <= truth <= (n - 1) / n and cov.method == "clopper-pearson, censored: at least"
    x = n - missed
    exact_lo = stats.beta.ppf(0.025, x, n - x + 1)
    exact_hi = stats.beta.ppf(0.975, x + 1, n - x)
    assert cov.ci_low <= exact_lo + 1e-12 and exact_hi <= cov.ci_high + 1e-12
    assert "censored" in stats_.note and f"fewer than k = {k}" in stats_.note


def test_coverage_with_fewer_than_k_cases_stays_suppressed():
    from site_client.evaluation.conformal import released_set_statistics

    coverage, _ = released_set_statistics(np.array([0.9, 0.2, 0.05]), np.array([1, 0, 1]), 0.5, 0.5, k=5)
    assert coverage == {"suppressed": 1, "k": 5}


def test_a_class_without_any_released_histogram_is_in_every_set(make_sites):
    """No training site had k cases of the positive class: q̂_pos = 1 (the FCP rank exceeds the count of 0),
    the negative threshold is still the pooled quantile of the sites that did release theirs."""
    from coordinator.validation import thresholds_from_site_histograms

    sites = make_sites(4, [60, 70, 80])
    neg = [conformal_histogram(s.p, s.y, 20, 0) for s in sites]
    q_neg, q_pos, info = thresholds_from_site_histograms(neg, [], 0.1)
    q_neg_both, _, _ = thresholds_from_site_histograms(neg, [conformal_histogram(s.p, s.y, 20, 1) for s in sites], 0.1)
    assert q_pos == 1.0 and info["n_pos"] == 0
    assert q_neg == q_neg_both < 1.0
    in_neg, in_pos = (s <= q for s, q in ((np.array([0.2, 0.9]), q_neg), (1 - np.array([0.2, 0.9]), q_pos)))
    assert in_pos.all()


def test_coverage_with_few_covered_is_an_upper_bound():
    """Fewer than k covered (a badly transported model): released as '<k covered'; the value is the upper
    bound (k-1)/n, the interval holds the exact Clopper-Pearson interval (scipy) of the true count."""
    from scipy import stats

    from site_client.evaluation.conformal import released_set_statistics

    n, k, covered = 20, 5, 2
    y = np.ones(n, dtype=int)
    p = np.full(n, 0.05)
    p[:covered] = 0.95  # only these positives get a set holding their class
    coverage, _ = released_set_statistics(p, y, q_neg=0.5, q_pos=0.5, k=k)
    assert coverage["censored"] == 1 and coverage["covered_below_k"] == 1 and "n_covered" not in coverage
    cov = conformal_stats(0.1, 0.5, 0.5, coverage, None).coverage
    assert cov.method == "clopper-pearson, censored: at most" and covered / n <= cov.value == (k - 1) / n
    assert cov.ci_low <= stats.beta.ppf(0.025, covered, n - covered + 1) + 1e-12
    assert stats.beta.ppf(0.975, covered + 1, n - covered) <= cov.ci_high + 1e-12
