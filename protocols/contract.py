"""The message contract: every field of every request and reply of every study phase, in one place.

A message is a flat :data:`protocols.payload.Payload`. Each field is declared once here as a :class:`Field`:
its key template (``"w/{model}/{i}"``), its type, its shape as a function of the protocol and the handshake
(:class:`Dims`: numbers of features, model parameters, histogram bins, thresholds, candidate points, folds,
batches) and never of the number of patients, its range, and whether it is required. Both sides build and
read keys only through :func:`key` / :func:`prefix` with the names declared here, and check whole messages
with :func:`check_message`: a key the contract does not describe is refused, so a typo or a forged field
never travels silently.

Checks here are structural (key, type, dtype, shape, finiteness, declared range). What a site *allows*
(the plan must equal what the protocol implies, only folds this run introduced, …) is the site's policy
(:mod:`site_client.study.validator`); what the coordinator *believes* (n within the site's announced
counts) is the coordinator's reply check (:mod:`coordinator.study.replies`). Both build on this module.
Depends on numpy only (and the protocol's models); nothing from Flower.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

from protocols.models import FEATURE_SETS, VARIANTS, model_spec
from protocols.schema import Protocol

# ---------------------------------------------------------------------------------------------------------
# Phases and the field names every message carries
# ---------------------------------------------------------------------------------------------------------
HANDSHAKE, COMBAT1, TRAIN, CALIBRATE, EVALUATE = (
    "handshake", "combat-round1", "train", "calibrate", "evaluate")
PHASES = (HANDSHAKE, COMBAT1, TRAIN, CALIBRATE, EVALUATE)
REQUEST, REPLY = "request", "reply"

PROTOCOL_ID, PHASE, SITE = "protocol_id", "phase", "site"

#: Top-level key segments (message prefixes and field names); every key is built from these with :func:`key`.
W, N, LOSS, DIAG = "w", "n", "loss", "diag"
PLAN, R1, FIT, SCALE, STD = "plan", "r1", "fit", "scale", "std"
CALHIST, CONFORMAL, APPARENT, BEFORE, AFTER = "calhist", "conformal", "apparent", "before", "after"
TERMS, LOCALFIT, PAR, RECAL, RECAL_METHOD, Q = "terms", "localfit", "par", "recal", "recal_method", "q"
COVERAGE, SETSIZE, SCHEMA, FVOL = "coverage", "setsize", "schema", "fvol"
FEATURES, MODEL_FEATURES, VOLUME_FEATURE = "features", "model_features", "volume_feature"
ELIGIBLE, REASON, SUPPRESSED = "eligible", "reason", "suppressed"
TRAIN_FOLDS, HELDOUT_FOLDS = "train_folds", "heldout_folds"
MODELS, TRAIN_MODELS, EVAL_MODELS = "models", "train_models", "eval_models"
ROUND, STEP = "round", "step"
#: The fedradval release: the coordinator's in the handshake request, the site's in its reply.
RELEASE = "fedradval_version"

#: Upper bounds that do not depend on patients: sites (= folds − 1), batches, candidate points, steps.
MAX_FOLDS = 65
MAX_BATCHES = 256
MAX_CANDIDATES = 16
MAX_STEPS = 64
MAX_NAME = 200
#: Form of a release string (a PEP 440 version such as ``0.1.0``, ``0.2.0rc1``, ``0.1.0+site.patch``; at most 64
#: characters): checked as text only, what a release *means* is :mod:`flowerglue.versions`' business.
RELEASE_FORM = r"[0-9][0-9A-Za-z.+!_\-]{0,63}"

#: Key segments a template may hold; each becomes a regular expression when a key is matched.
SEGMENTS = {
    "fold": r"_all|[A-Za-z0-9][A-Za-z0-9_.\-]*",
    "model": r"(?:_all|[A-Za-z0-9][A-Za-z0-9_.\-]*)/(?:" + "|".join(VARIANTS) + ")/(?:" + "|".join(FEATURE_SETS) + ")",
    "variant": "|".join(VARIANTS),
    "i": r"\d{1,3}",
    "j": r"\d{1,3}",
    "cov": r"[^/]{1,200}",
    "cls": "neg|pos",
    "grp": "low|intermediate|high",
}

#: Names of the count fields of the handshake reply (the site's announced counts; -1 = suppressed).
COUNT_FIELDS = ("n", "n_pos", "n_neg", "n_train", "n_cal", "n_train_pos", "n_train_neg", "n_cal_pos", "n_cal_neg")
SUPPRESSED_COUNT = -1


@dataclass(frozen=True)
class Dims:
    """Sizes a message may have, from the protocol and the handshake only (never the number of patients)."""

    n_features: int                    # p: the handshake's feature list (model features + volume feature)
    n_model_features: int
    bins: int                          # validation.histogram_bins
    reliability_bins: int
    n_thresholds: int                  # decision-curve grid ∪ decision threshold
    recal_dim: int                     # platt 2, temperature 1, none 0
    model_type: str
    hidden_sizes: tuple[int, ...]
    categorical_levels: dict[str, tuple[str, ...]] = field(default_factory=dict)
    n_continuous: int = 0
    n_horizons: int = 0                # survival studies: label.horizons (0: binary)
    n_curve_thresholds: int = 0        # validation.decision_curve_thresholds (survival net benefit)
    conformal_dp_bins: int = 0         # validation.conformal_dp_bins (the DP conformal grid)

    @classmethod
    def of(cls, protocol: Protocol, n_features: int, n_model_features: int) -> "Dims":
        v = protocol.validation
        grid = set(v.decision_curve_thresholds) | {v.decision_threshold}
        recal = {"platt": 2, "temperature": 1, "none": 0}[v.recalibration]
        return cls(n_features, n_model_features, v.histogram_bins, v.reliability_bins, len(grid), recal,
                   protocol.model.type, tuple(protocol.model.hidden_sizes),
                   {c.name: tuple(c.levels) for c in protocol.covariates.categorical},
                   len(protocol.covariates.continuous), len(getattr(protocol.label, "horizons", ())),
                   len(v.decision_curve_thresholds), v.conformal_dp_bins)

    def param_shapes(self, model: str) -> list[tuple[int, ...]]:
        feature_set = model.split("/")[-1]
        return model_spec(self.model_type, self.hidden_sizes, feature_set, self.n_model_features).shapes()

    @property
    def max_design(self) -> int:
        """Design width q: batches + (levels − 1) per categorical covariate + continuous covariates."""
        return MAX_BATCHES + sum(len(lv) - 1 for lv in self.categorical_levels.values()) + self.n_continuous


# Shape rules: callables (dims, parts) -> expected shape, or an upper bound on a 1-d length (``Upto``).
ShapeFn = Callable[[Dims, dict], tuple]


@dataclass(frozen=True)
class Upto:
    """A 1-d array or list of at most ``limit(dims)`` entries (``text`` for the docs)."""

    limit: Callable[[Dims], int]
    text: str


@dataclass(frozen=True)
class Field:
    """One field of one message. ``kind``: int, float, str, bool, strs (list of str), array."""

    template: str
    kind: str
    doc: str
    dtype: str = ""                    # arrays: "f" float64, "i" int64, "u" uint8
    shape: ShapeFn | Upto | None = None
    shape_text: str = ""
    lo: float | None = None
    hi: float | None = None
    finite: bool = True                # NaN / inf refused (some aggregates carry NaN for "not estimable")
    required: bool = False             # must be present (for every name in ``each``)
    each: str = ""                     # request list whose entries instantiate the template's placeholder
    counts: bool = False               # patient counts: integers >= 0 bounded by the site's announced n
    matches: str = ""                  # str: a regular expression the whole value must match

    def pattern(self) -> re.Pattern:
        return _template_pattern(self.template)


@functools.lru_cache(maxsize=None)
def _template_pattern(template: str) -> re.Pattern:
    """The compiled key pattern of a field template, built once per template (messages are checked key by key
    against every field: recompiling per key made checking a 50-site calibration reply take minutes)."""
    regex = re.escape(template)
    for name, seg in SEGMENTS.items():
        regex = regex.replace(re.escape("{" + name + "}"), f"(?P<{name}>{seg})")
    return re.compile(f"^{regex}$")


@dataclass(frozen=True)
class Message:
    """Every field of one direction of one phase."""

    phase: str
    direction: str
    fields: tuple[Field, ...]

    def match(self, key: str) -> tuple[Field, dict] | None:
        """The first field (in declaration order) whose template matches ``key``; only the fields that can
        start with the key's first path segment are tried."""
        first = key.split("/", 1)[0]
        for f in self._by_first_segment.get(first, self._open_first_segment):
            m = f.pattern().match(key)
            if m:
                return f, m.groupdict()
        return None

    @functools.cached_property
    def _open_first_segment(self) -> tuple[Field, ...]:
        """Fields whose template starts with a placeholder (they can match any first segment)."""
        return tuple(f for f in self.fields if f.template.startswith("{"))

    @functools.cached_property
    def _by_first_segment(self) -> dict[str, tuple[Field, ...]]:
        """First literal path segment → the fields that can match a key starting with it, in declaration order
        (those starting with a placeholder included)."""
        literal = {f.template.split("/", 1)[0] for f in self.fields if not f.template.startswith("{")}
        return {seg: tuple(f for f in self.fields if f.template.startswith("{") or f.template.split("/", 1)[0] == seg)
                for seg in literal}


class ContractViolation(ValueError):
    """A message that breaks the contract; ``key`` names the field, ``problem`` is a generic description
    (never a value from the data)."""

    def __init__(self, key: str, problem: str) -> None:
        self.key, self.problem = key, problem
        super().__init__(f"{key} {problem}")


# ---------------------------------------------------------------------------------------------------------
# Field helpers
# ---------------------------------------------------------------------------------------------------------
def _vec(dims_fn: Callable[[Dims], int]) -> ShapeFn:
    return lambda d, parts: (dims_fn(d),)


def _p(d: Dims, parts: dict) -> tuple:
    return (d.n_features,)


def _int(template, doc, lo=0, hi=None, **kw) -> Field:
    return Field(template, "int", doc, lo=lo, hi=hi, **kw)


def _float(template, doc, **kw) -> Field:
    return Field(template, "float", doc, **kw)


def _flag(template, doc, **kw) -> Field:
    return Field(template, "int", doc, lo=0, hi=1, **kw)


def _aggregate(prefix: str, kind: str, each: str = "") -> list[Field]:
    """The fields of one site aggregate (small-cell controlled) under ``prefix``; see AGGREGATES."""
    out = [_flag(f"{prefix}/suppressed", "1 when the aggregate had a cell of 1..k-1 patients and was withheld",
                 required=True, each=each),
           _int(f"{prefix}/k", "the site's small-cell threshold k", lo=1, required=True, each=each)]
    for name, kind_, shape, text, finite, counts in AGGREGATES[kind]:
        if kind_ == "array":
            out.append(Field(f"{prefix}/{name}", "array", f"{kind} aggregate: {name}", dtype="i" if counts else "f",
                             shape=shape, shape_text=text, finite=finite, lo=0 if counts else None, counts=counts))
        elif kind_ == "int":
            out.append(_int(f"{prefix}/{name}", f"{kind} aggregate: {name}", counts=counts))
        elif kind_ == "num":
            out.append(Field(f"{prefix}/{name}", "num", f"{kind} aggregate: {name}", dtype="f", shape=shape,
                             shape_text=text, finite=finite))
        else:
            out.append(_float(f"{prefix}/{name}", f"{kind} aggregate: {name}", finite=finite))
    return out


_bins = Upto(lambda d: d.bins, "<= bins")
_edges = Upto(lambda d: d.bins + 1, "<= bins+1")
_rbins = Upto(lambda d: d.reliability_bins, "<= reliability bins")
_redges = Upto(lambda d: d.reliability_bins + 1, "<= reliability bins+1")
_grid = Upto(lambda d: d.n_thresholds, "<= thresholds")
_steps = (lambda d, parts: (d.bins,))                 # held-out ROC steps, zero-padded to histogram_bins
_rsteps = (lambda d, parts: (d.reliability_bins,))    # held-out reliability groups, zero-padded
_two = (lambda d, parts: (2,))
_two2 = (lambda d, parts: (2, 2))
_recal = (lambda d, parts: (d.recal_dim,))
_recal2 = (lambda d, parts: (d.recal_dim, d.recal_dim))

#: aggregate kind -> (field, kind, shape, shape text, finite, counts)
AGGREGATES: dict[str, list[tuple]] = {
    "histograms": [("edges", "array", _edges, "<= bins+1", True, False),
                   ("bin_n_pos", "array", _bins, "<= bins", True, True),
                   ("bin_n_neg", "array", _bins, "<= bins", True, True)],
    "conformal": [("edges", "array", _edges, "<= bins+1", True, False),
                  ("bin_n_scores", "array", _bins, "<= bins", True, True)],
    "confusion": [("thresholds", "array", _grid, "<= thresholds", True, False),
                  *[(n, "array", _grid, "<= thresholds", True, True) for n in ("n_tp", "n_fp", "n_fn", "n_tn")],
                  ("n_events", "int", None, "", True, True), ("n_nonevents", "int", None, "", True, True)],
    "calibration": [("n", "int", None, "", True, True), ("n_events", "int", None, "", True, True),
                    ("n_nonevents", "int", None, "", True, True), ("sum_p", "float", None, "", True, False),
                    ("brier_sum", "float", None, "", True, False)],
    "reliability": [("edges", "array", _redges, "<= reliability bins+1", True, False),
                    ("bin_n_pos", "array", _rbins, "<= reliability bins", True, True),
                    ("bin_n_neg", "array", _rbins, "<= reliability bins", True, True),
                    ("bin_sum_p", "array", _rbins, "<= reliability bins", True, False)],
    "calfit": [("n", "int", None, "", True, True), ("theta", "array", _two, "(2,)", False, False),
               ("cov", "array", _two2, "(2, 2)", False, False), ("iterations", "int", None, "", True, False),
               ("converged", "int", None, "", True, False),
               # calibration-in-the-large: the intercept with logit(p) as offset (slope fixed at 1), its variance
               ("citl", "float", None, "", False, False), ("citl_var", "float", None, "", False, False),
               ("citl_converged", "int", None, "", True, False)],
    # ΔAUC of the radiomic model vs the volume-only baseline on the same patients (paired DeLong)
    "paired": [("n_events", "int", None, "", True, True), ("n_nonevents", "int", None, "", True, True),
               ("auc_model", "float", None, "", False, False), ("auc_baseline", "float", None, "", False, False),
               ("difference", "float", None, "", False, False), ("se_difference", "float", None, "", False, False)],
    "auc": [("n", "int", None, "", True, True), ("n_pos", "int", None, "", True, True),
            ("n_neg", "int", None, "", True, True), ("auc", "float", None, "", False, False),
            ("se", "float", None, "", False, False)],
    # held-out figures (site_client.evaluation.curves): per-step counts, each 0 or >= k; no scores, no thresholds
    "roc": [("bin_n_pos", "array", _steps, "(bins,) zero-padded", True, True),
            ("bin_n_neg", "array", _steps, "(bins,) zero-padded", True, True)],
    "relcurve": [("bin_n_pos", "array", _rsteps, "(reliability bins,) zero-padded", True, True),
                 ("bin_n_neg", "array", _rsteps, "(reliability bins,) zero-padded", True, True),
                 ("bin_sum_p", "array", _rsteps, "(reliability bins,) zero-padded", True, False)],
    "localfit": [("n", "int", None, "", True, True), ("theta", "array", _two, "(2,)", True, False),
                 ("info", "array", _two2, "(2, 2)", True, False)],
    # at a far line-search candidate (e.g. log T = -700) honest terms overflow to NaN: allowed, never summed
    # blindly (the coordinator keeps the candidate with the lowest finite NLL)
    "terms": [("n", "int", None, "", True, True), ("grad", "num", _recal, "(r,) or a number (r = 1)", False, False),
              ("info", "array", _recal2, "(r, r)", False, False), ("hess", "float", None, "", False, False),
              ("hess_fisher", "float", None, "", False, False), ("nll", "float", None, "", False, False)],
    "coverage": [(n, "int", None, "", True, True) for n in (
        "n", "n_covered", "n_missed", "n_pos", "n_neg", "n_pos_covered", "n_pos_missed", "n_neg_covered",
        "n_neg_missed")] + [(n, "int", None, "", True, False) for n in ("censored", "missed_below_k", "covered_below_k")],
    "setsize": [(n, "int", None, "", True, True) for n in (
        "n", "n_empty", "n_single", "n_both", "n_single_pos", "n_single_neg")],
}
EVALUATION_KINDS = ("histograms", "confusion", "calibration", "reliability", "calfit", "auc", "roc", "relcurve")
APPARENT_KINDS = ("histograms", "calibration")


def _params(prefix: str, doc: str, each: str, required: bool) -> Field:
    return Field(f"{prefix}/{{model}}/{{i}}", "array", doc, dtype="f",
                 shape=lambda d, parts: d.param_shapes(parts["model"])[int(parts["i"])]
                 if int(parts["i"]) < len(d.param_shapes(parts["model"])) else (-1,),
                 shape_text="layer i of the model's architecture", required=required, each=each)


def _names(template: str, doc: str, limit: Upto, required: bool = False) -> Field:
    return Field(template, "strs", doc, shape=limit, shape_text=limit.text, required=required)


_folds = Upto(lambda d: MAX_FOLDS, f"<= {MAX_FOLDS} folds")
_models = Upto(lambda d: MAX_FOLDS * len(VARIANTS) * len(FEATURE_SETS), "<= 4 per fold")
_features = Upto(lambda d: d.n_features, "<= p")
_batches = Upto(lambda d: MAX_BATCHES, f"<= {MAX_BATCHES} batches")
_batch_rows = Upto(lambda d: MAX_BATCHES, f"<= {MAX_BATCHES}")

# ---------------------------------------------------------------------------------------------------------
# The contract, phase by phase
# ---------------------------------------------------------------------------------------------------------
_STAMP = [Field(PROTOCOL_ID, "str", "id of the approved protocol (sha256, 64 hex)", required=True),
          Field(PHASE, "str", "the phase", required=True)]
_SIGNED = [Field(SITE, "str", "the replying site's name", required=True),
           Field(PHASE, "str", "the phase", required=True)]

_plan = PLAN + "/{fold}"
_PLAN_FIELDS = [
    Field(f"{_plan}/kind", "str", "'plan'"),
    _names(f"{_plan}/features", "features ComBat harmonises in this fold", _features),
    _names(f"{_plan}/all_features", "the handshake feature list", _features),
    _names(f"{_plan}/excluded", "features excluded (constant within a batch)", _features),
    _names(f"{_plan}/excluded_reason", "why each was excluded", _features),
    _names(f"{_plan}/batches", "global batch labels of the fold's training sites", _batches),
    Field(f"{_plan}/batch_n", "array", "cases per batch (sum of the sites' handshake batch counts)", dtype="i",
          shape=_batch_rows, shape_text=_batch_rows.text, lo=0),
    _names(f"{_plan}/spanning", "batches held by several sites (must be empty)", _batches),
    _names(f"{_plan}/sites", "the fold's training sites", _folds),
    _names(f"{_plan}/categorical", "categorical covariates (protocol)", Upto(lambda d: len(d.categorical_levels), "= protocol")),
    _names(f"{_plan}/continuous", "continuous covariates (protocol)", Upto(lambda d: d.n_continuous, "= protocol")),
    Field(f"{_plan}/batch_col", "str", "batch column (protocol batch.column; '' for batch.by: site)"),
    _names(f"{_plan}/design_columns", "design matrix columns", Upto(lambda d: d.max_design, "<= q")),
    _names(_plan + "/levels:{cov}", "levels of a categorical covariate (protocol levels)",
           Upto(lambda d: max([len(v) for v in d.categorical_levels.values()] or [0]), "<= protocol levels")),
    _flag(f"{_plan}/eb", "harmonisation.eb"), _flag(f"{_plan}/parametric", "harmonisation.parametric"),
    _flag(f"{_plan}/mean_only", "harmonisation.mean_only"),
    Field(f"{_plan}/ref_batch", "str", "harmonisation.reference_batch ('' = none)"),
    _flag(f"{_plan}/float32_covariates", "neuroCombat float32 covariates (0)"),
    _flag(f"{_plan}/neurocombat_zero_variance", "neuroCombat zero-variance rule (0)"),
    _float(f"{_plan}/conv", "EB convergence tolerance", lo=0.0, hi=1.0),
    _int(f"{_plan}/max_iter", "EB iteration limit", lo=1, hi=100_000),
]
_q = (lambda d, parts: (parts.get("q", -1),))
_qq = (lambda d, parts: (parts.get("q", -1), parts.get("q", -1)))
_qp = (lambda d, parts: (parts.get("q", -1), parts.get("p", -1)))

CONTRACT: dict[tuple[str, str], Message] = {}


def _declare(phase: str, direction: str, fields: Iterable[Field]) -> None:
    base = _STAMP if direction == REQUEST else _SIGNED
    CONTRACT[(phase, direction)] = Message(phase, direction, tuple(base) + tuple(fields))


_declare(HANDSHAKE, REQUEST, [
    Field(RELEASE, "str", "the coordinator's fedradval release (a site running another release refuses)",
          matches=RELEASE_FORM),
])
_declare(HANDSHAKE, REPLY, [
    Field(RELEASE, "str", "the site's installed fedradval release (the coordinator drops another release)",
          matches=RELEASE_FORM),
    *[_int(name, f"count: {name} (-1 = suppressed, 1..k-1)", lo=-1, required=True) for name in COUNT_FIELDS],
    _names(SUPPRESSED, "names of the suppressed counts", Upto(lambda d: len(COUNT_FIELDS), "<= 9"), required=True),
    Field(ELIGIBLE, "bool", "the site can take part (>= k cases per class and batch)", required=True),
    Field(REASON, "str", "why not (generic text)", required=True),
    _names(FEATURES, "ComBat / matrix feature columns", Upto(lambda d: 100_000, "p"), required=True),
    _names(MODEL_FEATURES, "inputs of the radiomic model", Upto(lambda d: 100_000, "<= p"), required=True),
    Field(VOLUME_FEATURE, "str", "feature of the volume-only baseline", required=True),
    _int(SCHEMA + "/n", "cases"),
    _names(SCHEMA + "/features", "feature list", _features),
    _names(SCHEMA + "/batches", "the site's batch labels", _batches),
    Field(SCHEMA + "/batch_n", "array", "cases per batch", dtype="i", shape=_batch_rows, shape_text="(b,)", lo=0, counts=True),
    Field(SCHEMA + "/mean", "array", "per-batch feature means", dtype="f",
          shape=lambda d, parts: (parts["b"], d.n_features), shape_text="(b, p)"),
    Field(SCHEMA + "/var", "array", "per-batch feature variances", dtype="f",
          shape=lambda d, parts: (parts["b"], d.n_features), shape_text="(b, p)", lo=0.0),
    Field(SCHEMA + "/constant", "array", "1 where a feature is constant in a batch", dtype="u",
          shape=lambda d, parts: (parts["b"], d.n_features), shape_text="(b, p)", lo=0, hi=1),
    _names(SCHEMA + "/levels:{cov}", "the site's levels of a categorical covariate",
           Upto(lambda d: max([len(v) for v in d.categorical_levels.values()] or [0]), "<= protocol levels")),
    _int(FVOL + "/n", "cases", counts=True),
    Field(FVOL + "/sum_x", "array", "Σx per model feature", dtype="f", shape=_vec(lambda d: d.n_model_features), shape_text="(p_model,)"),
    Field(FVOL + "/sum_x2", "array", "Σx² per model feature", dtype="f", shape=_vec(lambda d: d.n_model_features), shape_text="(p_model,)"),
    Field(FVOL + "/sum_xv", "array", "Σx·v per model feature", dtype="f", shape=_vec(lambda d: d.n_model_features), shape_text="(p_model,)"),
    _float(FVOL + "/sum_v", "Σv (volume)"), _float(FVOL + "/sum_v2", "Σv²"),
])
_declare(COMBAT1, REQUEST, [
    _names(TRAIN_FOLDS, "folds this site trains", _folds, required=True),
    *_PLAN_FIELDS,
])
_declare(COMBAT1, REPLY, [
    Field(R1 + "/{fold}/xtx", "array", "XᵀX of the site's design", dtype="f", shape=_qq, shape_text="(q, q)",
          required=True, each=TRAIN_FOLDS),
    Field(R1 + "/{fold}/xty", "array", "XᵀY", dtype="f", shape=_qp, shape_text="(q, p_fold)", required=True,
          each=TRAIN_FOLDS),
    _int(R1 + "/{fold}/n", "cases", lo=1, required=True, each=TRAIN_FOLDS, counts=True),
    Field(R1 + "/{fold}/ref_xtx", "array", "XᵀX of the site's reference-batch rows (reference mode; for σ̂²)",
          dtype="f", shape=_qq, shape_text="(q, q)"),
    Field(R1 + "/{fold}/ref_xty", "array", "XᵀY of the site's reference-batch rows (reference mode; for σ̂²)",
          dtype="f", shape=_qp, shape_text="(q, p_fold)"),
])


def _fit_fields() -> list[Field]:
    """A fold's ComBat fit (B̂, α̂): in the first training message, with the fold's σ̂²."""
    return [
        Field(FIT + "/{fold}/kind", "str", "'fit'"),
        Field(FIT + "/{fold}/beta", "array", "B̂", dtype="f", shape=_qp, shape_text="(q, p_fold)"),
        Field(FIT + "/{fold}/alpha", "array", "grand mean α̂", dtype="f", shape=lambda d, parts: (parts.get("p", -1),),
              shape_text="(p_fold,)"),
        _float(FIT + "/{fold}/cond", "cond(XᵀX)", finite=False),
        Field(FIT + "/{fold}/cont_mean", "array", "continuous covariates' mean", dtype="f",
              shape=_vec(lambda d: d.n_continuous), shape_text="(c,)"),
        Field(FIT + "/{fold}/cont_sd", "array", "continuous covariates' SD", dtype="f",
              shape=_vec(lambda d: d.n_continuous), shape_text="(c,)"),
    ]


_declare(TRAIN, REQUEST, [
    _int(ROUND, "training round", lo=1, required=True),
    _names(MODELS, "models this site trains this round", _models, required=True),
    _names(HELDOUT_FOLDS, "folds this site is held out of", _folds, required=True),
    _names(TRAIN_FOLDS, "folds this site trains (first round)", _folds),
    _params(W, "global parameters", MODELS, True),
    Field(SCALE + "/{fold}/kind", "str", "'scale'"),
    Field(SCALE + "/{fold}/var_pooled", "array", "σ̂²", dtype="f", shape=lambda d, parts: (parts.get("p", -1),),
          shape_text="(p_fold,)", lo=0.0),
    Field(SCALE + "/{fold}/zero_variance", "array", "1 where σ̂² was 0", dtype="u",
          shape=lambda d, parts: (parts.get("p", -1),), shape_text="(p_fold,)", lo=0, hi=1),
    Field(STD + "/{fold}/{variant}/mean", "array", "standardisation mean", dtype="f", shape=_p, shape_text="(p,)"),
    Field(STD + "/{fold}/{variant}/sd", "array", "standardisation SD", dtype="f", shape=_p, shape_text="(p,)", lo=0.0),
    *_PLAN_FIELDS,
    *_fit_fields(),
])
_declare(TRAIN, REPLY, [
    _params(W, "the site's updated parameters", MODELS, True),
    _int(N + "/{model}", "training cases (FedAvg weight)", lo=1, required=True, each=MODELS, counts=True),
    _float(LOSS + "/{model}", "mean training loss of the update", lo=0.0, required=True, each=MODELS),
    _names(DIAG + "/{fold}/batches", "the site's batch labels", _batches),
    Field(DIAG + "/{fold}/batch_n", "array", "cases per batch", dtype="i", shape=_batch_rows, shape_text="(b,)",
          lo=0, counts=True),
    Field(DIAG + "/{fold}/mean", "array", "per-batch means after harmonisation", dtype="f",
          shape=lambda d, parts: (parts["b"], d.n_features), shape_text="(b, p)"),
    Field(DIAG + "/{fold}/var", "array", "per-batch variances after harmonisation", dtype="f",
          shape=lambda d, parts: (parts["b"], d.n_features), shape_text="(b, p)", lo=0.0),
])
_declare(CALIBRATE, REQUEST, [
    _int(STEP, "0: final weights and histograms; >= 1: Newton round", hi=MAX_STEPS, required=True),
    _names(TRAIN_MODELS, "models the site trained", _models, required=True),
    _names(EVAL_MODELS, "models the site validates (step 0)", _models),
    _params(W, "final parameters (step 0)", "", False),
    Field(PAR + "/{model}", "array", "candidate recalibration points", dtype="f",
          shape=lambda d, parts: (parts.get("m", -1), d.recal_dim), shape_text=f"(<= {MAX_CANDIDATES}, r)"),
])
_declare(CALIBRATE, REPLY, [
    *_aggregate(CALHIST + "/{model}", "histograms"),
    *_aggregate(CONFORMAL + "/{model}/{cls}", "conformal"),
    # validation.conformal_method = dp_quantile: the class count and the ε-DP noisy counts on the fixed grid
    # (true count + discrete Laplace noise, so any integer; never small-cell merged: the noise protects them)
    _int(CONFORMAL + "/{model}/{cls}/n", "dp conformal: calibration cases of the class", counts=True),
    Field(CONFORMAL + "/{model}/{cls}/bin_n_noisy", "array", "dp conformal: noisy counts per grid bin", dtype="i",
          shape=_vec(lambda d: d.conformal_dp_bins), shape_text="(conformal_dp_bins,)", lo=-10 ** 7, hi=10 ** 7),
    *[f for kind in APPARENT_KINDS for f in _aggregate(APPARENT + f"/{{model}}/{kind}", kind)],
    *[f for kind in EVALUATION_KINDS for f in _aggregate(BEFORE + f"/{{model}}/{kind}", kind)],
    *_aggregate(BEFORE + "/{model}/paired", "paired"),
    *_aggregate(TERMS + "/{model}/{j}", "terms"),
    *_aggregate(LOCALFIT + "/{model}", "localfit"),
])
_declare(EVALUATE, REQUEST, [
    _names(EVAL_MODELS, "models the site validates", _models, required=True),
    Field(RECAL_METHOD + "/{model}", "str", "validation.recalibration", required=True, each=EVAL_MODELS),
    Field(RECAL + "/{model}", "array", "recalibration parameters", dtype="f", shape=_recal, shape_text="(r,)",
          required=True, each=EVAL_MODELS),
    Field(Q + "/{model}", "array", "conformal thresholds (q_neg, q_pos)", dtype="f", shape=_two, shape_text="(2,)",
          lo=0.0, hi=1.0),
])
_declare(EVALUATE, REPLY, [
    *[f for kind in EVALUATION_KINDS for f in _aggregate(AFTER + f"/{{model}}/{kind}", kind)],
    *_aggregate(COVERAGE + "/{model}", "coverage"),
    *_aggregate(SETSIZE + "/{model}", "setsize"),
])

DTYPE_NAMES = {"f": "float64", "i": "int64", "u": "uint8"}
# the time-to-event phases (cox, cox-baseline, cox-evaluate) declare themselves into CONTRACT
from protocols import survival_contract as _survival  # noqa: E402,F401


# ---------------------------------------------------------------------------------------------------------
# Builders and readers
# ---------------------------------------------------------------------------------------------------------
def key(*parts: object) -> str:
    """A message key from its segments (``key("w", model, 0)`` → ``"w/<model>/0"``)."""
    return "/".join(str(p) for p in parts)


def plan_fields() -> list[str]:
    """Names of the fields of one fold's ComBat plan (without the per-covariate ``levels:{cov}``)."""
    prefix = PLAN + "/{fold}/"
    return [f.template[len(prefix):] for f in CONTRACT[(COMBAT1, REQUEST)].fields
            if f.template.startswith(prefix) and "{cov}" not in f.template]


def message(phase: str, direction: str) -> Message:
    try:
        return CONTRACT[(phase, direction)]
    except KeyError:
        raise ContractViolation(PHASE, "names a phase the contract does not describe") from None


# ---------------------------------------------------------------------------------------------------------
# Checking a message
# ---------------------------------------------------------------------------------------------------------
def fold_sizes(plans: dict[str, dict]) -> dict[str, dict]:
    """Per fold, the sizes its ComBat plan fixes: design width q and harmonised features p."""
    return {fold: {"q": len(plan["design_columns"]), "p": len(plan["features"])} for fold, plan in plans.items()}


def _context(payload: dict) -> dict[str, dict]:
    """Sizes a message defines for itself (per fold: design width q, harmonised features p; per model:
    candidate count m; per prefix: batch count b), taken from the message's own lists and bounded later."""
    ctx: dict[str, dict] = {}
    for k, v in payload.items():
        parts = k.split("/")
        if len(parts) == 3 and parts[0] == PLAN:
            if parts[2] == "design_columns" and isinstance(v, list):
                ctx.setdefault(parts[1], {})["q"] = len(v)
            if parts[2] == "features" and isinstance(v, list):
                ctx.setdefault(parts[1], {})["p"] = len(v)
        if len(parts) >= 2 and parts[-1] == "batches" and isinstance(v, list):
            ctx.setdefault("/".join(parts[:-1]), {})["b"] = len(v)
        if parts[0] == PAR and isinstance(v, np.ndarray) and v.ndim == 2:
            ctx.setdefault("/".join(parts[1:]), {})["m"] = min(int(v.shape[0]), MAX_CANDIDATES)
    return ctx


def _type_ok(f: Field, value: object) -> str | None:
    if f.kind == "num" and not isinstance(value, np.ndarray):
        return _type_ok(Field(f.template, "float", f.doc), value)
    if f.kind in ("array", "num"):
        if not isinstance(value, np.ndarray):
            return "must be an array"
        want = {"f": "f", "i": "iu", "u": "u"}[f.dtype]
        if value.dtype.kind not in want and not (f.dtype == "i" and value.dtype.kind == "u"):
            return "has the wrong dtype"
        return None
    if f.kind == "bool":
        return None if isinstance(value, (bool, np.bool_)) else "must be a boolean"
    if f.kind == "int":
        return None if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)) else "must be an integer"
    if f.kind == "float":
        return None if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool) else "must be a number"
    if f.kind == "str":
        if not isinstance(value, str) or len(value) > 100_000:
            return "must be a string"
        return None if not f.matches or re.fullmatch(f.matches, value) else "is not of the expected form"
    if f.kind == "strs":
        ok = isinstance(value, list) and all(isinstance(v, str) and len(v) <= MAX_NAME for v in value)
        return None if ok else "must be a list of names"
    return "has an unknown kind"


def _shape_ok(f: Field, value: object, dims: Dims | None, parts: dict) -> str | None:
    if f.shape is None or dims is None or (f.kind == "num" and not isinstance(value, np.ndarray)):
        return None
    if isinstance(f.shape, Upto):
        size = len(value) if isinstance(value, list) else (value.size if value.ndim == 1 else -1)
        return None if 0 <= size <= f.shape.limit(dims) else "has the wrong shape or too many entries"
    try:
        want = tuple(f.shape(dims, parts))
    except (KeyError, IndexError, ValueError):
        return "has a shape the contract cannot place"
    return None if tuple(np.shape(value)) == want else "has the wrong shape"


def _range_ok(f: Field, value: object) -> str | None:
    if f.kind not in ("array", "num", "int", "float"):
        return None
    arr = np.asarray(value, dtype=np.float64) if not (isinstance(value, np.ndarray) and value.size == 0) else np.zeros(0)
    if f.finite and not np.all(np.isfinite(arr)):
        return "holds NaN or inf"
    real = arr[np.isfinite(arr)]
    if f.lo is not None and np.any(real < f.lo):
        return "is below its declared range"
    if f.hi is not None and np.any(real > f.hi):
        return "is above its declared range"
    return None


def check_message(phase: str, direction: str, payload: dict, dims: Dims | None,
                  request: dict | None = None, sizes: dict[str, dict] | None = None) -> list[tuple[Field, dict, str]]:
    """Check ``payload`` against the contract; raise :class:`ContractViolation` at the first field that is not
    described, has the wrong type/shape or is out of range, or is required and absent. ``dims`` None checks
    keys and types only (shapes need the handshake). ``request`` (for replies) instantiates required fields:
    for every name in the request's list ``Field.each``; ``sizes`` (:func:`fold_sizes`) gives the folds' plan
    sizes to messages after the plan's. Returns the matched (field, parts, key) triples."""
    spec = message(phase, direction)
    if not isinstance(payload, dict):
        raise ContractViolation("message", "is not a flat mapping")
    ctx: dict[str, dict] = {}
    for source in (sizes or {}, _context(request or {}), _context(payload)):
        for scope, values in source.items():
            ctx.setdefault(scope, {}).update(values)
    hits = []
    for k in payload:
        if not isinstance(k, str):
            raise ContractViolation("a key", "is not a string")
        hit = spec.match(k)
        if hit is None or (hit[1].get("cov") is not None and dims is not None
                           and hit[1]["cov"] not in dims.categorical_levels):
            raise ContractViolation(k, "is not described by the message contract")
        hits.append((k, *hit))
    matched = []
    for k, f, parts in hits:
        scope = {}
        for name in ("fold", "model"):
            if name in parts and parts[name] is not None:
                scope.update(ctx.get(parts[name], {}))
        scope.update(ctx.get(k.rsplit("/", 1)[0], {}))
        parts = {**parts, **scope}
        value = payload[k]
        for problem in (_type_ok(f, value), _shape_ok(f, value, dims, parts), _range_ok(f, value)):
            if problem:
                raise ContractViolation(k, problem)
        matched.append((f, parts, k))
    for f in spec.fields:
        if not f.required:
            continue
        if not f.each:
            if "{" not in f.template and f.template not in payload:
                raise ContractViolation(f.template, "is required and missing")
            continue
        names = (request or {}).get(f.each, [])
        for name in names if isinstance(names, list) else []:
            placeholder = "{model}" if "{model}" in f.template else "{fold}"
            if "{i}" in f.template:
                n_params = len(dims.param_shapes(name)) if dims is not None else 1
                wanted = [f.template.replace(placeholder, name).replace("{i}", str(i)) for i in range(n_params)]
            else:
                wanted = [f.template.replace(placeholder, name)]
            for w in wanted:
                if w not in payload:
                    raise ContractViolation(w, "is required and missing")
    return matched


def _range_text(f: Field) -> str:
    if f.lo is not None and f.hi is not None:
        return f"[{f.lo:g}, {f.hi:g}]"
    if f.lo is not None:
        return f">= {f.lo:g}"
    if f.hi is not None:
        return f"<= {f.hi:g}"
    return ""


TABLE_BEGIN = "<!-- BEGIN GENERATED CONTRACT TABLE -->"
TABLE_END = "<!-- END GENERATED CONTRACT TABLE -->"


def contract_table() -> str:
    """The contract as a Markdown table (docs/architecture.md holds it; a test checks it is current)."""
    rows = ["| phase | direction | key | type | shape | range | required | meaning |", "|---|---|---|---|---|---|---|---|"]
    for (phase, direction), spec in CONTRACT.items():
        for f in spec.fields:
            kind = {"array": f"array {DTYPE_NAMES.get(f.dtype, '')}", "num": "number or array float64",
                    "strs": "list[str]"}.get(f.kind, f.kind)
            shape = f.shape.text if isinstance(f.shape, Upto) else f.shape_text
            rng = _range_text(f) or (f"form `{f.matches}`" if f.matches else "")
            if not f.finite:
                rng = (rng + " NaN allowed").strip()
            req = ("yes" + (f" (each of {f.each})" if f.each else "")) if f.required else ""
            rows.append(f"| {phase} | {direction} | `{f.template}` | {kind} | {shape} | {rng} | {req} | {f.doc} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":  # python -m protocols.contract docs/architecture.md
    import sys
    from pathlib import Path

    from protocols import contract  # the imported module: the survival phases declare themselves into its CONTRACT
    from protocols.reference import update_document

    update_document(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/architecture.md"), contract.contract_table(),
                    TABLE_BEGIN, TABLE_END)
