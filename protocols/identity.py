"""Protocol id: sha256 of a canonical serialisation of the fully resolved protocol.

Canonical form = JSON of every field (defaults included), keys sorted, no whitespace, floats in
Python's shortest round-trip repr, UTF-8. Two files that resolve to the same protocol share an id;
any change of any setting, including a changed default, changes it.
"""

from __future__ import annotations

import hashlib
import json

from protocols.schema import Protocol


def canonical_json(protocol: Protocol) -> str:
    """The exact byte string that is hashed."""
    return json.dumps(protocol.model_dump(mode="json"), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def protocol_id(protocol: Protocol) -> str:
    """Full 64-hex sha256 of :func:`canonical_json`."""
    return hashlib.sha256(canonical_json(protocol).encode("utf-8")).hexdigest()


def short_id(protocol: Protocol) -> str:
    """First 12 hex digits, for display."""
    return protocol_id(protocol)[:12]
