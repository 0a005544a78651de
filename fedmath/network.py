"""The model's forward pass and FedAvg, in numpy (the sites train it in torch; everything else runs this).

A model is a stack of dense layers ``W (out, in), b (out,)``, parameters as the flat list [W1, b1, W2, b2, ...]
(the order of a torch ``nn.Sequential`` of ``nn.Linear``), ReLU between layers, one output logit f(x);
the probability is σ(f(x)). FedAvg: θ = Σ_s n_s·θ_s / Σ_s n_s, array by array.
"""

from __future__ import annotations

import numpy as np

from fedmath.logistic import sigmoid


def logits(params: list[np.ndarray], x: np.ndarray) -> np.ndarray:
    """f(x) for a batch x (n, d): h ← h Wᵀ + b, ReLU between layers, the single output column.

    The products are summed row by row (einsum, not BLAS): a BLAS matrix product may block a batch differently
    from a single row and change the last bit, and a case's prediction must not depend on who else is in the
    request (the registered model is checked against the study case by case and as a batch)."""
    h = np.ascontiguousarray(x, dtype=np.float64)  # row-major: each row summed the same way in any batch
    n_layers = len(params) // 2
    for i in range(n_layers):
        h = np.einsum("nd,od->no", h, params[2 * i]) + params[2 * i + 1]
        if i < n_layers - 1:
            h = np.maximum(h, 0.0)
    return h[:, 0]


def predict_proba(params: list[np.ndarray], x: np.ndarray) -> np.ndarray:
    """σ(f(x))."""
    return sigmoid(logits(params, x))


def weighted_average(updates: list[tuple[list[np.ndarray], float]]) -> list[np.ndarray]:
    """FedAvg: Σ_s n_s·θ_s / Σ_s n_s, array by array (FedProx aggregates the same way)."""
    if not updates:
        raise ValueError("no updates to average")
    total = float(sum(w for _, w in updates))
    if total <= 0:
        raise ValueError("the weights (numbers of examples) of the updates sum to zero")
    n_arrays = len(updates[0][0])
    return [sum(np.asarray(p[i], dtype=np.float64) * (w / total) for p, w in updates) for i in range(n_arrays)]
