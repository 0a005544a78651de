"""Class-conditional split-conformal prediction sets on the model's raw probability p.

Conformity score of class c: s₀ = p (for the negative class), s₁ = 1 - p (for the positive class). With the
class thresholds q̂₀, q̂₁ (each the ⌈(n_c + 1)(1 - α)⌉-th smallest calibration score of that class) the set of a
case holds class c when s_c <= q̂_c. The thresholds are found, and coverage is measured, on the *raw* p, so the
registered model builds its sets on the raw p too (never on the recalibrated one). Pure numpy.
"""

from __future__ import annotations

import numpy as np


def conformity_scores(p: np.ndarray, y: np.ndarray) -> np.ndarray:
    """s = p for a negative case, 1 - p for a positive one."""
    p = np.asarray(p, dtype=np.float64)
    return np.where(np.asarray(y) == 1, 1.0 - p, p)


def prediction_sets(p: np.ndarray, q_neg: float, q_pos: float) -> tuple[np.ndarray, np.ndarray]:
    """Boolean membership of class 0 and class 1 in each case's set: p <= q̂₀, 1 - p <= q̂₁."""
    p = np.asarray(p, dtype=np.float64)
    return p <= q_neg, (1.0 - p) <= q_pos
