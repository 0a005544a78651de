"""A curious or forged coordinator against the site's own handler (no Flower needed).

One real study runs first (the site's run state is then what a real run leaves); every attack replays one of
that study's real requests with one thing changed. Each must be refused before anything is computed (the
run's work folder is unchanged but for the site's log), with a code and a generic reason that names the
field and holds no value from the data (the texts are asserted exactly), and the detail goes to the site log.
"""

from __future__ import annotations

import shutil

import copy
import hashlib

import numpy as np
import pytest

from coordinator.study import run_study
from federation.conftest import make_contexts
from federation.inprocess import InProcessTransport
from federation.synthetic import synthetic_protocol, synthetic_sites
from site_client.study import handle
from site_client.study.validator import Refusal

SITE = "H2"


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    p, pid = synthetic_protocol(model={"rounds": 2})
    tables = synthetic_sites()
    transport = InProcessTransport(make_contexts(tmp_path_factory.mktemp("gate"), p, pid, tables))
    outcome = run_study(p, pid, transport, progress=lambda s: None)
    assert outcome.sites == sorted(tables)
    return p, pid, transport, tables


def _request(transport, phase, n=0, site=SITE):
    return copy.deepcopy([e.request for e in transport.log if e.site == site and e.phase == phase][n])


def _snapshot(context):
    out = {}
    for path in sorted(context.work_dir.rglob("*")):
        if path.is_file() and path.name != "notes.log":
            out[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def _refused(study, phase, request, site=SITE) -> str:
    p, pid, transport, tables = study
    context = transport.contexts[site]
    before = _snapshot(context)
    with pytest.raises(Refusal) as err:
        handle(phase, request, context)
    assert _snapshot(context) == before, "nothing may be computed or stored for a refused request"
    text = str(err.value)
    data_values = set(tables[site]["case_id"]) | {f"{v:.6g}" for v in tables[site]["age"].head(20)}
    assert not any(v in text for v in data_values)
    log = next(context.work_dir.glob("study/*/notes.log")).read_text()
    assert err.value.reason in log
    return text


def _not_allowed(study, phase, field_and_why):
    pid = study[1]
    return f"site {SITE} refused {phase} (not-allowed): request not allowed by protocol {pid[:12]}: {field_and_why}"


def _not_in_contract(study, phase, field_and_why):
    pid = study[1]
    return f"site {SITE} refused {phase} (not-in-contract): request not allowed by protocol {pid[:12]}: {field_and_why}"


# ---- ComBat plan: must equal what the protocol and the site's handshake imply -----------------------------
@pytest.mark.parametrize("name,value,why", [
    ("batch_col", "case_id", "differs from the protocol"),
    ("continuous", ["y"], "differs from the protocol"),            # the label as a covariate
    ("continuous", ["f0"], "differs from the protocol"),            # a feature as a covariate
    ("continuous", ["case_id"], "differs from the protocol"),       # the id as a covariate
    ("categorical", [], "differs from the protocol"),
    ("eb", 0, "differs from the protocol"),
    ("levels:sex", ["F", "X"], "names a level the protocol does not declare"),
    ("all_features", ["f0", "f1", "f2", "f3", "vol"], "differs from the site's handshake"),          # other order
    ("all_features", ["f0", "f1", "f2", "f3", "f4"], "differs from the site's handshake"),   # a feature missing
    ("features", ["f1", "f0"], "is not an ordered subset of the site's handshake features"),
    ("spanning", ["S1a"], "is not empty (batches must not span sites)"),
])
def test_a_plan_that_differs_from_the_protocol_is_refused(study, name, value, why):
    request = _request(study[2], "combat-round1")
    request[f"plan/_all/{name}"] = value
    assert _refused(study, "combat-round1", request) == _not_allowed(study, "combat-round1", f"plan/_all/{name} {why}")


def test_a_plan_with_the_id_as_categorical_covariate_is_refused_without_listing_ids(study):
    request = _request(study[2], "combat-round1")
    request["plan/_all/categorical"] = ["case_id"]
    request["plan/_all/levels:case_id"] = ["H2-000", "H2-001"]
    assert _refused(study, "combat-round1", request) == _not_in_contract(
        study, "combat-round1", "plan/_all/levels:case_id is not described by the message contract")


@pytest.mark.parametrize("name,value", [
    ("all_features", ["f0", "f1", "f2", "f3", "f4", "vol", "case_id"]),   # an extra "feature"
    ("continuous", ["age", "y"]),                                         # more covariates than the protocol's
])
def test_a_plan_longer_than_the_contract_allows_is_refused(study, name, value):
    request = _request(study[2], "combat-round1")
    request[f"plan/_all/{name}"] = value
    assert _refused(study, "combat-round1", request) == _not_in_contract(
        study, "combat-round1", f"plan/_all/{name} has the wrong shape or too many entries")


def test_a_plan_without_the_sites_own_batch_is_refused(study):
    request = _request(study[2], "combat-round1")
    request["plan/_all/batches"] = [b for b in request["plan/_all/batches"] if not b.startswith("S1")]
    request["plan/_all/batch_n"] = request["plan/_all/batch_n"][:len(request["plan/_all/batches"])]
    assert _refused(study, "combat-round1", request) == _not_allowed(
        study, "combat-round1", "plan/_all/batches lacks a batch of the site's handshake")


def test_training_its_own_held_out_fold_in_combat_is_refused(study):
    request = _request(study[2], "combat-round1")
    request["train_folds"] = request["train_folds"] + [SITE]
    assert _refused(study, "combat-round1", request) == _not_allowed(
        study, "combat-round1", "train_folds names the site's own held-out fold for training")


# ---- training: only models of folds this run introduced, never the site's own ---------------------------
def _train_request(study, model_from, model_to):
    request = _request(study[2], "train", 1)
    request["models"] = [model_to if m == model_from else m for m in request["models"]]
    for key in [k for k in request if k.startswith(f"w/{model_from}/")]:
        request[key.replace(model_from, model_to)] = request.pop(key)
    return request


def test_an_invented_fold_is_refused(study):
    request = _train_request(study, "_all/raw/radiomic", "H9/raw/radiomic")
    assert _refused(study, "train", request) == _not_allowed(study, "train", "models names a fold this run did not introduce")


def test_the_sites_own_fold_for_training_is_refused(study):
    request = _train_request(study, "_all/raw/radiomic", f"{SITE}/raw/radiomic")
    assert _refused(study, "train", request) == _not_allowed(
        study, "train", "models names the site's own held-out fold for training")


def test_parameters_of_an_unlisted_model_are_refused(study):
    request = _request(study[2], "train", 1)
    request["models"] = [m for m in request["models"] if m != "_all/raw/radiomic"]
    assert _refused(study, "train", request) == _not_allowed(
        study, "train", "w/_all/raw/radiomic/0 names a model the request does not list")


def test_evaluating_a_model_of_a_fold_it_trains_is_refused(study):
    request = _request(study[2], "evaluate")
    model = "_all/harmonised/radiomic"
    request["eval_models"] = [model]
    request = {k: v for k, v in request.items() if not k.startswith(("recal", "q/"))}
    request[f"recal_method/{model}"], request[f"recal/{model}"] = "temperature", np.zeros(1)
    assert _refused(study, "evaluate", request) == _not_allowed(
        study, "evaluate", "eval_models names a model calibration step 0 did not introduce")


# ---- the contract itself: unknown field, wrong dtype or shape, oversized list ---------------------------
def test_an_unknown_field_is_refused(study):
    request = _request(study[2], "train", 1)
    request["export/cases"] = 1
    assert _refused(study, "train", request) == _not_in_contract(
        study, "train", "export/cases is not described by the message contract")


def test_a_wrong_dtype_is_refused(study):
    request = _request(study[2], "train", 1)
    request["round"] = "2"
    assert _refused(study, "train", request) == _not_in_contract(study, "train", "round must be an integer")


def test_a_wrong_shape_is_refused(study):
    request = _request(study[2], "train", 1)
    request["w/_all/raw/radiomic/0"] = np.zeros((4, 7))
    assert _refused(study, "train", request) == _not_in_contract(study, "train", "w/_all/raw/radiomic/0 has the wrong shape")


def test_an_oversized_list_is_refused(study):
    request = _request(study[2], "combat-round1")
    request["train_folds"] = [f"X{i}" for i in range(100)]
    assert _refused(study, "combat-round1", request) == _not_in_contract(
        study, "combat-round1", "train_folds has the wrong shape or too many entries")


def test_a_forged_recalibration_method_is_refused(study):
    request = _request(study[2], "evaluate")
    model = request["eval_models"][0]
    request[f"recal_method/{model}"] = "platt"
    assert _refused(study, "evaluate", request) == _not_allowed(
        study, "evaluate", f"recal_method/{model} differs from the protocol")


def test_an_unknown_phase_is_refused(study):
    request = {"protocol_id": study[1], "phase": "export"}
    assert _refused(study, "export", request) == f"site {SITE} refused export (not-in-contract): the phase is not in the message contract"


def test_a_later_phase_before_the_handshake_is_refused(study, tmp_path):
    p, pid, transport, tables = study
    fresh = make_contexts(tmp_path, p, pid, {SITE: tables[SITE]})[SITE]
    with pytest.raises(Refusal) as err:
        handle("train", _request(transport, "train", 1), fresh)
    assert str(err.value) == (f"site {SITE} refused train (out-of-order): the handshake has not been served "
                              "(or the site is not eligible) in this run")


# ---- defence in depth: a reply that breaks the contract is not sent ------------------------------------
def test_a_patient_sized_reply_is_blocked_and_logged(study, monkeypatch):
    from site_client.study import dispatch

    p, pid, transport, tables = study
    n = len(tables[SITE])
    request = _request(transport, "combat-round1")
    folds = request["train_folds"]
    real = dispatch.PHASES["combat-round1"]

    def per_patient(payload, context, store, cohort):
        reply = real(payload, context, store, cohort)
        reply[f"r1/{folds[0]}/xty"] = np.zeros((n, n))  # one column per patient instead of per feature
        return reply

    monkeypatch.setitem(dispatch.PHASES, "combat-round1", per_patient)
    context = transport.contexts[SITE]
    shutil.rmtree(context.work_dir / "privacy")  # round 1 was served: the privacy budget would refuse it again
    with pytest.raises(Refusal) as err:
        handle("combat-round1", request, context)
    assert str(err.value) == (f"site {SITE} refused combat-round1 (reply-blocked): the reply failed the site's "
                              "outgoing check and was not sent; details in the site's log")
    log = next(context.work_dir.glob("study/*/notes.log")).read_text()
    assert f"reply field r1/{folds[0]}/xty has the wrong shape" in log


def test_a_reply_string_the_site_may_not_send_is_blocked(study, monkeypatch):
    from site_client.study import dispatch

    p, pid, transport, tables = study
    request = _request(transport, "train", 1)
    real = dispatch.PHASES["train"]

    def leaky(payload, context, store, cohort):
        reply = real(payload, context, store, cohort)
        reply["diag/_all/batches"] = ["H2-000"]   # a case id where a batch label belongs
        return reply

    monkeypatch.setitem(dispatch.PHASES, "train", leaky)
    context = transport.contexts[SITE]
    shutil.rmtree(context.work_dir / "privacy")  # round 1 was served: the privacy budget would refuse it again
    with pytest.raises(Refusal, match=r"\(reply-blocked\)"):
        handle("train", request, context)
    log = next(context.work_dir.glob("study/*/notes.log")).read_text()
    assert "reply field diag/_all/batches holds a string the site may not send" in log


@pytest.mark.parametrize("spoil,detail", [
    (lambda t: t.assign(y=t["y"].astype(object).where(t["case_id"] != "H2-007", "maybe")), "'H2-007'"),
    (lambda t: t.assign(f3=t["f3"].where(t["case_id"] != "H2-011", np.nan)), "'H2-011'"),
    (lambda t: t.assign(age=t["age"].where(t["case_id"] != "H2-004", 999.0)), "'H2-004'"),
])
def test_a_cohort_error_leaves_the_site_as_a_generic_reason_with_the_detail_in_its_log(tmp_path, spoil, detail):
    p, pid = synthetic_protocol()
    table = spoil(synthetic_sites()[SITE])
    context = make_contexts(tmp_path, p, pid, {SITE: table})[SITE]
    with pytest.raises(Refusal) as err:
        handle("handshake", {"protocol_id": pid, "phase": "handshake"}, context)
    assert str(err.value) == (f"site {SITE} refused handshake (data-error): the site's data does not meet protocol "
                              f"{pid[:12]}; details in the site's log")
    assert detail in next(context.work_dir.glob("study/*/notes.log")).read_text()


# ---- ComBat plans and fits: exactly once; plans in round 1 or (no covariates, no round) in the first training
# message, fits always in the first training message, with σ̂² ----
@pytest.fixture(scope="module")
def study_without_covariates(tmp_path_factory):
    p, pid = synthetic_protocol(model={"rounds": 2}, covariates={"categorical": [], "continuous": []})
    tables = {site: table.drop(columns=["sex", "age"]) for site, table in synthetic_sites().items()}
    transport = InProcessTransport(make_contexts(tmp_path_factory.mktemp("gate-nocov"), p, pid, tables))
    outcome = run_study(p, pid, transport, progress=lambda s: None)
    assert "combat-round1" not in outcome.rounds_by_phase
    return p, pid, transport, synthetic_sites()  # with the columns the refusal texts must not quote


@pytest.mark.parametrize("which", ["covariates", "no covariates"])
def test_a_first_training_message_without_the_combat_fit_is_refused(study, study_without_covariates, which):
    chosen = study if which == "covariates" else study_without_covariates
    request = _request(chosen[2], "train", 0)
    fold = sorted(k.split("/")[1] for k in request if k.startswith("scale/"))[0]
    for name in [k for k in request if k.startswith(f"fit/{fold}/")]:
        del request[name]
    assert _refused(chosen, "train", request) == _not_allowed(
        chosen, "train", f"scale/{fold} comes without the fold's ComBat fit")


def test_a_combat_round_2_request_is_refused_as_outside_the_contract(study):
    """σ̂² needs no round of its own any more: a site refuses the phase that used to ask for SSR."""
    request = {"protocol_id": study[1], "phase": "combat-round2", "train_folds": ["_all"]}
    assert _refused(study, "combat-round2", request) == (
        f"site {SITE} refused combat-round2 (not-in-contract): the phase is not in the message contract")


def test_a_combat_fit_or_plan_in_a_later_training_message_is_refused(study_without_covariates):
    transport = study_without_covariates[2]
    first = _request(transport, "train", 0)
    for name, why in (("fit/", "train_folds is only allowed in the first training message"),
                      ("plan/", "plan is only allowed in the first training message")):
        later = _request(transport, "train", 1)
        later.update({k: v for k, v in first.items() if k.startswith(name)})
        assert _refused(study_without_covariates, "train", later) == _not_allowed(study_without_covariates, "train", why)


def test_a_forged_plan_in_the_first_training_message_is_refused(study_without_covariates):
    request = _request(study_without_covariates[2], "train", 0)
    fold = sorted(k.split("/")[1] for k in request if k.startswith("plan/"))[0]
    request[f"plan/{fold}/batch_col"] = "case_id"  # one batch per patient: the "harmonised" data would be the ids' means
    assert _refused(study_without_covariates, "train", request) == _not_allowed(
        study_without_covariates, "train", f"plan/{fold}/batch_col differs from the protocol")


def test_a_plan_in_the_first_training_message_after_combat_round_1_is_refused(study):
    transport = study[2]
    request = _request(transport, "train", 0)
    request.update({k: v for k, v in _request(transport, "combat-round1").items() if k.startswith("plan/")})
    assert _refused(study, "train", request) == _not_allowed(study, "train", "plan was sent in combat-round1 already")


