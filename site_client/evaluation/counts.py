"""Confusion counts and calibration sums computed at a site (additive across sites)."""

from __future__ import annotations

import numpy as np

from site_client.evaluation._checks import as_labels, as_probabilities

Aggregate = dict[str, "np.ndarray | float | int"]


def confusion_counts(p: object, y: object, thresholds: object, site: str | None = None) -> Aggregate:
    """TP, FP, FN, TN at each threshold t (predicted positive iff p >= t).

    ``thresholds`` is a scalar (the protocol's decision threshold) or an increasing grid (decision curve).
    Returns ``thresholds`` (T,), ``n_tp``, ``n_fp``, ``n_fn``, ``n_tn`` (T,), ``n_events``, ``n_nonevents``.
    """
    p = as_probabilities(p, "p", site)
    y = as_labels(y, p.size, "y", site)
    t = np.atleast_1d(np.asarray(thresholds, dtype=float))
    if t.ndim != 1 or not np.all(np.isfinite(t)) or np.any((t <= 0) | (t >= 1)) or np.any(np.diff(t) <= 0):
        raise ValueError(f"thresholds must be strictly increasing numbers in (0, 1), got {t!r}")
    pos = np.sort(p[y == 1])
    neg = np.sort(p[y == 0])
    # number of scores >= t = size - number of scores < t
    tp = pos.size - np.searchsorted(pos, t, side="left")
    fp = neg.size - np.searchsorted(neg, t, side="left")
    return {
        "thresholds": t,
        "n_tp": tp.astype(np.int64),
        "n_fp": fp.astype(np.int64),
        "n_fn": (pos.size - tp).astype(np.int64),
        "n_tn": (neg.size - fp).astype(np.int64),
        "n_events": int(pos.size),
        "n_nonevents": int(neg.size),
    }


def calibration_sums(p: object, y: object, site: str | None = None) -> Aggregate:
    """n, events, non-events, Σp and Σ(p - y)²: Brier, scaled Brier and O/E at the coordinator."""
    p = as_probabilities(p, "p", site)
    y = as_labels(y, p.size, "y", site)
    return {
        "n": int(p.size),
        "n_events": int(y.sum()),
        "n_nonevents": int(p.size - y.sum()),
        "sum_p": float(p.sum()),
        "brier_sum": float(np.sum((p - y) ** 2)),
    }
