"""Held-out ROC and reliability curves: k-anonymous step curves computed at the site, drawn by the coordinator.

Oracles: scikit-learn's ``roc_auc_score`` / ``roc_curve`` on the raw scores (the exact AUC and the exact ROC
vertices), numpy's trapezoid rule on the drawn vertices (the area a reader sees), statsmodels' GLM with logit(p)
as offset (calibration-in-the-large). Sizes are the demo's: 60 cases per site, its scanners' malignant fractions
and its protocol's k, histogram_bins and reliability_bins.
"""

from __future__ import annotations

import numpy as np
import pytest
import statsmodels.api as sm
from sklearn.metrics import roc_auc_score, roc_curve

from coordinator.study.evaluate import metrics_at
from coordinator.validation.curves import roc_from_steps
from demo.cohort import class_counts
from demo.run import DEMO_PROTOCOL
from demo.scanners import PRESET_SCANNERS
from protocols.loader import load_protocol
from site_client.evaluation import reliability_groups, roc_steps, suppress_small_cells
from site_client.study.evaluate import exact_auc

DEMO = load_protocol(DEMO_PROTOCOL)
K = DEMO.privacy.min_cell_count
BINS, RBINS = DEMO.validation.histogram_bins, DEMO.validation.reliability_bins
CASES_PER_SITE = 60  # demo.run.DemoSettings.cases_per_site


def demo_site(seed: int, scanner_index: int, separation: float = 1.4, ties: bool = False):
    """One demo-sized site: the scanner's class counts, scores with AUC about 0.84 (the demo report's range)."""
    rng = np.random.default_rng(seed)
    n_pos, n_neg = class_counts(CASES_PER_SITE, PRESET_SCANNERS[scanner_index % len(PRESET_SCANNERS)])
    y = np.r_[np.ones(n_pos, dtype=np.int64), np.zeros(n_neg, dtype=np.int64)]
    p = 1 / (1 + np.exp(-(separation * y - separation / 2 + rng.normal(size=y.size))))
    if ties:
        p = np.round(p, 1)  # many tied scores across classes
    order = rng.permutation(y.size)
    return p[order], y[order]


def drawn_area(fpr, tpr) -> float:
    return float(np.trapezoid(np.asarray(tpr, dtype=float), np.asarray(fpr, dtype=float)))


def released_roc(p, y):
    """What the site releases for the ROC (small-cell controlled as in evaluation_aggregates)."""
    return suppress_small_cells(roc_steps(p, y, K, BINS), K)


@pytest.mark.parametrize("ties", [False, True])
def test_drawn_roc_area_equals_the_exact_auc_within_the_stated_bound_at_demo_sizes(ties) -> None:
    for seed in range(200):
        p, y = demo_site(seed, seed, ties=ties)
        auc = roc_auc_score(y, p)
        drawn = roc_from_steps(released_roc(p, y), exact_auc(p, y)["auc"], K)
        assert drawn.reconciled
        assert (drawn.fpr[0], drawn.tpr[0], drawn.fpr[-1], drawn.tpr[-1]) == (0.0, 0.0, 1.0, 1.0)
        assert np.all(np.diff(drawn.fpr) >= -1e-15) and np.all(np.diff(drawn.tpr) >= -1e-15)  # a monotone curve
        assert abs(drawn_area(drawn.fpr, drawn.tpr) - auc) <= drawn.bound
        assert drawn.bound <= 0.02


def test_released_points_are_vertices_of_the_exact_roc() -> None:
    """The step ends are points of the exact empirical ROC (sklearn's vertices, ties as diagonal segments)."""
    for seed in range(50):
        p, y = demo_site(seed, seed, ties=seed % 2 == 0)
        agg = released_roc(p, y)
        fp = np.cumsum(agg["bin_n_neg"]) / (y == 0).sum()
        tp = np.cumsum(agg["bin_n_pos"]) / (y == 1).sum()
        fpr, tpr, _ = roc_curve(y, p, drop_intermediate=False)
        vertices = set(zip(np.round(fpr, 12), np.round(tpr, 12)))
        assert set(zip(np.round(fp, 12), np.round(tp, 12))) <= vertices


def test_without_reconciliation_the_chord_curve_is_within_its_step_bound_and_that_bound_is_what_forced_it() -> None:
    """The chord drawing (no exact AUC) is within ½ΣΔFP·ΔTP/(n⁺n⁻) of the exact AUC; at demo sizes that bound
    is far above 0.02, which is why the site curve is reconciled to the exact AUC."""
    bounds = []
    for seed in range(100):
        p, y = demo_site(seed, seed)
        chords = roc_from_steps(released_roc(p, y), None, K)
        assert not chords.reconciled
        assert abs(drawn_area(chords.fpr, chords.tpr) - roc_auc_score(y, p)) <= chords.bound + 1e-12
        bounds.append(chords.step_bound)
    assert np.median(bounds) > 0.02


def test_no_released_roc_or_reliability_step_holds_fewer_than_k_cases_of_a_class() -> None:
    """Adversarial inputs: ties, extreme separation, no separation, one class just above and below k."""
    rng = np.random.default_rng(3)
    cases = [demo_site(s, s, separation=sep, ties=t) for s in range(40) for sep, t in ((0.0, False), (6.0, False), (1.4, True))]
    for n_pos in (K - 1, K, K + 1, 2 * K - 1):
        y = np.r_[np.ones(n_pos, dtype=np.int64), np.zeros(40, dtype=np.int64)]
        cases.append((rng.uniform(size=y.size), y))
    cases.append((np.full(30, 0.5), np.r_[np.ones(10, dtype=np.int64), np.zeros(20, dtype=np.int64)]))
    for p, y in cases:
        small_class = min(int(y.sum()), int((1 - y).sum())) < K
        for agg in (released_roc(p, y), suppress_small_cells(reliability_groups(p, y, K, RBINS), K)):
            if small_class:
                assert agg["suppressed"] == 1 and "bin_n_pos" not in agg
                continue
            assert agg["suppressed"] == 0
            for cells in (agg["bin_n_pos"], agg["bin_n_neg"]):
                assert np.all((cells == 0) | (cells >= K)), cells
            assert agg["bin_n_pos"].sum() == y.sum() and agg["bin_n_neg"].sum() == (1 - y).sum()
        assert released_roc(p, y).get("bin_n_pos", np.zeros(BINS)).shape == (BINS,)  # shape from the protocol


def test_the_coordinator_refuses_to_draw_a_forged_step_below_k() -> None:
    forged = {"suppressed": 0, "k": K, "bin_n_pos": np.r_[K, K - 2, 9, np.zeros(BINS - 3)].astype(np.int64),
              "bin_n_neg": np.r_[0, K, 20, np.zeros(BINS - 3)].astype(np.int64)}
    with pytest.raises(ValueError, match=f"a curve step holds 1..{K - 1} patients of a class: not drawn"):
        roc_from_steps(forged, 0.8, K)


def test_study_metrics_draw_the_site_curve_and_fall_back_with_a_note_when_it_is_inconsistent() -> None:
    """metrics_at (the study's reader) draws the site's reconciled step curve; steps whose class totals differ
    from the site's AUC counts are not drawn."""
    from site_client.study.evaluate import evaluation_aggregates
    from types import SimpleNamespace

    p, y = demo_site(11, 1)
    context = SimpleNamespace(protocol=DEMO, site_name="site_b")
    aggs = evaluation_aggregates(p, y, context)
    m = metrics_at("site_b", aggs, DEMO.validation.decision_threshold, K)
    assert m.roc_source == "site steps, reconciled"
    assert abs(drawn_area(m.roc_fpr, m.roc_tpr) - roc_auc_score(y, p)) <= m.roc_bound <= 0.02
    assert m.reliability and all(pt.n >= K for pt in m.reliability)
    aggs["roc"] = dict(aggs["roc"], bin_n_pos=np.r_[aggs["roc"]["bin_n_pos"][:-1], 5])
    m = metrics_at("site_b", aggs, DEMO.validation.decision_threshold, K)
    assert m.roc_source == "k-merged histogram"
    assert any("class totals differ from the site's AUC counts" in note for note in m.notes)
    # a site that states k = 1 and releases a 2-patient step is held to the protocol's k
    n_pos, n_neg = int(y.sum()), int((1 - y).sum())
    forged = {"suppressed": 0, "k": 1, "bin_n_pos": np.r_[2, n_pos - 2, np.zeros(BINS - 2)].astype(np.int64),
              "bin_n_neg": np.r_[0, n_neg, np.zeros(BINS - 2)].astype(np.int64)}
    aggs["roc"] = forged
    m = metrics_at("site_b", aggs, DEMO.validation.decision_threshold, K)
    assert m.roc_source == "k-merged histogram"
    assert any(f"a curve step holds 1..{K - 1} patients of a class: not drawn" in note for note in m.notes)


def test_reliability_groups_agree_with_calibration_in_the_large() -> None:
    """The groups partition the patients: Σ n_g(observed_g − mean p_g) = Σy − Σp, and its sign is the sign of
    CITL (statsmodels GLM, logit(p) as offset, intercept only)."""
    from coordinator.validation.curves import reliability_from_groups

    for seed in range(30):
        p, y = demo_site(seed, seed)
        shift = (seed % 3 - 1) * 0.8  # over-, well- and under-predicting sites
        p = 1 / (1 + np.exp(-(np.log(p / (1 - p)) + shift)))
        agg = suppress_small_cells(reliability_groups(p, y, K, RBINS), K)
        points = reliability_from_groups(agg, K)
        gap = sum(pt.n * (pt.observed - pt.mean_predicted) for pt in points)
        assert gap == pytest.approx(y.sum() - p.sum(), abs=1e-9)
        citl = sm.GLM(y, np.ones((y.size, 1)), family=sm.families.Binomial(), offset=np.log(p / (1 - p))).fit().params[0]
        if abs(gap) > 1e-6:
            assert np.sign(citl) == np.sign(gap)
        assert sum(pt.n for pt in points) == y.size and len(points) >= 2
        means = [pt.mean_predicted for pt in points]
        assert means == sorted(means)  # groups follow the predictions


def test_the_study_run_draws_every_held_out_site_from_its_reconciled_step_curve(real_study) -> None:
    """run_study over the in-process transport (every site runs its own handler): each held-out site's figure
    curve is its released step curve, reconciled to its exact AUC, and its reliability groups hold >= k cases."""
    k = real_study.protocol.privacy.min_cell_count
    for variant, result in real_study.outcome.results.items():
        for fold in result.folds:
            for m in (fold.before, fold.after, fold.baseline):
                if m is None or m.auc is None:
                    continue
                assert m.roc_source == "site steps, reconciled", (variant, fold.heldout_site, m.notes)
                assert abs(drawn_area(m.roc_fpr, m.roc_tpr) - m.auc.auc) <= m.roc_bound <= 0.02
                assert m.reliability and all(pt.n >= k for pt in m.reliability)
