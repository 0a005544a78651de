"""``coordinator report``: the TRIPOD+AI external-validation report of a finished study."""

from __future__ import annotations

from pathlib import Path

import typer

from coordinator.cli import app


@app.command("report")
def report(
    run_id: str = typer.Argument(..., help="The study's parent MLflow run id (printed by `coordinator run`)."),
    mlflow_uri: str = typer.Option(
        None, "--mlflow-uri", help="Tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///./mlflow.db)."
    ),
    out: Path = typer.Option(Path("report"), "--out", help="Folder for report.html and report.md."),
) -> None:
    """Write the HTML + Markdown external-validation report of a study and attach both to its MLflow run."""
    from coordinator.report import REPORT_ARTIFACT_DIR, write_report
    from coordinator.tracking import resolve_tracking_uri

    uri = resolve_tracking_uri(mlflow_uri, ".")
    try:
        html_path, md_path = write_report(run_id, out, uri)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"wrote {html_path} and {md_path}; attached to run {run_id} under {REPORT_ARTIFACT_DIR}/")
