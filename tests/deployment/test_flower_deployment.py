"""Real loopback deployment: one SuperLink and one SuperNode per site, each a separate process group.

One deployment (TLS + SuperNode authentication) is shared by the tests below, in file order, because
every Flower round trip costs seconds: sites a, b, c (+ d later) with registered keys, site x with a key
the coordinator never registered. Generated feature tables, 2 training rounds.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from site_client.flower.audit import read_audit
from tests.deployment.harness import Deployment, process_groups_alive
from tests.deployment.synthetic import write_protocol, write_sites

pytestmark = [pytest.mark.deployment, pytest.mark.timeout(1500)]

SIZES = {"site-a": 48, "site-b": 40, "site-c": 56, "site-d": 44, "site-x": 30}


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("flower-deployment")
    dep = Deployment(root)
    data = write_sites(root / "data", SIZES)
    protocol = root / "study.yaml"
    dep.protocol_id = write_protocol(protocol, rounds=2, min_sites=3, round_timeout_s=150)
    dep.protocol = protocol
    dep.data = data
    try:
        dep.start_superlink()
        for name in ("site-a", "site-b", "site-c", "site-d"):
            dep.add_site(name, data[name])
            dep.approve(name, protocol)
        dep.add_site("site-x", data["site-x"], register=False)
        dep.approve("site-x", protocol)
        for name in ("site-a", "site-b", "site-c", "site-x"):
            dep.join(name, protocol)
        dep.wait_online(3)
        yield dep
    finally:
        pgids = set(dep.pgids)
        dep.close()
        time.sleep(1)
        left = process_groups_alive(pgids)
        assert not left, f"processes left after teardown: {left}"


def test_unregistered_key_is_refused(deployment: Deployment) -> None:
    deadline = time.monotonic() + 90
    log = deployment.sites["site-x"].log
    while time.monotonic() < deadline and "exited with code 305" not in log.read_text():
        time.sleep(2)
    text = log.read_text()
    assert "exited with code 305" in text and "not registered" in text, text[-3000:]
    assert len(deployment.online_node_ids()) == 3  # a, b, c only
    assert deployment.sites["site-x"].process.poll() is None  # the supervisor keeps retrying with back-off


def test_three_site_study_with_tls_and_authentication_completes(deployment: Deployment) -> None:
    result = deployment.run(deployment.protocol, "--wait-for", "3")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"protocol id {deployment.protocol_id}" in result.stdout
    assert "sites: site-a, site-b, site-c" in result.stdout
    assert "completed" in result.stdout
    run_id = int(result.stdout.split("run id ")[1].split(":")[0])
    status = deployment.study_status(run_id)
    assert status["state"] == "completed" and status["phase"] == "done"
    listing = deployment.cli("coordinator", "status", "--state-dir", str(deployment.state)).stdout
    for name in ("site-a", "site-b", "site-c"):
        assert f"{name}" in listing
    assert f"{run_id}  finished:completed" in listing
    deployment.completed_run = run_id


def test_audit_log_shows_no_case_level_array_and_no_patient_id(deployment: Deployment) -> None:
    run_id = deployment.completed_run
    phases_seen = set()
    for name in ("site-a", "site-b", "site-c"):
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
            for pid in patient_ids:
                assert pid not in text, f"{name} sent patient id {pid} in {record['phase']}"
        # the same records as printed for the hospital
        shown = deployment.cli("site-client", "audit", "--work-dir", str(site.work_dir)).stdout
        assert f"{len(records)} message(s)" in shown or "message(s)" in shown
    assert {"handshake", "train", "evaluate"} <= phases_seen


def test_site_that_has_not_approved_refuses_and_the_study_fails_naming_it(deployment: Deployment) -> None:
    other = deployment.root / "study-v2.yaml"
    other_id = write_protocol(other, rounds=2, min_sites=3, version="2", round_timeout_s=150)
    for name in ("site-a", "site-b"):
        deployment.approve(name, other)
    # every site runs the v2 protocol file, but site-c never approved it
    for name in ("site-a", "site-b", "site-c"):
        deployment.kill_site(name)
        deployment.join(name, other)
    deployment.wait_online(3)
    result = deployment.run(other, "--wait-for", "3")
    assert result.returncode == 1, result.stdout + result.stderr
    text = result.stdout + result.stderr
    assert "site-c" in text and other_id in text and "has not approved" in text, text[-3000:]
    site_log = (deployment.sites["site-c"].work_dir / "site.log").read_text()
    assert other_id in site_log and "has not approved" in site_log
    refused = [r for r in read_audit(deployment.sites["site-c"].work_dir) if r["status"] == "error"]
    assert refused and other_id in refused[-1]["values"]["error"]
    for name in ("site-a", "site-b", "site-c"):
        deployment.kill_site(name)
        deployment.join(name, deployment.protocol)


def test_site_killed_in_training_study_goes_on_with_min_sites(deployment: Deployment) -> None:
    deployment.join("site-d", deployment.protocol)
    deployment.wait_online(4)
    run_id = deployment.launch(deployment.protocol, "--wait-for", "4")
    deployment.wait_phase(run_id, "train")
    deployment.kill_site("site-d")
    from coordinator.commands.run import follow_run
    from coordinator.flower.state import flwr_home

    assert follow_run(flwr_home(deployment.state), deployment.state, run_id) == 0
    status = deployment.study_status(run_id)
    assert status["state"] == "completed"
    assert any("site-d" in line and "dropped" in line for line in status["lines"]), status["lines"]


def test_site_killed_in_training_below_min_sites_fails_clearly(deployment: Deployment) -> None:
    strict = deployment.root / "study-4.yaml"
    write_protocol(strict, rounds=2, min_sites=4, version="4", round_timeout_s=150)
    for name in ("site-a", "site-b", "site-c", "site-d"):
        deployment.approve(name, strict)
        deployment.kill_site(name)
        deployment.join(name, strict)
    deployment.wait_online(4)
    run_id = deployment.launch(strict, "--wait-for", "4")
    deployment.wait_phase(run_id, "train")
    deployment.kill_site("site-d")
    from coordinator.commands.run import follow_run
    from coordinator.flower.state import flwr_home

    assert follow_run(flwr_home(deployment.state), deployment.state, run_id) == 1
    status = deployment.study_status(run_id)
    assert status["state"] == "failed"
    assert "site-d" in status["error"] and "at least 4" in status["error"], status["error"]


def test_superlink_restart_during_a_study_keeps_registered_sites(deployment: Deployment) -> None:
    for name in ("site-a", "site-b", "site-c", "site-d"):
        deployment.kill_site(name)
        deployment.join(name, deployment.protocol)
    before = deployment.wait_online(4)
    run_id = deployment.launch(deployment.protocol, "--wait-for", "4")
    deployment.wait_phase(run_id, "train")
    deployment.stop_superlink()
    deployment.start_superlink()
    after = deployment.wait_online(4, timeout=180)
    assert after == before, f"node ids before {sorted(before)}, after restart {sorted(after)}"
    listing = deployment.cli("coordinator", "status", "--state-dir", str(deployment.state)).stdout
    for name in ("site-a", "site-b", "site-c", "site-d"):
        assert any(line.split()[:2] == [name, "online"] for line in listing.splitlines()), listing
