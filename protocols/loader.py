"""Load a study protocol from YAML into the typed schema, with errors that name field, value and rule."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from protocols.errors import ProtocolError
from protocols.schema import Protocol


def _field_path(location: tuple[Any, ...]) -> str:
    parts: list[str] = []
    for item in location:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        else:
            parts.append(("." if parts else "") + str(item))
    return "".join(parts) or "(top level)"


def _describe(error: dict[str, Any]) -> str:
    """One line: field, offending value, and what is allowed (pydantic's message carries the rule)."""
    field = _field_path(tuple(error.get("loc", ())))
    kind = error.get("type", "")
    if kind == "extra_forbidden":
        return f"{field}: unknown field (value {error.get('input')!r}); check the spelling against docs/protocol.md"
    if kind == "missing":
        return f"{field}: required field is missing"
    message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
    value = error.get("input")
    shown = repr(value) if not isinstance(value, dict) else "{...}"
    return f"{field}: got {shown}; {message}"


def parse_protocol(data: Any, source: str = "<protocol>") -> Protocol:
    """Validate an already-parsed mapping. Raises :class:`ProtocolError` listing every invalid field."""
    if not isinstance(data, dict):
        raise ProtocolError(source, [f"(top level): expected a mapping of sections, got {type(data).__name__}"])
    try:
        return Protocol.model_validate(data)
    except ValidationError as exc:
        raise ProtocolError(source, [_describe(e) for e in exc.errors()]) from None


def load_protocol(path: str | Path) -> Protocol:
    """Read and validate a protocol YAML file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ProtocolError(str(path), [f"cannot read the file: {exc.strerror or exc}"]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ProtocolError(str(path), [f"not valid YAML: {exc}"]) from None
    return parse_protocol(data, str(path))
