"""The site's query budget: every study request is charged to the privacy ledger and checked against the bounds
the approved protocol fixes (``privacy:`` section) before any data is touched.

Per approval (grant): at most ``runs`` studies. Per run: each training round ``1..model.rounds`` once; each
recalibration step ``1..privacy.recalibration_rounds`` once; at most ``privacy.candidate_points`` recalibration
points per model and message; each model evaluated at most ``privacy.evaluations_per_model`` times in the first
calibration message and as often in ``evaluate``; a message names at most the models the study design implies
(``models_per_message``) and a run at most ``distinct_models``. Every model the site trains or evaluates has a
steepness (:func:`steepness`: how fast its logit can change per SD of the site's own data) of at most
``privacy.max_steepness``; received standardisation SDs are finite and positive; applied recalibration parameters
lie in the box of :func:`in_recalibration_box` (candidate points outside it are not evaluated:
:mod:`site_client.study.evaluate` omits their terms).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from protocols.models import FEATURE_SETS, params_from_payload
from protocols.payload import Payload, prefixes, unnest
from protocols.schema import Protocol
from site_client.privacy.ledger import BudgetExceeded, Ledger, run_key

IN_PROCESS_GRANT = "in-process"


@dataclass(frozen=True)
class Budget:
    """The limits one approved protocol allows at one site."""

    runs: int
    training_rounds: int
    recalibration_rounds: int
    candidate_points: int
    evaluations_per_model: int
    models_per_message: int      # a site trains in at most max_sites folds (its LOSO folds + all-sites)
    evaluated_per_message: int   # and validates the models of one fold (its own, or all-sites when external)
    distinct_models: int         # folds (max_sites + all-sites) × variants × feature sets
    max_steepness: float

    @classmethod
    def from_protocol(cls, protocol: Protocol, runs: int | None = None) -> "Budget":
        p = protocol.privacy
        per_fold = (2 if protocol.harmonisation.combat else 1) * len(FEATURE_SETS)
        return cls(
            runs=int(runs if runs is not None else p.studies_per_approval),
            training_rounds=protocol.model.rounds,
            recalibration_rounds=p.recalibration_rounds,
            candidate_points=p.candidate_points,
            evaluations_per_model=p.evaluations_per_model,
            models_per_message=p.max_sites * per_fold,
            evaluated_per_message=per_fold,
            distinct_models=(p.max_sites + 1) * per_fold,
            max_steepness=p.max_steepness,
        )


def in_recalibration_box(protocol: Protocol, method: str, params: np.ndarray) -> bool:
    """Platt (a, b) in [-B, B]² with B = ``privacy.platt_bound``; temperature |log T| <=
    ``privacy.max_abs_log_temperature``; identity (no parameters) always."""
    params = np.asarray(params, dtype=np.float64).ravel()
    if not np.all(np.isfinite(params)):
        return False
    if method == "platt":
        return params.size == 2 and bool(np.all(np.abs(params) <= protocol.privacy.platt_bound))
    if method == "temperature":
        return params.size == 1 and abs(float(params[0])) <= protocol.privacy.max_abs_log_temperature
    return params.size == 0


def steepness(params: list[np.ndarray], input_scale: np.ndarray) -> float:
    """Upper bound on the model's Lipschitz constant in the site's own SD units: how much the logit f can change
    when the inputs move by one SD of the site's data (Euclidean, so also for one feature alone).

    The model sees z = (x - μ) / sd; with x = own_sd·u, dz/du = own_sd / sd = ``input_scale``. For dense layers
    with ReLU (1-Lipschitz) between them, Lip(f) <= ‖W1·diag(input_scale)‖₂ · ∏_{l>=2} ‖W_l‖₂ (spectral norms).
    inf when a parameter is not finite."""
    if not all(np.all(np.isfinite(np.asarray(p, dtype=np.float64))) for p in params):
        return float("inf")
    weights = [np.atleast_2d(np.asarray(w, dtype=np.float64)) for w in params[0::2]]
    if not weights:
        return float("inf")
    bound = float(np.linalg.norm(weights[0] * np.asarray(input_scale, dtype=np.float64)[None, :], 2))
    for w in weights[1:]:
        bound *= float(np.linalg.norm(w, 2))
    return bound


class BudgetCheck:
    """Charges one request to the ledger; each ``_phase`` method raises :class:`BudgetExceeded` on a violation."""

    def __init__(self, ledger: Ledger, budget: Budget, protocol: Protocol, protocol_id: str,
                 run_id: int | None, grant: str) -> None:
        self.ledger, self.budget, self.protocol, self.pid = ledger, budget, protocol, protocol_id
        self.run_id, self.grant = run_id, grant
        self.state = ledger.run(run_id)

    def refuse(self, phase: str, budget: str, limit: object, detail: str) -> BudgetExceeded:
        return self.ledger.refuse(self.run_id, phase, BudgetExceeded(self.pid, budget, limit, detail))

    def start_run(self, phase: str) -> None:
        runs = self.ledger.data["grants"].setdefault(self.grant, [])
        key = run_key(self.run_id)
        if key in runs:
            return
        if len(runs) >= self.budget.runs:
            raise self.refuse(phase, "studies per approval", self.budget.runs,
                              f"run {key} would be study {len(runs) + 1} under approval {self.grant}; "
                              "`site-client approve --runs N` renews the approval")
        runs.append(key)

    def _models(self, phase: str, models: list[str], limit: int, what: str) -> None:
        if len(set(models)) != len(models):
            raise self.refuse(phase, f"{what} named once per message", 1, f"repeated model names in {models}")
        if len(models) > limit:
            raise self.refuse(phase, f"{what} per message", limit, f"{len(models)} models named")
        known = self.state["models"]
        new = [m for m in models if m not in known]
        if len(known) + len(new) > self.budget.distinct_models:
            raise self.refuse(phase, "models per study", self.budget.distinct_models,
                              f"{len(known)} models seen, {len(new)} new")
        known.extend(new)

    def _weights(self, phase: str, payload: Payload, models: list[str], scales: dict[str, np.ndarray]) -> None:
        for model in models:
            try:
                params = params_from_payload(payload, f"w/{model}")
                scale = scales[model]
                value = steepness(params, scale) if params and params[0].ndim == 2 and params[0].shape[1] == scale.size \
                    else float("inf")
            except (KeyError, ValueError, IndexError):
                value = float("inf")
            if not value <= self.budget.max_steepness:
                raise self.refuse(phase, "model steepness (privacy.max_steepness)", self.budget.max_steepness,
                                  f"model {model}: steepness {value:.6g} logit per own SD")

    def _points(self, phase: str, payload: Payload, models: list[str]) -> None:
        for model in models:
            if f"par/{model}" in payload:
                points = np.atleast_2d(np.asarray(payload[f"par/{model}"], dtype=np.float64))
                if points.shape[0] > self.budget.candidate_points:
                    raise self.refuse(phase, "recalibration candidate points per model and round",
                                      self.budget.candidate_points, f"model {model}: {points.shape[0]} points")

    def _evaluations(self, phase: str, models: list[str]) -> None:
        counts = self.state["evaluations"]
        for model in models:
            key = f"{phase}|{model}"
            if counts.get(key, 0) >= self.budget.evaluations_per_model:
                raise self.refuse(phase, "evaluations per model", self.budget.evaluations_per_model,
                                  f"model {model} already evaluated {counts[key]} time(s) in {phase}")
        for model in models:
            counts[f"{phase}|{model}"] = counts.get(f"{phase}|{model}", 0) + 1

    def train(self, payload: Payload, scales: dict[str, np.ndarray]) -> None:
        round_no = int(payload.get("round", 0))
        if not 1 <= round_no <= self.budget.training_rounds or round_no in self.state["train_rounds"]:
            raise self.refuse("train", "training rounds (each of 1..model.rounds once)", self.budget.training_rounds,
                              f"round {round_no}; rounds served {self.state['train_rounds']}")
        models = [str(m) for m in payload.get("models", [])]
        self._models("train", models, self.budget.models_per_message, "trained models")
        self._standardisation(payload)
        self._weights("train", payload, models, scales)
        self.state["train_rounds"].append(round_no)

    def _standardisation(self, payload: Payload) -> None:
        for fold in prefixes(payload, "std"):
            for variant in prefixes(payload, f"std/{fold}"):
                sd = np.asarray(unnest(payload, f"std/{fold}/{variant}").get("sd", []), dtype=np.float64)
                if sd.size == 0 or not np.all(np.isfinite(sd) & (sd > 0)):
                    raise self.refuse("train", "standardisation SD finite and positive", "sd > 0",
                                      f"std/{fold}/{variant}")

    def calibrate(self, payload: Payload, scales: dict[str, np.ndarray]) -> None:
        step = int(payload.get("step", 0))
        train_models = [str(m) for m in payload.get("train_models", [])]
        if step == 0:
            eval_models = [str(m) for m in payload.get("eval_models", [])]
            self._models("calibrate", train_models, self.budget.models_per_message, "trained models")
            self._models("calibrate", eval_models, self.budget.evaluated_per_message, "validated models")
            self._weights("calibrate", payload, train_models + eval_models, scales)
            self._points("calibrate", payload, train_models)
            self._evaluations("calibrate", train_models + eval_models)
            return
        if not 1 <= step <= self.budget.recalibration_rounds or step in self.state["recalibration_steps"]:
            raise self.refuse("calibrate", "recalibration rounds (each step once)", self.budget.recalibration_rounds,
                              f"step {step}; steps served {self.state['recalibration_steps']}")
        unknown = [m for m in train_models if m not in self.state["models"]]
        if unknown or len(train_models) > self.budget.models_per_message:
            raise self.refuse("calibrate", "recalibrated models (those of the first calibration message)",
                              self.budget.models_per_message, f"models {train_models}")
        self._points("calibrate", payload, train_models)
        self.state["recalibration_steps"].append(step)

    def combat(self, phase: str, small_cells: list[str]) -> None:
        """ComBat's sums are sent only when no batch, level or batch × level count of the site is in 1..k-1
        (:mod:`site_client.privacy.combat_cells`); the cells go to the site's log and ledger only."""
        if small_cells:
            raise self.refuse(phase, "ComBat batches and covariate levels of at least k cases (privacy.min_cell_count)",
                              self.protocol.privacy.min_cell_count, "; ".join(small_cells))

    def evaluate(self, payload: Payload) -> None:
        models = [str(m) for m in payload.get("eval_models", [])]
        self._models("evaluate", models, self.budget.evaluated_per_message, "validated models")
        for model in models:
            method = str(payload.get(f"recal_method/{model}", ""))
            if method != self.protocol.validation.recalibration and method != "none":
                raise self.refuse("evaluate", "recalibration method of the protocol", self.protocol.validation.recalibration,
                                  f"model {model}: method {method!r}")
            if not in_recalibration_box(self.protocol, method, np.asarray(payload.get(f"recal/{model}", []))):
                raise self.refuse("evaluate", "recalibration parameters in the protocol's box",
                                  "privacy.platt_bound / max_abs_log_temperature", f"model {model}")
        self._evaluations("evaluate", models)
