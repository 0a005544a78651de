"""The audit log records both directions, chains every record to the previous one, and `site-client audit
--verify` names an edited, removed, inserted or cut-off record; the site's files are private to its account."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from site_client.flower.audit import AUDIT_FILE, HEAD_FILE, append_audit, audit_record, payload_digest, read_audit, verify_audit

BIN = Path(sys.executable).parent


def _log(work: Path, n: int = 5) -> None:
    for i in range(n):
        status = "request" if i % 2 == 0 else "reply"
        append_audit(work, audit_record(3, "train", {"round": i, "w/m/0": np.full((2, 3), float(i))}, status=status))


def _lines(work: Path) -> list[str]:
    return (work / AUDIT_FILE).read_text().splitlines()


def _write(work: Path, lines: list[str]) -> None:
    (work / AUDIT_FILE).write_text("\n".join(lines) + "\n")


def _verify_cli(work: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "site-client"), "audit", "--verify", "--work-dir", str(work)],
                          capture_output=True, text=True, timeout=120)


def test_intact_chain_verifies_and_records_both_directions(tmp_path: Path) -> None:
    _log(tmp_path)
    records = read_audit(tmp_path)
    assert [r["direction"] for r in records] == ["in", "out", "in", "out", "in"]
    assert [r["seq"] for r in records] == list(range(5))
    assert records[0]["arrays"] == {"w/m/0": {"shape": [2, 3], "dtype": "float64"}}
    assert all(b["prev"] == a["hash"] for a, b in zip(records, records[1:]))
    verdict = verify_audit(tmp_path)
    assert verdict.intact and verdict.count == 5 and verdict.head == records[-1]["hash"]
    shown = _verify_cli(tmp_path)
    assert shown.returncode == 0 and f"audit log intact: 5 record(s), head hash {records[-1]['hash']}" in shown.stdout


def test_digest_is_sha256_of_the_canonical_payload(tmp_path: Path) -> None:
    import hashlib

    array = np.arange(6, dtype=np.float64).reshape(2, 3)
    expected = hashlib.sha256(b"n\0" + b"4" + b"\0" + b"w\0" + b"<f8(2, 3)\0" + array.tobytes() + b"\0").hexdigest()
    assert payload_digest({"w": array, "n": 4}) == expected
    assert payload_digest({"w": array + 1e-12, "n": 4}) != expected


@pytest.mark.parametrize(
    "tamper, expected",
    [
        ("edit", "line 3: content does not match its hash (the record was edited)"),
        ("remove", "line 3: sequence number 3 where 2 was expected"),
        ("insert", "line 3: content does not match its hash"),
        ("truncate", "records were cut off the end or the head was edited"),
        ("reorder", "line 2: sequence number 2 where 1 was expected"),
    ],
)
def test_verify_names_the_tampered_record(tmp_path: Path, tamper: str, expected: str) -> None:
    _log(tmp_path)
    lines = _lines(tmp_path)
    if tamper == "edit":  # a record's reported shape changed after the fact
        record = json.loads(lines[2])
        record["arrays"]["w/m/0"]["shape"] = [1, 1]
        lines[2] = json.dumps(record, sort_keys=True)
    elif tamper == "remove":
        del lines[2]
    elif tamper == "insert":  # a forged record copied from another and re-linked by hand
        forged = json.loads(lines[1])
        forged["phase"] = "evaluate"
        lines.insert(2, json.dumps(forged, sort_keys=True))
    elif tamper == "truncate":
        lines = lines[:3]
    elif tamper == "reorder":
        lines[1], lines[2] = lines[2], lines[1]
    _write(tmp_path, lines)
    verdict = verify_audit(tmp_path)
    assert not verdict.intact
    assert any(expected in p for p in verdict.problems), verdict.problems
    if tamper == "edit":  # the command the hospital runs (one case: each start of the CLI costs seconds)
        shown = _verify_cli(tmp_path)
        assert shown.returncode == 1 and "TAMPERED" in shown.stderr and expected in shown.stderr


def test_audit_and_head_are_private_to_the_service_account(tmp_path: Path) -> None:
    work = tmp_path / "site"
    _log(work, 1)
    assert stat.S_IMODE(work.stat().st_mode) == 0o700
    assert stat.S_IMODE((work / AUDIT_FILE).stat().st_mode) == 0o600
    assert stat.S_IMODE((work / HEAD_FILE).stat().st_mode) == 0o600
