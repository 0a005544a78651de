"""Plain result containers passed from the federated evaluation to MLflow logging and the report.

No MLflow or Flower types here: everything is numbers, numpy arrays, strings and lists, so results can be built
in tests from pure functions and serialised with :func:`to_jsonable`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Estimate:
    """A point estimate with standard error and 95% CI (any of them may be None when undefined)."""

    value: float
    se: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None


@dataclass(frozen=True)
class Proportion:
    """x / n with its 95% CI and the interval method ('wilson' or 'clopper-pearson')."""

    value: float
    ci_low: float
    ci_high: float
    x: int
    n: int
    method: str


@dataclass(frozen=True)
class AUCEstimate:
    """AUC from binned scores, DeLong SE, 95% CI on the logit scale, and the binning bound.

    ``binning_bound`` = ½·ΣH⁺H⁻/(n⁺n⁻): |AUC on raw scores - ``auc``| is at most this.
    """

    auc: float
    se: float
    ci_low: float
    ci_high: float
    binning_bound: float
    n_pos: int
    n_neg: int


@dataclass(frozen=True)
class AUCDifference:
    """AUC(model) - AUC(baseline) with SE, 95% CI and two-sided p-value; ``method`` says which variance."""

    difference: float
    se: float
    ci_low: float
    ci_high: float
    p_value: float
    method: str


@dataclass(frozen=True)
class CalibrationFit:
    """Logistic calibration y ~ σ(a + b·logit p) (Wald CIs): ``slope`` b and ``intercept`` a of the joint fit, and
    ``citl`` = calibration-in-the-large, the intercept with logit p as offset (slope fixed 1; 0 = mean risk right).
    """

    intercept: Estimate
    slope: Estimate
    iterations: int
    converged: bool
    nll: float
    citl: Estimate | None = None


@dataclass(frozen=True)
class Recalibration:
    """A recalibration map fitted on the training sites' calibration parts.

    ``method`` 'platt': p' = σ(a + b·logit p) with params {'a', 'b'}; 'temperature': p' = σ(logit p / T) with
    {'temperature'}; 'none': identity.
    """

    method: str
    params: dict[str, float]
    se: dict[str, float] = field(default_factory=dict)
    iterations: int = 0
    converged: bool = True

    def apply(self, p: np.ndarray) -> np.ndarray:
        """Recalibrated probabilities (used at the site by whoever holds p; pure numpy)."""
        from fedmath.logistic import recalibrate, recalibration_vector

        return recalibrate(p, self.method, recalibration_vector(self.method, self.params))


@dataclass(frozen=True)
class ReliabilityPoint:
    """One non-empty reliability bin or group: mean predicted, observed rate with Wilson CI, and its size (a site's
    reliability group has no released edges: ``bin_low`` = ``bin_high`` = its mean predicted probability)."""

    bin_low: float
    bin_high: float
    n: int
    mean_predicted: float
    observed: float
    ci_low: float
    ci_high: float


@dataclass(frozen=True)
class DecisionCurve:
    """Net benefit of the model, treat-all and treat-none (0) at each threshold."""

    thresholds: list[float]
    net_benefit: list[float]
    treat_all: list[float]
    prevalence: float


@dataclass(frozen=True)
class ConformalStats:
    """Prediction-set validation at one site (or pooled) for thresholds (q_neg, q_pos) at level 1 - alpha."""

    alpha: float
    q_neg: float
    q_pos: float
    coverage: Proportion | None
    coverage_neg: Proportion | None
    coverage_pos: Proportion | None
    mean_set_size: float | None
    rate_empty: float | None
    rate_single: float | None
    rate_both: float | None
    note: str = ""


@dataclass(frozen=True)
class RandomEffects:
    """Random-effects summary on the natural scale (pooled on ``scale``; see :mod:`coordinator.validation.meta`).

    ``method``: the τ² estimator ('REML' by default, 'DL'); ``ci_method``: 'HKSJ' (t with K-1 df on the
    Hartung-Knapp-Sidik-Jonkman SE) or 'z' (one site). ``pi_low``/``pi_high`` = 95% prediction interval for a
    new site; None when K < 3 (see ``note``). ``tau2_ci_*`` = Q-profile CI of τ², ``i2_ci_*`` the I² it implies.
    ``se`` is the SE of the pooled estimate on the pooling scale (HKSJ-adjusted).
    """

    estimate: float
    ci_low: float
    ci_high: float
    tau2: float | None
    q: float | None
    i2: float | None
    k: int
    pi_low: float | None
    pi_high: float | None
    scale: str
    fixed_effect: float
    note: str = ""
    method: str = "REML"
    ci_method: str = "HKSJ"
    se: float | None = None
    df: int | None = None
    tau2_ci_low: float | None = None
    tau2_ci_high: float | None = None
    i2_ci_low: float | None = None
    i2_ci_high: float | None = None
    adjusted: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Correlation:
    """Pearson r between a model feature and tumour volume with a Fisher-z 95% CI."""

    feature: str
    r: float
    ci_low: float | None
    ci_high: float | None
    n: int


#: Where a site's drawn ROC curve (``SiteMetrics.roc_source``) came from; the text is shown in figure legends.
ROC_FROM_RECONCILED_STEPS = "site steps, reconciled"  # the site's k-anonymous steps, reconciled to its exact AUC
ROC_FROM_STEPS = "site steps"                         # the site's steps, not reconciled (no AUC to match)
ROC_FROM_HISTOGRAM = "k-merged histogram"             # the k-merged class histograms (ties as diagonals)


@dataclass
class SiteMetrics:
    """External-validation metrics of one model at one held-out site (or pooled across held-out sites)."""

    site: str
    n: int
    n_events: int
    auc: AUCEstimate | None = None
    threshold: float | None = None
    sensitivity: Proportion | None = None
    specificity: Proportion | None = None
    ppv: Proportion | None = None
    npv: Proportion | None = None
    brier: float | None = None
    scaled_brier: float | None = None
    oe_ratio: Estimate | None = None
    calibration: CalibrationFit | None = None
    ece: float | None = None
    reliability: list[ReliabilityPoint] = field(default_factory=list)
    decision_curve: DecisionCurve | None = None
    roc_fpr: list[float] = field(default_factory=list)
    roc_tpr: list[float] = field(default_factory=list)
    # the drawn ROC, vertices from (0, 0) to (1, 1): the site's k-anonymous step curve reconciled to its exact AUC
    # (coordinator.validation.curves), else the k-merged histogram's curve (ties as diagonal segments)
    roc_area: float | None = None   # area under the drawn curve
    roc_bound: float | None = None  # |roc_area - AUC on exact scores| <= roc_bound
    roc_step_bound: float | None = None  # ½ΣΔFP·ΔTP/(n⁺n⁻): within-step uncertainty of the drawn curve's shape
    roc_source: str = ""            # ROC_FROM_RECONCILED_STEPS, ROC_FROM_STEPS or ROC_FROM_HISTOGRAM
    notes: list[str] = field(default_factory=list)


@dataclass
class HarmonisationDiagnostics:
    """Per-site feature location/scale before and after harmonisation (aggregates only)."""

    site: str
    features: list[str]
    mean_before: list[float]
    mean_after: list[float]
    sd_before: list[float]
    sd_after: list[float]


@dataclass
class FoldResult:
    """One leave-one-site-out fold: the held-out site's metrics and what was fitted on the other sites."""

    heldout_site: str
    training_sites: list[str]
    before: SiteMetrics
    after: SiteMetrics | None = None
    recalibration: Recalibration | None = None
    conformal: ConformalStats | None = None
    baseline: SiteMetrics | None = None
    auc_difference: AUCDifference | None = None
    training_history: dict[str, list[float]] = field(default_factory=dict)


@dataclass
class ModelWeights:
    """Final model as numpy: dense layers (weight (out, in), bias (out,)), ReLU/tanh between, sigmoid at the end.

    A logistic model is one layer; a torch MLP state dict converts with :func:`layers_from_state_dict`.
    Optional standardisation ``(x - mean) / scale`` is applied first.
    """

    features: list[str]
    layers: list[tuple[np.ndarray, np.ndarray]]
    activation: str = "relu"
    mean: np.ndarray | None = None
    scale: np.ndarray | None = None
    description: str = ""


@dataclass
class FinalModel:
    """The model trained on all sites, its recalibration and conformal thresholds."""

    weights: ModelWeights
    recalibration: Recalibration | None = None
    conformal_q_neg: float | None = None
    conformal_q_pos: float | None = None
    training_history: dict[str, list[float]] = field(default_factory=dict)


@dataclass
class SiteInfo:
    """A participating site and its counts (as reported by the site, after small-cell control)."""

    name: str
    n: int
    n_events: int
    role: str = "loco"
    scanner: str = ""


@dataclass
class StudyResult:
    """Everything one study logs: protocol, sites, folds, pooled and random-effects summaries, final model."""

    study_name: str
    protocol: dict[str, Any]
    protocol_id: str
    sites: list[SiteInfo]
    folds: list[FoldResult]
    alpha: float
    k_min_cell: int
    pooled: SiteMetrics | None = None
    pooled_baseline: SiteMetrics | None = None
    meta: dict[str, RandomEffects] = field(default_factory=dict)
    feature_volume: list[Correlation] = field(default_factory=list)
    harmonisation: list[HarmonisationDiagnostics] = field(default_factory=list)
    final_model: FinalModel | None = None
    notes: list[str] = field(default_factory=list)


def layers_from_state_dict(state: dict[str, np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Pair ``*.weight`` / ``*.bias`` arrays of a torch ``nn.Sequential`` state dict, in insertion order."""
    layers = []
    for key, w in state.items():
        if key.endswith(".weight"):
            bias_key = key[: -len("weight")] + "bias"
            if bias_key not in state:
                raise ValueError(f"state dict has {key!r} but no {bias_key!r}")
            layers.append((np.asarray(w, dtype=float), np.asarray(state[bias_key], dtype=float)))
    if not layers:
        raise ValueError("state dict holds no '*.weight' arrays")
    return layers


def to_jsonable(obj: Any) -> Any:
    """Dataclasses/numpy → JSON-safe Python (non-finite floats become None)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return f if math.isfinite(f) else None
    return obj
