"""Sufficient statistics of the Pearson correlation between model features and tumour volume."""

from __future__ import annotations

import numpy as np

from site_client.evaluation._checks import as_finite

Aggregate = dict[str, "np.ndarray | float | int"]


def feature_volume_sums(x: object, volume: object, site: str | None = None) -> Aggregate:
    """n, Σx, Σv, Σx², Σv², Σxv for each feature column of x (n×d) against volume v (n).

    Sizes depend on d only. Sums are of patient values over the whole site (n >= k cases each).
    """
    v = np.asarray(volume, dtype=float)
    n = v.shape[0] if v.ndim == 1 else -1
    if v.ndim != 1 or n == 0:
        raise ValueError(f"volume{' at site ' + repr(site) if site else ''} must be a non-empty 1-D array, got shape {v.shape}")
    v = as_finite(v, n, "volume", site)
    xa = np.asarray(x, dtype=float)
    if xa.ndim == 1:
        xa = xa[:, None]
    x2 = as_finite(xa, n, "features", site, ndim=2)
    return {
        "n": int(n),
        "sum_x": x2.sum(axis=0),
        "sum_v": float(v.sum()),
        "sum_x2": (x2 * x2).sum(axis=0),
        "sum_v2": float(v @ v),
        "sum_xv": x2.T @ v,
    }
