"""Coordinator-side combination: pooled coefficients, grand mean, pooled variance, and EB
for batches that span sites.  Inputs are the sites' aggregate messages only."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from fedmath.moments import pool_moments
from .eb import batch_adjustments
from .errors import HarmonisationError
from .messages import Message
from .schema import plan_levels, plan_options

SINGULAR_TOL = 1e-10


def column_owners(plan: Message) -> list[str]:
    """Covariate (or 'batch') that owns each design column."""
    owners = ["batch"] * len(plan["batches"])
    for cov, lv in plan_levels(plan).items():
        owners += [cov] * max(len(lv) - 1, 0)
    owners += list(plan["continuous"])
    return owners


def check_design(xtx: np.ndarray, plan: Message) -> float:
    """Raise naming the covariate when XᵀX is singular; return cond(XᵀX).

    Columns are scaled to unit diagonal and added one at a time; the first one that makes
    the smallest eigenvalue vanish is the culprit.  If it is already singular together with
    the batch columns alone, it is confounded with batch (site/scanner)."""
    cols = list(plan["design_columns"])
    owners = column_owners(plan)
    k = len(plan["batches"])
    diag = np.diag(xtx).copy()
    for j in np.flatnonzero(diag <= 0):
        raise HarmonisationError(
            f"design column {cols[j]!r} of covariate {owners[j]!r} is zero for every sample; "
            "drop the covariate or fix its values")
    d = np.sqrt(diag)
    r = xtx / np.outer(d, d)
    for m in range(k, len(cols)):
        if np.linalg.eigvalsh(r[: m + 1, : m + 1]).min() < SINGULAR_TOL:
            idx = list(range(k)) + [m]
            if np.linalg.eigvalsh(r[np.ix_(idx, idx)]).min() < SINGULAR_TOL:
                why = ("is confounded with batch (it is fully determined by the site/scanner "
                       "a sample belongs to)")
            else:
                why = "is collinear with the other covariates"
            raise HarmonisationError(
                f"singular design: covariate {owners[m]!r} (column {cols[m]!r}) {why}; "
                "ComBat cannot separate its effect from the batch effect: drop that covariate, "
                "merge its levels, or include sites where it varies")
    if np.linalg.eigvalsh(r[:k, :k]).min() < SINGULAR_TOL:
        raise HarmonisationError("singular design: the batch columns are linearly dependent")
    return float(np.linalg.cond(xtx))


def combine_round1(plan: Message, messages: Sequence[Message]) -> Message:
    """B̂ = (ΣA_k)⁻¹ ΣC_k (solve, not inverse); α̂ = Σ_k (n_k/n) B̂_k, or B̂_ref in reference mode."""
    xtx = sum(m["xtx"] for m in messages)
    xty = sum(m["xty"] for m in messages)
    n = sum(int(m["n"]) for m in messages)
    if n != int(np.sum(plan["batch_n"])):
        raise HarmonisationError(
            f"round 1 covers {n} samples but the schema announced {int(np.sum(plan['batch_n']))}")
    cond = check_design(xtx, plan)
    beta = np.linalg.solve(xtx, xty)
    k = len(plan["batches"])
    ref = plan["ref_batch"] or None
    if ref is not None:
        alpha = beta[list(plan["batches"]).index(ref)].copy()
    else:
        weights = np.asarray(plan["batch_n"], dtype=float) / n
        alpha = weights @ beta[:k]
    # continuous covariates' mean and sd (for held-out range checks), from XᵀX alone
    c_idx = [len(plan["design_columns"]) - len(plan["continuous"]) + i for i in range(len(plan["continuous"]))]
    if ref is not None:
        sums = xtx[list(plan["batches"]).index(ref), c_idx]
    else:
        sums = xtx[:k, c_idx].sum(axis=0)
    cont_mean = sums / n
    cont_sd = np.sqrt(np.maximum(np.diag(xtx)[c_idx] / n - cont_mean ** 2, 0.0))
    return {"kind": "fit", "beta": beta, "alpha": alpha, "cond": cond,
            "cont_mean": np.asarray(cont_mean, dtype=float), "cont_sd": np.asarray(cont_sd, dtype=float)}


def combine_round2(plan: Message, messages: Sequence[Message]) -> Message:
    """σ̂² = Σ SSR_k / n (reference mode: reference rows only); zeros replaced (see options)."""
    messages = [m for m in messages if m is not None]
    ssr = sum(m["ssr"] for m in messages)
    n = sum(int(m["n"]) for m in messages)
    var = ssr / n
    zero = var == 0
    if zero.any():
        if plan_options(plan).neurocombat_zero_variance:
            var[zero] = np.median(var != 0)
        else:
            var[zero] = np.median(var[~zero]) if (~zero).any() else 1.0
    return {"kind": "scale", "var_pooled": var, "zero_variance": zero.astype(np.uint8)}


def combine_batch_moments(plan: Message, messages: Sequence[Message]) -> Message:
    """EB at the hub for batches spanning sites, from pooled (n, mean, M2) of Z."""
    opts = plan_options(plan)
    ref = opts.ref_batch
    batches = [b for b in plan["spanning"] if b != ref]
    g_all, d_all = [], []
    for b in batches:
        parts = []
        for m in messages:
            if m is not None and b in m["batches"]:
                i = list(m["batches"]).index(b)
                parts.append((int(m["n"][i]), m["mean"][i], m["m2"][i]))
        n, mean, m2 = pool_moments(parts)
        g, d = batch_adjustments(n, mean, m2, eb=opts.eb, parametric=opts.parametric,
                                 mean_only=opts.mean_only, conv=opts.conv, max_iter=opts.max_iter,
                                 label=b)
        g_all.append(g)
        d_all.append(d)
    p = len(plan["features"])
    return {"kind": "eb", "batches": batches,
            "gamma_star": np.array(g_all).reshape(len(batches), p),
            "delta_star": np.array(d_all).reshape(len(batches), p)}
