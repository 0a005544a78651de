"""The study protocol shared by every site and the coordinator."""

from protocols.errors import ProtocolError
from protocols.identity import canonical_json, protocol_id, short_id
from protocols.loader import load_protocol, parse_protocol
from protocols.schema import Protocol

__all__ = ["Protocol", "ProtocolError", "canonical_json", "load_protocol", "parse_protocol", "protocol_id", "short_id"]
