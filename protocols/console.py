"""Command-line helpers shared by ``site-client`` and ``coordinator``: load a protocol or exit 2; ``--version``."""

from __future__ import annotations

import platform
import sys
from importlib import metadata
from pathlib import Path

from protocols.errors import ProtocolError
from protocols.identity import protocol_id
from protocols.loader import load_protocol
from protocols.schema import Protocol


def load_protocol_for_command(path: Path, *, announce: bool = True) -> tuple[Protocol, str]:
    """Load and validate; print the protocol id on stderr. Invalid protocol: message on stderr, exit code 2."""
    try:
        protocol = load_protocol(path)
    except ProtocolError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(exc.exit_code) from None
    identifier = protocol_id(protocol)
    if announce:
        print(f"protocol {protocol.study.name} v{protocol.study.version} id {identifier}", file=sys.stderr)
    return protocol, identifier


def version_line() -> str:
    """``fedradval X (flwr Y, Python Z)`` from the installed packages' metadata: every site must run the same
    fedradval release, and Flower's version decides whether its SuperNode can talk to the SuperLink."""
    from flowerglue.versions import fedradval_version, flower_version

    try:
        flower = flower_version()
    except metadata.PackageNotFoundError:
        flower = "not installed"
    return f"fedradval {fedradval_version()} (flwr {flower}, Python {platform.python_version()})"


def print_version_and_exit(requested: bool) -> None:
    """Callback of the eager ``--version`` option of both CLIs."""
    if requested:
        print(version_line())
        raise SystemExit(0)
