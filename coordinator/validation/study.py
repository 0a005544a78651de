"""Study-level summaries built from fold results: ΔAUC per fold and random-effects meta-analyses.

What enters each meta-analysis (:func:`add_meta_analyses`), and why:

* AUC (model, volume-only baseline, after recalibration) on the logit scale, each site's exact AUC and DeLong SE;
  a site with AUC 0 or 1 (perfect separation, DeLong SE 0) is kept, continuity-corrected by half a pair with the
  Hanley-McNeil SE (:func:`fedmath.auc.continuity_corrected`), and named in ``RandomEffects.adjusted``.
* ΔAUC vs the volume-only model: the paired DeLong Δ and SE computed at the held-out site; the unpaired SE only
  when a site did not release the paired one (the method says which).
* Calibration slope and calibration-in-the-large (intercept with logit p as offset), identity scale, Wald SEs of
  the site's own fits; O/E on the log scale.
* Conformal coverage on the logit scale with SE from (x + ½)/(n + 1) when x is 0 or n (adjusted, named). A
  coverage released as a bound ("fewer than k missed": at least (n-k+1)/n) is *not* a point estimate: it stays
  out of the meta-analysis and the forest plot and is listed apart in a note.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from coordinator.validation.auc import auc_difference_from_site, auc_difference_unpaired
from coordinator.validation.conformal import censored_direction
from coordinator.validation.meta import random_effects
from coordinator.validation.results import AUCEstimate, FoldResult, RandomEffects, StudyResult
from fedmath.auc import continuity_corrected

Aggregate = Mapping[str, object]

#: key → (scale, label used in notes)
META_SPEC = {
    "auc": "logit", "cal_slope": "identity", "citl": "identity", "oe_ratio": "log", "auc_difference": "identity",
    "baseline_auc": "logit", "recal_auc": "logit", "recal_cal_slope": "identity", "recal_citl": "identity",
    "coverage": "logit",
}


def complete_fold(fold: FoldResult, paired: Aggregate | None = None) -> FoldResult:
    """Fill ``auc_difference`` (model vs volume-only baseline at the held-out site): the site's paired DeLong
    aggregate (``paired_auc_difference``) when released, else the unpaired SE from both AUCs (labelled so)."""
    if fold.auc_difference is not None:
        return fold
    if paired is not None and not paired.get("suppressed", 0):
        fold.auc_difference = auc_difference_from_site(dict(paired))
    elif fold.baseline is not None and fold.before.auc and fold.baseline.auc:
        fold.auc_difference = auc_difference_unpaired(fold.before.auc, fold.baseline.auc)
    return fold


class _Inputs:
    """Per-key site estimates, SEs and the sites whose estimate was continuity-corrected."""

    def __init__(self) -> None:
        self.values: dict[str, list[float]] = {k: [] for k in META_SPEC}
        self.ses: dict[str, list[float]] = {k: [] for k in META_SPEC}
        self.adjusted: dict[str, list[str]] = {k: [] for k in META_SPEC}

    def add(self, key: str, value: float | None, se: float | None, site: str, adjusted: bool = False) -> None:
        if value is not None and se is not None and se > 0 and math.isfinite(value) and math.isfinite(se):
            self.values[key].append(value)
            self.ses[key].append(se)
            if adjusted:
                self.adjusted[key].append(site)

    def add_auc(self, key: str, est: AUCEstimate | None, site: str) -> None:
        if est is None:
            return
        auc, se, adjusted = continuity_corrected(est.auc, est.se, est.n_pos, est.n_neg)
        self.add(key, auc, se, site, adjusted)


def _coverage(inputs: _Inputs, fold: FoldResult, notes: list[str]) -> None:
    c = fold.conformal.coverage if fold.conformal else None
    if c is None:
        return
    if censored_direction(c.method):
        bound = "at least" if censored_direction(c.method) > 0 else "at most"
        notes.append(f"coverage at {fold.heldout_site} released as a bound ({bound} {c.value:.3f}, n = {c.n}): "
                     "reported apart, not pooled and not drawn as a point")
        return
    x, n = c.x, c.n
    if 0 < x < n:
        inputs.add("coverage", x / n, math.sqrt((x / n) * (1 - x / n) / n), fold.heldout_site)
    else:  # all (or none) covered: (x + ½)/(n + 1), SE from the logit variance 1/(x + ½) + 1/(n - x + ½)
        p = (x + 0.5) / (n + 1)
        inputs.add("coverage", p, p * (1 - p) * math.sqrt(1 / (x + 0.5) + 1 / (n - x + 0.5)), fold.heldout_site, True)


def add_meta_analyses(study: StudyResult) -> StudyResult:
    """Random effects (REML, HKSJ) across held-out sites for every key of :data:`META_SPEC` (module docstring)."""
    notes = study.notes
    inputs = _Inputs()
    for f in (complete_fold(f) for f in study.folds):
        site, b = f.heldout_site, f.before
        inputs.add_auc("auc", b.auc, site)
        if b.calibration:
            inputs.add("cal_slope", b.calibration.slope.value, b.calibration.slope.se, site)
            if b.calibration.citl:
                inputs.add("citl", b.calibration.citl.value, b.calibration.citl.se, site)
        if b.oe_ratio and b.oe_ratio.se:
            inputs.add("oe_ratio", b.oe_ratio.value, b.oe_ratio.se * b.oe_ratio.value, site)  # delta method
        if f.auc_difference:
            inputs.add("auc_difference", f.auc_difference.difference, f.auc_difference.se, site)
        if f.baseline:
            inputs.add_auc("baseline_auc", f.baseline.auc, site)
        if f.after:
            inputs.add_auc("recal_auc", f.after.auc, site)
            if f.after.calibration:
                inputs.add("recal_cal_slope", f.after.calibration.slope.value, f.after.calibration.slope.se, site)
                if f.after.calibration.citl:
                    inputs.add("recal_citl", f.after.calibration.citl.value, f.after.calibration.citl.se, site)
        _coverage(inputs, f, notes)
    for key, scale in META_SPEC.items():
        res = _meta(key, inputs, scale, notes)
        if res is not None:
            study.meta[key] = res
    return study


def _meta(key: str, inputs: _Inputs, scale: str, notes: list[str]) -> RandomEffects | None:
    if not inputs.values[key]:
        notes.append(f"meta-analysis of {key}: no held-out site had it")
        return None
    if inputs.adjusted[key]:
        notes.append(f"meta-analysis of {key}: continuity-corrected at {', '.join(inputs.adjusted[key])} "
                     "(estimate at the boundary of its range)")
    try:
        return random_effects(inputs.values[key], inputs.ses[key], scale=scale, adjusted=inputs.adjusted[key])
    except ValueError as exc:
        notes.append(f"meta-analysis of {key}: {exc}")
        return None
