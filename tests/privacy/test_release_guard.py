"""The whole-run release guard on its own: what it withholds, that its memory spans messages, and that a count of
a kind nobody registered never leaves. The bounds are checked with this folder's LP oracle
(test_no_small_cell_by_differencing.pinned), which reads totals from the fields' meaning, not from the guard."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import numpy as np
import pytest

from site_client.privacy import Ledger
from site_client.privacy.release_guard import guard_release, record_release
from site_client.study import dispatch, handle
from site_client.study.validator import Refusal

from .test_no_small_cell_by_differencing import SUBSET, pinned

# the site: 4 positives in the calibration part
COUNTS = {"n": 42, "n_pos": 17, "n_neg": 25, "n_train": 32, "n_cal": 10, "n_train_pos": 13, "n_train_neg": 19,
          "n_cal_pos": 4, "n_cal_neg": 6}


def _context(tmp_path, k: int = 5):
    privacy = SimpleNamespace(min_cell_count=k)
    return SimpleNamespace(protocol=SimpleNamespace(privacy=privacy), work_dir=tmp_path, protocol_id="f" * 64, run_id=3)


def _guard(reply, payload, context, counts) -> list[str]:
    """The guard's decision and its record in one ledger transaction (as the dispatcher does for a reply that
    passes the outgoing check); returns the prefixes withheld."""
    with Ledger.open(context.work_dir, context.protocol_id) as ledger:
        release = guard_release(reply, payload, context, counts, ledger)
        record_release(ledger, release, "test", context.run_id)
    return release.withheld


def _hist(total: int) -> np.ndarray:
    return np.array([total - 5, 5]) if total >= 10 else np.array([total])


def test_the_calibration_part_is_kept_over_the_train_part_and_nothing_pins_a_cell(tmp_path) -> None:
    context = _context(tmp_path)
    handshake = {"n": 42, "n_pos": 17, "n_neg": 25, "n_train": -1, "n_cal": -1,
                 "n_train_pos": -1, "n_train_neg": -1, "n_cal_pos": -1, "n_cal_neg": -1}
    assert _guard(handshake, {}, context, COUNTS) == []
    reply = {
        "apparent/m/histograms/edges": np.array([0.0, 0.5, 1.0]),
        "apparent/m/histograms/bin_n_pos": _hist(13), "apparent/m/histograms/bin_n_neg": _hist(19),
        "conformal/m/neg/edges": np.array([0.0, 1.0]), "conformal/m/neg/bin_n_scores": _hist(6),
        "before/m/histograms/edges": np.array([0.0, 0.5, 1.0]),
        "before/m/histograms/bin_n_pos": _hist(17), "before/m/histograms/bin_n_neg": _hist(25),
    }
    withheld = _guard(reply, {"train_models": ["m"], "eval_models": ["m"]}, context, COUNTS)
    # the held-out evaluation (all cases) first, then the calibration part, then the train part: n_train_pos = 13
    # with n_pos = 17 would give back n_cal_pos = 4
    assert withheld == ["apparent/m/histograms"]
    assert reply["apparent/m/histograms/suppressed"] == 1 and "apparent/m/histograms/bin_n_pos" not in reply
    assert "conformal/m/neg/bin_n_scores" in reply and "before/m/histograms/bin_n_pos" in reply
    # the LP oracle: everything that left pins nothing; what was withheld would have pinned n_cal_pos
    rows = [SUBSET["all"], SUBSET["pos"], SUBSET["neg"], SUBSET["cal_neg"]]
    values = [42, 17, 25, 6]
    assert pinned(rows, values, 5) == {}
    assert pinned(rows + [SUBSET["train_pos"]], values + [13], 5) == {"cal_pos": (4.0, 4.0)}
    ledger = Ledger.read(tmp_path, context.protocol_id)
    assert ledger["released_totals"] == ["n", "n_cal_neg", "n_neg", "n_pos"]
    assert ledger["runs"]["3"]["withheld"] == ["apparent/m/histograms"]


def test_the_guard_remembers_what_left_across_messages_and_runs(tmp_path) -> None:
    """Released totals live in the ledger: a later message, or a later run of the same protocol (a renewed
    approval, the same cohort), cannot give back what an earlier one made safe."""
    context = _context(tmp_path)
    assert _guard({"n": 42, "n_train_pos": 13}, {}, context, COUNTS) == []
    later = {"before/m/auc/n": 42, "before/m/auc/n_pos": 17, "before/m/auc/n_neg": 25, "before/m/auc/auc": 0.7}
    assert _guard(later, {"eval_models": ["m"]}, context, COUNTS) == ["before/m/auc"]
    assert later == {"before/m/auc/suppressed": 1, "before/m/auc/k": 5}
    next_run = SimpleNamespace(**{**vars(context), "run_id": 4})
    assert _guard({"n": 42, "n_pos": 17, "n_neg": 25}, {}, next_run, COUNTS) == [""]
    assert Ledger.read(tmp_path, context.protocol_id)["runs"]["4"]["withheld"] == [""]


def test_a_count_of_an_unregistered_kind_never_leaves_the_site(study, monkeypatch) -> None:
    """A new release that forgot to register its counts fails closed: generic internal error out, the kind in
    the site's log."""
    site = "site-c"
    context = study.fresh_context(site, "unregistered")
    original = dispatch.PHASES["calibrate"]

    def with_new_metric(payload, ctx, store, cohort):
        reply = original(payload, ctx, store, cohort)
        reply["newmetric/" + str(payload["train_models"][0]) + "/n_flagged"] = 7
        return reply

    monkeypatch.setitem(dispatch.PHASES, "calibrate", with_new_metric)
    for phase, request in study.requests(site):
        if phase == "calibrate":
            with pytest.raises(Refusal) as exc:
                handle(phase, copy.deepcopy(request), context)
            break
        handle(phase, copy.deepcopy(request), context)
    assert exc.value.code == "internal-error"
    assert exc.value.reason == "the site could not compute the reply; details in the site's log"
    log = "".join(p.read_text(encoding="utf-8") for p in context.work_dir.rglob("notes.log"))
    assert "release kind 'newmetric/<model>/n_flagged' is not registered in site_client/privacy/release_guard.py" in log



def _blocked(handler):
    """``handler`` with a field the message contract does not have (a string, as a leak would be): the site's
    outgoing check blocks every reply of it, after the whole-run guard let it through."""
    def with_a_string(*args):
        reply = handler(*args)
        reply["note"] = "case 0017"
        return reply
    return with_a_string


def test_a_reply_the_outgoing_check_blocks_records_no_totals(study, monkeypatch) -> None:
    """Released totals are the guard's memory of what left the site: a handshake that passed the guard but then
    failed the site's outgoing check never left, so it adds no total (nor release kind) to the ledger."""
    site = "site-c"
    context = study.fresh_context(site, "blocked-handshake")
    monkeypatch.setattr(dispatch, "handle_handshake", _blocked(dispatch.handle_handshake))
    phase, request = study.requests(site)[0]
    assert phase == "handshake"
    with pytest.raises(Refusal) as exc:
        handle(phase, copy.deepcopy(request), context)
    assert exc.value.code == "reply-blocked"
    # the same message, served unchanged in the recorded study, released the site's size and class totals
    recorded = study.replies(site)[0][1]
    assert recorded["n"] == 44 and recorded["n_pos"] > 0 and recorded["n_neg"] > 0
    ledger = Ledger.read(context.work_dir, study.pid)
    assert ledger["released_totals"] == []
    assert ledger["releases"] == {}


def test_a_blocked_reply_records_nothing_it_withheld(study, monkeypatch) -> None:
    """site-a's first calibration reply has its apparent (train-part) aggregates withheld by the guard
    (test_query_budget); when the outgoing check then blocks the whole reply, nothing of it is recorded."""
    site = "site-a"
    context = study.fresh_context(site, "blocked-calibrate")
    monkeypatch.setitem(dispatch.PHASES, "calibrate", _blocked(dispatch.PHASES["calibrate"]))
    for phase, request in study.requests(site):
        if phase == "calibrate":
            before = Ledger.read(context.work_dir, study.pid)
            with pytest.raises(Refusal) as exc:
                handle(phase, copy.deepcopy(request), context)
            break
        handle(phase, copy.deepcopy(request), context)
    assert exc.value.code == "reply-blocked"
    log = "".join(p.read_text(encoding="utf-8") for p in context.work_dir.rglob("notes.log"))
    assert "withheld by the whole-run small-cell guard: ['apparent/" in log  # the guard did withhold
    after = Ledger.read(context.work_dir, study.pid)
    assert "withheld" not in after["runs"]["7"]
    assert after["released_totals"] == before["released_totals"]
    assert after["releases"] == before["releases"] and "calibrate" not in after["releases"]["7"]
