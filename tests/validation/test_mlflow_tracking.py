"""A generated study logged to a real `mlflow server` on loopback, read back through MlflowClient."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

pytestmark = pytest.mark.deployment


def _client(uri):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri)


def test_parent_run_params_tags_metrics_and_table(mlflow_server, logged_study, generated_study):
    study, sites = generated_study
    c = _client(mlflow_server)
    run = c.get_run(logged_study.parent_run_id)
    tags, params, metrics = run.data.tags, run.data.params, run.data.metrics
    assert tags["protocol_id"] == study.protocol_id
    assert tags["sites"] == "site1,site2,site3,site4"
    assert "mlflow.parentRunId" not in tags
    assert params["protocol.validation.conformal_alpha"] == "0.2"
    assert json.loads(params["protocol.validation.decision_curve_thresholds"]) == [0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
    assert params["site.site2.n"] == str(len(sites[1].p))
    assert params["site.site2.n_events"] == str(int(sites[1].y.sum()))
    assert params["version.numpy"] == np.__version__ and "version.mlflow" in params
    assert metrics["re_auc"] == pytest.approx(study.meta["auc"].estimate)
    assert metrics["re_auc_pi_low"] == pytest.approx(study.meta["auc"].pi_low)
    assert metrics["re_auc_tau2"] == pytest.approx(study.meta["auc"].tau2)
    assert metrics["pooled_auc"] == pytest.approx(study.pooled.auc.auc)
    assert not any(math.isnan(v) for v in metrics.values())
    import mlflow

    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(mlflow_server)  # MlflowClient.load_table searches runs through the global URI
    try:
        table = c.load_table(logged_study.experiment_id, "tables/site_metrics.json", run_ids=[logged_study.parent_run_id])
    finally:
        mlflow.set_tracking_uri(previous)
    assert list(table["site"]) == ["site1", "site2", "site3", "site4", "pooled"]
    for f, row in zip(study.folds, table.itertuples()):
        assert row.auc == pytest.approx(f.before.auc.auc)
        assert row.delta_auc == pytest.approx(f.auc_difference.difference)
        assert row.n == f.before.n


def test_child_runs_per_fold_and_final_model(mlflow_server, logged_study, generated_study):
    study, _ = generated_study
    c = _client(mlflow_server)
    children = c.search_runs([logged_study.experiment_id], f"tags.mlflow.parentRunId = '{logged_study.parent_run_id}'")
    folds = [r for r in children if r.data.tags.get("role") == "fold"]
    final = [r for r in children if r.data.tags.get("role") == "final_model"]
    assert sorted(r.data.tags["heldout_site"] for r in folds) == ["site1", "site2", "site3", "site4"]
    assert len(final) == 1 and final[0].info.run_id == logged_study.final_run_id
    by_site = {r.data.tags["heldout_site"]: r for r in folds}
    for f in study.folds:
        r = by_site[f.heldout_site]
        assert r.data.metrics["auc"] == pytest.approx(f.before.auc.auc)
        assert r.data.metrics["recal_cal_slope"] == pytest.approx(f.after.calibration.slope.value)
        assert r.data.metrics["baseline_auc"] == pytest.approx(f.baseline.auc.auc)
        if f.conformal.coverage is not None:
            assert r.data.metrics["conformal_coverage_ci_low"] == pytest.approx(f.conformal.coverage.ci_low)
        hist = c.get_metric_history(r.info.run_id, "train_loss")
        assert [m.step for m in sorted(hist, key=lambda m: m.step)] == [1, 2, 3, 4, 5]
        assert [m.value for m in sorted(hist, key=lambda m: m.step)] == pytest.approx(f.training_history["train_loss"])
        names = {a.path for a in c.list_artifacts(r.info.run_id, "plots")}
        assert names == {"plots/roc.png", "plots/reliability.png", "plots/decision_curve.png"}
    steps = c.get_metric_history(logged_study.final_run_id, "train_auc")
    assert sorted(m.step for m in steps) == [1, 2, 3, 4]


def test_figures_on_parent(mlflow_server, logged_study):
    c = _client(mlflow_server)
    names = {a.path for a in c.list_artifacts(logged_study.parent_run_id, "plots")}
    for expected in ("forest_auc.png", "forest_calibration_slope.png", "forest_delta_auc_vs_volume.png",
                     "forest_conformal_coverage.png", "roc_heldout_sites.png", "reliability.png", "decision_curve.png"):
        assert f"plots/{expected}" in names
    harm = {a.path for a in c.list_artifacts(logged_study.parent_run_id, "plots/harmonisation")}
    assert harm == {f"plots/harmonisation/site{i}.png" for i in range(1, 5)}


def test_registered_model_alias_signature_and_predictions(mlflow_server, logged_study, generated_study, mlp_state):
    import mlflow

    study, _ = generated_study
    c = _client(mlflow_server)
    mv = c.get_model_version_by_alias("fedradval-test-model", "champion")
    assert mv.version == logged_study.model_version
    assert mv.tags["protocol_id"] == study.protocol_id
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(mlflow_server)
    try:
        model = mlflow.pyfunc.load_model("models:/fedradval-test-model@champion")
        reqs = mlflow.pyfunc.get_model_dependencies("models:/fedradval-test-model@champion")
    finally:
        mlflow.set_tracking_uri(previous)
    assert [col.name for col in model.metadata.get_input_schema().inputs] == ["f1", "f2", "f3"]
    req_text = open(reqs).read()
    assert f"numpy=={np.__version__}" in req_text and "mlflow==" in req_text
    x = np.array([[0.2, -1.0, 0.5], [1.5, 0.3, -0.7], [-0.4, 0.9, 0.1]])
    out = model.predict(pd.DataFrame(x, columns=["f1", "f2", "f3"]))
    # independent forward pass of the torch-layout state dict: relu(x W0ᵀ + b0) W1ᵀ + b1
    xs = (x - np.array([0.0, 0.1, -0.1])) / np.array([1.0, 2.0, 0.5])
    h = np.maximum(xs @ mlp_state["net.0.weight"].T + mlp_state["net.0.bias"], 0)
    z = (h @ mlp_state["net.2.weight"].T + mlp_state["net.2.bias"])[:, 0]
    rec = study.final_model.recalibration.params
    p = 1 / (1 + np.exp(-(rec["a"] + rec["b"] * z)))
    assert out["p_raw"].to_numpy() == pytest.approx(1 / (1 + np.exp(-z)), abs=1e-12)
    assert out["p"].to_numpy() == pytest.approx(p, abs=1e-10)
    # the sets are on the raw probability: the scale on which the thresholds were found and coverage measured
    p_raw = 1 / (1 + np.exp(-z))
    assert list(out["in_set_positive"]) == list((1 - p_raw) <= 0.58)
    assert list(out["in_set_negative"]) == list(p_raw <= 0.62)


def test_summary_json_round_trips(mlflow_server, logged_study, generated_study, tmp_path):
    study, _ = generated_study
    c = _client(mlflow_server)
    path = c.download_artifacts(logged_study.parent_run_id, "summary/study.json", str(tmp_path))
    data = json.loads(open(path).read())
    assert data["protocol_id"] == study.protocol_id
    assert [f["heldout_site"] for f in data["folds"]] == ["site1", "site2", "site3", "site4"]
    assert data["meta"]["auc"]["tau2"] == pytest.approx(study.meta["auc"].tau2)


def test_default_store_is_in_the_work_folder(tmp_path):
    from coordinator.tracking import default_artifact_location, default_tracking_uri

    uri = default_tracking_uri(tmp_path)
    assert uri == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    assert default_artifact_location(uri) == (tmp_path.resolve() / "mlartifacts").as_uri()
    assert default_artifact_location("http://127.0.0.1:5000") is None


def test_flattened_protocol_params_are_legal_keys():
    from coordinator.tracking import flatten_params

    flat = flatten_params({"a": {"b c": 1, "d:e": [0.1, 0.2]}, "f": "text"}, "protocol.")
    assert flat == {"protocol.a.b c": "1", "protocol.a.d_e": "[0.1, 0.2]", "protocol.f": "text"}
