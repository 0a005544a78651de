"""The site enforces: bad data and bad requests are refused with generic messages; releases never depend on n."""

from __future__ import annotations

import numpy as np
import pytest

from coordinator.validation.survival_baseline import candidate_grid
from fedmath.survival import Baseline, CoxModel
from site_client.evaluation.survival_cox import SiteSurvivalError, SurvivalData, breslow_cumulative_hazard, cox_terms
from site_client.evaluation.survival_grid import releasable_grid
from site_client.evaluation.survival_validation import heldout_survival_metrics

from .conftest import stratified_cohort


@pytest.mark.parametrize(
    ("features", "time", "event", "message"),
    [
        ([[1.0], [np.nan]], [1.0, 2.0], [1, 0], "a feature value is missing or not finite"),
        ([[1.0], [2.0]], [1.0, -2.0], [1, 0], "a follow-up time is missing, negative or not finite"),
        ([[1.0], [2.0]], [1.0, np.nan], [1, 0], "a follow-up time is missing, negative or not finite"),
        ([[1.0], [2.0]], [1.0, 2.0], [1, 2], "an event indicator is not 0 or 1"),
        ([[1.0], [2.0]], [1.0, 2.0, 3.0], [1, 0], "features, time and event must describe the same non-empty set of patients"),
    ],
)
def test_bad_site_data_is_refused_without_patient_values(features, time, event, message) -> None:
    with pytest.raises(SiteSurvivalError) as caught:
        SurvivalData.checked(features, time, event)
    assert str(caught.value) == message


def test_bad_coordinator_requests_are_refused() -> None:
    data = SurvivalData.checked([[1.0, 0.0], [2.0, 1.0], [0.5, 0.3]], [1.0, 2.0, 3.0], [1, 1, 0])
    for beta in ([0.0], [0.0, np.inf], [[0.0, 0.0]]):
        with pytest.raises(SiteSurvivalError, match=r"^the coefficients must be 2 finite numbers \(one per model feature\)$"):
            cox_terms(data, beta)
    with pytest.raises(SiteSurvivalError, match="unknown ties method 'exact'; expected efron or breslow"):
        cox_terms(data, [0.0, 0.0], ties="exact")
    with pytest.raises(SiteSurvivalError, match="grid times must be finite and increasing"):
        breslow_cumulative_hazard(data, [0.0, 0.0], [0.0, 0.0], [2.0, 1.0])
    for candidates in ([0.0, 1.0], [2.0, 1.0], [np.nan], []):
        with pytest.raises(SiteSurvivalError, match="candidate grid times must be positive, finite and increasing"):
            releasable_grid(data.time, data.event, candidates, 5)


def _leaves(value, path=""):
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _leaves(item, f"{path}.{key}")
    elif isinstance(value, (list, tuple, np.ndarray)):
        yield path, len(value)
    else:
        yield path, 1


def test_heldout_release_has_sizes_independent_of_n_and_no_small_groups() -> None:
    horizons = [6.0, 12.0]
    candidates = candidate_grid(horizons)
    model = CoxModel(("x0", "x1"), np.array([0.7, -0.5]), np.zeros(2),
                     Baseline(np.concatenate([[0.0], candidates]), 0.04 * np.concatenate([[0.0], candidates])))
    volume = CoxModel(("x0",), np.array([0.6]), np.zeros(1), model.baseline)
    shapes = []
    for n in (150, 450):
        frame = stratified_cohort(seed=n, sizes=(n,), rounding=0.5)
        data = SurvivalData.checked(frame[["x0", "x1"]], frame.time, frame.event)
        result = heldout_survival_metrics(data, model, volume, frame[["x0"]].to_numpy(), horizons,
                                          [0.2, 0.4], candidates, k=5, calibration_groups_wanted=4)
        sizes = dict(_leaves(result))
        assert max(sizes.values()) <= candidates.size + 1
        for horizon in horizons:
            calibration = result["horizons"][horizon]["calibration"]
            assert min(calibration["n"]) >= 5
        shapes.append(set(sizes))
    assert shapes[0] == shapes[1]


def test_a_measure_that_cannot_be_estimated_is_withheld_not_guessed() -> None:
    """A linear predictor that orders the events perfectly: the calibration slope has no finite maximum."""
    frame = stratified_cohort(seed=4, sizes=(60,), rounding=0.5)
    horizons = [6.0]
    candidates = candidate_grid(horizons)
    baseline = Baseline(np.concatenate([[0.0], candidates]), 0.05 * np.concatenate([[0.0], candidates]))
    perfect = CoxModel(("t",), np.array([-1.0]), np.zeros(1), baseline)
    data = SurvivalData.checked(frame[["time"]], frame.time, frame.event)
    result = heldout_survival_metrics(data, perfect, perfect, frame[["time"]].to_numpy(), horizons, [0.3], candidates, k=5)
    assert result["calibration_slope"] == {"withheld": "not_estimable"}
    assert result["harrell"]["c"] > 0.99  # below 1 only through ties (an event and a censoring at one time)
    with pytest.raises(SiteSurvivalError, match="fewer than k events or patients at this site: no survival measure"):
        heldout_survival_metrics(data, perfect, perfect, frame[["time"]].to_numpy(), horizons, [0.3], candidates, k=500)
