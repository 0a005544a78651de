"""Validated = deployed: the model registered in MLflow, loaded with ``mlflow.pyfunc.load_model``, gives a site's
cases exactly the probabilities, recalibrated probabilities and conformal sets the study computed for them at
that site (``site_client.study`` on the site's own stored state), and refuses input it cannot serve."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

pytestmark = pytest.mark.deployment


def _load(uri, model_uri):
    import mlflow

    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        return mlflow.pyfunc.load_model(model_uri)
    finally:
        mlflow.set_tracking_uri(previous)


def _study_at_site(real_study, site, variant):
    """What the study computed at ``site`` for the final model of ``variant``: the site's own functions on the
    site's own stored state (the weights and standardisation the study sent it)."""
    from coordinator.study.calibrate import recal_vector
    from protocols.models import ALL_SITES, model_key
    from site_client.evaluation import prediction_sets
    from site_client.study.cohort import load_cohort
    from site_client.study.evaluate import _probabilities, _stored_weights, recalibrate
    from site_client.study.harmonise import MATRICES
    from site_client.study.store import SiteStore

    context = real_study.contexts[site]
    store = SiteStore(context.work_dir, real_study.protocol_id)
    cohort = load_cohort(context, store)
    model = model_key(ALL_SITES, variant, "radiomic")
    p = _probabilities(context, store, cohort, model, _stored_weights(context, store), store.read_arrays(MATRICES))
    final = real_study.outcome.results[variant].final_model
    p_after = recalibrate(p, final.recalibration.method, recal_vector(final.recalibration))
    in_neg, in_pos = prediction_sets(p, final.conformal_q_neg, final.conformal_q_pos)
    return cohort.table[cohort.model_features], p, p_after, in_neg, in_pos


def test_registered_model_reproduces_the_study_exactly_at_every_site(mlflow_server, logged_real_study, real_study):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_server)
    parent = client.get_run(logged_real_study.parent_run_id).data.tags
    assert parent["variant"] == "harmonised"          # ComBat on: the study prefers the harmonised variant ...
    assert parent["registered_variant"] == "raw"      # ... and registers the raw one, saying why
    assert "ComBat" in parent["registered_variant_reason"] and "batch" in parent["registered_variant_reason"]
    name, version = logged_real_study.registered_model, logged_real_study.model_version
    assert client.get_model_version(name, version).tags["variant"] == "raw"
    model = _load(mlflow_server, f"models:/{name}/{version}")
    for site in real_study.outcome.sites:
        x, p, p_after, in_neg, in_pos = _study_at_site(real_study, site, "raw")
        out = model.predict(x)
        np.testing.assert_array_equal(out["p_raw"].to_numpy(), p)
        np.testing.assert_array_equal(out["p"].to_numpy(), p_after)
        np.testing.assert_array_equal(out["in_set_negative"].to_numpy(), in_neg)
        np.testing.assert_array_equal(out["in_set_positive"].to_numpy(), in_pos)
        # one case at a time gives the same answer: nothing depends on who else is in the request
        single = model.predict(x.iloc[[3]])
        assert single["p_raw"].iloc[0] == p[3] and bool(single["in_set_positive"].iloc[0]) == bool(in_pos[3])


def test_sets_are_on_the_raw_probability_where_it_matters(mlflow_server, logged_real_study, real_study):
    """Cases whose set changes if it were built on the recalibrated probability: the model follows the raw one."""
    final = real_study.outcome.results["raw"].final_model
    model = _load(mlflow_server, logged_real_study.model_uri)
    x = pd.concat([_study_at_site(real_study, s, "raw")[0] for s in real_study.outcome.sites], ignore_index=True)
    out = model.predict(x)
    raw_sets = out["p_raw"] <= final.conformal_q_neg
    recal_sets = out["p"] <= final.conformal_q_neg
    assert (out["in_set_negative"] == raw_sets).all()
    assert (raw_sets != recal_sets).any() or (out["p"] != out["p_raw"]).any()


def test_alias_moves_only_when_promoted(mlflow_server, logged_real_study):
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri=mlflow_server)
    try:  # another test may have promoted its own version: the alias must not point at this unpromoted one
        promoted = client.get_model_version_by_alias(logged_real_study.registered_model, "champion").version
    except MlflowException:
        promoted = None
    assert promoted != logged_real_study.model_version
    tag = client.get_run(logged_real_study.parent_run_id).data.tags["registered_model"]
    assert "not moved" in tag and "--promote" in tag


def test_experiment_opens_in_the_model_training_view(mlflow_server, logged_real_study):
    from mlflow import MlflowClient

    exp = MlflowClient(tracking_uri=mlflow_server).get_experiment(logged_real_study.experiment_id)
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"


def test_missing_or_non_finite_features_are_refused_with_the_column_and_row(mlflow_server, logged_real_study, real_study):
    model = _load(mlflow_server, logged_real_study.model_uri)
    x = _study_at_site(real_study, real_study.outcome.sites[0], "raw")[0].reset_index(drop=True).copy()
    with pytest.raises(Exception, match="f2"):
        model.predict(x.drop(columns=["f2"]))
    x.loc[4, "f1"] = np.nan
    with pytest.raises(Exception, match=r"feature 'f1' of row 4 is nan: every feature must be a finite number"):
        model.predict(x)
