"""Entry points the study dispatcher calls: charge a request to the ledger before the site computes; and the
release kinds of a reply's keys, which the release guard registers once the reply left
(:mod:`site_client.privacy.release_guard`)."""

from __future__ import annotations

import functools
import re

import numpy as np

from protocols.models import parse_model_key
from protocols.payload import Payload
from site_client.privacy.budget import IN_PROCESS_GRANT, Budget, BudgetCheck
from site_client.privacy.combat_cells import small_combat_cells
from site_client.privacy.ledger import Ledger

#: keys of SiteContext.extra set by the Flower glue from the site's approval entry
GRANT_KEY, RUNS_KEY = "approval-grant", "approval-runs"


def input_scales(payload: Payload, context, cohort, models: list[str]) -> dict[str, np.ndarray]:
    """Per model, own SD / received SD of each of its input columns (see :func:`budget.steepness`). The received
    SD comes from this message's ``std/<fold>/<variant>`` or, later in the run, from the one stored at the first
    training round. The site's own SD is of its raw features (ddof 1): the values an attacker would locate.
    A model whose standardisation is unknown gets no entry (and is refused)."""
    from site_client.study.harmonise import MATRICES  # the study package imports this module: import late
    from site_client.study.store import SiteStore

    x = np.asarray(cohort.matrix(), dtype=np.float64)
    own = np.nanstd(x, axis=0, ddof=1) if x.shape[0] > 1 else np.zeros(x.shape[1])
    store = SiteStore(context.work_dir, context.protocol_id)
    stored = store.read_arrays(MATRICES) if store.exists(MATRICES) else {}
    volume = [cohort.features.index(cohort.volume_feature)]
    radiomic = [cohort.features.index(f) for f in cohort.model_features]
    scales = {}
    for model in models:
        try:
            fold, variant, feature_set = parse_model_key(model)
        except ValueError:
            continue
        sd = payload.get(f"std/{fold}/{variant}/sd")
        if sd is None:
            sd = stored.get(f"{fold}|{variant}|sd")
        if sd is None or np.shape(sd) != own.shape:
            continue
        cols = volume if feature_set == "volume" else radiomic
        with np.errstate(divide="ignore", invalid="ignore"):
            scales[model] = own[cols] / np.asarray(sd, dtype=np.float64)[cols]
    return scales


def charge_request(phase: str, payload: Payload, context, cohort=None) -> None:
    """Charge one request of ``phase`` to the ledger of the context's protocol; raises
    :class:`~site_client.privacy.ledger.BudgetExceeded` (recorded in the ledger) when it is beyond the budget."""
    runs = context.extra.get(RUNS_KEY)
    budget = Budget.from_protocol(context.protocol, int(runs) if runs else None)
    grant = context.extra.get(GRANT_KEY, IN_PROCESS_GRANT)
    models = request_models(payload)
    with Ledger.open(context.work_dir, context.protocol_id) as ledger:
        check = BudgetCheck(ledger, budget, context.protocol, context.protocol_id, context.run_id, grant)
        check.start_run(phase)
        if phase == "train":
            check.train(payload, input_scales(payload, context, cohort, models))
        elif phase == "calibrate":
            check.calibrate(payload, input_scales(payload, context, cohort, models) if models else {})
        elif phase == "evaluate":
            check.evaluate(payload)
        elif phase == "combat-round1":
            protocol = context.protocol
            batch = protocol.batch.column if protocol.batch.by == "column" else None
            check.combat(phase, small_combat_cells(context.site_name, cohort.table, batch,
                                                   [c.name for c in protocol.covariates.categorical],
                                                   protocol.privacy.min_cell_count,
                                                   protocol.harmonisation.reference_batch))


def request_models(payload: Payload) -> list[str]:
    """The model names a request addresses (``models``, ``train_models``, ``eval_models``)."""
    return [str(m) for key in ("models", "train_models", "eval_models") for m in payload.get(key, [])]


def release_kind(key: str, models: list[str]) -> str:
    """The kind of aggregate a reply key belongs to: the key with model names replaced by ``<model>`` and
    candidate indices by ``<j>`` (``before/<model>/confusion/n_tp``, ``n_pos``, ...)."""
    text = _model_names(tuple(sorted(set(models), key=len, reverse=True))).sub("<model>", key)
    return "/".join("<j>" if part.isdigit() else part for part in text.split("/"))


@functools.lru_cache(maxsize=16)
def _model_names(models: tuple[str, ...]) -> re.Pattern:
    """One pattern for all of a request's model names, longest first, whole path segments only; compiled once
    per request (a reply has thousands of keys: one pattern per model and key took minutes at 50 sites)."""
    if not models:
        return re.compile(r"(?!)")  # matches nothing
    names = "|".join(re.escape(m) for m in models)
    return re.compile(rf"(?<![^/])(?:{names})(?![^/])")

