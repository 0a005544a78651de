"""The time-to-event phases, site side: Cox terms, Breslow baseline on the grid, held-out survival measures.

Every computation is the site half built and tested in :mod:`site_client.evaluation` (``survival_cox``,
``survival_grid``, ``survival_validation``); this module only reads the request, picks each model's
standardised inputs (as the binary phases do: :func:`site_client.study.train.design`) and writes the reply
through :mod:`protocols.survival_contract`. The first ``cox`` message carries the ComBat scale and the
standardisation and is served like the first binary training message (:func:`finalise`); its
after-harmonisation diagnostics stay in the site's log folder (a survival reply has no field for them).
"""

from __future__ import annotations

import numpy as np

from fedmath.survival import Baseline, CoxModel
from protocols.contract import EVAL_MODELS, MODELS, STD, key
from protocols.models import is_radiomic, volume_partner
from protocols.payload import Payload, prefixes
from protocols.survival_contract import (
    BASE, BETA, BL_HAZARD, BL_TIMES, CENTRE, GRID, TERMS_PREFIX, flatten_heldout,
)
from site_client.evaluation.survival_cox import SiteSurvivalError, SurvivalData, cox_terms
from site_client.evaluation.survival_grid import site_baseline
from site_client.evaluation.survival_validation import heldout_survival_metrics
from site_client.study.cohort import Cohort
from site_client.study.context import SiteContext, SiteStudyError
from site_client.study.harmonise import MATRICES, finalise
from site_client.study.store import SiteStore
from site_client.study.train import design


def _data(cohort: Cohort, x: np.ndarray) -> SurvivalData:
    if cohort.time is None:
        raise SiteStudyError("a survival phase was sent for a cohort without follow-up times (binary protocol)")
    return SurvivalData.checked(x, cohort.time, cohort.y)


def _vector(payload: Payload, prefix: str, model: str) -> np.ndarray:
    return np.asarray(payload[key(prefix, model)], dtype=np.float64)


def handle_cox(payload: Payload, context: SiteContext, store: SiteStore, cohort: Cohort) -> Payload:
    """One Newton evaluation of every listed model: gradient, information, log partial likelihood at β."""
    reply: Payload = {}
    first = bool(prefixes(payload, STD))
    if first:
        notes, _diagnostics = finalise(payload, context, store, cohort)
        if notes:
            store.append_log(notes)
    arrays = store.read_arrays(MATRICES)
    ties = context.protocol.label.cox_ties
    for model in payload[MODELS]:
        data = _data(cohort, design(store, cohort, model, arrays))
        terms = cox_terms(data, _vector(payload, BETA, model), ties)
        base = key(TERMS_PREFIX, model)
        reply[f"{base}/grad"] = np.asarray(terms.gradient, dtype=np.float64)
        reply[f"{base}/info"] = np.asarray(terms.information, dtype=np.float64)
        reply[f"{base}/loglik"] = float(terms.log_likelihood)
        reply[f"{base}/n"] = int(data.time.size)
        reply[f"{base}/n_events"] = data.n_events
        if first:
            reply[f"{base}/xsum"] = data.features.sum(axis=0)
    return reply


def handle_cox_baseline(payload: Payload, context: SiteContext, store: SiteStore, cohort: Cohort) -> Payload:
    """Each fitted model's Breslow cumulative hazard at this site's releasable grid points (or nothing)."""
    reply: Payload = {}
    arrays = store.read_arrays(MATRICES)
    k = context.protocol.privacy.min_cell_count
    horizons = list(context.protocol.label.horizons)
    grid = np.asarray(payload[GRID], dtype=np.float64)
    for model in payload[MODELS]:
        data = _data(cohort, design(store, cohort, model, arrays))
        released = site_baseline(data, _vector(payload, BETA, model), _vector(payload, CENTRE, model), grid, k,
                                 keep=horizons)
        base = key(BASE, model)
        reply[f"{base}/released"] = int(released is not None)
        if released is not None:
            points, hazard, n = released
            reply.update({f"{base}/points": points, f"{base}/hazard": hazard, f"{base}/n": n})
    return reply


def received_model(payload: Payload, model: str, features: list[str]) -> CoxModel:
    """The Cox model the coordinator sent (β, centre, carried baseline); refuses an inconsistent one."""
    try:
        baseline = Baseline(_vector(payload, BL_TIMES, model), _vector(payload, BL_HAZARD, model))
    except ValueError as exc:
        raise SiteStudyError(f"the carried baseline of model {model} is not a cumulative hazard: {exc}") from None
    return CoxModel(tuple(features), _vector(payload, BETA, model), _vector(payload, CENTRE, model), baseline)


def handle_cox_evaluate(payload: Payload, context: SiteContext, store: SiteStore, cohort: Cohort) -> Payload:
    """Held-out validation of every radiomic model of this site's folds, against its volume-only partner."""
    protocol = context.protocol
    label, v = protocol.label, protocol.validation
    k = protocol.privacy.min_cell_count
    arrays = store.read_arrays(MATRICES)
    horizons = [float(h) for h in label.horizons]
    reply: Payload = {}
    for model in payload[EVAL_MODELS]:
        if not is_radiomic(model):
            continue
        partner = volume_partner(model)
        x, x_volume = design(store, cohort, model, arrays), design(store, cohort, partner, arrays)
        data = _data(cohort, x)
        if data.n_events < k or data.time.size < k:
            reply.update(flatten_heldout(model, None, horizons))
            continue
        try:
            result = heldout_survival_metrics(
                data, received_model(payload, model, cohort.model_features),
                received_model(payload, partner, [cohort.volume_feature]), x_volume, horizons,
                thresholds=list(v.decision_curve_thresholds), km_candidates=np.asarray(payload[GRID], dtype=float),
                k=k, calibration_groups_wanted=v.reliability_bins, ties=label.cox_ties)
        except SiteSurvivalError as exc:
            raise SiteStudyError(f"model {model}: {exc}") from None
        reply.update(flatten_heldout(model, result, horizons))
    return reply
