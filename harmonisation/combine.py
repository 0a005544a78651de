"""Coordinator-side combination: pooled coefficients, grand mean, pooled variance, and EB
for batches that span sites.  Inputs are the sites' aggregate messages only: the schemas' per-batch
moments and the round-1 sums (σ̂² needs no round of its own, :func:`combine_scale`)."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from fedmath.moments import Part, pool_moments
from .eb import batch_adjustments
from .errors import HarmonisationError
from .messages import Message
from .schema import plan_levels, plan_options

SINGULAR_TOL = 1e-10
#: A site's SSR below −NEGATIVE_SSR_TOL × its M2 is no rounding (that is ~1e-14 × mean/SD relative): its round-1
#: sums and schema describe different cases.
NEGATIVE_SSR_TOL = 1e-6


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


def pooled_variance(plan: Message, ssr: np.ndarray, n: int) -> Message:
    """σ̂² = SSR / n (neuroCombat's ``var_pooled``, ddof 0); zeros replaced (see options)."""
    var = np.asarray(ssr, dtype=float) / n
    zero = var == 0
    if zero.any():
        if plan_options(plan).neurocombat_zero_variance:
            var[zero] = np.median(var != 0)
        else:
            var[zero] = np.median(var[~zero]) if (~zero).any() else 1.0
    return {"kind": "scale", "var_pooled": var, "zero_variance": zero.astype(np.uint8)}


def intercept(plan: Message) -> np.ndarray:
    """u with X u = 1 for every design row: the reference batch's column (all ones in reference mode), else
    the sum of the batch indicators (exactly one is 1 in each row)."""
    u = np.zeros(len(plan["design_columns"]))
    batches = list(plan["batches"])
    if plan["ref_batch"]:
        u[batches.index(plan["ref_batch"])] = 1.0
    else:
        u[: len(batches)] = 1.0
    return u


def residual_sum_of_squares(xtx: np.ndarray, xty: np.ndarray, beta: np.ndarray, u: np.ndarray,
                            moments: Part) -> np.ndarray:
    """Σ_i (y_ij − x_iᵀB̂_j)² per feature j over the rows that gave XᵀX, XᵀY and ``moments`` = (n, mean m, M2
    = Σ(y − m)²) of those same rows, without the rows:

        D = B̂ − u mᵀ,  Xᵀ(Y − 1mᵀ) = XᵀY − (XᵀX u) mᵀ,
        SSR_j = M2_j − 2 D_jᵀ Xᵀ(Y − m)_j + D_jᵀ XᵀX D_j,

    since y − xᵀB̂ = (y − m) − xᵀD when xᵀu = 1. Centring on m keeps the large feature means out of the
    subtraction (the uncentred Σy² − … form cancels catastrophically for HU or volumes), and the quadratic form
    is stationary at the least-squares B̂, so B̂'s rounding enters only to second order. Rounding can leave a
    residual-free feature a hair below 0 (the caller clips)."""
    _, mean, m2 = moments
    d = beta - np.outer(u, mean)
    xty_c = xty - np.outer(xtx @ u, mean)
    return m2 - 2.0 * np.einsum("qp,qp->p", d, xty_c) + np.einsum("qp,qp->p", d, xtx @ d)


def schema_moments(schema: Message, columns: Sequence[int], batches: Sequence[str] | None = None) -> Part | None:
    """(n, mean, M2) of a site's rows (only those of ``batches`` when given) over the feature ``columns``,
    pooled from its schema's per-batch (n, mean, var); None when it holds no such row."""
    parts = []
    for i, b in enumerate(schema["batches"]):
        if batches is not None and b not in batches:
            continue
        n_b = int(np.asarray(schema["batch_n"])[i])
        var = np.asarray(schema["var"][i], dtype=float)[list(columns)]
        parts.append((n_b, np.asarray(schema["mean"][i], dtype=float)[list(columns)], var * max(n_b - 1, 0)))
    return pool_moments(parts) if parts and sum(pt[0] for pt in parts) else None


def combine_scale(plan: Message, fit: Message, round1: Mapping[str, Message],
                  schemas: Mapping[str, Message]) -> Message:
    """σ̂² from round 1 and the schemas, with no round of its own: per site, the SSR of
    :func:`residual_sum_of_squares` over its round-1 sums (reference mode: the sums of its reference-batch
    rows, ``ref_xtx`` / ``ref_xty``) and its schema's moments of the same rows; σ̂² = Σ SSR / n
    (:func:`pooled_variance`). A site whose round-1 sums do not describe the rows of its schema is named."""
    columns = [list(plan["all_features"]).index(f) for f in plan["features"]]
    ref = plan["ref_batch"] or None
    u = intercept(plan)
    ssr, n = np.zeros(len(columns)), 0
    for site, msg in round1.items():
        moments = schema_moments(schemas[site], columns, None if ref is None else [ref])
        if moments is None:
            continue
        xtx, xty = (msg["xtx"], msg["xty"]) if ref is None else (msg.get("ref_xtx"), msg.get("ref_xty"))
        if xtx is None or xty is None:
            raise HarmonisationError(
                f"site {site!r} holds {moments[0]} case(s) of the reference batch {ref!r} but its round-1 "
                "message lacks their sums (ref_xtx, ref_xty)")
        xtx = np.asarray(xtx, dtype=float)
        rows = int(round(float(u @ xtx @ u)))  # uᵀXᵀXu = 1ᵀ1: the number of rows summed
        if rows != moments[0]:
            raise HarmonisationError(
                f"site {site!r}: its round-1 sums cover {rows} case(s) but its schema described {moments[0]}")
        site_ssr = residual_sum_of_squares(xtx, np.asarray(xty, dtype=float), np.asarray(fit["beta"], dtype=float),
                                           u, moments)
        if np.any(site_ssr < -NEGATIVE_SSR_TOL * np.maximum(moments[2], np.finfo(float).tiny)):
            raise HarmonisationError(
                f"site {site!r}: its round-1 sums and its schema's moments do not describe the same cases (the "
                "residual sum of squares they imply is negative); check that its data did not change during the run")
        ssr += np.maximum(site_ssr, 0.0)
        n += moments[0]
    return pooled_variance(plan, ssr, n)


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
