"""Survival figures from released site aggregates (matplotlib ``Figure`` objects, no pyplot state).

Kaplan-Meier curves are drawn through the points each site released (grid points respecting k): the curve between
two released points is not known; each released value is drawn from its time on (exact at every released point, the
drop shown at the end of the interval holding it) and the title says the steps are coarsened.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
from matplotlib.figure import Figure

from coordinator.validation.figures import forest_plot
from coordinator.validation.results import RandomEffects

Z95 = 1.959963984540054


def km_by_risk_group_figure(site: str, curves: Mapping[str, dict | None], time_unit: str) -> Figure:
    """One coarsened Kaplan-Meier curve per predicted-risk group released by ``site``."""
    fig = Figure(figsize=(6, 4.5))
    ax = fig.add_subplot()
    for group, curve in curves.items():
        if curve is None:
            continue
        ax.step(curve["times"], curve["survival"], where="post", marker="o", ms=3, label=f"{group} risk (n={curve['n']})")
    withheld = [g for g, c in curves.items() if c is None]
    note = f"; withheld (< k): {', '.join(withheld)}" if withheld else ""
    ax.set(xlabel=f"time ({time_unit})", ylabel="survival (Kaplan-Meier)", ylim=(0, 1.02),
           title=f"{site}: survival by predicted risk (steps coarsened to k{note})")
    ax.title.set_fontsize(9)
    if len(withheld) < len(curves):
        ax.legend(fontsize=7, loc="lower left")
    return fig


def calibration_at_horizon_figure(results: Mapping[str, dict], horizon: float, time_unit: str) -> Figure:
    """Observed (1 - KM) vs mean predicted risk at t* per risk group and site, Greenwood 95% CIs."""
    fig = Figure(figsize=(5.5, 5))
    ax = fig.add_subplot()
    for site, result in results.items():
        calibration = result["horizons"].get(float(horizon), {}).get("calibration")
        if not calibration:
            continue
        observed = np.array(calibration["observed"])
        half = Z95 * np.array(calibration["observed_se"])
        ax.errorbar(calibration["predicted"], observed, yerr=[np.minimum(half, observed), np.minimum(half, 1 - observed)],
                    marker="o", ms=4, capsize=2, label=site)
    ax.plot([0, 1], [0, 1], ls=":", color="grey")
    ax.set(xlabel=f"predicted risk by {horizon:g} {time_unit}", ylabel="observed risk (1 - Kaplan-Meier)",
           title=f"Calibration at {horizon:g} {time_unit}", xlim=(0, 1), ylim=(0, 1))
    ax.legend(fontsize=7, loc="upper left")
    return fig


def concordance_forest_figure(results: Mapping[str, dict], pooled: RandomEffects | None, measure: str = "harrell") -> Figure:
    """Per-site C with logit-scale 95% CIs, the random-effects diamond and prediction interval."""
    labels, estimates, low, high = [], [], [], []
    for site, result in results.items():
        entry = result[measure]
        if "c" not in entry:
            continue
        c, se = entry["c"], entry["se"]
        logit, logit_se = math.log(c / (1 - c)), se / (c * (1 - c))
        labels.append(site)
        estimates.append(c)
        low.append(1 / (1 + math.exp(-(logit - Z95 * logit_se))))
        high.append(1 / (1 + math.exp(-(logit + Z95 * logit_se))))
    name = "Harrell's C" if measure == "harrell" else "Uno's C"
    return forest_plot(labels, estimates, low, high, pooled, title=f"{name} at each held-out site", reference=0.5)
