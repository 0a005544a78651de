"""Batch-effect diagnostics computed from per-batch aggregates only.

Each batch contributes (n_k, mean_k, var_k) per feature; the one-way ANOVA of a feature
across batches is exact from these:

    grand mean  m  = Σ n_k m_k / N
    SSB = Σ n_k (m_k - m)²      (K - 1 df)
    SSW = Σ (n_k - 1) v_k       (N - K df)
    F   = (SSB / (K - 1)) / (SSW / (N - K)),   p = P(F_{K-1, N-K} > F)

Moments of one batch split over several sites are pooled exactly with Chan's formula
(:func:`fedmath.moments.pool_moments`, the one home of moment pooling).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from fedmath.moments import part_moments, pool_mean_variance, sample_variance


def group_moments(values: np.ndarray, labels: np.ndarray) -> dict:
    """Per-group count, mean and variance (ddof 1; 0 for a single sample) of samples x features
    (:func:`fedmath.moments.part_moments` per group)."""
    groups = sorted(set(labels.tolist()))
    p = values.shape[1]
    n = np.zeros(len(groups), dtype=np.int64)
    mean = np.zeros((len(groups), p))
    var = np.zeros((len(groups), p))
    for k, g in enumerate(groups):
        n[k], mean[k], m2 = part_moments(values if len(groups) == 1 else values[labels == g])
        var[k] = sample_variance(int(n[k]), m2)
    return {"groups": groups, "n": n, "mean": mean, "var": var}


def anova_from_moments(n: np.ndarray, mean: np.ndarray, var: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One-way ANOVA F and p-value per feature from per-batch (n, mean, var); K x p inputs."""
    n = np.asarray(n, dtype=float)
    k, total = len(n), n.sum()
    grand = (n[:, None] * mean).sum(axis=0) / total
    ssb = (n[:, None] * (mean - grand) ** 2).sum(axis=0)
    ssw = ((n[:, None] - 1) * var).sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        f = (ssb / (k - 1)) / (ssw / (total - k))
    pval = stats.f.sf(f, k - 1, total - k)
    return f, pval


def batch_effect_table(
    features: Sequence[str],
    before: dict,
    after: dict | None = None,
    alpha: float = 0.05,
) -> pd.DataFrame:
    """Per feature: ANOVA F / p before (and after) harmonisation; ``no_batch_effect`` flags p >= alpha.

    ``before`` / ``after`` are dicts with ``n`` (K), ``mean`` and ``var`` (K x p).
    """
    f0, p0 = anova_from_moments(before["n"], before["mean"], before["var"])
    table = pd.DataFrame({"F_before": f0, "p_before": p0}, index=pd.Index(list(features), name="feature"))
    if after is not None:
        f1, p1 = anova_from_moments(after["n"], after["mean"], after["var"])
        table["F_after"] = f1
        table["p_after"] = p1
    table["no_batch_effect"] = table["p_before"] >= alpha
    return table


def batch_summary_table(features: Sequence[str], before: dict, after: dict | None = None,
                        group: str = "batch") -> pd.DataFrame:
    """Long table: batch (or site, ``group``), feature, n, mean and sd before (and after) harmonisation."""
    rows = []
    for k, b in enumerate(before["groups"]):
        block = pd.DataFrame({
            group: b, "feature": list(features), "n": int(before["n"][k]),
            "mean_before": before["mean"][k], "sd_before": np.sqrt(before["var"][k]),
        })
        if after is not None:
            block["mean_after"] = after["mean"][k]
            block["sd_after"] = np.sqrt(after["var"][k])
        rows.append(block)
    return pd.concat(rows, ignore_index=True)


def _grouped_moments(groups: list[str], parts_per_group: list[list[tuple[dict, int]]],
                     feature_index: np.ndarray | None) -> dict:
    """Pool each group's (message, batch index) parts into (n, mean, var with ddof 1; zeros for a one-sample
    group) by :func:`fedmath.moments.pool_mean_variance`, optionally for some features."""
    out_n, out_mean, out_var = [], [], []
    for parts in parts_per_group:
        n, mean, var = pool_mean_variance([int(m["batch_n"][k]) for m, k in parts], [m["mean"][k] for m, k in parts],
                                          [m["var"][k] for m, k in parts], feature_index)
        out_n.append(n)
        out_mean.append(mean)
        out_var.append(var)
    return {"groups": groups, "n": np.array(out_n), "mean": np.array(out_mean), "var": np.array(out_var)}


def pooled_batch_moments(messages: Sequence[dict], batches: Sequence[str],
                         feature_index: np.ndarray | None = None) -> dict:
    """Hub side: pool per-(site, batch) moments from ``schema``/``diagnostics`` messages by batch."""
    parts = [[(msg, list(msg["batches"]).index(b)) for msg in messages if b in msg["batches"]] for b in batches]
    return _grouped_moments(list(batches), parts, feature_index)


def pooled_site_moments(messages: Sequence[dict], feature_index: np.ndarray | None = None) -> dict:
    """Hub side: per-site moments (all of a site's batches pooled) from ``schema``/``diagnostics``
    messages; groups are the site names."""
    parts = [[(msg, k) for k in range(len(msg["batches"]))] for msg in messages]
    return _grouped_moments([m["site"] for m in messages], parts, feature_index)


def site_diagnostics(site: str, values: np.ndarray, labels: np.ndarray) -> dict:
    """Site side (optional upload after adjustment): per-batch n, mean, var of harmonised values."""
    mom = group_moments(values, labels)
    return {"kind": "diagnostics", "site": site, "batches": mom["groups"],
            "batch_n": mom["n"], "mean": mom["mean"], "var": mom["var"]}
