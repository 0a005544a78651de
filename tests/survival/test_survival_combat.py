"""ComBat before Cox: a survival study with scanner batches and covariates (the seeded four-site cohort of the
federation tests, with follow-up times attached). Each Cox fit of the harmonised variant equals lifelines'
stratified fit on exactly the harmonised, standardised features the sites used (read from their work folders)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from lifelines import CoxPHFitter

from coordinator.study import run_study
from federation.conftest import make_contexts
from federation.inprocess import InProcessTransport
from federation.synthetic import synthetic_protocol, synthetic_sites
from protocols import parse_protocol, protocol_id
from protocols.models import ALL_SITES
from site_client.study.harmonise import MATRICES
from site_client.study.store import SiteStore

FEATURES = [f"f{i}" for i in range(5)]


def survival_tables(seed: int = 11) -> dict[str, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    out = {}
    for name, table in synthetic_sites().items():
        hazard = 0.08 * np.exp(0.6 * table["f0"] - 0.4 * table["f1"])
        event_time, censor = rng.exponential(1 / hazard), rng.uniform(6, 30, len(table))
        out[name] = table.drop(columns="y").assign(t=np.round(np.minimum(event_time, censor), 1),
                                                   e=(event_time <= censor).astype(int))
    return out


@pytest.fixture(scope="module", params=["covariates", "batches-only"])
def study(tmp_path_factory, request):
    """With covariates ComBat takes its two rounds; with batches only its fits ride on the first Cox message."""
    data = synthetic_protocol(model={"features": FEATURES})[0].model_dump(mode="json")
    data["label"] = {"type": "survival", "time_column": "t", "event_column": "e", "time_unit": "months",
                     "horizons": [6, 12], "min_events_per_site": 10}
    if request.param == "batches-only":
        data["covariates"] = {"categorical": [], "continuous": []}
    protocol = parse_protocol(data)
    pid = protocol_id(protocol)
    tables = survival_tables()
    transport = InProcessTransport(make_contexts(tmp_path_factory.mktemp("combat"), protocol, pid, tables))
    return tables, transport, run_study(protocol, pid, transport, progress=lambda text: None)


def test_harmonised_and_raw_cox_models_are_fitted_and_validated(study) -> None:
    tables, _, outcome = study
    covariates = bool(outcome.protocol["covariates"]["categorical"] or outcome.protocol["covariates"]["continuous"])
    assert set(outcome.results) == {"harmonised", "raw"}
    assert outcome.rounds_by_phase.get("combat-round1", 0) == (1 if covariates else 0)
    for result in outcome.results.values():
        assert sorted(result.heldout) == sorted(tables)
        assert result.pooled["harrell_c"].k == len(tables)


def test_harmonised_fit_equals_lifelines_on_the_sites_harmonised_features(study) -> None:
    tables, transport, outcome = study
    frames = []
    for name, context in transport.contexts.items():
        arrays = SiteStore(context.work_dir, context.protocol_id).read_arrays(MATRICES)
        key = f"{ALL_SITES}|harmonised"
        x = (arrays[key] - arrays[f"{key}|mean"]) / arrays[f"{key}|sd"]
        table = tables[name].sort_values("case_id").reset_index(drop=True)
        frame = pd.DataFrame(x[:, :len(FEATURES)], columns=FEATURES)  # matrix columns: model features, then vol
        frames.append(frame.assign(t=table["t"], e=table["e"], site=name))
    pooled = pd.concat(frames, ignore_index=True)
    oracle = CoxPHFitter().fit(pooled, "t", "e", strata=["site"], fit_options={"precision": 1e-12})
    fitted = outcome.results["harmonised"].fits[f"{ALL_SITES}/harmonised/radiomic"]["beta"]
    np.testing.assert_allclose(fitted, oracle.params_[FEATURES].to_numpy(), atol=1e-6)
