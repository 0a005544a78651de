"""IBSI texture features from one matrix (IBSI reference manual, chapter 3.6-3.11). Logarithms are base 2."""

from __future__ import annotations

import numpy as np


def _entropy(p: np.ndarray) -> float:
    nz = p[p > 0]
    return float(-(nz * np.log2(nz)).sum())


def glcm_features(counts: np.ndarray, ng: int) -> dict[str, float]:
    """Grey-level co-occurrence features (IBSI 3.6) of a symmetric count matrix over levels 1..Ng."""
    p = counts / counts.sum()
    levels = np.arange(1, p.shape[0] + 1, dtype=np.float64)
    i, j = np.meshgrid(levels, levels, indexing="ij")
    p_i = p.sum(axis=1)
    p_j = p.sum(axis=0)
    n = p.shape[0]
    diff = np.abs(i - j).astype(np.int64)
    p_diff = np.bincount(diff.ravel(), weights=p.ravel(), minlength=n)
    sums = (i + j).astype(np.int64)
    p_sum = np.bincount(sums.ravel(), weights=p.ravel(), minlength=2 * n + 1)
    k_diff = np.arange(p_diff.size, dtype=np.float64)
    k_sum = np.arange(p_sum.size, dtype=np.float64)
    mu = float((i * p).sum())
    mu_i = float((levels * p_i).sum())
    mu_j = float((levels * p_j).sum())
    sd_i = float(np.sqrt(((levels - mu_i) ** 2 * p_i).sum()))
    sd_j = float(np.sqrt(((levels - mu_j) ** 2 * p_j).sum()))
    diff_avg = float((k_diff * p_diff).sum())
    sum_avg = float((k_sum * p_sum).sum())
    hxy = _entropy(p)
    hx = _entropy(p_i)
    outer = np.outer(p_i, p_j)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_outer = np.where(outer > 0, np.log2(np.where(outer > 0, outer, 1.0)), 0.0)
    hxy1 = float(-(p * log_outer).sum())
    hxy2 = float(-(outer * log_outer).sum())
    cluster = i + j - mu_i - mu_j
    off = k_diff[1:]
    return {
        "joint_max": float(p.max()),
        "joint_avg": mu,
        "joint_var": float(((i - mu) ** 2 * p).sum()),
        "joint_entr": hxy,
        "diff_avg": diff_avg,
        "diff_var": float(((k_diff - diff_avg) ** 2 * p_diff).sum()),
        "diff_entr": _entropy(p_diff),
        "sum_avg": sum_avg,
        "sum_var": float(((k_sum - sum_avg) ** 2 * p_sum).sum()),
        "sum_entr": _entropy(p_sum),
        "energy": float((p**2).sum()),
        "contrast": float(((i - j) ** 2 * p).sum()),
        "dissimilarity": float((np.abs(i - j) * p).sum()),
        "inv_diff": float((p / (1 + np.abs(i - j))).sum()),
        "inv_diff_norm": float((p / (1 + np.abs(i - j) / ng)).sum()),
        "inv_diff_mom": float((p / (1 + (i - j) ** 2)).sum()),
        "inv_diff_mom_norm": float((p / (1 + ((i - j) / ng) ** 2)).sum()),
        "inv_var": float((p_diff[1:] / off**2).sum()),
        "corr": float((((i - mu_i) * (j - mu_j)) * p).sum() / (sd_i * sd_j)) if sd_i * sd_j > 0 else float("nan"),
        "auto_corr": float((i * j * p).sum()),
        "clust_tend": float((cluster**2 * p).sum()),
        "clust_shade": float((cluster**3 * p).sum()),
        "clust_prom": float((cluster**4 * p).sum()),
        "info_corr1": (hxy - hxy1) / hx if hx > 0 else 0.0,
        "info_corr2": float(np.sqrt(max(0.0, 1 - np.exp(-2 * (hxy2 - hxy))))),
    }


def _run_like(
    counts: np.ndarray, voxels: float, short: str, long: str, prefix: str, small: str = "s", large: str = "l"
) -> dict[str, float]:
    """Shared formulas of run-length, size-zone, distance-zone and dependence matrices (IBSI 3.7-3.11).

    ``counts[i - 1, j - 1]`` counts runs / zones / neighbourhoods of grey level i and length / size / distance /
    dependence j.
    """
    n_s = counts.sum()
    p = counts / n_s
    gl = np.arange(1, counts.shape[0] + 1, dtype=np.float64)[:, None]
    rl = np.arange(1, counts.shape[1] + 1, dtype=np.float64)[None, :]
    r_i = counts.sum(axis=1)
    r_j = counts.sum(axis=0)
    mu_i = float((gl * p).sum())
    mu_j = float((rl * p).sum())
    return {
        f"{small}{short}e": float((counts / rl**2).sum() / n_s),
        f"{large}{short}e": float((counts * rl**2).sum() / n_s),
        "lg" + ("re" if short == "r" else "ze" if prefix != "dc" else "ce"): float((counts / gl**2).sum() / n_s),
        "hg" + ("re" if short == "r" else "ze" if prefix != "dc" else "ce"): float((counts * gl**2).sum() / n_s),
        f"{small}{short}lge": float((counts / (gl**2 * rl**2)).sum() / n_s),
        f"{small}{short}hge": float((counts * gl**2 / rl**2).sum() / n_s),
        f"{large}{short}lge": float((counts * rl**2 / gl**2).sum() / n_s),
        f"{large}{short}hge": float((counts * gl**2 * rl**2).sum() / n_s),
        "glnu": float((r_i**2).sum() / n_s),
        "glnu_norm": float((r_i**2).sum() / n_s**2),
        f"{prefix}nu": float((r_j**2).sum() / n_s),
        f"{prefix}nu_norm": float((r_j**2).sum() / n_s**2),
        f"{long}_perc": float(n_s / voxels),
        "gl_var": float(((gl - mu_i) ** 2 * p).sum()),
        f"{prefix}_var": float(((rl - mu_j) ** 2 * p).sum()),
        f"{prefix}_entr": _entropy(p),
    }


def glrlm_features(counts: np.ndarray, voxels: float) -> dict[str, float]:
    return _run_like(counts, voxels, "r", "r", "rl")


def glszm_features(counts: np.ndarray, voxels: float) -> dict[str, float]:
    return _run_like(counts, voxels, "z", "z", "zs")


def gldzm_features(counts: np.ndarray, voxels: float) -> dict[str, float]:
    return _run_like(counts, voxels, "d", "z", "zd")


def ngldm_features(counts: np.ndarray, voxels: float) -> dict[str, float]:
    values = _run_like(counts, voxels, "d", "dc", "dc", small="l", large="h")
    values["dc_energy"] = float(((counts / counts.sum()) ** 2).sum())
    return values


def ngtdm_features(table: np.ndarray) -> dict[str, float]:
    """NGTDM features (IBSI 3.9) from per-level (n_i, s_i); only levels with n_i > 0 take part."""
    n, s = table[:, 0], table[:, 1]
    levels = np.arange(1, table.shape[0] + 1, dtype=np.float64)
    present = n > 0
    n_vc = n.sum()
    p = n / n_vc
    ip, sp, pp = levels[present], s[present], p[present]
    n_gp = int(present.sum())
    ps_sum = float((p * s).sum())
    di = ip[:, None] - ip[None, :]
    coarseness = 1.0 / ps_sum if ps_sum > 0 else 1e6
    if n_gp > 1:
        contrast = float((pp[:, None] * pp[None, :] * di**2).sum() / (n_gp * (n_gp - 1)) * s.sum() / n_vc)
        busy_den = float(np.abs(ip[:, None] * pp[:, None] - ip[None, :] * pp[None, :]).sum())
        busyness = ps_sum / busy_den if busy_den > 0 else 0.0
    else:
        contrast, busyness = 0.0, 0.0
    complexity = float(
        (np.abs(di) * (pp[:, None] * sp[:, None] + pp[None, :] * sp[None, :]) / (pp[:, None] + pp[None, :])).sum()
        / n_vc
    )
    strength = float(((pp[:, None] + pp[None, :]) * di**2).sum() / s.sum()) if s.sum() > 0 else 0.0
    return {
        "coarseness": coarseness,
        "contrast": contrast,
        "busyness": busyness,
        "complexity": complexity,
        "strength": strength,
    }
