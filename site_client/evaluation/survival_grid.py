"""Site halves on a time grid: which grid points this site can release, its Breslow baseline and KM curves there.

**Grid respecting k.** The coordinator proposes public candidate times c_1 < ... < c_m (from the protocol's
horizons, never from data). The site counts its events in each interval (c_{j-1}, c_j] (c_0 = 0, events at time 0
in the first) and merges adjacent intervals (``privacy.merge_groups``) until each holds 0 or >= k events; it returns
the right ends of the merged intervals. The last candidate is always kept (it closes the last interval). Horizons
are kept when the intervals on each side of them can be made safe on their own (merging then happens between
horizons only); otherwise the site merges freely. When the site's events up to c_m number 1..k-1, no grid exists
and the site releases none (``None``). Each site's grid is its own; the coordinator puts every site's cumulative
hazard on the candidate grid by linear interpolation (``coordinator.validation.survival_baseline``).

**Kaplan-Meier by risk group.** The curve is released only at the points of such a grid (so every step between
released points is made of 0 or >= k events) and only while >= k patients are still at risk.
"""

from __future__ import annotations

import numpy as np

from site_client.evaluation.privacy import _segmented_groups, merge_groups
from site_client.evaluation.survival_cox import SiteSurvivalError, SurvivalData, breslow_cumulative_hazard


def _checked_candidates(candidates: object) -> np.ndarray:
    c = np.asarray(candidates, dtype=float)
    if c.ndim != 1 or c.size == 0 or not np.all(np.isfinite(c)) or c[0] <= 0 or np.any(np.diff(c) <= 0):
        raise SiteSurvivalError("candidate grid times must be positive, finite and increasing")
    return c


def interval_event_counts(time: np.ndarray, event: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """Events in (c_{j-1}, c_j] for each candidate c_j (c_0 = 0; an event at time 0 counts in the first)."""
    index = np.searchsorted(candidates, time[event == 1], side="left")
    index = index[index < candidates.size]
    return np.bincount(index, minlength=candidates.size)


def releasable_grid(
    time: np.ndarray, event: np.ndarray, candidates: object, k: int, keep: object = ()
) -> np.ndarray | None:
    """The candidate points this site can release (each interval 0 or >= k events), or None.

    ``keep``: candidate points (the horizons) to preserve when each segment between them can be merged safely.
    """
    c = _checked_candidates(candidates)
    counts = interval_event_counts(time, event, c)[None, :]
    cuts = sorted({int(j) + 1 for j in np.flatnonzero(np.isin(c, np.asarray(keep, dtype=float)))} - {c.size})
    groups = _segmented_groups(counts, k, cuts) if cuts else None
    if groups is None:
        groups = merge_groups(counts, k)
    if groups is None:
        return None
    return c[[group[-1] for group in groups]]


def site_baseline(
    data: SurvivalData, beta: object, centre: object, candidates: object, k: int, keep: object = ()
) -> tuple[np.ndarray, np.ndarray, int] | None:
    """(this site's releasable grid, its Breslow H there, n), or None when no grid respects k here."""
    grid = releasable_grid(data.time, data.event, candidates, k, keep)
    if grid is None:
        return None
    return grid, breslow_cumulative_hazard(data, beta, centre, grid), int(data.time.size)


def kaplan_meier(time: np.ndarray, event: np.ndarray, at: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(S(t), Greenwood variance of S(t), patients at risk at t) at each time in ``at`` (S right-continuous).

    S(t) = prod_{t_j <= t} (1 - d_j / Y_j); Var = S(t)^2 sum_{t_j <= t} d_j / (Y_j (Y_j - d_j)).
    """
    event_times, d = np.unique(time[event == 1], return_counts=True)
    sorted_time = np.sort(time)
    at = np.asarray(at, dtype=np.float64)
    if event_times.size == 0:  # no event (a merged risk group may hold none): S = 1 with no variance
        return np.ones(at.shape), np.zeros(at.shape), time.size - np.searchsorted(sorted_time, at, side="left")
    at_risk_events = time.size - np.searchsorted(sorted_time, event_times, side="left")
    factors = 1 - d / at_risk_events
    log_s = np.cumsum(np.log(np.where(factors > 0, factors, 1.0)))
    dead = np.cumsum(factors <= 0) > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        greenwood = np.cumsum(np.where(at_risk_events > d, d / (at_risk_events * (at_risk_events - d)), 0.0))
    upto = np.searchsorted(event_times, at, side="right") - 1
    s = np.where(upto >= 0, np.where(dead[np.maximum(upto, 0)], 0.0, np.exp(log_s[np.maximum(upto, 0)])), 1.0)
    variance = np.where(upto >= 0, s**2 * greenwood[np.maximum(upto, 0)], 0.0)
    at_risk = time.size - np.searchsorted(sorted_time, at, side="left")
    return s, variance, at_risk


def coarse_kaplan_meier(time: np.ndarray, event: np.ndarray, candidates: object, k: int, keep: object = ()) -> dict[str, np.ndarray | int] | None:
    """KM of one group released at grid points only: {"times", "survival", "n"} or None (nothing safe).

    Starts at (0, 1). Only candidates with >= k patients still at risk are used, so the curve ends at the last
    such point (its last interval closes there). Numbers at risk are
    not released: their differences would count the patients censored in an interval, which may be 1..k-1.
    """
    c = _checked_candidates(candidates)
    followed = c[(time[None, :] >= c[:, None]).sum(axis=1) >= k]  # grid points with >= k patients at risk
    if time.size < k or followed.size == 0:
        return None
    grid = releasable_grid(time, event, followed, k, keep)
    if grid is None:
        return None
    survival, _, _ = kaplan_meier(time, event, grid)
    return {
        "times": np.concatenate([[0.0], grid]),
        "survival": np.concatenate([[1.0], survival]),
        "n": int(time.size),
    }
