"""DerSimonian-Laird random-effects meta-analysis across held-out sites, with a 95% prediction interval.

w_k = 1/SE_k²; θ_FE = Σwθ/Σw; Q = Σw(θ-θ_FE)²; τ² = max(0, (Q-(K-1))/(Σw - Σw²/Σw)); w*_k = 1/(SE_k² + τ²);
θ_RE = Σw*θ/Σw*; SE_RE = (Σw*)^-½; CI = θ_RE ± z·SE_RE; PI = θ_RE ± t_{K-2, 0.975}·√(τ² + SE_RE²).

K = 1: the site's own estimate and CI, no τ², no PI. K = 2: τ², CI, but no PI (t with 0 df is undefined) —
the ``note`` says so. Pooling happens on ``scale``: 'logit' (AUC, coverage), 'log' (O/E), 'identity'
(slope, net benefit); SEs are moved to that scale by the delta method and results back-transformed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats

from coordinator.validation.results import RandomEffects


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


def random_effects(
    estimates: Sequence[float], ses: Sequence[float], scale: str = "identity", level: float = 0.95
) -> RandomEffects:
    """DerSimonian-Laird pooled estimate, CI, τ², Q, I² and prediction interval (natural-scale inputs/outputs)."""
    theta0 = np.asarray(estimates, dtype=float)
    se0 = np.asarray(ses, dtype=float)
    if theta0.ndim != 1 or theta0.size == 0 or theta0.shape != se0.shape:
        raise ValueError(f"need one SE per estimate and at least one site, got {theta0.size} estimates and {se0.size} SEs")
    if not (np.all(np.isfinite(theta0)) and np.all(np.isfinite(se0)) and np.all(se0 > 0)):
        raise ValueError(f"estimates must be finite and SEs positive, got {theta0.tolist()} / {se0.tolist()}")
    theta, se = _to_scale(theta0, se0, scale)
    k = theta.size
    z = float(stats.norm.ppf(0.5 + level / 2))
    w = 1 / se**2
    fe = float(np.sum(w * theta) / np.sum(w))
    if k == 1:
        t, s = float(theta[0]), float(se[0])
        return RandomEffects(_back(t, scale), _back(t - z * s, scale), _back(t + z * s, scale), None, None, None, 1,
                             None, None, scale, _back(fe, scale), "one site: no heterogeneity estimate, no prediction interval")
    q = float(np.sum(w * (theta - fe) ** 2))
    c = float(np.sum(w) - np.sum(w**2) / np.sum(w))
    tau2 = max(0.0, (q - (k - 1)) / c) if c > 0 else 0.0
    ws = 1 / (se**2 + tau2)
    re = float(np.sum(ws * theta) / np.sum(ws))
    se_re = float(np.sum(ws) ** -0.5)
    i2 = max(0.0, (q - (k - 1)) / q) if q > 0 else 0.0
    if k >= 3:
        tq = float(stats.t.ppf(0.5 + level / 2, k - 2))
        half = tq * math.sqrt(tau2 + se_re**2)
        pi_lo, pi_hi, note = _back(re - half, scale), _back(re + half, scale), ""
    else:
        pi_lo = pi_hi = None
        note = "two sites: prediction interval undefined (t with K-2 = 0 df); at least 3 held-out sites are needed"
    return RandomEffects(_back(re, scale), _back(re - z * se_re, scale), _back(re + z * se_re, scale), tau2, q, i2, k,
                         pi_lo, pi_hi, scale, _back(fe, scale), note)
