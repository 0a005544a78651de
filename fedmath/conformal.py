"""Class-conditional split-conformal prediction sets on the model's raw probability p.

Conformity score of class c: s₀ = p (for the negative class), s₁ = 1 - p (for the positive class). With the
class thresholds q̂₀, q̂₁ (each the ⌈(n_c + 1)(1 - α)⌉-th smallest calibration score of that class) the set of a
case holds class c when s_c <= q̂_c. The thresholds are found, and coverage is measured, on the *raw* p, so the
registered model builds its sets on the raw p too (never on the recalibrated one).

Also the shared maths of the federated thresholds: the FCP rank, and the ε-differentially private quantile
(the noise of the sites' histograms, its exact tail, and the certified rank the coordinator takes from the noisy
counts). Pure numpy/scipy.
"""

from __future__ import annotations

import functools
import math

import numpy as np


def conformity_scores(p: np.ndarray, y: np.ndarray) -> np.ndarray:
    """s = p for a negative case, 1 - p for a positive one."""
    p = np.asarray(p, dtype=np.float64)
    return np.where(np.asarray(y) == 1, 1.0 - p, p)


def prediction_sets(p: np.ndarray, q_neg: float, q_pos: float) -> tuple[np.ndarray, np.ndarray]:
    """Boolean membership of class 0 and class 1 in each case's set: p <= q̂₀, 1 - p <= q̂₁."""
    p = np.asarray(p, dtype=np.float64)
    return p <= q_neg, (1.0 - p) <= q_pos


# ---------------------------------------------------------------------------------------------------------------
# Ranks, and the differentially private (DP) federated quantile
# ---------------------------------------------------------------------------------------------------------------


def fcp_rank(n_scores: int, n_sites: int, alpha: float) -> int:
    """k* = ⌈(1-α)(N + K)⌉, the federated conformal (FCP, Lu et al. 2023) rank among N pooled scores from K sites.

    A 1e-9 guard stops float error such as 0.9·100 = 90.000…01 rounding up.
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if n_sites < 1 or n_scores < 0:
        raise ValueError(f"need >= 1 site and >= 0 scores, got K={n_sites}, N={n_scores}")
    return int(math.ceil((1 - alpha) * (n_scores + n_sites) - 1e-9))


def dp_grid(bins: int) -> np.ndarray:
    """The fixed, public score grid of the DP histogram: ``bins`` equal-width bins on [0, 1] (edges j / bins).

    Fixed by the protocol, never by the data, so the grid itself reveals nothing."""
    if int(bins) < 1:
        raise ValueError(f"the DP conformal grid needs >= 1 bin, got {bins}")
    return np.linspace(0.0, 1.0, int(bins) + 1)


def discrete_laplace_ratio(epsilon: float) -> float:
    """t = exp(-ε/2): the discrete Laplace noise P(Z = z) ∝ t^|z| that makes one score histogram ε-DP.

    Neighbouring calibration sets differ in one patient's score, the class count n fixed (it is released
    exactly, as in the study's other aggregates): one bin loses a patient and another gains one, so the
    histogram's L1 sensitivity is 2 and the geometric mechanism with t = exp(-ε/2) per bin is ε-DP (Ghosh,
    Roughgarden & Sundararajan 2012). The two class histograms hold disjoint patients (parallel composition):
    ε per patient for one model's release."""
    if not epsilon > 0 or not math.isfinite(epsilon):
        raise ValueError(f"epsilon must be a positive finite number, got {epsilon}")
    return math.exp(-epsilon / 2.0)


def discrete_laplace_noise(size: int, epsilon: float, rng: np.random.Generator) -> np.ndarray:
    """``size`` independent discrete Laplace draws with t = exp(-ε/2), as the difference of two geometric counts.

    The caller supplies the generator: at a site it is seeded from ``os.urandom`` (never from the coordinator)."""
    p_success = 1.0 - discrete_laplace_ratio(epsilon)
    return (rng.geometric(p_success, size) - rng.geometric(p_success, size)).astype(np.int64)


def discrete_laplace_sum_pmf(n_terms: int, epsilon: float) -> tuple[np.ndarray, np.ndarray]:
    """(support s, P(S = s)) of the sum S of ``n_terms`` independent discrete Laplace(t = exp(-ε/2)) draws.

    S = A - B with A, B independent negative binomials (n_terms geometric failure counts each, success 1 - t),
    so P(S = s) = Σ_b P(A = s + b) P(B = b): the cross-correlation of two nbinom pmfs (scipy), each cut where
    its upper tail is below 1e-17, computed by FFT."""
    from scipy.signal import fftconvolve
    from scipy.stats import nbinom

    if n_terms == 0:
        return np.array([0]), np.array([1.0])
    p_success = 1.0 - discrete_laplace_ratio(epsilon)
    top = int(nbinom.isf(1e-17, n_terms, p_success)) + 1
    pmf = nbinom.pmf(np.arange(top + 1), n_terms, p_success)
    total = np.clip(fftconvolve(pmf, pmf[::-1]), 0.0, None)  # index i ↔ s = i - top
    return np.arange(-top, top + 1), total


def discrete_laplace_sum_exceedance(n_terms: int, epsilon: float, m: np.ndarray) -> np.ndarray:
    """P(S >= m) for S the sum of ``n_terms`` discrete Laplace draws (:func:`discrete_laplace_sum_pmf`)."""
    support, pmf = discrete_laplace_sum_pmf(n_terms, epsilon)
    upper = np.concatenate([np.cumsum(pmf[::-1])[::-1], [0.0]])  # upper[i] = P(S >= support[i])
    idx = np.clip(np.atleast_1d(np.asarray(m, dtype=np.int64)) - support[0], 0, support.size)
    return upper[idx]


@functools.lru_cache(maxsize=4096)
def discrete_laplace_sum_margin(n_terms: int, epsilon: float, tail: float) -> int:
    """Smallest integer m >= 0 with P(S > m) <= ``tail`` for S the sum of ``n_terms`` discrete Laplace draws.

    By symmetry P(S < -m) <= ``tail`` as well: a noisy count minus m is below the true count except with
    probability ``tail``."""
    if not 0 < tail < 1:
        raise ValueError(f"tail probability must be in (0, 1), got {tail}")
    support, pmf = discrete_laplace_sum_pmf(n_terms, epsilon)
    above = np.concatenate([np.cumsum(pmf[::-1])[::-1][1:], [0.0]])  # above[i] = P(S > support[i])
    ok = np.flatnonzero((above <= tail) & (support >= 0))
    return int(support[ok[0]])


def dp_threshold(noisy_bins: np.ndarray, n_scores: int, alpha: float, epsilon: float, delta: float) -> tuple[float, dict]:
    """Conformal threshold of one class from the sites' noisy score histograms on :func:`dp_grid`.

    ``noisy_bins`` is K × G (site × bin: true count + discrete Laplace noise), ``n_scores`` the exact pooled
    class count N. The rank is k* = :func:`fcp_rank` (N, K, α - δ). At each inner edge e_j a *certified* count
    of the scores below it:

        L_j = N - Σ_{b >= j} H̃_b - m(K (G - j))   (tail form, when G - j <= j)
        L_j = Σ_{b < j} H̃_b - m(K j)              (head form, otherwise)

    with m(n) the (1 - δ) quantile of the sum of n noise draws (:func:`discrete_laplace_sum_margin`; the form
    is chosen by j alone, never by the data), so P(L_j > C_j) <= δ for the true count C_j = #{s < e_j}.
    The scan starts at the top (e_G = 1 holds every score) and walks down while L_j >= k*; the threshold is the
    last edge passed. C_j grows with j, so the edges with C_j < k* are exactly those below some j₀, and the scan
    can only end below j₀ by passing e_{j₀-1}: the threshold falls short of the exact FCP threshold at α - δ
    only if L_{j₀-1} >= k* > C_{j₀-1}, probability <= δ (one edge, no union bound). With the FCP guarantee at
    α - δ, marginal coverage (over calibration, test case and noise) is >= 1 - α + δ - δ = 1 - α.
    A scan that cannot leave e_G, and k* > N, give 1.0 (the class is in every set).

    Returns (q̂, info) with the rank, N, K and the margin of the chosen edge.
    """
    h = np.atleast_2d(np.asarray(noisy_bins, dtype=np.int64))
    n_sites, g = h.shape
    if not 0 < delta < alpha:
        raise ValueError(f"delta must be in (0, alpha) = (0, {alpha}), got {delta}")
    edges = dp_grid(g)
    k_star = fcp_rank(int(n_scores), max(n_sites, 1), alpha - delta)
    info = {"n": int(n_scores), "k": k_star, "sites": n_sites, "margin": 0}
    if n_sites == 0 or k_star > n_scores:
        return 1.0, info
    pooled = h.sum(axis=0)
    head = np.concatenate([[0], np.cumsum(pooled)])          # head[j] = Σ_{b<j} H̃_b
    tail = head[-1] - head                                     # tail[j] = Σ_{b>=j} H̃_b
    chosen = g
    for j in range(g - 1, 0, -1):
        m = discrete_laplace_sum_margin(n_sites * min(j, g - j), epsilon, delta)
        certified = (n_scores - tail[j] if g - j <= j else head[j]) - m
        if certified < k_star:
            break
        chosen, info["margin"] = j, m
    return float(edges[chosen]), info
