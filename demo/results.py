"""The demo's results table, read back from the MLflow store (so the table proves the store holds the study).

The study's parent run (tags ``role=study``, ``protocol_id``) has one child run per held-out site
(``role=fold``, ``heldout_site``). Each child holds the metrics of the preferred variant (harmonised)
under plain names (``auc``, ``auc_ci_low``, ``auc_ci_high``, ``recal_cal_slope``, ``conformal_coverage``,
``conformal_mean_set_size``, ``conformal_rate_both``)
and those of the other variant with its name as prefix (``raw_auc``, ...; see coordinator.tracking.log_outcome).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

VARIANT_LABELS = {"harmonised": "harmonised (ComBat)", "raw": "unharmonised"}
_METRICS = ("auc", "auc_ci_low", "auc_ci_high", "cal_slope", "recal_cal_slope", "conformal_coverage",
            "conformal_coverage_censored", "conformal_mean_set_size", "conformal_rate_both", "n", "n_events")


@dataclass(frozen=True)
class VariantMetrics:
    """One model at one held-out site; None where the store has no value."""

    auc: float | None
    auc_ci_low: float | None
    auc_ci_high: float | None
    cal_slope: float | None          # after recalibration when the store has it, else of the raw model
    conformal_coverage: float | None
    coverage_censored: int = 0  # +1: the site released "<k missed" (a lower bound), -1: "<k covered" (upper)
    mean_set_size: float | None = None  # mean number of classes in a prediction set (1 = always decisive)
    rate_both: float | None = None      # share of patients whose set holds both classes (says nothing)


@dataclass
class HeldOutSite:
    site: str
    n: int | None
    n_events: int | None
    variants: dict[str, VariantMetrics] = field(default_factory=dict)


@dataclass
class DemoResults:
    experiment: str
    parent_run_id: str
    variants: list[str]              # preferred first
    sites: list[HeldOutSite]
    registered_model: str | None
    random_effects_auc: dict[str, tuple[float, float, float]] = field(default_factory=dict)  # variant → (est, lo, hi)

    def mean(self, variant: str, metric: str) -> float | None:
        """Unweighted mean over held-out sites that have the value (None when none has it)."""
        values = [getattr(s.variants[variant], metric) for s in self.sites if variant in s.variants]
        values = [v for v in values if v is not None]
        return sum(values) / len(values) if values else None


class ResultsNotFound(LookupError):
    """The MLflow store does not hold the demo's study (or not completely); the message says what is missing."""


def _metric(values: dict[str, float], name: str) -> float | None:
    value = values.get(name)
    return float(value) if value is not None and math.isfinite(value) else None


def _variant(values: dict[str, float], prefix: str) -> VariantMetrics | None:
    auc = _metric(values, f"{prefix}auc")
    if auc is None:
        return None
    slope = _metric(values, f"{prefix}recal_cal_slope")
    return VariantMetrics(
        auc=auc,
        auc_ci_low=_metric(values, f"{prefix}auc_ci_low"),
        auc_ci_high=_metric(values, f"{prefix}auc_ci_high"),
        cal_slope=slope if slope is not None else _metric(values, f"{prefix}cal_slope"),
        conformal_coverage=_metric(values, f"{prefix}conformal_coverage"),
        coverage_censored=int(_metric(values, f"{prefix}conformal_coverage_censored") or 0),
        mean_set_size=_metric(values, f"{prefix}conformal_mean_set_size"),
        rate_both=_metric(values, f"{prefix}conformal_rate_both"),
    )


def read_results(tracking_uri: str, experiment: str, protocol_id: str, started_after_ms: int = 0) -> DemoResults:
    """The newest study run of ``protocol_id`` started after ``started_after_ms`` and its held-out-site runs."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise ResultsNotFound(f"the MLflow store {tracking_uri} has no experiment {experiment!r}")
    parents = client.search_runs(
        [exp.experiment_id], f"tags.protocol_id = '{protocol_id}' and tags.role = 'study'",
        order_by=["attribute.start_time DESC"], max_results=5)
    parents = [r for r in parents if r.info.start_time >= started_after_ms]
    if not parents:
        raise ResultsNotFound(f"no study run of protocol {protocol_id} in experiment {experiment!r} at {tracking_uri} "
                              "started by this demo")
    parent = parents[0]
    pid = parent.info.run_id
    folds = client.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{pid}' and tags.role = 'fold'",
                               max_results=1000)
    if not folds:
        raise ResultsNotFound(f"study run {pid} has no held-out-site (fold) child runs")
    preferred = parent.data.tags.get("variant", "harmonised")
    others = [v for v in parent.data.tags.get("variants", preferred).split(",") if v and v != preferred]
    variants = [preferred, *others]
    sites = []
    for run in sorted(folds, key=lambda r: r.data.tags.get("heldout_site", "")):
        values = run.data.metrics
        n, events = _metric(values, "n"), _metric(values, "n_events")
        site = HeldOutSite(run.data.tags.get("heldout_site", "?"), None if n is None else int(n),
                           None if events is None else int(events))
        for variant in variants:
            metrics = _variant(values, "" if variant == preferred else f"{variant}_")
            if metrics is not None:
                site.variants[variant] = metrics
        sites.append(site)
    registered = parent.data.tags.get("registered_model")
    pooled_re = {}
    for variant in variants:
        prefix = "" if variant == preferred else f"{variant}_"
        est, lo, hi = (_metric(parent.data.metrics, f"{prefix}re_auc{s}") for s in ("", "_ci_low", "_ci_high"))
        if est is not None and lo is not None and hi is not None:
            pooled_re[variant] = (est, lo, hi)
    return DemoResults(experiment, pid, variants, sites, registered, pooled_re)


def _fmt(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def auc_text(m: VariantMetrics) -> str:
    if m.auc_ci_low is None or m.auc_ci_high is None:
        return _fmt(m.auc)
    return f"{m.auc:.2f} [{m.auc_ci_low:.2f}, {m.auc_ci_high:.2f}]"


_BOUND = {1: "≥ ", -1: "≤ "}


def coverage_text(m: VariantMetrics) -> str:
    """Coverage; "≥ x" / "≤ x" when the site could only say that fewer than k cases were missed / covered."""
    text = _fmt(m.conformal_coverage)
    return text if m.conformal_coverage is None else _BOUND.get(m.coverage_censored, "") + text


def mean_coverage_text(results: DemoResults, variant: str) -> str:
    """Mean coverage over held-out sites; a bound ("≥" / "≤") when some sites' values are bounds, all one way
    ("~" when they point both ways)."""
    text = _fmt(results.mean(variant, "conformal_coverage"))
    kinds = {s.variants[variant].coverage_censored for s in results.sites
             if variant in s.variants and s.variants[variant].conformal_coverage is not None} - {0}
    if text == "–" or not kinds:
        return text
    return (_BOUND[kinds.pop()] if len(kinds) == 1 else "~ ") + text


def results_table(results: DemoResults, target_coverage: float | None = None):  # -> rich.table.Table
    """One row per held-out site and model variant, then the unweighted mean over held-out sites. Beside the
    conformal coverage: the mean prediction-set size and the share of two-class sets (coverage alone rewards
    sets that hold both classes)."""
    from rich.table import Table

    coverage = "conformal\ncoverage" + (f"\n(target {target_coverage:.2f})" if target_coverage is not None else "")
    table = Table(title="External validation at each held-out site (leave-one-site-out, read back from MLflow)",
                  title_justify="left")
    # headers broken by hand and cells never wrapped: one table line per row in a 140-column terminal
    for name, justify in (("held-out site", "left"), ("n\n(events)", "right"), ("model", "left"),
                          ("AUC [95% CI]", "right"), ("calibration\nslope", "right"), (coverage, "right"),
                          ("mean\nset size", "right"), ("two-class\nsets", "right")):
        table.add_column(name, justify=justify, no_wrap=name != "held-out site",
                         min_width=22 if name == "held-out site" else None)  # type: ignore[arg-type]
    for site in results.sites:
        for i, variant in enumerate(results.variants):
            m = site.variants.get(variant)
            if m is None:
                continue
            counts = f"{site.n} ({site.n_events})" if i == 0 and site.n is not None else ""
            table.add_row(site.site if i == 0 else "", counts, VARIANT_LABELS.get(variant, variant), auc_text(m),
                          _fmt(m.cal_slope), coverage_text(m), _fmt(m.mean_set_size), _fmt(m.rate_both))
        table.add_section()
    for i, variant in enumerate(results.variants):
        table.add_row("mean of held-out sites" if i == 0 else "", "", VARIANT_LABELS.get(variant, variant),
                      _fmt(results.mean(variant, "auc")), _fmt(results.mean(variant, "cal_slope")),
                      mean_coverage_text(results, variant), _fmt(results.mean(variant, "mean_set_size")),
                      _fmt(results.mean(variant, "rate_both")), style="bold")
    if results.random_effects_auc:  # the headline summary: random effects over the held-out sites' exact AUCs
        table.add_section()
        for i, variant in enumerate(results.variants):
            if variant in results.random_effects_auc:
                est, lo, hi = results.random_effects_auc[variant]
                table.add_row("random effects (REML, HKSJ)" if i == 0 else "", "", VARIANT_LABELS.get(variant, variant),
                              f"{est:.2f} [{lo:.2f}, {hi:.2f}]", "", "", "", "", style="bold")
    return table


def verdict(results: DemoResults) -> str | None:
    """How the harmonised models compare with the unharmonised ones on average (None without both)."""
    if "harmonised" not in results.variants or "raw" not in results.variants:
        return None
    paired = [(s.variants["harmonised"].auc, s.variants["raw"].auc) for s in results.sites
              if "harmonised" in s.variants and "raw" in s.variants]
    if not paired:
        return None
    diff = sum(h - r for h, r in paired) / len(paired)
    better = sum(h > r for h, r in paired)
    word = "beat" if diff > 0 else "did not beat"
    return (f"Harmonised models {word} unharmonised ones at held-out sites on average: mean AUC difference "
            f"{diff:+.3f} (harmonised higher at {better} of {len(paired)} sites).")
