"""Run status file written by the ServerApp, read by ``coordinator run`` / ``coordinator status``.

``<status-dir>/run-<run_id>.json``: ``{"run_id", "state": running|completed|failed, "phase", "lines": [...],
"error", "updated_at"}``, replaced atomically after every progress line. Every progress line is also logged
(``fedradval.coordinator.study``, INFO; a failed study at ERROR), so it reaches the ServerApp's Flower run
log (``flwr log``) or, in a simulation, the terminal, with a time, a level and ``--log-json`` honoured.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from protocols.logs import get_logger
from protocols.files import write_atomic

log = get_logger("coordinator.study")

def status_path(status_dir: Path, run_id: int) -> Path:
    return status_dir / f"run-{run_id}.json"


def read_status(path: Path) -> dict[str, Any] | None:
    """The status object, or None when the file does not exist (yet)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None


class RunStatus:
    """Collects progress lines and the current phase; mirrors them to a file when a folder is given."""

    def __init__(self, status_dir: Path | None, run_id: int) -> None:
        self.path = status_path(status_dir, run_id) if status_dir else None
        self.run_id = run_id
        self.state = "running"
        self.phase = "starting"
        self.lines: list[str] = []
        self.error = ""
        self._write()

    def progress(self, line: str) -> None:
        self.lines.append(line)
        log.info("run %s: %s", self.run_id, line)
        self._write()

    def set_phase(self, phase: str) -> None:
        if phase != self.phase:
            self.phase = phase
            self._write()

    def finish(self, error: str = "") -> None:
        self.state = "failed" if error else "completed"
        self.error = error
        if error:
            log.error("run %s: study failed: %s", self.run_id, error)
        self._write()

    def _write(self) -> None:
        if self.path is None:
            return
        data = {
            "run_id": self.run_id,
            "state": self.state,
            "phase": self.phase,
            "lines": self.lines,
            "error": self.error,
            "updated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(self.path, json.dumps(data, indent=1), mode=0o600)
