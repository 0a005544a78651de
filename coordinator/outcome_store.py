"""A study's outcome on disk, written before any MLflow call, so that no result is ever lost.

``save_outcome`` writes ``<folder>/outcome-<protocol id[:12]>-<UTC time>.pkl`` (the whole
:class:`coordinator.study.outcome.StudyOutcome`: every variant's metrics and tables, every model's weights,
ComBat estimates, notes) and beside it a ``.json`` with the same numbers for people and other tools. Both are
written atomically (temporary file, then rename): a file is complete or absent. ``coordinator log OUTCOME``
logs a saved outcome to MLflow again (:func:`load_outcome`).

The pickle is the coordinator's own file in its own state folder; load only outcomes you wrote.
"""

from __future__ import annotations

import json
import os
import pickle
import time
from pathlib import Path
from typing import Any

from coordinator.validation.results import to_jsonable
from protocols.files import write_atomic

FORMAT = "fedradval.study_outcome/1"


def save_outcome(outcome: Any, folder: str | os.PathLike[str]) -> Path:
    """Write the outcome (``.pkl``) and its numbers (``.json``) into ``folder``; returns the ``.pkl`` path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    path = folder / f"outcome-{outcome.protocol_id[:12]}-{stamp}.pkl"
    write_atomic(path, pickle.dumps({"format": FORMAT, "outcome": outcome}, protocol=pickle.HIGHEST_PROTOCOL), mode=0o600)
    summary = {"format": FORMAT, "study": outcome.study_name, "protocol_id": outcome.protocol_id,
               "preferred_variant": outcome.preferred_variant, "sites": outcome.sites, "dropped": outcome.dropped,
               "notes": outcome.notes, "results": {v: to_jsonable(r) for v, r in outcome.results.items()}}
    write_atomic(path.with_suffix(".json"), json.dumps(summary, indent=1, default=str), mode=0o600)
    return path


def load_outcome(path: str | os.PathLike[str]) -> Any:
    """Read an outcome written by :func:`save_outcome`; a clear ValueError for anything else."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such outcome file (expected outcome-<protocol>-<time>.pkl from a study)")
    try:
        data = pickle.loads(path.read_bytes())
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same clear message
        raise ValueError(f"{path}: not a readable study outcome ({type(exc).__name__}: {exc})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError(f"{path}: not a study outcome of format {FORMAT}")
    return data["outcome"]


def latest_outcome(folder: str | os.PathLike[str], protocol_id: str) -> Path | None:
    """The newest saved outcome of ``protocol_id`` in ``folder`` (None when there is none)."""
    found = sorted(Path(folder).glob(f"outcome-{protocol_id[:12]}-*.pkl")) if Path(folder).is_dir() else []
    return found[-1] if found else None


def tracking_failed_message(uri: str, exc: BaseException, saved: Path) -> str:
    """What the coordinator is told when MLflow fails after the study: nothing is lost, and how to finish."""
    return (f"logging to MLflow at {uri} failed ({type(exc).__name__}: {str(exc)[:300]}). Nothing is lost: the "
            f"study's outcome is saved at {saved}. When MLflow is reachable, log it with: "
            f"coordinator log {saved} --mlflow-uri {uri}")
