"""The site's approvals store: which protocol ids this hospital agreed to run (``site-client approve``).

File: JSON ``{"approved": [{"protocol_id", "study", "version", "approved_at"}]}``, replaced atomically.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

from site_client.flower.files import write_atomic

APPROVALS_FILE = "approvals.json"


class ApprovalsError(ValueError):
    """The approvals file exists but cannot be read (names the file and the problem)."""


def _entries(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ApprovalsError(f"{path}: cannot read the approvals file ({exc}); re-run `site-client approve`") from None
    entries = data.get("approved") if isinstance(data, dict) else None
    if not isinstance(entries, list) or not all(isinstance(e, dict) and "protocol_id" in e for e in entries):
        raise ApprovalsError(f"{path}: expected {{\"approved\": [{{\"protocol_id\": ...}}]}}; re-run `site-client approve`")
    return entries


def approved_ids(path: Path) -> set[str]:
    """Protocol ids recorded in ``path`` (empty when the file does not exist yet)."""
    return {str(e["protocol_id"]) for e in _entries(path)}


def approve(path: Path, protocol_id: str, study: str, version: str) -> bool:
    """Record ``protocol_id``; returns False when it was already approved (file unchanged)."""
    entries = _entries(path)
    if any(e["protocol_id"] == protocol_id for e in entries):
        return False
    entries.append(
        {
            "protocol_id": protocol_id,
            "study": study,
            "version": version,
            "approved_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
    )
    write_atomic(path, (json.dumps({"approved": entries}, indent=2) + "\n").encode("utf-8"))
    return True
