"""The coordinator's ServerApp: waits for the sites, runs the study over the Grid, logs the outcome.

run_config (set by ``coordinator run`` / ``coordinator simulate``):
``protocol-b64`` (the protocol YAML, base64), ``protocol-id`` (expected id, checked), ``mlflow-uri``
(empty = no tracking), ``status-dir`` (where run-<id>.json goes; empty = none), ``wait-for`` (sites to
wait for; 0 = the protocol's min_sites), ``wait-timeout-s`` (how long to wait for them).
The study itself is :func:`coordinator.study.run_study` (pure, Flower-free).
"""

from __future__ import annotations

import base64
import importlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from coordinator.flower.status import RunStatus
from coordinator.flower.transport import GridTransport, SiteLookupError, describe_nodes, wait_for_nodes
from protocols import parse_protocol, protocol_id
from protocols.logs import configure_from_env
from protocols.schema import Protocol


@dataclass(frozen=True)
class RunSettings:
    protocol: Protocol
    protocol_id: str
    mlflow_uri: str
    status_dir: Path | None
    wait_for: int
    wait_timeout_s: float
    outcome_dir: Path | None = None     # the outcome is saved here before any MLflow call
    promote: bool = False               # move the registry alias to the new model version


def encode_protocol(text: str) -> str:
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def settings_from_run_config(run_config: Mapping[str, Any]) -> RunSettings:
    """Decode and check the run configuration; errors name the key."""
    raw = str(run_config.get("protocol-b64", ""))
    if not raw:
        raise ValueError("run_config protocol-b64 is empty: launch studies with `coordinator run --protocol P`")
    text = base64.b64decode(raw).decode("utf-8")
    protocol = parse_protocol(yaml.safe_load(text), "run_config protocol-b64")
    identifier = protocol_id(protocol)
    expected = str(run_config.get("protocol-id", ""))
    if expected and expected != identifier:
        raise ValueError(f"run_config protocol-id {expected} does not match the shipped protocol ({identifier})")
    status_dir = str(run_config.get("status-dir", ""))
    return RunSettings(
        protocol=protocol,
        protocol_id=identifier,
        mlflow_uri=str(run_config.get("mlflow-uri", "")),
        status_dir=Path(status_dir) if status_dir else None,
        wait_for=int(run_config.get("wait-for", 0)) or protocol.federation.min_sites,
        wait_timeout_s=float(run_config.get("wait-timeout-s", 300.0)),
        outcome_dir=Path(str(run_config["outcome-dir"])) if run_config.get("outcome-dir") else None,
        promote=str(run_config.get("promote", "")).lower() in ("1", "true", "yes"),
    )


def study_module() -> Any:
    """``coordinator.study``, or the module named in FEDRADVAL_STUDY_MODULE (developer hook to exercise
    this glue with a stand-in study)."""
    return importlib.import_module(os.environ.get("FEDRADVAL_STUDY_MODULE", "coordinator.study"))


def log_to_mlflow(outcome: Any, uri: str, flower_run_id: int, promote: bool = False) -> str:
    """Hand the outcome to the MLflow logger (coordinator.tracking, imported only when tracking is on);
    returns the study's parent run id, tagged with the Flower run id so either finds the other."""
    from mlflow import MlflowClient

    from coordinator import tracking

    logged = tracking.log_outcome(outcome, uri, promote=promote)
    MlflowClient(tracking_uri=uri).set_tag(logged.parent_run_id, "flower_run_id", str(flower_run_id))
    return logged.parent_run_id


def record_outcome(outcome: Any, settings: RunSettings, run_id: int, status: Any) -> str | None:
    """Save the outcome in ``settings.outcome_dir`` first, then log it to MLflow; returns the parent run id.

    When MLflow fails after the outcome was saved, raises RuntimeError whose message names the saved file and
    the ``coordinator log`` command that completes the logging (nothing is lost)."""
    saved = None
    if settings.outcome_dir is not None:
        from coordinator.outcome_store import save_outcome

        saved = save_outcome(outcome, settings.outcome_dir)
        status.progress(f"outcome saved to {saved}")
    if not settings.mlflow_uri:
        return None
    status.set_phase("tracking")
    try:
        parent = log_to_mlflow(outcome, settings.mlflow_uri, run_id, settings.promote)
    except Exception as exc:
        if saved is None:
            raise
        from coordinator.outcome_store import tracking_failed_message

        raise RuntimeError(tracking_failed_message(settings.mlflow_uri, exc, saved)) from exc
    status.progress(f"logged to MLflow at {settings.mlflow_uri}: study run {parent}")
    return parent


def run_server(grid: Grid, settings: RunSettings, run_id: int, stats: dict[str, Any] | None = None) -> Any:
    """Everything the ServerApp does, given decoded settings; returns the StudyOutcome (raises on failure).
    Progress is logged and written to the run's status file (:class:`RunStatus`). ``stats`` (optional)
    receives the transport's message rounds and bytes per site."""
    run_study = study_module().run_study
    status = RunStatus(settings.status_dir, run_id)
    protocol = settings.protocol
    try:
        status.progress(f"study {protocol.study.name} v{protocol.study.version}, protocol id {settings.protocol_id}")
        status.set_phase("waiting for sites")
        nodes = wait_for_nodes(grid, settings.wait_for, settings.wait_timeout_s, status.progress)
        if len(nodes) < protocol.federation.min_sites:
            raise SiteLookupError(
                f"only {len(nodes)} site(s) online after {settings.wait_timeout_s:.0f} s "
                f"({describe_nodes(nodes.items()) or 'none'}); the protocol needs at least "
                f"{protocol.federation.min_sites}"
            )
        transport = GridTransport(grid, settings.protocol_id, on_phase=status.set_phase)
        # the first round may include process / Ray-actor start-up: give it the longer of the two limits
        sites = transport.bind(nodes, max(protocol.federation.round_timeout_s, settings.wait_timeout_s))
        for failure in transport.failures:
            status.progress(f"node without a site name (left out): {failure}")
        status.progress(f"sites: {', '.join(sites)}")
        outcome = run_study(protocol, settings.protocol_id, transport, progress=status.progress)
        status.progress(f"message rounds: {transport.rounds}; bytes received per site: {transport.bytes_received}")
        if stats is not None:
            stats.update(rounds=transport.rounds, bytes_sent=dict(transport.bytes_sent),
                         bytes_received=dict(transport.bytes_received))
        record_outcome(outcome, settings, run_id, status)
    except Exception as exc:
        status.finish(error=f"{exc}")
        raise
    status.set_phase("done")
    status.finish()
    return outcome


app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    configure_from_env()  # this process was started by the SuperLink: log the way `coordinator` was told to
    run_server(grid, settings_from_run_config(context.run_config), context.run_id)
