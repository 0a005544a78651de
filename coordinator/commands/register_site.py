"""``coordinator register-site``: allow a site's SuperNode key to join."""

from __future__ import annotations

from pathlib import Path

import typer

from coordinator.cli import app
from coordinator.flower.flwr_cli import FlwrCommandError, register_supernode
from coordinator.flower.registry import record_site
from coordinator.flower.state import DEFAULT_STATE_DIR, require_profile


@app.command("register-site")
def register_site(
    name: str = typer.Argument(..., help="Site name (must equal the site's --site-name)."),
    public_key: Path = typer.Argument(..., exists=True, dir_okay=False, help="The site's .pub file (site-client keygen)."),
    state_dir: Path = typer.Option(DEFAULT_STATE_DIR, "--state-dir", help="Coordinator state folder."),
) -> None:
    """Register a site's public key with the running SuperLink (needs TLS + authentication)."""
    text = public_key.read_text(encoding="utf-8", errors="replace").strip()
    if not text.startswith("ecdsa-sha2-nistp384 "):
        typer.echo(f"error: {public_key} is not an ECDSA P-384 OpenSSH public key (expected 'ecdsa-sha2-nistp384 ...'); "
                   "create one with `site-client keygen`", err=True)
        raise typer.Exit(2)
    try:
        home = require_profile(state_dir)
        result = register_supernode(home, public_key.resolve(), name)
    except (FileNotFoundError, FlwrCommandError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    node_id = str(result.get("node-id", "?"))
    record_site(state_dir, node_id, name)
    typer.echo(f"site {name} registered (node id {node_id})")
