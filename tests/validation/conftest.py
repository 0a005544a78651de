"""Fixtures for the external-validation tests.

* ``real_study``: a study produced by the product's own path, :func:`coordinator.study.run_study` over the
  in-process transport (every site runs ``site_client.study.handle`` on its own table and work folder), and
  ``logged_real_study`` the same outcome logged to the real ``mlflow server`` (tests/conftest.py) by
  ``coordinator.tracking.log_outcome``. The registered-model, tracking and report tests use these, and
  ``study_result``: the preferred variant's ``StudyResult`` of that study with, per held-out site, the model's
  probabilities and the labels of its cases as the site itself computed them (for independent references).
  There is no second pipeline: every number a test reads comes from the study the product ran.
* ``make_sites``: generated multi-site scores and labels, inputs for the metric tests of the site and
  coordinator pure functions (compared with statsmodels, sklearn, scipy).
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


@dataclass
class HeldOutCases:
    """A held-out site's cases as the study scored them: its fold model's probability (before recalibration) and
    the labels, read at the site from its own stored state."""

    name: str
    p: np.ndarray
    y: np.ndarray


def heldout_cases(study: RealStudy, variant: str) -> dict[str, HeldOutCases]:
    """Per held-out site, the probabilities its fold's radiomic model gave its cases, by the site's own functions
    (``site_client.study.evaluate``) on the weights and matrices the study left in its work folder."""
    from protocols.models import model_key
    from site_client.study.cohort import load_cohort
    from site_client.study.evaluate import _probabilities, _stored_weights
    from site_client.study.harmonise import MATRICES
    from site_client.study.store import SiteStore

    out = {}
    for fold in study.outcome.results[variant].folds:
        site = fold.heldout_site
        context = study.contexts[site]
        store = SiteStore(context.work_dir, study.protocol_id)
        cohort = load_cohort(context, store)
        model = model_key(site, variant, "radiomic")
        p = _probabilities(context, store, cohort, model, _stored_weights(context, store), store.read_arrays(MATRICES))
        out[site] = HeldOutCases(site, p, np.asarray(cohort.y))
    return out


@pytest.fixture(scope="session")
def study_result(real_study):
    """(StudyResult of the preferred variant, held-out site → HeldOutCases) of the real study."""
    variant = real_study.outcome.preferred_variant
    return real_study.outcome.results[variant], heldout_cases(real_study, variant)
