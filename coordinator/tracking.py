"""MLflow glue: log a :class:`~coordinator.validation.results.StudyResult` (thin layer, mlflow imported lazily).

Layout (see docs/researcher-guide.md for where each item appears in the UI):

* one **parent run** per study: protocol fields flattened as params, tags ``protocol_id`` / ``study`` /
  ``sites``, per-site counts and package versions as params, pooled and random-effects metrics, the per-site
  table ``tables/site_metrics.json`` (``log_table``), forest plots, pooled ROC / reliability / decision curve,
  harmonisation before/after per site, and ``summary/study.json`` (every number, for the report);
* one **child run per fold**, tagged ``heldout_site``: the held-out site's metrics before/after
  recalibration, the volume-only baseline and ΔAUC, conformal coverage, per-round training metrics (``step``)
  and the fold's figures;
* one **child run "final-model"**: training metrics per round and the model as an ``mlflow.pyfunc`` (pure
  numpy; signature; explicit pip requirements), registered under the protocol's name with an alias.

Only the coordinator imports this module; hospital-side code never imports mlflow.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from coordinator.study.outcome_survival import KIND as SURVIVAL_KIND
from coordinator.validation.conformal import censored_direction
from coordinator.validation.results import (
    ConformalStats,
    FinalModel,
    FoldResult,
    SiteMetrics,
    StudyResult,
    to_jsonable,
)

PACKAGES = ("fedradval", "numpy", "scipy", "scikit-learn", "pandas", "mlflow", "flwr", "torch", "matplotlib")
SUMMARY_PATH = "summary/study.json"
SITE_TABLE_PATH = "tables/site_metrics.json"
#: The registered model's code (a real module, logged as models-from-code; never imported here).
PYFUNC_MODEL_FILE = Path(__file__).resolve().parent / "pyfunc_model.py"
#: MLflow 3.x UI: this experiment tag picks the model-training view instead of the GenAI one.
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"
_KEY_BAD = re.compile(r"[^A-Za-z0-9_\-./ ]")


@dataclass(frozen=True)
class LoggedStudy:
    """Identifiers of what :func:`log_study` created."""

    parent_run_id: str
    fold_run_ids: dict[str, str]
    final_run_id: str | None
    model_uri: str | None
    registered_model: str | None
    model_version: str | None
    experiment_id: str


def default_tracking_uri(work_dir: str | os.PathLike[str]) -> str:
    """``sqlite:///<work>/mlflow.db`` — the default store, a SQLite file in the study's work folder."""
    return f"sqlite:///{Path(work_dir).resolve() / 'mlflow.db'}"


def resolve_tracking_uri(given: str | None, work_dir: str | os.PathLike[str]) -> str:
    """The MLflow store a command uses: ``--mlflow-uri``, else ``$MLFLOW_TRACKING_URI``, else the SQLite store
    in its state / work folder (:func:`default_tracking_uri`)."""
    return given or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri(work_dir)


def _key(text: str) -> str:
    """An MLflow-legal param/metric key (letters, digits, _ - . / space)."""
    return _KEY_BAD.sub("_", text)


def flatten_params(obj: Any, prefix: str = "") -> dict[str, str]:
    """Nested dict → {'a.b.c': value}; lists and scalars as JSON text (at most 6000 characters each)."""
    out: dict[str, str] = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.update(flatten_params(v, f"{prefix}{k}."))
        return out
    text = obj if isinstance(obj, str) else json.dumps(to_jsonable(obj))
    out[_key(prefix[:-1])] = text[:6000]
    return out


def package_versions() -> dict[str, str]:
    """Installed versions of the packages that determine the results (``missing`` when absent)."""
    out = {"python": sys.version.split()[0]}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "missing"
    return out


def _finite(x: float | None) -> bool:
    return x is not None and isinstance(x, (int, float)) and math.isfinite(x)


def site_metric_values(m: SiteMetrics | None, prefix: str = "") -> dict[str, float]:
    """The scalar metrics of one SiteMetrics as a flat dict (undefined values are left out, never NaN)."""
    if m is None:
        return {}
    v: dict[str, float | None] = {"n": m.n, "n_events": m.n_events}
    if m.auc:
        v.update(auc=m.auc.auc, auc_se=m.auc.se, auc_ci_low=m.auc.ci_low, auc_ci_high=m.auc.ci_high,
                 auc_binning_bound=m.auc.binning_bound)
    for name in ("sensitivity", "specificity", "ppv", "npv"):
        p = getattr(m, name)
        if p is not None:
            v.update({name: p.value, f"{name}_ci_low": p.ci_low, f"{name}_ci_high": p.ci_high})
    v.update(brier=m.brier, scaled_brier=m.scaled_brier, ece=m.ece)
    if m.oe_ratio:
        v.update(oe_ratio=m.oe_ratio.value, oe_ci_low=m.oe_ratio.ci_low, oe_ci_high=m.oe_ratio.ci_high)
    if m.calibration:
        c = m.calibration
        v.update(cal_intercept=c.intercept.value, cal_intercept_ci_low=c.intercept.ci_low,
                 cal_intercept_ci_high=c.intercept.ci_high, cal_slope=c.slope.value,
                 cal_slope_ci_low=c.slope.ci_low, cal_slope_ci_high=c.slope.ci_high)
        if c.citl:
            v.update(cal_citl=c.citl.value, cal_citl_ci_low=c.citl.ci_low, cal_citl_ci_high=c.citl.ci_high)
    if m.decision_curve and m.threshold is not None:
        dc = m.decision_curve
        hit = [i for i, t in enumerate(dc.thresholds) if abs(t - m.threshold) < 1e-12]
        if hit:
            v.update(net_benefit=dc.net_benefit[hit[0]], net_benefit_treat_all=dc.treat_all[hit[0]])
    return {f"{prefix}{k}": float(x) for k, x in v.items() if _finite(x)}


def conformal_values(c: ConformalStats | None, prefix: str = "conformal_") -> dict[str, float]:
    """Coverage (with CP CI), per-class coverage, set size and set-type rates as flat metrics."""
    if c is None:
        return {}
    v: dict[str, float | None] = {"alpha": c.alpha, "q_neg": c.q_neg, "q_pos": c.q_pos,
                                  "mean_set_size": c.mean_set_size, "rate_empty": c.rate_empty,
                                  "rate_single": c.rate_single, "rate_both": c.rate_both}
    for name, p in (("coverage", c.coverage), ("coverage_neg", c.coverage_neg), ("coverage_pos", c.coverage_pos)):
        if p is not None:
            v.update({name: p.value, f"{name}_ci_low": p.ci_low, f"{name}_ci_high": p.ci_high})
    if c.coverage is not None:  # +1 / -1: the site released "<k missed" / "<k covered": a lower / upper bound
        v["coverage_censored"] = float(censored_direction(c.coverage.method))
    return {f"{prefix}{k}": float(x) for k, x in v.items() if _finite(x)}


def fold_values(f: FoldResult) -> dict[str, float]:
    """All scalar metrics of a fold: model, recalibrated model (``recal_``), baseline, ΔAUC, conformal."""
    out = site_metric_values(f.before)
    out.update(site_metric_values(f.after, "recal_"))
    out.update(site_metric_values(f.baseline, "baseline_"))
    if f.auc_difference:
        d = f.auc_difference
        out.update(delta_auc=d.difference, delta_auc_ci_low=d.ci_low, delta_auc_ci_high=d.ci_high, delta_auc_p=d.p_value)
    out.update(conformal_values(f.conformal))
    if f.recalibration:
        out.update({f"recalibration_{k}": float(v) for k, v in f.recalibration.params.items() if _finite(v)})
    return out


def meta_values(study: StudyResult, prefix: str = "") -> dict[str, float]:
    """Random-effects summaries as flat metrics: ``re_<key>`` (HKSJ CI), τ² with its Q-profile CI, I², PI."""
    out: dict[str, float] = {}
    for key, re_ in study.meta.items():
        out.update({f"{prefix}re_{key}": re_.estimate, f"{prefix}re_{key}_ci_low": re_.ci_low,
                    f"{prefix}re_{key}_ci_high": re_.ci_high})
        for extra in ("tau2", "tau2_ci_low", "tau2_ci_high", "i2", "pi_low", "pi_high"):
            val = getattr(re_, extra)
            if _finite(val):
                out[f"{prefix}re_{key}_{extra}"] = val
    return out


#: The study's answer in a few numbers, each the random-effects summary over the held-out sites (the meta key in
#: ``StudyResult.meta``): logged first, in a batch of their own, under names that sort before every other metric
#: of the parent run (``headline_`` < ``pooled_``, ``raw_``, ``re_``, ``volume_corr.``), and shown as a table at
#: the top of the run's description, so they lead the run page, the run table and the chart view.
HEADLINE = (("auc", "auc"), ("citl", "citl"), ("cal_slope", "cal_slope"), ("coverage", "coverage"),
            ("delta_auc", "auc_difference"))
HEADLINE_LABELS = {"auc": "AUC", "citl": "calibration-in-the-large", "cal_slope": "calibration slope",
                   "coverage": "conformal coverage", "delta_auc": "ΔAUC vs volume only"}


def headline_values(study: StudyResult) -> dict[str, float]:
    """``headline_<name>`` with ``_ci_low``/``_ci_high`` (HKSJ 95% CI) for each of :data:`HEADLINE` that the
    study could meta-analyse (a quantity without a summary is left out, never NaN)."""
    out: dict[str, float] = {}
    for name, meta_key in HEADLINE:
        summary = study.meta.get(meta_key)
        if summary is None or not _finite(summary.estimate):
            continue
        out[f"headline_{name}"] = float(summary.estimate)
        for bound in ("ci_low", "ci_high"):
            if _finite(getattr(summary, bound)):
                out[f"headline_{name}_{bound}"] = float(getattr(summary, bound))
    return out


def _headline_note(study: StudyResult) -> str:
    """Markdown table of :func:`headline_values` for the top of the parent run's description."""
    values = headline_values(study)
    rows = []
    for name, meta_key in HEADLINE:
        if f"headline_{name}" in values:
            ci = (f"{values[f'headline_{name}_ci_low']:.3f} to {values[f'headline_{name}_ci_high']:.3f}"
                  if f"headline_{name}_ci_high" in values and f"headline_{name}_ci_low" in values else "–")
            rows.append(f"| {HEADLINE_LABELS[name]} | `headline_{name}` | {values[f'headline_{name}']:.3f} | {ci} | "
                        f"{study.meta[meta_key].k} |")
    if not rows:
        return ""
    return ("**Headline results** (random effects over the held-out sites, 95% CI by HKSJ)\n\n"
            "| quantity | metric | estimate | 95% CI | sites |\n|---|---|---|---|---|\n" + "\n".join(rows) + "\n\n")


def site_table(study: StudyResult) -> dict[str, list[Any]]:
    """One row per held-out site (plus a pooled row): the parent run's table (child runs are collapsed)."""
    cols = ["site", "role", "n", "n_events", "auc", "auc_ci_low", "auc_ci_high", "auc_binning_bound",
            "sensitivity", "specificity", "ppv", "npv", "brier", "scaled_brier", "oe_ratio", "cal_citl", "cal_intercept",
            "cal_slope", "cal_slope_ci_low", "cal_slope_ci_high", "ece", "net_benefit", "recal_cal_slope", "recal_ece",
            "recal_brier", "conformal_coverage", "conformal_coverage_ci_low", "conformal_coverage_ci_high",
            "conformal_coverage_neg", "conformal_coverage_pos", "conformal_mean_set_size", "conformal_rate_empty",
            "conformal_rate_both", "baseline_auc", "delta_auc", "delta_auc_ci_low", "delta_auc_ci_high"]
    roles = {s.name: s.role for s in study.sites}
    rows = []
    for f in study.folds:
        vals = fold_values(f)
        rows.append([f.heldout_site, roles.get(f.heldout_site, "heldout")] + [vals.get(c) for c in cols[2:]])
    if study.pooled is not None:
        vals = site_metric_values(study.pooled)
        vals.update(site_metric_values(study.pooled_baseline, "baseline_"))
        rows.append(["pooled", "pooled"] + [vals.get(c) for c in cols[2:]])
    return {c: [r[i] for r in rows] for i, c in enumerate(cols)}


def _batch(
    client: Any,
    run_id: str,
    metrics: dict[str, float] | None = None,
    params: dict[str, str] | None = None,
    history: dict[str, list[float]] | None = None,
    step: int = 0,
) -> None:
    """Scalars (at ``step``), params and per-round series (``step`` = round, 1-based) in as few REST calls as
    the limits allow (1000 metrics / 100 params per request)."""
    from mlflow.entities import Metric, Param

    now = int(time.time() * 1000)
    ms = [Metric(_key(k), float(v), now, step) for k, v in (metrics or {}).items() if _finite(v)]
    for name, values in (history or {}).items():
        ms += [Metric(_key(name), float(v), now, i + 1) for i, v in enumerate(values) if _finite(v)]
    ps = [Param(k, v) for k, v in (params or {}).items()]
    while ms or ps:
        client.log_batch(run_id, metrics=ms[:1000], params=ps[:100], synchronous=True)
        ms, ps = ms[1000:], ps[100:]


def _figure(client: Any, run_id: str, fig: Any, path: str) -> None:
    client.log_figure(run_id, fig, path, save_kwargs={"dpi": 90})


def _fold_figures(client: Any, run_id: str, f: FoldResult) -> None:
    from dataclasses import replace

    from coordinator.validation import figures

    model = replace(f.before, site=f"{f.heldout_site} model")
    roc = [model] + ([replace(f.baseline, site=f"{f.heldout_site} volume only")] if f.baseline else [])
    _figure(client, run_id, figures.roc_figure(roc, f"ROC at held-out {f.heldout_site}"), "plots/roc.png")
    rel = [model] + ([replace(f.after, site=f"{f.heldout_site} recalibrated")] if f.after else [])
    _figure(client, run_id, figures.reliability_figure(rel, f"Reliability at {f.heldout_site}"), "plots/reliability.png")
    _figure(client, run_id, figures.decision_curve_figure([model], f"Decision curve at {f.heldout_site}"),
            "plots/decision_curve.png")


def coverage_label(f: FoldResult) -> str:
    """A held-out site's name with its mean set size and two-class rate: coverage is never shown alone."""
    c = f.conformal
    parts = [f"set size {c.mean_set_size:.2f}" if c and c.mean_set_size is not None else "",
             f"two-class {c.rate_both:.2f}" if c and c.rate_both is not None else ""]
    extra = ", ".join(x for x in parts if x)
    return f"{f.heldout_site} ({extra})" if extra else f.heldout_site


def _study_figures(client: Any, run_id: str, study: StudyResult) -> None:
    from coordinator.validation import figures

    folds = study.folds

    def forest(key: str, title: str, get: Any, ref: float | None, path: str, label: Any = None) -> None:
        rows = [((label or (lambda g: g.heldout_site))(f), *get(f)) for f in folds if get(f) is not None]
        if rows:
            labels, est, lo, hi = zip(*rows)
            fig = figures.forest_plot(labels, est, lo, hi, study.meta.get(key), title, ref)
            _figure(client, run_id, fig, path)

    forest("auc", "AUC per held-out site (random effects, logit scale)",
           lambda f: (f.before.auc.auc, f.before.auc.ci_low, f.before.auc.ci_high) if f.before.auc else None,
           0.5, "plots/forest_auc.png")
    forest("cal_slope", "Calibration slope per held-out site",
           lambda f: (f.before.calibration.slope.value, f.before.calibration.slope.ci_low, f.before.calibration.slope.ci_high)
           if f.before.calibration else None, 1.0, "plots/forest_calibration_slope.png")
    forest("auc_difference", "AUC(model) - AUC(volume only) per held-out site",
           lambda f: (f.auc_difference.difference, f.auc_difference.ci_low, f.auc_difference.ci_high)
           if f.auc_difference else None, 0.0, "plots/forest_delta_auc_vs_volume.png")
    forest("coverage", f"Conformal coverage per held-out site (target {1 - study.alpha:.2f})",
           lambda f: (f.conformal.coverage.value, f.conformal.coverage.ci_low, f.conformal.coverage.ci_high)
           if f.conformal and f.conformal.coverage and not censored_direction(f.conformal.coverage.method) else None,
           1 - study.alpha, "plots/forest_conformal_coverage.png",  # a coverage released as a bound is no point
           label=coverage_label)
    per_site = [f.before for f in folds]
    _figure(client, run_id, figures.roc_figure(per_site, "ROC per held-out site"), "plots/roc_heldout_sites.png")
    _figure(client, run_id, figures.reliability_figure(per_site + ([study.pooled] if study.pooled else []),
                                                       "Reliability per held-out site"), "plots/reliability.png")
    dcs = per_site + ([study.pooled] if study.pooled and study.pooled.decision_curve else [])
    _figure(client, run_id, figures.decision_curve_figure(dcs, "Decision curve per held-out site and pooled"),
            "plots/decision_curve.png")
    for d in study.harmonisation:
        _figure(client, run_id, figures.harmonisation_figure(study.harmonisation, d.site),
                f"plots/harmonisation/{_key(d.site)}.png")


def _model_signature(features: list[str], with_sets: bool) -> Any:
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    outputs = [ColSpec("double", "p_raw"), ColSpec("double", "p")]
    if with_sets:
        outputs += [ColSpec("boolean", "in_set_negative"), ColSpec("boolean", "in_set_positive")]
    return ModelSignature(inputs=Schema([ColSpec("double", f) for f in features]), outputs=Schema(outputs))


def log_final_model(final: FinalModel, work: Path, variant: str = "", reason: str = "") -> Any:
    """Log ``final`` as a pyfunc model in the active run. Returns mlflow's ModelInfo.

    The model's code is the file :mod:`coordinator.pyfunc_model` with the package ``fedmath`` shipped beside it
    (``code_paths``): the registered model runs the study's own forward pass, recalibration map and prediction
    sets, not a copy. Weights, standardisation and the recalibration vector travel as one ``.npz``.
    """
    import mlflow
    import pandas as pd

    from coordinator.study.calibrate import recal_vector

    w = final.weights
    if not w.layers or w.layers[-1][0].shape[0] != 1:
        raise ValueError("the final model's last layer must have exactly one output (the positive-class logit)")
    if w.layers[0][0].shape[1] != len(w.features):
        raise ValueError(f"first layer expects {w.layers[0][0].shape[1]} inputs but {len(w.features)} features are named")
    if w.activation != "relu":
        raise ValueError(f"the registered model runs fedmath.network (ReLU between layers), not {w.activation!r}")
    d = len(w.features)
    rec = final.recalibration
    arrays = {f"P{i}": np.asarray(a, float) for i, a in enumerate(x for layer in w.layers for x in layer)}
    arrays["mean"] = np.zeros(d) if w.mean is None else np.asarray(w.mean, float)
    arrays["scale"] = np.ones(d) if w.scale is None else np.asarray(w.scale, float)
    arrays["recal"] = recal_vector(rec) if rec else np.zeros(0)
    np.savez(work / "weights.npz", **arrays)
    cfg = {"features": list(w.features), "n_params": 2 * len(w.layers),
           "recalibration": rec.method if rec else "none", "recalibration_params": rec.params if rec else {},
           "q_neg": final.conformal_q_neg, "q_pos": final.conformal_q_pos, "description": w.description,
           "variant": variant, "variant_reason": reason, "sets_on": "p_raw"}
    (work / "config.json").write_text(json.dumps(cfg, indent=1))
    with_sets = final.conformal_q_neg is not None and final.conformal_q_pos is not None
    example = pd.DataFrame([arrays["mean"]], columns=list(w.features))
    reqs = [f"mlflow=={metadata.version('mlflow')}", f"numpy=={np.__version__}", f"pandas=={pd.__version__}"]
    return mlflow.pyfunc.log_model(
        name="model",
        python_model=str(PYFUNC_MODEL_FILE),
        code_paths=[str(Path(fedmath_package_dir()))],
        artifacts={"weights": str(work / "weights.npz"), "config": str(work / "config.json")},
        signature=_model_signature(list(w.features), with_sets),
        input_example=example,
        pip_requirements=reqs,
    )


def fedmath_package_dir() -> Path:
    """The folder of the ``fedmath`` package (shipped with the registered model)."""
    import fedmath

    return Path(fedmath.__file__).resolve().parent


def default_artifact_location(tracking_uri: str) -> str | None:
    """For ``sqlite:///<dir>/x.db``: ``<dir>/mlartifacts`` (else MLflow would write ./mlruns in the cwd)."""
    if tracking_uri.startswith("sqlite:///"):
        return (Path(tracking_uri[len("sqlite:///"):]).resolve().parent / "mlartifacts").as_uri()
    return None


def open_experiment(client: Any, name: str, tracking_uri: str, artifact_location: str | None = None) -> str:
    """The id of experiment ``name``, created when missing (``artifact_location``, else
    :func:`default_artifact_location`; used only at creation), tagged for MLflow 3's model-training view."""
    exp = client.get_experiment_by_name(name)
    location = artifact_location or default_artifact_location(tracking_uri)
    exp_id = exp.experiment_id if exp else client.create_experiment(name, artifact_location=location)
    client.set_experiment_tag(exp_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    return exp_id


def register_final_model(
    client: Any,
    tracking_uri: str,
    final_run_id: str,
    parent_run_id: str,
    log_model: Callable[[Path], Any],
    registered_model: str | None,
    alias: str,
    promote: bool,
    version_tags: dict[str, str],
) -> tuple[str | None, str | None]:
    """Log a study's final model into its final-model run and register it: ``log_model(work)`` logs the model in
    the active run (a temporary work folder for its files) and returns mlflow's ModelInfo; the model becomes a
    new version of ``registered_model`` (when named; tags ``version_tags`` with empty values left out, and
    ``parent_run_id``), and the registry ``alias`` moves to it only with ``promote``. The parent run is tagged
    ``model_uri`` and ``registered_model`` (where to find the version, and whether the alias moved).
    Returns (model URI, version)."""
    import mlflow

    model_uri = version = None
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(tracking_uri)
    try:
        with tempfile.TemporaryDirectory() as tmp, mlflow.start_run(run_id=final_run_id):
            model_uri = log_model(Path(tmp)).model_uri
        if registered_model:
            tags = {**{k: v for k, v in version_tags.items() if v}, "parent_run_id": parent_run_id}
            version = str(mlflow.register_model(model_uri, registered_model, tags=tags).version)
            if promote:
                client.set_registered_model_alias(registered_model, alias, version)
    finally:
        mlflow.set_tracking_uri(previous)
    if model_uri:
        client.set_tag(parent_run_id, "model_uri", model_uri)
    if version:
        where = f"{registered_model}@{alias} (version {version})" if promote else \
            f"{registered_model} version {version} (alias {alias!r} not moved: log with --promote)"
        client.set_tag(parent_run_id, "registered_model", where)
    return model_uri, version


def log_study(
    study: StudyResult,
    tracking_uri: str,
    experiment: str = "fedradval",
    registered_model: str | None = "fedradval-model",
    alias: str = "champion",
    artifact_location: str | None = None,
    promote: bool = False,
    final_model: FinalModel | None = None,
    final_variant: str = "",
    final_reason: str = "",
) -> LoggedStudy:
    """Log the whole study (parent, fold children, final-model child, registry entry). Returns the run ids.

    ``artifact_location`` is used only when the experiment is created; for a SQLite store it defaults to
    ``mlartifacts/`` beside the database file. A tracking server decides itself (``--artifacts-destination``).
    ``final_model`` (default ``study.final_model``) is registered as a new version; the registry ``alias``
    moves to it only with ``promote``. ``final_variant`` / ``final_reason`` say which variant it is and why.
    """
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    exp_id = open_experiment(client, experiment, tracking_uri, artifact_location)
    final_model = final_model if final_model is not None else study.final_model
    site_names = [s.name for s in study.sites]
    parent = client.create_run(exp_id, run_name=f"{study.study_name} [{study.protocol_id[:12]}]", tags={
        "protocol_id": study.protocol_id, "study": study.study_name, "sites": ",".join(site_names),
        "role": "study", "mlflow.note.content": _parent_note(study)})
    pid = parent.info.run_id
    params = flatten_params(study.protocol, "protocol.")
    params.update({f"version.{k}": v for k, v in package_versions().items()})
    for s in study.sites:
        params.update({f"site.{_key(s.name)}.n": str(s.n), f"site.{_key(s.name)}.n_events": str(s.n_events),
                       f"site.{_key(s.name)}.role": s.role})
    params.update({"n_sites": str(len(study.sites)), "conformal_alpha": str(study.alpha),
                   "privacy_k": str(study.k_min_cell)})
    pooled = site_metric_values(study.pooled, "pooled_")
    pooled.update(site_metric_values(study.pooled_baseline, "pooled_baseline_"))
    pooled.update(meta_values(study))
    for c in study.feature_volume:
        pooled[f"volume_corr.{_key(c.feature)}"] = c.r
    _batch(client, pid, metrics=headline_values(study))  # first, on their own: they lead every metric view
    _batch(client, pid, metrics=pooled, params=params)
    client.log_table(pid, data=site_table(study), artifact_file=SITE_TABLE_PATH)
    if study.feature_volume:
        client.log_table(pid, data={"feature": [c.feature for c in study.feature_volume],
                                    "r_with_volume": [c.r for c in study.feature_volume],
                                    "ci_low": [c.ci_low for c in study.feature_volume],
                                    "ci_high": [c.ci_high for c in study.feature_volume],
                                    "n": [c.n for c in study.feature_volume]},
                         artifact_file="tables/feature_volume_correlation.json")
    _study_figures(client, pid, study)

    fold_ids: dict[str, str] = {}
    for i, f in enumerate(study.folds):
        run = client.create_run(exp_id, run_name=f"fold {i + 1}: held out {f.heldout_site}", tags={
            "mlflow.parentRunId": pid, "heldout_site": f.heldout_site, "fold": str(i + 1), "role": "fold",
            "training_sites": ",".join(f.training_sites), "protocol_id": study.protocol_id})
        rid = run.info.run_id
        fold_ids[f.heldout_site] = rid
        fp = {"heldout_site": f.heldout_site, "training_sites": ",".join(f.training_sites)}
        if f.recalibration:
            fp["recalibration.method"] = f.recalibration.method
        _batch(client, rid, metrics=fold_values(f), params=fp, history=f.training_history)
        _fold_figures(client, rid, f)
        client.log_dict(rid, to_jsonable(f), "summary/fold.json")
        client.set_terminated(rid)

    final_id = model_uri = version = None
    if final_model is not None:
        run = client.create_run(exp_id, run_name="final model (all sites)", tags={
            "mlflow.parentRunId": pid, "role": "final_model", "protocol_id": study.protocol_id})
        final_id = run.info.run_id
        rec = final_model.recalibration
        fin = {"recalibration.method": rec.method if rec else "none", "conformal.sets_on": "p_raw"}
        if final_variant:
            fin.update({"variant": final_variant, "variant_reason": final_reason[:6000]})
        if rec:
            fin.update({f"recalibration.{k}": repr(v) for k, v in rec.params.items()})
        fin.update({"conformal.q_neg": repr(final_model.conformal_q_neg),
                    "conformal.q_pos": repr(final_model.conformal_q_pos)})
        _batch(client, final_id, params=fin, history=final_model.training_history)
        model_uri, version = register_final_model(
            client, tracking_uri, final_id, pid, lambda work: log_final_model(final_model, work, final_variant, final_reason),
            registered_model, alias, promote, {"protocol_id": study.protocol_id, "variant": final_variant})

    client.log_dict(pid, to_jsonable(study), SUMMARY_PATH)
    client.set_terminated(pid)
    return LoggedStudy(pid, fold_ids, final_id, model_uri, registered_model if version else None, version, exp_id)


def _parent_note(study: StudyResult) -> str:
    sites = ", ".join(f"{s.name} (n={s.n}, events={s.n_events})" for s in study.sites)
    return _headline_note(study) + (
        f"Federated external validation of study **{study.study_name}** (protocol `{study.protocol_id}`).\n\n"
        f"Sites: {sites}. Leave-one-site-out folds are child runs (expand the parent); the per-site table is "
        f"the artifact `{SITE_TABLE_PATH}`. No patient-level data left any site: every number comes from "
        f"aggregates with cells of at least k={study.k_min_cell} patients.")


#: Why the unharmonised final model is registered when the study's preferred variant is the harmonised one.
UNHARMONISED_REASON = (
    "registered the unharmonised (raw) final model: the harmonised model needs each new site's ComBat location "
    "and scale, estimated from a batch of that site's cases, which a single-case prediction service cannot "
    "estimate; the raw variant was validated at every held-out site alongside (its metrics are the raw_* ones "
    "of this study) and runs on a new site's features as they are")


def registered_variant(outcome: Any) -> tuple[str, str]:
    """(variant whose final model is registered, reason). The preferred variant, except that a harmonised one
    is replaced by the unharmonised one validated beside it (see :data:`UNHARMONISED_REASON`)."""
    preferred = outcome.preferred_variant
    if preferred == "harmonised" and "raw" in outcome.results and outcome.results["raw"].final_model is not None:
        return "raw", UNHARMONISED_REASON
    return preferred, "the study's preferred variant"


def log_outcome(outcome: Any, tracking_uri: str, promote: bool = False) -> LoggedStudy:
    """Log a :class:`coordinator.study.outcome.StudyOutcome`: the preferred variant as the study (:func:`log_study`,
    its final model registered), then every other variant into the same runs with the variant's name as prefix:
    held-out metrics in each fold run (``raw_auc``, ``raw_recal_cal_slope``, ``raw_conformal_coverage``, ...),
    pooled metrics in the parent (``raw_pooled_auc``, ...) and its summary as ``summary/study_<variant>.json``.
    One parent run thus compares harmonised and unharmonised models site by site. Parent tags ``variant``
    (the preferred one) and ``variants`` (all, preferred first) say which is which. The registered model is the
    final model of :func:`registered_variant` (tag ``registered_variant`` and its reason on the parent); the
    registry alias moves only with ``promote``."""
    from mlflow import MlflowClient

    if getattr(outcome, "kind", "") == SURVIVAL_KIND:
        from coordinator.survival_tracking import log_survival_outcome

        return log_survival_outcome(outcome, tracking_uri, promote)
    preferred = outcome.preferred_variant
    chosen, reason = registered_variant(outcome)
    study = outcome.results[preferred]
    tracking = dict((study.protocol or {}).get("tracking") or {})
    logged = log_study(study, tracking_uri, experiment=tracking.get("experiment", "fedradval"),
                       registered_model=tracking.get("registered_model", "fedradval-model"),
                       alias=tracking.get("model_alias", "champion"), promote=promote,
                       final_model=outcome.results[chosen].final_model, final_variant=chosen, final_reason=reason)
    client = MlflowClient(tracking_uri=tracking_uri)
    client.set_tag(logged.parent_run_id, "registered_variant", chosen)
    client.set_tag(logged.parent_run_id, "registered_variant_reason", reason)
    variants = [preferred] + [v for v in outcome.results if v != preferred]
    client.set_tag(logged.parent_run_id, "variant", preferred)
    client.set_tag(logged.parent_run_id, "variants", ",".join(variants))
    for variant in variants[1:]:
        other = outcome.results[variant]
        for fold in other.folds:
            run_id = logged.fold_run_ids.get(fold.heldout_site)
            if run_id is not None:
                _batch(client, run_id, metrics={f"{variant}_{k}": v for k, v in fold_values(fold).items()})
        _batch(client, logged.parent_run_id, metrics={**site_metric_values(other.pooled, f"{variant}_pooled_"),
                                                      **meta_values(other, f"{variant}_")})
        client.log_dict(logged.parent_run_id, to_jsonable(other), f"summary/study_{variant}.json")
    return logged
