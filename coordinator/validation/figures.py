"""Figures from aggregate results (matplotlib ``Figure`` objects, no pyplot state; Agg canvas)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from coordinator.validation.results import (
    ROC_FROM_RECONCILED_STEPS, HarmonisationDiagnostics, RandomEffects, SiteMetrics,
)


def roc_label(m: SiteMetrics) -> str:
    """Legend text: the reported AUC (95% CI) and what the drawn curve is, so that the figure never contradicts
    its number: a site's step curve reconciled to its exact AUC says so with its within-step shape bound; a curve
    whose area differs from the AUC states its own area and bound."""
    if m.auc is None:
        return m.site
    label = f"{m.site}: AUC {m.auc.auc:.3f} ({m.auc.ci_low:.3f}-{m.auc.ci_high:.3f})"
    if m.roc_source == ROC_FROM_RECONCILED_STEPS and m.roc_step_bound is not None:
        label += f"; steps: area = AUC, shape ±{m.roc_step_bound:.3f}"
    elif m.roc_area is not None and m.roc_bound is not None and abs(m.roc_area - m.auc.auc) > 5e-4:
        label += f"; curve area {m.roc_area:.3f} ± {m.roc_bound:.3f} ({m.roc_source or 'k-merged bins'})"
    return label


def roc_figure(metrics: Sequence[SiteMetrics], title: str = "ROC") -> Figure:
    """One ROC curve per site/model through its drawn vertices (``SiteMetrics.roc_fpr/roc_tpr``, from (0, 0) to
    (1, 1)): a held-out site's k-anonymous step curve reconciled to its exact AUC
    (:mod:`coordinator.validation.curves`), else the k-merged histogram's curve; legend from :func:`roc_label`."""
    fig = Figure(figsize=(5.5, 5))
    ax = fig.add_subplot()
    for m in metrics:
        if m.roc_fpr:
            ax.plot(m.roc_fpr, m.roc_tpr, drawstyle="default", label=roc_label(m))
    ax.plot([0, 1], [0, 1], ls=":", color="grey")
    ax.set(xlabel="1 - specificity", ylabel="sensitivity", title=title, xlim=(0, 1), ylim=(0, 1))
    ax.legend(fontsize=7, loc="lower right")
    return fig


def calibration_curve(m: SiteMetrics, grid: np.ndarray) -> np.ndarray | None:
    """σ(a + b·logit p) on ``grid`` from the site's fitted calibration intercept a and slope b (None without)."""
    fit = m.calibration
    if fit is None or fit.intercept is None or fit.slope is None:
        return None
    a, b = fit.intercept.value, fit.slope.value
    if not (np.isfinite(a) and np.isfinite(b)):
        return None
    return 1 / (1 + np.exp(-(a + b * np.log(grid / (1 - grid)))))


def reliability_figure(metrics: Sequence[SiteMetrics], title: str = "Reliability diagram") -> Figure:
    """Observed event rate vs mean predicted probability per group (a held-out site's k-anonymous groups, or the
    merged fixed bins of a pool), Wilson 95% CIs, ECE in the legend, and, where the site fitted one, its logistic
    calibration curve σ(a + b·logit p) (dashed; the intercept and slope reported in the calibration table)."""
    fig = Figure(figsize=(5.5, 5))
    ax = fig.add_subplot()
    grid = np.linspace(0.005, 0.995, 199)
    for m in metrics:
        if not m.reliability:
            continue
        x = np.array([p.mean_predicted for p in m.reliability])
        y = np.array([p.observed for p in m.reliability])
        err = np.array([[p.observed - p.ci_low for p in m.reliability], [p.ci_high - p.observed for p in m.reliability]])
        err = np.maximum(err, 0.0)  # rounding must not make matplotlib refuse the figure
        ece = "" if m.ece is None else f" (ECE {m.ece:.3f})"
        line = ax.errorbar(x, y, yerr=err, marker="o", ms=4, capsize=2, ls="none", label=f"{m.site}{ece}")
        curve = calibration_curve(m, grid)
        if curve is not None:
            ax.plot(grid, curve, ls="--", lw=1, color=line[0].get_color(),
                    label=f"{m.site}: σ({m.calibration.intercept.value:.2f} + {m.calibration.slope.value:.2f}·logit p)")
    ax.plot([0, 1], [0, 1], ls=":", color="grey")
    ax.set(xlabel="mean predicted probability", ylabel="observed proportion", title=title, xlim=(0, 1), ylim=(0, 1))
    ax.legend(fontsize=7, loc="upper left")
    return fig


def decision_curve_figure(metrics: Sequence[SiteMetrics], title: str = "Decision curve") -> Figure:
    """Net benefit vs threshold probability per site/pool, treat-all (dashed, per curve) and treat-none (0).

    Each curve uses the thresholds its site released (small-cell control may drop some)."""
    fig = Figure(figsize=(6, 4.5))
    ax = fig.add_subplot()
    values, prevs = [0.0], [0.05]
    for i, m in enumerate(metrics):
        dc = m.decision_curve
        if dc is None:
            continue
        line = ax.plot(dc.thresholds, dc.net_benefit, marker="o", ms=3, label=m.site)[0]
        ax.plot(dc.thresholds, dc.treat_all, ls="--", lw=0.8, color=line.get_color(),
                label="treat all" if i == 0 else None)
        values += list(dc.net_benefit) + list(dc.treat_all)
        prevs.append(dc.prevalence)
    ax.axhline(0, color="black", lw=0.8, label="treat none")
    ax.set_ylim(bottom=max(min(values), -0.15) - 0.02, top=max(prevs) * 1.1)
    ax.set(xlabel="threshold probability", ylabel="net benefit", title=title)
    ax.legend(fontsize=7)
    return fig


def forest_plot(
    labels: Sequence[str],
    estimates: Sequence[float],
    ci_low: Sequence[float],
    ci_high: Sequence[float],
    pooled: RandomEffects | None,
    title: str,
    reference: float | None = None,
) -> Figure:
    """Per-site estimates with 95% CIs, the random-effects diamond and its 95% prediction interval."""
    k = len(labels)
    fig = Figure(figsize=(6.5, 1.2 + 0.4 * (k + 2)))
    ax = fig.add_subplot()
    ys = np.arange(k, 0, -1) + 1
    for y, e, lo, hi in zip(ys, estimates, ci_low, ci_high):
        ax.plot([lo, hi], [y, y], color="black")
        ax.plot([e], [y], "s", color="black")
    ticks, names = list(ys), list(labels)
    if pooled is not None:
        y0 = 0.5
        diamond_x = [pooled.ci_low, pooled.estimate, pooled.ci_high, pooled.estimate]
        ax.fill(diamond_x, [y0, y0 + 0.3, y0, y0 - 0.3], color="tab:blue")
        if pooled.pi_low is not None and pooled.pi_high is not None:
            ax.plot([pooled.pi_low, pooled.pi_high], [y0, y0], color="tab:red", lw=1, label="95% prediction interval")
            ax.legend(fontsize=7, loc="upper left")
        tau = "" if pooled.tau2 is None else f", τ²={pooled.tau2:.3g}"
        ticks.append(y0)
        names.append(f"RE {pooled.estimate:.3f}{tau}")
    if reference is not None:
        ax.axvline(reference, ls=":", color="grey")
    ax.set_yticks(ticks, names, fontsize=8)
    ax.set(title=title, xlabel="estimate (95% CI)")
    fig.tight_layout()
    return fig


def harmonisation_figure(diags: Sequence[HarmonisationDiagnostics], site: str) -> Figure:
    """For one site: each feature's standardised offset of the site mean from the mean of site means,
    and its SD ratio to the mean SD, before and after harmonisation (0 and 1 = no site effect)."""
    by_site = {d.site: d for d in diags}
    if site not in by_site:
        raise ValueError(f"no harmonisation diagnostics for site {site!r}; have {sorted(by_site)}")
    d = by_site[site]

    def offsets(attr_mean: str, attr_sd: str) -> tuple[np.ndarray, np.ndarray]:
        means = np.array([getattr(x, attr_mean) for x in diags], dtype=float)
        sds = np.array([getattr(x, attr_sd) for x in diags], dtype=float)
        ref_sd = np.where(sds.mean(axis=0) > 0, sds.mean(axis=0), 1.0)
        own = np.array(getattr(d, attr_mean), dtype=float)
        return (own - means.mean(axis=0)) / ref_sd, np.array(getattr(d, attr_sd), dtype=float) / ref_sd

    mb, sb = offsets("mean_before", "sd_before")
    ma, sa = offsets("mean_after", "sd_after")
    x = np.arange(len(d.features))
    fig = Figure(figsize=(max(6, 0.35 * len(x) + 2), 6))
    ax1, ax2 = fig.subplots(2, 1, sharex=True)
    ax1.bar(x - 0.2, mb, 0.4, label="before")
    ax1.bar(x + 0.2, ma, 0.4, label="after")
    ax1.axhline(0, color="black", lw=0.8)
    ax1.set(ylabel="(site mean - mean of sites) / SD", title=f"Harmonisation at {site}")
    ax1.legend(fontsize=7)
    ax2.bar(x - 0.2, sb, 0.4, label="before")
    ax2.bar(x + 0.2, sa, 0.4, label="after")
    ax2.axhline(1, color="black", lw=0.8)
    ax2.set(ylabel="site SD / mean SD")
    ax2.set_xticks(x, d.features, rotation=70, fontsize=7)
    fig.tight_layout()
    return fig
