"""Preflight checks shared by ``site-client doctor`` and ``coordinator doctor``: each check gives one line,
OK or a fix to do, and the commands exit 1 when any line needs a fix (0 otherwise) for scripts.

The network checks go step by step so that each failure names its own cause: the coordinator's name
resolves (DNS), its port is reachable (firewall, proxy), its TLS certificate is signed by the study's
``ca.crt`` (else a wrong ca.crt, or a TLS-inspecting proxy in the way) and names the host dialled.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import shutil
import socket
import ssl
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from cryptography import x509

OK, FIX, WARN, INFO = "OK", "FIX", "WARN", "INFO"
DEFAULT_MIN_FREE_BYTES = 2 * 1024**3
CONNECT_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # OK | FIX | WARN | INFO
    detail: str

    def line(self) -> str:
        return f"{self.status:<4} {self.name}: {self.detail}"


def exit_code(checks: Iterable[Check]) -> int:
    """1 when any check needs a fix, else 0."""
    return 1 if any(c.status == FIX for c in checks) else 0


def split_address(address: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[IPv6]:PORT`` -> (host, port); ValueError naming the expected form."""
    host, sep, port = address.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"address {address!r} is not HOST:PORT (e.g. coordinator.example.org:9092)")
    return host, int(port)


def resolve(host: str) -> Check:
    try:
        addresses = sorted({info[4][0] for info in socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)})
    except socket.gaierror as exc:
        return Check("resolve", FIX, f"{host} does not resolve ({exc.strerror}); check the name with the "
                     "coordinator, and this machine's DNS (or /etc/hosts)")
    return Check("resolve", OK, f"{host} -> {', '.join(addresses)}")


def reach(host: str, port: int, timeout_s: float = CONNECT_TIMEOUT_S) -> Check:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            pass
    except OSError as exc:
        return Check("reach", FIX, f"cannot open a connection to {host}:{port} ({exc.strerror or exc}); the "
                     "SuperLink is not running there, or a firewall blocks outbound TCP to this port")
    return Check("reach", OK, f"{host}:{port} accepts connections")


def _certificate_names(certificate: x509.Certificate) -> list[str]:
    try:
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [str(n) for n in names.get_values_for_type(x509.DNSName)] + \
           [str(n) for n in names.get_values_for_type(x509.IPAddress)]


def _peer_certificate(host: str, port: int, timeout_s: float) -> x509.Certificate | None:
    """The certificate the server presents, without verifying it (to explain a failed verification)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as raw:
            with context.wrap_socket(raw, server_hostname=host) as tls:
                der = tls.getpeercert(binary_form=True)
    except OSError:
        return None
    return x509.load_der_x509_certificate(der) if der else None


def tls(host: str, port: int, ca_file: Path, timeout_s: float = CONNECT_TIMEOUT_S) -> Check:
    """The TLS handshake as the SuperNode makes it: chain verified against ``ca_file``, host name checked."""
    try:
        context = ssl.create_default_context(cafile=str(ca_file))
    except (OSError, ssl.SSLError) as exc:
        return Check("tls", FIX, f"{ca_file} is not a readable PEM CA certificate ({exc}); use the study's ca.crt")
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as raw:
            with context.wrap_socket(raw, server_hostname=host) as connection:
                certificate = x509.load_der_x509_certificate(connection.getpeercert(binary_form=True))
    except ssl.SSLCertVerificationError as exc:
        presented = _peer_certificate(host, port, timeout_s)
        if exc.verify_code in (62, 64):  # X509_V_ERR_HOSTNAME_MISMATCH, X509_V_ERR_IP_ADDRESS_MISMATCH
            names = ", ".join(_certificate_names(presented)) if presented else "?"
            return Check("tls", FIX, f"the coordinator's certificate is valid for {names}, not for {host}: dial one "
                         "of those names, or ask the coordinator for a certificate that names " + host)
        if exc.verify_code == 10:  # X509_V_ERR_CERT_HAS_EXPIRED
            return Check("tls", FIX, "the coordinator's certificate has expired: ask the coordinator to renew it")
        issuer = presented.issuer.rfc4514_string() if presented else "?"
        return Check("tls", FIX, f"the coordinator's certificate (issuer {issuer}) is not signed by the CA in "
                     f"{ca_file} ({exc.verify_message}): use the study's ca.crt; if this network has a "
                     "TLS-inspecting proxy, exempt the coordinator from it")
    except ssl.SSLError as exc:
        return Check("tls", FIX, f"no TLS on {host}:{port} ({exc.reason}); is this the SuperLink's port, and does "
                     "the coordinator run with TLS?")
    except OSError as exc:
        return Check("tls", FIX, f"TLS handshake with {host}:{port} failed ({exc})")
    days = (certificate.not_valid_after_utc - datetime.now(timezone.utc)).days
    status = WARN if days < 14 else OK
    return Check("tls", status, f"certificate for {host} signed by {ca_file.name}, valid {days} more day(s)")


def proxy_settings(local_hosts: Iterable[str] = ("127.0.0.1", "localhost")) -> Check:
    """HTTP(S)_PROXY without NO_PROXY for the local ports would send the SuperNode's own Runtime API calls
    (plain HTTP on 127.0.0.1) to the proxy."""
    proxies = {k: os.environ[k] for k in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY",
                                          "all_proxy") if os.environ.get(k)}
    if not proxies:
        return Check("proxy", OK, "no HTTP(S)_PROXY set: direct connections")
    no_proxy = {h.strip() for h in (os.environ.get("NO_PROXY") or os.environ.get("no_proxy") or "").split(",")}
    missing = [h for h in local_hosts if h not in no_proxy]
    if missing:
        return Check("proxy", FIX, f"{', '.join(sorted(proxies))} set but NO_PROXY lacks {', '.join(missing)}: "
                     f"add them (NO_PROXY={','.join(sorted((no_proxy - {''}) | set(local_hosts)))}) so that local "
                     "ports are not sent to the proxy")
    return Check("proxy", OK, f"proxy {next(iter(proxies.values()))}, local ports exempt via NO_PROXY")


def disk_space(folder: Path, min_free_bytes: int = DEFAULT_MIN_FREE_BYTES) -> Check:
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    free = shutil.disk_usage(existing).free
    text = f"{free / 1024**3:.1f} GiB free for {folder}"
    if free < min_free_bytes:
        return Check("disk", FIX, f"{text}; at least {min_free_bytes / 1024**3:.1f} GiB needed: free space "
                     "or choose another --work-dir")
    return Check("disk", OK, text)


class _Timex(ctypes.Structure):
    # struct timex (linux/timex.h): modes, offset, freq, maxerror, esterror, status, ... (the rest is padding)
    _fields_ = [("modes", ctypes.c_uint), ("offset", ctypes.c_long), ("freq", ctypes.c_long),
                ("maxerror", ctypes.c_long), ("esterror", ctypes.c_long), ("status", ctypes.c_int),
                ("_rest", ctypes.c_byte * 256)]


STA_UNSYNC = 0x0040
TIME_ERROR = 5


def clock_synchronised() -> bool | None:
    """True/False where the system reports it (timedatectl, else the kernel's adjtimex), None when unknown."""
    if shutil.which("timedatectl"):
        try:
            out = subprocess.run(["timedatectl", "show", "-p", "NTPSynchronized", "--value"], capture_output=True,
                                 text=True, timeout=5)
            if out.returncode == 0 and out.stdout.strip() in ("yes", "no"):
                return out.stdout.strip() == "yes"
        except (OSError, subprocess.SubprocessError):
            pass
    library = ctypes.util.find_library("c")
    if library is None:
        return None
    try:
        libc = ctypes.CDLL(library, use_errno=True)
        timex = _Timex()  # modes = 0: read only
        state = libc.adjtimex(ctypes.byref(timex))
    except (OSError, AttributeError):
        return None
    if state < 0:
        return None
    return not (state == TIME_ERROR or timex.status & STA_UNSYNC)


def clock() -> Check:
    synchronised = clock_synchronised()
    if synchronised is None:
        return Check("clock", INFO, "this system does not report whether its clock is synchronised; keep it on "
                     "NTP (Flower refuses signed requests more than a few seconds off)")
    if not synchronised:
        return Check("clock", FIX, "the system clock is not synchronised: enable NTP (e.g. `timedatectl "
                     "set-ntp true`); Flower refuses a SuperNode whose clock is off by more than a few seconds")
    return Check("clock", OK, "synchronised (NTP)")


