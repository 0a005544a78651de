"""Recalibration and conformal thresholds, coordinator side, for every model in lockstep.

Step 0 (one round): sites receive the final parameters; training sites return, from their calibration parts,
class histograms of p (k-merged) and per-class conformal-score histograms; held-out sites return their
"before" evaluation aggregates (kept for :mod:`coordinator.study.evaluate`).

Warm start: Platt (or temperature) fitted at the coordinator on the pooled binned calibration histograms
(bin-midpoint logits weighted by counts). Newton rounds: all models' sites return the exact Newton terms
(Σ gradient, Σ information, Σ NLL) at the current parameters; θ ← θ + (ΣI)⁻¹Σg, halving a step that raises
the summed NLL (step and ascent test of :mod:`fedmath.newton`; the rounds evaluate a whole line search of
candidate points at once, so the driver loop itself runs only for the local warm start). A model is converged when its Newton step is below ``NEWTON_TOL``; the last step is then
applied without a further round. Candidates of the first Newton round include a second warm start, the
information-weighted mean of the sites' own Platt fits (``combined_local_fits``). On the demo cohort
(calibration parts of ~15 cases per site, strongly over-confident models: Platt slope 0.2-0.4) the recalibration
still takes 3-4 Newton rounds.

Conformal: class-conditional split conformal on the training sites' calibration parts, score 1 − p̂ of the
true class on the model's (not yet recalibrated) probability, q̂_y from the pooled histograms
(``thresholds_from_site_histograms``). A monotone recalibration (b > 0, T > 0) maps these sets one-to-one onto
the sets of the recalibrated probabilities, so the thresholds are computed once, in step 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from fedmath.calibration import binomial_platt_terms, binomial_temperature_terms, temperature_curvature
from fedmath.logistic import logit, recalibration_vector
from fedmath.newton import Evaluation, SingularInformation, improves, maximise, newton_step

from coordinator.validation.combine import combine_aggregates
from coordinator.validation.conformal import protocol_thresholds
from coordinator.validation.results import Recalibration
from protocols.models import params_to_payload, parse_model_key
from protocols.payload import Payload, prefixes, unnest
from protocols.schema import Protocol
from protocols.contract import APPARENT, BEFORE, CALHIST, CONFORMAL, EVAL_MODELS, LOCALFIT, PAR, STEP, TERMS, TRAIN_MODELS, W, key
from coordinator.study.design import StudyDesign
from coordinator.study.transport import Session

# Converged when the next Newton step is below this; that step is applied without another round. Newton
# converges quadratically near the optimum, so the error left after applying a step δ is O(δ²) ≈ 1e-6 or
# less (tests compare with a pooled scipy fit to 1e-6).
NEWTON_TOL = 1e-3
MAX_LOG_T = math.log(1e3)  # |log T| beyond which temperature scaling is declared degenerate
LINE_SEARCH = (8.0, 4.0, 2.0, 1.0, 0.5, 0.25, 0.1, 0.02)  # multiples of the Newton step evaluated in one round
MAX_NEWTON_ROUNDS = 12
Z95 = 1.959963984540054


def _terms(method: str, eta: np.ndarray, pos: np.ndarray, neg: np.ndarray, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """(gradient of the log-likelihood, information, NLL) of bin counts (pos, neg) at logits eta: the sites'
    own terms (:mod:`fedmath.calibration`) with each bin's counts as its cases."""
    if method == "platt":
        t = binomial_platt_terms(eta, pos, pos + neg, float(theta[0]), float(theta[1]))
        return t["grad"], t["info"], t["nll"]
    t = binomial_temperature_terms(eta, pos, pos + neg, float(theta[0]))  # theta = [u = log T]
    return np.array([-t["grad"]]), np.array([[t["hess_fisher"]]]), t["nll"]


def warm_start(method: str, hist: dict) -> np.ndarray:
    """Recalibration fitted on binned calibration data (bin midpoints); the Newton rounds then refine it."""
    theta = np.array([0.0, 1.0]) if method == "platt" else np.array([0.0])
    edges = np.asarray(hist["edges"], dtype=float)
    eta = logit(np.clip(0.5 * (edges[:-1] + edges[1:]), 1e-6, 1 - 1e-6))  # bin midpoints
    pos, neg = np.asarray(hist["bin_n_pos"], dtype=float), np.asarray(hist["bin_n_neg"], dtype=float)
    if pos.sum() == 0 or neg.sum() == 0:
        return theta

    def binned(point: np.ndarray) -> Evaluation:
        g, info, nll = _terms(method, eta, pos, neg, point)
        return Evaluation(-nll, g, info)

    fit = maximise(binned, theta, tolerance=1e-10, criterion="step", max_iterations=50, max_halvings=20,
                   on_no_ascent="accept", on_singular="stop")
    return fit.theta


def combined_local_fits(fits: list[dict]) -> np.ndarray | None:
    """One-step combination of the sites' own Platt fits: θ̂ = (Σ I_s)⁻¹ Σ I_s θ_s (I_s = a site's information
    at its fit). Equals the pooled fit when the log-likelihoods are quadratic; otherwise it is close, and the
    exact Newton rounds finish the job. None when no site could send a fit."""
    usable = [f for f in fits if f and not f.get("suppressed", 0) and "theta" in f]
    if not usable:
        return None
    info = np.sum([np.asarray(f["info"], dtype=float) for f in usable], axis=0)
    weighted = np.sum([np.asarray(f["info"], dtype=float) @ np.asarray(f["theta"], dtype=float) for f in usable], axis=0)
    try:
        theta = np.linalg.solve(info, weighted)
    except np.linalg.LinAlgError:
        return None
    return theta if np.all(np.isfinite(theta)) else None


@dataclass
class NewtonState:
    """Current point and the candidate points the next round evaluates (all at once: no halving rounds)."""

    theta: np.ndarray
    candidates: np.ndarray               # m × dim points to evaluate next
    step: np.ndarray | None = None
    nll: float | None = None
    info: np.ndarray | None = None
    converged: bool = False
    iterations: int = 0


@dataclass
class CalibrationResult:
    recalibration: dict[str, Recalibration] = field(default_factory=dict)   # model → fitted map
    conformal: dict[str, tuple[float, float]] = field(default_factory=dict) # model → (q_neg, q_pos)
    conformal_info: dict[str, dict] = field(default_factory=dict)
    before: dict[str, dict[str, dict]] = field(default_factory=dict)        # model → site → kind → aggregate
    apparent: dict[str, dict[str, dict]] = field(default_factory=dict)      # model → site → kind → aggregate
    newton_rounds: int = 0
    notes: list[str] = field(default_factory=list)


def _usable(site_aggs: list[tuple[str, dict]], what: str, model: str, notes: list[str]) -> list[tuple[str, dict]]:
    keep = [(s, a) for s, a in site_aggs if not a.get("suppressed", 0)]
    dropped = [s for s, a in site_aggs if a.get("suppressed", 0)]
    if dropped:
        notes.append(f"{model}: {what} suppressed at {dropped} (cells below k); left out")
    return keep


def _to_recalibration(method: str, state: NewtonState) -> Recalibration:
    se: dict[str, float] = {}
    if state.info is not None:
        try:
            cov = np.linalg.inv(state.info)
            se_vec = np.sqrt(np.maximum(np.diag(cov), 0.0))
        except np.linalg.LinAlgError:
            se_vec = np.full(state.theta.size, float("nan"))
    else:
        se_vec = np.full(state.theta.size, float("nan"))
    if method == "platt":
        return Recalibration("platt", {"a": float(state.theta[0]), "b": float(state.theta[1])},
                             {"a": float(se_vec[0]), "b": float(se_vec[1])}, state.iterations, state.converged)
    t = _exp(float(state.theta[0]))
    return Recalibration("temperature", {"temperature": t}, {"temperature": t * float(se_vec[0])},
                         state.iterations, state.converged)


def recal_vector(rec: Recalibration) -> np.ndarray:
    """The parameters as the sites apply them: Platt [a, b], temperature [log T], none [] (fedmath's map)."""
    return recalibration_vector(rec.method, rec.params)


def run_calibration(protocol: Protocol, session: Session, design: StudyDesign, weights: dict[str, list[np.ndarray]]) -> CalibrationResult:
    out = CalibrationResult()
    method = protocol.validation.recalibration
    requests: dict[str, Payload] = {}
    for site in session.active:
        train_models, eval_models = design.models_trained_by(site), design.models_validated_by(site)
        req: Payload = {STEP: 0, TRAIN_MODELS: train_models, EVAL_MODELS: eval_models}
        for model in train_models + eval_models:
            req.update(params_to_payload(key(W, model), weights[model]))
        if method != "none":
            for model in train_models:
                req[key(PAR, model)] = _identity(method)[None, :]
        requests[site] = req
    replies = session.exchange("calibrate", requests)
    models = design.all_models()
    states: dict[str, NewtonState] = {}
    for model in models:
        fold = model.split("/")[0]
        trainers = [s for s in design.training_sites(fold) if s in replies]
        out.before[model] = {s: {kind: unnest(replies[s], key(BEFORE, model, kind)) for kind in prefixes(replies[s], key(BEFORE, model))}
                             for s in design.heldout_sites(fold) if s in replies}
        out.apparent[model] = {s: {kind: unnest(replies[s], key(APPARENT, model, kind)) for kind in ("histograms", "calibration")}
                               for s in trainers}
        cal = _usable([(s, unnest(replies[s], key(CALHIST, model))) for s in trainers], "calibration histogram", model, out.notes)
        conf = {}
        for cls in ("neg", "pos"):  # a site sends nothing for a model that gets no thresholds (dp_quantile: volume)
            sent = [(s, a) for s in trainers if (a := unnest(replies[s], key(CONFORMAL, model, cls)))]
            conf[cls] = _usable(sent, f"conformal {cls} histogram", model, out.notes)
        # Class-conditional: each class's threshold pools the sites that released that class's histogram. Each
        # site keeps its own (possibly small-cell-merged) edges: pooling onto common edges would coarsen every
        # site to the worst-merged one and push the quantile towards 1.
        if protocol.validation.conformal_method == "histogram" or parse_model_key(model)[2] == "radiomic":
            q_neg, q_pos, info = protocol_thresholds(protocol.validation, [a for _, a in conf["neg"]],
                                                     [a for _, a in conf["pos"]])
            for cls in ("neg", "pos"):
                if not conf[cls]:
                    out.notes.append(f"{model}: no training site had k {cls} calibration cases; q_{cls} = 1 (that "
                                     "class is in every prediction set)")
            out.conformal[model] = (q_neg, q_pos)
            out.conformal_info[model] = {**info, "sites_neg": [s for s, _ in conf["neg"]],
                                         "sites_pos": [s for s, _ in conf["pos"]]}
        if method == "none":
            out.recalibration[model] = Recalibration("none", {})
            continue
        state = NewtonState(theta=_identity(method), candidates=_identity(method)[None, :])
        states[model] = state
        # step 0 carried the exact terms at the identity map: the first Newton evaluation, no extra round
        _newton_update(method, model, state, {s: replies[s] for s in trainers}, trainers, out.notes)
        if cal and not state.converged:
            warm = warm_start(method, combine_aggregates([a for _, a in cal], [s for s, _ in cal]))
            if np.all(np.isfinite(warm)):  # a candidate only: kept if its exact NLL is the lowest
                state.candidates = np.vstack([warm[None, :], state.candidates])
        if method == "platt" and not state.converged:
            local = combined_local_fits([unnest(replies[s], key(LOCALFIT, model)) for s in trainers])
            if local is not None:  # another candidate: usually the closest, from where Newton needs 1-2 steps
                state.candidates = np.vstack([local[None, :], state.candidates])
    # Newton rounds, all models together
    while any(not s.converged for s in states.values()) and out.newton_rounds < MAX_NEWTON_ROUNDS:
        pending = {m: s for m, s in states.items() if not s.converged}
        requests = {}
        for site in session.active:
            mine = [m for m in design.models_trained_by(site) if m in pending]
            if mine:
                req = {STEP: out.newton_rounds + 1, TRAIN_MODELS: mine}
                for m in mine:
                    req[key(PAR, m)] = pending[m].candidates
                requests[site] = req
        replies = session.exchange("calibrate", requests)
        out.newton_rounds += 1
        for model, state in pending.items():
            fold = model.split("/")[0]
            _newton_update(method, model, state, replies, design.training_sites(fold), out.notes)
    for model, state in states.items():
        if not state.converged:
            out.notes.append(f"{model}: recalibration not converged after {MAX_NEWTON_ROUNDS} Newton rounds")
        out.recalibration[model] = _to_recalibration(method, state)
    return out


def _exp(u: float) -> float:
    """e^u with u capped at 709 (e^709 ≈ 8e307, the largest finite power): a degenerate temperature fit that ran
    off to log T ≈ 10³ ends in a note and a finite T (probabilities ≈ ½ at the sites), not an OverflowError."""
    return math.exp(min(u, 709.0))


def _identity(method: str) -> np.ndarray:
    return np.array([0.0, 1.0]) if method == "platt" else np.array([0.0])


def _newton_update(method: str, model: str, state: NewtonState, replies: dict, sites: list[str], notes: list[str]) -> None:
    """Sum the sites' Newton terms at every candidate point; move to the best one if it lowers the NLL, then
    plan the next candidates θ + s·step (s in LINE_SEARCH) so a step that overshoots costs no extra round."""
    evaluated = []
    for j, point in enumerate(state.candidates):
        terms = [(s, unnest(replies[s], key(TERMS, model, j))) for s in sites if s in replies]
        terms = _usable([(s, a) for s, a in terms if a], "Newton terms", model, notes)
        if not terms:  # e.g. a candidate outside the sites' recalibration box (privacy.platt_bound): not evaluated
            continue
        g = np.sum([np.atleast_1d(np.asarray(a["grad"], dtype=float)) for _, a in terms], axis=0)
        nll = float(np.sum([float(a["nll"]) for _, a in terms]))
        if method == "platt":
            info = np.sum([np.asarray(a["info"], dtype=float) for _, a in terms], axis=0)
        else:
            g = -g  # sites send d NLL/du; the Newton step uses the log-likelihood gradient
            h = temperature_curvature(float(np.sum([float(a["hess"]) for _, a in terms])),
                                      float(np.sum([float(a["hess_fisher"]) for _, a in terms])))
            info = np.array([[h]])
        evaluated.append((nll, j, point, g, info))
    if not evaluated:
        state.converged = True
        notes.append(f"{model}: no Newton terms; recalibration left at {state.theta.tolist()}")
        return
    nll, _, point, g, info = min(evaluated, key=lambda e: (e[0], e[1]))
    if state.nll is not None and not improves(-nll, -state.nll):
        shrink = float(np.min(np.abs(state.candidates - state.theta).max(axis=1)))
        if state.step is None or shrink < 1e-9:
            state.converged = True
            notes.append(f"{model}: recalibration line search stalled; kept {state.theta.tolist()}")
            return
        state.step = state.step * LINE_SEARCH[-1] / 2
        state.candidates = np.array([state.theta + s * state.step for s in LINE_SEARCH])
        return
    state.theta, state.nll, state.info = np.asarray(point, dtype=float), nll, info
    state.iterations += 1
    if method == "temperature" and abs(float(state.theta[0])) > MAX_LOG_T:
        state.converged = True
        notes.append(f"{model}: temperature scaling has no finite optimum (T = {_exp(float(state.theta[0])):.3g}: the "
                     "scores do not rank the classes the right way round on the calibration parts); stopped there")
        return
    try:
        step = newton_step(g, info)
    except SingularInformation:
        state.converged = True
        notes.append(f"{model}: singular recalibration information; stopped")
        return
    if float(np.max(np.abs(step))) < NEWTON_TOL:
        state.theta = state.theta + step  # the last, negligible step needs no further round
        state.converged = True
        return
    state.step = step
    state.candidates = np.array([state.theta + s * step for s in LINE_SEARCH])
