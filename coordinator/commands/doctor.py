"""``coordinator doctor``: check the coordinator's side before a study, one line each (exit 1 on any FIX).

Certificates (server certificate signed by the study CA, names, expiry), the SuperLink answering with
that certificate on its address, the Control API (``flwr ls``), the registered sites, the MLflow server,
Flower in the pinned range, disk space and the clock.
"""

from __future__ import annotations

import tomllib
import urllib.error
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

import typer
from cryptography import x509
from cryptography.exceptions import InvalidSignature

from coordinator.cli import app
from coordinator.flower.certs import CERT_FILES
from coordinator.flower.flwr_cli import FlwrCommandError, list_runs, list_supernodes
from coordinator.flower.registry import load_registry
from coordinator.flower.state import DEFAULT_STATE_DIR, flwr_home
from flowerglue.preflight import FIX, INFO, OK, WARN, Check, clock, disk_space, exit_code, reach, resolve, split_address, tls
from flowerglue.versions import fedradval_version, flower_version, flower_version_problem


def software() -> Check:
    problem = flower_version_problem()
    if problem:
        return Check("software", FIX, problem)
    return Check("software", OK, f"fedradval {fedradval_version()}, Flower {flower_version()}")


def certificates(cert_dir: Path) -> list[Check]:
    missing = [name for name in CERT_FILES if not (cert_dir / name).is_file()]
    if missing:
        return [Check("certificates", FIX, f"{cert_dir} lacks {', '.join(missing)}: `coordinator certs {cert_dir} "
                      "--host <name sites dial>` or your organisation's CA")]
    try:
        ca = x509.load_pem_x509_certificate((cert_dir / "ca.crt").read_bytes())
        server = x509.load_pem_x509_certificate((cert_dir / "server.pem").read_bytes())
        server.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature) as exc:
        return [Check("certificates", FIX, f"server.pem is not signed by ca.crt in {cert_dir} ({exc or 'signature'}):"
                      " recreate the server certificate with the study CA")]
    try:
        names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        shown = [str(v) for v in names.get_values_for_type(x509.DNSName)] + \
                [str(v) for v in names.get_values_for_type(x509.IPAddress)]
    except x509.ExtensionNotFound:
        shown = []
    days = (server.not_valid_after_utc - datetime.now(timezone.utc)).days
    status = FIX if days < 0 else WARN if days < 14 else OK
    return [Check("certificates", status, f"server certificate signed by the study CA, for {', '.join(shown) or '?'}"
                  f", {'expired' if days < 0 else f'valid {days} more day(s)'}")]


def profile_address(state_dir: Path) -> str | None:
    config = flwr_home(state_dir) / "config.toml"
    if not config.is_file():
        return None
    data = tomllib.loads(config.read_text(encoding="utf-8"))
    profile = data.get("superlink", {}).get("default", "")
    return data.get("superlink", {}).get(profile, {}).get("address")


def superlink(state_dir: Path, address: str, cert_dir: Path, insecure: bool) -> list[Check]:
    try:
        host, port = split_address(address)
    except ValueError as exc:
        return [Check("superlink", FIX, str(exc))]
    checks = [resolve(host)]
    if checks[-1].status == OK:
        checks.append(reach(host, port))
    if checks[-1].status == OK and not insecure and (cert_dir / "ca.crt").is_file():
        checks.append(tls(host, port, cert_dir / "ca.crt"))
    if checks[-1].status not in (OK, WARN):
        return checks
    home = flwr_home(state_dir)
    try:
        runs = list_runs(home)
        nodes = list_supernodes(home)
    except (FlwrCommandError, OSError) as exc:
        return checks + [Check("control api", FIX, f"`flwr ls` failed: {exc}")]
    checks.append(Check("control api", OK, f"answers; {len(runs)} run(s) known"))
    names = load_registry(state_dir)
    online = [names.get(str(n.get("node-id")), str(n.get("node-id"))) for n in nodes if n.get("status") == "online"]
    others = [names.get(str(n.get("node-id")), str(n.get("node-id"))) for n in nodes if n.get("status") != "online"]
    if not nodes:
        checks.append(Check("sites", INFO, "no site registered yet: `coordinator register-site NAME KEY.pub`"))
    else:
        checks.append(Check("sites", OK if online else INFO, f"{len(nodes)} registered; online: "
                            f"{', '.join(sorted(online)) or 'none'}; not online: {', '.join(sorted(others)) or 'none'}"))
    return checks


def mlflow(uri: str) -> Check:
    if not uri.startswith(("http://", "https://")):
        return Check("mlflow", INFO, f"{uri}: a local store, nothing to reach")
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=10) as response:
            body = response.read(100).decode(errors="replace").strip()
    except (urllib.error.URLError, OSError) as exc:
        return Check("mlflow", FIX, f"{uri} does not answer ({exc}): start the MLflow server (deploy/systemd/"
                     "fedradval-mlflow.service) or fix --mlflow-uri")
    return Check("mlflow", OK, f"{uri} answers ({body or 'ok'})")


@app.command("doctor")
def doctor(
    state_dir: Path = typer.Option(DEFAULT_STATE_DIR, "--state-dir", help="Coordinator state folder."),
    certs: Path | None = typer.Option(None, "--certs", help="Certificate folder [<state-dir>/certs]."),
    address: str | None = typer.Option(None, "--address", help="SuperLink HOST:PORT as sites dial it [the profile's]."),
    insecure: bool = typer.Option(False, "--insecure", help="The SuperLink runs without TLS (test networks)."),
    mlflow_uri: str = typer.Option("", "--mlflow-uri", help="MLflow tracking URI to check (empty: not checked)."),
    min_free_gb: float = typer.Option(2.0, "--min-free-gb", help="Free disk space the state folder needs, GiB."),
) -> None:
    """Check the coordinator before a study: software, certificates, SuperLink, sites, MLflow, disk, clock."""
    state_dir = state_dir.resolve()
    cert_dir = (certs or state_dir / "certs").resolve()
    checks = [software()]
    if not insecure:
        checks += certificates(cert_dir)
    address = address or profile_address(state_dir)
    if address is None:
        checks.append(Check("superlink", FIX, f"no connection profile in {flwr_home(state_dir)}: run `coordinator "
                            f"start --state-dir {state_dir}` (or give --address)"))
    else:
        checks += superlink(state_dir, address, cert_dir, insecure)
    if mlflow_uri:
        checks.append(mlflow(mlflow_uri))
    checks += [disk_space(state_dir, int(min_free_gb * 1024**3)), clock()]
    for check in checks:
        typer.echo(check.line())
    code = exit_code(checks)
    typer.echo("all checks passed" if code == 0 else "fix the lines marked FIX, then run `coordinator doctor` again")
    raise typer.Exit(code)
