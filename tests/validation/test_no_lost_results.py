"""No study result is ever lost: the outcome is on disk before any MLflow call; an MLflow server that is down at
the end of a study costs nothing (a clear message names the saved file and the command), and ``coordinator log``
completes the logging later into the real ``mlflow server``."""

from __future__ import annotations

import json
import re

import pytest
from typer.testing import CliRunner

pytestmark = pytest.mark.deployment


def _settings(real_study, uri, outcome_dir, promote=False):
    from coordinator.flower.server_app import RunSettings

    return RunSettings(protocol=real_study.protocol, protocol_id=real_study.protocol_id, mlflow_uri=uri,
                       status_dir=None, wait_for=4, wait_timeout_s=1.0, outcome_dir=outcome_dir, promote=promote)


def test_mlflow_down_at_the_end_loses_nothing_and_coordinator_log_completes_it(
        real_study, mlflow_server, tmp_path, monkeypatch):
    from mlflow import MlflowClient

    from coordinator.cli import app
    from demo.processes import free_port
    from coordinator.flower.server_app import record_outcome
    from coordinator.flower.status import RunStatus

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    down = f"http://127.0.0.1:{free_port()}"                      # nothing listens there: the server is down
    state = tmp_path / "state"
    status = RunStatus(None, 7)
    with pytest.raises(RuntimeError) as err:
        record_outcome(real_study.outcome, _settings(real_study, down, state / "outcomes"), 7, status)
    saved = sorted((state / "outcomes").glob("outcome-*.pkl"))
    assert len(saved) == 1 and saved[0].with_suffix(".json").is_file()
    message = str(err.value)
    assert f"logging to MLflow at {down} failed" in message
    assert f"Nothing is lost: the study's outcome is saved at {saved[0]}" in message
    assert f"coordinator log {saved[0]} --mlflow-uri {down}" in message
    numbers = json.loads(saved[0].with_suffix(".json").read_text())
    h1 = next(f for f in numbers["results"]["harmonised"]["folds"] if f["heldout_site"] == "H1")
    expected = next(f for f in real_study.outcome.results["harmonised"].folds if f.heldout_site == "H1")
    assert h1["before"]["auc"]["auc"] == expected.before.auc.auc

    # later, with MLflow reachable: the saved outcome is logged completely, alias moved because asked
    result = CliRunner().invoke(app, ["log", str(saved[0]), "--mlflow-uri", mlflow_server, "--promote"])
    assert result.exit_code == 0, result.output
    assert "External validation of synth at each held-out site" in result.output
    assert "H1" in result.output and "H4" in result.output
    client = MlflowClient(tracking_uri=mlflow_server)
    parent_id = re.search(r"study run ([0-9a-f]{32})", result.output).group(1)
    parent = client.get_run(parent_id)
    assert parent.data.tags["protocol_id"] == real_study.protocol_id
    folds = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent_id}' and tags.role = 'fold'")
    by_site = {r.data.tags["heldout_site"]: r.data.metrics for r in folds}
    for fold in real_study.outcome.results["harmonised"].folds:
        assert by_site[fold.heldout_site]["auc"] == pytest.approx(fold.before.auc.auc, rel=1e-12)
    mv = client.get_model_version_by_alias("fedradval-model", "champion")
    assert mv.run_id and mv.tags["protocol_id"] == real_study.protocol_id


def test_coordinator_log_refuses_a_file_that_is_not_an_outcome(tmp_path):
    from coordinator.cli import app

    bad = tmp_path / "outcome-x.pkl"
    bad.write_bytes(b"not a pickle")
    result = CliRunner().invoke(app, ["log", str(bad), "--mlflow-uri", "sqlite:///" + str(tmp_path / "m.db")])
    assert result.exit_code == 2
    assert f"{bad}: not a readable study outcome" in result.output


def test_coordinator_log_with_mlflow_down_says_so_and_keeps_the_file(real_study, tmp_path, monkeypatch):
    from coordinator.cli import app
    from demo.processes import free_port
    from coordinator.outcome_store import save_outcome

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    saved = save_outcome(real_study.outcome, tmp_path / "outcomes")
    before = saved.read_bytes()
    down = f"http://127.0.0.1:{free_port()}"
    result = CliRunner().invoke(app, ["log", str(saved), "--mlflow-uri", down])
    assert result.exit_code == 1
    assert f"error: logging to MLflow at {down} failed" in result.output
    assert "is unchanged, run this command again when MLflow is reachable" in result.output
    assert saved.read_bytes() == before


def test_default_store_honours_the_environment_then_the_folder(tmp_path, monkeypatch):
    from coordinator.tracking import default_tracking_uri, resolve_tracking_uri

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_tracking_uri("", tmp_path) == default_tracking_uri(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.example:5000")
    assert resolve_tracking_uri("", tmp_path) == "http://mlflow.example:5000"
    assert resolve_tracking_uri("sqlite:///x.db", tmp_path) == "sqlite:///x.db"


@pytest.mark.timeout(1200)
def test_simulate_saves_the_outcome_logs_to_its_work_folder_and_prints_the_table(tmp_path, monkeypatch):
    """``coordinator simulate`` without --mlflow-uri: the outcome in <work>/outcomes, the results in
    <work>/mlflow.db, the per-site table printed, and the registry alias left where it was (no --promote)."""
    from mlflow import MlflowClient

    from coordinator.cli import app
    from coordinator.outcome_store import load_outcome
    from tests.deployment.synthetic import write_protocol, write_sites

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    write_sites(tmp_path / "sites", {"sim-a": 44, "sim-b": 52, "sim-c": 40})
    write_protocol(tmp_path / "study.yaml", rounds=2, min_sites=3, round_timeout_s=600)
    work = tmp_path / "work"
    result = CliRunner().invoke(app, ["simulate", "--protocol", str(tmp_path / "study.yaml"),
                                      "--sites-dir", str(tmp_path / "sites"), "--work-dir", str(work)])
    assert result.exit_code == 0, result.output
    assert f"results to sqlite:///{work.resolve()}/mlflow.db" in result.output
    assert "at each held-out site" in result.output and "sim-b" in result.output
    saved = sorted((work / "outcomes").glob("outcome-*.pkl"))
    assert len(saved) == 1 and sorted(load_outcome(saved[0]).sites) == ["sim-a", "sim-b", "sim-c"]
    client = MlflowClient(tracking_uri=f"sqlite:///{work.resolve()}/mlflow.db")
    models = client.search_registered_models()
    assert len(models) == 1 and not models[0].aliases
