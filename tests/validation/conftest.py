"""Fixtures for the external-validation tests.

* ``real_study``: a study produced by the product's own path, :func:`coordinator.study.run_study` over the
  in-process transport (every site runs ``site_client.study.handle`` on its own table and work folder), and
  ``logged_real_study`` the same outcome logged to the real ``mlflow server`` (tests/conftest.py). The
  registered-model and tracking tests use these.
* ``generated_study``: the metric layer's generated multi-site data (site and coordinator pure functions),
  for the metric tests.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest


@dataclass
class GenSite:
    name: str
    p: np.ndarray  # model's predicted probability of the positive class
    y: np.ndarray  # reference standard 0/1
    volume: np.ndarray
    x: np.ndarray  # model features (n × d)


def generate_sites(
    seed: int, sizes: list[int], shift: float = 0.3, miscal: tuple[float, float] = (-0.2, 0.8), strength: float = 1.0
) -> list[GenSite]:
    """Sites with a site-specific intercept shift; the model's logit is a miscalibrated version of the truth."""
    rng = np.random.default_rng(seed)
    sites = []
    for i, n in enumerate(sizes):
        x = rng.normal(size=(n, 3))
        volume = np.exp(rng.normal(8 + 0.5 * x[:, 0], 0.4))
        true_logit = -0.3 + shift * rng.normal() + strength * (1.2 * x[:, 0] + 0.6 * x[:, 1])
        y = (rng.uniform(size=n) < 1 / (1 + np.exp(-true_logit))).astype(int)
        model_logit = (true_logit - miscal[0]) / miscal[1] + rng.normal(0, 0.3, n)
        p = 1 / (1 + np.exp(-model_logit))
        sites.append(GenSite(f"site{i + 1}", p, y, volume, x))
    return sites


@pytest.fixture
def make_sites():
    return generate_sites


# ---------------------------------------------------------------- a complete study from generated data

ALPHA, K_MIN, THRESHOLD, GRID = 0.2, 5, 0.5, [0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
MLP_STATE = {  # a torch nn.Sequential(Linear(3, 4), ReLU(), Linear(4, 1)) state dict as numpy
    "net.0.weight": np.array([[0.8, 0.1, -0.2], [0.3, 0.5, 0.0], [-0.4, 0.2, 0.7], [0.1, -0.3, 0.2]]),
    "net.0.bias": np.array([0.1, -0.1, 0.0, 0.2]),
    "net.2.weight": np.array([[1.1, 0.7, -0.5, 0.3]]),
    "net.2.bias": np.array([-0.2]),
}


def build_study(seed: int = 7):
    """LOCO over 4 generated sites, every number through the site and coordinator pure functions."""
    from coordinator.validation import (
        auc_difference_from_site, combine_aggregates, conformal_stats, fit_logistic_calibration, fit_platt, pearson_from_sums,
        pooled_metrics, site_metrics, thresholds_from_site_histograms,
    )
    from coordinator.validation.results import (
        FinalModel, FoldResult, HarmonisationDiagnostics, ModelWeights, SiteInfo, StudyResult,
        layers_from_state_dict,
    )
    from coordinator.validation.study import add_meta_analyses
    from site_client import evaluation as ev

    sites = generate_sites(seed, [300, 420, 480, 360], strength=2.5)
    for s in sites:
        s.baseline = 1 / (1 + np.exp(-1.2 * (np.log(s.volume) - 8.0)))

    def heldout_aggs(p, y, name):
        grid = np.union1d(GRID, [THRESHOLD])
        raw = {
            "histograms": ev.class_histograms(p, y, 50, site=name),
            "confusion": ev.confusion_counts(p, y, grid, site=name),
            "calibration": ev.calibration_sums(p, y, site=name),
            "reliability": ev.reliability_bins(p, y, 10, site=name),
        }
        return {k: ev.suppress_small_cells(v, K_MIN, keep_thresholds=[THRESHOLD]) for k, v in raw.items()}

    def metrics(p, y, name):
        fit = fit_logistic_calibration(lambda a, b: [ev.logistic_calibration_terms(p, y, a, b, site=name)])
        return site_metrics(name, heldout_aggs(p, y, name), THRESHOLD, fit), heldout_aggs(p, y, name)

    folds, per_site, per_site_base, rng = [], [], [], np.random.default_rng(seed)
    for h in sites:
        train = [s for s in sites if s is not h]
        cal = [(s, slice(0, len(s.p) // 2)) for s in train]
        rec = fit_platt(lambda a, b: [ev.logistic_calibration_terms(s.p[c], s.y[c], a, b) for s, c in cal])
        neg, pos = ([ev.suppress_small_cells(ev.conformal_histogram(rec.apply(s.p[c]), s.y[c], 100, lab), K_MIN)
                     for s, c in cal] for lab in (0, 1))
        q_neg, q_pos, _ = thresholds_from_site_histograms(neg, pos, ALPHA)
        before, aggs = metrics(h.p, h.y, h.name)
        after, _ = metrics(rec.apply(h.p), h.y, h.name)
        base, base_aggs = metrics(h.baseline, h.y, h.name)
        pr = rec.apply(h.p)
        conf = conformal_stats(ALPHA, q_neg, q_pos, *ev.released_set_statistics(pr, h.y, q_neg, q_pos, K_MIN, h.name))
        rounds = 5
        hist = {"train_loss": list(0.7 * np.exp(-0.2 * np.arange(rounds)) + rng.uniform(0, 0.01, rounds)),
                "train_auc": list(0.6 + 0.04 * np.arange(rounds))}
        paired = auc_difference_from_site(ev.suppress_small_cells(ev.paired_auc_difference(h.p, h.baseline, h.y, h.name), K_MIN))
        folds.append(FoldResult(h.name, [s.name for s in train], before, after, rec, conf, base, paired, hist))
        per_site.append(aggs)
        per_site_base.append(base_aggs)
    names = [s.name for s in sites]
    pooled = pooled_metrics(per_site, names, THRESHOLD)
    pooled_base = pooled_metrics(per_site_base, names, THRESHOLD)
    corr = pearson_from_sums(combine_aggregates([ev.feature_volume_sums(s.x, s.volume) for s in sites]), ["f1", "f2", "f3"])
    harm = []
    for i, s in enumerate(sites):
        xb = s.x + np.array([0.5 * i, -0.3 * i, 0.2])
        xa = (xb - xb.mean(0)) / xb.std(0) * s.x.std(0)
        harm.append(HarmonisationDiagnostics(s.name, ["f1", "f2", "f3"], xb.mean(0).tolist(), xa.mean(0).tolist(),
                                             xb.std(0).tolist(), xa.std(0).tolist()))
    allp = [s for s in sites]
    rec_all = fit_platt(lambda a, b: [ev.logistic_calibration_terms(s.p, s.y, a, b) for s in allp])
    final = FinalModel(ModelWeights(["f1", "f2", "f3"], layers_from_state_dict(MLP_STATE), "relu",
                                    np.array([0.0, 0.1, -0.1]), np.array([1.0, 2.0, 0.5]), "MLP 3-4-1"),
                       rec_all, 0.62, 0.58, {"train_loss": [0.69, 0.6, 0.55, 0.52], "train_auc": [0.6, 0.7, 0.74, 0.76]})
    protocol = {"study": {"name": "generated", "version": "1"},
                "validation": {"conformal_alpha": ALPHA, "decision_threshold": THRESHOLD, "histogram_bins": 50,
                               "reliability_bins": 10, "decision_curve_thresholds": GRID, "recalibration": "platt"},
                "privacy": {"min_cell_count": K_MIN}}
    study = StudyResult("generated", protocol, "a1b2c3d4e5f6a7b8c9d0", [SiteInfo(s.name, len(s.p), int(s.y.sum())) for s in sites],
                        folds, ALPHA, K_MIN, pooled, pooled_base, feature_volume=corr, harmonisation=harm, final_model=final)
    return add_meta_analyses(study), sites


@pytest.fixture(scope="session")
def mlp_state():
    """The final model's weights in torch state-dict layout (tests must not import conftest by name)."""
    return MLP_STATE


@pytest.fixture(scope="session")
def generated_study():
    return build_study()


@pytest.fixture(scope="session")
def logged_study(mlflow_server, generated_study):
    from coordinator.tracking import log_study

    study, _ = generated_study
    return log_study(study, mlflow_server, experiment="validation-tests", registered_model="fedradval-test-model",
                     alias="champion", promote=True)


# ---------------------------------------------------------------- a study run by the product's own path

@dataclass
class RealStudy:
    protocol: object
    protocol_id: str
    contexts: dict
    outcome: object


@pytest.fixture(scope="session")
def real_study(tmp_path_factory):
    """run_study over the in-process transport: four synthetic sites, federated ComBat on, MLP, temperature."""
    from coordinator.study import run_study
    from federation.conftest import make_contexts
    from federation.inprocess import InProcessTransport
    from federation.synthetic import synthetic_protocol, synthetic_sites

    protocol, pid = synthetic_protocol()
    contexts = make_contexts(tmp_path_factory.mktemp("real-study"), protocol, pid, synthetic_sites())
    outcome = run_study(protocol, pid, InProcessTransport(contexts), progress=lambda s: None)
    assert not outcome.dropped, outcome.dropped
    return RealStudy(protocol, pid, contexts, outcome)


@pytest.fixture(scope="session")
def logged_real_study(mlflow_server, real_study):
    """The real study's outcome logged by ``coordinator.tracking.log_outcome`` (registry alias not moved)."""
    from coordinator.tracking import log_outcome

    return log_outcome(real_study.outcome, mlflow_server)
