"""The site's gate for the time-to-event phases (``cox``, ``cox-baseline``, ``cox-evaluate``).

Registered in :data:`site_client.study.validator.PHASE_CHECKS`; the contract check (keys, types, shapes, ranges)
has already run. On top of it, against the approved protocol and this run's state:

* ``cox``: the first message follows the rules of the first binary training message (fold lists, ComBat scale,
  standardisation; :func:`check_first_message`); models only of folds this run introduced and this site
  trains, never its own held-out fold; coefficients for exactly the listed models.
* ``cox-baseline``: after the first ``cox`` message; the same model rules; the grid must be a grid of the
  protocol: positive, increasing, holding every horizon and ending at the last one (the site still merges
  intervals itself until each holds 0 or >= k events, so no grid can make it release fewer than k).
* ``cox-evaluate``: models only of the folds the site is held out of (from the protocol and its own name),
  each radiomic model with its volume-only partner, a carried baseline that reaches the last horizon.
* per run at most :data:`PER_RUN` messages of each phase (``SiteRunState.served``).
"""

from __future__ import annotations

import numpy as np

from protocols.contract import EVAL_MODELS, MODELS
from protocols.models import is_radiomic, parse_model_key, volume_partner
from protocols.survival_contract import (
    BETA, BL_HAZARD, BL_TIMES, CENTRE, COX, COX_BASELINE, COX_EVALUATE, GRID, MAX_COX_STEPS,
)
from site_client.study.context import SiteContext
from site_client.study.run_state import SiteRunState, own_heldout_folds
from site_client.study.validator import (
    OUT_OF_ORDER, Refusal, _check_names, _check_trained_models, _not_allowed, check_first_message,
)


def _listed_exactly(request: dict, models: list[str], names: tuple[str, ...], context: SiteContext, phase: str) -> None:
    for name in names:
        carried = {k[len(name) + 1:] for k in request if k.startswith(name + "/")}
        if carried != set(models):
            raise _not_allowed(context, phase, name, "does not carry exactly the listed models")


def _check_grid(values: object, context: SiteContext, phase: str, field: str = GRID) -> None:
    grid = np.asarray(values, dtype=float)
    horizons = np.asarray(context.protocol.label.horizons, dtype=float)
    if (grid.size == 0 or grid[0] <= 0 or np.any(np.diff(grid) <= 0) or not np.all(np.isin(horizons, grid))
            or grid[-1] != horizons.max()):
        raise _not_allowed(context, phase, field, "is not an increasing grid holding every horizon and ending at the last")


#: Messages of each survival phase a site serves in one run: every Newton evaluation of every fit (restarts
#: after a lost site included) within MAX_COX_STEPS; one baseline and one held-out evaluation (a second one
#: would let a coordinator compare the site's answers for two models it chose).
PER_RUN = {COX: MAX_COX_STEPS, COX_BASELINE: 1, COX_EVALUATE: 1}


def _within_budget(context: SiteContext, state: SiteRunState, phase: str) -> None:
    if state.served.get(phase, 0) >= PER_RUN[phase]:
        raise _not_allowed(context, phase, "phase", f"was already served {PER_RUN[phase]} time(s) in this run, "
                           "the most a survival study needs")


def _started(context: SiteContext, state: SiteRunState, phase: str) -> None:
    if not state.standardised:
        raise Refusal(context.site_name, phase, OUT_OF_ORDER, "the first cox message has not been served")


def _check_cox(request: dict, context: SiteContext, state: SiteRunState, matched: list, phase: str) -> None:
    check_first_message(request, context, state, matched, phase)
    _check_names(request, context, state, matched, phase)
    _check_trained_models(request[MODELS], state, context, phase, MODELS)
    _listed_exactly(request, request[MODELS], (BETA,), context, phase)
    _within_budget(context, state, phase)


def _check_baseline(request: dict, context: SiteContext, state: SiteRunState, matched: list, phase: str) -> None:
    _started(context, state, phase)
    _check_names(request, context, state, matched, phase)
    _check_trained_models(request[MODELS], state, context, phase, MODELS)
    _listed_exactly(request, request[MODELS], (BETA, CENTRE), context, phase)
    _check_grid(request[GRID], context, phase)
    _within_budget(context, state, phase)


def _check_evaluate(request: dict, context: SiteContext, state: SiteRunState, matched: list, phase: str) -> None:
    _started(context, state, phase)
    _check_names(request, context, state, matched, phase)
    models = list(request[EVAL_MODELS])
    heldout = own_heldout_folds(context)
    for model in models:
        if parse_model_key(model)[0] not in heldout:
            raise _not_allowed(context, phase, EVAL_MODELS, "names a model of a fold the site is not held out of")
        if is_radiomic(model) and volume_partner(model) not in models:
            raise _not_allowed(context, phase, EVAL_MODELS, "lists a model without its volume-only partner")
    _listed_exactly(request, models, (BETA, CENTRE, BL_TIMES, BL_HAZARD), context, phase)
    _check_grid(request[GRID], context, phase)
    last = float(max(context.protocol.label.horizons))
    for model in models:
        if float(np.asarray(request[f"{BL_TIMES}/{model}"], dtype=float)[-1:].max(initial=0.0)) < last:
            raise _not_allowed(context, phase, f"{BL_TIMES}/{model}", "does not reach the protocol's last horizon")
    _within_budget(context, state, phase)


SURVIVAL_CHECKS = {COX: [_check_cox], COX_BASELINE: [_check_baseline], COX_EVALUATE: [_check_evaluate]}
