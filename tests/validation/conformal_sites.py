"""Generated calibration sites for the federated conformal thresholds, shared by the DP conformal tests
(tests/validation/test_dp_conformal.py) and the privacy/accuracy bench (bench/conformal_tradeoff.py), so the
targets the tests check are met on the very data the bench reports."""

from __future__ import annotations

import numpy as np


def shifted_sites(rng: np.random.Generator, n_cal: int, n_test: int
                  ) -> tuple[list[tuple[np.ndarray, np.ndarray]], tuple[np.ndarray, np.ndarray]]:
    """3 calibration sites of ``n_cal`` cases and 1 held-out site of ``n_test``, each (p, y): a logistic truth
    -0.3 + 1.2·x₁ + 0.6·x₂ with a site intercept shift ~ N(0, 0.3²), and a miscalibrated model
    p = expit((truth + 0.2) / 0.8 + N(0, 0.3²)). Returns (calibration sites, held-out site)."""
    out = []
    for i in range(4):
        n = n_cal if i < 3 else n_test
        x = rng.normal(size=(n, 2))
        true = -0.3 + 0.3 * rng.normal() + 1.2 * x[:, 0] + 0.6 * x[:, 1]
        y = (rng.uniform(size=n) < 1 / (1 + np.exp(-true))).astype(int)
        p = 1 / (1 + np.exp(-((true + 0.2) / 0.8 + rng.normal(0, 0.3, n))))
        out.append((p, y))
    return out[:3], out[3]
