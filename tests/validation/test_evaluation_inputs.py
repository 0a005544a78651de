"""Bad inputs to the site-side evaluation functions give messages naming site, field and row."""

from __future__ import annotations

import numpy as np
import pytest

from coordinator.validation import pearson_from_sums, combine_aggregates
from site_client.evaluation import class_histograms, confusion_counts, feature_volume_sums, logistic_calibration_terms


def test_probability_out_of_range_names_site_and_row():
    with pytest.raises(ValueError, match=r"p at site 'lyon': row 2 is 1\.3; expected a probability in \[0, 1\]"):
        class_histograms([0.1, 0.2, 1.3], [0, 1, 1], 10, site="lyon")


def test_nan_probability_is_an_error_not_a_silent_nan():
    with pytest.raises(ValueError, match="row 1 is nan"):
        class_histograms([0.1, float("nan")], [0, 1], 10, site="lyon")


def test_bad_label_names_row():
    with pytest.raises(ValueError, match=r"y at site 'nantes': row 1 is 2; expected a class label 0"):
        class_histograms([0.1, 0.2], [0, 2], 10, site="nantes")


def test_length_mismatch():
    with pytest.raises(ValueError, match="must be a 1-D array with 3 rows"):
        confusion_counts([0.1, 0.2, 0.3], [0, 1], 0.5)


def test_bad_thresholds_and_edges():
    with pytest.raises(ValueError, match="strictly increasing numbers in \\(0, 1\\)"):
        confusion_counts([0.1, 0.2], [0, 1], [0.5, 0.2])
    with pytest.raises(ValueError, match="bin edges from 0 to 1"):
        class_histograms([0.1, 0.2], [0, 1], [0.0, 0.5, 0.9])


def test_nonfinite_parameters_and_features():
    with pytest.raises(ValueError, match="calibration parameters must be finite"):
        logistic_calibration_terms([0.2, 0.7], [0, 1], float("nan"), 1.0)
    with pytest.raises(ValueError, match="features at site 'x': row 1 is not finite"):
        feature_volume_sums([[1.0], [np.inf]], [1.0, 2.0], site="x")


def test_inconsistent_aggregates_name_the_site():
    a = class_histograms([0.1, 0.9], [0, 1], 10)
    b = {"n": 3}
    with pytest.raises(ValueError, match="site lille: aggregate keys"):
        combine_aggregates([a, b], ["paris", "lille"])


def test_feature_volume_correlation_matches_numpy(make_sites):
    sites = make_sites(40, [100, 150, 80])
    agg = combine_aggregates([feature_volume_sums(s.x, s.volume) for s in sites])
    x = np.concatenate([s.x for s in sites])
    v = np.concatenate([s.volume for s in sites])
    res = pearson_from_sums(agg, ["f1", "f2", "f3"])
    for j, r in enumerate(res):
        assert r.r == pytest.approx(np.corrcoef(x[:, j], v)[0, 1], abs=1e-10)
        assert r.ci_low < r.r < r.ci_high
    assert res[0].r > 0.5  # the generator ties volume to feature 1
    with pytest.raises(ValueError, match="feature 'c' is constant"):
        pearson_from_sums(combine_aggregates([feature_volume_sums(np.ones((5, 1)), np.arange(5.0))]), ["c"])
