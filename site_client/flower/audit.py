"""Audit log of everything that left the site: one JSON line per reply in ``<work-dir>/audit.jsonl``.

Each record: ``time`` (UTC ISO), ``run_id``, ``phase``, ``status`` ("reply" or "error"), ``keys``,
``arrays`` (key -> shape, dtype), ``values`` (every non-array value, verbatim: they are small and
the hospital must be able to see them), ``bytes`` (payload size, :func:`protocols.payload.payload_nbytes`).
Lines are appended with one ``write`` + fsync, so a crash can at worst leave a truncated last line,
which :func:`read_audit` reports by line number instead of hiding it.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from protocols.payload import payload_nbytes

AUDIT_FILE = "audit.jsonl"


class AuditLogError(ValueError):
    """A line of the audit log that is not a valid record (names file and line)."""


def audit_record(run_id: int, phase: str, payload: dict[str, Any], status: str = "reply") -> dict[str, Any]:
    """Describe one outgoing message (no array contents: shapes and dtypes only)."""
    arrays = {k: {"shape": list(v.shape), "dtype": str(v.dtype)} for k, v in payload.items() if isinstance(v, np.ndarray)}
    values = {k: v for k, v in payload.items() if not isinstance(v, np.ndarray)}
    return {
        "time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
        "run_id": int(run_id),
        "phase": phase,
        "status": status,
        "keys": sorted(payload),
        "arrays": arrays,
        "values": json.loads(json.dumps(values, default=str)),
        "bytes": payload_nbytes(payload),
    }


def append_audit(work_dir: Path, record: dict[str, Any]) -> None:
    """Append one record durably."""
    work_dir.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(record, sort_keys=True) + "\n").encode("utf-8")
    fd = os.open(work_dir / AUDIT_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def read_audit(work_dir: Path) -> list[dict[str, Any]]:
    """All records, oldest first; an unreadable line raises :class:`AuditLogError` naming it."""
    path = work_dir / AUDIT_FILE
    if not path.exists():
        return []
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise AuditLogError(f"{path}, line {number}: not a JSON record ({exc.msg})") from None
        if not isinstance(record, dict) or "phase" not in record:
            raise AuditLogError(f"{path}, line {number}: record without a phase")
        records.append(record)
    return records
