"""Per-class score histograms and reliability bins on a shared grid (sizes independent of n).

Bins are half-open ``[e_b, e_{b+1})`` with the last bin closed, so a score equal to an upper edge ``e_{b+1}``
(b < B-1) falls in the next bin, and every score in bins ``0..b`` is ``<= e_{b+1}``. The coordinator's conformal
quantile relies on that last property.
"""

from __future__ import annotations

import numpy as np

from site_client.evaluation._checks import as_edges, as_labels, as_probabilities

Aggregate = dict[str, "np.ndarray | float | int"]


def equal_width_edges(n_bins: int) -> np.ndarray:
    """``n_bins`` equal-width bins on [0, 1] (the protocol's histogram_bins / reliability_bins)."""
    if int(n_bins) != n_bins or n_bins < 1:
        raise ValueError(f"number of bins must be a positive integer, got {n_bins!r}")
    return np.linspace(0.0, 1.0, int(n_bins) + 1)


def bin_index(x: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Index b of the bin ``[e_b, e_{b+1})`` holding each x (last bin closed)."""
    idx = np.searchsorted(edges, x, side="right") - 1
    return np.clip(idx, 0, edges.size - 2)


def _edges(edges: np.ndarray | int) -> np.ndarray:
    return equal_width_edges(edges) if np.ndim(edges) == 0 else as_edges(edges)


def class_histograms(p: object, y: object, edges: np.ndarray | int, site: str | None = None) -> Aggregate:
    """Counts of negatives and positives per score bin: the input of federated AUC, DeLong and the ROC curve.

    Returns ``edges`` (B+1), ``bin_n_neg`` and ``bin_n_pos`` (B each, int).
    """
    p = as_probabilities(p, "p", site)
    y = as_labels(y, p.size, "y", site)
    e = _edges(edges)
    b = bin_index(p, e)
    nbins = e.size - 1
    return {
        "edges": e,
        "bin_n_neg": np.bincount(b[y == 0], minlength=nbins).astype(np.int64),
        "bin_n_pos": np.bincount(b[y == 1], minlength=nbins).astype(np.int64),
    }


def reliability_bins(p: object, y: object, edges: np.ndarray | int, site: str | None = None) -> Aggregate:
    """Per fixed equal-width bin m: negatives, positives and Σp (so n_m = neg + pos and Σy_m = pos).

    Returns ``edges``, ``bin_n_neg``, ``bin_n_pos`` (int) and ``bin_sum_p`` (float).
    """
    agg = class_histograms(p, y, edges, site)
    pa = np.asarray(p, dtype=float)
    agg["bin_sum_p"] = np.bincount(bin_index(pa, agg["edges"]), weights=pa, minlength=agg["edges"].size - 1)
    return agg
