"""Federated training, coordinator side: every model of every fold in lockstep, one message per site per round.

Round r: each site receives the current global parameters of every model it trains (never a model of the fold
it is held out of) and returns its local update, its number of training cases and its training loss. The new
global model is the case-weighted average (FedAvg; FedProx differs only in the sites' local objective). The
per-round training loss of each model is the case-weighted mean of the sites' losses.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from protocols.models import init_params, model_spec, params_from_payload, params_to_payload, parse_model_key, weighted_average
from protocols.payload import Payload, prefixes, unnest
from protocols.schema import Protocol
from protocols.contract import DIAG, HELDOUT_FOLDS, LOSS, MODELS, N, ROUND, TRAIN, W, key
from coordinator.study.design import StudyDesign
from coordinator.study.transport import Session


@dataclass
class TrainingResult:
    weights: dict[str, list[np.ndarray]] = field(default_factory=dict)
    history: dict[str, list[float]] = field(default_factory=dict)        # model → loss per round
    trained_by: dict[str, dict[int, list[str]]] = field(default_factory=dict)  # model → round → sites
    diagnostics: dict[str, dict[str, dict]] = field(default_factory=dict)  # fold → site → after-ComBat moments


def initial_weights(protocol: Protocol, design: StudyDesign, n_model_features: int) -> dict[str, list[np.ndarray]]:
    """Every model starts from the same seeded draw of its architecture (deterministic under model.seed)."""
    out = {}
    for model in design.all_models():
        _, _, feature_set = parse_model_key(model)
        spec = model_spec(protocol.model.type, protocol.model.hidden_sizes, feature_set, n_model_features)
        out[model] = init_params(spec, protocol.model.seed)
    return out


def configure_train(protocol: Protocol, design: StudyDesign, state: TrainingResult, round_no: int,
                    active: list[str], first_extras) -> dict[str, Payload]:
    """Round ``round_no``'s requests: each active site gets the global parameters of every model it trains
    (never one of the fold it is held out of); the first round also carries its harmonisation (``first_extras``)."""
    requests: dict[str, Payload] = {}
    for site in active:
        models = design.models_trained_by(site)
        if not models and round_no > 1:
            continue  # an external site only needs the first message (its harmonisation)
        req: Payload = {ROUND: round_no, MODELS: models, HELDOUT_FOLDS: design.heldout_folds(site)}
        for model in models:
            req.update(params_to_payload(key(W, model), state.weights[model]))
        if round_no == 1:
            req.update(first_extras(site, design))
        requests[site] = req
    return requests


def aggregate_train(design: StudyDesign, state: TrainingResult, round_no: int, replies: dict[str, Payload]) -> None:
    """FedAvg of every model over the replies of its fold's training sites (case-weighted), the round's
    case-weighted training loss, and (round 1) the sites' after-harmonisation diagnostics."""
    if round_no == 1:
        for site, reply in replies.items():
            for fold in prefixes(reply, DIAG):
                state.diagnostics.setdefault(fold, {})[site] = unnest(reply, key(DIAG, fold))
    for model in design.all_models():
        fold, _, _ = parse_model_key(model)
        updates, losses = [], []
        for site in design.training_sites(fold):
            reply = replies.get(site)
            if reply is None or key(N, model) not in reply:
                continue
            n = int(reply[key(N, model)])
            updates.append((params_from_payload(reply, key(W, model)), float(n)))
            losses.append((float(reply[key(LOSS, model)]), n))
        if not updates:
            continue
        state.weights[model] = weighted_average(updates)
        total = sum(n for _, n in losses)
        state.history[model].append(sum(l * n for l, n in losses) / total)
        state.trained_by[model][round_no] = [s for s in design.training_sites(fold) if s in replies]


def run_training(
    protocol: Protocol,
    session: Session,
    design: StudyDesign,
    n_model_features: int,
    first_extras,  # Callable[[str, StudyDesign], Payload]
    on_drop,       # Callable[[str], StudyDesign]: recompute the design after a site dropped
) -> tuple[TrainingResult, StudyDesign]:
    result = TrainingResult(weights=initial_weights(protocol, design, n_model_features))
    for model in result.weights:
        result.history[model] = []
        result.trained_by[model] = {}
    for round_no in range(1, protocol.model.rounds + 1):
        requests = configure_train(protocol, design, result, round_no, list(session.active), first_extras)
        before = set(session.active)
        replies = session.exchange(TRAIN, requests)
        for site in sorted(before - set(session.active)):
            design = on_drop(site)
        aggregate_train(design, result, round_no, replies)
        session.progress(f"training round {round_no}/{protocol.model.rounds} done")
    result.weights = {m: w for m, w in result.weights.items() if m in set(design.all_models())}
    return result, design
