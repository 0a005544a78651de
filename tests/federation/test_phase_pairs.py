"""Coordinator phases as configure/aggregate pairs, tested without any transport."""

from __future__ import annotations

import numpy as np

from coordinator.study.design import StudyDesign
from coordinator.study.train import TrainingResult, aggregate_train, configure_train, initial_weights
from federation.nsclc import protocol

SITES = ["A", "B", "C"]


def test_configure_train_sends_each_site_only_models_it_trains_and_aggregate_is_the_case_weighted_mean():
    p, _ = protocol(harmonisation={"combat": False})
    design = StudyDesign.build(p, SITES)
    state = TrainingResult(weights=initial_weights(p, design, 3))
    for model in state.weights:
        state.history[model], state.trained_by[model] = [], {}
    requests = configure_train(p, design, state, 2, SITES, first_extras=None)
    assert sorted(requests) == SITES
    for site, req in requests.items():
        assert all(not m.startswith(f"{site}/") for m in req["models"])
        assert set(req["models"]) == {m for m in design.all_models() if m.split("/")[0] in ("_all", *set(SITES) - {site})}
    model = "_all/raw/radiomic"
    rng = np.random.default_rng(0)
    sent = {s: ([rng.normal(size=(1, 3)), rng.normal(size=(1,))], n, loss)
            for s, n, loss in (("A", 10, 0.5), ("B", 30, 0.7), ("C", 60, 0.6))}
    replies = {s: {f"w/{model}/0": w[0], f"w/{model}/1": w[1], f"n/{model}": n, f"loss/{model}": loss}
               for s, (w, n, loss) in sent.items()}
    aggregate_train(design, state, 2, replies)
    expected_w = (10 * sent["A"][0][0] + 30 * sent["B"][0][0] + 60 * sent["C"][0][0]) / 100
    np.testing.assert_allclose(state.weights[model][0], expected_w, rtol=0, atol=1e-15)
    assert state.history[model] == [(10 * 0.5 + 30 * 0.7 + 60 * 0.6) / 100]
    assert state.trained_by[model][2] == SITES
