"""Command-line helpers shared by ``site-client`` and ``coordinator``: load a protocol or exit 2."""

from __future__ import annotations

import sys
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
