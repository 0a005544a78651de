"""Random-effects meta-analysis across held-out sites: REML τ², Hartung-Knapp-Sidik-Jonkman CI, Q-profile CI of
τ², I² and a prediction interval (the defaults of metafor's ``rma(yi, vi, method="REML", test="knha")``).

With θ_k, v_k = SE_k² on the pooling scale and w_k(τ²) = 1/(v_k + τ²), μ(τ²) = Σwθ/Σw:

* τ² by REML (Fisher scoring from the DerSimonian-Laird value, truncated at 0):
  P = W - W11ᵀW/Σw, τ² ← τ² + (θᵀPPθ - tr P)/tr(PP); SE(τ²) = √(2/tr(PP)). DL on request:
  τ²_DL = max(0, (Q - (K-1))/(Σw - Σw²/Σw)) with Q = Σw(θ - θ_FE)², w = 1/v.
* HKSJ: SE_HK = √(Σw*(θ - μ)²/(K-1)) · (Σw*)^-½ with w* = w(τ̂²); CI = μ ± t_{K-1} · SE_HK (no truncation of
  the scale factor at 1, as in metafor; IntHout et al. 2014 discuss the variant).
* Prediction interval for a new site: μ ± t_{K-1} · √(τ̂² + SE_HK²) (metafor's ``predict`` under test="knha").
* Q-profile CI of τ² (Viechtbauer 2007): the τ² at which the generalised Q(τ²) = Σw(τ²)(θ - μ(τ²))² equals
  χ²_{K-1} at 1 - (1-level)/2 (lower) and (1-level)/2 (upper); 0 when Q(0) is already below it.
* I² = τ²/(τ² + s²) with the typical within-site variance s² = (K-1)Σw/((Σw)² - Σw²), w = 1/v (equal to
  (Q-(K-1))/Q for DL); its CI is that of τ² put through the same map.

K = 1: the site's own estimate and z CI, no τ², no PI. K = 2: τ² and the HKSJ CI (t with 1 df: very wide, which
is the honest width with two sites) but no PI — the ``note`` says so. Pooling happens on ``scale``: 'logit' (AUC,
coverage), 'log' (O/E), 'identity' (slope, CITL, ΔAUC); SEs are moved to that scale by the delta method and
results back-transformed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import optimize, stats

from coordinator.validation.results import RandomEffects

REML_TOL, REML_MAX_ITER = 1e-10, 200


def _to_scale(theta: np.ndarray, se: np.ndarray, scale: str) -> tuple[np.ndarray, np.ndarray]:
    if scale == "identity":
        return theta, se
    if scale == "logit":
        if np.any((theta <= 0) | (theta >= 1)):
            raise ValueError(f"logit-scale pooling needs estimates strictly in (0, 1), got {theta.tolist()}")
        return np.log(theta / (1 - theta)), se / (theta * (1 - theta))
    if scale == "log":
        if np.any(theta <= 0):
            raise ValueError(f"log-scale pooling needs positive estimates, got {theta.tolist()}")
        return np.log(theta), se / theta
    raise ValueError(f"unknown scale {scale!r}; expected identity, logit or log")


def _back(x: float, scale: str) -> float:
    if scale == "logit":
        return 1 / (1 + math.exp(-x))
    if scale == "log":
        return math.exp(x)
    return x


def _weighted_mean(theta: np.ndarray, v: np.ndarray, tau2: float) -> tuple[float, np.ndarray]:
    w = 1 / (v + tau2)
    return float(np.sum(w * theta) / np.sum(w)), w


def generalised_q(theta: np.ndarray, v: np.ndarray, tau2: float) -> float:
    """Q(τ²) = Σ w(τ²)(θ - μ(τ²))², w = 1/(v + τ²): χ²_{K-1} under the model at the true τ²."""
    mu, w = _weighted_mean(theta, v, tau2)
    return float(np.sum(w * (theta - mu) ** 2))


def tau2_dersimonian_laird(theta: np.ndarray, v: np.ndarray) -> float:
    """τ²_DL = max(0, (Q - (K-1)) / (Σw - Σw²/Σw)), w = 1/v."""
    w = 1 / v
    q = generalised_q(theta, v, 0.0)
    c = float(np.sum(w) - np.sum(w**2) / np.sum(w))
    return max(0.0, (q - (theta.size - 1)) / c) if c > 0 else 0.0


def _reml_parts(theta: np.ndarray, v: np.ndarray, tau2: float) -> tuple[float, float, float]:
    """(θᵀPPθ, tr P, tr PP) with P = W - W11ᵀW/Σw, W = diag(1/(v + τ²))."""
    w = 1 / (v + tau2)
    p = np.diag(w) - np.outer(w, w) / np.sum(w)
    py = p @ theta
    return float(py @ py), float(np.trace(p)), float(np.sum(p * p))


def tau2_reml(theta: np.ndarray, v: np.ndarray) -> tuple[float, float, int]:
    """REML τ² by Fisher scoring from the DL value (step halved while it would go below 0; truncated at 0).

    Returns (τ², SE(τ²) = √(2/tr(PP)) at the estimate, iterations)."""
    tau2 = tau2_dersimonian_laird(theta, v)
    for it in range(1, REML_MAX_ITER + 1):
        yppy, trp, trpp = _reml_parts(theta, v, tau2)
        step = (yppy - trp) / trpp
        new = tau2 + step
        while new < 0 and abs(step) > REML_TOL:
            step /= 2
            new = tau2 + step
        new = max(new, 0.0)
        if abs(new - tau2) < REML_TOL:
            tau2 = new
            break
        tau2 = new
    else:  # pragma: no cover - Fisher scoring on this concave-in-practice likelihood converges in < 20 steps
        raise ValueError(f"REML estimate of τ² did not converge in {REML_MAX_ITER} iterations")
    _, _, trpp = _reml_parts(theta, v, tau2)
    return tau2, math.sqrt(2 / trpp), it


def tau2_q_profile_ci(theta: np.ndarray, v: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Q-profile CI of τ²: solve Q(τ²) = χ²_{K-1, 1-(1-level)/2} (lower) and χ²_{K-1, (1-level)/2} (upper)."""
    k = theta.size
    crit_low = float(stats.chi2.ppf(1 - (1 - level) / 2, k - 1))
    crit_high = float(stats.chi2.ppf((1 - level) / 2, k - 1))
    q0 = generalised_q(theta, v, 0.0)

    def solve(crit: float) -> float:
        if q0 <= crit:
            return 0.0
        hi = max(1.0, 10 * float(np.var(theta, ddof=1)))
        while generalised_q(theta, v, hi) > crit:
            hi *= 10
        return float(optimize.brentq(lambda t: generalised_q(theta, v, t) - crit, 0.0, hi, xtol=1e-12, rtol=1e-12))

    return solve(crit_low), solve(crit_high)


def typical_within_variance(v: np.ndarray) -> float:
    """s² = (K-1)Σw / ((Σw)² - Σw²), w = 1/v (Higgins & Thompson 2002)."""
    w = 1 / v
    return float((v.size - 1) * np.sum(w) / (np.sum(w) ** 2 - np.sum(w**2)))


def random_effects(
    estimates: Sequence[float],
    ses: Sequence[float],
    scale: str = "identity",
    level: float = 0.95,
    method: str = "REML",
    adjusted: Sequence[str] = (),
) -> RandomEffects:
    """Pooled estimate with HKSJ CI, τ² (REML or DL) with its Q-profile CI, Q, I² with CI and prediction interval.

    Inputs and outputs on the natural scale; ``adjusted`` names sites whose estimate was continuity-corrected
    (carried into the result so the report can say so).
    """
    theta0 = np.asarray(estimates, dtype=float)
    se0 = np.asarray(ses, dtype=float)
    if theta0.ndim != 1 or theta0.size == 0 or theta0.shape != se0.shape:
        raise ValueError(f"need one SE per estimate and at least one site, got {theta0.size} estimates and {se0.size} SEs")
    if not (np.all(np.isfinite(theta0)) and np.all(np.isfinite(se0)) and np.all(se0 > 0)):
        raise ValueError(f"estimates must be finite and SEs positive, got {theta0.tolist()} / {se0.tolist()}")
    if method not in ("REML", "DL"):
        raise ValueError(f"unknown τ² estimator {method!r}; expected REML or DL")
    theta, se = _to_scale(theta0, se0, scale)
    v = se**2
    k = theta.size
    fe, _ = _weighted_mean(theta, v, 0.0)
    if k == 1:
        z = float(stats.norm.ppf(0.5 + level / 2))
        t, s = float(theta[0]), float(se[0])
        return RandomEffects(_back(t, scale), _back(t - z * s, scale), _back(t + z * s, scale), None, None, None, 1,
                             None, None, scale, _back(fe, scale),
                             "one site: no heterogeneity estimate, no prediction interval", method=method,
                             ci_method="z", se=s, df=None, adjusted=list(adjusted))
    q = generalised_q(theta, v, 0.0)
    tau2 = tau2_reml(theta, v)[0] if method == "REML" else tau2_dersimonian_laird(theta, v)
    mu, w = _weighted_mean(theta, v, tau2)
    se_hk = math.sqrt(float(np.sum(w * (theta - mu) ** 2)) / (k - 1) / float(np.sum(w)))
    df = k - 1
    tq = float(stats.t.ppf(0.5 + level / 2, df))
    s2 = typical_within_variance(v)
    t2_lo, t2_hi = tau2_q_profile_ci(theta, v, level)
    if k >= 3:
        half = tq * math.sqrt(tau2 + se_hk**2)
        pi_lo, pi_hi, note = _back(mu - half, scale), _back(mu + half, scale), ""
    else:
        pi_lo = pi_hi = None
        note = ("two sites: no prediction interval (τ² from two sites is too uncertain; at least 3 held-out sites "
                "are needed); the CI uses t with 1 df")
    if se_hk == 0:  # all sites identical: the HKSJ interval collapses; say so instead of printing a zero width
        note = (note + "; " if note else "") + "all site estimates equal: HKSJ CI has zero width"
    return RandomEffects(
        _back(mu, scale), _back(mu - tq * se_hk, scale), _back(mu + tq * se_hk, scale), tau2, q, tau2 / (tau2 + s2), k,
        pi_lo, pi_hi, scale, _back(fe, scale), note, method=method, ci_method="HKSJ", se=se_hk, df=df,
        tau2_ci_low=t2_lo, tau2_ci_high=t2_hi, i2_ci_low=t2_lo / (t2_lo + s2), i2_ci_high=t2_hi / (t2_hi + s2),
        adjusted=list(adjusted),
    )
