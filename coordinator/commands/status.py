"""``coordinator status``: connected sites and studies."""

from __future__ import annotations

from pathlib import Path

import typer

from coordinator.cli import app
from coordinator.flower.flwr_cli import FlwrCommandError, list_runs, list_supernodes
from coordinator.flower.registry import load_registry
from coordinator.flower.state import DEFAULT_STATE_DIR, require_profile, runs_dir
from coordinator.flower.status import read_status, status_path


@app.command("status")
def status(state_dir: Path = typer.Option(DEFAULT_STATE_DIR, "--state-dir", help="Coordinator state folder.")) -> None:
    """Show the sites (by name, online or not) and every run with its study phase."""
    try:
        home = require_profile(state_dir)
        nodes = list_supernodes(home)
        runs = list_runs(home)
    except (FileNotFoundError, FlwrCommandError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    names = load_registry(state_dir)
    typer.echo("sites:")
    if not nodes:
        typer.echo("  (none registered or connected)")
    for node in sorted(nodes, key=lambda n: names.get(str(n.get("node-id")), "~")):
        node_id = str(node.get("node-id"))
        typer.echo(f"  {names.get(node_id, '(unnamed)'):<20} {node.get('status', '?'):<11} node {node_id}")
    typer.echo("runs:")
    if not runs:
        typer.echo("  (none)")
    for entry in runs:
        run_id = int(entry["run-id"])
        study = read_status(status_path(runs_dir(state_dir), run_id)) or {}
        phase = study.get("phase", "-")
        error = f"  error: {study['error']}" if study.get("error") else ""
        typer.echo(f"  {run_id}  {entry.get('status', '?'):<20} phase {phase:<18} elapsed {float(entry.get('elapsed', 0)):.0f} s{error}")
