"""The study run by the product (``run_study`` over the in-process transport) logged to a real `mlflow server` on
loopback by ``log_outcome``, read back through MlflowClient."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

pytestmark = pytest.mark.deployment


def _client(uri):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri)


def test_parent_run_params_tags_metrics_and_table(mlflow_server, logged_real_study, study_result, real_study):
    study, cases = study_result
    protocol = real_study.protocol
    c = _client(mlflow_server)
    run = c.get_run(logged_real_study.parent_run_id)
    tags, params, metrics = run.data.tags, run.data.params, run.data.metrics
    assert tags["protocol_id"] == real_study.protocol_id
    assert tags["sites"] == ",".join(real_study.outcome.sites)
    assert "mlflow.parentRunId" not in tags
    assert params["protocol.validation.conformal_alpha"] == str(protocol.validation.conformal_alpha)
    assert json.loads(params["protocol.validation.decision_curve_thresholds"]) == list(protocol.validation.decision_curve_thresholds)
    h2 = cases["H2"]
    assert params["site.H2.n"] == str(len(h2.y))
    assert params["site.H2.n_events"] == str(int(h2.y.sum()))
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
        table = c.load_table(logged_real_study.experiment_id, "tables/site_metrics.json",
                             run_ids=[logged_real_study.parent_run_id])
    finally:
        mlflow.set_tracking_uri(previous)
    assert list(table["site"]) == [f.heldout_site for f in study.folds] + ["pooled"]
    for f, row in zip(study.folds, table.itertuples()):
        # the exact held-out AUC on the site's own scores (the table keeps 10 digits): sklearn as the reference
        assert row.auc == pytest.approx(roc_auc_score(cases[f.heldout_site].y, cases[f.heldout_site].p), abs=1e-9)
        assert row.delta_auc == pytest.approx(f.auc_difference.difference)
        assert row.n == len(cases[f.heldout_site].y)


def test_child_runs_per_fold_and_final_model(mlflow_server, logged_real_study, study_result, real_study):
    study, _ = study_result
    c = _client(mlflow_server)
    children = c.search_runs([logged_real_study.experiment_id],
                             f"tags.mlflow.parentRunId = '{logged_real_study.parent_run_id}'")
    folds = [r for r in children if r.data.tags.get("role") == "fold"]
    final = [r for r in children if r.data.tags.get("role") == "final_model"]
    assert sorted(r.data.tags["heldout_site"] for r in folds) == sorted(real_study.outcome.sites)
    assert len(final) == 1 and final[0].info.run_id == logged_real_study.final_run_id
    by_site = {r.data.tags["heldout_site"]: r for r in folds}
    for f in study.folds:
        r = by_site[f.heldout_site]
        assert r.data.metrics["auc"] == pytest.approx(f.before.auc.auc)
        assert r.data.metrics["recal_cal_slope"] == pytest.approx(f.after.calibration.slope.value)
        assert r.data.metrics["baseline_auc"] == pytest.approx(f.baseline.auc.auc)
        if f.conformal.coverage is not None:
            assert r.data.metrics["conformal_coverage_ci_low"] == pytest.approx(f.conformal.coverage.ci_low)
        for series, values in f.training_history.items():
            hist = sorted(c.get_metric_history(r.info.run_id, series), key=lambda m: m.step)
            assert [m.step for m in hist] == list(range(1, len(values) + 1))
            assert [m.value for m in hist] == pytest.approx(values)
        names = {a.path for a in c.list_artifacts(r.info.run_id, "plots")}
        assert names == {"plots/roc.png", "plots/reliability.png", "plots/decision_curve.png"}
    registered = real_study.outcome.results["raw"].final_model  # the variant registered (see test_registered_model)
    for series, values in registered.training_history.items():
        steps = c.get_metric_history(logged_real_study.final_run_id, series)
        assert sorted(m.step for m in steps) == list(range(1, len(values) + 1))


def test_figures_on_parent(mlflow_server, logged_real_study, real_study):
    c = _client(mlflow_server)
    names = {a.path for a in c.list_artifacts(logged_real_study.parent_run_id, "plots")}
    for expected in ("forest_auc.png", "forest_calibration_slope.png", "forest_delta_auc_vs_volume.png",
                     "forest_conformal_coverage.png", "roc_heldout_sites.png", "reliability.png", "decision_curve.png"):
        assert f"plots/{expected}" in names
    harm = {a.path for a in c.list_artifacts(logged_real_study.parent_run_id, "plots/harmonisation")}
    assert harm == {f"plots/harmonisation/{site}.png" for site in real_study.outcome.sites}


def test_registered_model_signature_requirements_and_forward_pass(mlflow_server, logged_real_study, real_study):
    """Signature and pinned requirements of the registered model; its p_raw equals an independent forward pass
    of the registered variant's weights (numpy matmuls written here: (x - mean)/scale, ReLU, sigmoid)."""
    import mlflow

    final = real_study.outcome.results["raw"].final_model
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(mlflow_server)
    try:
        model = mlflow.pyfunc.load_model(logged_real_study.model_uri)
        reqs = mlflow.pyfunc.get_model_dependencies(logged_real_study.model_uri)
    finally:
        mlflow.set_tracking_uri(previous)
    weights = final.weights
    assert [col.name for col in model.metadata.get_input_schema().inputs] == list(weights.features)
    req_text = open(reqs).read()
    assert f"numpy=={np.__version__}" in req_text and "mlflow==" in req_text
    x = np.random.default_rng(5).normal(size=(7, len(weights.features)))
    out = model.predict(pd.DataFrame(x, columns=weights.features))
    h = (x - weights.mean) / weights.scale
    for i, (w, b) in enumerate(weights.layers):
        h = h @ w.T + b
        if i < len(weights.layers) - 1:
            h = np.maximum(h, 0)
    p_raw = 1 / (1 + np.exp(-h[:, 0]))
    assert out["p_raw"].to_numpy() == pytest.approx(p_raw, abs=1e-12)
    # the sets are on the raw probability: the scale on which the thresholds were found and coverage measured
    assert list(out["in_set_positive"]) == list((1 - p_raw) <= final.conformal_q_pos)
    assert list(out["in_set_negative"]) == list(p_raw <= final.conformal_q_neg)


def test_summary_json_round_trips(mlflow_server, logged_real_study, study_result, real_study, tmp_path):
    study, _ = study_result
    c = _client(mlflow_server)
    path = c.download_artifacts(logged_real_study.parent_run_id, "summary/study.json", str(tmp_path))
    data = json.loads(open(path).read())
    assert data["protocol_id"] == real_study.protocol_id
    assert [f["heldout_site"] for f in data["folds"]] == [f.heldout_site for f in study.folds]
    assert data["meta"]["auc"]["tau2"] == pytest.approx(study.meta["auc"].tau2)


def test_headline_metrics_lead_the_parent_run_named_as_the_researcher_guide_says(mlflow_server, logged_real_study,
                                                                                  study_result):
    """Random-effects AUC, CITL, slope, coverage and ΔAUC as ``headline_*``: values equal the study's summaries,
    their names sort before every other metric of the parent, the description opens with them, and the researcher
    guide names each one."""
    from pathlib import Path

    study, _ = study_result
    run = _client(mlflow_server).get_run(logged_real_study.parent_run_id)
    metrics = run.data.metrics
    expected = {"auc": "auc", "citl": "citl", "cal_slope": "cal_slope", "coverage": "coverage",
                "delta_auc": "auc_difference"}
    headline = sorted(k for k in metrics if k.startswith("headline_"))
    for name, meta_key in expected.items():
        if meta_key in study.meta:
            assert metrics[f"headline_{name}"] == pytest.approx(study.meta[meta_key].estimate)
            assert metrics[f"headline_{name}_ci_low"] == pytest.approx(study.meta[meta_key].ci_low)
    assert {"headline_auc", "headline_cal_slope", "headline_citl", "headline_coverage"} <= set(headline)
    assert sorted(metrics)[: len(headline)] == headline
    note = run.data.tags["mlflow.note.content"]
    assert note.startswith("**Headline results**") and "`headline_auc`" in note
    assert f"{study.meta['auc'].estimate:.3f}" in note
    guide = (Path(__file__).resolve().parents[2] / "docs" / "researcher-guide.md").read_text()
    for name in headline:
        if not name.endswith(("_ci_low", "_ci_high")):
            assert f"`{name}`" in guide, name


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
