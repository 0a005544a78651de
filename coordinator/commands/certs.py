"""``coordinator certs``: demo TLS certificates for the SuperLink."""

from __future__ import annotations

from pathlib import Path

import typer

from coordinator.cli import app
from coordinator.flower.certs import create_certificates


@app.command("certs")
def certs(
    folder: Path = typer.Argument(..., help="Folder to write ca.crt, ca.key, server.pem, server.key into."),
    host: list[str] = typer.Option(
        [], "--host", help="Host name or IP the sites dial (repeatable); localhost and 127.0.0.1 are always added."
    ),
    days: int = typer.Option(365, "--days", min=1, help="Validity in days."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing files."),
) -> None:
    """Create a private CA and a SuperLink server certificate (demo and tests; production: your CA)."""
    hosts = list(dict.fromkeys([*host, "localhost", "127.0.0.1"]))
    try:
        written = create_certificates(folder, hosts, days=days, overwrite=overwrite)
    except (FileExistsError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    for path in written:
        typer.echo(str(path))
    typer.echo(f"server certificate valid for: {', '.join(hosts)}. Give ca.crt (never ca.key) to every site.")
