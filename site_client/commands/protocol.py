"""``site-client protocol``: validate a protocol and print its id."""

from __future__ import annotations

from pathlib import Path

import typer

from protocols import canonical_json
from protocols.console import load_protocol_for_command
from site_client.cli import app


@app.command("protocol")
def show_protocol(
    protocol: Path = typer.Argument(..., help="Study protocol YAML."),
    canonical: bool = typer.Option(False, "--canonical", help="Print the canonical JSON that is hashed."),
) -> None:
    """Validate a study protocol and print its id (exit 2 when invalid)."""
    loaded, identifier = load_protocol_for_command(protocol, announce=False)
    typer.echo(canonical_json(loaded) if canonical else identifier)
