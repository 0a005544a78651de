"""``site-client join``: connect this site to a study and keep its SuperNode running."""

from __future__ import annotations

from pathlib import Path

import typer

from protocols.console import load_protocol_for_command
from site_client.cli import app
from site_client.flower.approvals import ApprovalsError, approved_ids
from site_client.flower.client_app import SiteSettings
from flowerglue.runtime_env import flower_env
from site_client.flower.state import DEFAULT_WORK_DIR, approvals_path
from site_client.flower.supernode import supernode_command, supervise, write_node_config
from site_client.flower.warm_exec import warm_exec_command

INSECURE_WARNING = (
    "WARNING: --insecure: no TLS. Everything this site sends travels in clear text and the coordinator cannot "
    "authenticate this site. Use only on a closed test network."
)


@app.command("join")
def join(
    coordinator: str = typer.Option(..., "--coordinator", help="SuperLink address HOST:PORT."),
    site_name: str = typer.Option(..., "--site-name", help="This site's name, as registered by the coordinator."),
    protocol: Path = typer.Option(..., "--protocol", help="The study protocol YAML this site approved."),
    manifest: Path | None = typer.Option(None, "--manifest", exists=True, dir_okay=False, help="Cohort manifest CSV (images + masks)."),
    features: Path | None = typer.Option(None, "--features", exists=True, dir_okay=False, help="Ready feature table (CSV/Parquet)."),
    root_certificates: Path | None = typer.Option(None, "--root-certificates", exists=True, dir_okay=False, help="The study CA certificate (ca.crt)."),
    key: Path | None = typer.Option(None, "--key", exists=True, dir_okay=False, help="Private key from `site-client keygen`."),
    insecure: bool = typer.Option(False, "--insecure", help="No TLS (test networks only)."),
    work_dir: Path = typer.Option(DEFAULT_WORK_DIR, "--work-dir", help="Site state folder: caches, audit log, approvals."),
    port: int = typer.Option(9094, "--port", help="Local ClientAppIo port (unique per SuperNode on this machine)."),
    max_backoff: float = typer.Option(60.0, "--max-backoff", help="Longest wait between SuperNode restarts, seconds."),
    cold_clientapps: bool = typer.Option(False, "--cold-clientapps", help="Let Flower start each ClientApp from scratch (slower; for diagnosis)."),
) -> None:
    """Join a study: run the SuperNode, restart it with back-off when it exits, serve the ClientApp."""
    if (manifest is None) == (features is None):
        typer.echo("error: give exactly one of --manifest (images) or --features (ready feature table)", err=True)
        raise typer.Exit(2)
    if insecure and key is not None:
        typer.echo("error: --key needs TLS; SuperNode authentication is impossible with --insecure", err=True)
        raise typer.Exit(2)
    if not insecure and root_certificates is None:
        typer.echo("error: TLS needs --root-certificates (the study's ca.crt), or pass --insecure on a test network", err=True)
        raise typer.Exit(2)
    loaded, identifier = load_protocol_for_command(protocol, announce=False)
    work_dir = work_dir.resolve()
    approvals = approvals_path(work_dir)
    try:
        approved = identifier in approved_ids(approvals)
    except ApprovalsError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"site {site_name}: study {loaded.study.name} v{loaded.study.version}, protocol id {identifier}")
    if not approved:
        typer.secho(
            f"NOT APPROVED: this site will refuse every message of protocol {identifier}; "
            f"run `site-client approve {protocol} --work-dir {work_dir}` after review.",
            fg=typer.colors.YELLOW,
            err=True,
        )
    if insecure:
        typer.secho(INSECURE_WARNING, fg=typer.colors.RED, bold=True, err=True)
    settings = SiteSettings(
        site_name=site_name,
        data=(manifest or features).resolve(),  # type: ignore[union-attr]
        data_kind="manifest" if manifest is not None else "features",
        work_dir=work_dir,
        protocol_path=protocol.resolve(),
        approvals_path=approvals,
    )
    command = supernode_command(
        coordinator,
        write_node_config(settings),
        port,
        root_certificates=root_certificates.resolve() if root_certificates else None,
        key=key.resolve() if key else None,
        insecure=insecure,
        warm=not cold_clientapps,
    )
    env = flower_env(work_dir / "flwr-home")
    companion = None if cold_clientapps else (lambda pid: warm_exec_command(f"127.0.0.1:{port}", pid))
    code = supervise(command, env, lambda line: typer.echo(f"[site-client] {line}", err=True),
                     max_backoff_s=max_backoff, companion=companion)
    raise typer.Exit(0 if code in (0, 3) else code)
