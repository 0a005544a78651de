"""``site-client check``: report every problem of a cohort manifest or feature table."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from protocols.console import load_protocol_for_command
from site_client.check import CheckReport, check_feature_table, check_manifest
from site_client.cli import app
from site_client.extraction.deadline import CASE_TIME_LIMIT_S
from site_client.manifest import ManifestError, read_manifest
from site_client.tables import TableError, read_table


def _print_human(report: CheckReport) -> None:
    console = Console(stderr=False, width=160)
    console.print(f"[bold]{report.source}[/]: {report.rows_checked} rows, classes {report.class_counts}")
    for warning in report.warnings:
        console.print(f"[yellow]note[/] line {warning.line}: {warning.message}", soft_wrap=True)
    if report.ok:
        console.print("[green]OK[/]: no problems found")
        return
    table = Table("line", "case_id", "field", "problem", show_lines=False)
    for problem in report.errors:
        table.add_row(str(problem.line or "-"), problem.case_id, problem.field, problem.message)
    console.print(table)
    console.print(f"[red]{len(report.errors)} problem(s) in {len(report.bad_lines())} row(s)[/]")


@app.command("check")
def check(
    protocol: Path = typer.Option(..., "--protocol", "-p", help="Study protocol YAML."),
    manifest: Path = typer.Option(None, "--manifest", "-m", help="Cohort manifest CSV (one row per lesion)."),
    features: Path = typer.Option(None, "--features", "-f", help="Ready feature table (CSV or Parquet) instead."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    case_time_limit: float = typer.Option(
        CASE_TIME_LIMIT_S, "--case-time-limit", min=0, help="Seconds one case may take before it fails (0: no limit)."
    ),
) -> None:
    """Check every row of a cohort manifest (or feature table) against the protocol; exit 1 on any error."""
    if (manifest is None) == (features is None):
        print("error: give exactly one of --manifest or --features", file=sys.stderr)
        raise typer.Exit(2)
    loaded, identifier = load_protocol_for_command(protocol)
    try:
        if manifest is not None:
            report = check_manifest(read_manifest(manifest), loaded, identifier, case_time_limit or None)
        else:
            report = check_feature_table(features, read_table(features), loaded, identifier)
    except (ManifestError, TableError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise typer.Exit(2) from None
    if as_json:
        typer.echo(json.dumps(report.to_json(), indent=2))
    else:
        _print_human(report)
    raise typer.Exit(0 if report.ok else 1)
