"""Coordinator half of the baseline survival a Cox model carries: candidate grid, shared grid, combination.

Round 1: the coordinator sends :func:`candidate_grid` (public: from the protocol's horizons only); each training
site answers with the subset it can release (``site_client.evaluation.survival_grid.releasable_grid``). The shared
grid is the intersection: a coarsening of every site's valid grid, hence valid at every site (each interval 0 or
>= k events). Round 2: each site sends its Breslow H_s on the shared grid (patient at the model's centre) and its
patient count; :func:`carried_baseline` combines them with ``fedmath.survival.combine_baselines`` (patient-weighted
mean: the expected baseline of a new hospital drawn like the training ones).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from fedmath.survival import Baseline, combine_baselines


class BaselineReplyError(ValueError):
    """A site's grid or baseline reply that the coordinator will not use; names the site and the defect."""


def candidate_grid(horizons: Sequence[float], steps: int = 24) -> np.ndarray:
    """Equal steps up to the largest horizon, plus every horizon itself: ``steps`` intervals before merging."""
    horizons = np.asarray(horizons, dtype=float)
    if horizons.size == 0 or np.any(horizons <= 0) or steps < 1:
        raise ValueError("need at least one positive horizon and one step")
    return np.unique(np.concatenate([np.linspace(0, horizons.max(), steps + 1)[1:], horizons]))


def shared_grid(candidates: np.ndarray, site_grids: Mapping[str, np.ndarray | None]) -> np.ndarray:
    """0 followed by the candidate points every site kept. Sites without a grid (None) must be left out first."""
    keep = np.ones(candidates.size, dtype=bool)
    for site, grid in site_grids.items():
        if grid is None:
            raise BaselineReplyError(f"site {site!r} cannot release a baseline (too few events up to the last horizon)")
        grid = np.asarray(grid, dtype=float)
        if grid.ndim != 1 or grid.size == 0 or not np.all(np.isin(grid, candidates)) or grid[-1] != candidates[-1]:
            raise BaselineReplyError(f"site {site!r}: its grid is not a subset of the candidates ending at the last one")
        keep &= np.isin(candidates, grid)
    return np.concatenate([[0.0], candidates[keep]])


def carried_baseline(grid: np.ndarray, replies: Mapping[str, tuple[np.ndarray, int]]) -> Baseline:
    """Combine the sites' (H_s on ``grid``, n_s) after checking each reply's size, finiteness and monotonicity."""
    hazards, sizes = [], []
    for site, (hazard, n) in replies.items():
        hazard = np.asarray(hazard, dtype=float)
        if hazard.shape != grid.shape or not np.all(np.isfinite(hazard)) or hazard[0] != 0 or np.any(np.diff(hazard) < 0):
            raise BaselineReplyError(
                f"site {site!r}: a cumulative hazard must have one finite, non-decreasing value per grid time, from 0"
            )
        if int(n) != n or n < 1:
            raise BaselineReplyError(f"site {site!r}: patient count {n!r} is not a positive integer")
        hazards.append(hazard)
        sizes.append(int(n))
    if not hazards:
        raise BaselineReplyError("no site sent a baseline")
    return combine_baselines(hazards, sizes, grid)
