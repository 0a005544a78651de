"""Model architectures shared by sites (training, torch) and the coordinator (aggregation, logging; numpy).

A model is a stack of dense layers ``W (out, in), b (out,)`` with ReLU between hidden layers and one output
logit f(x); the predicted probability is σ(f(x)). Parameters travel as a flat, ordered list of float64 arrays
``[W1, b1, W2, b2, ...]``, identical to the order of a torch ``nn.Sequential`` of ``nn.Linear`` layers.

* ``logistic``: one layer (d → 1), trained with the logistic (binary cross-entropy) loss;
* ``linear_svm``: one layer (d → 1), trained with the hinge loss max(0, 1 - y±·f); σ(f) is only a score
  until Platt recalibration maps it to a probability;
* ``mlp``: d → h1 → … → 1 with ReLU, binary cross-entropy.

Initial weights are drawn here in numpy (uniform ±1/√fan_in, the default range of ``torch.nn.Linear``) from a
``numpy.random.Generator`` seeded by the protocol seed, so the coordinator needs no torch and every run with
the same seed starts from identical weights. k-NN, trees and forests are not federated this way: a k-NN model
*is* its training data, and tree splits are thresholds on patient values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from fedmath.network import logits, predict_proba, weighted_average  # noqa: F401  (one home: fedmath)

if TYPE_CHECKING:
    from protocols.schema import Validation

MODEL_TYPES = ("logistic", "linear_svm", "mlp")


@dataclass(frozen=True)
class ModelSpec:
    """Architecture: model type, number of inputs, hidden layer sizes (MLP only)."""

    kind: str
    n_inputs: int
    hidden_sizes: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in MODEL_TYPES:
            raise ValueError(f"unknown model type {self.kind!r}; expected one of {', '.join(MODEL_TYPES)}")
        if self.n_inputs < 1:
            raise ValueError(f"a model needs at least one input feature, got {self.n_inputs}")

    @property
    def layer_sizes(self) -> list[int]:
        """[d, h1, …, 1]: a logistic or linear SVM model is [d, 1]."""
        hidden = list(self.hidden_sizes) if self.kind == "mlp" else []
        return [self.n_inputs, *hidden, 1]

    def shapes(self) -> list[tuple[int, ...]]:
        """Shapes of the flat parameter list [W1, b1, W2, b2, …]."""
        sizes = self.layer_sizes
        out: list[tuple[int, ...]] = []
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
            out += [(fan_out, fan_in), (fan_out,)]
        return out


def init_params(spec: ModelSpec, seed: int) -> list[np.ndarray]:
    """Deterministic initial parameters: U(-1/√fan_in, 1/√fan_in) for weights and biases (torch's default)."""
    rng = np.random.default_rng(seed)
    params: list[np.ndarray] = []
    sizes = spec.layer_sizes
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        bound = 1.0 / np.sqrt(fan_in)
        params.append(rng.uniform(-bound, bound, size=(fan_out, fan_in)))
        params.append(rng.uniform(-bound, bound, size=(fan_out,)))
    return params


def check_params(spec: ModelSpec, params: list[np.ndarray], where: str = "") -> None:
    """Raise naming the first parameter whose shape differs from the architecture or is not finite."""
    shapes = spec.shapes()
    if len(params) != len(shapes):
        raise ValueError(f"{where}expected {len(shapes)} parameter arrays for {spec}, got {len(params)}")
    for i, (p, s) in enumerate(zip(params, shapes)):
        if tuple(np.shape(p)) != s:
            raise ValueError(f"{where}parameter {i} has shape {np.shape(p)}, expected {s}")
        if not np.all(np.isfinite(p)):
            raise ValueError(f"{where}parameter {i} holds NaN or inf (training diverged? lower the learning rate)")


#: Fold name of the final model trained on all (non-external) sites; site names cannot start with '_'.
ALL_SITES = "_all"
VARIANTS = ("harmonised", "raw")
FEATURE_SETS = ("radiomic", "volume")


def model_key(fold: str, variant: str, feature_set: str) -> str:
    """``"<fold>/<variant>/<feature set>"``: the name of one model in every message."""
    if variant not in VARIANTS or feature_set not in FEATURE_SETS:
        raise ValueError(f"unknown model variant {variant!r} or feature set {feature_set!r}")
    return f"{fold}/{variant}/{feature_set}"


def parse_model_key(key: str) -> tuple[str, str, str]:
    """Inverse of :func:`model_key`."""
    parts = key.split("/")
    if len(parts) != 3 or parts[1] not in VARIANTS or parts[2] not in FEATURE_SETS:
        raise ValueError(f"not a model key: {key!r}; expected '<fold>/<harmonised|raw>/<radiomic|volume>'")
    return parts[0], parts[1], parts[2]


def is_radiomic(model: str) -> bool:
    """True for a model of the radiomic feature set (all model features), False for a volume-only baseline."""
    return parse_model_key(model)[2] == "radiomic"


def conformal_applies(validation: "Validation", model: str) -> bool:
    """Whether ``model`` gets conformal thresholds, i.e. whether its training sites release calibration scores
    for it: always with ``validation.conformal_method: histogram``; with ``dp_quantile`` only for the radiomic
    models (the study reports prediction sets for those; a volume-only release would spend ε for nothing).
    The one rule both sides follow: the site before it releases, the coordinator before it computes thresholds."""
    return validation.conformal_method == "histogram" or is_radiomic(model)


def volume_partner(model: str) -> str:
    """The volume-only model validated beside a radiomic one: same fold and variant, feature set ``volume``
    (the baseline of the paired ΔAUC and of the survival comparison)."""
    fold, variant, _ = parse_model_key(model)
    return model_key(fold, variant, "volume")


def model_spec(kind: str, hidden_sizes: list[int] | tuple[int, ...], feature_set: str, n_model_features: int) -> ModelSpec:
    """Architecture of the radiomic model (all model features) or the volume-only baseline (one input)."""
    n_inputs = 1 if feature_set == "volume" else n_model_features
    return ModelSpec(kind, n_inputs, tuple(hidden_sizes) if kind == "mlp" else ())


def params_to_payload(prefix: str, params: list[np.ndarray]) -> dict[str, np.ndarray]:
    """``{"<prefix>/<i>": array}`` for the flat parameter list."""
    return {f"{prefix}/{i}": np.ascontiguousarray(p, dtype=np.float64) for i, p in enumerate(params)}


def params_from_payload(payload: dict, prefix: str) -> list[np.ndarray]:
    """Inverse of :func:`params_to_payload`; raises naming the prefix when no parameters are present."""
    out = []
    while f"{prefix}/{len(out)}" in payload:
        out.append(np.asarray(payload[f"{prefix}/{len(out)}"], dtype=np.float64))
    if not out:
        raise ValueError(f"no parameters under {prefix!r} in the message")
    return out
