"""σ̂² without a round of its own: the coordinator computes neuroCombat's ``var_pooled`` (mean over the fitted
rows of (y − x B̂)²) from the round-1 sums and the schemas' per-batch moments. Compared with neuroCombat 0.2.12's
own ``estimates['var.pooled']``, also where the features' means dwarf their spread, which is where a difference
of uncentred sums loses every digit (relative error ~ ε·(mean/SD)²: all of them at mean/SD = 1e8).

Centring on the handshake's means leaves one error that grows with mean/SD: the sites' XᵀY holds Σ x·y of the
uncentred y, rounded at ε·|mean|, so Xᵀ(Y − m) carries a relative error ~ ε·mean/SD, and σ̂² about the same
(measured: 1e-14 at mean/SD = 5, 1e-11 at 8e3, 4e-9 at 8e5, 3e-7 at 8e7). Radiomic features have mean/SD
below ~1e3 (CT numbers, volumes, energies scale with their spread), i.e. σ̂² to ~1e-12."""

from __future__ import annotations

import numpy as np
import pytest

from combat_testkit import feature_names, generate_sites, neurocombat_output, pool
from harmonisation import run_federated_combat

COVARS = dict(categorical=["sex", "grade"], continuous=["age"])


def _offset(frames, offset: float):
    """Add ``offset`` × feature scale to every feature: mean/SD up to ~offset, the spread unchanged."""
    feats = feature_names()
    out = {}
    for s, df in frames.items():
        df = df.copy()
        df[feats] = df[feats].to_numpy() + offset * np.geomspace(0.1, 3.6e4, len(feats))
        out[s] = df
    return out


def _tolerance(frames, feats) -> float:
    """1e-13 relative, growing as ε·mean/SD beyond mean/SD = 10 (module docstring): 1e-14 × the largest
    mean/SD, with a factor 10 of headroom over the measured errors."""
    y = pool(frames)[feats].to_numpy()
    return max(1e-13, 1e-14 * float(np.max(np.abs(y.mean(axis=0)) / y.std(axis=0))))


@pytest.mark.parametrize("offset", [0.0, 1e2, 1e4, 1e6])
@pytest.mark.parametrize("ref", [None, "site1"], ids=["pooled-target", "ref-batch"])
def test_pooled_variance_equals_neurocombat(offset: float, ref: str | None) -> None:
    frames = _offset(generate_sites(), offset)
    feats = feature_names()
    expected = neurocombat_output(pool(frames), feats, "site", ref_batch=ref, **COVARS)["estimates"]["var.pooled"].ravel()
    result = run_federated_combat(frames, feats, ref_site=ref, float32_covariates=True, diagnostics=False, **COVARS)
    assert [e.kind for e in result.log.uploads(site="site0")] == ["schema", "round1"]
    np.testing.assert_allclose(result.model.var_pooled, expected, rtol=_tolerance(frames, feats))


@pytest.mark.parametrize("ref", [None, "scB"], ids=["pooled-target", "ref-batch"])
def test_pooled_variance_with_batches_spanning_sites_equals_neurocombat(ref: str | None) -> None:
    """Reference rows at every site, next to rows of the other batch: each site adds the sums of its
    reference rows to round 1 (``ref_xtx``, ``ref_xty``)."""
    frames = _offset(generate_sites(sizes=(60, 45, 80), seed=3, scanners=True), 1e5)
    feats = feature_names()
    expected = neurocombat_output(pool(frames), feats, "scanner", ref_batch=ref, **COVARS)["estimates"]["var.pooled"].ravel()
    result = run_federated_combat(frames, feats, batch_col="scanner", ref_site=ref, float32_covariates=True,
                                  diagnostics=False, **COVARS)
    np.testing.assert_allclose(result.model.var_pooled, expected, rtol=_tolerance(frames, feats))


def _round1_and_schemas(ref=None):
    from harmonisation.combine import combine_round1
    from harmonisation.design import prepare_site
    from harmonisation.schema import ComBatOptions, build_plan, site_schema
    from harmonisation.site_stats import site_round1

    frames = generate_sites()
    feats = feature_names()
    schemas = {s: site_schema(s, df, feats, **COVARS) for s, df in frames.items()}
    plan = build_plan(list(schemas.values()), options=ComBatOptions(ref_batch=ref), **COVARS)
    round1 = {s: site_round1(prepare_site(s, df, plan), ref) for s, df in frames.items()}
    return plan, combine_round1(plan, list(round1.values())), round1, schemas


def test_round1_sums_of_other_cases_than_the_schema_are_named() -> None:
    from harmonisation.combine import combine_scale
    from harmonisation.errors import HarmonisationError

    plan, fit, round1, schemas = _round1_and_schemas()
    fewer = dict(schemas["site1"], batch_n=schemas["site1"]["batch_n"] - 1)  # the schema of one case less
    with pytest.raises(HarmonisationError) as err:
        combine_scale(plan, fit, round1, {**schemas, "site1": fewer})
    assert str(err.value) == "site 'site1': its round-1 sums cover 57 case(s) but its schema described 56"
    spread = dict(schemas["site2"], var=schemas["site2"]["var"] * 0.25)  # same count, half the spread
    with pytest.raises(HarmonisationError) as err:
        combine_scale(plan, fit, round1, {**schemas, "site2": spread})
    assert str(err.value) == (
        "site 'site2': its round-1 sums and its schema's moments do not describe the same cases (the residual sum "
        "of squares they imply is negative); check that its data did not change during the run")


def test_a_reference_site_without_its_reference_rows_sums_is_named() -> None:
    from harmonisation.combine import combine_scale
    from harmonisation.errors import HarmonisationError

    plan, fit, round1, schemas = _round1_and_schemas(ref="site0")
    bare = {k: v for k, v in round1["site0"].items() if not k.startswith("ref_")}
    with pytest.raises(HarmonisationError) as err:
        combine_scale(plan, fit, {**round1, "site0": bare}, schemas)
    assert str(err.value) == ("site 'site0' holds 42 case(s) of the reference batch 'site0' but its round-1 message "
                              "lacks their sums (ref_xtx, ref_xty)")
