"""Means and variances of disjoint parts (sites, batches), pooled exactly: the one home for moment pooling.

A part releases (n, mean, M2) per feature, M2 = Σ(x - mean)² (:func:`part_moments`), or (n, mean, var) with the
sample variance var = M2/(n - 1) (ddof 1; 0 for a single sample, :func:`sample_variance`). Parts combine with
Chan's formula, exact and free of the cancellation of Σx² - (Σx)²/n:

    n = Σ n_s;   mean = Σ n_s·mean_s / n;   M2 = Σ M2_s + Σ n_s·(mean_s - mean)²   (:func:`pool_moments`).

Used by ComBat's spanning-batch round and its diagnostics, the study's standardisation (pooled mean and SD of
the training sites), and the per-site diagnostics. Pure numpy.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Part = tuple[int, np.ndarray, np.ndarray]  # (n, mean, M2)


def part_moments(values: np.ndarray) -> Part:
    """(n, mean, M2 = Σ(x - mean)²) per column of one part's rows (samples × features)."""
    values = np.asarray(values, dtype=float)
    mean = values.mean(axis=0)
    deviation = values - mean
    return int(values.shape[0]), mean, np.einsum("ij,ij->j", deviation, deviation)


def sample_variance(n: int, m2: np.ndarray) -> np.ndarray:
    """M2/(n - 1), and 0 for a part of one sample (whose M2 is 0)."""
    m2 = np.asarray(m2, dtype=float)
    return m2 / (n - 1) if n > 1 else np.zeros_like(m2)


def pool_moments(parts: Sequence[Part]) -> Part:
    """Combine (n, mean, M2) of disjoint parts (module docstring)."""
    n = sum(int(pt[0]) for pt in parts)
    if n == 0:
        raise ValueError("no samples to pool: every part is empty")
    mean = sum(pt[0] * np.asarray(pt[1], dtype=float) for pt in parts) / n
    m2 = sum(np.asarray(pt[2], dtype=float) + pt[0] * (np.asarray(pt[1]) - mean) ** 2 for pt in parts)
    return n, mean, m2


def pool_mean_variance(ns: Sequence[int], means: Sequence[np.ndarray], variances: Sequence[np.ndarray],
                       columns: np.ndarray | None = None) -> tuple[int, np.ndarray, np.ndarray]:
    """Pooled (n, mean, sample variance) of parts given as (n_s, mean_s, var_s) with var_s = M2_s/(n_s - 1);
    ``columns`` picks some features of each part."""
    parts = []
    for n, mean, var in zip(ns, means, variances):
        mean, var = np.asarray(mean, dtype=float), np.asarray(var, dtype=float)
        if columns is not None:
            mean, var = mean[columns], var[columns]
        parts.append((int(n), mean, var * max(int(n) - 1, 0)))
    n, mean, m2 = pool_moments(parts)
    return n, mean, sample_variance(n, m2)
