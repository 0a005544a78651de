"""Decision curve: net benefit of the model, treat-all and treat-none from summed confusion counts."""

from __future__ import annotations

import numpy as np

from coordinator.validation.results import DecisionCurve

Aggregate = dict[str, "np.ndarray | float | int"]


def net_benefit(agg: Aggregate) -> DecisionCurve:
    """NB(t) = TP/N - FP/N·t/(1-t); treat-all = E/N - (1-E/N)·t/(1-t); treat-none = 0 (N = events + non-events)."""
    t = np.asarray(agg["thresholds"], dtype=float)
    e, ne = int(agg["n_events"]), int(agg["n_nonevents"])
    n = e + ne
    if n == 0:
        raise ValueError("decision curve needs at least one patient")
    odds = t / (1 - t)
    nb = np.asarray(agg["n_tp"]) / n - np.asarray(agg["n_fp"]) / n * odds
    prev = e / n
    all_ = prev - (1 - prev) * odds
    return DecisionCurve(t.tolist(), nb.tolist(), all_.tolist(), prev)
