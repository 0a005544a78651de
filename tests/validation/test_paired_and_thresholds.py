"""Paired ΔAUC (DeLong) and the decision threshold on the code path the study runs at a held-out site.

Oracles: Hanley & McNeil (1982, Radiology 143:29) Table 1, 109 CT ratings (58 normal: 33/6/6/11/2 on ratings
1-5; 51 abnormal: 3/2/2/11/33): published A = 0.893, SE = 0.032; an explicit O(n⁺n⁻) kernel implementation of
DeLong's structural components (independent of the searchsorted placements); the confusion table computed
directly with numpy.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from coordinator.validation.results import AUCEstimate, FoldResult, SiteMetrics, StudyResult
from coordinator.validation.study import add_meta_analyses, complete_fold
from fedmath.auc import continuity_corrected, delong_auc, hanley_mcneil_variance, paired_delong
from protocols.models import is_radiomic, volume_partner
from site_client.study.evaluate import _paired, evaluation_aggregates, paired_models


def hanley_mcneil_ratings():
    neg, pos = [33, 6, 6, 11, 2], [3, 2, 2, 11, 33]
    score = np.concatenate([np.repeat(np.arange(1, 6), neg), np.repeat(np.arange(1, 6), pos)]).astype(float)
    y = np.r_[np.zeros(58, dtype=int), np.ones(51, dtype=int)]
    return score, y


def test_auc_and_variance_match_hanley_mcneil_1982():
    score, y = hanley_mcneil_ratings()
    auc, se = delong_auc(score, y)
    assert round(auc, 3) == 0.893
    assert round(hanley_mcneil_variance(auc, 51, 58) ** 0.5, 3) == 0.032
    assert abs(se - 0.032) < 0.003  # DeLong's nonparametric SE is close to the published exponential-model SE


def kernel_components(score, y):
    """DeLong's structural components from the explicit kernel ψ(x, z) = 1[x > z] + ½·1[x = z]."""
    x, z = score[y == 1], score[y == 0]
    psi = (x[:, None] > z[None, :]) + 0.5 * (x[:, None] == z[None, :])
    return psi.mean(axis=1), psi.mean(axis=0)


@pytest.mark.parametrize("rho", [0.5, 0.8, 0.95])
def test_paired_delong_matches_kernel_and_is_narrower_than_unpaired(rho):
    rng = np.random.default_rng(int(rho * 100))
    n = 45
    y = (rng.uniform(size=n) < 0.4).astype(int)
    y[:2], y[2:4] = 1, 0
    a = rng.normal(size=n) + 1.0 * y
    b = rho * a + np.sqrt(1 - rho**2) * rng.normal(size=n) + 0.3 * y
    b = np.round(b, 1)  # ties
    out = paired_delong(a, b, y)
    (a10, a01), (b10, b01) = kernel_components(a, y), kernel_components(b, y)
    n1, n0 = y.sum(), n - y.sum()
    var_d = np.cov(a10 - b10).item() / n1 + np.cov(a01 - b01).item() / n0
    assert out["difference"] == pytest.approx(roc_auc_score(y, a) - roc_auc_score(y, b), abs=1e-12)
    assert out["se_difference"] == pytest.approx(np.sqrt(var_d), rel=1e-10)
    unpaired = np.sqrt(delong_auc(a, y)[1] ** 2 + delong_auc(b, y)[1] ** 2)
    assert out["se_difference"] < unpaired


def test_the_volume_partner_of_a_radiomic_model_keeps_its_fold_and_variant():
    """One home for the pairing every side uses (paired ΔAUC, survival gate, site and coordinator)."""
    assert volume_partner("f1/harmonised/radiomic") == "f1/harmonised/volume"
    assert volume_partner("_all/raw/radiomic") == "_all/raw/volume"
    assert is_radiomic("f1/raw/radiomic") and not is_radiomic("f1/raw/volume")
    with pytest.raises(ValueError, match="not a model key: 'f1/radiomic'"):
        volume_partner("f1/radiomic")


def test_site_releases_paired_difference_and_study_uses_it():
    rng = np.random.default_rng(3)
    y = np.r_[np.ones(30, dtype=int), np.zeros(40, dtype=int)]
    p_rad = 1 / (1 + np.exp(-(rng.normal(size=70) + 1.2 * y)))
    p_vol = 1 / (1 + np.exp(-(0.9 * np.log(p_rad / (1 - p_rad)) + rng.normal(0, 0.4, 70))))
    scores = {"f1/harmonised/radiomic": p_rad, "f1/harmonised/volume": p_vol, "f1/raw/radiomic": p_rad}
    assert paired_models(scores) == [("f1/harmonised/radiomic", "f1/harmonised/volume")]
    agg = _paired(p_rad, p_vol, y, 5)
    ref = paired_delong(p_rad, p_vol, y)
    auc = AUCEstimate(ref["auc_a"], 0.05, 0.6, 0.8, 0.0, 30, 40)
    base = AUCEstimate(ref["auc_b"], 0.05, 0.6, 0.8, 0.0, 30, 40)
    fold = complete_fold(FoldResult("s1", ["s2"], SiteMetrics("s1", 70, 30, auc=auc),
                                    baseline=SiteMetrics("s1", 70, 30, auc=base)), paired=agg)
    assert fold.auc_difference.method == "paired DeLong computed at the site"
    assert fold.auc_difference.se == pytest.approx(ref["se_difference"], rel=1e-12)
    # suppressed (a class below k): the unpaired fallback, labelled
    fold2 = complete_fold(FoldResult("s1", ["s2"], SiteMetrics("s1", 70, 30, auc=auc),
                                     baseline=SiteMetrics("s1", 70, 30, auc=base)), paired=_paired(p_rad, p_vol, y, 31))
    assert fold2.auc_difference.method.startswith("unpaired")


def test_auc_one_site_is_kept_with_continuity_correction():
    a, se, adjusted = continuity_corrected(1.0, 0.0, 20, 25)
    assert adjusted and a == pytest.approx(1 - 1 / (2 * 20 * 25)) and se > 0
    folds = [FoldResult(f"s{i}", [], SiteMetrics(f"s{i}", 45, 20, auc=AUCEstimate(v, s, 0, 1, 0, 20, 25)))
             for i, (v, s) in enumerate([(0.80, 0.05), (0.85, 0.04), (1.0, 0.0), (0.78, 0.06)])]
    study = add_meta_analyses(StudyResult("t", {}, "id", [], folds, 0.1, 5))
    assert study.meta["auc"].k == 4 and study.meta["auc"].adjusted == ["s2"]
    assert any("continuity-corrected at s2" in n for n in study.notes)


def _context(threshold, k=5):
    v = SimpleNamespace(decision_curve_thresholds=[0.1, 0.2, 0.3, 0.4, 0.6], decision_threshold=threshold,
                        histogram_bins=50, reliability_bins=10)
    return SimpleNamespace(protocol=SimpleNamespace(validation=v, privacy=SimpleNamespace(min_cell_count=k)), site_name="s")


@pytest.mark.parametrize("seed", range(30))
def test_threshold_kept_wherever_its_confusion_table_passes_k(make_sites, seed):
    from coordinator.validation import threshold_metrics

    rng = np.random.default_rng(seed)
    s = make_sites(seed, [int(rng.integers(60, 151))])[0]
    t, k = 0.45, 5
    agg = evaluation_aggregates(s.p, s.y, _context(t, k))["confusion"]
    pred = s.p >= t
    table = [int(np.sum(pred & (s.y == 1))), int(np.sum(pred & (s.y == 0))),
             int(np.sum(~pred & (s.y == 1))), int(np.sum(~pred & (s.y == 0)))]
    passes = all(c == 0 or c >= k for c in table)
    if passes:
        m = threshold_metrics(agg, t)
        tp, fp, fn, tn = table
        assert m["sensitivity"].x == tp and m["sensitivity"].n == tp + fn
        assert m["specificity"].x == tn and m["specificity"].n == tn + fp
    else:
        assert agg.get("suppressed", 0) or not np.any(np.isclose(agg["thresholds"], t))
