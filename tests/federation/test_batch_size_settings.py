"""harmonisation.min_batch_size and warn_batch_size reach the ComBat plans (they used to change only the
protocol id)."""

from __future__ import annotations

import pytest

from coordinator.study import StudyFailed, run_study
from federation.conftest import make_contexts
from federation.inprocess import InProcessTransport
from federation.synthetic import synthetic_protocol, synthetic_sites


def _run(tmp_path, **harmonisation):
    p, pid = synthetic_protocol(model={"rounds": 1}, harmonisation=harmonisation)
    return run_study(p, pid, InProcessTransport(make_contexts(tmp_path, p, pid, synthetic_sites())),
                     progress=lambda s: None)


def test_a_batch_below_min_batch_size_fails_the_plan_naming_the_setting(tmp_path):
    # the first fold whose training sites include the small batch (H1 held out) names itself
    with pytest.raises(StudyFailed, match=r"harmonisation failed: ComBat fold H1 \(held out: H1\): "
                                          r"batch 'S1a' has \d+ sample\(s\) \(site\(s\) 'H2' "
                                          r"\(\d+\)\); ComBat needs at least 100 per batch "
                                          r"\(harmonisation.min_batch_size; recommended >= 200\)"):
        _run(tmp_path, min_batch_size=100, warn_batch_size=200)


def test_warn_batch_size_sets_the_small_batch_warning(tmp_path):
    default = _run(tmp_path / "a")   # every batch here holds 25-45 cases: above the default 20
    assert not any("unstable below about" in n for n in default.notes)
    strict = _run(tmp_path / "b", warn_batch_size=60)
    assert any("unstable below about 60 per batch (harmonisation.warn_batch_size)" in n for n in strict.notes)
