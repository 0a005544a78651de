"""``site-client keygen``: the site's SuperNode authentication key pair."""

from __future__ import annotations

from pathlib import Path

import typer

from site_client.cli import app
from site_client.flower.keys import generate_keypair


@app.command("keygen")
def keygen(
    out: Path = typer.Option(Path("fedradval-keys"), "--out", help="Folder for the key pair."),
    name: str = typer.Option("site-key", "--name", help="File name of the private key (.pub is added for the public one)."),
) -> None:
    """Create an ECDSA P-384 key pair (OpenSSH format); send only the .pub file to the coordinator."""
    try:
        public = generate_keypair(out / name)
    except FileExistsError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"private key: {out / name}  (keep it here, mode 600)")
    typer.echo(f"public key:  {public}  (send this file to the coordinator)")
