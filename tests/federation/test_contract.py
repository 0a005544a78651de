"""The message contract: every message of a real study passes it in both directions (the site's gate and the
coordinator's reply check), any field it does not describe is refused, and docs/architecture.md shows it."""

from __future__ import annotations

from pathlib import Path

import pytest

from coordinator.study import run_study
from coordinator.study.replies import ReplyCheck
from federation.conftest import make_contexts
from federation.inprocess import InProcessTransport
from federation.synthetic import synthetic_protocol, synthetic_sites
from protocols.contract import (
    PHASES, REPLY, REQUEST, TABLE_BEGIN, TABLE_END, ContractViolation, Dims, check_message, contract_table, fold_sizes,
)
from protocols.payload import prefixes, unnest

DOC = Path(__file__).resolve().parents[2] / "docs" / "architecture.md"


@pytest.fixture(scope="module")
def exchanges(tmp_path_factory):
    p, pid = synthetic_protocol(model={"rounds": 2})
    transport = InProcessTransport(make_contexts(tmp_path_factory.mktemp("contract"), p, pid, synthetic_sites()))
    outcome = run_study(p, pid, transport, progress=lambda s: None)
    assert not outcome.dropped
    return p, transport.log


def _dims_and_sizes(p, log):
    hs = next(e.reply for e in log if e.phase == "handshake")
    r1 = next(e.request for e in log if e.phase == "combat-round1")
    plans = {fold: unnest(r1, f"plan/{fold}") for fold in prefixes(r1, "plan")}
    return Dims.of(p, len(hs["features"]), len(hs["model_features"])), fold_sizes(plans)


def test_every_request_and_reply_of_a_real_study_passes_the_contract_both_ways(exchanges):
    p, log = exchanges
    dims, sizes = _dims_and_sizes(p, log)
    checker = ReplyCheck(p, dims, {e.site: {k: e.reply[k] for k in ("n", "n_train")} for e in log if e.phase == "handshake"}, sizes)
    assert {e.phase for e in log} == set(PHASES)
    for e in log:
        assert e.reply is not None, f"{e.site} refused a genuine {e.phase} request: {e.error}"
        check_message(e.phase, REQUEST, e.request, dims, sizes=sizes)
        check_message(e.phase, REPLY, e.reply, dims, e.request, sizes=sizes)
        assert checker.problem(e.site, e.phase, e.request, e.reply) is None


def test_a_field_the_contract_does_not_describe_is_refused_in_either_direction(exchanges):
    p, log = exchanges
    dims, sizes = _dims_and_sizes(p, log)
    seen = set()
    for e in log:
        for direction, msg in ((REQUEST, e.request), (REPLY, e.reply)):
            if (e.phase, direction) in seen:
                continue
            seen.add((e.phase, direction))
            request = e.request if direction == REPLY else None
            for key in msg:
                typo = dict(msg)
                typo[key + "_"] = typo.pop(key)
                with pytest.raises(ContractViolation, match="is not described by the message contract|is required and missing"):
                    check_message(e.phase, direction, typo, dims, request, sizes=sizes)
            extra = {**msg, "comment": "hello"}
            with pytest.raises(ContractViolation) as err:
                check_message(e.phase, direction, extra, dims, request, sizes=sizes)
            assert str(err.value) == "comment is not described by the message contract"
    assert len(seen) == 2 * len(PHASES)


def test_the_contract_table_in_the_architecture_doc_is_current():
    text = DOC.read_text(encoding="utf-8")
    table = text.split(TABLE_BEGIN, 1)[1].split(TABLE_END, 1)[0].strip()
    assert table == contract_table().strip(), (
        "docs/architecture.md is stale: run `python -m protocols.contract docs/architecture.md`")


def test_protocols_depends_only_on_numpy_pydantic_and_yaml():
    import subprocess
    import sys

    code = ("import sys, pkgutil, importlib, protocols\n"
            "for m in pkgutil.walk_packages(protocols.__path__, 'protocols.'): importlib.import_module(m.name)\n"
            "roots = {n.split('.')[0] for n in sys.modules}\n"
            "print(sorted(roots & {'flwr', 'mlflow', 'torch', 'pandas', 'scipy', 'site_client', 'coordinator', 'harmonisation'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
