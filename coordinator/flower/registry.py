"""Site names of registered SuperNode keys (``<state-dir>/sites.json``): Flower's CLI lists node ids only."""

from __future__ import annotations

import json
from pathlib import Path

from protocols.files import write_atomic


def registry_path(state_dir: Path) -> Path:
    return state_dir.resolve() / "sites.json"


def load_registry(state_dir: Path) -> dict[str, str]:
    """node id (as text) -> site name."""
    path = registry_path(state_dir)
    if not path.exists():
        return {}
    return {str(k): str(v) for k, v in json.loads(path.read_text(encoding="utf-8")).items()}


def record_site(state_dir: Path, node_id: str, name: str) -> None:
    entries = load_registry(state_dir)
    entries[str(node_id)] = name
    path = registry_path(state_dir)
    write_atomic(path, json.dumps(entries, indent=1, sort_keys=True), mode=0o600)
