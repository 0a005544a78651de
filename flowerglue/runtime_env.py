"""Environment for every Flower process fedradval starts, at a site or at the coordinator.

No phone-home (telemetry, update checks), no run-time dependency installation, a private FLWR_HOME.
Shared by both sides so the switches cannot drift apart.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

QUIET_FLOWER = {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",
}


def flower_env(flwr_home: Path, base: dict[str, str] | None = None) -> dict[str, str]:
    """A copy of ``base`` (default: os.environ) with the Flower switches set, FLWR_HOME=flwr_home, and this
    Python's bin folder first on PATH (the SuperLink/SuperNode spawn flower-superexec and flwr-* by name)."""
    env = dict(os.environ if base is None else base)
    env.update(QUIET_FLOWER)
    env["FLWR_HOME"] = str(flwr_home)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env
