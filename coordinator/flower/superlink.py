"""The SuperLink command line: persistent state, TLS, SuperNode authentication, nothing installed at run time."""

from __future__ import annotations

from pathlib import Path

from coordinator.flower.certs import check_certificate_folder

INSECURE_WARNING = (
    "WARNING: --insecure: the SuperLink runs WITHOUT TLS. Model updates travel in clear text and SuperNode "
    "authentication is OFF (Flower requires TLS for it): any machine that reaches this port can join the "
    "study as a site. Use this only on a closed test network."
)


def superlink_command(
    executable: str,
    database: Path | None,
    certs: Path | None,
    insecure: bool,
    host: str = "127.0.0.1",
    port: int = 8000,
) -> list[str]:
    """Arguments for ``flower-superlink``; TLS + ``--enable-supernode-auth`` unless ``insecure``.

    ``database=None`` keeps Flower's state in memory: nothing survives a restart, but no SQLite lock can time
    out under load (Flower 1.41 gives up after a fixed 5 s), which suits one-machine demos.
    """
    command = [
        executable,
        *(["--database", str(database)] if database is not None else []),
        "--disable-runtime-dependency-installation",
        "--host",
        host,
        "--port",
        str(port),
    ]
    if insecure:
        return command + ["--insecure"]
    if certs is None:
        raise ValueError("TLS needs a certificate folder (--certs DIR with ca.crt, server.pem, server.key)")
    files = check_certificate_folder(certs)
    return command + [
        "--ssl-ca-certfile",
        str(files["ca.crt"]),
        "--ssl-certfile",
        str(files["server.pem"]),
        "--ssl-keyfile",
        str(files["server.key"]),
        "--enable-supernode-auth",
    ]
