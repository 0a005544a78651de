"""The site's approvals store: which protocol ids this hospital agreed to run, and how many times
(``site-client approve --runs N``, ``site-client revoke``).

File: JSON ``{"approved": [{"protocol_id", "study", "version", "approved_at", "runs", "grant"}]}``, replaced
atomically, readable by the site's service account only (0600). ``runs`` is how many studies (Flower runs)
this approval allows; ``grant`` is a fresh random id per approval, so that a renewed approval (approve again
with ``--runs``, or after a revoke) starts a new count in the privacy ledger while the old runs stay recorded.
Entries written before runs existed read as one run.
"""

from __future__ import annotations

import json
import secrets
from datetime import datetime, timezone
from pathlib import Path

from site_client.flower.audit import PRIVATE_FILE, private_dir
from protocols.files import write_atomic

APPROVALS_FILE = "approvals.json"
DEFAULT_RUNS = 1


class ApprovalsError(ValueError):
    """The approvals file exists but cannot be read (names the file and the problem)."""


def _entries(path: Path) -> list[dict]:
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


def _write(path: Path, entries: list[dict]) -> None:
    private_dir(path.parent)
    write_atomic(path, (json.dumps({"approved": entries}, indent=2) + "\n").encode("utf-8"), mode=PRIVATE_FILE)


def approved_ids(path: Path) -> set[str]:
    """Protocol ids recorded in ``path`` (empty when the file does not exist yet)."""
    return {str(e["protocol_id"]) for e in _entries(path)}


def approval(path: Path, protocol_id: str) -> dict | None:
    """The approval entry of ``protocol_id`` with ``runs`` and ``grant`` filled in, or None."""
    for entry in _entries(path):
        if entry["protocol_id"] == protocol_id:
            return {"runs": DEFAULT_RUNS, "grant": f"legacy-{entry.get('approved_at', '')}", **entry}
    return None


def approve(path: Path, protocol_id: str, study: str, version: str, runs: int | None = None) -> bool:
    """Record ``protocol_id`` allowing ``runs`` studies (default 1). Returns False when it was already approved
    and ``runs`` is None (file unchanged); with ``runs`` an existing approval is renewed (a new grant)."""
    if runs is not None and runs < 1:
        raise ApprovalsError(f"--runs must be at least 1, got {runs}; use `site-client revoke` to withdraw")
    entries = _entries(path)
    if any(e["protocol_id"] == protocol_id for e in entries):
        if runs is None:
            return False
        entries = [e for e in entries if e["protocol_id"] != protocol_id]
    entries.append(
        {
            "protocol_id": protocol_id,
            "study": study,
            "version": version,
            "approved_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "runs": int(runs if runs is not None else DEFAULT_RUNS),
            "grant": secrets.token_hex(8),
        }
    )
    _write(path, entries)
    return True


def revoke(path: Path, protocol_id: str) -> bool:
    """Withdraw the approval of ``protocol_id``; False when it was not approved. The site refuses every later
    message of that protocol, including those of a run in progress."""
    entries = _entries(path)
    kept = [e for e in entries if e["protocol_id"] != protocol_id]
    if len(kept) == len(entries):
        return False
    _write(path, kept)
    return True
