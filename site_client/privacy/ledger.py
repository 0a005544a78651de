"""The site's privacy ledger: what each approved protocol has been allowed to ask, persisted in the work folder.

One JSON file per protocol id, ``<work-dir>/privacy/<protocol id[:16]>.json`` (0600, replaced atomically with
fsync under an exclusive lock, so that concurrent ClientApp processes never lose an update)::

    {"grants": {<grant>: [run ids started under that approval]},
     "runs": {<run id>: {"train_rounds": [...], "recalibration_steps": [...], "models": [...],
                         "evaluations": {"calibrate|<model>": n, "evaluate|<model>": n},
                         "withheld": [aggregates the release guard withheld]}},
     "released_totals": [class × part totals released in any run (release_guard)],
     "releases": {<run id>: {<phase>: [release kinds]}},
     "refusals": [{"time", "run_id", "phase", "budget"}]}

A request is charged before the site computes anything; a request beyond a budget is refused and the refusal
recorded here and in the site log. Charging before computing means a request that later fails still counts:
the ledger errs on the side of the patient.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from site_client.flower.audit import PRIVATE_FILE, private_dir
from protocols.files import write_atomic

LEDGER_DIR = "privacy"
IN_PROCESS_RUN = "local"  # the run key of a study served without Flower (tests, benchmarks): one study per work folder


class BudgetExceeded(PermissionError):
    """A request beyond the privacy budget of the protocol. ``str()`` is the generic text the coordinator gets
    (budget name and limit only); ``detail`` holds what the site's own log shows."""

    def __init__(self, protocol_id: str, budget: str, limit: object, detail: str = "") -> None:
        self.protocol_id, self.budget, self.limit, self.detail = protocol_id, budget, limit, detail
        super().__init__(f"request not allowed by the privacy budget of protocol {protocol_id[:12]}: "
                         f"{budget} (limit {limit})")


def ledger_path(work_dir: Path, protocol_id: str) -> Path:
    return Path(work_dir) / LEDGER_DIR / f"{protocol_id[:16]}.json"


def run_key(run_id: int | None) -> str:
    return IN_PROCESS_RUN if run_id is None else str(int(run_id))


class Ledger:
    """Read-modify-write access to one protocol's ledger: use :meth:`open` (holds the lock, saves on success)."""

    def __init__(self, path: Path, data: dict[str, Any]) -> None:
        self.path = path
        self.data = data

    @classmethod
    @contextmanager
    def open(cls, work_dir: Path, protocol_id: str) -> Iterator["Ledger"]:
        path = ledger_path(work_dir, protocol_id)
        private_dir(Path(work_dir))
        private_dir(path.parent)
        lock = os.open(path.with_suffix(".lock"), os.O_WRONLY | os.O_CREAT, PRIVATE_FILE)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            data = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
            for key in ("grants", "runs", "releases"):
                data.setdefault(key, {})
            data.setdefault("released_totals", [])
            data.setdefault("refusals", [])
            ledger = cls(path, data)
            try:
                yield ledger
            finally:  # refusals are recorded too, so save whether or not the block raised
                write_atomic(path, (json.dumps(ledger.data, indent=1, sort_keys=True) + "\n").encode("utf-8"),
                             mode=PRIVATE_FILE)
        finally:
            os.close(lock)

    @classmethod
    def read(cls, work_dir: Path, protocol_id: str) -> dict[str, Any]:
        """The ledger's content (empty structure when nothing was recorded yet)."""
        path = ledger_path(work_dir, protocol_id)
        data = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
        return {"grants": {}, "runs": {}, "releases": {}, "refusals": [], "released_totals": [], **data}

    def run(self, run_id: int | None) -> dict[str, Any]:
        state = self.data["runs"].setdefault(run_key(run_id), {})
        state.setdefault("train_rounds", [])
        state.setdefault("recalibration_steps", [])
        state.setdefault("models", [])
        state.setdefault("evaluations", {})
        return state

    def refuse(self, run_id: int | None, phase: str, error: BudgetExceeded) -> BudgetExceeded:
        """Record a refusal and return the exception to raise."""
        self.data["refusals"].append({
            "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "run_id": run_key(run_id), "phase": phase, "budget": error.budget, "detail": error.detail,
        })
        return error

    def register_release(self, run_id: int | None, phase: str, kinds: list[str]) -> None:
        """Record the kinds of aggregate a reply released (the disclosure test enumerates these)."""
        seen = self.data["releases"].setdefault(run_key(run_id), {}).setdefault(phase, [])
        for kind in kinds:
            if kind not in seen:
                seen.append(kind)
