"""The site's query budget, tried as a curious coordinator would: against the site's own handler, each request
beyond the protocol's budget is refused before anything is computed, with a generic reason, and recorded."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from site_client.privacy import Ledger
from site_client.study import handle
from site_client.study.validator import Refusal

SITE = "site-a"


def _replay(study, context, upto: str | None = None) -> dict:
    """Serve the site's recorded requests in order (a legitimate study); returns the last request of each phase."""
    last = {}
    for phase, request in study.requests(SITE):
        handle(phase, copy.deepcopy(request), context)
        last[(phase, request.get("step", request.get("round")))] = request
        if upto is not None and phase == upto:
            break
    return last


def _refusal(exc: pytest.ExceptionInfo, pid: str, budget: str, limit) -> None:
    assert exc.value.code == "over-budget"
    assert exc.value.reason == f"request not allowed by the privacy budget of protocol {pid[:12]}: {budget} (limit {limit})"


def test_the_default_budget_lets_a_whole_study_run_and_the_ledger_shows_it(study) -> None:
    context = study.fresh_context(SITE, "replay")
    _replay(study, context)
    ledger = Ledger.read(context.work_dir, study.pid)
    run = ledger["runs"]["7"]
    assert run["train_rounds"] == [1, 2] and ledger["grants"] == {"in-process": ["7"]}
    assert run["recalibration_steps"] == list(range(1, len(run["recalibration_steps"]) + 1))
    assert set(run["evaluations"].values()) == {1} and ledger["refusals"] == []
    assert "before/<model>/histograms/bin_n_pos" in ledger["releases"]["7"]["calibrate"]
    # site-a has 3 positives in its calibration part: its apparent (train-part) class totals would give them
    # back from n_pos, so the whole-run guard withheld them, and the ledger says which totals left
    assert ledger["released_totals"] == ["n", "n_cal", "n_neg", "n_pos", "n_train"]
    assert {w.split("/")[0] for w in run["withheld"]} == {"apparent"}


def test_repeated_rounds_and_evaluations_are_refused(study) -> None:
    context = study.fresh_context(SITE, "repeat")
    last = _replay(study, context)
    pid = study.pid
    with pytest.raises(Refusal) as exc:
        handle("train", copy.deepcopy(last[("train", 2)]), context)
    _refusal(exc, pid, "training rounds (each of 1..model.rounds once)", 2)
    beyond = copy.deepcopy(last[("train", 2)])
    beyond["round"] = 3
    with pytest.raises(Refusal):  # beyond model.rounds: the message contract refuses it before the budget does
        handle("train", beyond, context)
    with pytest.raises(Refusal) as exc:
        handle("calibrate", copy.deepcopy(last[("calibrate", 0)]), context)
    _refusal(exc, pid, "evaluations per model", 1)
    evaluate = [r for p, r in study.requests(SITE) if p == "evaluate"][0]
    with pytest.raises(Refusal) as exc:
        handle("evaluate", copy.deepcopy(evaluate), context)
    _refusal(exc, pid, "evaluations per model", 1)
    refusals = Ledger.read(context.work_dir, pid)["refusals"]
    assert [r["budget"] for r in refusals] == ["training rounds (each of 1..model.rounds once)"] + ["evaluations per model"] * 2
    assert "already evaluated 1 time(s)" in refusals[-1]["detail"]


def test_a_second_study_needs_a_renewed_approval(study) -> None:
    context = study.fresh_context(SITE, "runs")
    _replay(study, context, upto="handshake")
    handshake = study.requests(SITE)[0][1]
    again = study.fresh_context(SITE, "runs", run_id=8)
    again.work_dir = context.work_dir
    with pytest.raises(Refusal) as exc:
        handle("handshake", copy.deepcopy(handshake), again)
    _refusal(exc, study.pid, "studies per approval", 1)
    renewed = study.fresh_context(SITE, "runs", run_id=8, **{"approval-grant": "g2", "approval-runs": "2"})
    renewed.work_dir = context.work_dir
    assert handle("handshake", copy.deepcopy(handshake), renewed)["phase"] == "handshake"


def test_steep_models_tiny_standardisation_and_many_points_are_refused_before_computing(study) -> None:
    pid = study.pid
    context = study.fresh_context(SITE, "steep")
    last = _replay(study, context, upto="train")
    first_train = last[("train", 1)]
    # the same first round with the radiomic models' weights made 10^4 times steeper: a step function
    for tag, change in (("weights", "w"), ("sd", "std")):
        ctx = study.fresh_context(SITE, f"steep-{tag}")
        _replay(study, ctx, upto="handshake")  # no ComBat round: no covariates
        request = copy.deepcopy(first_train)
        for key in request:
            if change == "w" and key.startswith("w/") and key.endswith("/0"):
                request[key] = request[key] * 1e4
            if change == "std" and key.startswith("std/") and key.endswith("/sd"):
                request[key] = request[key] * 1e-4
        with pytest.raises(Refusal) as exc:
            handle("train", request, ctx)
        _refusal(exc, pid, "model steepness (privacy.max_steepness)", 100.0)
        assert not (ctx.work_dir / "study" / pid[:16] / "matrices.npz").exists(), "computed before refusing"
    calibrate = [r for p, r in study.requests(SITE) if p == "calibrate" and r["step"] == 0][0]
    ctx = study.fresh_context(SITE, "points")
    _replay(study, ctx, upto="train")
    for phase, request in study.requests(SITE):
        if phase == "train" and request["round"] == 2:
            handle(phase, copy.deepcopy(request), ctx)
    crowded = copy.deepcopy(calibrate)
    model = crowded["train_models"][0]
    crowded[f"par/{model}"] = np.tile([[0.0, 1.0]], (11, 1))
    with pytest.raises(Refusal) as exc:
        handle("calibrate", crowded, ctx)
    _refusal(exc, pid, "recalibration candidate points per model and round", 10)


def test_recalibration_outside_the_box_is_not_evaluated_or_applied(study) -> None:
    context = study.fresh_context(SITE, "box")
    last = _replay(study, context, upto="calibrate")
    model = last[("calibrate", 0)]["train_models"][0]
    step = {"phase": "calibrate", "protocol_id": study.pid, "step": 1, "train_models": [model],
            f"par/{model}": np.array([[0.0, 1.0], [-300.0, 1e3], [0.0, 25.5]])}
    reply = handle("calibrate", step, context)
    assert any(key.startswith(f"terms/{model}/0/") for key in reply)
    assert not any(key.startswith((f"terms/{model}/1/", f"terms/{model}/2/")) for key in reply)
    evaluate = copy.deepcopy([r for p, r in study.requests(SITE) if p == "evaluate"][0])
    victim = evaluate["eval_models"][0]
    evaluate[f"recal/{victim}"] = np.array([-2000.0, 1e3])
    with pytest.raises(Refusal) as exc:
        handle("evaluate", evaluate, context)
    _refusal(exc, study.pid, "recalibration parameters in the protocol's box", "privacy.platt_bound / max_abs_log_temperature")
