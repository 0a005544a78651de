"""``site-client approve`` / ``site-client revoke``: record that this site agrees to run a protocol (how many
times), or withdraw that agreement."""

from __future__ import annotations

from pathlib import Path

import typer

from protocols.console import load_protocol_for_command
from site_client.cli import app
from site_client.flower.approvals import ApprovalsError, approval, approve, revoke
from site_client.flower.state import DEFAULT_WORK_DIR, approvals_path


@app.command("approve")
def approve_protocol(
    protocol: Path = typer.Argument(..., help="Study protocol YAML the site has reviewed."),
    state_dir: Path = typer.Option(DEFAULT_WORK_DIR, "--state-dir", "--work-dir", help="Site state folder (same as join --work-dir)."),
    runs: int | None = typer.Option(
        None, "--runs", min=1,
        help="Studies (Flower runs) this approval allows; default: the protocol's privacy.studies_per_approval. "
             "Given for an approved protocol, it renews the approval with a fresh count."),
) -> None:
    """Approve a study protocol: the site will answer messages carrying its id, and only those, within its budget."""
    loaded, identifier = load_protocol_for_command(protocol, announce=False)
    path = approvals_path(state_dir)
    allowed = runs if runs is not None else loaded.privacy.studies_per_approval
    try:
        if runs is None and approval(path, identifier) is not None:
            typer.echo(f"{loaded.study.name} v{loaded.study.version}: protocol id {identifier} was already approved "
                       f"({path}); `--runs N` renews it")
            return
        approve(path, identifier, loaded.study.name, loaded.study.version, runs=allowed)
    except ApprovalsError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"{loaded.study.name} v{loaded.study.version}: protocol id {identifier} approved for {allowed} "
               f"study run(s) ({path})")


@app.command("revoke")
def revoke_protocol(
    protocol: Path = typer.Argument(..., help="Study protocol YAML whose approval to withdraw."),
    state_dir: Path = typer.Option(DEFAULT_WORK_DIR, "--state-dir", "--work-dir", help="Site state folder (same as join --work-dir)."),
) -> None:
    """Withdraw an approval: the site refuses every later message of that protocol, a run in progress included."""
    loaded, identifier = load_protocol_for_command(protocol, announce=False)
    path = approvals_path(state_dir)
    try:
        removed = revoke(path, identifier)
    except ApprovalsError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    if not removed:
        typer.echo(f"error: protocol id {identifier} is not approved at this site ({path})", err=True)
        raise typer.Exit(1)
    typer.echo(f"{loaded.study.name} v{loaded.study.version}: approval of protocol id {identifier} revoked ({path})")
