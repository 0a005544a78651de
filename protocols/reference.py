"""Field reference of the protocol schema, used to generate and check docs/protocol.md.

``python -m protocols.reference docs/protocol.md`` rewrites the generated table between the markers;
a test fails when a schema field is missing from the document or its default there is out of date.
"""

from __future__ import annotations

import json
import sys
import typing
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from protocols.schema import Protocol

BEGIN = "<!-- BEGIN GENERATED FIELD TABLE -->"
END = "<!-- END GENERATED FIELD TABLE -->"


@dataclass(frozen=True)
class FieldDoc:
    path: str
    type: str
    default: str
    description: str


def _type_name(annotation: object) -> str:
    text = str(annotation).replace("typing.", "")
    if isinstance(annotation, type):
        text = annotation.__name__
    return text.replace("NoneType", "null").replace("protocols.schema.", "")


def _nested_model(annotation: object) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def _list_model(annotation: object) -> type[BaseModel] | None:
    if typing.get_origin(annotation) is list:
        (inner,) = typing.get_args(annotation)
        return _nested_model(inner)
    return None


def _union_models(annotation: object) -> list[type[BaseModel]]:
    """The forms of a section that takes one of several models (e.g. binary or survival label)."""
    if typing.get_origin(annotation) is not typing.Union:
        return []
    forms = [_nested_model(typing.get_args(a)[0] if typing.get_origin(a) is typing.Annotated else a) for a in typing.get_args(annotation)]
    return [m for m in forms if m is not None] if all(forms) else []


def _default_text(info) -> str:
    if info.default is not PydanticUndefined:
        value = info.default
    elif info.default_factory is not None:
        value = info.default_factory()
    else:
        return "required"
    if isinstance(value, BaseModel):
        return "(section)"
    return json.dumps(value)


def field_docs(model: type[BaseModel] = Protocol, prefix: str = "") -> list[FieldDoc]:
    """Every field of the schema, depth first, with dotted paths (list items as ``name[]``)."""
    rows: list[FieldDoc] = []
    for name, info in model.model_fields.items():
        path = f"{prefix}{name}"
        nested = _nested_model(info.annotation)
        items = _list_model(info.annotation)
        forms = _union_models(info.annotation)
        description = (info.description or (nested.__doc__ if nested else "") or "").strip().splitlines()[0] if (
            info.description or nested
        ) else ""
        if nested is not None:
            rows.append(FieldDoc(path, "section", _default_text(info), description))
            rows.extend(field_docs(nested, f"{path}."))
        elif forms:
            rows.append(FieldDoc(path, "section", _default_text(info), description))
            for form in forms:
                rows.extend(field_docs(form, f"{path}."))
        elif items is not None:
            rows.append(FieldDoc(path, f"list of {items.__name__}", _default_text(info), (items.__doc__ or "").strip().splitlines()[0]))
            rows.extend(field_docs(items, f"{path}[]."))
        else:
            rows.append(FieldDoc(path, _type_name(info.annotation), _default_text(info), description))
    return rows


def render_table() -> str:
    lines = ["| field | type | default | meaning |", "|---|---|---|---|"]
    for row in field_docs():
        meaning = row.description.replace("|", "\\|")
        lines.append(f"| `{row.path}` | {row.type.replace('|', 'or')} | `{row.default}` | {meaning} |")
    return "\n".join(lines)


def update_document(path: Path, table: str | None = None, begin: str = BEGIN, end: str = END) -> None:
    """Replace what lies between the ``begin`` and ``end`` markers of ``path`` by ``table`` (default: the
    protocol field table)."""
    text = path.read_text(encoding="utf-8")
    head, _, rest = text.partition(begin)
    _, _, tail = rest.partition(end)
    path.write_text(f"{head}{begin}\n{render_table() if table is None else table.rstrip()}\n{end}{tail}", encoding="utf-8")


if __name__ == "__main__":
    update_document(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/protocol.md"))
