"""The study's paired ΔAUC path against a published worked example of DeLong's test for correlated ROC curves.

Oracle: pROC (Robin et al. 2011, BMC Bioinformatics 12:77) pins ``roc.test`` (DeLong, DeLong & Clarke-Pearson
1988) on its aSAH data in its own test suite, github.com/xrobin/pROC commit ee2877e8,
``tests/testthat/test-roc.test.R`` ("roc.test statistic and p are as expected with defaults"):

* t1 = roc.test(r.wfns, r.s100b): Z = 2.20898359144091, p = 0.0271757822291882, CI 0.0104061769564846 to
  0.174214419249478;
* t2 = roc.test(r.wfns, r.ndka):  Z = 2.79777591868904, p = 0.00514557970691098, CI 0.0634011709339876 to
  0.3600405634833566;
* t3 = roc.test(r.ndka, r.s100b): Z = -1.39077002573558, p = 0.164295175223054, CI -0.2876917446341914 to
  0.0488706064228094;

with r.x = roc(aSAH$outcome, aSAH$x) (controls "Good", cases "Poor", higher marker = poorer outcome). The AUCs
are those printed in pROC's documentation: wfns 0.8237, s100b 0.7314, ndka 0.6120.

The path is the study's: the held-out site's ``_paired`` (``paired_auc_difference`` + small-cell control, what
``handle_calibrate`` releases) and the coordinator's ``complete_fold`` reading it. The markers are mapped to
[0, 1] by a strictly increasing transform (the site checks probabilities); AUCs and DeLong depend on ranks only.
"""

from __future__ import annotations

import csv

import numpy as np
import pytest

from coordinator.validation.results import AUCEstimate, FoldResult, SiteMetrics
from coordinator.validation.study import complete_fold
from site_client.study.evaluate import _paired

PUBLISHED = [  # (model, baseline, Z, p, CI low, CI high) from pROC's test-roc.test.R
    ("wfns", "s100b", 2.20898359144091, 0.0271757822291882, 0.0104061769564846, 0.174214419249478),
    ("wfns", "ndka", 2.79777591868904, 0.00514557970691098, 0.0634011709339876, 0.3600405634833566),
    ("ndka", "s100b", -1.39077002573558, 0.164295175223054, -0.2876917446341914, 0.0488706064228094),
]
PUBLISHED_AUC = {"wfns": 0.8237, "s100b": 0.7314, "ndka": 0.6120}


@pytest.fixture(scope="module")
def asah(reference_data):
    with open(reference_data / "proc_asah" / "aSAH.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 113
    y = np.array([r["outcome"] == "Poor" for r in rows], dtype=np.int64)
    markers = {name: np.array([float(r[name]) for r in rows]) for name in ("wfns", "s100b", "ndka")}
    return y, {name: x / (1.0 + x) for name, x in markers.items()}  # x ≥ 0 here: strictly increasing into [0, 1)


def _fold(paired: dict) -> FoldResult:
    est = lambda auc: AUCEstimate(auc, 0.05, auc - 0.1, auc + 0.1, 0.0, 41, 72)  # noqa: E731 (unused by paired)
    fold = FoldResult(heldout_site="asah", training_sites=["a", "b"],
                      before=SiteMetrics(site="asah", n=113, n_events=41, threshold=0.5, auc=est(paired["auc_model"])),
                      baseline=SiteMetrics(site="asah", n=113, n_events=41, threshold=0.5, auc=est(paired["auc_baseline"])))
    return complete_fold(fold, paired)


@pytest.mark.parametrize("model,baseline,z,p,lo,hi", PUBLISHED)
def test_paired_delong_equals_proc_roc_test(asah, model, baseline, z, p, lo, hi) -> None:
    y, scores = asah
    released = _paired(scores[model], scores[baseline], y, k=5)
    assert released["suppressed"] == 0 and released["n_events"] == 41 and released["n_nonevents"] == 72
    assert released["auc_model"] == pytest.approx(PUBLISHED_AUC[model], abs=5e-5)
    assert released["auc_baseline"] == pytest.approx(PUBLISHED_AUC[baseline], abs=5e-5)
    d = _fold(released).auc_difference
    assert d.method == "paired DeLong computed at the site"
    assert d.difference / d.se == pytest.approx(z, rel=1e-9)
    assert d.p_value == pytest.approx(p, rel=1e-9)
    assert (d.ci_low, d.ci_high) == (pytest.approx(lo, rel=1e-7), pytest.approx(hi, rel=1e-7))


def test_the_unpaired_se_would_not_reproduce_the_published_test(asah) -> None:
    """The oracle discriminates: ignoring the covariance (the old study path) gives another Z."""
    from fedmath.auc import delong_auc

    y, scores = asah
    (a, sa), (b, sb) = delong_auc(scores["wfns"], y), delong_auc(scores["s100b"], y)
    z_unpaired = (a - b) / np.hypot(sa, sb)
    assert abs(z_unpaired - PUBLISHED[0][2]) > 0.1
