"""Coordinator halves of class-conditional federated conformal prediction (FCP, Lu et al. 2023).

Per class y with N_y calibration scores over K training sites: q̂_y = the k*-th smallest pooled score,
k* = ⌈(1-α)(N_y + K)⌉. Marginal coverage >= 1-α holds for a test case drawn from the *participating* sites
(exchangeable within site). It gives NO guarantee at a new, unseen site: that is why every held-out site's
coverage is measured and reported with a Clopper-Pearson CI.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from fedmath.conformal import dp_threshold, fcp_rank  # noqa: F401  (fcp_rank re-exported: one home, fedmath)

from coordinator.validation.classification import _prop
from coordinator.validation.intervals import clopper_pearson_ci
from coordinator.validation.results import ConformalStats, Proportion

Aggregate = dict[str, "np.ndarray | float | int"]


def quantile_from_histogram(edges: object, counts: object, k_star: int) -> float:
    """Upper edge of the first bin where the cumulative count reaches k* (>= the exact order statistic).

    Returns 1.0 (every class always included: scores never exceed 1) when k* exceeds the number of scores.
    """
    e = np.asarray(edges, dtype=float)
    c = np.cumsum(np.asarray(counts))
    if k_star > c[-1]:
        return 1.0
    b = int(np.searchsorted(c, k_star, side="left"))
    return float(e[b + 1])


def thresholds_from_histograms(
    neg: Aggregate, pos: Aggregate | int, n_sites: int | float, alpha: float | None = None
) -> tuple[float, float, dict[str, int]]:
    """(q̂_neg, q̂_pos) plus the ranks and counts used, from combined calibration-score histograms.

    Call as ``(neg, pos, n_sites, alpha)`` with one ``conformal_histogram`` aggregate per class, or as
    ``(joint, n_sites, alpha)`` with a ``conformal_histograms`` aggregate (``bin_n_neg`` / ``bin_n_pos``).
    """
    if alpha is None:  # joint form
        joint, n_sites, alpha = neg, int(pos), float(n_sites)  # type: ignore[arg-type]
        e, h_neg, h_pos = joint["edges"], joint["bin_n_neg"], joint["bin_n_pos"]
        e_neg = e_pos = e
    else:
        e_neg, h_neg = neg["edges"], neg["bin_n_scores"]
        e_pos, h_pos = pos["edges"], pos["bin_n_scores"]  # type: ignore[index]
    n_neg, n_pos = int(np.sum(h_neg)), int(np.sum(h_pos))
    k_neg, k_pos = fcp_rank(n_neg, int(n_sites), alpha), fcp_rank(n_pos, int(n_sites), alpha)
    q_neg = quantile_from_histogram(e_neg, h_neg, k_neg)
    q_pos = quantile_from_histogram(e_pos, h_pos, k_pos)
    return q_neg, q_pos, {"n_neg": n_neg, "n_pos": n_pos, "k_neg": k_neg, "k_pos": k_pos}


def quantile_from_site_histograms(site_aggs: Sequence[Aggregate], k_star: int) -> float:
    """Conservative pooled k*-th smallest score from per-site histograms whose bins were merged differently.

    At a candidate t (any site's edge), a site surely has at least C_site(t) = its count in bins whose upper
    edge is <= t scores <= t. The pooled lower bound L(t) = Σ C_site(t) is monotone; q̂ = the smallest
    candidate with L(t) >= k* satisfies #{s <= q̂} >= k*, so q̂ >= the exact order statistic. Unlike pooling
    on the common edges, no site's fine bins are thrown away. Returns 1.0 when k* exceeds the total count.
    """
    total = sum(int(np.sum(a["bin_n_scores"])) for a in site_aggs)
    if not site_aggs or k_star > total:
        return 1.0
    candidates = np.unique(np.concatenate([np.asarray(a["edges"], dtype=float)[1:] for a in site_aggs]))
    lower = np.zeros(candidates.size)
    for a in site_aggs:
        upper = np.asarray(a["edges"], dtype=float)[1:]
        cum = np.cumsum(np.asarray(a["bin_n_scores"]))
        # number of this site's bins whose upper edge <= t, for each candidate t
        idx = np.searchsorted(upper, candidates + 1e-12, side="right")
        lower += np.where(idx > 0, cum[np.maximum(idx - 1, 0)], 0)
    hit = np.flatnonzero(lower >= k_star)
    return float(candidates[hit[0]]) if hit.size else 1.0


def thresholds_from_site_histograms(
    neg_aggs: Sequence[Aggregate], pos_aggs: Sequence[Aggregate], alpha: float
) -> tuple[float, float, dict[str, int]]:
    """(q̂_neg, q̂_pos) from each training site's per-class ``conformal_histogram`` (K = number of sites).

    Preferred over :func:`thresholds_from_histograms` once small-cell merging has made sites' edges differ.
    A class with no histogram at all (every site had fewer than k such cases) gets q̂ = 1: without calibration
    scores the only valid threshold always includes the class (the FCP rank exceeds the count).
    """
    for aggs in (neg_aggs, pos_aggs):
        for j, a in enumerate(aggs):
            if a.get("suppressed", 0):
                raise ValueError(f"site #{j}: calibration-score histogram suppressed (fewer than k cases of a class)")
    n_neg = sum(int(np.sum(a["bin_n_scores"])) for a in neg_aggs)
    n_pos = sum(int(np.sum(a["bin_n_scores"])) for a in pos_aggs)
    k_neg = fcp_rank(n_neg, len(neg_aggs), alpha) if neg_aggs else 1
    k_pos = fcp_rank(n_pos, len(pos_aggs), alpha) if pos_aggs else 1
    return (quantile_from_site_histograms(neg_aggs, k_neg), quantile_from_site_histograms(pos_aggs, k_pos),
            {"n_neg": n_neg, "n_pos": n_pos, "k_neg": k_neg, "k_pos": k_pos})


def thresholds_from_dp_histograms(
    neg_aggs: Sequence[Aggregate], pos_aggs: Sequence[Aggregate], alpha: float, epsilon: float, delta: float
) -> tuple[float, float, dict[str, int]]:
    """(q̂_neg, q̂_pos) from each training site's per-class ``dp_conformal_histogram`` (noisy counts, exact n).

    Per class :func:`fedmath.conformal.dp_threshold` over the sites that sent that class (K = their number):
    with probability >= 1 - δ over the noise the threshold is at least the exact FCP threshold at α - δ, so
    coverage is >= 1 - α. A class no site sent gets q̂ = 1 (always in the set). Every site must use the same
    grid (the protocol's): a site whose histogram has another length is an error, not silently re-binned.
    """
    out: dict[str, int] = {}
    q = []
    for name, aggs in (("neg", neg_aggs), ("pos", pos_aggs)):
        lengths = {int(np.size(a["bin_n_noisy"])) for a in aggs}
        if len(lengths) > 1:
            raise ValueError(f"DP conformal {name} histograms have different lengths {sorted(lengths)}: sites used different grids")
        if aggs:
            noisy = np.array([np.asarray(a["bin_n_noisy"], dtype=np.int64) for a in aggs])
            n = sum(int(a["n"]) for a in aggs)
            q_c, info = dp_threshold(noisy, n, alpha, epsilon, delta)
        else:
            n, q_c, info = 0, 1.0, {"k": 1, "margin": 0}
        q.append(q_c)
        out.update({f"n_{name}": n, f"k_{name}": int(info["k"]), f"margin_{name}": int(info["margin"])})
    return q[0], q[1], out


def protocol_thresholds(
    validation: object, neg_aggs: Sequence[Aggregate], pos_aggs: Sequence[Aggregate]
) -> tuple[float, float, dict[str, int]]:
    """The thresholds by the protocol's ``validation.conformal_method``: k-merged histograms
    (:func:`thresholds_from_site_histograms`) or the ε-DP histograms (:func:`thresholds_from_dp_histograms`
    with the protocol's ε and δ). ``info`` says which (``method``)."""
    v = validation
    if v.conformal_method == "dp_quantile":
        q_neg, q_pos, info = thresholds_from_dp_histograms(neg_aggs, pos_aggs, v.conformal_alpha,
                                                           v.conformal_epsilon, v.conformal_delta)
    else:
        q_neg, q_pos, info = thresholds_from_site_histograms(neg_aggs, pos_aggs, v.conformal_alpha)
    return q_neg, q_pos, {**info, "method": v.conformal_method}


def bisect_quantile(count_at_most: Callable[[float], int], k_star: int, n_total: int, max_rounds: int = 64) -> float:
    """Smallest t in [0, 1] with #{s <= t} >= k* by bisection (one federated round per call).

    Invariant: count(lo) < k* <= count(hi); stops when lo and hi are adjacent floats (then hi equals the pooled
    k*-th smallest score exactly) or after ``max_rounds`` (then hi is an upper bound: conservative).
    """
    if k_star > n_total:
        return 1.0
    if count_at_most(0.0) >= k_star:
        return 0.0
    lo, hi = 0.0, 1.0
    for _ in range(max_rounds):
        mid = 0.5 * (lo + hi)
        if mid <= lo or mid >= hi:
            break
        if count_at_most(mid) >= k_star:
            hi = mid
        else:
            lo = mid
    return hi


def bisect_class_quantiles(
    evaluate: Callable[[float, float], Sequence[Aggregate]], n_sites: int, alpha: float, max_rounds: int = 64
) -> tuple[float, float]:
    """Exact (q̂_neg, q̂_pos) using sites' ``conformal_counts_at_most`` (both classes bisected per call)."""
    first = evaluate(0.0, 0.0)
    n_neg = sum(int(a["n_class_neg"]) for a in first)
    n_pos = sum(int(a["n_class_pos"]) for a in first)
    k_neg, k_pos = fcp_rank(n_neg, n_sites, alpha), fcp_rank(n_pos, n_sites, alpha)
    q_neg = bisect_quantile(lambda t: sum(int(a["n_at_most_neg"]) for a in evaluate(t, 0.0)), k_neg, n_neg, max_rounds)
    q_pos = bisect_quantile(lambda t: sum(int(a["n_at_most_pos"]) for a in evaluate(0.0, t)), k_pos, n_pos, max_rounds)
    return q_neg, q_pos


CENSORED = "clopper-pearson, censored"  # method prefix; the suffix says which bound the value is
AT_LEAST, AT_MOST = f"{CENSORED}: at least", f"{CENSORED}: at most"


def censored_direction(method: str) -> int:
    """+1: the value is a lower bound ("<k missed"), -1: an upper bound ("<k covered"), 0: exact."""
    return {AT_LEAST: 1, AT_MOST: -1}.get(method, 0)


def censored_proportion(coverage: Aggregate) -> tuple[Proportion, str]:
    """Coverage released as "<k missed" (or "<k covered"): the estimate is the bound on the safe side
    ((n-k+1)/n, resp. (k-1)/n), the 95% CI spans the Clopper-Pearson intervals of every count the site could
    have had (x in n-k+1..n-1, resp. 1..k-1). ``method`` is :data:`AT_LEAST` or :data:`AT_MOST`."""
    n, k = int(coverage["n"]), int(coverage["k"])
    if coverage.get("missed_below_k", 0):
        low_x, high_x, value_x, method = n - k + 1, n - 1, n - k + 1, AT_LEAST
        note = f"coverage censored at the site: fewer than k = {k} of {n} missed, coverage at least {value_x / n:.3f}"
    else:
        low_x, high_x, value_x, method = 1, k - 1, k - 1, AT_MOST
        note = f"coverage censored at the site: fewer than k = {k} of {n} covered, coverage at most {value_x / n:.3f}"
    lo, hi = clopper_pearson_ci(low_x, n)[0], clopper_pearson_ci(high_x, n)[1]
    return Proportion(value_x / n, lo, hi, value_x, n, method), note


def conformal_stats(
    alpha: float, q_neg: float, q_pos: float, coverage: Aggregate | None, sizes: Aggregate | None
) -> ConformalStats:
    """Coverage (Clopper-Pearson 95% CI) overall and per class, mean set size and set-type rates.

    Either aggregate may be suppressed (small cells) or None: those fields are None and ``note`` says why.
    """
    notes = []
    cov = cov_neg = cov_pos = None
    cp = "clopper-pearson"
    if coverage is None or coverage.get("suppressed", 0):
        notes.append("coverage counts suppressed (a cell had fewer than k patients)" if coverage else "no coverage counts")
    elif coverage.get("censored", 0):
        cov, note = censored_proportion(coverage)
        notes.append(note)
    else:
        cov = _prop(int(coverage["n_covered"]), int(coverage["n"]), cp)
        if "n_neg_covered" in coverage:
            cov_neg = _prop(int(coverage["n_neg_covered"]), int(coverage["n_neg"]), cp)
            cov_pos = _prop(int(coverage["n_pos_covered"]), int(coverage["n_pos"]), cp)
        else:
            notes.append("per-class coverage withheld by the site (a per-class cell had fewer than k patients)")
    mean = empty = single = both = None
    if sizes is None or sizes.get("suppressed", 0):
        notes.append("set-size counts suppressed (a cell had fewer than k patients)" if sizes else "no set-size counts")
    else:
        n = int(sizes["n"])
        n1 = int(sizes["n_single"]) if "n_single" in sizes else int(sizes["n_single_neg"]) + int(sizes["n_single_pos"])
        mean = (n1 + 2 * int(sizes["n_both"])) / n
        empty, single, both = int(sizes["n_empty"]) / n, n1 / n, int(sizes["n_both"]) / n
    return ConformalStats(alpha, q_neg, q_pos, cov, cov_neg, cov_pos, mean, empty, single, both, "; ".join(notes))
