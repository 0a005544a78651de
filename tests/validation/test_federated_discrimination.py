"""Histogram AUC, DeLong, ROC and ΔAUC against independent pooled references (sklearn, direct DeLong)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score, roc_curve

from coordinator.validation import auc_difference_unpaired, auc_from_histograms, combine_aggregates, roc_from_histograms
from site_client.evaluation import class_histograms, suppress_small_cells


def direct_delong(scores: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """DeLong 1988 from all positive × negative pairs (placement values), written independently."""
    pos, neg = scores[y == 1], scores[y == 0]
    psi = (pos[:, None] > neg[None, :]).astype(float) + 0.5 * (pos[:, None] == neg[None, :])
    auc = psi.mean()
    v10, v01 = psi.mean(axis=1), psi.mean(axis=0)
    var = v10.var(ddof=1) / pos.size + v01.var(ddof=1) / neg.size
    return float(auc), float(np.sqrt(var))


def pooled_bins(p: np.ndarray, edges: np.ndarray) -> np.ndarray:
    return np.digitize(p, edges[1:-1])  # bin b holds [e_b, e_{b+1}); 1.0 goes to the last bin


@pytest.mark.parametrize("seed,bins", [(0, 50), (1, 20), (2, 100)])
def test_histogram_auc_equals_pooled_binned_and_raw_within_bound(make_sites, seed, bins):
    sites = make_sites(seed, [150, 220, 300, 180])
    aggs = [class_histograms(s.p, s.y, bins, site=s.name) for s in sites]
    pooled = combine_aggregates(aggs, [s.name for s in sites])
    est = auc_from_histograms(pooled["bin_n_neg"], pooled["bin_n_pos"])
    p = np.concatenate([s.p for s in sites])
    y = np.concatenate([s.y for s in sites])
    binned = pooled_bins(p, pooled["edges"])
    assert est.auc == pytest.approx(roc_auc_score(y, binned), abs=1e-12)
    raw = roc_auc_score(y, p)
    assert abs(raw - est.auc) <= est.binning_bound + 1e-15
    assert est.binning_bound < 0.02  # the bound is informative at these bin counts
    auc_d, se_d = direct_delong(binned.astype(float), y)
    assert est.auc == pytest.approx(auc_d, abs=1e-12)
    assert est.se == pytest.approx(se_d, rel=1e-10)
    assert est.ci_low < est.auc < est.ci_high
    assert (est.n_pos, est.n_neg) == (int(y.sum()), int((1 - y).sum()))


def test_merged_histogram_auc_is_the_auc_of_the_coarser_bins_and_bound_grows(make_sites):
    sites = make_sites(3, [60, 45, 80])
    k = 5
    raw = [class_histograms(s.p, s.y, 50, site=s.name) for s in sites]
    merged = [suppress_small_cells(a, k) for a in raw]
    pooled = combine_aggregates(merged, [s.name for s in sites])
    fine = combine_aggregates(raw)
    est = auc_from_histograms(pooled["bin_n_neg"], pooled["bin_n_pos"])
    est_fine = auc_from_histograms(fine["bin_n_neg"], fine["bin_n_pos"])
    p = np.concatenate([s.p for s in sites])
    y = np.concatenate([s.y for s in sites])
    assert pooled["edges"].size < fine["edges"].size
    assert est.auc == pytest.approx(roc_auc_score(y, pooled_bins(p, pooled["edges"])), abs=1e-12)
    assert est.binning_bound >= est_fine.binning_bound
    assert abs(roc_auc_score(y, p) - est.auc) <= est.binning_bound + 1e-15


def test_roc_points_match_sklearn_at_bin_edges(make_sites):
    s = make_sites(4, [400])[0]
    agg = class_histograms(s.p, s.y, 20)
    edges, fpr, tpr = roc_from_histograms(agg["edges"], agg["bin_n_neg"], agg["bin_n_pos"])
    binned = pooled_bins(s.p, agg["edges"])
    ref_fpr, ref_tpr, thr = roc_curve(s.y, binned, drop_intermediate=False)
    # sklearn thresholds are bin indices b (predict positive iff bin >= b) = our edge e_b
    for f, t, b in zip(ref_fpr[1:], ref_tpr[1:], thr[1:]):
        assert fpr[int(b)] == pytest.approx(f, abs=1e-12) and tpr[int(b)] == pytest.approx(t, abs=1e-12)


def test_auc_difference_unpaired_is_conservative_for_correlated_models(make_sites):
    s = make_sites(5, [600])[0]
    rng = np.random.default_rng(0)
    baseline = 1 / (1 + np.exp(-(np.log(s.p / (1 - s.p)) * 0.5 + rng.normal(0, 1.0, s.p.size))))
    edges = 100
    a = class_histograms(s.p, s.y, edges)
    b = class_histograms(baseline, s.y, edges)
    ea, eb = auc_from_histograms(a["bin_n_neg"], a["bin_n_pos"]), auc_from_histograms(b["bin_n_neg"], b["bin_n_pos"])
    diff = auc_difference_unpaired(ea, eb)
    assert diff.difference == pytest.approx(ea.auc - eb.auc)
    # paired DeLong on the same binned scores (independent computation): covariance of placement values
    ba, bb = pooled_bins(s.p, a["edges"]), pooled_bins(baseline, b["edges"])
    pos, neg = s.y == 1, s.y == 0

    def placements(sc):
        psi = (sc[pos][:, None] > sc[neg][None, :]) + 0.5 * (sc[pos][:, None] == sc[neg][None, :])
        return psi.mean(axis=1), psi.mean(axis=0)

    (a10, a01), (b10, b01) = placements(ba.astype(float)), placements(bb.astype(float))
    var_paired = (np.var(a10 - b10, ddof=1) / pos.sum()) + (np.var(a01 - b01, ddof=1) / neg.sum())
    assert np.cov(a10, b10)[0, 1] > 0
    assert diff.se >= np.sqrt(var_paired)
    assert diff.ci_low < diff.difference < diff.ci_high


def test_auc_needs_two_cases_per_class():
    with pytest.raises(ValueError, match="2 cases per class, got 1 positive"):
        auc_from_histograms([3, 4, 0], [0, 1, 0])


def test_site_histogram_auc_with_differently_merged_sites(make_sites):
    """Per-site merged edges: equals a direct pair-by-pair DeLong with ½ for overlapping intervals, the bound
    holds against the raw pooled AUC, and without merging it equals the common-grid formula."""
    from coordinator.validation import auc_from_site_histograms

    sites = make_sites(8, [70, 90, 120])
    raw = [class_histograms(s.p, s.y, 50) for s in sites]
    merged = [suppress_small_cells(a, 6) for a in raw]
    est = auc_from_site_histograms(merged)
    # each patient's interval = its site's merged bin
    lo, hi, ys = [], [], []
    for s, m in zip(sites, merged):
        b = pooled_bins(s.p, m["edges"])
        lo.append(m["edges"][b]); hi.append(m["edges"][b + 1]); ys.append(s.y)
    lo, hi, y = np.concatenate(lo), np.concatenate(hi), np.concatenate(ys)
    P, N = y == 1, y == 0
    above = lo[P][:, None] >= hi[N][None, :]
    below = hi[P][:, None] <= lo[N][None, :]
    psi = above + 0.5 * ~(above | below)
    v10, v01 = psi.mean(axis=1), psi.mean(axis=0)
    assert est.auc == pytest.approx(psi.mean(), abs=1e-12)
    assert est.se == pytest.approx(np.sqrt(v10.var(ddof=1) / P.sum() + v01.var(ddof=1) / N.sum()), rel=1e-10)
    p_all = np.concatenate([s.p for s in sites])
    assert abs(roc_auc_score(y, p_all) - est.auc) <= est.binning_bound + 1e-15
    common = auc_from_histograms(*(combine_aggregates(merged)[k] for k in ("bin_n_neg", "bin_n_pos")))
    assert est.binning_bound <= common.binning_bound + 1e-15  # own edges never lose resolution
    same = auc_from_site_histograms(raw)
    ref = auc_from_histograms(*(combine_aggregates(raw)[k] for k in ("bin_n_neg", "bin_n_pos")))
    assert (same.auc, same.se, same.binning_bound) == pytest.approx((ref.auc, ref.se, ref.binning_bound), rel=1e-12)


def test_paired_auc_difference_at_site_equals_direct_paired_delong(make_sites):
    from coordinator.validation import auc_difference_from_site
    from site_client.evaluation import paired_auc_difference

    s = make_sites(9, [400])[0]
    rng = np.random.default_rng(1)
    base = np.round(1 / (1 + np.exp(-(np.log(s.p / (1 - s.p)) * 0.5 + rng.normal(0, 1.0, s.p.size)))), 2)  # ties
    agg = suppress_small_cells(paired_auc_difference(s.p, base, s.y, site="x"), 5)
    diff = auc_difference_from_site(agg)
    pos, neg = s.y == 1, s.y == 0

    def placements(sc):
        psi = (sc[pos][:, None] > sc[neg][None, :]) + 0.5 * (sc[pos][:, None] == sc[neg][None, :])
        return psi.mean(axis=1), psi.mean(axis=0)

    (a10, a01), (b10, b01) = placements(s.p), placements(base)
    se = np.sqrt(np.var(a10 - b10, ddof=1) / pos.sum() + np.var(a01 - b01, ddof=1) / neg.sum())
    assert diff.difference == pytest.approx(roc_auc_score(s.y, s.p) - roc_auc_score(s.y, base), abs=1e-12)
    assert diff.se == pytest.approx(se, rel=1e-10)
    assert agg["auc_baseline"] == pytest.approx(roc_auc_score(s.y, base), abs=1e-12)
    # the unpaired variance is wider here (positively correlated models)
    assert diff.se < np.sqrt(a10.var(ddof=1) / pos.sum() + a01.var(ddof=1) / neg.sum()
                             + b10.var(ddof=1) / pos.sum() + b01.var(ddof=1) / neg.sum())
    with pytest.raises(ValueError, match="p_baseline at site 'x' has 3 rows, p_model 4"):
        paired_auc_difference([0.1, 0.2, 0.3, 0.4], [0.1, 0.2, 0.3], [0, 1, 0, 1], site="x")
