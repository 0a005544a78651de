"""Small-cell control: no bin, count or cell computed from 1..k-1 patients leaves a site.

Conventions of every site aggregate (see the other modules of this package):

* ``n`` and keys starting with ``n_`` are patient counts (scalars or arrays);
* with ``edges``: ``bin_n_*`` are per-bin patient counts and ``bin_sum_*`` per-bin sums over those patients;
* with ``thresholds``: ``n_tp/n_fp/n_fn/n_tn`` are cumulative counts at each threshold;
* anything else (``sum_*``, ``grad``, ``info``, ``nll`` …) is a sum over all ``n`` patients of the aggregate.

Rules, applied in order:

1. **Histograms are merged, not dropped.** Adjacent bins are grouped so that in every ``bin_n_*`` row each
   merged bin holds 0 or >= k patients, choosing among all such groupings the one that keeps the fewest
   patient pairs of different classes in one bin (:func:`merge_groups`, dynamic programming: never worse than
   any other grouping; the earlier greedy rule biased the pooled AUC towards 0.5). Sites merge independently, so their edges differ: the coordinator's
   ``auc_from_site_histograms`` and ``quantile_from_site_histograms`` work on each site's own edges. The merged edges are a subset of the original ones, so the result is an ordinary, coarser
   histogram: the AUC/DeLong formulas hold unchanged on the merged edges, ties are only counted within
   wider bins, and the binning bound ½·ΣH⁺H⁻/(n⁺n⁻) the coordinator reports from the merged counts grows
   accordingly. Conformal upper edges only move up (more conservative); ECE is that of the merged bins.
2. **Threshold grids are histograms in disguise**: TP(t_j) - TP(t_{j+1}) counts the positives between two
   thresholds. The grid is converted to interval counts, merged as in 1, and only thresholds on merged
   boundaries are kept (a dropped threshold is absent, never estimated).
3. **Everything else is all-or-nothing**: if any remaining count cell is in 1..k-1 the whole aggregate is
   replaced by ``{"suppressed": 1, "k": k}``, so a suppressed cell cannot be recovered from its complement
   (e.g. FN = events - TP). Zero is allowed: zero is not a patient.

Out of scope (documented for users): differencing between *different* aggregates or rounds from the same
patients (e.g. exact conformal bisection, which converges on one patient's score).
"""

from __future__ import annotations

import numpy as np

Aggregate = dict[str, "np.ndarray | float | int"]


def _ok(counts: np.ndarray, k: int) -> bool:
    return bool(np.all((counts == 0) | (counts >= k)))


def merge_groups(counts: np.ndarray, k: int) -> list[list[int]] | None:
    """Optimal groups of adjacent columns of ``counts`` (rows × bins) whose row sums are each 0 or >= k.

    Dynamic programming over the last group boundary: with f(0) = 0 and f(j) = min over valid groups [i, j) of
    f(i) + cost(i, j), the partition minimises, lexicographically,

    1. the within-group pairs of patients from different rows, Σ_g Σ_{r<s} C_r(g)·C_s(g) — for the class
       histograms that is Σ_g H⁺(g)H⁻(g), the numerator of the AUC binning bound (pairs the merged histogram
       can no longer order), and for a threshold grid the pairs a merged threshold can no longer separate;
    2. then Σ_g n(g)² (finer groups: the single-row conformal histograms, where 1 is always 0);
    3. then the most groups (empty bins stay apart, keeping edges fine for conformal quantiles and ROC);
       remaining ties go to the earliest boundary, so the answer is deterministic.

    The minimum is over *all* partitions into valid adjacent groups, so it is never worse than any other merge
    (e.g. the earlier greedy smallest-offender rule). O(B²·rows). Returns None when impossible (a row's total
    is in 1..k-1).
    """
    counts = np.asarray(counts, dtype=np.int64)
    if counts.ndim != 2:
        raise ValueError(f"counts must be rows × bins, got shape {counts.shape}")
    if not _ok(counts.sum(axis=1), k):
        return None
    nbins = counts.shape[1]
    prefix = np.concatenate([np.zeros((counts.shape[0], 1), dtype=np.int64), np.cumsum(counts, axis=1)], axis=1)
    best = np.full((nbins + 1, 3), np.inf)  # (cross pairs, Σn², -groups) of the best partition of bins [0, j)
    best[0] = 0.0
    back = np.zeros(nbins + 1, dtype=np.int64)
    for j in range(1, nbins + 1):
        group = prefix[:, j : j + 1] - prefix[:, :j]  # rows × (candidate starts i = 0..j-1)
        valid = np.all((group == 0) | (group >= k), axis=0) & np.isfinite(best[:j, 0])
        total = group.sum(axis=0)
        cand = best[:j] + np.stack([(total * total - np.sum(group * group, axis=0)) // 2, total * total,
                                    -np.ones(j)], axis=1)
        idx = np.flatnonzero(valid)
        if idx.size:
            order = np.lexsort((idx, cand[idx, 2], cand[idx, 1], cand[idx, 0]))  # last key primary
            back[j] = idx[order[0]]
            best[j] = cand[back[j]]
    if not np.isfinite(best[nbins, 0]):  # impossible when the totals are valid (one all-bins group is valid)
        raise AssertionError("no valid partition although every row total is 0 or >= k")
    groups: list[list[int]] = []
    j = nbins
    while j > 0:
        i = int(back[j])
        groups.append(list(range(i, j)))
        j = i
    return groups[::-1]


def _is_count_key(key: str) -> bool:
    return key == "n" or key.startswith("n_") or key.startswith("bin_n_")


def _suppressed(k: int) -> Aggregate:
    return {"suppressed": 1, "k": int(k)}


def _merge_binned(agg: Aggregate, k: int) -> Aggregate | None:
    edges = np.asarray(agg["edges"], dtype=float)
    count_keys = sorted(key for key in agg if key.startswith("bin_n_"))
    sum_keys = sorted(key for key in agg if key.startswith("bin_sum_"))
    if not count_keys:
        raise ValueError("an aggregate with 'edges' must hold at least one 'bin_n_*' count array")
    m = np.stack([np.asarray(agg[key]) for key in count_keys])
    groups = merge_groups(m, k)
    if groups is None:
        return None
    starts = [g[0] for g in groups]
    agg["edges"] = np.append(edges[starts], edges[-1])
    for key in count_keys + sum_keys:
        agg[key] = np.add.reduceat(np.asarray(agg[key]), starts)
    return agg


def _segmented_groups(counts: np.ndarray, k: int, cuts: list[int]) -> list[list[int]] | None:
    """merge_groups inside each segment between protected cut positions (a cut c separates column c-1 from c)."""
    bounds = [0] + sorted(set(cuts)) + [counts.shape[1]]
    out: list[list[int]] = []
    for a, b in zip(bounds[:-1], bounds[1:]):
        g = merge_groups(counts[:, a:b], k)
        if g is None:
            return None
        out.extend([[a + i for i in grp] for grp in g])
    return out


def _merge_thresholds(agg: Aggregate, k: int, keep: tuple[float, ...] = ()) -> Aggregate | None:
    t = np.asarray(agg["thresholds"], dtype=float)
    tp, fp = np.asarray(agg["n_tp"]), np.asarray(agg["n_fp"])
    fn, tn = np.asarray(agg["n_fn"]), np.asarray(agg["n_tn"])
    # interval 0: below t_0; interval j: [t_{j-1}, t_j); interval T: >= t_{T-1}
    pos = np.concatenate([[fn[0]], tp[:-1] - tp[1:], [tp[-1]]])
    neg = np.concatenate([[tn[0]], fp[:-1] - fp[1:], [fp[-1]]])
    counts = np.stack([pos, neg])
    cuts = [int(j) + 1 for j in np.flatnonzero(np.isin(np.round(t, 12), np.round(np.asarray(keep, dtype=float), 12)))]
    groups = _segmented_groups(counts, k, cuts) if cuts else None
    if groups is None:  # no protected threshold, or it cannot be kept: merge freely
        groups = merge_groups(counts, k)
    if groups is None:
        return None
    keep_idx = np.array([g[-1] for g in groups[:-1]], dtype=np.int64)  # boundary after interval j is t_j
    if keep_idx.size == 0:
        return None
    agg["thresholds"] = t[keep_idx]
    for key in ("n_tp", "n_fp", "n_fn", "n_tn"):
        agg[key] = np.asarray(agg[key])[keep_idx]
    return agg


def suppress_small_cells(aggregate: Aggregate, k: int, keep_thresholds: tuple[float, ...] | list[float] = ()) -> Aggregate:
    """Return a copy of ``aggregate`` in which no count cell is in 1..k-1 (rules in the module docstring).

    ``keep_thresholds`` (threshold grids only, e.g. the protocol's decision threshold) are never merged away
    when each side can be made safe on its own. Adds ``suppressed`` (0 or 1) and ``k``. ``k = 1`` changes nothing.
    """
    if int(k) != k or k < 1:
        raise ValueError(f"k (privacy.min_cell_count) must be a positive integer, got {k!r}")
    k = int(k)
    if aggregate.get("suppressed", 0):
        return _suppressed(k)
    agg: Aggregate | None = {key: (np.array(v, copy=True) if isinstance(v, np.ndarray) else v) for key, v in aggregate.items()}
    if "edges" in agg:
        agg = _merge_binned(agg, k)
    if agg is not None and "thresholds" in agg:
        agg = _merge_thresholds(agg, k, tuple(keep_thresholds))
    if agg is None:
        return _suppressed(k)
    for key, value in agg.items():
        if _is_count_key(key) and not _ok(np.asarray(value), k):
            return _suppressed(k)
    agg["suppressed"] = 0
    agg["k"] = k
    return agg


def emitted_count_cells(aggregate: Aggregate) -> np.ndarray:
    """Every patient-count cell of an aggregate, flattened (for audits and tests)."""
    cells = [np.ravel(np.asarray(v)) for key, v in aggregate.items() if _is_count_key(key)]
    return np.concatenate(cells) if cells else np.zeros(0, dtype=np.int64)
