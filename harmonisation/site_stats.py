"""Site-side statistics for round 1 (and the spanning-batch round).

All outputs are aggregates whose size depends on q (design width) and p (features) only.
"""

from __future__ import annotations

import numpy as np

from fedmath.moments import part_moments

from .design import SiteData
from .messages import Message


def site_round1(sd: SiteData, ref_batch: str | None = None) -> Message:
    """Round 1: A_k = X_kᵀX_k (q x q), C_k = X_kᵀY_k (q x p), n_k; in reference mode a site holding
    reference-batch rows adds their own sums (``ref_xtx``, ``ref_xty``): σ̂² is fitted on those rows only, and
    the coordinator computes it from these sums and the schema's moments
    (:func:`harmonisation.combine.combine_scale`), with no round of its own."""
    msg: Message = {"kind": "round1", "site": sd.site, "xtx": sd.x.T @ sd.x, "xty": sd.x.T @ sd.y,
                    "n": int(sd.y.shape[0])}
    if ref_batch is not None and np.any(sd.batches == ref_batch):
        rows = sd.batches == ref_batch
        msg["ref_xtx"] = sd.x[rows].T @ sd.x[rows]
        msg["ref_xty"] = sd.x[rows].T @ sd.y[rows]
    return msg


def covariate_effect(sd: SiteData, plan: Message, beta: np.ndarray) -> np.ndarray:
    """M = x̃ B̂ with the batch columns of x zeroed (samples x features)."""
    k = len(plan["batches"])
    if sd.x.shape[1] == k:
        return np.zeros_like(sd.y)
    return sd.x[:, k:] @ beta[k:]


def standardise(sd: SiteData, plan: Message, fit: Message, scale: Message) -> tuple[np.ndarray, np.ndarray]:
    """Z = (Y - α̂ - M) / σ̂; returns (Z, α̂ + M), the fitted mean each sample returns to."""
    mean = covariate_effect(sd, plan, fit["beta"])
    mean += fit["alpha"]
    z = sd.y - mean
    z /= np.sqrt(scale["var_pooled"])
    return z, mean


def batch_stats(z: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
    """(n, γ̂ = mean, M2 = Σ(z - γ̂)²) per feature of one batch's standardised rows
    (:func:`fedmath.moments.part_moments`)."""
    return part_moments(z)


def site_batch_moments(sd: SiteData, plan: Message, z: np.ndarray) -> Message | None:
    """Round 3 (only for batches spanning sites): (n, mean, M2) of Z per such batch here."""
    ref = plan["ref_batch"] or None
    here = [b for b in plan["spanning"] if b != ref and np.any(sd.batches == b)]
    if not here:
        return None
    stats = [batch_stats(z[sd.batches == b]) for b in here]
    return {"kind": "batch_moments", "site": sd.site, "batches": here,
            "n": np.array([s[0] for s in stats], dtype=np.int64),
            "mean": np.stack([s[1] for s in stats]), "m2": np.stack([s[2] for s in stats])}
