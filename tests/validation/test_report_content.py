"""What the report says, from the study the product ran (``run_study``, in-process transport; no MLflow needed):
the headline AUC is the random-effects one, a pooled histogram AUC with a binning bound above 0.02 is not printed,
CITL and slope are both shown, censored coverage stays out of the meta-analysis, harmonisation is explained."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
from types import SimpleNamespace

from coordinator.report import BINNING_BOUND_LIMIT, build_sections, render_markdown
from coordinator.validation.results import Proportion, to_jsonable
from coordinator.validation.study import add_meta_analyses


def _run(variant="harmonised", variants="harmonised,raw"):
    return SimpleNamespace(data=SimpleNamespace(params={}, tags={"variant": variant, "variants": variants}),
                           info=SimpleNamespace(run_id="r1"))


def _markdown(study, others=None):
    return render_markdown("t", build_sections(to_jsonable(study), _run(), Path("/nonexistent"), {}, others))


def test_headline_is_random_effects_and_flagged_pooled_auc_is_not_printed(study_result):
    study, _ = study_result
    study = copy.deepcopy(study)
    md = _markdown(study)
    re_auc = study.meta["auc"]
    assert re_auc.method == "REML" and re_auc.ci_method == "HKSJ"
    assert f"random effects over {re_auc.k} held-out sites (headline) | {re_auc.estimate:.3f}" in md
    assert "Hartung–Knapp–Sidik–Jonkman" in md and "Q-profile" in md
    pooled = study.pooled.auc
    if pooled.binning_bound > BINNING_BOUND_LIMIT:
        assert f"not reported (binning bound ±{pooled.binning_bound:.3f}" in md
    # force a coarse pooled histogram: the number must not appear as a result
    study.pooled.auc = type(pooled)(0.557, 0.05, 0.45, 0.66, 0.41, pooled.n_pos, pooled.n_neg)
    md = _markdown(study)
    assert "0.557 (" not in md and "not reported (binning bound ±0.410 > 0.02)" in md


def test_citl_and_slope_are_both_reported_and_meta_analysed(study_result):
    """The held-out sites' own fits, as the study computes them (local_calibration_fit -> calibration_fit_from_site)."""
    from coordinator.validation.calibration import calibration_fit_from_site
    from site_client.evaluation import local_calibration_fit

    study, cases = study_result
    study = copy.deepcopy(study)
    for f in study.folds:
        s = cases[f.heldout_site]
        f.before.calibration = calibration_fit_from_site(local_calibration_fit(s.p, s.y, s.name))
    study.meta.clear()
    add_meta_analyses(study)
    md = _markdown(study)
    assert "calibration-in-the-large (95% CI)" in md and "calibration slope (95% CI)" in md
    assert study.meta["citl"].k == len(study.folds) and study.meta["cal_slope"].k == len(study.folds)
    cal = study.folds[0].before.calibration
    assert f"{cal.citl.value:.3f}" in md and f"{cal.slope.value:.3f}" in md
    assert f"{study.meta['citl'].estimate:.3f}" in md


def test_censored_coverage_is_reported_apart_not_pooled(study_result):
    from coordinator.validation.conformal import AT_LEAST

    study, _ = study_result
    study = copy.deepcopy(study)
    study.meta.clear()
    study.notes = []
    f = study.folds[0]
    n, k = f.conformal.coverage.n, study.k_min_cell
    bound = Proportion((n - k + 1) / n, 0.9, 1.0, n - k + 1, n, AT_LEAST)
    study.folds[0].conformal = type(f.conformal)(**{**f.conformal.__dict__, "coverage": bound})
    add_meta_analyses(study)
    uncensored = sum(1 for g in study.folds if g.conformal and g.conformal.coverage) - 1
    assert study.meta["coverage"].k == uncensored
    assert any(f"coverage at {f.heldout_site} released as a bound" in note for note in study.notes)


def test_held_out_harmonisation_is_explained_with_the_unharmonised_variant_beside_it(study_result):
    study, _ = study_result
    raw = to_jsonable(study)
    md = _markdown(study, {"raw": raw})
    assert "transductive" in md and "needs a batch of cases" in md and "case-mix" in md
    assert "AUC, harmonised" in md and "AUC, raw" in md


def test_demo_table_prints_the_random_effects_auc_as_its_own_row():
    from rich.console import Console

    from demo.results import DemoResults, HeldOutSite, VariantMetrics, results_table

    m = VariantMetrics(auc=0.8, auc_ci_low=0.7, auc_ci_high=0.9, cal_slope=1.0, conformal_coverage=0.9)
    results = DemoResults("exp", "run", ["harmonised", "raw"], [HeldOutSite("a", 60, 20, {"harmonised": m, "raw": m})],
                          None, {"harmonised": (0.812, 0.701, 0.894), "raw": (0.771, 0.65, 0.86)})
    console = Console(width=200, record=True)
    console.print(results_table(results))
    text = console.export_text()
    assert "random effects (REML, HKSJ)" in text and "0.81 [0.70, 0.89]" in text and "0.77 [0.65, 0.86]" in text


def test_drawn_roc_area_equals_its_stated_area_and_is_within_its_bound_of_the_exact_auc(study_result):
    """The figure's curve is the k-merged histogram ROC: its trapezoid area is the stated curve area, and the AUC on
    exact scores lies within the stated bound of it (sklearn's AUC as the independent exact value)."""
    import numpy as np
    from sklearn.metrics import roc_auc_score

    from coordinator.validation.figures import roc_label

    study, cases = study_result
    for f in study.folds:
        m = f.before
        fpr, tpr = np.array(m.roc_fpr), np.array(m.roc_tpr)
        area = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))
        assert area == pytest.approx(m.roc_area, abs=1e-12)
        s = cases[f.heldout_site]
        assert abs(roc_auc_score(s.y, s.p) - m.roc_area) <= m.roc_bound + 1e-12
        assert f"{m.auc.auc:.3f}" in roc_label(m)


def test_report_says_how_the_figures_are_computed_and_sets_coverage_beside_set_size(study_result):
    study, _ = study_result
    md = _markdown(study)
    assert "k-anonymous step curve" in md and "equals the site's exact AUC" in md and "½·ΣΔFP·ΔTP/(n⁺n⁻)" in md
    assert "without looking at the outcomes" in md and "σ(a + b·logit p)" in md and "mean(y) − mean(p)" in md
    sizes = [f.conformal.mean_set_size for f in study.folds if f.conformal and f.conformal.mean_set_size is not None]
    both = [f.conformal.rate_both for f in study.folds if f.conformal and f.conformal.rate_both is not None]
    assert "coverage" in study.meta and sizes and both
    coverage_row = next(line for line in md.splitlines() if line.startswith("| conformal coverage |"))
    assert f"mean set size {sum(sizes) / len(sizes):.2f}" in coverage_row
    assert f"two-class sets {sum(both) / len(both):.2f}" in coverage_row


def test_the_coverage_forest_plot_names_each_site_with_its_set_size(study_result):
    from coordinator.tracking import coverage_label

    study, _ = study_result
    f = next(g for g in study.folds if g.conformal and g.conformal.mean_set_size is not None)
    c = f.conformal
    assert coverage_label(f) == f"{f.heldout_site} (set size {c.mean_set_size:.2f}, two-class {c.rate_both:.2f})"
