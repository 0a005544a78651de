"""Real loopback deployment: one SuperLink and one SuperNode per site, each a separate process group.

One deployment (TLS + SuperNode authentication, persistent SuperLink database) is shared by the tests
below, in file order, because every Flower round trip costs seconds: sites a-d with registered keys,
site x with a key the coordinator never registered. Generated feature tables, 2 training rounds.
"""

from __future__ import annotations

import json
import math
import time

import pandas as pd
import pytest

from coordinator.commands.run import follow_run
from coordinator.flower.state import flwr_home
from site_client.flower.audit import read_audit
from tests.deployment.harness import Deployment, process_groups_alive
from tests.deployment.synthetic import write_protocol, write_sites

pytestmark = [pytest.mark.deployment, pytest.mark.timeout(2400)]

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


def test_study_with_tls_and_auth_goes_on_to_the_end_after_losing_a_site(deployment: Deployment, mlflow_server: str) -> None:
    """4 sites, min_sites 3: site-d is killed during training; sites a, b, c finish the study."""
    run_id = deployment.launch(deployment.protocol, "--wait-for", "4", "--mlflow-uri", mlflow_server, "--promote")
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
    # no covariates in this protocol: ComBat's sums come from the handshake, so there is no ComBat round
    assert {"handshake", "train", "calibrate", "evaluate"} <= phases_seen
    assert not {"combat-round1", "combat-round2"} & phases_seen


def test_study_through_the_deployment_is_in_mlflow_with_its_report(
    deployment: Deployment, mlflow_server: str, tmp_path
) -> None:
    """What the researcher reviews: parent run, fold and final child runs, per-round metrics, figures, the
    site table, the registered model, and the report attached by `coordinator report`, read back from a
    real `mlflow server` through the MLflow client."""
    from mlflow import MlflowClient

    from protocols import load_protocol

    flower_run = deployment.completed_run
    lines = deployment.study_status(flower_run)["lines"]
    logged = [line.rsplit("study run ", 1)[1].strip() for line in lines if "logged to MLflow" in line]
    assert len(logged) == 1, lines
    parent_id = logged[0]
    client = MlflowClient(tracking_uri=mlflow_server)
    parent = client.get_run(parent_id)
    tags, params, metrics = parent.data.tags, parent.data.params, parent.data.metrics
    assert tags["protocol_id"] == deployment.protocol_id and tags["flower_run_id"] == str(flower_run)
    assert params["protocol.model.rounds"] == "2" and "version.flwr" in params
    assert {"pooled_auc", "re_auc"} <= set(metrics) and not any(math.isnan(v) for v in metrics.values())
    children = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent_id}'")
    folds = {r.data.tags["heldout_site"]: r for r in children if r.data.tags.get("role") == "fold"}
    assert {"site-a", "site-b", "site-c"} <= set(folds)  # site-d was lost in training: its fold may be gone
    assert sum(r.data.tags.get("role") == "final_model" for r in children) == 1
    for site in ("site-a", "site-b", "site-c"):
        run = folds[site]
        assert 0.0 <= run.data.metrics["auc"] <= 1.0
        history = client.get_metric_history(run.info.run_id, "loss")  # the weighted training loss per round
        assert sorted(m.step for m in history) == [1, 2]
        assert "plots/roc.png" in {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    plots = {a.path for a in client.list_artifacts(parent_id, "plots")}
    assert {"plots/forest_auc.png", "plots/roc_heldout_sites.png", "plots/reliability.png"} <= plots
    assert client.list_artifacts(parent_id, "plots/harmonisation")
    assert "tables/site_metrics.json" in {a.path for a in client.list_artifacts(parent_id, "tables")}
    tracking = load_protocol(deployment.protocol).tracking
    version = client.get_model_version_by_alias(tracking.registered_model, tracking.model_alias)
    assert version.tags["protocol_id"] == deployment.protocol_id

    out = tmp_path / "report"
    deployment.cli("coordinator", "report", parent_id, "--mlflow-uri", mlflow_server, "--out", str(out))
    html = (out / "report.html").read_text()
    assert "External validation report" in html and "data:image/png;base64," in html  # figures inline
    assert (out / "report.md").read_text().count("site-a") >= 1
    attached = {a.path for a in client.list_artifacts(parent_id, "report")}
    assert attached == {"report/report.html", "report/report.md"}


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
    refused = [r for r in read_audit(deployment.sites["site-c"].work_dir) if r["status"] == "refused"]
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
    deployment.wait_phase(run_id, "train", timeout=600)  # no ComBat round: the protocol has no covariates
    deployment.stop_superlink()
    deployment.start_superlink()
    after = deployment.wait_online(4, timeout=240)
    assert after == before, f"node ids before {sorted(before)}, after restart {sorted(after)}"
    listing = deployment.cli("coordinator", "status", "--state-dir", str(deployment.state)).stdout
    for name in REGISTERED:
        assert any(line.split()[:2] == [name, "online"] for line in listing.splitlines()), listing
    assert str(run_id) in listing
