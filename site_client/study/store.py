"""Durable site state between study messages: JSON and numpy files under ``work_dir/study/<protocol id>``.

Every write goes to a temporary file in the same folder and is renamed into place, so a killed process never
leaves a half-written file behind.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np


class SiteStore:
    """State of one study (protocol id) at one site."""

    def __init__(self, work_dir: Path, protocol_id: str) -> None:
        self.root = Path(work_dir) / "study" / protocol_id[:16]
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, name: str) -> Path:
        return self.root / name

    def exists(self, name: str) -> bool:
        return self.path(name).exists()

    def _atomic(self, name: str, write) -> Path:
        target = self.path(name)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                write(handle)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return target

    def write_json(self, name: str, data: Any) -> Path:
        return self._atomic(name, lambda h: h.write(json.dumps(data, indent=1, sort_keys=True).encode()))

    def read_json(self, name: str) -> Any:
        return json.loads(self.path(name).read_text(encoding="utf-8"))

    def write_arrays(self, name: str, arrays: dict[str, np.ndarray]) -> Path:
        return self._atomic(name, lambda h: np.savez(h, **{k: np.asarray(v) for k, v in arrays.items()}))

    def read_arrays(self, name: str) -> dict[str, np.ndarray]:
        with np.load(self.path(name), allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}

    def write_text(self, name: str, text: str) -> Path:
        return self._atomic(name, lambda h: h.write(text.encode("utf-8")))

    def write_message(self, name: str, message: dict[str, Any]) -> Path:
        """A mixed message (arrays + scalars/lists): arrays in ``name.npz``, the rest in ``name.json``."""
        arrays = {k: v for k, v in message.items() if isinstance(v, np.ndarray)}
        rest = {k: v for k, v in message.items() if not isinstance(v, np.ndarray)}
        self.write_arrays(name + ".npz", arrays)
        return self.write_json(name + ".json", rest)

    def read_message(self, name: str) -> dict[str, Any]:
        message: dict[str, Any] = dict(self.read_json(name + ".json"))
        message.update(self.read_arrays(name + ".npz"))
        return message

    def append_log(self, lines: list[str]) -> None:
        """Append lines to the site's study log (``notes.log``; local only, never sent)."""
        with open(self.path("notes.log"), "a", encoding="utf-8") as handle:
            for line in lines:
                handle.write(line.rstrip() + "\n")
