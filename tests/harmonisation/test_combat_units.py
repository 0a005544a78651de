"""Site and coordinator halves tested on their own against direct pooled computations and
neuroCombat's own helper functions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import importlib

nc = importlib.import_module("neuroCombat.neuroCombat")

from combat_testkit import feature_names, generate_sites
from harmonisation import ComBatModel
from harmonisation.combine import combine_round1, combine_scale
from harmonisation.design import prepare_site
from fedmath.moments import pool_moments
from harmonisation.eb import batch_adjustments
from harmonisation.schema import ComBatOptions, build_plan, site_schema
from harmonisation.site_stats import site_round1

COVARS = dict(categorical=["sex", "grade"], continuous=["age"])


def _setup(ref=None, frames=None):
    frames = generate_sites() if frames is None else frames
    feats = feature_names()
    schemas = [site_schema(s, df, feats, batch_col=None, **COVARS) for s, df in frames.items()]
    plan = build_plan(schemas, options=ComBatOptions(ref_batch=ref), **COVARS)
    local = {s: prepare_site(s, df, plan) for s, df in frames.items()}
    return frames, feats, plan, local, {sc["site"]: sc for sc in schemas}


def test_round1_gives_pooled_least_squares_and_the_pooled_residual_variance() -> None:
    frames, feats, plan, local, schemas = _setup()
    round1 = {s: site_round1(sd) for s, sd in local.items()}
    fit = combine_round1(plan, list(round1.values()))
    x = np.vstack([sd.x for sd in local.values()])
    y = np.vstack([sd.y for sd in local.values()])
    beta_ls = np.linalg.lstsq(x, y, rcond=None)[0]
    np.testing.assert_allclose(fit["beta"], beta_ls, rtol=1e-9, atol=1e-9 * np.abs(beta_ls).max())
    n_k = np.array([len(frames[b]) for b in plan["batches"]])
    np.testing.assert_allclose(fit["alpha"], n_k @ beta_ls[:3] / n_k.sum(), rtol=1e-10)
    scale = combine_scale(plan, fit, round1, schemas)
    np.testing.assert_allclose(scale["var_pooled"], ((y - x @ beta_ls) ** 2).mean(axis=0), rtol=1e-9)
    # continuous covariate summary from XᵀX alone
    age = pd.concat(frames.values())["age"]
    assert fit["cont_mean"][0] == pytest.approx(age.mean(), rel=1e-12)
    assert fit["cont_sd"][0] == pytest.approx(age.std(ddof=0), rel=1e-9)


def test_design_columns_follow_neurocombat_order() -> None:
    _, _, plan, _, _ = _setup()
    assert plan["design_columns"] == ["batch=site0", "batch=site1", "batch=site2",
                                      "sex=1", "grade=G2", "grade=G3", "age"]


def test_pool_moments_equals_concatenation() -> None:
    rng = np.random.default_rng(0)
    parts = [rng.normal(1e6, 3, size=(n, 4)) for n in (5, 17, 40)]
    n, mean, m2 = pool_moments([(len(p), p.mean(0), ((p - p.mean(0)) ** 2).sum(0)) for p in parts])
    allv = np.vstack(parts)
    assert n == 62
    np.testing.assert_allclose(mean, allv.mean(0), rtol=1e-14)
    np.testing.assert_allclose(m2 / (n - 1), allv.var(0, ddof=1), rtol=1e-10)


@pytest.fixture
def standardised_batch():
    rng = np.random.default_rng(4)
    p, n = 30, 25
    z = rng.normal(rng.normal(0, 0.5, p)[:, None], rng.uniform(0.5, 2, p)[:, None], size=(p, n))
    return z


def test_parametric_eb_matches_neurocombat_it_sol(standardised_batch) -> None:
    z = standardised_batch
    n = z.shape[1]
    g_hat = z.mean(1)
    d_hat = z.var(1, ddof=1)
    g_bar, t2 = g_hat.mean(), g_hat.var(ddof=1)
    a, b = nc.aprior(d_hat), nc.bprior(d_hat)
    g_ref, d_ref = nc.it_sol(z, g_hat, d_hat, g_bar, t2, a, b)
    g, d = batch_adjustments(n, g_hat, ((z - g_hat[:, None]) ** 2).sum(1), eb=True, parametric=True, mean_only=False)
    np.testing.assert_allclose(g, g_ref, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(d, d_ref, rtol=1e-12)


def test_nonparametric_eb_matches_neurocombat_int_eprior(standardised_batch) -> None:
    z = standardised_batch
    n = z.shape[1]
    g_hat = z.mean(1)
    d_hat = z.var(1, ddof=1)
    g_ref, d_ref = nc.int_eprior(z, g_hat, d_hat)
    g, d = batch_adjustments(n, g_hat, ((z - g_hat[:, None]) ** 2).sum(1), eb=True, parametric=False, mean_only=False)
    np.testing.assert_allclose(g, g_ref, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(d, d_ref, rtol=1e-10)


def test_nonparametric_eb_stays_finite_where_neurocombat_overflows() -> None:
    rng = np.random.default_rng(2)
    p, n = 20, 2000
    z = rng.normal(0.1, 1.0, size=(p, n)) * rng.uniform(0.05, 0.2, p)[:, None]
    g_hat, d_hat = z.mean(1), z.var(1, ddof=1)
    with np.errstate(all="ignore"):
        g_ref, _ = nc.int_eprior(z, g_hat, d_hat)
    assert not np.isfinite(g_ref).all()  # the documented neuroCombat failure
    g, d = batch_adjustments(n, g_hat, ((z - g_hat[:, None]) ** 2).sum(1), eb=True, parametric=False, mean_only=False)
    assert np.isfinite(g).all() and np.isfinite(d).all()
    assert np.all((g >= g_hat.min()) & (g <= g_hat.max()))


def test_model_round_trips_through_dict_and_file(tmp_path) -> None:
    from harmonisation import run_federated_combat

    frames = generate_sites()
    model = run_federated_combat(frames, feature_names(), **COVARS).model
    arrays, meta = model.to_dict()
    import json

    again = ComBatModel.from_dict(arrays, json.loads(json.dumps(meta)))
    loaded = ComBatModel.load(model.save(tmp_path / "combat.npz"))
    for m in (again, loaded):
        assert m.features == model.features and m.levels == model.levels and m.options == model.options
        np.testing.assert_array_equal(m.beta, model.beta)
        np.testing.assert_array_equal(m.var_pooled, model.var_pooled)
    assert [p.name for p in tmp_path.iterdir()] == ["combat.npz"]


def test_levels_match_across_sites_whatever_the_dtype() -> None:
    """Sex stored as float at one site (e.g. after a NaN was dropped) and as int elsewhere is one
    covariate with levels '0', '1'; integer-valued features are accepted as numbers."""
    from harmonisation import run_federated_combat

    frames = generate_sites()
    feats = feature_names()
    base = run_federated_combat(frames, feats, **COVARS)
    mixed = dict(frames)
    mixed["site1"] = frames["site1"].astype({"sex": float})
    other = run_federated_combat(mixed, feats, **COVARS)
    assert other.model.levels == base.model.levels == {"sex": ["0", "1"], "grade": ["G1", "G2", "G3"]}
    for s in frames:
        np.testing.assert_array_equal(other.data[s][feats].to_numpy(), base.data[s][feats].to_numpy())
    ints = {s: df.astype({f: "int64" for f in feats[-5:]}) for s, df in frames.items()}
    out = run_federated_combat(ints, feats, **COVARS).data
    assert all(out[s][feats].dtypes.eq(np.float64).all() for s in frames)
