"""The message contract of a time-to-event study: the Cox, baseline and held-out survival phases.

Declared into :data:`protocols.contract.CONTRACT` (imported by it), so both sides check these messages with
:func:`protocols.contract.check_message` like every other phase. Sizes depend only on the protocol and the
handshake: a model's coefficient count (model features, or 1 for the volume-only model), the number of
horizons, the candidate time grid (:data:`GRID_STEPS` equal steps up to the last horizon plus the horizons),
the decision-curve thresholds and the calibration groups (validation.reliability_bins); never on patients.

Phases, in order (after the handshake and, with harmonisation.combat, the two ComBat rounds):

* ``cox`` (step 1, 2, ...): the coordinator sends every model's coefficients β; each training site returns its
  stratum's gradient, information and log partial likelihood at β (:mod:`site_client.evaluation.survival_cox`).
  Step 1 also carries the ComBat scale and the standardisation (as the first binary training message) and its
  reply the feature sums that fix the model's centre.
* ``cox-baseline``: β, centre and the candidate grid; each training site returns its releasable grid points
  and Breslow cumulative hazard there (every interval 0 or >= k events) and its patient count.
* ``cox-evaluate``: the held-out site receives each model of its fold (β, centre, carried baseline) with the
  paired volume-only model and returns the aggregates of
  :func:`site_client.evaluation.survival_validation.heldout_survival_metrics`, flattened here by
  :func:`flatten_heldout` and read back by :func:`read_heldout` (one home for the layout).

Withheld values are absent keys with a flag (``.../not_estimable``, ``.../withheld``), never a guess; a net
benefit withheld at one threshold is NaN in its array (the one field that allows NaN).
"""

from __future__ import annotations

import numpy as np

from protocols.contract import (
    CONTRACT, EVAL_MODELS, FIT, HELDOUT_FOLDS, MODELS, PLAN, REPLY, REQUEST, SCALE, STD, STEP, TRAIN, TRAIN_FOLDS,
    Dims,
    Field, Upto, _declare, _flag, _float, _int, _models, _names, _folds,
)

COX, COX_BASELINE, COX_EVALUATE = "cox", "cox-baseline", "cox-evaluate"
SURVIVAL_PHASES = (COX, COX_BASELINE, COX_EVALUATE)

BETA, CENTRE, GRID, TERMS_PREFIX, BASE, BL_TIMES, BL_HAZARD, SURV = (
    "beta", "centre", "grid", "cox", "base", "bltimes", "blhaz", "surv")

#: Equal steps of the candidate grid up to the last horizon (before each site merges intervals to respect k).
GRID_STEPS = 24
#: Most Newton evaluations of one Cox fit (steps and halvings together) the sites serve.
MAX_COX_STEPS = 400

#: Per-site measures and their statistics, as in ``heldout_survival_metrics``' result.
SITE_STATS = {"harrell": ("c", "se"), "uno": ("c", "se"),
              "delta_c_vs_volume": ("c_model", "c_reference", "delta", "se"),
              "calibration_slope": ("slope", "se")}
#: Per-horizon measures with an estimate and its SE.
HORIZON_STATS = {"auc": ("auc", "se"), "brier": ("brier", "se"), "oe": ("oe", "log_oe_se")}
CALIBRATION_LISTS = ("n", "predicted", "observed", "observed_se")
RISK_GROUPS = ("low", "intermediate", "high")


def model_parameters(dims: Dims, model: str) -> int:
    """Coefficients of a Cox model: one per model feature, or 1 for the volume-only model."""
    return 1 if model.endswith("/volume") else dims.n_model_features


def grid_limit(dims: Dims) -> int:
    """Most candidate grid points: GRID_STEPS equal steps plus the horizons."""
    return GRID_STEPS + dims.n_horizons


def _beta(prefix: str, doc: str, each: str) -> Field:
    return Field(f"{prefix}/{{model}}", "array", doc, dtype="f",
                 shape=lambda d, parts: (model_parameters(d, parts["model"]),), shape_text="(p_model,)",
                 required=True, each=each)


_grid = Upto(grid_limit, "<= 24 + horizons")
_grid1 = Upto(lambda d: grid_limit(d) + 1, "<= 25 + horizons")
_groups = Upto(lambda d: d.reliability_bins, "<= reliability bins")
_curve = Upto(lambda d: d.n_curve_thresholds, "<= decision-curve thresholds")
_GRID_FIELD = Field(GRID, "array", "candidate grid times (public: from the horizons)", dtype="f", shape=_grid,
                    shape_text="<= 24 + horizons", lo=0.0, required=True)

# the first Cox message carries what the first training message carries: standardisation, the ComBat scale,
# and (batches only, no covariates) the ComBat plans and fits the coordinator derived from the handshake
_first_message = [f for f in CONTRACT[(TRAIN, REQUEST)].fields if f.template.split("/")[0] in (SCALE, STD, PLAN, FIT)]

_declare(COX, REQUEST, [
    _int(STEP, "Newton evaluation (1: first, carries the standardisation)", lo=1, hi=MAX_COX_STEPS, required=True),
    _names(MODELS, "Cox models this site evaluates this step", _models, required=True),
    _names(HELDOUT_FOLDS, "folds this site is held out of (step 1)", _folds),
    _names(TRAIN_FOLDS, "folds this site trains (step 1)", _folds),
    _beta(BETA, "coefficients β at which to evaluate the stratum", MODELS),
    *_first_message,
])
_declare(COX, REPLY, [
    Field(TERMS_PREFIX + "/{model}/grad", "array", "gradient of the stratum's log partial likelihood", dtype="f",
          shape=lambda d, parts: (model_parameters(d, parts["model"]),), shape_text="(p_model,)", required=True,
          each=MODELS),
    Field(TERMS_PREFIX + "/{model}/info", "array", "information matrix of the stratum", dtype="f",
          shape=lambda d, parts: (model_parameters(d, parts["model"]),) * 2, shape_text="(p_model, p_model)",
          required=True, each=MODELS),
    _float(TERMS_PREFIX + "/{model}/loglik", "log partial likelihood (-inf when every risk score underflowed)",
           finite=False, required=True, each=MODELS),
    _int(TERMS_PREFIX + "/{model}/n", "patients in the stratum", lo=1, required=True, each=MODELS, counts=True),
    _int(TERMS_PREFIX + "/{model}/n_events", "events in the stratum", required=True, each=MODELS, counts=True),
    Field(TERMS_PREFIX + "/{model}/xsum", "array", "sum of each model input over the site's patients (step 1)",
          dtype="f", shape=lambda d, parts: (model_parameters(d, parts["model"]),), shape_text="(p_model,)"),
])
_declare(COX_BASELINE, REQUEST, [
    _names(MODELS, "fitted Cox models this site trained", _models, required=True),
    _beta(BETA, "fitted coefficients β", MODELS),
    _beta(CENTRE, "the model's centre (pooled training mean of its inputs)", MODELS),
    _GRID_FIELD,
])
_declare(COX_BASELINE, REPLY, [
    _flag(BASE + "/{model}/released", "1 when a grid respecting k exists here (else nothing else is sent)",
          required=True, each=MODELS),
    Field(BASE + "/{model}/points", "array", "the site's releasable grid points", dtype="f", shape=_grid,
          shape_text="<= 24 + horizons", lo=0.0),
    Field(BASE + "/{model}/hazard", "array", "Breslow cumulative hazard at those points, patient at the centre",
          dtype="f", shape=_grid, shape_text="<= 24 + horizons", lo=0.0),
    _int(BASE + "/{model}/n", "patients", lo=1, counts=True),
])


def _stat_fields(prefix: str, stats: dict[str, tuple[str, ...]], flag: str) -> list[Field]:
    out = []
    for measure, names in stats.items():
        out += [_float(f"{prefix}/{measure}/{name}", f"{measure}: {name}") for name in names]
        out.append(_flag(f"{prefix}/{measure}/{flag}", f"1 when {measure} is withheld ({flag})"))
    return out


_s = SURV + "/{model}"
_h = _s + "/h/{j}"
_declare(COX_EVALUATE, REQUEST, [
    _names(EVAL_MODELS, "models of the folds this site is held out of (radiomic and volume-only)", _models,
           required=True),
    _beta(BETA, "coefficients β", EVAL_MODELS),
    _beta(CENTRE, "the model's centre", EVAL_MODELS),
    Field(BL_TIMES + "/{model}", "array", "carried baseline: grid times from 0", dtype="f", shape=_grid1,
          shape_text="<= 25 + horizons", lo=0.0, required=True, each=EVAL_MODELS),
    Field(BL_HAZARD + "/{model}", "array", "carried baseline: cumulative hazard", dtype="f", shape=_grid1,
          shape_text="<= 25 + horizons", lo=0.0, required=True, each=EVAL_MODELS),
    _GRID_FIELD,
])
_declare(COX_EVALUATE, REPLY, [
    _flag(_s + "/released", "0 when the site has fewer than k events or patients (nothing else is sent)"),
    _int(_s + "/n", "patients", counts=True),
    _int(_s + "/n_events", "events", counts=True),
    *_stat_fields(_s, SITE_STATS, "not_estimable"),
    _flag(_h + "/suppressed", "1 when fewer than k patients are followed beyond t* or fewer than k events by t*"),
    *_stat_fields(_h, HORIZON_STATS, "withheld"),
    Field(_h + "/calibration/n", "array", "patients per merged risk group", dtype="i", shape=_groups,
          shape_text="<= reliability bins", lo=0, counts=True),
    *[Field(_h + f"/calibration/{name}", "array", f"calibration at t*: {name} per risk group", dtype="f",
            shape=_groups, shape_text="<= reliability bins") for name in CALIBRATION_LISTS[1:]],
    _flag(_h + "/calibration/withheld", "1 when no grouping respects k"),
    Field(_h + "/net_benefit/thresholds", "array", "threshold risks", dtype="f", shape=_curve,
          shape_text="<= thresholds", lo=0.0, hi=1.0),
    Field(_h + "/net_benefit/model", "array", "net benefit of the model (NaN: withheld, a group of 1..k-1)",
          dtype="f", shape=_curve, shape_text="<= thresholds", finite=False),
    Field(_h + "/net_benefit/treat_all", "array", "net benefit of treating all", dtype="f", shape=_curve,
          shape_text="<= thresholds"),
    Field(_s + "/km/{grp}/times", "array", "Kaplan-Meier of a predicted-risk tertile: released grid times",
          dtype="f", shape=_grid1, shape_text="<= 25 + horizons", lo=0.0),
    Field(_s + "/km/{grp}/survival", "array", "Kaplan-Meier survival at those times", dtype="f", shape=_grid1,
          shape_text="<= 25 + horizons", lo=0.0, hi=1.0),
    _int(_s + "/km/{grp}/n", "patients in the tertile", counts=True),
    _flag(_s + "/km/{grp}/withheld", "1 when the tertile's curve has no point respecting k"),
])


# ---------------------------------------------------------------------------------------------------------
# The held-out result as a flat message and back
# ---------------------------------------------------------------------------------------------------------
def flatten_heldout(model: str, result: dict | None, horizons: list[float]) -> dict:
    """``heldout_survival_metrics``' nested result (None: nothing releasable) as flat ``surv/<model>/...`` keys."""
    base = f"{SURV}/{model}"
    if result is None:
        return {f"{base}/released": 0}
    out: dict = {f"{base}/released": 1, f"{base}/n": int(result["n"]), f"{base}/n_events": int(result["n_events"])}

    def stats(prefix: str, entry: dict | None, names: tuple[str, ...], flag: str) -> None:
        if not entry or "withheld" in entry:
            out[f"{prefix}/{flag}"] = 1
        else:
            out.update({f"{prefix}/{name}": float(entry[name]) for name in names})

    for measure, names in SITE_STATS.items():
        stats(f"{base}/{measure}", result[measure], names, "not_estimable")
    for j, horizon in enumerate(horizons):
        h = f"{base}/h/{j}"
        entry = result["horizons"][float(horizon)]
        if entry.get("suppressed"):
            out[f"{h}/suppressed"] = 1
            continue
        for measure, names in HORIZON_STATS.items():
            stats(f"{h}/{measure}", entry[measure], names, "withheld")
        calibration = entry["calibration"]
        if calibration is None:
            out[f"{h}/calibration/withheld"] = 1
        else:
            out[f"{h}/calibration/n"] = np.asarray(calibration["n"], dtype=np.int64)
            out.update({f"{h}/calibration/{name}": np.asarray(calibration[name], dtype=np.float64)
                        for name in CALIBRATION_LISTS[1:]})
        nb = entry["net_benefit"]
        out[f"{h}/net_benefit/thresholds"] = np.asarray(nb["thresholds"], dtype=np.float64)
        out[f"{h}/net_benefit/model"] = np.array([np.nan if v is None else v for v in nb["model"]], dtype=np.float64)
        out[f"{h}/net_benefit/treat_all"] = np.asarray(nb["treat_all"], dtype=np.float64)
    for group, curve in result["km_by_risk_group"].items():
        g = f"{base}/km/{group}"
        if curve is None:
            out[f"{g}/withheld"] = 1
        else:
            out.update({f"{g}/times": np.asarray(curve["times"], dtype=np.float64),
                        f"{g}/survival": np.asarray(curve["survival"], dtype=np.float64), f"{g}/n": int(curve["n"])})
    return out


def read_heldout(payload: dict, model: str, horizons: list[float]) -> dict | None:
    """Inverse of :func:`flatten_heldout` (the coordinator's view; None when the site released nothing)."""
    base = f"{SURV}/{model}"
    if not payload.get(f"{base}/released"):
        return None

    def stats(prefix: str, names: tuple[str, ...], flag: str) -> dict | None:
        if payload.get(f"{prefix}/{flag}") or f"{prefix}/{names[0]}" not in payload:
            return None if flag == "withheld" else {"withheld": "not_estimable"}
        return {name: float(payload[f"{prefix}/{name}"]) for name in names}

    result: dict = {"n": int(payload[f"{base}/n"]), "n_events": int(payload[f"{base}/n_events"]), "horizons": {},
                    "km_by_risk_group": {}}
    for measure, names in SITE_STATS.items():
        result[measure] = stats(f"{base}/{measure}", names, "not_estimable")
    for j, horizon in enumerate(horizons):
        h = f"{base}/h/{j}"
        if payload.get(f"{h}/suppressed") or f"{h}/net_benefit/model" not in payload:
            result["horizons"][float(horizon)] = {"suppressed": 1}
            continue
        entry = {measure: stats(f"{h}/{measure}", names, "withheld") for measure, names in HORIZON_STATS.items()}
        for measure in ("auc", "brier"):  # the site marks these not estimable, O/E withheld (< k events)
            if entry[measure] is None:
                entry[measure] = {"withheld": "not_estimable"}
        entry["calibration"] = None if f"{h}/calibration/n" not in payload else {
            name: np.asarray(payload[f"{h}/calibration/{name}"]).tolist() for name in CALIBRATION_LISTS}
        model_nb = np.asarray(payload[f"{h}/net_benefit/model"], dtype=float)
        entry["net_benefit"] = {"thresholds": np.asarray(payload[f"{h}/net_benefit/thresholds"]).tolist(),
                                "model": [None if np.isnan(v) else float(v) for v in model_nb],
                                "treat_all": np.asarray(payload[f"{h}/net_benefit/treat_all"]).tolist()}
        result["horizons"][float(horizon)] = entry
    for group in RISK_GROUPS:
        g = f"{base}/km/{group}"
        result["km_by_risk_group"][group] = None if f"{g}/times" not in payload else {
            "times": np.asarray(payload[f"{g}/times"]).tolist(), "survival": np.asarray(payload[f"{g}/survival"]).tolist(),
            "n": int(payload[f"{g}/n"])}
    return result
