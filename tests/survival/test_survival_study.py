"""A time-to-event study through the real study code (coordinator runner ↔ site dispatch, in process, no Flower):
NCCTG lung with its institutions as sites, every fit and held-out C checked against lifelines; the site's gate
and the coordinator's reply check against forged messages; bad survival columns with clear errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from lifelines import CoxPHFitter
from lifelines.utils import concordance_index

from coordinator.study import run_study
from federation.conftest import make_contexts
from federation.inprocess import InProcessTransport
from protocols.models import ALL_SITES
from protocols.survival_contract import COX, COX_BASELINE, COX_EVALUATE
from site_client.study import Refusal, handle
from site_client.study.cohort import build_cohort, load_cohort
from site_client.study.context import SiteStudyError
from site_client.study.store import SiteStore

from .lung_driver import FEATURES, HORIZONS, K, REFERENCE
from .study_sites import STUDY_K, lung_frame, lung_protocol, site_tables


def stratified_fit(frame: pd.DataFrame, columns: list[str]) -> pd.Series:
    return CoxPHFitter().fit(frame[[*columns, "time", "status", "site"]], "time", "status", strata=["site"],
                             fit_options={"precision": 1e-12}).params_[columns]


@pytest.fixture(scope="module")
def lung(tmp_path_factory):
    frame = lung_frame()
    protocol, pid = lung_protocol()
    transport = InProcessTransport(make_contexts(tmp_path_factory.mktemp("lung"), protocol, pid, site_tables(frame)))
    outcome = run_study(protocol, pid, transport, progress=lambda text: None)
    return frame, outcome, transport


def test_final_model_equals_lifelines_stratified_cox_on_all_sites(lung) -> None:
    frame, outcome, _ = lung
    result = outcome.results["raw"]
    np.testing.assert_allclose(result.final_model.beta, stratified_fit(frame, FEATURES).to_numpy(), atol=1e-6)
    np.testing.assert_allclose(result.final_volume_model.beta, stratified_fit(frame, REFERENCE).to_numpy(), atol=1e-6)
    # lifelines' linear predictor is centred at the pooled mean too
    x = frame[FEATURES].to_numpy(float)
    np.testing.assert_allclose(result.final_model.centre, x.mean(axis=0), rtol=1e-12)


def test_each_heldout_site_validates_the_model_trained_without_it(lung) -> None:
    frame, outcome, _ = lung
    heldout = outcome.results["raw"].heldout
    assert sorted(heldout) == sorted(frame["site"].unique())
    for site, result in heldout.items():
        train, test = frame[frame.site != site], frame[frame.site == site]
        t, e = test["time"].to_numpy(float), test["status"].to_numpy()
        eta = test[FEATURES].to_numpy(float) @ stratified_fit(train, FEATURES).to_numpy()
        eta_ref = test[REFERENCE].to_numpy(float) @ stratified_fit(train, REFERENCE).to_numpy()
        assert result["harrell"]["c"] == pytest.approx(concordance_index(t, -eta, e), abs=1e-9)
        delta = concordance_index(t, -eta, e) - concordance_index(t, -eta_ref, e)
        assert result["delta_c_vs_volume"]["delta"] == pytest.approx(delta, abs=1e-9)
        assert result["n"] == len(test) and result["n_events"] == int(e.sum())
        for curve in result["km_by_risk_group"].values():
            assert curve is None or curve["n"] >= STUDY_K
        for horizon in HORIZONS:
            entry = result["horizons"][float(horizon)]
            if not entry.get("suppressed") and entry["calibration"]:
                assert min(entry["calibration"]["n"]) >= STUDY_K


def test_pooled_measures_hold_every_site_that_released_them(lung) -> None:
    _, outcome, _ = lung
    result = outcome.results["raw"]
    pooled = result.pooled["harrell_c"]
    assert pooled.k == len(result.heldout)
    assert pooled.ci_low < pooled.estimate < pooled.ci_high
    assert 0.52 < pooled.estimate < 0.72  # NCCTG lung: C about 0.62 (docs/survival.md)
    for horizon in HORIZONS:
        shown = sum(1 for r in result.heldout.values() if "oe" in r["horizons"][float(horizon)]
                    and r["horizons"][float(horizon)]["oe"])
        assert (result.pooled[f"oe@{horizon:g}"].k if shown else 0) == shown


def test_cox_models_run_in_lockstep_and_no_binary_phase_is_sent(lung) -> None:
    _, outcome, transport = lung
    phases = [e.phase for e in transport.log]
    assert set(phases) == {"handshake", COX, COX_BASELINE, COX_EVALUATE}
    assert outcome.rounds_by_phase[COX] == outcome.cox_rounds
    # one round evaluates every unfinished fold's model: far fewer rounds than evaluations of all models
    evaluations = sum(f["iterations"] + 1 for f in outcome.results["raw"].fits.values())
    assert outcome.cox_rounds < evaluations / 2
    assert all(e.error == "" for e in transport.log)


# ---------------------------------------------------------------- the site's gate

def _request(transport, site: str, phase: str) -> dict:
    return dict(next(e.request for e in transport.log if e.site == site and e.phase == phase))


def test_site_refuses_binary_phases_for_a_survival_protocol(lung) -> None:
    _, _, transport = lung
    site = sorted(transport.contexts)[0]
    request = {"protocol_id": transport.contexts[site].protocol_id, "phase": "train", "round": 1, "models": [],
               "heldout_folds": []}
    with pytest.raises(Refusal, match="not part of this protocol's outcome form"):
        handle("train", request, transport.contexts[site])


def test_site_refuses_to_fit_its_own_heldout_fold(lung) -> None:
    _, _, transport = lung
    site = sorted(transport.contexts)[0]
    request = _request(transport, site, COX)
    own = f"{site}/raw/radiomic"
    request["models"] = [*request["models"], own]
    request[f"beta/{own}"] = np.zeros(len(FEATURES))
    with pytest.raises(Refusal, match="held-out fold for training"):
        handle(COX, request, transport.contexts[site])


def test_site_refuses_a_grid_without_the_horizons(lung) -> None:
    _, _, transport = lung
    site = sorted(transport.contexts)[0]
    request = _request(transport, site, COX_BASELINE)
    request["grid"] = np.array([10.0, 20.0, 30.0])
    with pytest.raises(Refusal, match="grid holding every horizon"):
        handle(COX_BASELINE, request, transport.contexts[site])


def test_site_refuses_a_model_without_its_volume_partner_and_another_fold(lung) -> None:
    _, _, transport = lung
    sites = sorted(transport.contexts)
    request = _request(transport, sites[0], COX_EVALUATE)
    partner = f"{sites[0]}/raw/volume"
    request["eval_models"] = [m for m in request["eval_models"] if m != partner]
    for name in ("beta", "centre", "bltimes", "blhaz"):
        request.pop(f"{name}/{partner}")
    with pytest.raises(Refusal, match="without its volume-only partner"):
        handle(COX_EVALUATE, request, transport.contexts[sites[0]])
    other = _request(transport, sites[1], COX_EVALUATE)  # the fold of another site
    with pytest.raises(Refusal, match="not held out of"):
        handle(COX_EVALUATE, other | {"protocol_id": transport.contexts[sites[0]].protocol_id},
               transport.contexts[sites[0]])


# ---------------------------------------------------------------- the coordinator's reply check

class TamperingTransport(InProcessTransport):
    """Replaces one site's Cox information matrix by a non-symmetric one in the first Cox round."""

    victim: str = ""

    def exchange(self, phase, requests, timeout_s):
        replies = super().exchange(phase, requests, timeout_s)
        if phase == COX and self.victim in replies and requests[self.victim]["step"] == 1:
            reply = dict(replies[self.victim])
            model = next(k for k in reply if k.endswith("/radiomic/info") or k.endswith("radiomic/info"))
            info = np.array(reply[model])
            info[0, 1] += 1.0
            reply[model] = info
            replies[self.victim] = reply
        return replies


def test_a_site_with_a_forged_information_matrix_is_dropped_and_the_rest_refit(tmp_path) -> None:
    frame = lung_frame()
    protocol, pid = lung_protocol()
    transport = TamperingTransport(make_contexts(tmp_path, protocol, pid, site_tables(frame)))
    victim = transport.victim = sorted(transport.contexts)[2]
    outcome = run_study(protocol, pid, transport, progress=lambda text: None)
    assert "not symmetric" in outcome.dropped[victim] and victim in outcome.dropped[victim]
    rest = frame[frame.site != victim]
    np.testing.assert_allclose(outcome.results["raw"].final_model.beta, stratified_fit(rest, FEATURES).to_numpy(),
                               atol=1e-6)
    assert victim not in outcome.results["raw"].heldout
    assert any("refitted without it" in note for note in outcome.notes)


# ---------------------------------------------------------------- bad survival columns

@pytest.mark.parametrize("column, value, message", [
    ("time", -3.0, "is negative; times are measured from the scan"),
    ("time", np.nan, "missing follow-up time"),
    ("status", 2, "is not 1 (event) or 0 (censored)"),
])
def test_bad_survival_cells_name_the_case_row_and_column(tmp_path, column, value, message) -> None:
    protocol, pid = lung_protocol()
    table = site_tables()["inst01"].copy()
    table.loc[4, column] = value
    context = make_contexts(tmp_path, protocol, pid, {"inst01": table})["inst01"]
    with pytest.raises(SiteStudyError) as caught:
        build_cohort(context, SiteStore(context.work_dir, pid))
    text = str(caught.value)
    assert message in text and f"'{table['case_id'][4]}'" in text and "row 6" in text and f"column '{column}'" in text


def test_a_row_with_both_cells_bad_names_the_time_column_first(tmp_path) -> None:
    protocol, pid = lung_protocol()
    table = site_tables()["inst01"].copy()
    table.loc[2, "time"], table.loc[2, "status"] = -1.0, 7
    context = make_contexts(tmp_path, protocol, pid, {"inst01": table})["inst01"]
    with pytest.raises(SiteStudyError, match=r"\(row 4\) column 'time': follow-up time -1 is negative"):
        build_cohort(context, SiteStore(context.work_dir, pid))


@pytest.mark.parametrize("column, field", [("time", "time_column"), ("status", "event_column")])
def test_a_missing_outcome_column_is_named_with_its_protocol_field(tmp_path, column, field) -> None:
    protocol, pid = lung_protocol()
    table = site_tables()["inst01"].drop(columns=[column])
    context = make_contexts(tmp_path, protocol, pid, {"inst01": table})["inst01"]
    with pytest.raises(SiteStudyError, match=rf"has no column '{column}' \(protocol label {field}\)"):
        build_cohort(context, SiteStore(context.work_dir, pid))


def test_the_stored_cohort_reads_back_the_table_s_times_and_events(tmp_path) -> None:
    """Built in the handshake, read back by every later message: both give each case its own time and event."""
    protocol, pid = lung_protocol()
    table = site_tables()["inst01"]
    context = make_contexts(tmp_path, protocol, pid, {"inst01": table})["inst01"]
    store = SiteStore(context.work_dir, pid)
    expected = table.set_index("case_id").sort_index()
    for cohort in (build_cohort(context, store), load_cohort(context, store)):
        assert cohort.table["case_id"].tolist() == expected.index.tolist()
        np.testing.assert_array_equal(cohort.time, expected["time"].to_numpy(float))
        np.testing.assert_array_equal(cohort.y, expected["status"].to_numpy(int))
        assert cohort.train.all()


def test_a_site_with_too_few_events_is_dropped_by_name(tmp_path) -> None:
    frame = lung_frame()
    protocol, pid = lung_protocol()
    tables = site_tables(frame)
    small = sorted(tables)[0]
    tables[small] = tables[small].assign(status=[1, 1, 1] + [0] * (len(tables[small]) - 3))
    transport = InProcessTransport(make_contexts(tmp_path, protocol, pid, tables))
    outcome = run_study(protocol, pid, transport, progress=lambda text: None)
    assert "fewer events than the protocol needs per site: 10" in outcome.dropped[small]
    assert small not in outcome.results["raw"].heldout and ALL_SITES not in outcome.results["raw"].heldout


# ---------------------------------------------------------------- MLflow run and the registered model

def lifelines_carried_risk(frame: pd.DataFrame, horizon: float) -> tuple[CoxPHFitter, float]:
    """lifelines' stratified fit and the n-weighted mean of its per-site Breslow H(t*) (docs/survival.md)."""
    fitter = CoxPHFitter().fit(frame[[*FEATURES, "time", "status", "site"]], "time", "status", strata=["site"],
                               fit_options={"precision": 1e-12})
    hazards = fitter.baseline_cumulative_hazard_
    at = hazards[hazards.index <= horizon].ffill().iloc[-1]
    sizes = frame.groupby("site").size()
    return fitter, float(sum(sizes[s] * at[s] for s in sizes.index) / sizes.sum())


def test_registered_model_returns_linear_predictor_and_risk_per_horizon(lung, mlflow_server) -> None:
    """Logged to a real ``mlflow server`` (proxied artifacts), as a coordinator's tracking server is used."""
    import mlflow
    from mlflow import MlflowClient

    from coordinator.tracking import log_outcome

    frame, outcome, _ = lung
    uri = mlflow_server
    logged = log_outcome(outcome, uri)
    mlflow.set_tracking_uri(uri)
    model = mlflow.pyfunc.load_model(f"models:/ncctg-lung-cox/{logged.model_version}")
    site = sorted(frame["site"].unique())[0]
    cases = frame[frame.site == site]
    predicted = model.predict(cases[FEATURES].astype(float).reset_index(drop=True))
    assert list(predicted.columns) == ["linear_predictor", *[f"risk_{h:g}" for h in HORIZONS]]
    fitter, hazard = lifelines_carried_risk(frame, 365.0)
    x = cases[FEATURES].to_numpy(float)
    eta = (x - frame[FEATURES].to_numpy(float).mean(axis=0)) @ fitter.params_[FEATURES].to_numpy()
    np.testing.assert_allclose(predicted["linear_predictor"], eta, atol=1e-6)
    np.testing.assert_allclose(predicted["risk_365"], 1 - np.exp(-hazard * np.exp(eta)), atol=1e-6)
    # the study's own values for these cases: the final model the outcome carries
    np.testing.assert_allclose(predicted["linear_predictor"], outcome.final_model.linear_predictor(x), rtol=0, atol=1e-12)
    client = MlflowClient(tracking_uri=uri)
    parent = client.get_run(logged.parent_run_id)
    assert parent.data.metrics["pooled_harrell_c"] == pytest.approx(outcome.results["raw"].pooled["harrell_c"].estimate)
    assert parent.data.tags["outcome"] == "survival"
    # the parent says where the registered model is (as a binary study's does); the alias moves only with promote
    assert parent.data.tags["registered_model"] == (
        f"ncctg-lung-cox version {logged.model_version} (alias 'champion' not moved: log with --promote)")
    assert parent.data.tags["model_uri"] == logged.model_uri
    assert client.get_model_version("ncctg-lung-cox", logged.model_version).tags == {
        "protocol_id": outcome.protocol_id, "parent_run_id": logged.parent_run_id, "variant": "raw"}
    artifacts = {a.path for a in client.list_artifacts(logged.parent_run_id, "plots")}
    assert {"plots/forest_harrell_c.png", "plots/calibration_at_365.png"} <= artifacts
    fold = client.get_run(logged.fold_run_ids[site])
    assert fold.data.metrics["harrell_c"] == pytest.approx(outcome.results["raw"].heldout[site]["harrell"]["c"])
    assert {a.path for a in client.list_artifacts(fold.info.run_id, "plots")} == {"plots/km_by_risk_group.png"}
    with pytest.raises(Exception, match="feature 'age' of row 0"):
        model.predict(cases[FEATURES].astype(float).reset_index(drop=True).assign(age=np.nan))


def test_report_of_a_survival_study(lung, tmp_path) -> None:
    from coordinator.report import write_report
    from coordinator.tracking import log_outcome

    frame, outcome, _ = lung
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    logged = log_outcome(outcome, uri)
    html_path, md_path = write_report(logged.parent_run_id, tmp_path / "report", uri)
    text = md_path.read_text()
    pooled = outcome.results["raw"].pooled["harrell_c"]
    assert f"{pooled.estimate:.3f} (95% CI {pooled.ci_low:.3f}–{pooled.ci_high:.3f}" in text
    site = sorted(outcome.results["raw"].heldout)[0]
    c = outcome.results["raw"].heldout[site]["harrell"]
    assert f"| {site} |" in text and f"{c['c']:.3f} (SE {c['se']:.3f})" in text
    assert "Net benefit at 365 days" in text and "carried cumulative baseline hazard" in text
    assert html_path.read_text().count("data:image/png;base64") >= 3 + len(outcome.results["raw"].heldout)


def test_site_serves_one_held_out_evaluation_per_run(lung) -> None:
    _, _, transport = lung
    site = sorted(transport.contexts)[0]
    for phase in (COX_BASELINE, COX_EVALUATE):
        with pytest.raises(Refusal, match="already served 1 time"):
            handle(phase, _request(transport, site, phase), transport.contexts[site])


def test_small_censored_class_makes_a_site_ineligible(tmp_path):
    """At k = 5, an institution with 2 censored patients would have them pinned by its patient and event counts:
    it declines in the handshake with the reason, sends no statistics, and the study runs on the others."""
    frame = lung_frame()
    protocol, pid = lung_protocol(privacy={"min_cell_count": K})
    transport = InProcessTransport(make_contexts(tmp_path, protocol, pid, site_tables(frame)))
    lines: list[str] = []
    outcome = run_study(protocol, pid, transport, progress=lines.append)
    censored = (frame.status == 0).groupby(frame.site).sum()
    small = sorted(site for site, n in censored.items() if 0 < n < K)
    assert small == ["inst03", "inst06", "inst16", "inst21", "inst22"]
    for site in small:
        assert any(site in line and "censored cases: fewer than k=5 and not none" in line for line in lines), site
    assert sorted(outcome.results["raw"].heldout) == sorted(set(censored.index) - set(small))
