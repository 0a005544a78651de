"""The site's gate: every request is checked before any data is touched, every reply before it leaves.

Request, in order: (1) the message contract (:mod:`protocols.contract`: no unknown field, types, shapes from
the protocol and this site's handshake, declared ranges); (2) the phase's checks in :data:`PHASE_CHECKS`
against the approved protocol and this run's :class:`SiteRunState` (the ComBat plan must equal what the
protocol and the site's own handshake imply; folds and models only those this run introduced; never the
site's own held-out fold for training). Reply: the contract again, plus every string the site sends must be
one it is allowed to send (its own name, feature names, batch labels and levels it announced).

A refusal carries a code and a generic reason naming the field, never a value from the data:
``site H1 refused combat-round1 (not-allowed): request not allowed by protocol 1a2b3c4d5e6f:
plan/_all/batch_col differs from the protocol``. The detail goes to the site's own log only.

Extension point: ``PHASE_CHECKS[phase]`` is a list of ``check(request, context, state, matched)`` callables
(``matched``: the contract's (field, key parts, key) for every key); append a check to add a limit for a
phase, keep per-run counters in ``SiteRunState.served`` / ``SiteRunState.limits``.
"""

from __future__ import annotations

from collections.abc import Callable

from harmonisation.schema import design_columns, sort_levels
from harmonisation.schema import ComBatOptions
from protocols.contract import (
    CALIBRATE, COMBAT1, COUNT_FIELDS, ContractViolation, Dims, EVALUATE, EVAL_MODELS, FIT, HANDSHAKE,
    HELDOUT_FOLDS, MAX_FOLDS, MODELS, PAR, PHASE, PLAN, RECAL_METHOD, RELEASE, REPLY, REQUEST, ROUND, SCALE, SITE,
    STD, STEP, TRAIN, TRAIN_FOLDS, TRAIN_MODELS, W, check_message, key, plan_fields,
)
from flowerglue.versions import fedradval_version, same_release
from protocols.models import ALL_SITES, parse_model_key
from protocols.payload import SITE_NAME, prefixes, unnest
from site_client.study.context import SiteContext, SiteStudyError
from protocols.schema import BINARY, SURVIVAL, is_survival
from site_client.study.run_state import SiteRunState, own_heldout_folds

# Refusal and error codes (the generic reasons are fixed texts; see docs/architecture.md)
NOT_IN_CONTRACT = "not-in-contract"
NOT_ALLOWED = "not-allowed"
OUT_OF_ORDER = "out-of-order"
DATA_ERROR = "data-error"
INTERNAL_ERROR = "internal-error"
REPLY_BLOCKED = "reply-blocked"
VERSION_MISMATCH = "version-mismatch"


class Refusal(SiteStudyError):
    """A request the site will not serve or a reply it will not send. ``str()`` is what leaves the site;
    ``detail`` stays in the site's log."""

    def __init__(self, site: str, phase: str, code: str, reason: str, detail: str = "") -> None:
        self.site, self.phase, self.code, self.reason, self.detail = site, phase, code, reason, detail
        super().__init__(f"site {site} refused {phase} ({code}): {reason}")


def _not_allowed(context: SiteContext, phase: str, field: str, why: str, detail: str = "") -> Refusal:
    reason = f"request not allowed by protocol {context.protocol_id[:12]}: {field} {why}"
    return Refusal(context.site_name, phase, NOT_ALLOWED, reason, detail)


Check = Callable[[dict, SiteContext, SiteRunState, list, str], None]


def site_dims(context: SiteContext, state: SiteRunState | None) -> Dims | None:
    if state is None or not state.features:
        return None
    return Dims.of(context.protocol, len(state.features), len(state.model_features))


def _variants(context: SiteContext) -> set[str]:
    return {"harmonised", "raw"} if context.protocol.harmonisation.combat else {"raw"}


def _check_names(request: dict, context: SiteContext, state: SiteRunState, matched: list, phase: str) -> None:
    """Every fold and model a key names: a valid name, of this run, never the site's held-out fold for
    training; every model key under a list the request declares."""
    listed = {m for name in (MODELS, TRAIN_MODELS, EVAL_MODELS) for m in request.get(name, [])}
    for f, parts, k in matched:
        model = parts.get("model")
        if model is not None and f.template.split("/")[0] != PLAN and model not in listed:
            raise _not_allowed(context, phase, k, "names a model the request does not list")
    for name in (MODELS, TRAIN_MODELS, EVAL_MODELS):
        for model in request.get(name, []):
            try:
                fold, variant, _ = parse_model_key(model)
            except ValueError:
                raise _not_allowed(context, phase, name, "names something that is not a model") from None
            if variant not in _variants(context):
                raise _not_allowed(context, phase, name, "names a model variant the protocol does not run")
            if fold not in state.folds:
                raise _not_allowed(context, phase, name, "names a fold this run did not introduce")
    if len(request.get(MODELS, [])) != len(set(request.get(MODELS, []))):
        raise _not_allowed(context, phase, MODELS, "repeats a model")


def _check_trained_models(models: list[str], state: SiteRunState, context: SiteContext, phase: str, field: str) -> None:
    heldout = own_heldout_folds(context)
    for model in models:
        fold = parse_model_key(model)[0]
        if fold in heldout:
            raise _not_allowed(context, phase, field, "names the site's own held-out fold for training")
        if fold not in state.train_folds:
            raise _not_allowed(context, phase, field, "names a fold this site does not train in this run")


def _check_fold_lists(request: dict, context: SiteContext, state: SiteRunState, phase: str, introduced: set[str]) -> None:
    heldout = own_heldout_folds(context)
    train = request.get(TRAIN_FOLDS, [])
    if set(train) & heldout:
        raise _not_allowed(context, phase, TRAIN_FOLDS, "names the site's own held-out fold for training")
    if not set(train) <= introduced:
        raise _not_allowed(context, phase, TRAIN_FOLDS, "names a fold this run did not introduce")
    if not set(request.get(HELDOUT_FOLDS, [])) <= heldout:
        raise _not_allowed(context, phase, HELDOUT_FOLDS, "names a fold the site is not held out of")


def _valid_fold(name: str) -> bool:
    return name == ALL_SITES or bool(SITE_NAME.match(name))


# ---- combat-round1: the plan must be the one the protocol and the site's handshake imply ----------------
def _expected_options(context: SiteContext) -> dict:
    h = context.protocol.harmonisation
    return ComBatOptions(eb=h.eb, parametric=h.parametric, mean_only=h.mean_only,
                         ref_batch=h.reference_batch).to_message()


def check_plan(fold: str, plan: dict, training: bool, context: SiteContext, state: SiteRunState, phase: str) -> None:
    """One fold's ComBat plan against the protocol and this site's handshake (raises :class:`Refusal`)."""
    p = context.protocol
    where = key(PLAN, fold)

    def refuse(name: str, why: str = "differs from the protocol") -> Refusal:
        return _not_allowed(context, phase, key(where, name), why)

    categorical = [c.name for c in p.covariates.categorical]
    continuous = [c.name for c in p.covariates.continuous]
    declared = {c.name: c.levels for c in p.covariates.categorical}
    batch_col = p.batch.column if p.batch.by == "column" else ""
    required = {*plan_fields(), *[f"levels:{c}" for c in categorical]}
    missing = sorted(required - set(plan))
    if missing:
        raise refuse(missing[0], "is required and missing")
    extra = sorted(set(plan) - required)
    if extra:
        raise refuse(extra[0], "is not a field of a plan for this protocol")
    if plan["kind"] != "plan":
        raise refuse("kind")
    if plan["batch_col"] != batch_col:
        raise refuse("batch_col")
    if list(plan["categorical"]) != categorical:
        raise refuse("categorical")
    if list(plan["continuous"]) != continuous:
        raise refuse("continuous")
    for name, value in _expected_options(context).items():
        if plan[name] != value:
            raise refuse(name)
    if list(plan["all_features"]) != state.features:
        raise refuse("all_features", "differs from the site's handshake")
    kept = list(plan["features"])
    if len(set(kept)) != len(kept) or [f for f in state.features if f in set(kept)] != kept:
        raise refuse("features", "is not an ordered subset of the site's handshake features")
    if list(plan["excluded"]) != [f for f in state.features if f not in set(kept)]:
        raise refuse("excluded", "does not complement the plan's features")
    if len(plan["excluded_reason"]) != len(plan["excluded"]):
        raise refuse("excluded_reason", "does not match the excluded features")
    levels = {}
    for cov in categorical:
        lv = list(plan[f"levels:{cov}"])
        if not set(lv) <= set(declared[cov]) or len(set(lv)) != len(lv) or lv != sort_levels(lv):
            raise refuse(f"levels:{cov}", "names a level the protocol does not declare")
        if training and not set(state.levels.get(cov, [])) <= set(lv):
            raise refuse(f"levels:{cov}", "lacks a level of the site's handshake")
        levels[cov] = lv
    batches = list(plan["batches"])
    if len(set(batches)) != len(batches) or batches != sort_levels(batches) or len(plan["batch_n"]) != len(batches):
        raise refuse("batches", "is not a list of distinct batch labels with their counts")
    if training and not set(state.batches) <= set(batches):
        raise refuse("batches", "lacks a batch of the site's handshake")
    if list(plan["spanning"]):
        raise refuse("spanning", "is not empty (batches must not span sites)")
    sites = list(plan["sites"])
    if any(not SITE_NAME.match(s) for s in sites) or len(set(sites)) != len(sites):
        raise refuse("sites", "is not a list of distinct site names")
    if training != (context.site_name in sites) or (fold != ALL_SITES and fold in sites):
        raise refuse("sites", "does not match the fold's training sites")
    if list(plan["design_columns"]) != design_columns(batches, levels, categorical, continuous):
        raise refuse("design_columns", "differs from the design the plan implies")


def _check_combat1(request: dict, context: SiteContext, state: SiteRunState, matched: list, phase: str) -> None:
    if not context.protocol.harmonisation.combat:
        raise _not_allowed(context, phase, PHASE, "is not part of the protocol (harmonisation.combat is false)")
    folds = prefixes(request, PLAN)
    if len(folds) > MAX_FOLDS or not all(_valid_fold(f) for f in folds):
        raise _not_allowed(context, phase, PLAN, "names too many folds or an invalid fold")
    _check_fold_lists(request, context, state, phase, set(folds))
    for fold in folds:
        check_plan(fold, unnest(request, key(PLAN, fold)), fold in request[TRAIN_FOLDS], context, state, phase)


def _check_fits_once(request: dict, context: SiteContext, state: SiteRunState, phase: str) -> None:
    """Each fold's ComBat fit (B̂, α̂) arrives once, in the first training message, with the fold's σ̂²: every
    fold whose σ̂² it carries comes with its fit (the first message is served once, so the fit never changes
    under the site's adjustment)."""
    if context.protocol.harmonisation.combat:
        missing = sorted(set(prefixes(request, SCALE)) - set(prefixes(request, FIT)))
        if missing:
            raise _not_allowed(context, phase, key(SCALE, missing[0]), "comes without the fold's ComBat fit")


def _check_train(request: dict, context: SiteContext, state: SiteRunState, matched: list, phase: str) -> None:
    p = context.protocol
    if request[ROUND] > p.model.rounds:
        raise _not_allowed(context, phase, ROUND, "is beyond the protocol's model.rounds")
    check_first_message(request, context, state, matched, phase)
    _check_names(request, context, state, matched, phase)
    _check_trained_models(request[MODELS], state, context, phase, MODELS)


def check_first_message(request: dict, context: SiteContext, state: SiteRunState, matched: list, phase: str) -> None:
    """The first model message (binary training or Cox) carries the fold lists, ComBat scale and
    standardisation, only for folds this run introduced and this site trains or is held out of; later
    messages carry none and need the first one served."""
    p = context.protocol
    first = bool(prefixes(request, STD))
    plans = prefixes(request, PLAN)
    if plans and not first:
        raise _not_allowed(context, phase, PLAN, "is only allowed in the first training message")
    if first:
        introduced = set(state.folds) if p.harmonisation.combat else (
            set(request.get(TRAIN_FOLDS, [])) | set(request.get(HELDOUT_FOLDS, [])))
        if plans:  # no ComBat round (no covariates): the plans come here, checked as in combat-round1
            if state.served.get(COMBAT1):
                raise _not_allowed(context, phase, PLAN, "was sent in combat-round1 already")
            _check_combat1(request, context, state, matched, phase)
            introduced = set(plans)
            state.folds, state.train_folds = sorted(plans), sorted(request.get(TRAIN_FOLDS, []))
        elif p.harmonisation.combat and not state.folds:
            raise Refusal(context.site_name, phase, OUT_OF_ORDER, "ComBat has not been served in this run")
        if len(introduced) > MAX_FOLDS or not all(_valid_fold(f) for f in introduced):
            raise _not_allowed(context, phase, TRAIN_FOLDS, "names too many folds or an invalid fold")
        _check_fold_lists(request, context, state, phase, introduced)
        trained = set(plans) & set(request.get(TRAIN_FOLDS, [])) if plans else set(state.train_folds)
        if p.harmonisation.combat and not set(request.get(TRAIN_FOLDS, [])) <= trained:
            raise _not_allowed(context, phase, TRAIN_FOLDS, "names a fold the site does not train in this run")
        mine = set(request.get(TRAIN_FOLDS, [])) | set(request.get(HELDOUT_FOLDS, []))
        for name in (STD, SCALE, FIT, PLAN):
            for fold in prefixes(request, name):
                if fold not in mine:
                    raise _not_allowed(context, phase, key(name, fold), "names a fold the site neither trains nor is held out of")
        _check_fits_once(request, context, state, phase)
        if not p.harmonisation.combat:
            state.folds = sorted(introduced)
            state.train_folds = sorted(request.get(TRAIN_FOLDS, []))
    elif not state.standardised:
        raise Refusal(context.site_name, phase, OUT_OF_ORDER, "the first training message has not been served")
    elif TRAIN_FOLDS in request or prefixes(request, SCALE) or prefixes(request, FIT):
        raise _not_allowed(context, phase, TRAIN_FOLDS, "is only allowed in the first training message")


def _check_calibrate(request: dict, context: SiteContext, state: SiteRunState, matched: list, phase: str) -> None:
    if not state.standardised:
        raise Refusal(context.site_name, phase, OUT_OF_ORDER, "training has not been served in this run")
    _check_names(request, context, state, matched, phase)
    _check_trained_models(request[TRAIN_MODELS], state, context, phase, TRAIN_MODELS)
    heldout = own_heldout_folds(context)
    for model in request.get(EVAL_MODELS, []):
        if parse_model_key(model)[0] not in heldout:
            raise _not_allowed(context, phase, EVAL_MODELS, "names a model of a fold the site is not held out of")
    if request[STEP] == 0:
        has_weights = {parse for parse in prefixes(request, W, depth=3)}
        wanted = set(request[TRAIN_MODELS]) | set(request.get(EVAL_MODELS, []))
        if has_weights != wanted:
            raise _not_allowed(context, phase, W, "does not carry exactly the listed models' parameters")
    else:
        if EVAL_MODELS in request or prefixes(request, W):
            raise _not_allowed(context, phase, EVAL_MODELS, "is only allowed in calibration step 0")
        if not set(request[TRAIN_MODELS]) <= set(state.calibrated_models):
            raise _not_allowed(context, phase, TRAIN_MODELS, "names a model calibration step 0 did not introduce")
        missing = [m for m in request[TRAIN_MODELS] if key(PAR, m) not in request]
        if missing:
            raise _not_allowed(context, phase, TRAIN_MODELS, "lists a model without candidate points")
    for f, parts, k in matched:
        if k.startswith(PAR + "/") and parts["model"] not in request[TRAIN_MODELS]:
            raise _not_allowed(context, phase, k, "names a model the site does not calibrate")


def _check_evaluate(request: dict, context: SiteContext, state: SiteRunState, matched: list, phase: str) -> None:
    if not state.validated_models and request[EVAL_MODELS]:
        raise Refusal(context.site_name, phase, OUT_OF_ORDER, "calibration step 0 has not been served in this run")
    if not set(request[EVAL_MODELS]) <= set(state.validated_models):
        raise _not_allowed(context, phase, EVAL_MODELS, "names a model calibration step 0 did not introduce")
    method = context.protocol.validation.recalibration
    for model in request[EVAL_MODELS]:
        if request[key(RECAL_METHOD, model)] != method:
            raise _not_allowed(context, phase, key(RECAL_METHOD, model), "differs from the protocol")
    _check_names(request, context, state, matched, phase)


# ---- handshake: the coordinator must run this site's fedradval release ------------------------------------
def release_note(request: dict) -> str:
    """The line the site's log gets at every handshake: which release each side runs."""
    own = fedradval_version()
    if RELEASE not in request:
        return f"the coordinator did not say which fedradval release it runs (an older release?); this site runs {own}"
    return f"coordinator runs fedradval {request[RELEASE]}, this site runs fedradval {own}"


def _check_release(request: dict, context: SiteContext, state: SiteRunState | None, matched: list, phase: str) -> None:
    """Refuse a coordinator that announces another fedradval release: every side of a study must compute
    the same thing. (A request without a release comes from an older coordinator, which cannot read this
    site's reply either; it is served and the coordinator reports the difference.)"""
    theirs, own = request.get(RELEASE), fedradval_version()
    if theirs is not None and not same_release(str(theirs), own):
        raise Refusal(context.site_name, phase, VERSION_MISMATCH,
                      f"the coordinator runs fedradval {theirs}, this site runs fedradval {own}; a study needs "
                      f"the same release at the coordinator and every site: install fedradval {theirs} here, or "
                      f"agree with the coordinator on another release")


from site_client.study.survival_gate import SURVIVAL_CHECKS  # noqa: E402  (it builds on the checks above)

PHASE_CHECKS: dict[str, list[Check]] = {
    HANDSHAKE: [_check_release],
    COMBAT1: [_check_combat1],
    TRAIN: [_check_train],
    CALIBRATE: [_check_calibrate],
    EVALUATE: [_check_evaluate],
    **SURVIVAL_CHECKS,
}
#: Phases of one outcome form only: a binary protocol never serves the Cox phases, a survival one never trains
#: a classifier (the request is refused before anything is computed).
BINARY_ONLY = (TRAIN, CALIBRATE, EVALUATE)


def check_request(phase: str, request: dict, context: SiteContext, state: SiteRunState | None) -> None:
    """Refuse (raise :class:`Refusal`) unless ``request`` is allowed; nothing is computed before this returns."""
    if phase not in PHASE_CHECKS:
        raise Refusal(context.site_name, str(phase)[:40], NOT_IN_CONTRACT, "the phase is not in the message contract")
    if phase != HANDSHAKE and (state is None or not state.eligible):
        raise Refusal(context.site_name, phase, OUT_OF_ORDER, "the handshake has not been served (or the site is not eligible) in this run")
    if request.get(PHASE, phase) != phase:
        raise _not_allowed(context, phase, PHASE, "differs from the phase the message was sent as")
    survival = is_survival(context.protocol)
    if (survival and phase in BINARY_ONLY) or (not survival and phase in SURVIVAL_CHECKS):
        raise _not_allowed(context, phase, PHASE, "is not part of this protocol's outcome form "
                           f"({SURVIVAL if survival else BINARY} label)")
    try:
        matched = check_message(phase, REQUEST, request, site_dims(context, state),
                                sizes=state.fold_sizes if state else None)
    except ContractViolation as exc:
        raise Refusal(context.site_name, phase, NOT_IN_CONTRACT,
                      f"request not allowed by protocol {context.protocol_id[:12]}: {exc}") from None
    for check in PHASE_CHECKS[phase]:
        check(request, context, state, matched, phase)


HANDSHAKE_REASONS = ("positive class has fewer than k=", "negative class has fewer than k=", "batch(es) have fewer than k=",
                     "fewer events than the protocol needs per site: ", "censored cases: fewer than k=")


def check_reply(phase: str, reply: dict, request: dict, context: SiteContext, state: SiteRunState) -> None:
    """The outgoing check: the reply must fit the contract (no patient-sized array) and every string in it
    must be one the site may send. Raises :class:`Refusal` (code reply-blocked) with the detail for the log."""
    def blocked(detail: str) -> Refusal:
        return Refusal(context.site_name, phase, REPLY_BLOCKED,
                       "the reply failed the site's outgoing check and was not sent; details in the site's log",
                       detail)

    try:
        check_message(phase, REPLY, reply, site_dims(context, state), request, sizes=state.fold_sizes)
    except ContractViolation as exc:
        raise blocked(f"reply field {exc}") from None
    if reply.get(SITE) != context.site_name or reply.get(PHASE) != phase:
        raise blocked("reply site or phase differs from this site and phase")
    allowed = set(state.batches)
    declared = {c.name: set(c.levels) for c in context.protocol.covariates.categorical}
    for k, value in reply.items():
        last = k.rsplit("/", 1)[-1]
        if k in ("features", "schema/features"):
            ok = list(value) == state.features
        elif k == "model_features":
            ok = list(value) == state.model_features
        elif k == "volume_feature":
            ok = value == state.volume_feature
        elif k == RELEASE:
            ok = value == fedradval_version()
        elif last == "batches":
            ok = set(value) <= allowed
        elif last.startswith("levels:"):
            ok = set(value) <= declared.get(last[len("levels:"):], set())
        elif k == "suppressed":
            ok = set(value) <= set(COUNT_FIELDS)
        elif k == "reason":
            ok = all(any(r in part for r in HANDSHAKE_REASONS) for part in value.split("; ")) if value else True
        else:
            ok = not isinstance(value, (str, list)) or k in (SITE, PHASE)
        if not ok:
            raise blocked(f"reply field {k} holds a string the site may not send")
