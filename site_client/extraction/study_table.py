"""The feature table a study run uses at this site: current at each run's start, fixed until the run ends.

At a run's start (the handshake) the site's data is taken as it is now:

* a feature table (``join --features``) is read as it is;
* a manifest (``join --manifest``) is extracted into the study's work folder by :func:`extract_cohort`, whose
  per-case cache is keyed on the file contents (sha256 of image and mask bytes, mask label, ROI, series, protocol).
  A fixed manifest row or a replaced image therefore gets new features, and only the changed cases are
  extracted again; the table's key is the manifest's digest plus every case's content key.

A snapshot of the data - the manifest's (or table's) sha256 and the size, modification time and inode of every
file it names - is recorded with the table. Every later message of the run compares the files with it (``stat``
only, no re-hashing) and refuses to go on when one changed: the run's cohort stays the one its handshake saw,
never a mix. The next run picks the change up. Details (paths, case ids) go to the site's log only.
"""

from __future__ import annotations

from protocols.files import write_atomic

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from site_client.imaging.inputs import stat_signature
from site_client.manifest import read_manifest
from site_client.tables import read_table

TABLE_FILE = "extracted_features.parquet"
SNAPSHOT_FILE = "data_snapshot.json"

Log = Callable[[list[str]], None]


class StudyDataChanged(ValueError):
    """The site's data changed during a run (or during the extraction at its start); the message holds no path."""


@dataclass
class StudyTable:
    frame: pd.DataFrame
    extracted: int = 0   # cases computed afresh for this run
    unchanged: int = 0   # cases whose files had not changed (taken from the content-keyed cache)
    failed: int = 0
    key: str = ""        # sha256 of the data's digest and every written case's content key


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def data_snapshot(data: Path, kind: str) -> dict:
    """sha256 of the manifest or table, and the stat signature of every image / mask a manifest names."""
    try:
        content = _sha256(data)
    except OSError as exc:  # the reader that follows names the problem
        content = f"unreadable: {exc.strerror or exc}"
    snapshot: dict = {"kind": kind, "sha256": content, "files": []}
    if kind == "manifest":
        for row in read_manifest(data).rows:
            for path in (row.image, row.mask):
                snapshot["files"].extend(stat_signature(path) if path.exists() else [[str(path), -1, -1, -1]])
    return snapshot


def _changes(recorded: dict, current: dict) -> list[str]:
    if recorded.get("sha256") != current.get("sha256"):
        return [f"the {current['kind']} file's content changed"]
    old = {item[0]: item[1:] for item in recorded.get("files", [])}
    new = {item[0]: item[1:] for item in current.get("files", [])}
    return [f"{name}: replaced or modified" for name in sorted(set(old) | set(new)) if old.get(name) != new.get(name)]


def _write_json(folder: Path, name: str, data: dict) -> None:
    write_atomic(folder / name, json.dumps(data, indent=1, sort_keys=True), mode=0o600)


def current_table(data: Path, kind: str, protocol, folder: Path, log: Log) -> StudyTable:
    """The run's feature table from the site's data as it is now; records the snapshot later messages check."""
    folder = Path(folder)
    before = data_snapshot(data, kind)
    if kind == "features":
        table = StudyTable(read_table(data), key=before["sha256"])
    else:
        from site_client.extraction.runner import extract_cohort

        result = extract_cohort(data, protocol, folder / TABLE_FILE, progress=False)
        if result.failed:
            log([f"extraction failed for {len(result.failed)} case(s), see {result.errors_path}"]
                + [f"  {case}: {why}" for case, why in result.failed])
        digest = hashlib.sha256(before["sha256"].encode())
        for case_id in sorted(result.case_keys):
            digest.update(f"\0{case_id}\0{result.case_keys[case_id]}".encode())
        table = StudyTable(read_table(folder / TABLE_FILE), result.rows_written - result.skipped_from_cache,
                           result.skipped_from_cache, len(result.failed), digest.hexdigest())
        log([f"extracted table {table.key[:16]}: {table.extracted} case(s) extracted, {table.unchanged} unchanged, "
             f"{table.failed} failed"])
    after = data_snapshot(data, kind)
    _refuse_changes(before, after, log, "site data changed while the run's table was being read or extracted:",
                    "the site's data changed while it was being read ({n} file(s)); the run was not started with a "
                    "mixed cohort: finish copying the data, then start the run again (details in the site log)")
    _write_json(folder, SNAPSHOT_FILE, {"snapshot": after, "table_key": table.key})
    return table


def refuse_if_changed(data: Path, kind: str, folder: Path, log: Log) -> None:
    """Raise :class:`StudyDataChanged` when the data differs from this run's start (no snapshot: nothing to do)."""
    path = Path(folder) / SNAPSHOT_FILE
    if not path.exists():
        return
    recorded = json.loads(path.read_text(encoding="utf-8"))["snapshot"]
    _refuse_changes(recorded, data_snapshot(data, kind), log, "site data changed during the run; message refused:",
                    "the site's data changed during this run ({n} file(s) since the run's start); a run keeps the "
                    "cohort it started with, so this message is refused; start a new run to use the new data "
                    "(details in the site log)")


def _refuse_changes(recorded: dict, current: dict, log: Log, heading: str, message: str) -> None:
    """Log what changed (paths stay at the site) and raise the generic ``message`` (``{n}``: how many files)."""
    changed = _changes(recorded, current)
    if changed:
        log([heading] + [f"  {c}" for c in changed])
        raise StudyDataChanged(message.format(n=len(changed)))
