"""docs/protocol.md documents every protocol field with its current default."""

from __future__ import annotations

from pathlib import Path

from protocols.reference import BEGIN, END, field_docs, render_table

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"


def test_every_field_has_a_description() -> None:
    undocumented = [row.path for row in field_docs() if not row.description]
    assert undocumented == [], f"add a description= to these schema fields: {undocumented}"


def test_generated_table_in_docs_is_current() -> None:
    text = DOC.read_text(encoding="utf-8")
    table = text.split(BEGIN, 1)[1].split(END, 1)[0].strip()
    assert table == render_table(), "docs/protocol.md is stale: run `python -m protocols.reference docs/protocol.md`"


def test_each_field_and_default_appears_in_docs() -> None:
    text = DOC.read_text(encoding="utf-8")
    for row in field_docs():
        assert f"| `{row.path}` |" in text
        assert f"`{row.default}`" in text
