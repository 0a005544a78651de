"""The site's ClientApp: one Flower query message in, one study phase handled, one audited reply out.

Flower starts a fresh process per message, so everything is rebuilt from node_config each time:
``site-name``, ``data``, ``data-kind`` (manifest | features), ``work-dir``, ``protocol-path``,
``approvals-path``. The study logic itself is :func:`site_client.study.handle` (pure, Flower-free).
This module never imports mlflow.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from flwr.app import Context, Error, Message
from flwr.clientapp import ClientApp

from protocols import load_protocol, protocol_id
from flowerglue.wire import from_record, to_record
from site_client.flower.approvals import approved_ids
from site_client.flower.audit import append_audit, audit_record

# Phase answered by the glue itself: lets the coordinator map node ids to site names when the SuperLink
# does not know them (simulation, or SuperNodes joined without authentication).
IDENTIFY = "identify"
# Flower error codes carried by our error replies (Flower's own codes are < 10).
REFUSED_CODE = 4001
FAILED_CODE = 4002
SITE_LOG = "site.log"

log = logging.getLogger("fedradval.site")


@dataclass(frozen=True)
class SiteSettings:
    """Where one site's data and state live (from node_config, or from the simulation's site folders)."""

    site_name: str
    data: Path
    data_kind: str
    work_dir: Path
    protocol_path: Path
    approvals_path: Path


REQUIRED_NODE_CONFIG = ("site-name", "data", "data-kind", "work-dir", "protocol-path", "approvals-path")


def settings_from_node_config(node_config: Mapping[str, Any]) -> SiteSettings:
    """Read the SuperNode's node_config (written by ``site-client join``); names any missing key."""
    missing = [k for k in REQUIRED_NODE_CONFIG if not str(node_config.get(k, "")).strip()]
    if missing:
        raise ValueError(
            f"SuperNode node_config lacks {', '.join(missing)}; start the SuperNode with `site-client join` "
            "(it sets site-name, data, data-kind, work-dir, protocol-path, approvals-path)"
        )
    kind = str(node_config["data-kind"])
    if kind not in ("manifest", "features"):
        raise ValueError(f"node_config data-kind is {kind!r}; expected 'manifest' or 'features'")
    return SiteSettings(
        site_name=str(node_config["site-name"]),
        data=Path(str(node_config["data"])),
        data_kind=kind,
        work_dir=Path(str(node_config["work-dir"])),
        protocol_path=Path(str(node_config["protocol-path"])),
        approvals_path=Path(str(node_config["approvals-path"])),
    )


SIMULATION_ENV = "FEDRADVAL_SIMULATION_SITES"


def resolve_site(context: Context) -> SiteSettings:
    """node_config of a real SuperNode; in a simulation (``partition-id``, no ``site-name``) the site with
    that index in the JSON list named by FEDRADVAL_SIMULATION_SITES (written by ``coordinator simulate``)."""
    node_config = context.node_config
    if "site-name" not in node_config and "partition-id" in node_config and os.environ.get(SIMULATION_ENV):
        sites = json.loads(Path(os.environ[SIMULATION_ENV]).read_text(encoding="utf-8"))
        return settings_from_node_config(sites[int(node_config["partition-id"])])
    return settings_from_node_config(node_config)


def site_log(settings: SiteSettings, text: str) -> None:
    """One line in the site's own log (``<work-dir>/site.log``) and on the SuperNode's stderr."""
    log.error(text)
    settings.work_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
    with open(settings.work_dir / SITE_LOG, "a", encoding="utf-8") as handle:
        handle.write(f"{stamp} {text}\n")


def study_module() -> Any:
    """The site study logic: ``site_client.study``, or the module named in FEDRADVAL_SITE_STUDY_MODULE
    (a developer hook to exercise this glue with a stand-in)."""
    return importlib.import_module(os.environ.get("FEDRADVAL_SITE_STUDY_MODULE", "site_client.study"))


def _site_context(settings: SiteSettings) -> Any:
    SiteContext = study_module().SiteContext
    protocol = load_protocol(settings.protocol_path)
    return SiteContext(
        site_name=settings.site_name,
        protocol=protocol,
        protocol_id=protocol_id(protocol),
        approved_ids=approved_ids(settings.approvals_path),
        data=settings.data,
        data_kind=settings.data_kind,  # type: ignore[arg-type]
        work_dir=settings.work_dir,
    )


def respond(message: Message, settings: SiteSettings) -> Message:
    """Handle one message for the site in ``settings``: reply, or an error reply; audit either way."""
    study = study_module()
    ProtocolNotApproved, handle = study.ProtocolNotApproved, study.handle
    run_id = message.metadata.run_id
    phase = "?"
    try:
        payload = from_record(message.content)
        phase = str(payload.get("phase", "?"))
        if phase == IDENTIFY:
            reply = {"site": settings.site_name, "phase": IDENTIFY}
        else:
            reply = dict(handle(phase, payload, _site_context(settings)))
            reply.setdefault("site", settings.site_name)
            reply.setdefault("phase", phase)
        content = to_record(reply)
    except ProtocolNotApproved as exc:
        return _error(message, settings, run_id, phase, REFUSED_CODE, f"refused: {exc}")
    except study.SiteStudyError as exc:  # the site's gate: a code and a generic reason (details in its log)
        return _error(message, settings, run_id, phase, REFUSED_CODE, str(exc))
    except Exception as exc:  # outside the gate: only a generic reason leaves, the detail stays in the site log
        site_log(settings, f"run {run_id} phase {phase}: {type(exc).__name__}: {exc}")
        text = f"site {settings.site_name}: phase {phase} failed (internal-error); details in the site's log"
        return _error(message, settings, run_id, phase, FAILED_CODE, text)
    append_audit(settings.work_dir, audit_record(run_id, phase, reply))
    return Message(content, reply_to=message)


def _error(message: Message, settings: SiteSettings, run_id: int, phase: str, code: int, text: str) -> Message:
    site_log(settings, f"run {run_id} phase {phase}: {text}")
    append_audit(settings.work_dir, audit_record(run_id, phase, {"error": text}, status="error"))
    return Message(Error(code=code, reason=text), reply_to=message)


def make_client_app(resolve: Callable[[Context], SiteSettings] = resolve_site) -> ClientApp:
    """A ClientApp answering every ``query`` message; ``resolve`` finds the site (node_config by default)."""
    client = ClientApp()

    @client.query()
    def _serve(message: Message, context: Context) -> Message:
        return respond(message, resolve(context))

    return client


app = make_client_app()
