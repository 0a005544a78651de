"""Held-out (unseen) site: frozen training estimates, only the new site's location / scale
estimated from its own data; never a refit."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest

from combat_testkit import feature_names, generate_sites, pool, run_neurocombat
from harmonisation import (CovariateRangeWarning, HarmonisationError, SmallBatchWarning,
                           apply_to_heldout_site, run_federated_combat)

COVARS = dict(categorical=["sex", "grade"], continuous=["age"])


@pytest.mark.parametrize("variant", [
    dict(), dict(parametric=False), dict(eb=False), dict(mean_only=True)], ids=["param", "nonparam", "no-eb", "mean-only"])
def test_copy_of_a_training_site_gets_its_training_harmonisation(variant) -> None:
    """A held-out site identical to training site1 sees the same frozen α̂, β̂, σ̂² and its own EB
    priors, so it must come out exactly as site1 did in training (itself checked against neuroCombat)."""
    frames = generate_sites()
    feats = feature_names()
    result = run_federated_combat(frames, feats, **COVARS, **variant)
    held = apply_to_heldout_site(result.model, frames["site1"].copy(), site="copy-of-site1")
    np.testing.assert_allclose(held[feats].to_numpy(), result.data["site1"][feats].to_numpy(),
                               rtol=0, atol=1e-10 * 3.6e4)


def test_reference_target_without_covariates_equals_pooled_neurocombat_on_reference_plus_new_site() -> None:
    """With a reference batch and no covariates ComBat is site-separable: the frozen model of
    {ref, other} applied to a new site equals neuroCombat(ref_batch) run on ref + new site."""
    frames = generate_sites(sizes=(50, 60, 45), seed=7)
    feats = feature_names()
    train = {"site0": frames["site0"], "site1": frames["site1"]}
    model = run_federated_combat(train, feats, ref_site="site0").model
    held = apply_to_heldout_site(model, frames["site2"], site="site2")
    pooled = pool({"site0": frames["site0"], "site2": frames["site2"]})
    expected = run_neurocombat(pooled, feats, "site", ref_batch="site0")[len(frames["site0"]):]
    scale = pooled[feats].std().to_numpy()
    assert np.max(np.abs(held[feats].to_numpy() - expected) / scale) <= 1e-8


def test_heldout_never_refits_the_training_estimates() -> None:
    frames = generate_sites()
    feats = feature_names()
    train = {k: frames[k] for k in ("site0", "site1")}
    model = run_federated_combat(train, feats, **COVARS).model
    frozen = copy.deepcopy(model)
    new = frames["site2"]
    first = apply_to_heldout_site(model, new, site="site2")
    for name in ("alpha", "beta", "var_pooled", "cont_mean", "cont_sd"):
        np.testing.assert_array_equal(getattr(model, name), getattr(frozen, name))
    # each held-out sample keeps its own covariate effect through the frozen β̂ (not the training
    # average, as neuroCombatFromTraining does): flipping one sample's sex changes its output
    flipped = new.copy()
    flipped.iloc[0, flipped.columns.get_loc("sex")] = 1 - new["sex"].iloc[0]
    second = apply_to_heldout_site(model, flipped, site="site2")
    assert not np.allclose(first[feats].to_numpy()[0], second[feats].to_numpy()[0])
    # and it differs from a joint refit on train + held-out (which would move the training target)
    joint = run_federated_combat(frames, feats, **COVARS).data["site2"]
    assert not np.allclose(first[feats].to_numpy(), joint[feats].to_numpy())


def test_heldout_bad_inputs() -> None:
    frames = generate_sites()
    feats = feature_names()
    model = run_federated_combat({k: frames[k] for k in ("site0", "site1")}, feats, **COVARS).model
    new = frames["site2"].copy()
    odd = new.copy()
    odd["grade"] = odd["grade"].replace({"G3": "G4"})
    with pytest.raises(HarmonisationError, match=r"site 'H'.*'grade'.*\['G4'\] not seen in training"):
        apply_to_heldout_site(model, odd, site="H")
    with pytest.raises(HarmonisationError, match=r"site 'H' lacks 1 feature column\(s\): \['feat_05'\]"):
        apply_to_heldout_site(model, new.drop(columns="feat_05"), site="H")
    with pytest.raises(HarmonisationError, match=r"held-out site 'H' has 1 sample"):
        apply_to_heldout_site(model, new.iloc[:1], site="H")
    with pytest.warns(SmallBatchWarning, match=r"held-out site 'H' has only 10 samples"):
        apply_to_heldout_site(model, new.iloc[:10], site="H")
    old = new.copy()
    old["age"] = old["age"] + 80
    with pytest.warns(CovariateRangeWarning, match=r"'H': \d+ value\(s\) of continuous covariate 'age'"):
        apply_to_heldout_site(model, old, site="H")
    shuffled = new[list(reversed(new.columns))]
    np.testing.assert_array_equal(apply_to_heldout_site(model, shuffled, site="H")[feats].to_numpy(),
                                  apply_to_heldout_site(model, new, site="H")[feats].to_numpy())
