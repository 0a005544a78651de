"""The study runner's ComBat with covariates, end to end on the in-process transport, against neuroCombat 0.2.12:
one message round (XᵀX, XᵀY), σ̂² computed by the coordinator from those sums and the handshake's moments, the
fits and σ̂² delivered with the first training message, the sites' adjusted data and each fold's frozen estimates
as neuroCombat fits them on that fold's training sites (batch = scanner column, sex categorical, age continuous).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ (federation helpers)

from combat_testkit import neurocombat_output  # noqa: E402
from coordinator.study import run_study  # noqa: E402
from federation.conftest import make_contexts  # noqa: E402
from federation.inprocess import InProcessTransport  # noqa: E402
from federation.synthetic import synthetic_protocol, synthetic_sites  # noqa: E402
from protocols.models import ALL_SITES  # noqa: E402
from site_client.study.store import SiteStore  # noqa: E402

FEATURES = [f"f{i}" for i in range(5)] + ["vol"]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    p, pid = synthetic_protocol(model={"rounds": 1})
    tables = synthetic_sites()
    for name, table in tables.items():  # ages neuroCombat's float32 cast leaves unchanged: no rounding difference
        table["age"] = table["age"].astype(np.float32).astype(np.float64)
        table[FEATURES] = table[FEATURES] * [1.0, 1.0, 1.0, 1.0, 1.0, 1e3] + [0.0, 0.0, 0.0, 0.0, -1e3, 5e4]
    root = tmp_path_factory.mktemp("combat-one-round")
    transport = InProcessTransport(make_contexts(root, p, pid, tables))
    outcome = run_study(p, pid, transport, progress=lambda s: None)
    read = {name: pd.read_csv(root / name / "features.csv").sort_values("case_id", kind="stable") for name in tables}
    return p, pid, transport, outcome, read


def _reference(read: dict[str, pd.DataFrame], sites: list[str]) -> dict:
    pooled = pd.concat([read[s] for s in sites])
    return neurocombat_output(pooled, FEATURES, "scanner", categorical=["sex"], continuous=["age"])


def test_combat_takes_one_round_and_the_fits_come_with_the_first_training_message(study):
    p, pid, transport, outcome, _ = study
    assert outcome.rounds_by_phase["combat-round1"] == 1 and "combat-round2" not in outcome.rounds_by_phase
    # handshake 1, ComBat 1, training, calibration step 0 and its Newton rounds, evaluation 1 (was + 1 more)
    assert outcome.rounds == p.model.rounds + 4 + outcome.newton_rounds
    assert not [e for e in transport.log if e.phase == "combat-round2"]
    first = [e.request for e in transport.log if e.phase == "train" and e.request["round"] == 1]
    assert first and all(any(k.startswith("fit/") for k in r) and any(k.startswith("scale/") for k in r) for r in first)
    round1 = [e.request for e in transport.log if e.phase == "combat-round1"]
    assert not any(k.startswith("fit/") for r in round1 for k in r)


@pytest.mark.parametrize("fold", [ALL_SITES, "H1", "H4"])
def test_each_folds_frozen_estimates_equal_neurocombat_on_its_training_sites(study, fold):
    p, pid, transport, outcome, read = study
    sites = [s for s in sorted(read) if s != fold]
    estimates = _reference(read, sites)["estimates"]
    model = outcome.combat_models[fold]
    assert model.features == FEATURES
    np.testing.assert_allclose(model.var_pooled, estimates["var.pooled"].ravel(), rtol=1e-10)
    np.testing.assert_allclose(model.alpha, estimates["stand.mean"][:, 0], rtol=1e-10)


def test_the_sites_harmonised_data_equal_neurocombat(study):
    p, pid, transport, outcome, read = study
    sites = sorted(read)
    expected = _reference(read, sites)["data"].T  # samples x features, sites in order, rows by case id
    got = []
    for site in sites:
        arrays = SiteStore(transport.contexts[site].work_dir, pid).read_arrays("matrices.npz")
        got.append(arrays[f"{ALL_SITES}|harmonised"])
    got = np.vstack(got)
    scale = pd.concat([read[s] for s in sites])[FEATURES].std().to_numpy()
    assert np.max(np.abs(got - expected) / scale) <= 1e-8
