"""Batch-effect diagnostics computed from per-batch aggregates only.

Each batch contributes (n_k, mean_k, var_k) per feature; the one-way ANOVA of a feature
across batches is exact from these:

    grand mean  m  = Σ n_k m_k / N
    SSB = Σ n_k (m_k - m)²      (K - 1 df)
    SSW = Σ (n_k - 1) v_k       (N - K df)
    F   = (SSB / (K - 1)) / (SSW / (N - K)),   p = P(F_{K-1, N-K} > F)

Moments of one batch split over several sites are pooled exactly with Chan's formula
(:func:`pool_moments`).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
from scipy import stats


def group_moments(values: np.ndarray, labels: np.ndarray) -> dict:
    """Per-group count, mean and variance (ddof 1; 0 for a single sample) of samples x features."""
    groups = sorted(set(labels.tolist()))
    p = values.shape[1]
    n = np.zeros(len(groups), dtype=np.int64)
    mean = np.zeros((len(groups), p))
    var = np.zeros((len(groups), p))
    for k, g in enumerate(groups):
        rows = values if len(groups) == 1 else values[labels == g]
        n[k] = rows.shape[0]
        mean[k] = rows.mean(axis=0)
        if n[k] > 1:
            var[k] = rows.var(axis=0, ddof=1)
    return {"groups": groups, "n": n, "mean": mean, "var": var}


def pool_moments(parts: Sequence[tuple[int, np.ndarray, np.ndarray]]) -> tuple[int, np.ndarray, np.ndarray]:
    """Combine (n, mean, M2 = Σ(x - mean)²) of disjoint parts: exact, no cancellation.

    n = Σ n_s;  mean = Σ n_s mean_s / n;  M2 = Σ M2_s + Σ n_s (mean_s - mean)².
    """
    n = sum(int(pt[0]) for pt in parts)
    mean = sum(pt[0] * np.asarray(pt[1], dtype=float) for pt in parts) / n
    m2 = sum(np.asarray(pt[2], dtype=float) + pt[0] * (np.asarray(pt[1]) - mean) ** 2 for pt in parts)
    return n, mean, m2


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


def _batch_part(msg: dict, k: int, feature_index: np.ndarray | None) -> tuple[int, np.ndarray, np.ndarray]:
    """(n, mean, sum of squared deviations) of batch ``k`` in one site's message, optionally for some features."""
    n_k = int(msg["batch_n"][k])
    mean, var = msg["mean"][k], msg["var"][k]
    if feature_index is not None:
        mean, var = mean[feature_index], var[feature_index]
    return n_k, mean, var * max(n_k - 1, 0)


def _grouped_moments(groups: list[str], parts_per_group: list[list[tuple]]) -> dict:
    """Pool each group's parts into (n, mean, var with ddof 1; zeros for a one-sample group)."""
    out_n, out_mean, out_var = [], [], []
    for parts in parts_per_group:
        n, mean, m2 = pool_moments(parts)
        out_n.append(n)
        out_mean.append(mean)
        out_var.append(m2 / (n - 1) if n > 1 else np.zeros_like(mean))
    return {"groups": groups, "n": np.array(out_n), "mean": np.array(out_mean), "var": np.array(out_var)}


def pooled_batch_moments(messages: Sequence[dict], batches: Sequence[str],
                         feature_index: np.ndarray | None = None) -> dict:
    """Hub side: pool per-(site, batch) moments from ``schema``/``diagnostics`` messages by batch."""
    parts = [
        [_batch_part(msg, list(msg["batches"]).index(b), feature_index) for msg in messages if b in msg["batches"]]
        for b in batches
    ]
    return _grouped_moments(list(batches), parts)


def pooled_site_moments(messages: Sequence[dict], feature_index: np.ndarray | None = None) -> dict:
    """Hub side: per-site moments (all of a site's batches pooled) from ``schema``/``diagnostics``
    messages; groups are the site names."""
    parts = [[_batch_part(msg, k, feature_index) for k in range(len(msg["batches"]))] for msg in messages]
    return _grouped_moments([m["site"] for m in messages], parts)


def pooled_site_moments(messages: Sequence[dict], feature_index: np.ndarray | None = None) -> dict:
    """Hub side: per-site moments (all of a site's batches pooled) from ``schema``/``diagnostics``
    messages; groups are the site names."""
    out_n, out_mean, out_var = [], [], []
    for msg in messages:
        parts = []
        for k in range(len(msg["batches"])):
            n_k = int(msg["batch_n"][k])
            mean, var = msg["mean"][k], msg["var"][k]
            if feature_index is not None:
                mean, var = mean[feature_index], var[feature_index]
            parts.append((n_k, mean, var * max(n_k - 1, 0)))
        n, mean, m2 = pool_moments(parts)
        out_n.append(n)
        out_mean.append(mean)
        out_var.append(m2 / (n - 1) if n > 1 else np.zeros_like(mean))
    return {"groups": [m["site"] for m in messages], "n": np.array(out_n),
            "mean": np.array(out_mean), "var": np.array(out_var)}


def site_diagnostics(site: str, values: np.ndarray, labels: np.ndarray) -> dict:
    """Site side (optional upload after adjustment): per-batch n, mean, var of harmonised values."""
    mom = group_moments(values, labels)
    return {"kind": "diagnostics", "site": site, "batches": mom["groups"],
            "batch_n": mom["n"], "mean": mom["mean"], "var": mom["var"]}
