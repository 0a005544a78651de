"""Route a coordinator message to its phase handler after the protocol check."""

from __future__ import annotations

from collections.abc import Callable

from protocols.payload import Payload, plain
from site_client.privacy import charge_request, register_release
from site_client.study.cohort import Cohort, load_cohort
from site_client.study.context import ProtocolNotApproved, SiteContext, SiteStudyError
from site_client.study.evaluate import handle_calibrate, handle_evaluate
from site_client.study.handshake import handle_handshake
from site_client.study.harmonise import handle_round1, handle_round2
from site_client.study.store import SiteStore
from site_client.study.train import handle_train

Handler = Callable[[Payload, SiteContext, SiteStore, Cohort], Payload]

PHASES: dict[str, Handler] = {
    "combat-round1": handle_round1,
    "combat-round2": handle_round2,
    "train": handle_train,
    "calibrate": handle_calibrate,
    "evaluate": handle_evaluate,
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


def handle(phase: str, payload: Payload, context: SiteContext) -> Payload:
    """Serve one message: check the protocol id, run the phase, return the reply (``site`` and ``phase`` set)."""
    pid = check_protocol(payload, context)
    store = SiteStore(context.work_dir, pid)
    if phase == "handshake":
        charge_request(phase, payload, context)
        reply = handle_handshake(payload, context, store)
    elif phase in PHASES:
        cohort = load_cohort(context, store)
        charge_request(phase, payload, context, cohort)  # refuses a request beyond the privacy budget
        reply = PHASES[phase](payload, context, store, cohort)
    else:
        raise SiteStudyError(
            f"site {context.site_name}: unknown phase {phase!r}; expected handshake or {', '.join(PHASES)}")
    out = {key: plain(value) for key, value in reply.items()}
    out["site"] = context.site_name
    out["phase"] = phase
    register_release(phase, out, payload, context)
    return out
