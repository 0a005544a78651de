"""Demo survival outcomes: deterministic per case, and a Cox fit (lifelines) recovers the stated hazard ratios."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from lifelines import CoxPHFitter, WeibullFitter

from demo.survival_outcomes import LOG_HAZARD_RATIOS, SHAPE, survival_columns, survival_outcome


def _lesions(n: int, rng: np.random.Generator) -> pd.DataFrame:
    """Lesion draws with the demo generator's class-conditional log-normal texture and size distributions."""
    malignant = rng.random(n) < 0.4
    texture = np.exp(rng.normal(np.where(malignant, np.log(12.5), np.log(6.0)), 0.45))
    radius = np.exp(rng.normal(np.where(malignant, np.log(9.5), np.log(8.5)), 0.30))
    return pd.DataFrame({"malignant": malignant, "texture_sd": texture, "radius_mm": radius})


def test_outcomes_are_deterministic_per_case_and_formatted_for_the_manifest() -> None:
    first = survival_columns(7, 2, 15, True, 10.0, 9.0)
    assert first == survival_columns(7, 2, 15, True, 10.0, 9.0)
    assert first != survival_columns(7, 2, 16, True, 10.0, 9.0)
    assert set(first) == {"os_months", "death"} and first["death"] in ("0", "1") and float(first["os_months"]) > 0
    with pytest.raises(ValueError, match="texture_sd and radius_mm must be positive, got 0.0 and 9.0"):
        survival_outcome(7, 2, 15, True, 0.0, 9.0)


def test_cox_fit_recovers_the_generating_hazard_ratios() -> None:
    lesions = _lesions(4000, np.random.default_rng(3))
    outcomes = [survival_outcome(11, 0, i, *row) for i, row in enumerate(lesions.itertuples(index=False))]
    frame = pd.DataFrame({
        "malignant": lesions.malignant.astype(float),
        "z_texture": (np.log(lesions.texture_sd) - np.log(8.5)) / 0.6,
        "z_size": (np.log(lesions.radius_mm) - np.log(9.0)) / 0.3,
        "time": [t for t, _ in outcomes],
        "event": [e for _, e in outcomes],
    })
    assert 0.35 < frame.event.mean() < 0.75
    fitted = CoxPHFitter().fit(frame, "time", "event")
    for name, column in (("malignant", "malignant"), ("texture", "z_texture"), ("size", "z_size")):
        estimate, se = fitted.params_[column], fitted.standard_errors_[column]
        assert abs(estimate - LOG_HAZARD_RATIOS[name]) < 4 * se, (name, estimate, se)


def test_baseline_times_are_weibull_with_the_stated_shape() -> None:
    """Benign lesions at the reference texture and size: uncensored-model Weibull shape fitted by lifelines."""
    outcomes = [survival_outcome(5, 1, i, False, 8.5, 9.0) for i in range(3000)]
    times, events = zip(*outcomes)
    fitted = WeibullFitter().fit(np.array(times), np.array(events))
    assert abs(fitted.rho_ - SHAPE) < 4 * fitted.summary.loc["rho_", "se(coef)"]
