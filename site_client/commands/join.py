"""``site-client join``: connect this site to a study and keep its SuperNode running."""

from __future__ import annotations

from pathlib import Path

import typer

from protocols.console import load_protocol_for_command
from site_client.cli import app
from site_client.flower.approvals import ApprovalsError, approved_ids
from protocols.logs import get_logger
from flowerglue.runtime_env import flower_env
from flowerglue.versions import fedradval_version
from site_client.flower.client_app import SiteSettings
from site_client.flower.flower_internals import FlowerInternalsError, check_flower_internals
from site_client.flower.state import DEFAULT_WORK_DIR, approvals_path, prepare_work_dir, superexec_secret
from site_client.flower.supernode import CompanionWatch, supernode_command, supervise, write_node_config
from site_client.flower.warm_exec import DEFAULT_MAX_CLIENTAPPS, EXIT_UNSUPPORTED_FLOWER, warm_exec_command

log = get_logger("site.join")

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
    cold_clientapps: bool = typer.Option(False, "--cold-clientapps", help="Start each ClientApp in a fresh Python process (slower; for diagnosis)."),
    max_clientapps: int = typer.Option(DEFAULT_MAX_CLIENTAPPS, "--max-clientapps", min=1, help="ClientApp processes allowed at once (memory bound)."),
) -> None:
    """Join a study: run the SuperNode, restart it with back-off when it exits, serve the ClientApp."""
    try:
        check_flower_internals()
    except FlowerInternalsError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_UNSUPPORTED_FLOWER) from None
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
    work_dir = prepare_work_dir(work_dir)
    approvals = approvals_path(work_dir)
    try:
        approved = identifier in approved_ids(approvals)
    except ApprovalsError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    log.info("site %s (fedradval %s): study %s v%s, protocol id %s", site_name, fedradval_version(),
             loaded.study.name, loaded.study.version, identifier)
    if not approved:
        log.warning("NOT APPROVED: this site will refuse every message of protocol %s; run `site-client approve "
                    "%s --work-dir %s` after review.", identifier, protocol, work_dir)
    if insecure:
        log.warning(INSECURE_WARNING)
    settings = SiteSettings(
        site_name=site_name,
        data=(manifest or features).resolve(),  # type: ignore[union-attr]
        data_kind="manifest" if manifest is not None else "features",
        work_dir=work_dir,
        protocol_path=protocol.resolve(),
        approvals_path=approvals,
    )
    secret = superexec_secret(work_dir)
    command = supernode_command(
        coordinator,
        write_node_config(settings),
        port,
        root_certificates=root_certificates.resolve() if root_certificates else None,
        key=key.resolve() if key else None,
        insecure=insecure,
        superexec_auth_secret_file=secret,
    )
    env = flower_env(work_dir / "flwr-home")
    companion = CompanionWatch(
        lambda pid, mode: warm_exec_command(f"127.0.0.1:{port}", pid, mode, max_clientapps, secret),
        env, log.warning, modes=("spawn",) if cold_clientapps else ("fork", "spawn"),
        fatal_codes=frozenset({EXIT_UNSUPPORTED_FLOWER}),
    )
    code = supervise(command, env, log.info, max_backoff_s=max_backoff, companion=companion, warn=log.warning)
    raise typer.Exit(0 if code in (0, 3) else code)
