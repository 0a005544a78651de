"""MLflow glue of a time-to-event study: log a :class:`~coordinator.study.outcome_survival.SurvivalOutcome`.

Layout, as for binary studies (:mod:`coordinator.tracking`):

* **parent run**: protocol fields as params, per-site counts (events, censored), pooled random-effects results
  of every measure (``pooled_harrell_c``, ``pooled_harrell_c_ci_low``, ..., ``pooled_auc@365`` →
  ``pooled_auc_365``), the per-site table ``tables/site_metrics.json``, forest plots of Harrell's and Uno's C,
  calibration at each horizon, and ``summary/study.json``;
* **one child run per held-out site**: its C statistics, ΔC vs volume only, calibration slope, per horizon
  AUC / Brier / O/E, and its Kaplan-Meier curves by predicted-risk group (``plots/km_by_risk_group.png``);
* **final model child run**: the all-sites Cox model as an ``mlflow.pyfunc`` (:mod:`coordinator.survival_pyfunc_model`,
  ``fedmath`` shipped) returning the linear predictor and the risk at each horizon, registered under the
  protocol's name (alias moved only with ``promote``).

A variant other than the preferred one is logged into the same runs with its name as prefix (``raw_``). The
registered model is the raw (unharmonised) variant when there is one, for the reason binary studies give
(:func:`coordinator.tracking.registered_variant`). The experiment and the registration (parent tags
``model_uri`` and ``registered_model``) are the binary studies' own (:func:`coordinator.tracking.open_experiment`,
:func:`coordinator.tracking.register_final_model`).
"""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from coordinator.study.outcome_survival import KIND, SurvivalOutcome, SurvivalVariantResult
from coordinator.tracking import (
    SITE_TABLE_PATH, SUMMARY_PATH, LoggedStudy, _batch, _figure, _key, fedmath_package_dir, flatten_params,
    open_experiment, package_versions, register_final_model, registered_variant,
)
from coordinator.validation.results import RandomEffects, to_jsonable
from coordinator.validation.survival_pooling import HORIZON_MEASURES, SITE_MEASURES

SURVIVAL_PYFUNC_FILE = Path(__file__).resolve().parent / "survival_pyfunc_model.py"


def _metric_name(measure: str) -> str:
    return measure.replace("@", "_")


def pooled_values(pooled: dict[str, RandomEffects | None], prefix: str = "") -> dict[str, float]:
    """Every pooled measure: estimate, CI, prediction interval, τ², I² and the number of sites."""
    out = {}
    for measure, re_ in pooled.items():
        if re_ is None:
            continue
        name = f"{prefix}pooled_{_metric_name(measure)}"
        out.update({name: re_.estimate, f"{name}_ci_low": re_.ci_low, f"{name}_ci_high": re_.ci_high,
                    f"{name}_k": re_.k})
        for field in ("pi_low", "pi_high", "tau2", "i2"):
            value = getattr(re_, field)
            if value is not None:
                out[f"{name}_{field}"] = value
    return out


def site_values(result: dict, horizons: list[float], prefix: str = "") -> dict[str, float]:
    """One held-out site's released measures as flat metrics (withheld ones absent)."""
    out = {f"{prefix}n": result["n"], f"{prefix}n_events": result["n_events"]}
    for measure, (path, estimate, se, _) in SITE_MEASURES.items():
        entry = result[path[0]]
        if entry and estimate in entry:
            out[f"{prefix}{measure}"], out[f"{prefix}{measure}_se"] = entry[estimate], entry[se]
    for horizon in horizons:
        entry = result["horizons"].get(float(horizon), {})
        for measure, (name, estimate, se, _) in HORIZON_MEASURES.items():
            value = entry.get(name)
            if value and estimate in value:
                out[f"{prefix}{measure}_{horizon:g}"] = value[estimate]
                out[f"{prefix}{measure}_{horizon:g}_{se}"] = value[se]
    return out


def site_table(outcome: SurvivalOutcome, result: SurvivalVariantResult) -> dict[str, list[Any]]:
    """Per held-out site: counts and every released measure (blank where withheld)."""
    rows = {site: site_values(r, outcome.horizons) for site, r in sorted(result.heldout.items())}
    columns = sorted({c for values in rows.values() for c in values}, key=lambda c: (c not in ("n", "n_events"), c))
    table: dict[str, list[Any]] = {"site": list(rows)}
    for column in columns:
        table[column] = [values.get(column) for values in rows.values()]
    return table


def log_survival_model(outcome: SurvivalOutcome, variant: str, work: Path) -> Any:
    """Log the variant's final Cox model as a pyfunc in the active run; returns mlflow's ModelInfo."""
    import mlflow
    import pandas as pd
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    model = outcome.results[variant].final_model
    if model is None:
        raise ValueError(f"the {variant} variant has no final model to register")
    cfg = {"model": model.to_dict(), "horizons": outcome.horizons, "time_unit": outcome.time_unit,
           "variant": variant, "protocol_id": outcome.protocol_id}
    (work / "config.json").write_text(json.dumps(cfg, indent=1))
    outputs = [ColSpec("double", "linear_predictor")] + [ColSpec("double", f"risk_{h:g}") for h in outcome.horizons]
    signature = ModelSignature(inputs=Schema([ColSpec("double", f) for f in model.features]), outputs=Schema(outputs))
    reqs = [f"mlflow=={metadata.version('mlflow')}", f"numpy=={np.__version__}", f"pandas=={pd.__version__}"]
    return mlflow.pyfunc.log_model(
        name="model", python_model=str(SURVIVAL_PYFUNC_FILE), code_paths=[str(fedmath_package_dir())],
        artifacts={"config": str(work / "config.json")}, signature=signature,
        input_example=pd.DataFrame([model.centre], columns=list(model.features)), pip_requirements=reqs)


def _figures(client: Any, run_id: str, outcome: SurvivalOutcome, result: SurvivalVariantResult) -> None:
    from coordinator.validation import survival_figures as figures

    for measure in ("harrell", "uno"):
        pooled = result.pooled.get(f"{measure}_c")
        _figure(client, run_id, figures.concordance_forest_figure(result.heldout, pooled, measure),
                f"plots/forest_{measure}_c.png")
    for horizon in outcome.horizons:
        _figure(client, run_id, figures.calibration_at_horizon_figure(result.heldout, horizon, outcome.time_unit),
                f"plots/calibration_at_{horizon:g}.png")


def log_survival_outcome(outcome: SurvivalOutcome, tracking_uri: str, promote: bool = False) -> LoggedStudy:
    """Log the whole survival study (parent, held-out site children, final model, registry)."""
    from mlflow import MlflowClient

    from coordinator.validation.survival_figures import km_by_risk_group_figure

    tracking = dict(outcome.protocol.get("tracking") or {})
    client = MlflowClient(tracking_uri=tracking_uri)
    exp_id = open_experiment(client, tracking.get("experiment", "fedradval"), tracking_uri)
    preferred = outcome.preferred_variant
    result = outcome.results[preferred]
    sites = ", ".join(f"{s} (n={c['n']}, events={c['n_pos']})" for s, c in sorted(outcome.counts.items()))
    parent = client.create_run(exp_id, run_name=f"{outcome.study_name} [{outcome.protocol_id[:12]}]", tags={
        "protocol_id": outcome.protocol_id, "study": outcome.study_name, "sites": ",".join(outcome.sites),
        "role": "study", "outcome": KIND, "variant": preferred, "variants": ",".join(outcome.results),
        "mlflow.note.content": (
            f"Federated external validation of the time-to-event study **{outcome.study_name}** (stratified Cox, "
            f"horizons {', '.join(f'{h:g}' for h in outcome.horizons)} {outcome.time_unit}). Sites: {sites}. Held-out "
            f"sites are child runs. Every number comes from aggregates with cells of at least k={outcome.k} patients.")})
    pid = parent.info.run_id
    params = flatten_params(outcome.protocol, "protocol.")
    params.update({f"version.{k}": v for k, v in package_versions().items()})
    for site, c in outcome.counts.items():
        params.update({f"site.{_key(site)}.n": str(c["n"]), f"site.{_key(site)}.n_events": str(c["n_pos"]),
                       f"site.{_key(site)}.n_censored": str(c["n_neg"])})
    params.update({"n_sites": str(len(outcome.counts)), "privacy_k": str(outcome.k), "cox_rounds": str(outcome.cox_rounds)})
    metrics = pooled_values(result.pooled)
    for variant, other in outcome.results.items():
        if variant != preferred:
            metrics.update(pooled_values(other.pooled, f"{variant}_"))
    _batch(client, pid, metrics=metrics, params=params)
    client.log_table(pid, data=site_table(outcome, result), artifact_file=SITE_TABLE_PATH)
    _figures(client, pid, outcome, result)

    fold_ids: dict[str, str] = {}
    for i, (site, site_result) in enumerate(sorted(result.heldout.items())):
        run = client.create_run(exp_id, run_name=f"fold {i + 1}: held out {site}", tags={
            "mlflow.parentRunId": pid, "heldout_site": site, "fold": str(i + 1), "role": "fold",
            "training_sites": ",".join(result.training_sites.get(site, [])), "protocol_id": outcome.protocol_id})
        rid = fold_ids[site] = run.info.run_id
        values = site_values(site_result, outcome.horizons)
        for variant, other in outcome.results.items():
            if variant != preferred and site in other.heldout:
                values.update(site_values(other.heldout[site], outcome.horizons, f"{variant}_"))
        _batch(client, rid, metrics=values, params={"heldout_site": site})
        _figure(client, rid, km_by_risk_group_figure(site, site_result["km_by_risk_group"], outcome.time_unit),
                "plots/km_by_risk_group.png")
        client.log_dict(rid, to_jsonable(site_result), "summary/heldout.json")
        client.set_terminated(rid)

    chosen, reason = registered_variant(outcome)
    final_id = model_uri = version = None
    registered = tracking.get("registered_model", "fedradval-model")
    alias = tracking.get("model_alias", "champion")
    if outcome.results[chosen].final_model is not None:
        run = client.create_run(exp_id, run_name="final model (all sites)", tags={
            "mlflow.parentRunId": pid, "role": "final_model", "protocol_id": outcome.protocol_id})
        final_id = run.info.run_id
        _batch(client, final_id, params={"variant": chosen, "variant_reason": reason[:6000],
                                         "horizons": ",".join(f"{h:g}" for h in outcome.horizons),
                                         "time_unit": outcome.time_unit})
        model_uri, version = register_final_model(
            client, tracking_uri, final_id, pid, lambda work: log_survival_model(outcome, chosen, work),
            registered, alias, promote, {"protocol_id": outcome.protocol_id, "variant": chosen})
        client.set_tag(pid, "registered_variant", chosen)
        client.set_tag(pid, "registered_variant_reason", reason)
    client.log_dict(pid, to_jsonable(outcome), SUMMARY_PATH)
    client.set_terminated(pid)
    return LoggedStudy(pid, fold_ids, final_id, model_uri, registered if version else None, version, exp_id)
