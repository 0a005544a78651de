"""Local training in torch (site only): the same code trains a site's share of a federated round and, in
tests, the centrally trained reference model.

Loss: binary cross-entropy on the logit (logistic, MLP) or hinge max(0, 1 − y±·f) with y± = 2y − 1 (linear
SVM), mean over the mini-batch; FedProx adds (μ/2)·‖θ − θ_global‖². Weight decay is the optimiser's L2 term.
The optimiser (SGD or Adam) starts fresh in every round; its state is not carried between rounds. Mini-batch
order comes from a torch generator seeded by (protocol seed, round, site, model), so training is
deterministic; computations are in float64 on one CPU thread.

Batched: all the models of one training message are trained as one computation (:func:`train_models`).
Models of one architecture family (type, hidden sizes) and one number of training cases are stacked along a
leading model axis: W (M, out, in), b (M, out), inputs (M, n, d), and every mini-batch step is one batched
matrix product per layer for all M models. The stacked problem is exactly M independent problems: the loss
is the *sum* over models of each model's mean mini-batch loss, so model m's gradient is that of its own loss;
SGD and Adam (with their L2 term) act element by element, so the stacked optimiser takes each model's own
step (Adam's step counter is the same for all, as every model takes the same number of steps). Each model
keeps its own seed, hence its own mini-batch order. Models with fewer inputs (the volume-only baseline,
d = 1) are padded with zero input columns and zero weights (the per-model mask): a zero input gives the
padded weight a zero loss gradient, and weight decay, the FedProx pull and Adam's update of a zero weight
with zero gradient are all zero, so padded weights stay exactly 0 and the model computes what it computes
unpadded. The cost of a step is then nearly independent of M at radiomic sizes (per-operation overhead
dominates), instead of growing linearly with M.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from protocols.models import ModelSpec, check_params
from protocols.schema import Model


@dataclass(frozen=True)
class TrainConfig:
    """The protocol's optimisation settings, as plain values."""

    optimiser: str
    learning_rate: float
    weight_decay: float
    batch_size: int
    local_epochs: int
    proximal_mu: float

    @classmethod
    def from_protocol(cls, model: Model) -> "TrainConfig":
        mu = model.proximal_mu if model.aggregation == "fedprox" else 0.0
        return cls(model.optimiser, model.learning_rate, model.weight_decay, model.batch_size,
                   model.local_epochs, mu)


@dataclass(frozen=True)
class LocalModel:
    """One model of a training message: architecture, starting (global) parameters, its design matrix and
    labels on this site's training cases, and the seed of its mini-batch order."""

    spec: ModelSpec
    params: list[np.ndarray]
    x: np.ndarray
    y: np.ndarray
    seed: int


def derived_seed(*parts: object) -> int:
    """A 63-bit seed from any parts (stable across processes and platforms; unlike ``hash``)."""
    digest = hashlib.sha256("|".join(str(p) for p in parts).encode()).hexdigest()
    return int(digest[:15], 16)


def _family(model: LocalModel) -> tuple:
    """Models that can share one stacked computation: same type, hidden layers and number of cases."""
    return (model.spec.kind, tuple(model.spec.layer_sizes[1:]), int(np.shape(model.x)[0]))


def _stacked(arrays: list, shape: tuple[int, ...]) -> np.ndarray:
    """(M, *shape) float64 zeros with each array written into its leading corner (the zero padding)."""
    out = np.zeros((len(arrays), *shape))
    for m, a in enumerate(arrays):
        out[(m, *(slice(0, k) for k in np.shape(a)))] = a
    return out


def _stacked_params(models: list[LocalModel], n_inputs: int):
    """Per layer array, the models' parameters stacked on a leading axis (leaf tensors, float64); the first
    weight matrix is zero-padded from each model's own number of inputs to ``n_inputs``."""
    import torch

    stacked = []
    for i in range(len(models[0].params)):
        shape = np.shape(models[0].params[i])
        shape = (shape[0], n_inputs) if i == 0 else shape
        stacked.append(torch.tensor(_stacked([m.params[i] for m in models], shape), requires_grad=True))
    return stacked


def _forward(params, x):
    """Logits f (M, b) of M stacked models on their inputs x (M, b, d): h ← h·Wᵀ + b, ReLU between layers."""
    import torch

    h = x
    n_layers = len(params) // 2
    for i in range(n_layers):
        h = torch.baddbmm(params[2 * i + 1].unsqueeze(1), h, params[2 * i].transpose(1, 2))
        if i < n_layers - 1:
            h = torch.relu(h)
    return h[..., 0]


def _per_model_loss(kind: str, f, y):
    """Mean loss over the cases of each model: (M, b) logits and labels -> (M,)."""
    import torch

    if kind == "linear_svm":
        return torch.clamp(1.0 - (2.0 * y - 1.0) * f, min=0.0).mean(dim=1)
    return torch.nn.functional.binary_cross_entropy_with_logits(f, y, reduction="none").mean(dim=1)


def _check_finite(models: list[LocalModel], names: list[str], stacked: list[np.ndarray], where: str) -> None:
    """One vectorised test of the stacked parameters; if any is NaN or inf, raise naming the first model."""
    if not all(np.isfinite(a).all() for a in stacked):
        for m, model in enumerate(models):
            check_params(model.spec, [a[m] for a in stacked], f"{names[m]}, {where}")


def _train_family(models: list[LocalModel], names: list[str], config: TrainConfig, epochs: int) -> list[tuple[list[np.ndarray], float]]:
    """One stacked computation for models of one family (see the module docstring)."""
    import torch

    kind = models[0].spec.kind
    d = max(m.spec.n_inputs for m in models)
    n = int(np.shape(models[0].x)[0])
    x = torch.as_tensor(_stacked([m.x for m in models], (n, d)))
    y = torch.as_tensor(np.stack([np.asarray(m.y, dtype=np.float64) for m in models]))
    params = _stacked_params(models, d)
    _check_finite(models, names, [p.detach().numpy() for p in params], "initial model: ")
    anchor = [p.detach().clone() for p in params]
    optimiser = torch.optim.Adam if config.optimiser == "adam" else torch.optim.SGD
    opt = optimiser(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    generators = [torch.Generator().manual_seed(m.seed) for m in models]
    rows = torch.arange(len(models)).unsqueeze(1)
    for _ in range(epochs):
        order = torch.stack([torch.randperm(n, generator=g) for g in generators])  # each model its own order
        for start in range(0, n, config.batch_size):
            idx = order[:, start:start + config.batch_size]
            opt.zero_grad()
            loss = _per_model_loss(kind, _forward(params, x[rows, idx]), y[rows, idx]).sum()
            if config.proximal_mu > 0:
                loss = loss + 0.5 * config.proximal_mu * sum(((p - a) ** 2).sum() for p, a in zip(params, anchor))
            loss.backward()
            opt.step()
    with torch.no_grad():
        losses = _per_model_loss(kind, _forward(params, x), y).tolist()
    arrays = [p.detach().numpy() for p in params]
    _check_finite(models, names, arrays, "after local training: ")
    out = []
    for m, model in enumerate(models):
        new = [a[m].copy() for a in arrays]
        new[0] = new[0][:, :model.spec.n_inputs].copy()  # drop the padding (it stayed exactly 0)
        out.append((new, float(losses[m])))
    return out


def train_models(models: list[LocalModel], config: TrainConfig, epochs: int | None = None,
                 names: list[str] | None = None) -> list[tuple[list[np.ndarray], float]]:
    """``epochs`` (default ``config.local_epochs``) of mini-batch training of every model from its ``params``,
    batched by family; results in the order of ``models``.

    Returns, per model, the new parameters (float64 numpy, ``[W1, b1, W2, b2, …]``) and the mean loss (no
    proximal term) of the new parameters on the model's (x, y). FedProx pulls each model towards its own
    starting ``params`` (the global model of the round). ``names`` (for errors) default to the positions.
    """
    import torch

    torch.set_num_threads(1)
    labels = names if names is not None else [f"model {i}" for i in range(len(models))]
    for model, label in zip(models, labels):
        if [np.shape(p) for p in model.params] != model.spec.shapes():
            check_params(model.spec, model.params, f"{label}, initial model: ")
        if np.shape(model.x)[0] == 0:
            raise ValueError(f"{label}: no training cases")
        if np.shape(model.x) != (np.shape(model.y)[0], model.spec.n_inputs):
            raise ValueError(f"{label}: design matrix of shape {np.shape(model.x)} for {np.shape(model.y)[0]} "
                             f"labels and {model.spec.n_inputs} inputs")
    families: dict[tuple, list[int]] = {}
    for i, model in enumerate(models):
        families.setdefault(_family(model), []).append(i)
    results: list = [None] * len(models)
    for members in families.values():
        trained = _train_family([models[i] for i in members], [labels[i] for i in members], config,
                                config.local_epochs if epochs is None else epochs)
        for i, result in zip(members, trained):
            results[i] = result
    return results


def train_local(spec: ModelSpec, params: list[np.ndarray], x: np.ndarray, y: np.ndarray, config: TrainConfig,
                seed: int, epochs: int | None = None) -> tuple[list[np.ndarray], float]:
    """One model: :func:`train_models` with a single model (the centrally trained reference in tests)."""
    return train_models([LocalModel(spec, params, x, y, seed)], config, epochs)[0]
