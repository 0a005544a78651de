"""``coordinator start``: run the SuperLink (TLS, site authentication, persistent database)."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from coordinator.cli import app
from flowerglue.runtime_env import flower_env
from coordinator.flower.flwr_cli import flwr_executable, write_profile
from coordinator.flower.state import DEFAULT_STATE_DIR, default_database, flwr_home
from coordinator.flower.superlink import INSECURE_WARNING, superlink_command


@app.command("start")
def start(
    state_dir: Path = typer.Option(DEFAULT_STATE_DIR, "--state-dir", help="Coordinator state folder."),
    database: Path | None = typer.Option(None, "--database", help="SuperLink SQLite file [<state-dir>/superlink.db]."),
    certs: Path | None = typer.Option(None, "--certs", help="Folder with ca.crt, server.pem, server.key [<state-dir>/certs]."),
    insecure: bool = typer.Option(False, "--insecure", help="No TLS and no site authentication (test networks only)."),
    in_memory: bool = typer.Option(
        False, "--in-memory", help="Keep the SuperLink state in memory (one-machine demos): a restart forgets sites."
    ),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on (0.0.0.0 for remote sites)."),
    port: int = typer.Option(8000, "--port", help="Port of the SuperLink (Fleet, Control and Runtime APIs)."),
) -> None:
    """Run the SuperLink in the foreground (TLS + SuperNode authentication unless --insecure)."""
    state_dir = state_dir.resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    cert_dir = (certs or state_dir / "certs").resolve()
    if in_memory and database is not None:
        typer.echo("error: --in-memory and --database exclude each other", err=True)
        raise typer.Exit(2)
    db = None if in_memory else (database or default_database(state_dir)).resolve()
    try:
        command = superlink_command(flwr_executable("flower-superlink"), db, None if insecure else cert_dir, insecure, host, port)
    except (FileNotFoundError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    if insecure:
        typer.secho(INSECURE_WARNING, fg=typer.colors.RED, bold=True, err=True)
    local = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    home = flwr_home(state_dir)
    write_profile(home, f"{local}:{port}", None if insecure else cert_dir / "ca.crt", insecure)
    typer.echo(f"SuperLink on {host}:{port}, database {db or 'in memory (lost on restart)'}, {'INSECURE' if insecure else 'TLS + site authentication'}", err=True)
    os.execve(command[0], command, flower_env(home))
