"""Shared test set-up: no phone-home, and the location of the read-only reference data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = (REPO_ROOT / ".." / "shared" / "data").resolve()

for _name, _value in {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",
}.items():
    os.environ.setdefault(_name, _value)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Root of ../shared/data; tests that need it fail loudly if it is absent (CI has it beside the clone)."""
    if not SHARED_DATA.is_dir():
        pytest.fail(f"reference data folder {SHARED_DATA} is missing; it must sit beside the repository")
    return SHARED_DATA
