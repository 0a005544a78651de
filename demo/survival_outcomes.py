"""Survival outcomes for the synthetic demo cohort, driven by the same latent lesion biology as the images.

Standalone (numpy only) so that the demo generator, wherever it lives, attaches outcomes with one call per case:

    row.update(survival_columns(seed, site_index, case_index, lesion.malignant, lesion.texture_sd, lesion.radius_mm))

Model (months): a Weibull proportional-hazards time to death with shape 1.3 and hazard ratio
``exp(1.1 * malignant + 0.6 * z_texture + 0.4 * z_size)``, where z_texture = (ln texture_sd - ln 8.5) / 0.6 and
z_size = (ln radius_mm - ln 9) / 0.3 standardise the generator's own log-normal lesion draws; the median survival
of a benign, average lesion is 60 months. Censoring: administrative end of study uniform on 24-60 months after
the scan (staggered accrual) and loss to follow-up at 2 % per month; the earlier of death and censoring is
observed. Every case has its own seeded stream (seed, site, case), so outcomes do not depend on generation order.
"""

from __future__ import annotations

import numpy as np

SHAPE = 1.3
BENIGN_MEDIAN_MONTHS = 60.0
LOG_HAZARD_RATIOS = {"malignant": 1.1, "texture": 0.6, "size": 0.4}
TIME_COLUMN, EVENT_COLUMN = "os_months", "death"
_OUTCOME_NAMESPACE = 0x5355_5256  # "SURV": keeps these streams apart from the image streams


def linear_predictor(malignant: bool, texture_sd: float, radius_mm: float) -> float:
    """The true log hazard ratio of one lesion (what a perfect prognostic signature would estimate)."""
    z_texture = (np.log(texture_sd) - np.log(8.5)) / 0.6
    z_size = (np.log(radius_mm) - np.log(9.0)) / 0.3
    ratios = LOG_HAZARD_RATIOS
    return float(ratios["malignant"] * bool(malignant) + ratios["texture"] * z_texture + ratios["size"] * z_size)


def survival_outcome(seed: int, site_index: int, case_index: int, malignant: bool, texture_sd: float,
                     radius_mm: float) -> tuple[float, int]:
    """(observed months, 1 = death observed / 0 = censored), rounded to 0.1 month (ties happen, as in real data)."""
    if texture_sd <= 0 or radius_mm <= 0:
        raise ValueError(f"texture_sd and radius_mm must be positive, got {texture_sd} and {radius_mm}")
    rng = np.random.default_rng([_OUTCOME_NAMESPACE, seed, site_index, case_index])
    scale = BENIGN_MEDIAN_MONTHS / np.log(2) ** (1 / SHAPE)
    # S(t) = exp(-(t/scale)^shape * exp(eta))  =>  t = scale * (E / exp(eta))^(1/shape), E ~ Exp(1)
    death = scale * (rng.exponential() / np.exp(linear_predictor(malignant, texture_sd, radius_mm))) ** (1 / SHAPE)
    censor = min(rng.uniform(24.0, 60.0), rng.exponential(1 / 0.02))
    observed = max(round(min(death, censor), 1), 0.1)
    return observed, int(death <= censor)


def survival_columns(seed: int, site_index: int, case_index: int, malignant: bool, texture_sd: float,
                     radius_mm: float) -> dict[str, str]:
    """The manifest cells the survival example protocol (protocols/examples/survival_study.yaml) reads."""
    months, death = survival_outcome(seed, site_index, case_index, malignant, texture_sd, radius_mm)
    return {TIME_COLUMN: f"{months:.1f}", EVENT_COLUMN: str(death)}
