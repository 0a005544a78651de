"""Optimal k-merging of histograms: equal to brute force over all partitions, never worse than the greedy rule,
and the pooled AUC from merged histograms within its stated binning bound of the exact pooled AUC."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from coordinator.validation import auc_from_site_histograms
from site_client.evaluation import class_histograms, merge_groups, suppress_small_cells


def valid(groups, counts, k):
    return all(np.all((counts[:, g].sum(axis=1) == 0) | (counts[:, g].sum(axis=1) >= k)) for g in groups)


def cross_pairs(groups, counts):
    total = 0
    for g in groups:
        c = counts[:, g].sum(axis=1)
        total += (int(c.sum()) ** 2 - int(np.sum(c * c))) // 2
    return total


def brute_force_min(counts, k):
    """Minimum within-group cross-row pairs over every partition of the bins into adjacent groups."""
    nbins = counts.shape[1]
    best = None
    for cuts in itertools.product([0, 1], repeat=nbins - 1):
        groups, cur = [], [0]
        for b, cut in zip(range(1, nbins), cuts):
            if cut:
                groups.append(cur)
                cur = [b]
            else:
                cur.append(b)
        groups.append(cur)
        if valid(groups, counts, k):
            c = cross_pairs(groups, counts)
            best = c if best is None else min(best, c)
    return best


def greedy_groups(counts, k):
    """The previous rule (reference only): merge the smallest offending group into its smaller non-empty neighbour."""
    groups = [[b] for b in range(counts.shape[1])]
    sums = [counts[:, b].copy() for b in range(counts.shape[1])]
    while True:
        bad = [i for i, s in enumerate(sums) if not np.all((s == 0) | (s >= k))]
        if not bad:
            return groups
        i = min(bad, key=lambda j: (int(sums[j].sum()), j))
        left = next((j for j in range(i - 1, -1, -1) if sums[j].sum() > 0), None)
        right = next((j for j in range(i + 1, len(sums)) if sums[j].sum() > 0), None)
        j = right if left is None else left if right is None else (left if sums[left].sum() <= sums[right].sum() else right)
        lo, hi = min(i, j), max(i, j)
        groups[lo:hi + 1] = [[b for g in groups[lo:hi + 1] for b in g]]
        sums[lo:hi + 1] = [np.sum(sums[lo:hi + 1], axis=0)]


@pytest.mark.parametrize("seed", range(60))
def test_dp_equals_brute_force_and_beats_greedy(seed):
    rng = np.random.default_rng(seed)
    nbins, k = int(rng.integers(2, 11)), int(rng.integers(2, 6))
    counts = rng.poisson(rng.uniform(0.3, 3.0), size=(2, nbins)).astype(np.int64)
    for r in range(2):  # make the totals valid (0 or >= k)
        if 0 < counts[r].sum() < k:
            counts[r, rng.integers(nbins)] += k
    groups = merge_groups(counts, k)
    assert [b for g in groups for b in g] == list(range(nbins))  # a partition into adjacent groups
    assert valid(groups, counts, k)
    assert cross_pairs(groups, counts) == brute_force_min(counts, k)
    assert cross_pairs(groups, counts) <= cross_pairs(greedy_groups(counts, k), counts)


def test_impossible_totals_return_none():
    assert merge_groups(np.array([[1, 2, 0], [5, 0, 0]]), 5) is None


def test_optimal_merge_strictly_beats_greedy_on_a_known_case():
    # negatives 3,0,3,0 and positives 0,2,0,3 at k = 3: greedy ends with one bin (6 x 5 = 30 tied pairs);
    # the best valid grouping is [0], [1, 2, 3] (3 x 5 = 15), found by hand and by brute force
    counts = np.array([[3, 0, 3, 0], [0, 2, 0, 3]])
    assert merge_groups(counts, 3) == [[0], [1, 2, 3]]
    assert cross_pairs(greedy_groups(counts, 3), counts) == 30 and brute_force_min(counts, 3) == 15


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("k", [2, 5])
def test_pooled_auc_within_binning_bound_of_exact(make_sites, seed, k):
    sites = make_sites(seed, [19, 35, 44, 57], strength=2.5)
    hists = [suppress_small_cells(class_histograms(s.p, s.y, 50), k) for s in sites]
    used = [s for h, s in zip(hists, sites) if not h["suppressed"]]
    hists = [h for h in hists if not h["suppressed"]]
    est = auc_from_site_histograms(hists)
    exact = roc_auc_score(np.concatenate([s.y for s in used]), np.concatenate([s.p for s in used]))
    assert abs(est.auc - exact) <= est.binning_bound + 1e-12


def _pooled_error(make_sites, k, merge):
    import site_client.evaluation.privacy as privacy

    saved, privacy.merge_groups = privacy.merge_groups, merge
    try:
        errs = []
        for seed in range(20):
            sites = make_sites(seed, [19, 35, 44, 57], strength=2.5)
            hists = [suppress_small_cells(class_histograms(s.p, s.y, 50), k) for s in sites]
            keep = [not h["suppressed"] for h in hists]
            used = [s for s, ok in zip(sites, keep) if ok]
            est = auc_from_site_histograms([h for h, ok in zip(hists, keep) if ok])
            exact = roc_auc_score(np.concatenate([s.y for s in used]), np.concatenate([s.p for s in used]))
            errs.append(est.auc - exact)
        return float(np.mean(errs))
    finally:
        privacy.merge_groups = saved


@pytest.mark.parametrize("k, limit", [(2, 0.03), (5, 0.15)])
def test_merging_cuts_the_bias_at_the_issue_sizes(make_sites, k, limit):
    """The issue's sites (19/35/44/57 cases, AUC ~0.9): greedy merging biased the pooled AUC by about -0.15 (k=2)
    and -0.36 (k=5); the optimal merge at most a third of that (measured: -0.01 and -0.11)."""
    optimal = _pooled_error(make_sites, k, merge_groups)
    greedy = _pooled_error(make_sites, k, lambda c, kk: greedy_groups(np.asarray(c), kk)
                           if np.all((np.asarray(c).sum(axis=1) == 0) | (np.asarray(c).sum(axis=1) >= kk)) else None)
    assert abs(optimal) < limit
    assert abs(optimal) < abs(greedy) / 3
