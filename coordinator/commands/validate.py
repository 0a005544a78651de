"""``coordinator validate``: check a protocol before sending it to the sites."""

from __future__ import annotations

from pathlib import Path

import typer

from coordinator.cli import app
from protocols.console import load_protocol_for_command


@app.command("validate")
def validate(protocol: Path = typer.Argument(..., help="Study protocol YAML.")) -> None:
    """Validate a study protocol and print its id (exit 2 when invalid)."""
    loaded, identifier = load_protocol_for_command(protocol, announce=False)
    typer.echo(f"{loaded.study.name} v{loaded.study.version}: protocol id {identifier}")
