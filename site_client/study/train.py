"""Federated training, site side: in one message, one local update of every model this site trains.

Request: ``round``, ``models`` (model keys), the global parameters ``w/<model>/<i>``; in the first round also
the fold-wise ComBat scale and standardisation (see :mod:`site_client.study.harmonise`). Reply, per model:
``w/<model>/<i>`` (updated parameters), ``n/<model>`` (number of training cases, the FedAvg weight) and
``loss/<model>`` (mean loss of the updated model on the site's train part); the first reply also carries the
after-harmonisation diagnostics ``diag/<fold>/...``. A site never receives a model of
the fold it is held out of; it refuses one if asked.
"""

from __future__ import annotations

import numpy as np

from protocols.models import model_spec, params_from_payload, params_to_payload, parse_model_key
from protocols.payload import Payload, prefixes
from protocols.contract import HELDOUT_FOLDS, LOSS, MODELS, N, ROUND, STD, W, key
from site_client.study.cohort import Cohort
from site_client.study.context import SiteContext, SiteStudyError
from site_client.study.harmonise import MATRICES, finalise
from site_client.study.learning import LocalModel, TrainConfig, derived_seed, train_models
from site_client.study.store import SiteStore


def inputs(cohort: Cohort, x_std: np.ndarray, feature_set: str) -> np.ndarray:
    """Columns of the standardised matrix the model uses: all model features, or the volume feature."""
    if feature_set == "volume":
        return x_std[:, [cohort.features.index(cohort.volume_feature)]]
    return x_std[:, [cohort.features.index(f) for f in cohort.model_features]]


def design(store: SiteStore, cohort: Cohort, model: str, arrays: dict) -> np.ndarray:
    """Standardised inputs of ``model`` for all the site's cases."""
    fold, variant, feature_set = parse_model_key(model)
    stored = f"{fold}|{variant}"
    if f"{stored}|mean" not in arrays:
        raise SiteStudyError(f"no standardisation for model {model} at this site (first training round missed?)")
    x = arrays[stored] if variant == "harmonised" else cohort.matrix()
    return inputs(cohort, (x - arrays[f"{stored}|mean"]) / arrays[f"{stored}|sd"], feature_set)


def handle_train(payload: Payload, context: SiteContext, store: SiteStore, cohort: Cohort) -> Payload:
    site, protocol = context.site_name, context.protocol
    notes: list[str] = []
    reply: Payload = {}
    if prefixes(payload, STD):
        notes, reply = finalise(payload, context, store, cohort)
    arrays = store.read_arrays(MATRICES)
    round_no = int(payload[ROUND])
    config = TrainConfig.from_protocol(protocol.model)
    heldout = set(payload.get(HELDOUT_FOLDS, []))
    local = []
    for model in payload[MODELS]:
        fold, _, feature_set = parse_model_key(model)
        if fold == site or fold in heldout:
            raise SiteStudyError(
                f"site {site}: asked to train model {model} of the fold it is held out of; refusing")
        spec = model_spec(protocol.model.type, protocol.model.hidden_sizes, feature_set, len(cohort.model_features))
        local.append(LocalModel(spec, params_from_payload(payload, key(W, model)),
                                design(store, cohort, model, arrays)[cohort.train], cohort.y[cohort.train],
                                derived_seed(protocol.model.seed, round_no, site, model)))
    # all the message's models in one batched computation (same results as one at a time)
    for model, entry, (new, loss) in zip(payload[MODELS], local, train_models(local, config, names=payload[MODELS])):
        reply.update(params_to_payload(key(W, model), new))
        reply[key(N, model)] = int(entry.y.size)
        reply[key(LOSS, model)] = float(loss)
    if notes:  # warnings may hold small counts: they stay in the site's own log
        store.append_log(notes)
    return reply
