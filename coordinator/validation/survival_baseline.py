"""Coordinator half of the baseline survival a Cox model carries: candidate grid, site baselines, combination.

The coordinator sends :func:`candidate_grid` (public: from the protocol's horizons only) with the model's beta and
centre. Each training site answers with its own releasable subset of the candidates (every interval between its
points holds 0 or >= k of its events; ``site_client.evaluation.survival_grid.releasable_grid``), its Breslow
cumulative hazard H_s at those points (patient at the centre) and its patient count n_s. The coordinator puts each
H_s on the whole candidate grid by linear interpolation between the site's own points (a constant hazard within
each of the site's intervals: the finest statement the site's release allows), then :func:`carried_baseline`
combines them with ``fedmath.survival.combine_baselines`` (patient-weighted mean: the expected baseline of a new
hospital drawn like the training ones). A site with no releasable grid (1..k-1 events up to the last horizon) sends
no baseline and is left out of the combination (it still counts in the Cox fit).
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


def site_hazard_on_grid(site: str, candidates: np.ndarray, reply: tuple[np.ndarray, np.ndarray, int]) -> tuple[np.ndarray, int]:
    """Check one site's (its grid, H_s there, n_s) and interpolate H_s onto [0, *candidates]."""
    points, hazard, n = reply
    points = np.asarray(points, dtype=float)
    hazard = np.asarray(hazard, dtype=float)
    if points.ndim != 1 or points.size == 0 or not np.all(np.isin(points, candidates)) or points[-1] != candidates[-1] or np.any(np.diff(points) <= 0):
        raise BaselineReplyError(f"site {site!r}: its grid is not an increasing subset of the candidates ending at the last one")
    if hazard.shape != points.shape or not np.all(np.isfinite(hazard)) or hazard[0] < 0 or np.any(np.diff(hazard) < 0):
        raise BaselineReplyError(
            f"site {site!r}: a cumulative hazard must have one finite, non-negative, non-decreasing value per grid time"
        )
    if int(n) != n or n < 1:
        raise BaselineReplyError(f"site {site!r}: patient count {n!r} is not a positive integer")
    grid = np.concatenate([[0.0], candidates])
    return np.interp(grid, np.concatenate([[0.0], points]), np.concatenate([[0.0], hazard])), int(n)


def carried_baseline(candidates: np.ndarray, replies: Mapping[str, tuple[np.ndarray, np.ndarray, int] | None]) -> Baseline:
    """The baseline the model carries, on [0, *candidates], from the sites that could release one."""
    usable = {site: reply for site, reply in replies.items() if reply is not None}
    if not usable:
        raise BaselineReplyError("no training site could release a baseline (each has 1..k-1 events up to the last horizon)")
    hazards, sizes = zip(*(site_hazard_on_grid(site, candidates, reply) for site, reply in usable.items()))
    return combine_baselines(list(hazards), list(sizes), np.concatenate([[0.0], candidates]))


def pooled_centre(replies: Mapping[str, tuple[np.ndarray, int]], n_parameters: int) -> np.ndarray:
    """The model's centre: pooled training feature mean sum_s sum_s(x) / sum_s n_s, after checking each reply."""
    total, count = np.zeros(n_parameters), 0
    for site, (sums, n) in replies.items():
        sums = np.asarray(sums, dtype=float)
        if sums.shape != (n_parameters,) or not np.all(np.isfinite(sums)) or int(n) != n or n < 1:
            raise BaselineReplyError(f"site {site!r}: feature sums must be {n_parameters} finite numbers with a positive count")
        total += sums
        count += int(n)
    if count == 0:
        raise BaselineReplyError("no site sent feature sums")
    return total / count
