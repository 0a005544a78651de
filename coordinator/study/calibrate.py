"""Recalibration and conformal thresholds, coordinator side, for every model in lockstep.

Step 0 (one round): sites receive the final parameters; training sites return, from their calibration parts,
class histograms of p (k-merged) and per-class conformal-score histograms; held-out sites return their
"before" evaluation aggregates (kept for :mod:`coordinator.study.evaluate`).

Step 0 also carries a fixed design of recalibration points (``FIRST_POINTS``: the identity map first, then
points spread over the slopes and intercepts that over- and under-confident models need), and every training
site returns its exact Newton terms (Σ score, Σ information, Σ NLL) at each of them. From then on, after each
round, the coordinator rebuilds the pooled log-likelihood from stand-in cases matched to *every* exact
evaluation so far (:mod:`coordinator.study.recalibration_surrogate`) and the next round evaluates that
surrogate's optimum, a few points around it, the exact Newton point from the best point so far and a short
line search along that step (at most ``privacy.candidate_points`` points, the sites' budget). A model is
converged when the exact Newton step at its best evaluated point is below ``NEWTON_TOL``; that last step is
applied without a further round. A round that improves nothing shrinks the line search instead. On the tests'
NSCLC study and the benchmark study this takes 1-2 Newton rounds (4-5 with Newton from the identity alone:
steep optima of under-confident and volume-only models); the binned warm start and the sites' own Platt fits
are further candidates of the first round.

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

from coordinator.study.recalibration_surrogate import ExactTerms, platt_rows, proposed_optimum, temperature_rows

from coordinator.validation.combine import combine_aggregates
from coordinator.validation.conformal import protocol_thresholds
from coordinator.validation.results import Recalibration
from protocols.models import conformal_applies, params_to_payload
from protocols.payload import Payload, prefixes, unnest
from protocols.schema import Protocol
from protocols.contract import APPARENT, BEFORE, CALHIST, CALIBRATE, CONFORMAL, EVAL_MODELS, LOCALFIT, PAR, STEP, TERMS, TRAIN_MODELS, W, key
from coordinator.study.design import StudyDesign
from coordinator.study.transport import Session

# Converged when the next Newton step is below this; that step is applied without another round. Newton
# converges quadratically near the optimum, so the error left after applying a step δ is O(δ²) ≈ 1e-6 or
# less (tests compare with a pooled scipy fit to 1e-6).
NEWTON_TOL = 1e-3
MAX_LOG_T = math.log(1e3)  # |log T| beyond which temperature scaling is declared degenerate
LINE_SEARCH = (8.0, 4.0, 2.0, 1.0, 0.5, 0.25, 0.1, 0.02)  # multiples of the step after a round that improved nothing
#: Step 0's recalibration points, the identity map first (a protocol allowing fewer candidate points takes the
#: first ones). Platt (a, b): slopes 0 to 8 (over-confident models need b < 1, under-confident ones b > 1;
#: b = 0 gives the class sums of η exactly) and intercepts ±1. Temperature: log T from -2 to 3.
FIRST_POINTS = {
    "platt": np.array([[0.0, 1.0], [0.0, 0.0], [0.0, 0.5], [0.0, 2.0], [0.0, 4.0], [0.0, 8.0],
                       [-1.0, 1.0], [1.0, 1.0], [-1.0, 3.0], [1.0, 3.0]]),
    "temperature": np.array([[0.0], [1.0], [-1.0], [2.0], [-0.5], [0.5], [3.0], [-2.0], [1.5], [-1.5]]),
}
#: Points around the surrogate's optimum, in standard errors of the best point (so the next surrogate is pinned
#: down where it matters), and multiples of the exact Newton step from the best point.
AROUND_OPTIMUM_SE, NEWTON_MULTIPLES = 0.05, (2.0, 0.5)
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
    evaluated: list[ExactTerms] = field(default_factory=list)  # every exact evaluation so far (the surrogate's input)
    sites: frozenset[str] = frozenset()                         # the sites whose terms the current point's sums hold
    extra: list[np.ndarray] = field(default_factory=list)      # further candidates of the next round (warm starts)


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
                req[key(PAR, model)] = _first_points(protocol)
        requests[site] = req
    replies = session.exchange(CALIBRATE, requests)
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
        if conformal_applies(protocol.validation, model):
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
        state = NewtonState(theta=_identity(method), candidates=_first_points(protocol))
        states[model] = state
        if cal:  # candidates only: kept if their exact NLL is the lowest
            warm = warm_start(method, combine_aggregates([a for _, a in cal], [s for s, _ in cal]))
            if np.all(np.isfinite(warm)):
                state.extra.append(warm)
        if method == "platt":
            local = combined_local_fits([unnest(replies[s], key(LOCALFIT, model)) for s in trainers])
            if local is not None:
                state.extra.append(local)
        # step 0 carried the exact terms at the first points: the first Newton evaluation, no extra round
        _newton_update(method, model, state, {s: replies[s] for s in trainers}, trainers, out.notes,
                       protocol.privacy.candidate_points)
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
        replies = session.exchange(CALIBRATE, requests)
        out.newton_rounds += 1
        for model, state in pending.items():
            fold = model.split("/")[0]
            _newton_update(method, model, state, replies, design.training_sites(fold), out.notes,
                           protocol.privacy.candidate_points)
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


def _first_points(protocol: Protocol) -> np.ndarray:
    return FIRST_POINTS[protocol.validation.recalibration][:protocol.privacy.candidate_points]


def _newton_update(method: str, model: str, state: NewtonState, replies: dict, sites: list[str], notes: list[str],
                   budget: int) -> None:
    """Sum the sites' Newton terms at every candidate point; move to the best point evaluated so far if this
    round lowered the NLL, then plan at most ``budget`` candidates for the next round (:func:`_plan`); after a
    round that lowered nothing, a line search towards the last step instead (shorter multiples)."""
    evaluated = []
    for j, point in enumerate(state.candidates):
        terms = [(s, unnest(replies[s], key(TERMS, model, j))) for s in sites if s in replies]
        terms = _usable([(s, a) for s, a in terms if a], "Newton terms", model, notes)
        if not terms:  # e.g. a candidate outside the sites' recalibration box (privacy.platt_bound): not evaluated
            continue
        g = np.sum([np.atleast_1d(np.asarray(a["grad"], dtype=float)) for _, a in terms], axis=0)
        nll = float(np.sum([float(a["nll"]) for _, a in terms]))
        n = int(np.sum([int(a.get("n", 0)) for _, a in terms]))
        if method == "platt":
            info = np.sum([np.asarray(a["info"], dtype=float) for _, a in terms], axis=0)
            rows = platt_rows(nll, g, info)
        else:
            fisher = float(np.sum([float(a["hess_fisher"]) for _, a in terms]))
            rows = temperature_rows(nll, float(g[0]), fisher)
            g = -g  # sites send d NLL/du; the Newton step uses the log-likelihood gradient
            info = np.array([[temperature_curvature(float(np.sum([float(a["hess"]) for _, a in terms])), fisher)]])
        contributors = frozenset(s for s, _ in terms)
        state.evaluated.append(ExactTerms(np.asarray(point, dtype=float), n, rows, contributors))
        evaluated.append((nll, j, point, g, info, contributors))
    if not evaluated:
        state.converged = True
        notes.append(f"{model}: no Newton terms; recalibration left at {state.theta.tolist()}")
        return
    # NLLs over different cases do not compare: keep the points every contributing site answered (the largest set)
    widest = max((e[5] for e in evaluated), key=len)
    nll, _, point, g, info, contributors = min((e for e in evaluated if e[5] == widest), key=lambda e: (e[0], e[1]))
    if contributors != state.sites:
        state.nll = None  # a site's terms went missing (or came back): this round's best starts afresh
    if state.nll is not None and not improves(-nll, -state.nll):
        shrink = float(np.min(np.abs(state.candidates - state.theta).max(axis=1)))
        if state.step is None or shrink < 1e-9:
            state.converged = True
            notes.append(f"{model}: recalibration line search stalled; kept {state.theta.tolist()}")
            return
        state.step = state.step * LINE_SEARCH[-1] / 2
        state.candidates = np.array([state.theta + s * state.step for s in LINE_SEARCH])[:budget]
        return
    state.theta, state.nll, state.info, state.sites = np.asarray(point, dtype=float), nll, info, contributors
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
    state.candidates = _plan(method, state, step, budget)


def _plan(method: str, state: NewtonState, step: np.ndarray, budget: int) -> np.ndarray:
    """Next round's points, in order of priority: the surrogate's optimum, the exact Newton point, the warm
    starts (first round only), points ±AROUND_OPTIMUM_SE standard errors around the surrogate's optimum along
    each axis, then multiples of the Newton step. At most ``budget``."""
    newton_point = state.theta + step
    points = []
    optimum = proposed_optimum(method, state.evaluated, state.sites, newton_point) if state.evaluated else None
    if optimum is not None:
        points.append(optimum)
    points.append(newton_point)
    points.extend(state.extra)
    state.extra = []
    if optimum is not None and state.info is not None:
        try:
            se = np.sqrt(np.maximum(np.diag(np.linalg.inv(state.info)), 0.0))
        except np.linalg.LinAlgError:
            se = np.zeros_like(step)
        for axis in range(step.size):
            for sign in (1.0, -1.0):
                points.append(optimum + sign * AROUND_OPTIMUM_SE * se[axis] * np.eye(step.size)[axis])
    points.extend(state.theta + m * step for m in NEWTON_MULTIPLES)
    return np.array([p for p in points if np.all(np.isfinite(p))][:budget])
