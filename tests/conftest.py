"""Shared test set-up: no phone-home, and the read-only reference data (tests/data)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from demo.processes import free_port

from tests.reference_data import REFERENCE_DATA

for _name, _value in {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",
}.items():
    os.environ.setdefault(_name, _value)


@pytest.fixture(scope="session")
def reference_data() -> Path:
    """Root of tests/data (IBSI phantoms and reference values, pyradiomics cases, NSCLC features)."""
    if not (REFERENCE_DATA / "SHA256SUMS").is_file():
        pytest.fail(f"reference data folder {REFERENCE_DATA} is incomplete (no SHA256SUMS); it ships with the repository")
    return REFERENCE_DATA


# ---------------------------------------------------------------- real MLflow server (session-scoped)


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """Start ``mlflow server`` on a free loopback port (sqlite backend, proxied artifacts); yield its URI."""
    if shutil.which("mlflow", path=str(Path(sys.executable).parent)) is None and not _has_mlflow():
        pytest.skip("mlflow is not installed in this environment")
    root = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true", DO_NOT_TRACK="true")
    log = open(root / "server.log", "wb")
    cmd = [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", f"sqlite:///{root}/mlflow.db",
        "--artifacts-destination", str(root / "artifacts"),
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited with {proc.returncode}: {(root / 'server.log').read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"mlflow server not healthy after 300 s: {(root / 'server.log').read_text()[-3000:]}")
            time.sleep(0.5)
        yield uri
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        log.close()


def _has_mlflow() -> bool:
    import importlib.util

    return importlib.util.find_spec("mlflow") is not None
