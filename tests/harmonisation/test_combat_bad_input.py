"""Every bad input named in the issue: a clear error (message checked) or an explicit,
reported decision; never NaN output."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from combat_testkit import feature_names, generate_sites, max_scaled_diff, pool, run_neurocombat
from harmonisation import (ExcludedFeatureWarning, HarmonisationError, SmallBatchWarning,
                           harmonise_sites, run_federated_combat)

COVARS = dict(categorical=["sex", "grade"], continuous=["age"])


def test_constant_features_are_excluded_reported_and_returned_unchanged() -> None:
    frames = generate_sites()
    feats = feature_names()
    frames["site1"]["feat_04"] = 7.0          # constant within one batch only
    for df in frames.values():
        df["feat_09"] = 3.25                  # constant everywhere
    with pytest.warns(ExcludedFeatureWarning, match=r"2 feature\(s\) excluded"):
        result = run_federated_combat(frames, feats, float32_covariates=True, **COVARS)
    assert result.report.excluded == {"feat_04": "constant within batch(es) ['site1']",
                                      "feat_09": "constant across all samples"}
    assert any("feat_04" in w for w in result.report.warnings)
    kept = [f for f in feats if f not in ("feat_04", "feat_09")]
    assert result.model.features == kept
    for s, df in frames.items():
        out = result.data[s]
        assert np.isfinite(out[feats].to_numpy()).all()
        pd.testing.assert_series_equal(out["feat_04"], df["feat_04"])
        pd.testing.assert_series_equal(out["feat_09"], df["feat_09"])
    # the remaining features are exactly neuroCombat on the remaining features
    pooled = pool(frames)
    expected = run_neurocombat(pooled, kept, "site", **COVARS)
    got = pd.concat([result.data[s] for s in frames])[kept].to_numpy()
    assert max_scaled_diff(got, expected, pooled[kept].std().to_numpy()) <= 1e-8


def test_constant_within_a_spanning_batch_needs_the_same_value_at_every_site() -> None:
    frames = generate_sites(scanners=True)
    feats = feature_names()
    for df in frames.values():
        df.loc[df.scanner == "scA", "feat_01"] = 2.0      # constant in scA at every site: excluded
    for i, df in enumerate(frames.values()):
        df.loc[df.scanner == "scB", "feat_02"] = float(i)  # constant per site, varies within scB: kept
    with pytest.warns(ExcludedFeatureWarning):
        result = run_federated_combat(frames, feats, batch_col="scanner", **COVARS)
    assert result.report.excluded == {"feat_01": "constant within batch(es) ['scA']"}


def test_nan_cells_name_site_feature_and_count() -> None:
    frames = generate_sites()
    frames["site2"].iloc[[3, 8, 9], frames["site2"].columns.get_loc("feat_07")] = np.nan
    with pytest.raises(HarmonisationError, match=r"site 'site2': feature 'feat_07' has 3 missing/non-finite value\(s\) "
                                                 r"\(row\(s\) site2-003, site2-008, site2-009\)"):
        harmonise_sites(frames, feature_names(), **COVARS)


def test_non_numeric_cells_in_the_real_table(reference_data) -> None:
    """The raw NSCLC CaPTk table has '#NAME?' cells (one patient)."""
    raw = pd.read_csv(reference_data / "nsclc_radiogenomics" / "Sandy-Captk.csv", encoding="utf-8-sig")
    raw = raw.set_index("SubjectID")
    feats = list(raw.columns)
    sites = {"AMC": raw[raw.index.str.startswith("AMC")], "R01": raw[raw.index.str.startswith("R01")]}
    with pytest.raises(HarmonisationError, match=r"site 'R01': feature 'T1_ED_Morphologic_Eccentricity' has 1 "
                                                 r"non-numeric cell\(s\) \(e.g. '#NAME\?' in row\(s\) R01-"):
        harmonise_sites(sites, feats)


def test_nan_covariate_names_site_covariate_and_count() -> None:
    frames = generate_sites()
    frames["site0"].loc[frames["site0"].index[:4], "age"] = np.nan
    with pytest.raises(HarmonisationError, match=r"site 'site0': continuous covariate 'age' has 4 missing"):
        harmonise_sites(frames, feature_names(), **COVARS)
    frames = generate_sites()
    frames["site1"]["grade"] = frames["site1"]["grade"].astype(object)
    frames["site1"].iloc[0, frames["site1"].columns.get_loc("grade")] = None
    with pytest.raises(HarmonisationError, match=r"site 'site1': categorical covariate 'grade' has 1 missing"):
        harmonise_sites(frames, feature_names(), **COVARS)


def test_batch_sizes() -> None:
    frames = generate_sites()
    frames["site2"] = frames["site2"].iloc[:1]
    with pytest.raises(HarmonisationError, match=r"batch 'site2' has 1 sample\(s\) \(site\(s\) 'site2' \(1\)\); "
                                                 r"ComBat needs at least 2"):
        harmonise_sites(frames, feature_names(), **COVARS)
    frames = generate_sites()
    frames["site2"] = frames["site2"].iloc[:12]
    with pytest.warns(SmallBatchWarning, match=r"batch 'site2' has only 12 samples"):
        out = harmonise_sites(frames, feature_names(), **COVARS)
    assert np.isfinite(out["site2"][feature_names()].to_numpy()).all()
    with pytest.raises(HarmonisationError, match=r"only one batch \(\['site0'\]\)"):
        harmonise_sites({"site0": generate_sites()["site0"]}, feature_names())


def test_covariate_confounded_with_site_is_named() -> None:
    frames = generate_sites()
    frames["site0"]["sex"] = 1
    frames["site1"]["sex"] = 0
    frames["site2"]["sex"] = 0
    with pytest.raises(HarmonisationError, match=r"singular design: covariate 'sex' \(column 'sex=1'\) is "
                                                 r"confounded with batch"):
        harmonise_sites(frames, feature_names(), **COVARS)


def test_collinear_covariates_are_named() -> None:
    frames = generate_sites()
    for df in frames.values():
        df["age_months"] = df["age"] * 12
    with pytest.raises(HarmonisationError, match=r"covariate 'age_months' \(column 'age_months'\) is collinear"):
        harmonise_sites(frames, feature_names(), categorical=["sex"], continuous=["age", "age_months"])


def test_missing_or_reordered_features() -> None:
    frames = generate_sites()
    frames["site1"] = frames["site1"].drop(columns=["feat_03", "feat_11"])
    with pytest.raises(HarmonisationError, match=r"site 'site1' lacks 2 feature column\(s\): \['feat_03', 'feat_11'\]"):
        harmonise_sites(frames, feature_names())


def test_other_bad_arguments() -> None:
    frames = generate_sites()
    feats = feature_names()
    with pytest.raises(HarmonisationError, match=r"reference batch 'site9' not found; batches are \['site0', 'site1', 'site2'\]"):
        harmonise_sites(frames, feats, ref_site="site9")
    with pytest.raises(HarmonisationError, match=r"site 'site0' lacks the batch column 'scanner'"):
        harmonise_sites(frames, feats, batch_col="scanner")
    with pytest.raises(HarmonisationError, match=r"needs >= 2 features; use eb=False"):
        harmonise_sites(frames, feats[:1])
    one = harmonise_sites(frames, feats[:1], eb=False)
    assert np.isfinite(one["site0"][feats[0]]).all()
    with pytest.raises(HarmonisationError, match=r"duplicates: \['feat_00'\]"):
        harmonise_sites(frames, feats + ["feat_00"])
    with pytest.raises(HarmonisationError, match=r"site 'site0' lacks the categorical covariate column 'stage'"):
        harmonise_sites(frames, feats, categorical=["stage"])
    sc = generate_sites(scanners=True)
    sc["site1"]["scanner"] = sc["site1"]["scanner"].astype(object)
    sc["site1"].iloc[2, sc["site1"].columns.get_loc("scanner")] = None
    with pytest.raises(HarmonisationError, match=r"site 'site1': batch column 'scanner' has 1 missing value"):
        harmonise_sites(sc, feats, batch_col="scanner")
