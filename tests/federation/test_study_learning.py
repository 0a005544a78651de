"""Local training and aggregation against independent numpy references."""

from __future__ import annotations

import numpy as np
import pytest

from protocols.models import ModelSpec, init_params, logits, predict_proba, weighted_average
from site_client.study.learning import TrainConfig, _load, _module, train_local


def _data(n=37, d=5, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    y = (x[:, 0] + 0.5 * rng.normal(size=n) > 0).astype(float)
    return x, y


def _reference_gd(kind, params, x, y, lr, wd, mu, steps):
    """Full-batch gradient descent written out: loss mean over cases + SGD's L2 term + FedProx term."""
    w, b = params[0].copy(), params[1].copy()
    w0, b0 = w.copy(), b.copy()
    n = len(y)
    for _ in range(steps):
        f = x @ w[0] + b[0]
        if kind == "logistic":
            r = 1 / (1 + np.exp(-f)) - y                         # d BCE / d f
        else:
            s = 2 * y - 1
            r = np.where(1 - s * f > 0, -s, 0.0)                 # hinge subgradient
        gw = (r @ x) / n + mu * (w[0] - w0[0]) + wd * w[0]
        gb = r.mean() + mu * (b[0] - b0[0]) + wd * b[0]
        w = w - lr * gw[None, :]
        b = b - lr * np.array([gb])
    return [w, b]


@pytest.mark.parametrize("kind,mu", [("logistic", 0.0), ("logistic", 0.7), ("linear_svm", 0.0), ("linear_svm", 0.3)])
def test_full_batch_training_equals_written_out_gradient_descent(kind, mu):
    x, y = _data()
    spec = ModelSpec(kind, x.shape[1])
    start = init_params(spec, 3)
    config = TrainConfig("sgd", 0.2, 0.01, batch_size=1000, local_epochs=4, proximal_mu=mu)
    got, _ = train_local(spec, start, x, y, config, seed=1)
    want = _reference_gd(kind, start, x, y, 0.2, 0.01, mu, steps=4)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-12)


def test_fedavg_of_one_full_batch_step_equals_the_pooled_step():
    """Σ n_s θ_s / Σ n_s after one full-batch step at each site = one full-batch step on the pooled data."""
    x, y = _data(n=60)
    spec = ModelSpec("logistic", x.shape[1])
    start = init_params(spec, 5)
    config = TrainConfig("sgd", 0.3, 0.0, batch_size=1000, local_epochs=1, proximal_mu=0.0)
    parts = [(x[:17], y[:17]), (x[17:41], y[17:41]), (x[41:], y[41:])]
    updates = [(train_local(spec, start, xs, ys, config, seed=0)[0], float(len(ys))) for xs, ys in parts]
    pooled, _ = train_local(spec, start, x, y, config, seed=0)
    for a, b in zip(weighted_average(updates), pooled):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-13)


def test_numpy_prediction_matches_the_torch_module_for_an_mlp():
    x, _ = _data(n=11, d=4)
    spec = ModelSpec("mlp", 4, (6, 3))
    params = init_params(spec, 9)
    assert [p.shape for p in params] == [(6, 4), (6,), (3, 6), (3,), (1, 3), (1,)]
    import torch

    module = _module(spec)
    _load(module, params)
    with torch.no_grad():
        want = module(torch.as_tensor(x))[:, 0].numpy()
    np.testing.assert_allclose(logits(params, x), want, rtol=1e-12)
    np.testing.assert_allclose(predict_proba(params, x), 1 / (1 + np.exp(-want)), rtol=1e-12)


def test_initial_weights_follow_torch_default_range_and_the_seed():
    spec = ModelSpec("mlp", 50, (8,))
    a, b, c = init_params(spec, 1), init_params(spec, 1), init_params(spec, 2)
    assert all(np.array_equal(p, q) for p, q in zip(a, b))
    assert not np.array_equal(a[0], c[0])
    assert np.abs(a[0]).max() <= 1 / np.sqrt(50) and np.abs(a[2]).max() <= 1 / np.sqrt(8)


def test_diverged_training_is_reported_not_returned_as_nan():
    x, y = _data()
    x = x * 1e200
    spec = ModelSpec("logistic", x.shape[1])
    config = TrainConfig("sgd", 1e10, 0.0, 1000, 3, 0.0)
    with pytest.raises(ValueError, match="NaN or inf"):
        train_local(spec, init_params(spec, 0), x, y, config, seed=0)
