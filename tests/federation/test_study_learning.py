"""Local training and aggregation against independent numpy references."""

from __future__ import annotations

import numpy as np
import pytest

from protocols.models import ModelSpec, init_params, logits, predict_proba, weighted_average
from site_client.study.learning import LocalModel, TrainConfig, train_local, train_models


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


def _torch_module(spec: ModelSpec, params):
    """The documented architecture as a plain torch nn.Sequential of nn.Linear + ReLU (the oracle's model)."""
    import torch

    sizes = spec.layer_sizes
    layers = []
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(torch.nn.Linear(fan_in, fan_out, dtype=torch.float64))
        if i < len(sizes) - 2:
            layers.append(torch.nn.ReLU())
    module = torch.nn.Sequential(*layers)
    with torch.no_grad():
        for tensor, value in zip(module.parameters(), params):
            tensor.copy_(torch.as_tensor(value))
    return module


def _torch_one_model(spec, params, x, y, config, seed):
    """Oracle: one model trained alone with torch's own modules, losses and optimisers, following the
    documented algorithm (mini-batch order from torch.randperm with a generator seeded by ``seed``, mean
    BCE-with-logits or hinge loss, FedProx term (mu/2)·||θ − θ_start||², fresh SGD/Adam with L2 weight decay)."""
    import torch

    module = _torch_module(spec, params)
    start = [p.detach().clone() for p in module.parameters()]
    optimiser = torch.optim.Adam if config.optimiser == "adam" else torch.optim.SGD
    opt = optimiser(module.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    gen = torch.Generator().manual_seed(seed)
    xt, yt = torch.as_tensor(x), torch.as_tensor(y)
    for _ in range(config.local_epochs):
        order = torch.randperm(len(y), generator=gen)
        for lo in range(0, len(y), config.batch_size):
            idx = order[lo:lo + config.batch_size]
            opt.zero_grad()
            f = module(xt[idx])[:, 0]
            if spec.kind == "linear_svm":
                loss = torch.nn.functional.hinge_embedding_loss(  # max(0, 1 - y±·f) written via torch's own op
                    (2 * yt[idx] - 1) * f, torch.full_like(f, -1.0), margin=1.0)
            else:
                loss = torch.nn.functional.binary_cross_entropy_with_logits(f, yt[idx])
            loss = loss + 0.5 * config.proximal_mu * sum(((p - a) ** 2).sum() for p, a in zip(module.parameters(), start))
            loss.backward()
            opt.step()
    return [p.detach().numpy().copy() for p in module.parameters()]


@pytest.mark.parametrize("kind", ["logistic", "linear_svm", "mlp"])
@pytest.mark.parametrize("optimiser", ["sgd", "adam"])
@pytest.mark.parametrize("mu", [0.0, 0.4], ids=["fedavg", "fedprox"])
def test_batched_training_of_a_message_equals_each_model_trained_alone(kind, optimiser, mu):
    """A message of radiomic (d = 7) and volume-only (d = 1) models, each with its own data, start, seed:
    the batched computation gives what each model trained alone with plain torch gives."""
    rng = np.random.default_rng(42)
    n = 45  # batch_size 16 does not divide it: the last mini-batch is smaller
    config = TrainConfig(optimiser, 0.05 if optimiser == "adam" else 0.2, 0.01, batch_size=16, local_epochs=3,
                         proximal_mu=mu)
    hidden = (5, 3) if kind == "mlp" else ()
    y = (rng.random(n) < 0.45).astype(float)
    models = []
    for m in range(6):
        spec = ModelSpec(kind, 1 if m % 3 == 2 else 7, hidden)
        x = rng.normal(size=(n, spec.n_inputs)) + y[:, None] * rng.normal(size=spec.n_inputs)
        models.append(LocalModel(spec, init_params(spec, 100 + m), x, y, seed=1000 + m))
    got = train_models(models, config)
    for model, (params, loss) in zip(models, got):
        want = _torch_one_model(model.spec, model.params, model.x, model.y, config, model.seed)
        assert [p.shape for p in params] == [p.shape for p in want]
        for g, w in zip(params, want):
            np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-12)
        f = logits(want, model.x)
        s = 2 * model.y - 1
        want_loss = (np.maximum(0, 1 - s * f) if kind == "linear_svm"
                     else np.logaddexp(0, f) - model.y * f).mean()
        assert loss == pytest.approx(want_loss, rel=1e-10)


def test_each_model_keeps_its_own_mini_batch_order_and_models_of_different_sizes_train_apart():
    rng = np.random.default_rng(3)
    spec = ModelSpec("logistic", 4)
    x, y = rng.normal(size=(30, 4)), (rng.random(30) < 0.5).astype(float)
    x2, y2 = rng.normal(size=(22, 4)), (rng.random(22) < 0.5).astype(float)
    start = init_params(spec, 1)
    config = TrainConfig("sgd", 0.5, 0.0, batch_size=7, local_epochs=2, proximal_mu=0.0)
    got = train_models([LocalModel(spec, start, x, y, seed=1), LocalModel(spec, start, x, y, seed=2),
                        LocalModel(spec, start, x2, y2, seed=1), LocalModel(spec, start, x, y, seed=1)], config)
    assert not np.allclose(got[0][0][0], got[1][0][0])  # same data and start, other seed: other order
    np.testing.assert_array_equal(got[0][0][0], got[3][0][0])  # same seed: same result
    for (params, _), (x_, y_, seed) in zip(got[:3], [(x, y, 1), (x, y, 2), (x2, y2, 1)]):
        want = _torch_one_model(spec, start, x_, y_, config, seed)
        for g, w in zip(params, want):
            np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-12)


def test_a_design_matrix_that_does_not_fit_its_model_is_named():
    spec = ModelSpec("logistic", 3)
    x, y = np.zeros((10, 2)), np.zeros(10)
    with pytest.raises(ValueError, match=r"h/radiomic: design matrix of shape \(10, 2\) for 10 labels and 3 inputs"):
        train_models([LocalModel(spec, init_params(spec, 0), x, y, 0)], TrainConfig("sgd", 0.1, 0, 8, 1, 0),
                     names=["h/radiomic"])


def test_numpy_prediction_matches_the_torch_module_for_an_mlp():
    x, _ = _data(n=11, d=4)
    spec = ModelSpec("mlp", 4, (6, 3))
    params = init_params(spec, 9)
    assert [p.shape for p in params] == [(6, 4), (6,), (3, 6), (3,), (1, 3), (1,)]
    import torch

    with torch.no_grad():
        want = _torch_module(spec, params)(torch.as_tensor(x))[:, 0].numpy()
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
