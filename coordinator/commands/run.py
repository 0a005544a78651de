"""``coordinator run``: launch a study on the running SuperLink and follow it.

The run id line and the final results table are the command's output (stdout); the study's progress, read
from the run's status file, and its end are log lines (``fedradval.coordinator.run``, stderr: text or
``--log-json``)."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from coordinator.cli import app
from coordinator.flower.flwr_cli import FlwrCommandError, list_runs, run_log, start_run
from coordinator.flower.server_app import encode_protocol
from coordinator.flower.state import DEFAULT_STATE_DIR, require_profile, runs_dir
from coordinator.flower.status import read_status, status_path
from coordinator.outcome_store import latest_outcome, load_outcome
from protocols.console import load_protocol_for_command
from protocols.logs import get_logger

log = get_logger("coordinator.run")


@app.command("run")
def run(
    protocol: Path = typer.Option(..., "--protocol", exists=True, dir_okay=False, help="Study protocol YAML."),
    mlflow_uri: str = typer.Option("", "--mlflow-uri", help="MLflow tracking URI for the results "
                                   "(default: $MLFLOW_TRACKING_URI, else sqlite:///<state-dir>/mlflow.db)."),
    promote: bool = typer.Option(False, "--promote", help="Move the registry alias (protocol tracking.model_alias) "
                                 "to the newly registered model version."),
    state_dir: Path = typer.Option(DEFAULT_STATE_DIR, "--state-dir", help="Coordinator state folder."),
    wait_for: int = typer.Option(0, "--wait-for", help="Sites to wait for before starting [protocol min_sites]."),
    wait_timeout: float = typer.Option(300.0, "--wait-timeout", help="Seconds to wait for them."),
    follow: bool = typer.Option(True, "--follow/--no-follow", help="Stream progress until the run ends."),
) -> None:
    """Launch a study (ships the app with `flwr run`), print its run id and stream its progress."""
    from coordinator.tracking import resolve_tracking_uri

    loaded, identifier = load_protocol_for_command(protocol, announce=False)
    uri = resolve_tracking_uri(mlflow_uri, state_dir)
    try:
        home = require_profile(state_dir)
        run_id = start_run(
            home,
            {
                "protocol-b64": encode_protocol(protocol.read_text(encoding="utf-8")),
                "protocol-id": identifier,
                "mlflow-uri": uri,
                "status-dir": str(runs_dir(state_dir)),
                "outcome-dir": str(outcomes_dir(state_dir)),
                "promote": "true" if promote else "",
                "wait-for": wait_for,
                "wait-timeout-s": wait_timeout,
            },
        )
    except (FileNotFoundError, FlwrCommandError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"run id {run_id}: {loaded.study.name} v{loaded.study.version}, protocol id {identifier}; "
               f"results to {uri}")
    if follow:
        code = follow_run(home, state_dir, run_id)
        saved = latest_outcome(outcomes_dir(state_dir), identifier)
        if code == 0 and saved is not None:
            from coordinator.study_table import print_results_table

            print_results_table(load_outcome(saved))
        raise typer.Exit(code)


def outcomes_dir(state_dir: Path) -> Path:
    """Where the ServerApp saves each study's outcome before logging it: ``<state-dir>/outcomes``."""
    return state_dir.resolve() / "outcomes"


def follow_run(home: Path, state_dir: Path, run_id: int, poll_s: float = 5.0) -> int:
    """Log new progress lines until Flower reports the run finished; 0 when it completed."""
    shown = 0
    path = status_path(runs_dir(state_dir), run_id)
    while True:
        status = read_status(path) or {}
        lines = status.get("lines", [])
        for line in lines[shown:]:
            log.info("run %d: %s", run_id, line)
        shown = len(lines)
        try:
            runs = list_runs(home, run_id)
        except FlwrCommandError as exc:  # SuperLink restarting: keep following
            log.warning("SuperLink not answering (%s); retrying in 5 s", exc)
            time.sleep(5)
            continue
        flower_status = str(runs[0].get("status", "")) if runs else ""
        if flower_status.startswith("finished"):
            status = read_status(path) or {}
            for line in status.get("lines", [])[shown:]:
                log.info("run %d: %s", run_id, line)
            if flower_status == "finished:completed" and status.get("state") == "completed":
                log.info("run %d completed", run_id)
                return 0
            reason = status.get("error") or runs[0].get("status-details") or flower_status
            log.error("run %d FAILED (%s): %s", run_id, flower_status, reason)
            if not status.get("error"):
                try:
                    log.error("end of Flower's log of run %d:\n%s", run_id, run_log(home, run_id)[-4000:])
                except FlwrCommandError:
                    pass
            return 1
        time.sleep(poll_s)
