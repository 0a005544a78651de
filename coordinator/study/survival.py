"""A time-to-event study after the handshake and ComBat, coordinator side: Cox, baseline, held-out validation.

Every model of every fold (leave-one-site-out folds and the final all-sites fold; harmonised and raw
variants; radiomic and volume-only inputs) is a stratified Cox model (strata = sites) fitted by federated
Newton in lockstep (:mod:`coordinator.study.lockstep`; phase ``cox``, one round per Newton evaluation of all
unfinished models), on the same standardised inputs as the binary models (the first ``cox`` message carries
ComBat's scale and the standardisation). Then one ``cox-baseline`` round (each training site's Breslow curve on
the candidate grid, combined by :func:`coordinator.validation.survival_baseline.carried_baseline`) and one
``cox-evaluate`` round (each held-out site validates its fold's model against the volume-only one). Pooling by
REML random effects: :func:`coordinator.validation.survival_pooling.pool_survival_results`.

A site that leaves during the Cox rounds changes the likelihood of every fold it trains: its own fold is
dropped and the Cox rounds start again without it (a fit is never assembled from two different site sets).
A site that leaves later loses its fold; the fits it contributed to stay as they are (their baselines are
combined from the sites that answered).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from coordinator.study.design import StudyDesign
from coordinator.study.lockstep import lockstep_newton
from coordinator.study.outcome_survival import SurvivalOutcome, SurvivalVariantResult
from coordinator.study.transport import Session, StudyFailed
from coordinator.validation.survival_baseline import (
    BaselineReplyError, candidate_grid, carried_baseline, pooled_centre,
)
from coordinator.validation.survival_cox import CoxReplyError, checked_terms
from coordinator.validation.survival_pooling import pool_survival_results
from fedmath.survival import Baseline, CoxFit, CoxModel, CoxTerms, SurvivalMathError, sum_terms
from protocols.contract import EVAL_MODELS, HELDOUT_FOLDS, MODELS, STEP, key
from protocols.models import ALL_SITES, is_radiomic, model_key, parse_model_key, volume_partner
from protocols.payload import Payload
from protocols.schema import Protocol
from protocols.survival_contract import (
    BASE, BETA, BL_HAZARD, BL_TIMES, CENTRE, COX, COX_BASELINE, COX_EVALUATE, GRID, GRID_STEPS, TERMS_PREFIX,
    read_heldout,
)


class _SiteLeft(Exception):
    """A site left during the Cox rounds: the rounds restart without its fold."""


@dataclass
class CoxFits:
    fits: dict[str, CoxFit] = field(default_factory=dict)
    centres: dict[str, np.ndarray] = field(default_factory=dict)
    rounds: int = 0
    notes: list[str] = field(default_factory=list)


def model_inputs(model: str, model_features: list[str], volume_feature: str) -> list[str]:
    return [volume_feature] if parse_model_key(model)[2] == "volume" else list(model_features)


def _cox_requests(design: StudyDesign, active: list[str], betas: dict[str, np.ndarray], step: int,
                  first_extras) -> dict[str, Payload]:
    requests: dict[str, Payload] = {}
    for site in active:
        models = [m for m in design.models_trained_by(site) if m in betas]
        if not models and step > 1:
            continue
        request: Payload = {STEP: step, MODELS: models, HELDOUT_FOLDS: design.heldout_folds(site)}
        request.update({key(BETA, m): betas[m] for m in models})
        if step == 1:
            request.update(first_extras(site, design))
        requests[site] = request
    return requests


def _fit_all(protocol: Protocol, session: Session, design: StudyDesign, sizes: dict[str, int], first_extras) -> CoxFits:
    out = CoxFits()
    sums: dict[str, dict[str, tuple[np.ndarray, int]]] = {m: {} for m in sizes}

    def evaluate_round(betas: dict[str, np.ndarray]) -> dict[str, CoxTerms]:
        out.rounds += 1
        before = set(session.active)
        replies = session.exchange(COX, _cox_requests(design, list(session.active), betas, out.rounds, first_extras))
        if set(session.active) != before:
            raise _SiteLeft()
        summed = {}
        for model in betas:
            parts = []
            for site in design.training_sites(parse_model_key(model)[0]):
                reply, base = replies[site], key(TERMS_PREFIX, model)
                try:
                    parts.append(checked_terms(site, CoxTerms(reply[f"{base}/grad"], reply[f"{base}/info"],
                                                              float(reply[f"{base}/loglik"])), sizes[model]))
                except CoxReplyError as exc:
                    session.drop(site, str(exc))
                    raise _SiteLeft() from None
                if out.rounds == 1:
                    sums[model][site] = (reply[f"{base}/xsum"], int(reply[f"{base}/n"]))
            summed[model] = sum_terms(parts)
        return summed

    results = lockstep_newton(sizes, protocol.label.cox_ridge, evaluate_round)
    for model, result in results.items():
        if isinstance(result, Exception):
            raise StudyFailed(f"Cox model {model} could not be fitted: {result}")
        out.fits[model] = result
        out.centres[model] = pooled_centre(sums[model], sizes[model])
    return out


def fit_cox_models(protocol: Protocol, session: Session, design: StudyDesign, sizes_of, first_extras) -> tuple[CoxFits, StudyDesign]:
    """Every model of ``design`` fitted in lockstep; restarts without a site that leaves meanwhile."""
    notes: list[str] = []
    while True:
        sizes = {m: sizes_of(m) for m in design.all_models()}
        try:
            fits = _fit_all(protocol, session, design, sizes, first_extras)
        except (_SiteLeft, KeyError) as exc:
            gone = sorted(set(design.development + design.external) - set(session.active))
            if not gone:
                raise StudyFailed(f"Cox rounds failed: a reply lacked a field the round needs ({exc})") from None
            for site in gone:
                design = design.without(site)
                notes.append(f"site {site} left during the Cox rounds: its fold is dropped and the Cox models are "
                             "refitted without it")
            session.progress("a site left during the Cox rounds; refitting without it")
            continue
        fits.notes = notes
        return fits, design


def carried_baselines(protocol: Protocol, session: Session, design: StudyDesign, fits: CoxFits,
                      grid: np.ndarray, notes: list[str]) -> dict[str, Baseline]:
    """One ``cox-baseline`` round: each fitted model's carried baseline from its training sites' curves."""
    requests = {}
    for site in session.active:
        models = design.models_trained_by(site)
        if models:
            requests[site] = {MODELS: models, GRID: grid, **{key(BETA, m): fits.fits[m].beta for m in models},
                              **{key(CENTRE, m): fits.centres[m] for m in models}}
    replies = session.exchange(COX_BASELINE, requests)
    baselines = {}
    for model in design.all_models():
        per_site = {}
        for site in design.training_sites(parse_model_key(model)[0]):
            reply, base = replies.get(site), key(BASE, model)
            if reply is None:
                notes.append(f"model {model}: site {site} sent no baseline (it left); the baseline is combined without it")
                continue
            per_site[site] = ((reply[f"{base}/points"], reply[f"{base}/hazard"], int(reply[f"{base}/n"]))
                              if reply[f"{base}/released"] else None)
        try:
            baselines[model] = carried_baseline(grid, per_site)
        except (BaselineReplyError, SurvivalMathError) as exc:
            notes.append(f"model {model}: no carried baseline ({exc}); its absolute risks are not validated")
    return baselines


def heldout_results(protocol: Protocol, session: Session, design: StudyDesign, models: dict[str, CoxModel],
                    grid: np.ndarray) -> dict[str, dict[str, dict | None]]:
    """One ``cox-evaluate`` round: radiomic model → held-out site → its measures (None: nothing releasable)."""
    horizons = [float(h) for h in protocol.label.horizons]
    requests = {}
    for site in session.active:
        wanted = [m for m in design.models_validated_by(site) if m in models]
        radiomic = [m for m in wanted if is_radiomic(m) and volume_partner(m) in wanted]
        chosen = sorted({*radiomic, *map(volume_partner, radiomic)})
        if not chosen:
            continue
        request: Payload = {EVAL_MODELS: chosen, GRID: grid}
        for m in chosen:
            model = models[m]
            request.update({key(BETA, m): model.beta, key(CENTRE, m): model.centre,
                            key(BL_TIMES, m): model.baseline.times, key(BL_HAZARD, m): model.baseline.cumulative_hazard})
        requests[site] = request
    replies = session.exchange(COX_EVALUATE, requests)
    out: dict[str, dict[str, dict | None]] = {}
    for site, reply in replies.items():
        for m in requests[site][EVAL_MODELS]:
            if is_radiomic(m):
                out.setdefault(m, {})[site] = read_heldout(reply, m, horizons)
    return out


def on_input_scale(model: CoxModel, mean: np.ndarray, sd: np.ndarray) -> CoxModel:
    """The same model on the unstandardised inputs: (x − c')·β' = ((x − mean)/sd − c)·β with β' = β/sd,
    c' = mean + sd·c (what the registered model takes: a new site's features as they are)."""
    return CoxModel(model.features, model.beta / sd, mean + sd * model.centre, model.baseline)


def run_survival(protocol: Protocol, session: Session, design: StudyDesign, hs, std, first_extras,
                 notes: list[str]) -> SurvivalOutcome:
    """The Cox, baseline and evaluation phases and the pooled results of every variant."""
    label = protocol.label
    horizons = [float(h) for h in label.horizons]
    grid = candidate_grid(horizons, GRID_STEPS)

    def sizes_of(model: str) -> int:
        return len(model_inputs(model, hs.model_features, hs.volume_feature))

    session.progress(f"Cox models of {len(design.all_models())} fold/variant/input combinations in lockstep")
    fits, design = fit_cox_models(protocol, session, design, sizes_of, first_extras)
    notes += fits.notes
    session.progress(f"Cox fits converged in {fits.rounds} rounds; baseline survival on the time grid")
    baselines = carried_baselines(protocol, session, design, fits, grid, notes)
    models = {m: CoxModel(tuple(model_inputs(m, hs.model_features, hs.volume_feature)), fits.fits[m].beta,
                          fits.centres[m], baselines[m]) for m in design.all_models() if m in baselines}
    session.progress("held-out survival validation")
    heldout = heldout_results(protocol, session, design, models, grid)
    for site in sorted(set(design.development + design.external) - set(session.active)):
        design = design.without(site)
        notes.append(f"site {site} left during the survival phases: its fold is dropped")

    results = {}
    for variant in design.variants:
        per_site: dict[str, dict] = {}
        training: dict[str, list[str]] = {}
        for fold in design.folds:
            for site in design.heldout_sites(fold):
                result = heldout.get(model_key(fold, variant, "radiomic"), {}).get(site)
                if result is None:
                    if site in session.active:
                        notes.append(f"{variant}: site {site} released no survival measure (fewer than k events or patients)")
                    continue
                per_site[site] = result
                training[site] = design.training_sites(fold)
        idx = np.array([hs.features.index(f) for f in hs.model_features])
        vol = np.array([hs.features.index(hs.volume_feature)])
        final = {}
        for feature_set, columns in (("radiomic", idx), ("volume", vol)):
            m = model_key(ALL_SITES, variant, feature_set)
            if m in models:
                mean, sd = std[ALL_SITES][variant]
                final[feature_set] = on_input_scale(models[m], mean[columns], sd[columns])
        results[variant] = SurvivalVariantResult(
            heldout=per_site, training_sites=training, pooled=pool_survival_results(per_site, horizons),
            fits={m: {"beta": f.beta.tolist(), "se": np.sqrt(np.diag(f.covariance)).tolist(),
                      "log_likelihood": f.log_likelihood, "iterations": f.iterations}
                  for m, f in fits.fits.items() if parse_model_key(m)[1] == variant},
            final_model=final.get("radiomic"), final_volume_model=final.get("volume"),
        )
    session.progress(f"study finished in {session.rounds} message rounds")
    return SurvivalOutcome(
        study_name=protocol.study.name, protocol_id="", protocol=protocol.model_dump(mode="json"),
        sites=list(session.active), dropped=dict(session.dropped), counts=dict(hs.counts),
        features=list(hs.model_features), volume_feature=hs.volume_feature, horizons=horizons,
        time_unit=label.time_unit, k=protocol.privacy.min_cell_count, grid=grid.tolist(), results=results,
        preferred_variant=design.variants[0], rounds=session.rounds, rounds_by_phase=dict(session.rounds_by_phase),
        cox_rounds=fits.rounds, notes=list(notes),
    )
