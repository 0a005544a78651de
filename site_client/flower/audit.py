"""Tamper-evident audit log of both directions: every request that reached the site and every reply (or error)
that left it, one JSON line each in ``<work-dir>/audit.jsonl``.

Each record: ``seq`` (0, 1, 2, ...), ``time`` (UTC ISO), ``run_id``, ``phase``, ``direction`` ("in" for a
request, "out" for a reply or an error), ``status`` ("request", "reply", "error" or "refused"), ``keys``,
``arrays`` (key -> shape, dtype), ``values`` (every non-array value, verbatim: they are small and the hospital
must be able to see them), ``bytes`` (payload size, :func:`protocols.payload.payload_nbytes`), ``digest`` (SHA-256
of the payload's canonical form, :func:`payload_digest`, so the hospital can match a record with a message kept
elsewhere), ``prev`` (the previous record's ``hash``; 64 zeros for the first) and ``hash`` =
SHA-256(canonical JSON of the record without ``hash``).

The chain makes an edited, removed or inserted record visible to :func:`verify_audit`: editing a record breaks
its own hash, removing or inserting one breaks the next record's ``prev`` and the ``seq`` numbering. Cutting
records off the end is detected against ``audit.head`` (the count and last hash, replaced atomically after each
append). Someone holding the site's service account can rewrite the whole chain consistently; the head hash
that ``site-client audit --verify`` prints is what a hospital copies elsewhere (a ticket, a printout) to detect
that too. The log, its head and the work folder are readable by the service account only (0600 / 0700);
every append is one ``write`` + fsync under an exclusive lock, so concurrent ClientApp processes never
interleave and a crash can at worst leave a truncated last line, reported by line number.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from protocols.payload import payload_nbytes
from protocols.files import write_atomic

AUDIT_FILE = "audit.jsonl"
HEAD_FILE = "audit.head"
LOCK_FILE = ".audit.lock"
GENESIS = "0" * 64
PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700


class AuditLogError(ValueError):
    """A line of the audit log that is not a valid record (names file and line)."""


def private_dir(path: Path) -> Path:
    """Create ``path`` (and parents) if needed and make it readable by the service account only (0700)."""
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, PRIVATE_DIR)
    return path


def payload_digest(payload: dict[str, Any]) -> str:
    """SHA-256 over the payload's canonical form: for each key in sorted order the key, then for an array its
    dtype, shape and C-order bytes, for any other value its JSON text (sorted keys)."""
    h = hashlib.sha256()
    for key in sorted(payload):
        value = payload[key]
        h.update(key.encode("utf-8") + b"\0")
        if isinstance(value, np.ndarray):
            array = np.ascontiguousarray(value)
            h.update(f"{array.dtype.str}{array.shape}".encode() + b"\0" + array.tobytes())
        else:
            h.update(json.dumps(value, sort_keys=True, default=str).encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()


def audit_record(run_id: int, phase: str, payload: dict[str, Any], status: str = "reply") -> dict[str, Any]:
    """Describe one message (no array contents: shapes, dtypes and a digest only). ``status`` "request" marks
    an incoming message; "reply", "error" and "refused" outgoing ones."""
    arrays = {k: {"shape": list(v.shape), "dtype": str(v.dtype)} for k, v in payload.items() if isinstance(v, np.ndarray)}
    values = {k: v for k, v in payload.items() if not isinstance(v, np.ndarray)}
    return {
        "time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
        "run_id": int(run_id),
        "phase": phase,
        "direction": "in" if status == "request" else "out",
        "status": status,
        "keys": sorted(payload),
        "arrays": arrays,
        "values": json.loads(json.dumps(values, default=str)),
        "bytes": payload_nbytes(payload),
        "digest": payload_digest(payload),
    }


def record_hash(record: dict[str, Any]) -> str:
    """SHA-256 of the record's canonical JSON without its own ``hash`` field."""
    body = {k: v for k, v in record.items() if k != "hash"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode("utf-8")).hexdigest()


def _read_head(work_dir: Path) -> tuple[int, str]:
    path = work_dir / HEAD_FILE
    if not path.exists():
        return 0, GENESIS
    try:
        head = json.loads(path.read_text(encoding="utf-8"))
        return int(head["count"]), str(head["hash"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise AuditLogError(f"{path}: unreadable audit head ({exc}); run `site-client audit --verify`") from None


def append_audit(work_dir: Path, record: dict[str, Any]) -> dict[str, Any]:
    """Chain ``record`` to the log (sets ``seq``, ``prev``, ``hash``) and append it durably; returns it."""
    private_dir(work_dir)
    lock = os.open(work_dir / LOCK_FILE, os.O_WRONLY | os.O_CREAT, PRIVATE_FILE)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        count, prev = _read_head(work_dir)
        chained = {**{k: v for k, v in record.items() if k not in ("seq", "prev", "hash")}, "seq": count, "prev": prev}
        chained["hash"] = record_hash(chained)
        line = (json.dumps(chained, sort_keys=True) + "\n").encode("utf-8")
        fd = os.open(work_dir / AUDIT_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, PRIVATE_FILE)
        try:
            os.fchmod(fd, PRIVATE_FILE)
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)
        head = {"count": count + 1, "hash": chained["hash"]}
        write_atomic(work_dir / HEAD_FILE, (json.dumps(head) + "\n").encode("utf-8"), mode=PRIVATE_FILE)
        return chained
    finally:
        os.close(lock)


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


@dataclass(frozen=True)
class AuditVerdict:
    """Outcome of :func:`verify_audit`: ``problems`` empty means the chain is intact up to ``head``."""

    count: int
    head: str
    problems: list[str]

    @property
    def intact(self) -> bool:
        return not self.problems


def verify_audit(work_dir: Path) -> AuditVerdict:
    """Re-walk the chain: each record's hash, its link to the previous record, its sequence number, and the
    head file's count and hash. Every problem names the line (1-based) and what is wrong."""
    path = work_dir / AUDIT_FILE
    problems: list[str] = []
    prev, count = GENESIS, 0
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    for number, line in enumerate(lines, start=1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            problems.append(f"line {number}: not a JSON record (truncated or edited)")
            continue
        if not isinstance(record, dict) or "hash" not in record or "prev" not in record:
            problems.append(f"line {number}: record without a hash chain (written before chaining, or edited)")
            continue
        if record.get("seq") != count:
            problems.append(f"line {number}: sequence number {record.get('seq')} where {count} was expected "
                            "(a record was removed or inserted before it)")
        if record["prev"] != prev:
            problems.append(f"line {number}: does not follow the previous record (a record before it was "
                            "removed, inserted or edited)")
        if record_hash(record) != record["hash"]:
            problems.append(f"line {number}: content does not match its hash (the record was edited)")
        prev, count = record["hash"], count + 1
    try:
        head_count, head_hash = _read_head(work_dir)
    except AuditLogError as exc:
        problems.append(str(exc))
    else:
        if (work_dir / HEAD_FILE).exists() and (head_count, head_hash) != (count, prev):
            problems.append(f"{HEAD_FILE}: records {count}, last hash {prev[:12]}; the head says {head_count} "
                            f"records ending {head_hash[:12]} (records were cut off the end or the head was edited)")
        elif not (work_dir / HEAD_FILE).exists() and count:
            problems.append(f"{HEAD_FILE} is missing while the log holds {count} record(s)")
    return AuditVerdict(count, prev, problems)
