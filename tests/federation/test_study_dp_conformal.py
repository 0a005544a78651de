"""The study with ``validation.conformal_method: dp_quantile``: what leaves the sites and what the report gets.

An in-process study on the NSCLC sites (few rounds: the model's quality does not matter here). Checked: each
training site's calibrate reply carries, for the radiomic models only, the class count and noisy counts on the
protocol's grid (no k-merged conformal histogram, nothing for the volume-only models, nothing seeded by the
coordinator); every threshold is an edge of that grid; every held-out site reports coverage beside the mean set
size and the two-class rate.
"""

from __future__ import annotations

import numpy as np

from coordinator.study import run_study
from federation.conftest import make_contexts
from federation.inprocess import InProcessTransport
from federation.nsclc import protocol

BINS = 20


def test_dp_quantile_study_releases_noisy_grid_counts_and_reports_sets(tmp_path, nsclc_tables):
    p, pid = protocol(model={"rounds": 3}, validation={"conformal_method": "dp_quantile", "conformal_epsilon": 2.0,
                                                       "conformal_dp_bins": BINS, "conformal_alpha": 0.2})
    transport = InProcessTransport(make_contexts(tmp_path, p, pid, nsclc_tables))
    outcome = run_study(p, pid, transport, progress=lambda s: None)

    calibrate = [x for x in transport.log if x.phase == "calibrate" and x.request.get("step") == 0]
    assert calibrate
    for x in calibrate:
        assert not any("seed" in k or "noise" in k for k in x.request), "the coordinator sends no noise seed"
        conformal = [k for k in x.reply if k.startswith("conformal/")]
        assert not any(k.endswith("/bin_n_scores") or k.endswith("/edges") for k in conformal)
        assert not any("/volume/" in k for k in conformal), "no ε spent on models that get no prediction sets"
        for model in x.request["train_models"]:
            if model.endswith("/radiomic"):
                for cls in ("neg", "pos"):
                    prefix = f"conformal/{model}/{cls}"
                    if x.reply[f"{prefix}/suppressed"] == 0:
                        assert x.reply[f"{prefix}/bin_n_noisy"].shape == (BINS,)
                        assert x.reply[f"{prefix}/bin_n_noisy"].dtype == np.int64

    grid = np.linspace(0, 1, BINS + 1)
    for variant, result in outcome.results.items():
        assert result.folds
        for fold in result.folds:
            c = fold.conformal
            assert c is not None, (variant, fold.heldout_site)
            assert np.min(np.abs(grid - c.q_neg)) < 1e-12 and np.min(np.abs(grid - c.q_pos)) < 1e-12
            assert c.coverage is not None, (fold.heldout_site, c.note)
            assert c.mean_set_size is not None and 0 <= c.mean_set_size <= 2
            assert c.rate_both is not None and 0 <= c.rate_both <= 1

    # the table printed at the end of `coordinator run` has the sets' size and two-class rate beside coverage
    from coordinator.study_table import results_from_outcome

    for site in results_from_outcome(outcome).sites:
        for metrics in site.variants.values():
            assert metrics.conformal_coverage is not None and metrics.mean_set_size is not None, site.name
            assert metrics.rate_both is not None, site.name
