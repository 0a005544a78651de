"""Empirical-Bayes location/scale estimates for one batch, from its sufficient statistics.

Input per batch and feature: n, γ̂ = mean of the standardised data z, and
M2 = Σ (z - γ̂)².  These suffice for every variant because
Σ (z - g)² = M2 + n (γ̂ - g)², so the same function serves a batch held by one site
(computed locally) and a batch spanning sites (moments pooled at the hub).

δ̂² = M2 / (n - 1) (zeros -> 1; mean_only -> 1).  Priors across features of the batch:
γ̄ = mean γ̂, τ̄² = var γ̂ (ddof 1); m, s² = mean, var (ddof 1) of δ̂²;
a = (2s² + m²)/s², b = (m s² + m³)/s².

* parametric: iterate γ⁺ = (n τ̄² γ̂ + δ γ̄)/(n τ̄² + δ), δ⁺ = (½ Σ(z - γ⁺)² + b)/(n/2 + a - 1)
  until max |Δγ|/γ_old and max |Δδ|/δ_old <= conv (signed denominators, as R sva and
  neuroCombat; 0/0 counts as converged, x/0 as not; capped at ``max_iter``).
* non-parametric: for feature j, weights over j' != j,
  log w = -(n/2) log(2π δ̂_j') - Σ(z_j - γ̂_j')² / (2 δ̂_j'); γ* = Σ w γ̂_j' / Σ w, δ* likewise
  (log space, so large batches do not overflow as in neuroCombat).
* mean_only + EB: γ* = (τ̄² γ̂ + γ̄)/(τ̄² + 1), δ* = 1.  eb=False: γ* = γ̂, δ* = δ̂².
"""

from __future__ import annotations

import warnings

import numpy as np

from .errors import ConvergenceWarning


def delta_hat(n: int, m2: np.ndarray, mean_only: bool) -> np.ndarray:
    if mean_only:
        return np.ones_like(m2, dtype=float)
    d = np.asarray(m2, dtype=float) / (n - 1)
    return np.where(d == 0, 1.0, d)


def priors(gamma_hat: np.ndarray, d_hat: np.ndarray) -> tuple[float, float, float, float]:
    """γ̄, τ̄², a, b of one batch (across features; a, b are inf when all δ̂² are equal)."""
    gamma_bar = float(np.mean(gamma_hat))
    t2 = float(np.var(gamma_hat, ddof=1))
    m = np.float64(np.mean(d_hat))
    s2 = np.float64(np.var(d_hat, ddof=1))
    with np.errstate(divide="ignore", invalid="ignore"):
        a = float((2 * s2 + m ** 2) / s2)
        b = float((m * s2 + m ** 3) / s2)
    return gamma_bar, t2, a, b


def _rel_change(new: np.ndarray, old: np.ndarray) -> float:
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.abs(new - old) / old
    r = np.where(np.isnan(r), 0.0, r)
    return float(r.max())


def parametric_eb(n: int, gamma_hat: np.ndarray, m2: np.ndarray, d_hat: np.ndarray,
                  gamma_bar: float, t2: float, a: float, b: float,
                  conv: float = 1e-4, max_iter: int = 10_000, label: str = "") -> tuple[np.ndarray, np.ndarray]:
    g_old, d_old = gamma_hat.copy(), d_hat.copy()
    for _ in range(max_iter):
        g_new = (t2 * n * gamma_hat + d_old * gamma_bar) / (t2 * n + d_old)
        sum2 = m2 + n * (gamma_hat - g_new) ** 2
        d_new = (0.5 * sum2 + b) / (n / 2.0 + a - 1.0)
        change = max(_rel_change(g_new, g_old), _rel_change(d_new, d_old))
        g_old, d_old = g_new, d_new
        if change <= conv:
            return g_new, d_new
    warnings.warn(f"parametric empirical Bayes for batch {label!r} did not converge in {max_iter} "
                  "iterations; using the last estimates", ConvergenceWarning, stacklevel=2)
    return g_old, d_old


def nonparametric_eb(n: int, gamma_hat: np.ndarray, m2: np.ndarray, d_hat: np.ndarray,
                     block: int = 256) -> tuple[np.ndarray, np.ndarray]:
    p = gamma_hat.shape[0]
    log_norm = -(n / 2.0) * np.log(2 * np.pi * d_hat)
    g_star = np.empty(p)
    d_star = np.empty(p)
    for start in range(0, p, block):
        stop = min(start + block, p)
        rows = np.arange(start, stop)
        sum2 = m2[rows, None] + n * (gamma_hat[rows, None] - gamma_hat[None, :]) ** 2
        logw = log_norm[None, :] - sum2 / (2 * d_hat[None, :])
        logw[np.arange(stop - start), rows] = -np.inf
        logw -= logw.max(axis=1, keepdims=True)
        w = np.exp(logw)
        total = w.sum(axis=1)
        g_star[rows] = (w @ gamma_hat) / total
        d_star[rows] = (w @ d_hat) / total
    return g_star, d_star


def batch_adjustments(n: int, gamma_hat: np.ndarray, m2: np.ndarray, *, eb: bool, parametric: bool,
                      mean_only: bool, conv: float = 1e-4, max_iter: int = 10_000,
                      label: str = "") -> tuple[np.ndarray, np.ndarray]:
    """γ*, δ* of one (non-reference) batch from (n, γ̂, M2) per feature."""
    gamma_hat = np.asarray(gamma_hat, dtype=float)
    m2 = np.asarray(m2, dtype=float)
    d_hat = delta_hat(n, m2, mean_only)
    if not eb:
        return gamma_hat.copy(), d_hat
    gamma_bar, t2, a, b = priors(gamma_hat, d_hat)
    if parametric:
        if mean_only:
            return (t2 * gamma_hat + gamma_bar) / (t2 + 1.0), np.ones_like(gamma_hat)
        return parametric_eb(n, gamma_hat, m2, d_hat, gamma_bar, t2, a, b, conv, max_iter, label)
    return nonparametric_eb(n, gamma_hat, m2, d_hat)
