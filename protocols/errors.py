"""Errors raised while reading a protocol."""

from __future__ import annotations


class ProtocolError(ValueError):
    """A protocol file that cannot be used. ``problems`` lists one line per invalid field."""

    exit_code = 2

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"invalid protocol {source}:\n{lines}")
