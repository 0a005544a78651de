"""Fixtures for the external-validation tests: generated multi-site studies and a real MLflow server."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest


@dataclass
class GenSite:
    name: str
    p: np.ndarray  # model's predicted probability of the positive class
    y: np.ndarray  # reference standard 0/1
    volume: np.ndarray
    x: np.ndarray  # model features (n × d)


def generate_sites(seed: int, sizes: list[int], shift: float = 0.3, miscal: tuple[float, float] = (-0.2, 0.8)) -> list[GenSite]:
    """Sites with a site-specific intercept shift; the model's logit is a miscalibrated version of the truth."""
    rng = np.random.default_rng(seed)
    sites = []
    for i, n in enumerate(sizes):
        x = rng.normal(size=(n, 3))
        volume = np.exp(rng.normal(8 + 0.5 * x[:, 0], 0.4))
        true_logit = -0.3 + shift * rng.normal() + 1.2 * x[:, 0] + 0.6 * x[:, 1]
        y = (rng.uniform(size=n) < 1 / (1 + np.exp(-true_logit))).astype(int)
        model_logit = (true_logit - miscal[0]) / miscal[1] + rng.normal(0, 0.3, n)
        p = 1 / (1 + np.exp(-model_logit))
        sites.append(GenSite(f"site{i + 1}", p, y, volume, x))
    return sites


@pytest.fixture
def make_sites():
    return generate_sites


# ---------------------------------------------------------------- real MLflow server (session-scoped)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """Start ``mlflow server`` on a free loopback port (sqlite backend, proxied artifacts); yield its URI."""
    if shutil.which("mlflow", path=str(Path(sys.executable).parent)) is None and not _has_mlflow():
        pytest.skip("mlflow is not installed in this environment")
    root = tmp_path_factory.mktemp("mlflow")
    port = _free_port()
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
        deadline = time.monotonic() + 120
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
                raise RuntimeError(f"mlflow server not healthy after 120 s: {(root / 'server.log').read_text()[-3000:]}")
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
