"""Fixture for the federated ComBat tests: the real NSCLC radiogenomics features."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest


@pytest.fixture(scope="session")
def nsclc(reference_data: Path) -> pd.DataFrame:
    """NSCLC radiogenomics CaPTk features joined to CT parameters and clinical age / sex.

    Join as PROVENANCE.md: features.SubjectID == params.clc with a trailing 'L' stripped.
    Returns all 204 joined rows with numeric feature columns (cells such as '#NAME?' become NaN)."""
    root = reference_data / "nsclc_radiogenomics"
    feats = pd.read_csv(root / "Sandy-Captk.csv", encoding="utf-8-sig")
    params = pd.read_csv(root / "Sandy-CT-parameters.csv")
    clinical = pd.read_csv(root / "clinical-demographics.csv", index_col=0)
    params["SubjectID"] = params["clc"].astype(str).str.replace(r"L$", "", regex=True)
    names = [c for c in feats.columns if c != "SubjectID"]
    feats = pd.concat([feats[["SubjectID"]], feats[names].apply(pd.to_numeric, errors="coerce")], axis=1)
    joined = feats.merge(params[["SubjectID", "Manufacturer"]], on="SubjectID")
    joined = joined.merge(clinical[["age", "sex"]], left_on="SubjectID", right_index=True, how="left")
    joined = joined.assign(cohort=joined["SubjectID"].str[:3]).copy()
    joined.attrs["features"] = names
    return joined.set_index("SubjectID")
