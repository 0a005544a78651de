"""Study-level summaries built from fold results: ΔAUC per fold and random-effects meta-analyses."""

from __future__ import annotations

import math

from coordinator.validation.auc import auc_difference_unpaired
from coordinator.validation.meta import random_effects
from coordinator.validation.results import FoldResult, RandomEffects, StudyResult


def _re(name: str, values: list[float], ses: list[float], scale: str, notes: list[str]) -> RandomEffects | None:
    if not values:
        notes.append(f"meta-analysis of {name}: no held-out site had it")
        return None
    try:
        return random_effects(values, ses, scale=scale)
    except ValueError as exc:
        notes.append(f"meta-analysis of {name}: {exc}")
        return None


def complete_fold(fold: FoldResult) -> FoldResult:
    """Fill ``auc_difference`` (model vs volume-only baseline at the held-out site) when both AUCs exist."""
    if fold.auc_difference is None and fold.baseline is not None and fold.before.auc and fold.baseline.auc:
        fold.auc_difference = auc_difference_unpaired(fold.before.auc, fold.baseline.auc)
    return fold


def add_meta_analyses(study: StudyResult) -> StudyResult:
    """Random effects across held-out sites: AUC (logit), calibration slope, O/E (log), ΔAUC vs baseline,
    baseline AUC (logit), AUC and slope after recalibration, conformal coverage (logit, binomial SE)."""
    notes = study.notes
    folds = [complete_fold(f) for f in study.folds]
    spec: dict[str, tuple[list[float], list[float], str]] = {k: ([], [], s) for k, s in (
        ("auc", "logit"), ("cal_slope", "identity"), ("oe_ratio", "log"), ("auc_difference", "identity"),
        ("baseline_auc", "logit"), ("recal_auc", "logit"), ("recal_cal_slope", "identity"), ("coverage", "logit"))}

    def add(key: str, value: float | None, se: float | None) -> None:
        if value is not None and se is not None and se > 0 and math.isfinite(value) and math.isfinite(se):
            spec[key][0].append(value)
            spec[key][1].append(se)

    for f in folds:
        b = f.before
        if b.auc:
            add("auc", b.auc.auc, b.auc.se)
        if b.calibration:
            add("cal_slope", b.calibration.slope.value, b.calibration.slope.se)
        if b.oe_ratio and b.oe_ratio.se:
            add("oe_ratio", b.oe_ratio.value, b.oe_ratio.se * b.oe_ratio.value)  # delta method: SE(ratio)
        if f.auc_difference:
            add("auc_difference", f.auc_difference.difference, f.auc_difference.se)
        if f.baseline and f.baseline.auc:
            add("baseline_auc", f.baseline.auc.auc, f.baseline.auc.se)
        if f.after and f.after.auc:
            add("recal_auc", f.after.auc.auc, f.after.auc.se)
        if f.after and f.after.calibration:
            add("recal_cal_slope", f.after.calibration.slope.value, f.after.calibration.slope.se)
        if f.conformal and f.conformal.coverage:
            c = f.conformal.coverage
            if 0 < c.value < 1:
                add("coverage", c.value, math.sqrt(c.value * (1 - c.value) / c.n))
            else:
                notes.append(f"coverage at {f.heldout_site} is {c.value:.0%}: left out of the logit-scale meta-analysis")
    for key, (vals, ses, scale) in spec.items():
        res = _re(key, vals, ses, scale, notes)
        if res is not None:
            study.meta[key] = res
    return study
