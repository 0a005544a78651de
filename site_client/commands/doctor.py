"""``site-client doctor``: check everything a study needs at this site before it starts, one line each.

Exit code 0 when nothing needs a fix, 1 otherwise (for scripts and service health checks).
"""

from __future__ import annotations

from pathlib import Path

import typer

from protocols import load_protocol, protocol_id
from flowerglue.preflight import FIX, INFO, OK, Check, clock, disk_space, exit_code, proxy_settings, reach, resolve, split_address, tls
from flowerglue.versions import fedradval_version
from site_client.cli import app
from site_client.flower.approvals import ApprovalsError, approved_ids
from site_client.flower.flower_internals import FlowerInternalsError, check_flower_internals, probe_node_key
from site_client.flower.state import DEFAULT_WORK_DIR, WORK_DIR_MODE, approvals_path


def software() -> Check:
    try:
        check_flower_internals()
    except FlowerInternalsError as exc:
        return Check("software", FIX, str(exc))
    from flowerglue.versions import flower_version

    return Check("software", OK, f"fedradval {fedradval_version()}, Flower {flower_version()}")


def work_folder(work_dir: Path) -> Check:
    if not work_dir.exists():
        return Check("work folder", INFO, f"{work_dir} does not exist yet; `site-client join` creates it (mode 0700)")
    mode = work_dir.stat().st_mode & 0o777
    if mode != WORK_DIR_MODE:
        return Check("work folder", FIX, f"{work_dir} has mode {mode:o}: other local users can read it; "
                     f"`chmod 700 {work_dir}` (join also does this)")
    return Check("work folder", OK, f"{work_dir} (mode 700)")


def network(coordinator: str, root_certificates: Path | None, key: Path | None, insecure: bool) -> list[Check]:
    """Resolve, reach, TLS, key: each step only when the one before it passed (its failure is the cause)."""
    try:
        host, port = split_address(coordinator)
    except ValueError as exc:
        return [Check("coordinator", FIX, str(exc))]
    checks = [resolve(host)]
    if checks[-1].status == OK:
        checks.append(reach(host, port))
    if checks[-1].status == OK and not insecure:
        if root_certificates is None:
            checks.append(Check("tls", FIX, "give --root-certificates (the study's ca.crt)"))
        else:
            checks.append(tls(host, port, root_certificates))
    if insecure:
        checks.append(Check("tls", INFO, "--insecure: no TLS, no site authentication (closed test networks only)"))
    if checks[-1].status in (OK, "WARN") and key is not None and not insecure:
        probe = probe_node_key(coordinator, root_certificates, key)
        checks.append(Check("key", {True: OK, False: FIX, None: FIX}[probe.accepted], probe.reason))
    elif key is None and not insecure:
        checks.append(Check("key", INFO, "no --key given: not checked"))
    return checks


def study(protocol: Path, work_dir: Path, manifest: Path | None, features: Path | None) -> list[Check]:
    from site_client.check import check_feature_table, check_manifest
    from site_client.manifest import ManifestError, read_manifest
    from site_client.tables import TableError, read_table

    try:
        loaded = load_protocol(protocol)
    except Exception as exc:  # the loader's own message names the field
        return [Check("protocol", FIX, f"{protocol}: {exc}")]
    identifier = protocol_id(loaded)
    try:
        approved = identifier in approved_ids(approvals_path(work_dir))
    except ApprovalsError as exc:
        return [Check("protocol", FIX, str(exc))]
    checks = [Check("protocol", OK, f"{loaded.study.name} v{loaded.study.version} ({identifier}) approved")
              if approved else
              Check("protocol", FIX, f"{loaded.study.name} v{loaded.study.version} ({identifier}) is not approved "
                    f"at this site: review it, then `site-client approve {protocol} --work-dir {work_dir}`")]
    if manifest is None and features is None:
        checks.append(Check("data", INFO, "no --manifest / --features given: not checked"))
        return checks
    try:
        if manifest is not None:
            report = check_manifest(read_manifest(manifest), loaded, identifier)
        else:
            report = check_feature_table(features, read_table(features), loaded, identifier)  # type: ignore[arg-type]
    except (ManifestError, TableError) as exc:
        return checks + [Check("data", FIX, str(exc))]
    if report.ok:
        checks.append(Check("data", OK, f"{report.source}: {report.rows_checked} rows, no problems"))
    else:
        checks.append(Check("data", FIX, f"{report.source}: {len(report.errors)} problem(s); `site-client check` "
                            "lists them"))
    return checks


@app.command("doctor")
def doctor(
    coordinator: str = typer.Option(..., "--coordinator", help="SuperLink address HOST:PORT."),
    root_certificates: Path | None = typer.Option(None, "--root-certificates", help="The study CA certificate (ca.crt)."),
    key: Path | None = typer.Option(None, "--key", help="Private key from `site-client keygen`."),
    insecure: bool = typer.Option(False, "--insecure", help="The coordinator runs without TLS (test networks)."),
    protocol: Path | None = typer.Option(None, "--protocol", help="The study protocol YAML."),
    manifest: Path | None = typer.Option(None, "--manifest", help="Cohort manifest CSV."),
    features: Path | None = typer.Option(None, "--features", help="Ready feature table."),
    work_dir: Path = typer.Option(DEFAULT_WORK_DIR, "--work-dir", help="Site state folder."),
    min_free_gb: float = typer.Option(2.0, "--min-free-gb", help="Free disk space the work folder needs, GiB."),
) -> None:
    """Check this site before a study: software, network, TLS, key, approval, data, disk, clock."""
    work_dir = work_dir.resolve()
    checks = [software(), work_folder(work_dir), proxy_settings()]
    checks += network(coordinator, root_certificates, key, insecure)
    if protocol is not None:
        checks += study(protocol, work_dir, manifest, features)
    checks += [disk_space(work_dir, int(min_free_gb * 1024**3)), clock()]
    for check in checks:
        typer.echo(check.line())
    code = exit_code(checks)
    typer.echo("all checks passed" if code == 0 else "fix the lines marked FIX, then run `site-client doctor` again")
    raise typer.Exit(code)
