"""The study, start to end, as pure orchestration over a Transport (no Flower, no MLflow).

Message rounds: handshake (1) → ComBat (all folds: 1 with covariates, XᵀX/XᵀY, σ̂² then follows from those sums
and the handshake's moments; 0 without covariates, or when harmonisation.combat is false) → training
(model.rounds) → calibration step 0 (1) → recalibration Newton (1–2 on the tests', demo and benchmark studies; 0 when none) →
evaluation (1). See docs/architecture.md.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from coordinator.study.calibrate import run_calibration
from coordinator.study.design import StudyDesign
from coordinator.study.evaluate import metrics_at, pooled, run_evaluation
from coordinator.study.handshake import HandshakeResult, run_handshake
from coordinator.study.harmonise import HarmonisationResult, first_round_extras, run_harmonisation, standardisation
from coordinator.study.outcome import StudyOutcome
from coordinator.study.replies import ReplyCheck
from coordinator.study.survival import run_survival
from coordinator.study.train import run_training
from coordinator.study.transport import Session, StudyFailed, Transport
from coordinator.validation.combine import combine_aggregates
from coordinator.validation.conformal import conformal_stats
from coordinator.validation.correlation import pearson_from_sums
from coordinator.validation.results import (FinalModel, FoldResult, HarmonisationDiagnostics, ModelWeights, SiteInfo,
                                            StudyResult)
from coordinator.validation.study import add_meta_analyses, complete_fold
from fedmath.moments import pool_mean_variance
from harmonisation.diagnostics import batch_effect_table, pooled_batch_moments
from protocols.contract import Dims
from protocols.logs import get_logger
from protocols.models import ALL_SITES, model_key
from protocols.payload import check_site_name
from protocols.schema import Protocol, is_survival

log = get_logger("coordinator.study")

def _start(protocol: Protocol, protocol_id: str, transport: Transport, progress: Callable[[str], None]) -> Session:
    sites = [str(s) for s in transport.sites()]
    for site in sites:
        check_site_name(site)
    if len(set(sites)) != len(sites):
        raise StudyFailed(f"two connected sites share a name: {sorted(sites)}")
    session = Session(transport, protocol_id, protocol.federation.min_sites, protocol.federation.round_timeout_s,
                      progress, active=sorted(sites), checker=ReplyCheck(protocol))
    if len(sites) < protocol.federation.min_sites:
        raise StudyFailed(
            f"study needs at least {protocol.federation.min_sites} sites (federation.min_sites), "
            f"{len(sites)} connected: {', '.join(sorted(sites)) or 'none'}")
    return session


def _harmonise(protocol: Protocol, session: Session, hs: HandshakeResult) -> tuple[HarmonisationResult, StudyDesign]:
    """ComBat rounds; when a site drops during them, the plans are rebuilt without it and the rounds rerun."""
    while True:
        design = StudyDesign.build(protocol, session.active)
        n_before = len(session.active)
        try:
            harm = run_harmonisation(protocol, session, design, hs)
        except (ValueError, KeyError) as exc:
            if len(session.active) < n_before:
                continue
            raise StudyFailed(f"harmonisation failed: {exc}") from exc
        if len(session.active) == n_before:
            return harm, design
        session.progress("a site dropped during harmonisation; refitting ComBat without it")


def _combat_diagnostics(hs: HandshakeResult, harm: HarmonisationResult, after: dict[str, dict[str, dict]]) -> dict[str, dict]:
    """Per fold: excluded features, batch sizes, cond(XᵀX), ANOVA of batch effects before ComBat, and the
    per-site after-harmonisation moments the sites sent (training sites of the final model, held-out sites)."""
    out = {}
    for fold, model in harm.models.items():
        plan = harm.plans[fold]
        idx = np.array([hs.features.index(f) for f in model.features], dtype=int)
        schemas = [hs.schemas[s] for s in plan["sites"] if s in hs.schemas]
        before = pooled_batch_moments(schemas, plan["batches"], idx)
        out[fold] = {
            "excluded": dict(model.excluded),
            "batch_sizes": {b: int(n) for b, n in zip(model.batches, model.batch_n)},
            "condition_number": model.condition_number,
            "batch_effect_before": batch_effect_table(model.features, before),
            "after_moments": after.get(fold, {}),
        }
    return out


def _site_diagnostics(hs: HandshakeResult, after: dict[str, dict[str, dict]]) -> list[HarmonisationDiagnostics]:
    """Per site, every feature's mean and SD before (handshake) and after harmonisation for the final model
    (each site's own batches pooled). Held-out sites of LOSO folds are in ``StudyOutcome.combat_diagnostics``."""
    out = []
    for site, diag in sorted(after.get(ALL_SITES, {}).items()):
        rows = []
        for moments in (hs.schemas[site], diag):
            _, mean, var = pool_mean_variance(np.asarray(moments["batch_n"]), moments["mean"], moments["var"])
            rows.append((mean, np.sqrt(var)))
        (mb, sb), (ma, sa) = rows
        out.append(HarmonisationDiagnostics(site, list(hs.features), mb.tolist(), ma.tolist(), sb.tolist(), sa.tolist()))
    return out


def run_study(protocol: Protocol, protocol_id: str, transport: Transport,
              progress: Callable[[str], None] = log.info) -> StudyOutcome:
    """Run every phase (a survival protocol's after ComBat: :func:`coordinator.study.survival.run_survival`,
    returning a :class:`SurvivalOutcome`); raises StudyFailed (naming the sites) when fewer than
    federation.min_sites remain. ``progress`` receives one line per step and per dropped site (default: logged at
    INFO)."""
    notes: list[str] = []
    session = _start(protocol, protocol_id, transport, progress)
    progress(f"handshake with {len(session.active)} site(s): {', '.join(session.active)}")
    hs = run_handshake(session)
    session.checker.dims = Dims.of(protocol, len(hs.features), len(hs.model_features))
    session.checker.counts = dict(hs.counts)
    harm: HarmonisationResult | None = None
    if protocol.harmonisation.combat:
        progress("federated ComBat for every fold (no round without covariates, 1 with)")
        harm, design = _harmonise(protocol, session, hs)
        notes += harm.notes
    else:
        design = StudyDesign.build(protocol, session.active)
    std = standardisation(design, hs, harm, notes)
    if is_survival(protocol):
        outcome = run_survival(protocol, session, design, hs, std,
                               lambda site, d: first_round_extras(site, d, harm, std), notes)
        outcome.protocol_id = protocol_id
        return outcome

    def on_drop(site: str) -> StudyDesign:
        nonlocal design
        design = design.without(site)
        notes.append(f"site {site} left during training: its fold is dropped, the other models go on without it")
        return design

    progress(f"training {len(design.all_models())} models in lockstep for {protocol.model.rounds} rounds")
    training, design = run_training(
        protocol, session, design, len(hs.model_features),
        lambda site, d: first_round_extras(site, d, harm, std), on_drop)
    progress("recalibration and conformal thresholds")
    n_active = len(session.active)
    cal = run_calibration(protocol, session, design, training.weights)
    for site in sorted(set(design.development + design.external) - set(session.active)):
        design = design.without(site)
        notes.append(f"site {site} left during calibration: its fold is dropped")
    progress("evaluation at the held-out sites")
    ev = run_evaluation(protocol, session, design, cal)
    for site in sorted(set(design.development + design.external) - set(session.active)):
        design = design.without(site)
        notes.append(f"site {site} left during evaluation: its fold is dropped")
    del n_active
    notes += cal.notes

    v = protocol.validation
    k_min = protocol.privacy.min_cell_count
    results = {}
    for variant in design.variants:
        folds = []
        for fold in design.folds:
            rad, vol = model_key(fold, variant, "radiomic"), model_key(fold, variant, "volume")
            for site in design.heldout_sites(fold):
                before = metrics_at(site, cal.before.get(rad, {}).get(site), v.decision_threshold, k_min)
                if before is None:
                    continue
                conformal = None
                if rad in cal.conformal:
                    q_neg, q_pos = cal.conformal[rad]
                    conformal = conformal_stats(v.conformal_alpha, q_neg, q_pos,
                                                ev.coverage.get(rad, {}).get(site), ev.setsize.get(rad, {}).get(site))
                folds.append(complete_fold(FoldResult(
                    heldout_site=site, training_sites=design.training_sites(fold), before=before,
                    after=metrics_at(site, ev.after.get(rad, {}).get(site), v.decision_threshold, k_min),
                    recalibration=cal.recalibration.get(rad), conformal=conformal,
                    baseline=metrics_at(site, cal.before.get(vol, {}).get(site), v.decision_threshold, k_min),
                    training_history={"loss": training.history.get(rad, []),
                                      "baseline_loss": training.history.get(vol, [])},
                ), paired=(cal.before.get(rad, {}).get(site) or {}).get("paired")))
        loco = [f for f in design.folds if f != ALL_SITES]
        before_rad = {f: cal.before[model_key(f, variant, "radiomic")][f] for f in loco
                      if f in cal.before.get(model_key(f, variant, "radiomic"), {})}
        before_vol = {f: cal.before[model_key(f, variant, "volume")][f] for f in loco
                      if f in cal.before.get(model_key(f, variant, "volume"), {})}
        final_key = model_key(ALL_SITES, variant, "radiomic")
        mean, sd = std[ALL_SITES][variant]
        idx = [hs.features.index(f) for f in hs.model_features]
        params = training.weights[final_key]
        final = FinalModel(
            weights=ModelWeights(
                features=list(hs.model_features),
                layers=[(params[i], params[i + 1]) for i in range(0, len(params), 2)],
                activation="relu", mean=mean[idx], scale=sd[idx],
                description=f"{protocol.model.type} on {variant} features, trained on {', '.join(design.development)}",
            ),
            recalibration=cal.recalibration.get(final_key),
            conformal_q_neg=cal.conformal.get(final_key, (None, None))[0],
            conformal_q_pos=cal.conformal.get(final_key, (None, None))[1],
            training_history={"loss": training.history.get(final_key, [])},
        )
        site_info = []
        for site in sorted(hs.counts):
            c = hs.counts[site]
            role = "external" if site in design.external else ("loco" if site in design.development else "dropped")
            site_info.append(SiteInfo(site, c["n"], c["n_pos"], role))
        correlations = []
        try:
            fv = [hs.feature_volume[s] for s in session.active if s in hs.feature_volume]
            correlations = pearson_from_sums(combine_aggregates(fv), hs.model_features)
        except ValueError as exc:
            notes.append(f"feature-volume correlation: {exc}")
        harmonisation_diag = _site_diagnostics(hs, training.diagnostics) if variant == "harmonised" else []
        study = StudyResult(
            study_name=protocol.study.name, protocol=protocol.model_dump(mode="json"), protocol_id=protocol_id,
            sites=site_info, folds=folds, alpha=v.conformal_alpha, k_min_cell=protocol.privacy.min_cell_count,
            pooled=pooled(before_rad, v.decision_threshold), pooled_baseline=pooled(before_vol, v.decision_threshold, "pooled baseline"),
            feature_volume=correlations, harmonisation=harmonisation_diag, final_model=final, notes=list(notes),
        )
        results[variant] = add_meta_analyses(study)

    apparent = {}
    for model, per_site in cal.apparent.items():
        if model in design.all_models() and per_site:
            apparent[model] = pooled(per_site, v.decision_threshold, "apparent")
    progress(f"study finished in {session.rounds} message rounds")
    return StudyOutcome(
        study_name=protocol.study.name, protocol_id=protocol_id, sites=list(session.active),
        dropped=dict(session.dropped), counts=hs.counts, results=results, features=list(hs.model_features),
        volume_feature=hs.volume_feature, preferred_variant=design.variants[0], rounds=session.rounds,
        rounds_by_phase=dict(session.rounds_by_phase), training_rounds=protocol.model.rounds,
        newton_rounds=cal.newton_rounds, bytes_sent=dict(session.bytes_sent),
        bytes_received=dict(session.bytes_received), training_history=training.history,
        final_weights=training.weights, standardisation=std, features_all=list(hs.features),
        combat_models=dict(harm.models) if harm else {},
        combat_diagnostics=_combat_diagnostics(hs, harm, training.diagnostics) if harm else {}, apparent=apparent, notes=notes,
    )
