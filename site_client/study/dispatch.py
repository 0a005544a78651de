"""Route a coordinator message to its phase handler, behind the site's gate.

Order for every message: the protocol id (approved, the site's own) → the request against the contract, the
protocol and this run's state (:mod:`site_client.study.validator`) → the phase's computation → the reply
against the contract and the site's allowed strings → the run state is updated. Anything that goes wrong
leaves the site as a code and a generic reason; the detail (case ids, values, paths) is written to the
site's own log (``notes.log`` in the run's work folder) and never sent.
"""

from __future__ import annotations

import traceback
from pathlib import Path

from collections.abc import Callable
from datetime import datetime, timezone

from harmonisation.schema import batch_labels, categorical_labels, sort_levels
from protocols.contract import (
    CALIBRATE, COMBAT1, ELIGIBLE, EVAL_MODELS, EVALUATE, HANDSHAKE, PLAN, STD, STEP, TRAIN, TRAIN_FOLDS,
    TRAIN_MODELS, fold_sizes, key,
)
from protocols.payload import Payload, plain, prefixes, unnest
from protocols.survival_contract import COX, COX_BASELINE, COX_EVALUATE
from site_client.privacy import BudgetExceeded, Ledger, charge_request
from site_client.privacy.release_guard import guard_release, record_release
from site_client.study.cohort import Cohort, load_cohort
from site_client.study.context import ProtocolNotApproved, SiteContext, SiteStudyError
from site_client.study.evaluate import handle_calibrate, handle_evaluate
from site_client.study.handshake import batch_column, class_counts, handle_handshake
from site_client.study.harmonise import handle_round1
from site_client.study.run_state import SiteRunState
from site_client.study.store import SiteStore
from site_client.study.survival import handle_cox, handle_cox_baseline, handle_cox_evaluate
from site_client.study.train import handle_train
from site_client.study.validator import (
    DATA_ERROR, INTERNAL_ERROR, Refusal, check_reply, check_request, release_note,
)

OVER_BUDGET = "over-budget"  # refusal code of a request beyond the protocol's privacy budget (site_client.privacy)

Handler = Callable[[Payload, SiteContext, SiteStore, Cohort], Payload]

PHASES: dict[str, Handler] = {
    COMBAT1: handle_round1,
    TRAIN: handle_train,
    CALIBRATE: handle_calibrate,
    EVALUATE: handle_evaluate,
    COX: handle_cox,
    COX_BASELINE: handle_cox_baseline,
    COX_EVALUATE: handle_cox_evaluate,
}


def check_protocol(payload: Payload, context: SiteContext) -> str:
    """The message's protocol id must be the site's own protocol and approved by the site."""
    pid = str(payload.get("protocol_id", ""))
    if not pid:
        raise ProtocolNotApproved(context.site_name, "<none>", "the message carries no protocol id")
    if pid not in context.approved_ids:
        raise ProtocolNotApproved(context.site_name, pid)
    if pid != context.protocol_id:
        raise ProtocolNotApproved(
            context.site_name, pid,
            f"this site joined with protocol {context.protocol_id[:12]}, a different protocol file")
    return pid


def _handshake_state(context: SiteContext, cohort: Cohort, reply: Payload) -> SiteRunState:
    """What the site announced, taken from its own cohort (not from the reply it is about to check)."""
    state = SiteRunState(features=list(cohort.features), model_features=list(cohort.model_features),
                         volume_feature=cohort.volume_feature, eligible=bool(reply.get(ELIGIBLE)))
    state.batches = sort_levels(set(batch_labels(context.site_name, cohort.table, batch_column(context)).tolist()))
    for cov in context.protocol.covariates.categorical:
        state.levels[cov.name] = sort_levels(set(categorical_labels(context.site_name, cohort.table, cov.name).tolist()))
    return state


def _record(phase: str, request: Payload, state: SiteRunState) -> None:
    """What this request introduced into the run (after it was served)."""
    if phase == COMBAT1 or (phase in (TRAIN, COX) and prefixes(request, PLAN)):  # plans in round 1, or with the first training message
        folds = prefixes(request, PLAN)
        state.folds = list(folds)
        state.train_folds = list(request[TRAIN_FOLDS])
        state.fold_sizes = fold_sizes({f: unnest(request, key(PLAN, f)) for f in folds})
    if phase in (TRAIN, COX) and prefixes(request, STD):
        state.standardised = True
    elif phase == CALIBRATE and request[STEP] == 0:
        state.calibrated_models = list(request[TRAIN_MODELS])
        state.validated_models = list(request.get(EVAL_MODELS, []))
    state.served[phase] = state.served.get(phase, 0) + 1


def _log(store: SiteStore, phase: str, text: str) -> None:
    stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
    store.append_log([f"{stamp} phase {phase}: {text}"])


def handle(phase: str, payload: Payload, context: SiteContext) -> Payload:
    """Serve one message: check it, run the phase, check the reply, return it (``site`` and ``phase`` set).

    Raises :class:`ProtocolNotApproved` or :class:`Refusal`; both texts are safe to send (no data)."""
    pid = check_protocol(payload, context)
    store = SiteStore(context.work_dir, pid)
    try:
        state = SiteRunState.load(store)
        check_request(phase, payload, context, state)
        if phase == HANDSHAKE:  # a different release was refused above, with both releases in the reason
            _log(store, phase, release_note(payload))
            charge_request(phase, payload, context)
            reply = handle_handshake(payload, context, store)
        else:
            cohort = load_cohort(context, store)
            charge_request(phase, payload, context, cohort)  # the privacy budget, before anything is computed
            reply = PHASES[phase](payload, context, store, cohort)
        out = {k: plain(value) for k, value in reply.items()}
        out["site"] = context.site_name
        out["phase"] = phase
        if phase == HANDSHAKE:
            cohort = load_cohort(context, store)
            state = _handshake_state(context, cohort, out)
        assert state is not None
        # one ledger transaction: the whole-run guard decides, the outgoing check passes, then what leaves is recorded
        with Ledger.open(context.work_dir, context.protocol_id) as ledger:
            release = guard_release(out, payload, context, class_counts(cohort), ledger)
            if release.withheld:
                _log(store, phase, f"withheld by the whole-run small-cell guard: {release.withheld}")
            _record(phase, payload, state)
            check_reply(phase, out, payload, context, state)
            state.save(store)
            record_release(ledger, release, phase, context.run_id)
        return out
    except BudgetExceeded as exc:  # the ledger recorded it; the coordinator learns the budget's name only
        _log(store, phase, f"refused ({OVER_BUDGET}): {exc}; {exc.detail}")
        raise Refusal(context.site_name, phase, OVER_BUDGET, str(exc), exc.detail) from None
    except Refusal as exc:
        _log(store, phase, f"refused ({exc.code}): {exc.reason}{'; ' + exc.detail if exc.detail else ''}")
        raise
    except SiteStudyError as exc:
        _log(store, phase, f"{type(exc).__name__}: {exc}")
        raise Refusal(context.site_name, phase, DATA_ERROR,
                      f"the site's data does not meet protocol {pid[:12]}; details in the site's log") from None
    except Exception as exc:  # noqa: BLE001 - whatever failed, only a generic reason leaves the site
        frames = traceback.extract_tb(exc.__traceback__)
        where = " <- ".join(f"{Path(f.filename).name}:{f.lineno}" for f in reversed(frames[-3:]))
        _log(store, phase, f"{type(exc).__name__}: {exc} (at {where})")
        raise Refusal(context.site_name, phase, INTERNAL_ERROR,
                      "the site could not compute the reply; details in the site's log") from None
