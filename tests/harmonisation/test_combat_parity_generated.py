"""Parity with pooled neuroCombat 0.2.12 on generated multi-site data (categorical sex, grade;
continuous age), for every variant neuroCombat can run; tolerance 1e-8 x feature SD."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from combat_testkit import feature_names, generate_sites, max_scaled_diff, pool, run_neurocombat
from harmonisation import harmonise_sites, run_federated_combat

TOL = 1e-8
VARIANTS = {
    "parametric": dict(eb=True, parametric=True, mean_only=False),
    "non-parametric": dict(eb=True, parametric=False, mean_only=False),
    "no-eb": dict(eb=False, parametric=True, mean_only=False),
    "mean-only": dict(eb=True, parametric=True, mean_only=True),
    "mean-only-non-parametric": dict(eb=True, parametric=False, mean_only=True),
    "mean-only-no-eb": dict(eb=False, parametric=True, mean_only=True),
}
COVARS = dict(categorical=["sex", "grade"], continuous=["age"])


def _stack(out: dict[str, pd.DataFrame], frames: dict[str, pd.DataFrame], features) -> np.ndarray:
    return pd.concat([out[s] for s in frames])[features].to_numpy()


@pytest.mark.parametrize("ref", [None, "site1"], ids=["pooled-target", "ref-batch"])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_sites_as_batches_match_neurocombat(variant: str, ref: str | None) -> None:
    frames = generate_sites()
    feats = feature_names()
    pooled = pool(frames)
    expected = run_neurocombat(pooled, feats, "site", ref_batch=ref, **COVARS, **VARIANTS[variant])
    out = harmonise_sites(frames, feats, ref_site=ref, float32_covariates=True, **COVARS, **VARIANTS[variant])
    got = _stack(out, frames, feats)
    scale = pooled[feats].std().to_numpy()
    assert np.isfinite(got).all()
    assert max_scaled_diff(got, expected, scale) <= TOL
    # something really happened: the harmonised data differ from the input by far more than TOL
    assert max_scaled_diff(got, pooled[feats].to_numpy(), scale) > 0.05
    if ref is not None:  # the reference batch comes back bit-identical
        np.testing.assert_array_equal(out[ref][feats].to_numpy(), frames[ref][feats].to_numpy())


@pytest.mark.parametrize("ref", [None, "scB"], ids=["pooled-target", "ref-batch"])
@pytest.mark.parametrize("variant", ["parametric", "non-parametric", "no-eb", "mean-only"])
def test_batches_spanning_sites_match_neurocombat(variant: str, ref: str | None) -> None:
    frames = generate_sites(sizes=(60, 45, 80), seed=3, scanners=True)
    feats = feature_names()
    pooled = pool(frames)
    expected = run_neurocombat(pooled, feats, "scanner", ref_batch=ref, **COVARS, **VARIANTS[variant])
    result = run_federated_combat(frames, feats, batch_col="scanner", ref_site=ref, float32_covariates=True,
                                  **COVARS, **VARIANTS[variant])
    assert sorted(result.report.spanning_batches) == ["scA", "scB"]
    got = _stack(result.data, frames, feats)
    assert max_scaled_diff(got, expected, pooled[feats].std().to_numpy()) <= TOL
    # the non-feature columns are untouched and the row order is kept
    for s, df in frames.items():
        pd.testing.assert_index_equal(result.data[s].index, df.index)
        pd.testing.assert_frame_equal(result.data[s][["sex", "age", "grade", "scanner"]], df[["sex", "age", "grade", "scanner"]])


def test_without_float32_cast_differs_only_by_covariate_rounding() -> None:
    """Default float64 covariates: not bit-identical to neuroCombat (it rounds age to float32),
    but close; the parity option removes the difference."""
    frames = generate_sites()
    feats = feature_names()
    for df in frames.values():
        df["age"] = df["age"] + 1e-3 / 3  # values that float32 cannot hold exactly
    pooled = pool(frames)
    expected = run_neurocombat(pooled, feats, "site", **COVARS)
    scale = pooled[feats].std().to_numpy()
    exact = _stack(harmonise_sites(frames, feats, float32_covariates=True, **COVARS), frames, feats)
    plain = _stack(harmonise_sites(frames, feats, **COVARS), frames, feats)
    assert max_scaled_diff(exact, expected, scale) <= TOL
    assert TOL < max_scaled_diff(plain, expected, scale) < 1e-4


def test_feature_order_and_extra_columns_do_not_matter() -> None:
    frames = generate_sites()
    feats = feature_names()
    base = harmonise_sites(frames, feats, **COVARS)
    shuffled = dict(frames)
    rng = np.random.default_rng(1)
    cols = list(frames["site2"].columns)
    rng.shuffle(cols)
    shuffled["site2"] = frames["site2"][cols].assign(unrelated=1.0)
    out = harmonise_sites(shuffled, feats, **COVARS)
    for s in frames:
        np.testing.assert_allclose(out[s][feats].to_numpy(), base[s][feats].to_numpy(), rtol=0, atol=1e-9 * 3.6e4)
    assert list(out["site2"].columns) == cols + ["unrelated"]
