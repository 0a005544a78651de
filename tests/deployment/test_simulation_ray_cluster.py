"""``coordinator simulate --ray-address``: the sites run on a separately started Ray cluster.

The cluster's workers are started by its own raylet, not by the ``coordinator simulate`` process, so they
see none of that process's environment variables: the simulation works only if every site's settings
travel with the run itself (pickled with the ClientApp). A real ``ray start --head`` on loopback.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from demo.processes import free_port
from site_client.flower.audit import read_audit
from tests.deployment.synthetic import write_protocol, write_sites

BIN = Path(sys.executable).parent


def _wait_for_head(address: str, env: dict[str, str], timeout_s: float = 400.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        probe = subprocess.run([str(BIN / "ray"), "status", "--address", address], env=env, capture_output=True,
                               text=True, timeout=90)
        if probe.returncode == 0:
            return
        time.sleep(2)
    raise AssertionError(f"Ray head at {address} did not come up: {probe.stdout[-2000:]}{probe.stderr[-2000:]}")


@pytest.mark.deployment
@pytest.mark.timeout(1200)
def test_simulation_on_a_ray_cluster_carries_the_site_settings_with_the_run(tmp_path: Path) -> None:
    sizes = {"ray-a": 36, "ray-b": 44, "ray-c": 40}
    write_sites(tmp_path / "sites", sizes)
    protocol = tmp_path / "study.yaml"
    write_protocol(protocol, rounds=1, min_sites=3, round_timeout_s=600)
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    port = free_port()
    ray_temp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # short: Ray's socket paths must fit in 107 bytes
    address = f"127.0.0.1:{port}"  # Ray itself may rewrite loopback to the node address
    head = subprocess.Popen(
        [str(BIN / "ray"), "start", "--head", "--block", "--port", str(port), "--num-cpus", "2",
         "--include-dashboard", "false", "--temp-dir", ray_temp],
        env=env, stdout=open(tmp_path / "ray-head.log", "wb"), stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        _wait_for_head(address, env)
        result = subprocess.run(
            [str(BIN / "coordinator"), "simulate", "--protocol", str(protocol), "--sites-dir", str(tmp_path / "sites"),
             "--work-dir", str(tmp_path / "work"), "--ray-address", address],
            env=env, capture_output=True, text=True, timeout=1100,
        )
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        assert "simulation of 3 sites finished" in result.stdout
        for name in sizes:
            phases = {r["phase"] for r in read_audit(tmp_path / "work" / name) if r["status"] == "reply"}
            assert {"identify", "handshake", "train", "evaluate"} <= phases, (name, phases)
    finally:
        try:
            os.killpg(head.pid, signal.SIGTERM)
            head.wait(timeout=60)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(head.pid, signal.SIGKILL)
        shutil.rmtree(ray_temp, ignore_errors=True)
