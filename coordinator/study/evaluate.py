"""Evaluation, coordinator side: one round in which every validating site applies its models' recalibration
and conformal thresholds and returns "after" aggregates, coverage and set sizes; then the metrics.

Metrics are C's pure functions (:mod:`coordinator.validation`): ``site_metrics`` per held-out site,
``pooled_metrics`` over held-out sites, ``conformal_stats``, ``add_meta_analyses``. The calibration intercept
and slope of a held-out site are fitted at that site (its own Newton, estimates + covariance only).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from coordinator.study.calibrate import Z95, CalibrationResult, recal_vector
from coordinator.study.design import StudyDesign
from coordinator.study.transport import Session
from coordinator.validation.calibration import calibration_fit_from_site as calibration_fit
from coordinator.validation.curves import drawn_counts_match, reliability_from_groups, roc_from_steps
from coordinator.validation.evaluate import pooled_metrics, site_metrics
from coordinator.validation.results import ROC_FROM_RECONCILED_STEPS, ROC_FROM_STEPS, AUCEstimate, SiteMetrics
from protocols.payload import Payload, prefixes, unnest
from protocols.schema import Protocol
from protocols.contract import AFTER, COVERAGE, EVALUATE, EVAL_MODELS, Q, RECAL, RECAL_METHOD, SETSIZE, key


@dataclass
class EvaluationResult:
    after: dict[str, dict[str, dict]] = field(default_factory=dict)     # model → site → kind → aggregate
    coverage: dict[str, dict[str, dict]] = field(default_factory=dict)  # model → site → aggregate
    setsize: dict[str, dict[str, dict]] = field(default_factory=dict)


def configure_evaluate(design: StudyDesign, cal: CalibrationResult, active: list[str]) -> dict[str, Payload]:
    """Each validating site gets, per model it validates, the recalibration map and the conformal thresholds."""
    requests: dict[str, Payload] = {}
    for site in active:
        models = design.models_validated_by(site)
        if not models:
            continue
        req: Payload = {EVAL_MODELS: models}
        for model in models:
            rec = cal.recalibration[model]
            req[key(RECAL_METHOD, model)] = rec.method
            req[key(RECAL, model)] = recal_vector(rec)
            if model in cal.conformal:
                req[key(Q, model)] = np.array(cal.conformal[model], dtype=np.float64)
        requests[site] = req
    return requests


def aggregate_evaluate(design: StudyDesign, replies: dict[str, Payload]) -> EvaluationResult:
    """The held-out sites' "after" aggregates, coverage and set sizes, per model."""
    out = EvaluationResult()
    for model in design.all_models():
        fold = model.split("/")[0]
        sites = [s for s in design.heldout_sites(fold) if s in replies]
        out.after[model] = {s: {k: unnest(replies[s], key(AFTER, model, k)) for k in prefixes(replies[s], key(AFTER, model))} for s in sites}
        out.coverage[model] = {s: unnest(replies[s], key(COVERAGE, model)) for s in sites if key(COVERAGE, model, "k") in replies[s]}
        out.setsize[model] = {s: unnest(replies[s], key(SETSIZE, model)) for s in sites if key(SETSIZE, model, "k") in replies[s]}
    return out


def run_evaluation(protocol: Protocol, session: Session, design: StudyDesign, cal: CalibrationResult) -> EvaluationResult:
    replies = session.exchange(EVALUATE, configure_evaluate(design, cal, list(session.active)))
    return aggregate_evaluate(design, replies)


def site_auc(agg: dict | None) -> AUCEstimate | None:
    """The held-out site's AUC on raw scores (DeLong SE), 95% CI on the logit scale as in auc_from_histograms."""
    if not agg or agg.get("suppressed", 0) or not np.isfinite(float(agg.get("auc", np.nan))):
        return None
    auc, se = float(agg["auc"]), float(agg["se"])
    if 0 < auc < 1:
        centre, half = math.log(auc / (1 - auc)), Z95 * se / (auc * (1 - auc))
        lo, hi = 1 / (1 + math.exp(-(centre - half))), 1 / (1 + math.exp(-(centre + half)))
    else:
        lo = hi = auc
    return AUCEstimate(auc, se, lo, hi, 0.0, int(agg["n_pos"]), int(agg["n_neg"]))


def metrics_at(site: str, aggs: dict[str, dict] | None, threshold: float, k_min: int | None = None) -> SiteMetrics | None:
    """C's site_metrics; the AUC is the site's exact one (histogram AUC is kept for pooling); the figures from
    the site's step curves, each step checked against ``k_min`` (the protocol's k; else the k the site states)."""
    if not aggs:
        return None
    m = site_metrics(site, aggs, threshold, calibration_fit(aggs.get("calfit")))
    exact = site_auc(aggs.get("auc"))
    if exact is not None:
        if m.auc is not None:
            m.notes.append(f"AUC from the k-merged histogram: {m.auc.auc:.4f} (bound ±{m.auc.binning_bound:.4f}); "
                           "reported AUC computed at the site on raw scores")
        m.auc = exact
    _held_out_curves(m, aggs, k_min)
    return m


def _held_out_curves(m: SiteMetrics, aggs: dict[str, dict], k_min: int | None = None) -> None:
    """The figures from the site's k-anonymous step curves (:mod:`coordinator.validation.curves`): the ROC
    reconciled to the site's exact AUC, the reliability points from its groups. A suppressed, absent or
    inconsistent curve leaves the histogram's curve (or bins) in place with a note."""
    k = k_min if k_min is not None else (aggs.get("auc") or {}).get("k")
    roc = aggs.get("roc")
    if roc and not roc.get("suppressed", 0):
        try:
            drawn = roc_from_steps(roc, m.auc.auc if m.auc is not None else None, int(k) if k else None)
        except ValueError as exc:
            m.notes.append(f"ROC steps: {exc}")
        else:
            if m.auc is None or drawn_counts_match(roc, m.auc.n_pos, m.auc.n_neg):  # no AUC: chords, step bound
                m.roc_fpr, m.roc_tpr, m.roc_area = drawn.fpr, drawn.tpr, drawn.area
                m.roc_bound, m.roc_step_bound = drawn.bound, drawn.step_bound
                m.roc_source = ROC_FROM_RECONCILED_STEPS if drawn.reconciled else ROC_FROM_STEPS
            else:
                m.notes.append("ROC steps: class totals differ from the site's AUC counts; histogram curve drawn")
    rel = aggs.get("relcurve")
    if rel and not rel.get("suppressed", 0):
        try:
            m.reliability = reliability_from_groups(rel, int(k) if k else None)
        except ValueError as exc:
            m.notes.append(f"reliability groups: {exc}")


def pooled(per_site: dict[str, dict[str, dict]], threshold: float, name: str = "pooled") -> SiteMetrics | None:
    if not per_site:
        return None
    sites = sorted(per_site)
    try:
        return pooled_metrics([per_site[s] for s in sites], sites, threshold, None, name)
    except (ValueError, IndexError) as exc:  # e.g. no bin edge or threshold kept at every site after merging
        kinds = ("histograms", "calibration", "reliability")
        reduced = [{k: a for k, a in per_site[s].items() if k in kinds} for s in sites]
        m = pooled_metrics(reduced, sites, threshold, None, name)
        m.notes.append(f"threshold metrics not pooled: {type(exc).__name__}: {exc}")
        return m
