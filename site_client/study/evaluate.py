"""Calibration and evaluation, site side. All replies are aggregates passed through small-cell control.

Phase ``calibrate``, step 0: the coordinator sends the final parameters of every model the site trained
(``train_models``) or must validate (``eval_models``: the models of the fold it is held out of, or the final
model at an external site). For a trained model the site returns, from its calibration part, the class
histograms of the predicted probability (warm start of the recalibration fit) and of the conformal score, and
from its train part apparent-performance aggregates. For a validated model it returns the evaluation
aggregates on all its cases ("before" recalibration).

Phase ``calibrate``, step >= 1: Newton terms of the recalibration map (Platt: ``logistic_calibration_terms``
at (a, b); temperature: ``log_temperature_terms`` at u = log T) on the calibration part of each trained model,
at each of the few candidate points the coordinator sent (its line search, evaluated in one round).

Phase ``evaluate``: with each validated model's recalibration and conformal thresholds, the evaluation
aggregates of the recalibrated probabilities ("after"), conformal coverage and set sizes.

The calibration slope (with its intercept) and calibration-in-the-large (intercept with logit p as offset) at a
held-out site are fitted locally (Newton on the site's own terms): only the estimates and their variances leave.
"""

from __future__ import annotations

import numpy as np

from fedmath.auc import delong_auc
from fedmath.logistic import recalibrate as fedmath_recalibrate
from protocols.models import (
    conformal_applies, is_radiomic, model_spec, params_from_payload, params_to_payload, predict_proba,
    volume_partner,
)
from protocols.payload import Payload, nest
from protocols.contract import AFTER, APPARENT, BEFORE, CALHIST, CONFORMAL, COVERAGE, EVAL_MODELS, LOCALFIT, PAR, Q, RECAL, RECAL_METHOD, SETSIZE, STEP, TERMS, TRAIN_MODELS, W, key
from site_client.evaluation import (
    calibration_sums,
    class_histograms,
    confusion_counts,
    local_calibration_fit,
    log_temperature_terms,
    logistic_calibration_terms,
    paired_auc_difference,
    released_calibration_scores,
    released_set_statistics,
    reliability_bins,
    reliability_groups,
    roc_steps,
    suppress_small_cells,
)
from site_client.privacy import in_recalibration_box
from site_client.study.cohort import Cohort
from site_client.study.context import SiteContext, SiteStudyError
from site_client.study.harmonise import MATRICES
from site_client.study.store import SiteStore
from site_client.study.train import design

FINAL_WEIGHTS = "final_weights.npz"


def recalibrate(p: np.ndarray, method: str, params: np.ndarray) -> np.ndarray:
    """The study's recalibration map (one home: :func:`fedmath.logistic.recalibrate`); an unknown method is refused."""
    try:
        return fedmath_recalibrate(p, method, params)
    except ValueError as exc:
        raise SiteStudyError(str(exc)) from None


def exact_auc(p: np.ndarray, y: np.ndarray) -> dict:
    """AUC on the raw scores with its DeLong SE, computed at the site (:func:`fedmath.auc.delong_auc`, ties ½).
    Only the two numbers and the class counts leave the site; NaN when a class has fewer than 2 cases."""
    n1, n0 = int(np.sum(y == 1)), int(np.sum(y == 0))
    auc, se = delong_auc(p, y) if n1 >= 2 and n0 >= 2 else (float("nan"), float("nan"))
    return {"n": int(p.size), "n_pos": n1, "n_neg": n0, "auc": auc, "se": se}


def evaluation_aggregates(p: np.ndarray, y: np.ndarray, context: SiteContext) -> dict[str, dict]:
    """Everything a held-out site reports for one set of probabilities (each aggregate small-cell controlled)."""
    v = context.protocol.validation
    k = context.protocol.privacy.min_cell_count
    site = context.site_name
    grid = sorted(set(v.decision_curve_thresholds) | {v.decision_threshold})
    aggs = {  # kinds as read by coordinator.validation.site_metrics
        "histograms": class_histograms(p, y, v.histogram_bins, site),
        "confusion": confusion_counts(p, y, grid, site),
        "calibration": calibration_sums(p, y, site),
        "reliability": reliability_bins(p, y, v.reliability_bins, site),
        "calfit": local_calibration_fit(p, y),
        "auc": exact_auc(p, y),
        # the figures: k-anonymous step curves on the raw predictions (site_client.evaluation.curves)
        "roc": roc_steps(p, y, k, v.histogram_bins, site),
        "relcurve": reliability_groups(p, y, k, v.reliability_bins, site),
    }
    keep = {"confusion": (v.decision_threshold,)}  # kept wherever the confusion table at it passes k
    return {name: suppress_small_cells(agg, k, keep.get(name, ())) for name, agg in aggs.items()}


def _probabilities(context: SiteContext, store: SiteStore, cohort: Cohort, model: str, weights: dict, arrays: dict) -> np.ndarray:
    params = params_from_payload(weights, key(W, model))
    x = design(store, cohort, model, arrays)
    return predict_proba(params, x)


def handle_calibrate(payload: Payload, context: SiteContext, store: SiteStore, cohort: Cohort) -> Payload:
    step = int(payload.get(STEP, 0))
    arrays = store.read_arrays(MATRICES)
    k = context.protocol.privacy.min_cell_count
    v = context.protocol.validation
    reply: Payload = {}
    if step == 0:
        weights = {name: value for name, value in payload.items() if name.startswith(W + "/")}
        store.write_arrays(FINAL_WEIGHTS, {name.replace("/", "|"): value for name, value in weights.items()})
        cal, train = ~cohort.train, cohort.train
        for model in payload.get(TRAIN_MODELS, []):
            p = _probabilities(context, store, cohort, model, weights, arrays)
            y = cohort.y
            reply.update(nest(key(CALHIST, model), suppress_small_cells(class_histograms(p[cal], y[cal], v.histogram_bins), k)))
            if conformal_applies(v, model):  # per class: k-merged histogram or ε-DP histogram (the protocol's)
                for label, name in ((0, "neg"), (1, "pos")):
                    scores = released_calibration_scores(p[cal], y[cal], label, v, k, context.site_name)
                    reply.update(nest(key(CONFORMAL, model, name), scores))
            reply.update(nest(key(APPARENT, model, "histograms"), suppress_small_cells(class_histograms(p[train], y[train], v.histogram_bins), k)))
            reply.update(nest(key(APPARENT, model, "calibration"), suppress_small_cells(calibration_sums(p[train], y[train]), k)))
            if key(PAR, model) in payload:
                for j, point in enumerate(np.atleast_2d(payload[key(PAR, model)])):
                    reply.update(nest(key(TERMS, model, j), _newton_terms(context, p[cal], y[cal], point)))
            if v.recalibration == "platt":
                reply.update(nest(key(LOCALFIT, model), _local_platt(p[cal], y[cal], k)))
        scores = {}
        for model in payload.get(EVAL_MODELS, []):
            p = scores[model] = _probabilities(context, store, cohort, model, weights, arrays)
            for name, agg in evaluation_aggregates(p, cohort.y, context).items():
                reply.update(nest(key(BEFORE, model, name), agg))
        for model, baseline in paired_models(scores):  # ΔAUC vs volume only, paired DeLong on the same patients
            reply.update(nest(key(BEFORE, model, "paired"), _paired(scores[model], scores[baseline], cohort.y, k)))
        return reply
    weights = _stored_weights(context, store)
    method = v.recalibration
    cal = ~cohort.train
    for model in payload.get(TRAIN_MODELS, []):
        p = _probabilities(context, store, cohort, model, weights, arrays)[cal]
        y = cohort.y[cal]
        for j, point in enumerate(np.atleast_2d(payload[key(PAR, model)])):
            reply.update(nest(key(TERMS, model, j), _newton_terms(context, p, y, point)))
    return reply


def paired_models(scores: dict) -> list[tuple[str, str]]:
    """(radiomic model, its fold's volume-only model) for every pair this site validates."""
    return [(model, volume_partner(model)) for model in scores
            if is_radiomic(model) and volume_partner(model) in scores]


def _paired(p_model: np.ndarray, p_baseline: np.ndarray, y: np.ndarray, k: int) -> dict:
    try:
        return suppress_small_cells(paired_auc_difference(p_model, p_baseline, y), k)
    except ValueError:  # fewer than 2 cases of a class: nothing to release
        return {"suppressed": 1, "k": int(k)}


def _local_platt(p: np.ndarray, y: np.ndarray, k: int) -> dict:
    """This site's own Platt fit on its calibration part and its information matrix there: the coordinator's
    warm start (information-weighted mean of the sites' fits). Sent only when the fit converged and is finite
    (a separable calibration part has no finite fit); suppressed below k cases like every aggregate."""
    fit = local_calibration_fit(p, y)
    theta, cov = np.asarray(fit["theta"], dtype=float), np.asarray(fit["cov"], dtype=float)
    if not fit["converged"] or not (np.all(np.isfinite(theta)) and np.all(np.isfinite(cov))):
        return {"suppressed": 1, "k": int(k)}
    try:
        info = np.linalg.inv(cov)
    except np.linalg.LinAlgError:
        return {"suppressed": 1, "k": int(k)}
    return suppress_small_cells({"n": int(p.size), "theta": theta, "info": info}, k)


def _newton_terms(context: SiteContext, p: np.ndarray, y: np.ndarray, par: object) -> dict:
    """Recalibration Newton terms on the calibration part at the broadcast parameters (small-cell controlled);
    nothing for a point outside the protocol's recalibration box (it would be a steeper query than allowed)."""
    par = np.asarray(par, dtype=np.float64)
    if not in_recalibration_box(context.protocol, context.protocol.validation.recalibration, par):
        return {}
    if context.protocol.validation.recalibration == "platt":
        terms = logistic_calibration_terms(p, y, float(par[0]), float(par[1]), context.site_name)
    else:
        terms = log_temperature_terms(p, y, float(par[0]), context.site_name)
    return suppress_small_cells(terms, context.protocol.privacy.min_cell_count)


def _stored_weights(context: SiteContext, store: SiteStore) -> dict:
    if not store.exists(FINAL_WEIGHTS):
        raise SiteStudyError(f"site {context.site_name}: no final model weights stored; calibration step 0 missed")
    return {name.replace("|", "/"): value for name, value in store.read_arrays(FINAL_WEIGHTS).items()}


def handle_evaluate(payload: Payload, context: SiteContext, store: SiteStore, cohort: Cohort) -> Payload:
    arrays = store.read_arrays(MATRICES)
    weights = _stored_weights(context, store)
    k = context.protocol.privacy.min_cell_count
    reply: Payload = {}
    for model in payload.get(EVAL_MODELS, []):
        p = _probabilities(context, store, cohort, model, weights, arrays)
        method = str(payload[key(RECAL_METHOD, model)])
        p_after = recalibrate(p, method, np.asarray(payload[key(RECAL, model)], dtype=np.float64))
        for name, agg in evaluation_aggregates(p_after, cohort.y, context).items():
            reply.update(nest(key(AFTER, model, name), agg))
        if key(Q, model) in payload:
            q_neg, q_pos = (float(t) for t in np.asarray(payload[key(Q, model)], dtype=np.float64))
            # small cells: per-class → overall → "<k missed" coverage; split → unsplit set sizes (one version leaves)
            coverage, sizes = released_set_statistics(p, cohort.y, q_neg, q_pos, k, context.site_name)
            reply.update(nest(key(COVERAGE, model), coverage))
            reply.update(nest(key(SETSIZE, model), sizes))
    return reply
