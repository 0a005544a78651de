"""Assemble :class:`SiteMetrics` for one held-out site, or pooled over sites, from site aggregates.

``aggregates`` maps a kind to a site aggregate (after small-cell control):
``histograms`` (class_histograms), ``confusion`` (confusion_counts at the decision threshold and the
decision-curve grid), ``calibration`` (calibration_sums), ``reliability`` (reliability_bins). A suppressed or
missing aggregate leaves its metrics None with a note; it never stops the others.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence


from coordinator.validation.auc import auc_from_histograms, auc_from_site_histograms, binning_flag, roc_from_histograms
from coordinator.validation.calibration import brier_scores, observed_expected, reliability
from coordinator.validation.classification import threshold_metrics
from coordinator.validation.combine import combine_aggregates
from coordinator.validation.decision import net_benefit
from coordinator.validation.results import ROC_FROM_HISTOGRAM, CalibrationFit, SiteMetrics

Aggregate = dict[str, "np.ndarray | float | int"]  # noqa: F821
KINDS = ("histograms", "confusion", "calibration", "reliability")


def _usable(aggregates: Mapping[str, Aggregate], kind: str, notes: list[str]) -> Aggregate | None:
    agg = aggregates.get(kind)
    if agg is None:
        notes.append(f"{kind}: not provided")
        return None
    if agg.get("suppressed", 0):
        notes.append(f"{kind}: suppressed at the site (a cell had fewer than k={agg.get('k')} patients)")
        return None
    return agg


def site_metrics(
    site: str,
    aggregates: Mapping[str, Aggregate],
    threshold: float,
    calibration_fit: CalibrationFit | None = None,
    interval_method: str = "wilson",
) -> SiteMetrics:
    """All external-validation metrics computable from one site's (or a combined) set of aggregates."""
    notes: list[str] = []
    cal = _usable(aggregates, "calibration", notes)
    n = int(cal["n"]) if cal else 0
    events = int(cal["n_events"]) if cal else 0
    m = SiteMetrics(site=site, n=n, n_events=events, threshold=threshold, calibration=calibration_fit, notes=notes)
    hist = _usable(aggregates, "histograms", notes)
    if hist is not None:
        try:
            m.auc = auc_from_histograms(hist["bin_n_neg"], hist["bin_n_pos"])
            _, fpr, tpr = roc_from_histograms(hist["edges"], hist["bin_n_neg"], hist["bin_n_pos"])
            m.roc_fpr, m.roc_tpr = fpr[::-1].tolist(), tpr[::-1].tolist()  # from (0, 0) to (1, 1)
            m.roc_area, m.roc_bound = m.auc.auc, m.auc.binning_bound
            m.roc_step_bound, m.roc_source = m.auc.binning_bound, ROC_FROM_HISTOGRAM
        except ValueError as exc:
            notes.append(f"AUC: {exc}")
    conf = _usable(aggregates, "confusion", notes)
    if conf is not None:
        try:
            for key, value in threshold_metrics(conf, threshold, interval_method).items():
                setattr(m, key, value)
        except ValueError as exc:
            notes.append(f"threshold metrics: {exc}")
        m.decision_curve = net_benefit(conf)
    if cal is not None:
        m.brier, m.scaled_brier = brier_scores(cal)
        try:
            m.oe_ratio = observed_expected(cal)
        except ValueError as exc:
            notes.append(f"O/E: {exc}")
    rel = _usable(aggregates, "reliability", notes)
    if rel is not None:
        m.ece, m.reliability = reliability(rel)
    return m


def pooled_metrics(
    per_site: Sequence[Mapping[str, Aggregate]],
    sites: Sequence[str],
    threshold: float,
    calibration_fit: CalibrationFit | None = None,
    name: str = "pooled",
) -> SiteMetrics:
    """Metrics on the pooled held-out patients: each aggregate kind summed over the sites that released it."""
    combined: dict[str, Aggregate] = {}
    notes = []
    for kind in KINDS:
        keep = [(s, a[kind]) for s, a in zip(sites, per_site) if kind in a and not a[kind].get("suppressed", 0)]
        dropped = [s for s, a in zip(sites, per_site) if kind in a and a[kind].get("suppressed", 0)]
        if dropped:
            notes.append(f"{kind}: sites {dropped} suppressed and left out of the pooled value")
        if keep:
            combined[kind] = combine_aggregates([a for _, a in keep], [s for s, _ in keep])
    m = site_metrics(name, combined, threshold, calibration_fit)
    hists = [a["histograms"] for a in per_site if "histograms" in a and not a["histograms"].get("suppressed", 0)]
    if hists:  # on each site's own (merged) edges: no resolution lost to the common edges
        try:
            m.auc = auc_from_site_histograms(hists)
        except ValueError as exc:
            notes.append(f"pooled AUC: {exc}")
        flag = binning_flag(m.auc)
        if flag:
            notes.append(f"pooled AUC: {flag}")
    m.notes = notes + m.notes
    return m


