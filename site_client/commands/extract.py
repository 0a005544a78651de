"""``site-client extract``: the cohort's images and masks -> one feature table (IBSI-named features)."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from protocols.console import load_protocol_for_command
from site_client.cli import app
from site_client.extraction.deadline import CASE_TIME_LIMIT_S
from site_client.manifest import ManifestError
from site_client.tables import TableError


@app.command("extract")
def extract(
    manifest: Path = typer.Option(..., "--manifest", "-m", help="Cohort manifest CSV (one row per lesion)."),
    protocol: Path = typer.Option(..., "--protocol", "-p", help="Study protocol YAML."),
    out: Path = typer.Option(..., "--out", "-o", help="Feature table to write: .csv or .parquet."),
    workers: int = typer.Option(None, "--workers", "-w", min=1, help="Worker processes (default: all cores)."),
    no_progress: bool = typer.Option(False, "--no-progress", help="No progress bar (e.g. in logs)."),
    case_time_limit: float = typer.Option(
        CASE_TIME_LIMIT_S, "--case-time-limit", min=0, help="Seconds one case may take before it fails (0: no limit)."
    ),
) -> None:
    """Extract radiomic features per case; failed cases go to OUT.errors.csv and make the exit status 1."""
    from site_client.extraction.runner import extract_cohort

    loaded, _ = load_protocol_for_command(protocol)
    try:
        result = extract_cohort(manifest, loaded, out, workers=workers, progress=not no_progress,
                                case_time_limit_s=case_time_limit or None)
    except (ManifestError, TableError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise typer.Exit(2) from None
    print(
        f"{result.rows_written} case(s) written to {result.out_path} "
        f"({result.skipped_from_cache} skipped: already extracted with the same image, mask and protocol), "
        f"{len(result.failed)} failed, {result.seconds:.1f} s",
        file=sys.stderr,
    )
    for note in result.notes:
        print(f"  note: {note}", file=sys.stderr)
    if result.failed:
        for case_id, reason in result.failed[:10]:
            print(f"  failed {case_id}: {reason}", file=sys.stderr)
        if len(result.failed) > 10:
            print(f"  ... {len(result.failed) - 10} more", file=sys.stderr)
        print(f"failures listed in {result.errors_path}", file=sys.stderr)
        raise typer.Exit(1)
