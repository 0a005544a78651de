"""Sum site aggregates into one pooled aggregate (every site aggregate is additive).

Histograms whose bins were merged at some sites are first coarsened to the common edges (the edges kept by
every site, which always include 0 and 1); threshold grids keep the thresholds present at every site.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Aggregate = dict[str, "np.ndarray | float | int"]
_META = ("suppressed", "k")


class SuppressedAggregateError(ValueError):
    """A site's aggregate was suppressed by small-cell control and cannot enter a pooled metric."""


def _names(aggs: Sequence[Aggregate], sites: Sequence[str] | None) -> list[str]:
    if sites is not None and len(sites) != len(aggs):
        raise ValueError(f"{len(sites)} site names for {len(aggs)} aggregates")
    return list(sites) if sites is not None else [f"#{i}" for i in range(len(aggs))]


def common_edges(edge_sets: Sequence[np.ndarray], atol: float = 1e-12) -> np.ndarray:
    """Edges present (within atol) in every edge set: the finest grid all sites can be coarsened to."""
    common = np.asarray(edge_sets[0], dtype=float)
    for e in edge_sets[1:]:
        e = np.asarray(e, dtype=float)
        keep = np.array([np.any(np.abs(e - c) <= atol) for c in common])
        common = common[keep]
    return common


def rebin(values: np.ndarray, edges: np.ndarray, target: np.ndarray, atol: float = 1e-12) -> np.ndarray:
    """Sum per-bin ``values`` on ``edges`` into the coarser ``target`` edges (a subset of ``edges``)."""
    idx = np.array([int(np.argmin(np.abs(edges - t))) for t in target])
    if np.any(np.abs(edges[idx] - target) > atol):
        raise ValueError("target edges are not a subset of the histogram's edges")
    return np.add.reduceat(np.asarray(values), idx[:-1])


def combine_aggregates(aggs: Sequence[Aggregate], sites: Sequence[str] | None = None) -> Aggregate:
    """Pooled aggregate = key-wise sum over sites (after aligning merged bins / kept thresholds).

    Raises :class:`SuppressedAggregateError` naming the site if any aggregate was suppressed, and ValueError
    naming the site and key if the sites' aggregates do not have the same keys.
    """
    if not aggs:
        raise ValueError("no site aggregates to combine")
    names = _names(aggs, sites)
    for name, agg in zip(names, aggs):
        if agg.get("suppressed", 0):
            raise SuppressedAggregateError(
                f"site {name}: aggregate suppressed (a cell had fewer than k={agg.get('k')} patients); "
                "it cannot enter this pooled metric"
            )
    keys = [k for k in aggs[0] if k not in _META]
    for name, agg in zip(names, aggs):
        mine = {k for k in agg if k not in _META}
        if mine != set(keys):
            raise ValueError(f"site {name}: aggregate keys {sorted(mine)} differ from site {names[0]}'s {sorted(keys)}")
    out: Aggregate = {}
    parts = [dict(a) for a in aggs]
    if "edges" in keys:
        target = common_edges([a["edges"] for a in parts])
        for a in parts:
            e = np.asarray(a["edges"], dtype=float)
            for key in [k for k in keys if k.startswith("bin_")]:
                a[key] = rebin(a[key], e, target)
            a["edges"] = target
        out["edges"] = target
    if "thresholds" in keys:
        target = common_edges([a["thresholds"] for a in parts])
        if target.size == 0:
            raise ValueError("no decision threshold is kept at every site after small-cell merging")
        for a in parts:
            t = np.asarray(a["thresholds"], dtype=float)
            idx = np.array([int(np.argmin(np.abs(t - x))) for x in target])
            for key in ("n_tp", "n_fp", "n_fn", "n_tn"):
                a[key] = np.asarray(a[key])[idx]
            a["thresholds"] = target
        out["thresholds"] = target
    for key in keys:
        if key in ("edges", "thresholds"):
            continue
        vals = [a[key] for a in parts]
        total = np.sum([np.asarray(v) for v in vals], axis=0)
        out[key] = total if isinstance(vals[0], np.ndarray) else total.item()
    return out
