"""``coordinator log``: log a saved study outcome to MLflow (after MLflow was down at the end of a study, or to
another store)."""

from __future__ import annotations

from pathlib import Path

import typer

from coordinator.cli import app


@app.command("log")
def log_command(
    outcome: Path = typer.Argument(..., help="A saved outcome (<state-dir>/outcomes/outcome-<protocol>-<time>.pkl)."),
    mlflow_uri: str = typer.Option("", "--mlflow-uri", help="Tracking URI (default: $MLFLOW_TRACKING_URI, else "
                                   "sqlite:///<state-dir>/mlflow.db beside the outcomes folder)."),
    promote: bool = typer.Option(False, "--promote", help="Move the registry alias to the newly registered version."),
) -> None:
    """Log a study's saved outcome to MLflow (parent, fold and final-model runs, registered model) and print its table."""
    from coordinator.outcome_store import load_outcome
    from coordinator.study_table import print_results_table
    from coordinator.tracking import log_outcome, resolve_tracking_uri

    try:
        saved = load_outcome(outcome)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    uri = resolve_tracking_uri(mlflow_uri, outcome.resolve().parent.parent)
    try:
        logged = log_outcome(saved, uri, promote=promote)
    except Exception as exc:  # noqa: BLE001 - MLflow down or refusing: say so, the outcome file is untouched
        typer.echo(f"error: logging to MLflow at {uri} failed ({type(exc).__name__}: {str(exc)[:300]}); "
                   f"{outcome} is unchanged, run this command again when MLflow is reachable", err=True)
        raise typer.Exit(1) from None
    print_results_table(saved, logged.registered_model)
    typer.echo(f"logged {outcome.name} to {uri}: study run {logged.parent_run_id}"
               + (f", model {logged.registered_model} version {logged.model_version}" if logged.model_version else ""))
