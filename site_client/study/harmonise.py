"""Federated ComBat, site side, for every leave-one-site-out fold at once.

* ``combat-round1`` (only with covariates): store each fold's plan; for each fold this site trains: XᵀX, XᵀY,
  n of all its cases (harmonisation :func:`site_round1`; in reference mode also XᵀX, XᵀY of its
  reference-batch rows). The coordinator then has what σ̂² needs: these sums and the handshake's per-batch
  moments of the same cases. Without covariates it has everything from the handshake and skips the round:
  the plans then come with the first training message.
* first ``train`` message (:func:`finalise`): with each fold's fit (B̂, α̂) and σ̂² (and the plans, when no round
  brought them), adjust the site's own data per fold (training folds: local empirical-Bayes adjustment; the
  fold it is held out of: the frozen training estimates, never refitted, :func:`apply_to_heldout_site`) and
  store the matrices, with each fold's standardisation.
"""

from __future__ import annotations

import warnings

import numpy as np

from harmonisation import apply_to_heldout_site
from harmonisation.design import prepare_site
from harmonisation.diagnostics import site_diagnostics
from harmonisation.local_adjust import local_adjust
from harmonisation.model import ComBatModel
from harmonisation.schema import batch_labels
from harmonisation.site_stats import site_round1
from protocols.models import ALL_SITES
from protocols.payload import Payload, nest, prefixes, unnest
from protocols.contract import DIAG, FIT, HELDOUT_FOLDS, PLAN, R1, SCALE, STD, TRAIN_FOLDS, key
from site_client.study.cohort import Cohort
from site_client.study.context import SiteContext, SiteStudyError
from site_client.study.store import SiteStore

MATRICES = "matrices.npz"


def _fold_file(kind: str, fold: str) -> str:
    return f"combat/{fold}.{kind}"


#: What round 1 sends of :func:`site_round1`'s message (the reference rows' sums only in reference mode).
ROUND1_FIELDS = ("xtx", "xty", "n", "ref_xtx", "ref_xty")


def handle_round1(payload: Payload, context: SiteContext, store: SiteStore, cohort: Cohort) -> Payload:
    reply: Payload = {}
    train_folds = list(payload.get(TRAIN_FOLDS, []))
    for fold, plan in _store_messages(payload, store, PLAN).items():
        if fold in train_folds:
            sd = prepare_site(context.site_name, cohort.table, plan)
            msg = site_round1(sd, plan["ref_batch"] or None)
            reply.update(nest(key(R1, fold), {k: msg[k] for k in ROUND1_FIELDS if k in msg}))
    return reply


def _store_messages(payload: Payload, store: SiteStore, prefix: str) -> dict[str, dict]:
    """Keep every fold's message under ``prefix`` (the ComBat plan, or the broadcast fit B̂, α̂; the site gate
    checked them) for the adjustment; returns them by fold."""
    messages = {}
    for fold in prefixes(payload, prefix):
        messages[fold] = unnest(payload, key(prefix, fold))
        store.write_message(_fold_file(prefix, fold), messages[fold])
    return messages


def finalise(payload: Payload, context: SiteContext, store: SiteStore, cohort: Cohort) -> tuple[list[str], Payload]:
    """Harmonise this site's data for every fold (with the broadcast σ̂²) and store the standardisation.

    Returns the warnings raised by harmonisation (e.g. a small held-out site), for the site's log, and the
    after-harmonisation diagnostics (per local batch: n, mean, variance of every feature; the same aggregates
    as the handshake schema) for the final model's fold and the folds this site is held out of.
    """
    site = context.site_name
    train_folds = set(payload.get(TRAIN_FOLDS, []))
    heldout_folds = set(payload.get(HELDOUT_FOLDS, []))
    arrays: dict[str, np.ndarray] = {}
    notes: list[str] = []
    _store_messages(payload, store, PLAN)
    _store_messages(payload, store, FIT)
    for fold in prefixes(payload, SCALE):
        if fold not in train_folds | heldout_folds:
            continue
        scale = unnest(payload, key(SCALE, fold))
        plan = store.read_message(_fold_file(PLAN, fold))
        fit = store.read_message(_fold_file(FIT, fold))
        cols = [cohort.features.index(f) for f in plan["features"]]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if fold in train_folds:
                sd = prepare_site(site, cohort.table, plan)
                if plan.get("spanning"):
                    raise SiteStudyError(
                        f"site {site}: fold {fold}: batches {plan['spanning']} span sites; the study runner "
                        "does not support spanning batches yet (use batch.by: site)")
                adjusted = local_adjust(sd, plan, fit, scale)
            else:
                model = ComBatModel.from_messages(plan, fit, scale)
                frame = apply_to_heldout_site(model, cohort.table, site)
                adjusted = frame[plan["features"]].to_numpy(dtype=np.float64)
        notes += [f"fold {fold}: {w.message}" for w in caught]
        x = cohort.matrix().copy()
        x[:, cols] = adjusted
        arrays[f"{fold}|harmonised"] = x
    for fold in prefixes(payload, STD):
        for variant in prefixes(payload, key(STD, fold)):
            std = unnest(payload, key(STD, fold, variant))
            arrays[f"{fold}|{variant}|mean"] = np.asarray(std["mean"], dtype=np.float64)
            arrays[f"{fold}|{variant}|sd"] = np.asarray(std["sd"], dtype=np.float64)
    if not arrays:
        raise SiteStudyError(f"site {site}: the first training message carried no standardisation")
    store.write_arrays(MATRICES, arrays)
    diagnostics: Payload = {}
    labels = batch_labels(site, cohort.table, context.protocol.batch.column if context.protocol.batch.by == "column" else None)
    for fold in sorted((heldout_folds | {ALL_SITES}) & (train_folds | heldout_folds)):
        if f"{fold}|harmonised" in arrays:
            diag = site_diagnostics(site, arrays[f"{fold}|harmonised"], labels)
            diagnostics.update(nest(key(DIAG, fold), {k: diag[k] for k in ("batches", "batch_n", "mean", "var")}))
    return notes, diagnostics


def standardised(store: SiteStore, cohort: Cohort, fold: str, variant: str, _cache: dict | None = None) -> np.ndarray:
    """(X − mean) / sd of the fold's variant (harmonised or raw), all cases, columns = ``cohort.features``."""
    arrays = _cache if _cache is not None else store.read_arrays(MATRICES)
    stored = f"{fold}|{variant}"
    if f"{stored}|mean" not in arrays:
        raise SiteStudyError(f"no standardisation for fold {fold}, variant {variant} at this site")
    x = arrays[stored] if variant == "harmonised" else cohort.matrix()
    return (x - arrays[f"{stored}|mean"]) / arrays[f"{stored}|sd"]
