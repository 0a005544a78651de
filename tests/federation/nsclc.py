"""NSCLC-Radiogenomics CaPTk features split into four sites, and a study protocol for them.

Join (tests/data/nsclc_radiogenomics/PROVENANCE.md): features.SubjectID == params.clc after stripping a
trailing 'L', then the clinical table by subject id. Label: EGFR mutation (``egfr-mut``), the only binary
clinical endpoint with at least 5 cases of each class at every cohort × manufacturer site (event and
recurrence have at most 5 events at AMC; AMC has no squamous histology); cases without an EGFR result are
dropped. Sites: AMC (all AMC scanners), R01 GE split by contrast (CE 0 / 1), and the other R01 scanners.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from protocols import parse_protocol, protocol_id
from tests.reference_data import REFERENCE_DATA

DATA = REFERENCE_DATA / "nsclc_radiogenomics"
LABEL = "egfr"
VOLUME = "T1_ED_Volumetric_Volume"


def load_sites(data: Path = DATA) -> dict[str, pd.DataFrame]:
    feats = pd.read_csv(data / "Sandy-Captk.csv", encoding="utf-8-sig")
    params = pd.read_csv(data / "Sandy-CT-parameters.csv")
    clin = pd.read_csv(data / "clinical-demographics.csv", index_col=0)
    params["clc"] = params["clc"].astype(str).str.replace(r"L$", "", regex=True)
    table = feats.merge(params[["clc", "Manufacturer", "CE"]], left_on="SubjectID", right_on="clc")
    table = table.merge(clin[["egfr-mut", "sex"]], left_on="SubjectID", right_index=True)
    table = table[table["egfr-mut"].notna()].copy()
    manufacturer = table["Manufacturer"].fillna("unknown").astype(str).str.split().str[0].str.upper()
    cohort = table["SubjectID"].str[:3]
    site = np.where(cohort == "AMC", "AMC",
                    np.where(manufacturer == "GE", np.where(table["CE"] == 1, "R01-GE-CE1", "R01-GE-CE0"), "R01-other"))
    table[LABEL] = table["egfr-mut"].astype(int)
    table = table.rename(columns={"SubjectID": "case_id"})
    features = [c for c in feats.columns if c != "SubjectID"]
    keep = ["case_id", LABEL, *features]
    return {str(name): table.loc[site == name, keep].reset_index(drop=True) for name in sorted(set(site))}


def protocol(**overrides):
    """A study protocol for these sites; ``overrides`` are section dicts merged over the defaults here."""
    data = {
        "study": {"name": "nsclc-egfr", "version": "test"},
        "label": {"column": LABEL, "positive": "1", "negative": "0"},
        "harmonisation": {"combat": True, "eb": True},
        "model": {"type": "logistic", "optimiser": "sgd", "learning_rate": 0.5, "weight_decay": 0.01,
                  "batch_size": 256, "local_epochs": 1, "rounds": 30, "seed": 7},
        "validation": {"volume_feature": VOLUME, "histogram_bins": 40, "calibration_fraction": 0.25},
        "federation": {"min_sites": 3},
        "privacy": {"min_cell_count": 5},
    }
    for section, values in overrides.items():
        data[section] = {**data.get(section, {}), **values}
    p = parse_protocol(data)
    return p, protocol_id(p)
