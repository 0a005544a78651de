"""Local training in torch (site only): the same code trains a site's share of a federated round and, in
tests, the centrally trained reference model.

Loss: binary cross-entropy on the logit (logistic, MLP) or hinge max(0, 1 − y±·f) with y± = 2y − 1 (linear
SVM), mean over the mini-batch; FedProx adds (μ/2)·‖θ − θ_global‖². Weight decay is the optimiser's L2 term.
The optimiser (SGD or Adam) starts fresh in every round; its state is not carried between rounds. Mini-batch
order comes from a torch generator seeded by (protocol seed, round, site, model), so training is
deterministic; computations are in float64 on one CPU thread.
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


def derived_seed(*parts: object) -> int:
    """A 63-bit seed from any parts (stable across processes and platforms; unlike ``hash``)."""
    digest = hashlib.sha256("|".join(str(p) for p in parts).encode()).hexdigest()
    return int(digest[:15], 16)


def _module(spec: ModelSpec):
    import torch

    layers: list = []
    sizes = spec.layer_sizes
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(torch.nn.Linear(fan_in, fan_out, dtype=torch.float64))
        if i < len(sizes) - 2:
            layers.append(torch.nn.ReLU())
    return torch.nn.Sequential(*layers)


def _load(module, params: list[np.ndarray]) -> None:
    import torch

    with torch.no_grad():
        for tensor, value in zip(module.parameters(), params):
            tensor.copy_(torch.as_tensor(np.asarray(value, dtype=np.float64)))


def _loss(kind: str, f, y):
    import torch

    if kind == "linear_svm":
        return torch.clamp(1.0 - (2.0 * y - 1.0) * f, min=0.0).mean()
    return torch.nn.functional.binary_cross_entropy_with_logits(f, y)


def loss_value(spec: ModelSpec, params: list[np.ndarray], x: np.ndarray, y: np.ndarray) -> float:
    """Mean training loss (no proximal term) of ``params`` on (x, y)."""
    import torch

    module = _module(spec)
    _load(module, params)
    with torch.no_grad():
        f = module(torch.as_tensor(x, dtype=torch.float64))[:, 0]
        return float(_loss(spec.kind, f, torch.as_tensor(y, dtype=torch.float64)))


def train_local(
    spec: ModelSpec,
    params: list[np.ndarray],
    x: np.ndarray,
    y: np.ndarray,
    config: TrainConfig,
    seed: int,
    epochs: int | None = None,
) -> tuple[list[np.ndarray], float]:
    """``epochs`` (default ``config.local_epochs``) of mini-batch training from ``params``.

    Returns the new parameters (float64 numpy, torch's parameter order) and the mean loss of the new
    parameters on (x, y). FedProx pulls towards the starting ``params`` (the global model of the round).
    """
    import torch

    torch.set_num_threads(1)
    check_params(spec, params, "initial model: ")
    x_t = torch.as_tensor(np.asarray(x, dtype=np.float64))
    y_t = torch.as_tensor(np.asarray(y, dtype=np.float64))
    n = x_t.shape[0]
    if n == 0:
        raise ValueError("no training cases")
    module = _module(spec)
    _load(module, params)
    anchor = [p.detach().clone() for p in module.parameters()]
    if config.optimiser == "adam":
        opt = torch.optim.Adam(module.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    else:
        opt = torch.optim.SGD(module.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(config.local_epochs if epochs is None else epochs):
        order = torch.randperm(n, generator=gen)
        for start in range(0, n, config.batch_size):
            idx = order[start:start + config.batch_size]
            opt.zero_grad()
            loss = _loss(spec.kind, module(x_t[idx])[:, 0], y_t[idx])
            if config.proximal_mu > 0:
                loss = loss + 0.5 * config.proximal_mu * sum(((p - a) ** 2).sum() for p, a in zip(module.parameters(), anchor))
            loss.backward()
            opt.step()
    new = [p.detach().numpy().astype(np.float64).copy() for p in module.parameters()]
    check_params(spec, new, "after local training: ")
    return new, loss_value(spec, new, x, y)
