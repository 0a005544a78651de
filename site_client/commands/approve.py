"""``site-client approve``: record that this site agrees to run a protocol."""

from __future__ import annotations

from pathlib import Path

import typer

from protocols.console import load_protocol_for_command
from site_client.cli import app
from site_client.flower.approvals import ApprovalsError, approve
from site_client.flower.state import DEFAULT_WORK_DIR, approvals_path


@app.command("approve")
def approve_protocol(
    protocol: Path = typer.Argument(..., help="Study protocol YAML the site has reviewed."),
    state_dir: Path = typer.Option(DEFAULT_WORK_DIR, "--state-dir", "--work-dir", help="Site state folder (same as join --work-dir)."),
) -> None:
    """Approve a study protocol: the site will answer messages carrying its id, and only those."""
    loaded, identifier = load_protocol_for_command(protocol, announce=False)
    path = approvals_path(state_dir)
    try:
        added = approve(path, identifier, loaded.study.name, loaded.study.version)
    except ApprovalsError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    verb = "approved" if added else "was already approved"
    typer.echo(f"{loaded.study.name} v{loaded.study.version}: protocol id {identifier} {verb} ({path})")
