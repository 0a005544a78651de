"""Small-cell control: no bin, count or cell computed from 1..k-1 patients leaves a site.

Conventions of every site aggregate (see the other modules of this package):

* ``n`` and keys starting with ``n_`` are patient counts (scalars or arrays);
* with ``edges``: ``bin_n_*`` are per-bin patient counts and ``bin_sum_*`` per-bin sums over those patients;
* with ``thresholds``: ``n_tp/n_fp/n_fn/n_tn`` are cumulative counts at each threshold;
* anything else (``sum_*``, ``grad``, ``info``, ``nll`` …) is a sum over all ``n`` patients of the aggregate.

Rules, applied in order:

1. **Histograms are merged, not dropped.** Adjacent bins are merged greedily from the left until, in every
   ``bin_n_*`` row, each merged bin holds 0 or >= k patients (a leftover tail is merged into its left
   neighbour). The merged edges are a subset of the original ones, so the result is an ordinary, coarser
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
    """Groups of adjacent columns of ``counts`` (rows × bins) whose row sums are each 0 or >= k.

    Returns None when impossible (a row's total is in 1..k-1).
    """
    counts = np.asarray(counts)
    if not _ok(counts.sum(axis=1), k):
        return None
    groups: list[list[int]] = []
    cur: list[int] = []
    acc = np.zeros(counts.shape[0], dtype=counts.dtype)
    for b in range(counts.shape[1]):
        cur.append(b)
        acc = acc + counts[:, b]
        if _ok(acc, k):
            groups.append(cur)
            cur, acc = [], np.zeros_like(acc)
    if cur:
        while groups and not _ok(acc, k):
            prev = groups.pop()
            acc = acc + counts[:, prev].sum(axis=1)
            cur = prev + cur
        groups.append(cur)
    return groups


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


def _merge_thresholds(agg: Aggregate, k: int) -> Aggregate | None:
    t = np.asarray(agg["thresholds"], dtype=float)
    tp, fp = np.asarray(agg["n_tp"]), np.asarray(agg["n_fp"])
    fn, tn = np.asarray(agg["n_fn"]), np.asarray(agg["n_tn"])
    # interval 0: below t_0; interval j: [t_{j-1}, t_j); interval T: >= t_{T-1}
    pos = np.concatenate([[fn[0]], tp[:-1] - tp[1:], [tp[-1]]])
    neg = np.concatenate([[tn[0]], fp[:-1] - fp[1:], [fp[-1]]])
    groups = merge_groups(np.stack([pos, neg]), k)
    if groups is None:
        return None
    keep = np.array([g[-1] for g in groups[:-1]], dtype=np.int64)  # boundary after interval j is t_j
    if keep.size == 0:
        return None
    agg["thresholds"] = t[keep]
    for key in ("n_tp", "n_fp", "n_fn", "n_tn"):
        agg[key] = np.asarray(agg[key])[keep]
    return agg


def suppress_small_cells(aggregate: Aggregate, k: int) -> Aggregate:
    """Return a copy of ``aggregate`` in which no count cell is in 1..k-1 (rules in the module docstring).

    Adds ``suppressed`` (0 or 1) and ``k``. ``k = 1`` changes nothing.
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
        agg = _merge_thresholds(agg, k)
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
