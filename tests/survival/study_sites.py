"""NCCTG lung (lifelines.datasets.load_lung) as a federated survival study: one feature table per institution.

The institutions with at least MIN_EVENTS deaths are the sites (as in :mod:`lung_driver`); the protocol is a
survival label (time, status in days; horizons 180 and 365), Cox on age, sex, ECOG and Karnofsky against ECOG
alone (the comparator plays the role morph_volume plays for radiomics), no ComBat (clinical variables).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import yaml

from protocols import parse_protocol, protocol_id

from .lung_driver import FEATURES, HORIZONS, MIN_EVENTS, REFERENCE, lung_sites

#: The study's k. NCCTG lung's institutions have 2 to 9 censored patients each; a survival site needs none or at
#: least k censored cases (as a binary site needs k cases of each class), so k = 5 would leave four of the nine.
#: The equalities with lifelines below do not depend on k; test_small_censored_class_makes_a_site_ineligible
#: runs the study at the lung driver's K = 5.
STUDY_K = 2

PROTOCOL = {
    "study": {"name": "ncctg-lung-survival", "version": "1.0"},
    "label": {"type": "survival", "time_column": "time", "event_column": "status", "time_unit": "days",
              "horizons": HORIZONS, "min_events_per_site": MIN_EVENTS},
    "harmonisation": {"combat": False},
    "model": {"features": FEATURES},
    "validation": {"volume_feature": REFERENCE[0]},
    "federation": {"min_sites": 3},
    "privacy": {"min_cell_count": STUDY_K},
    "tracking": {"experiment": "ncctg-lung", "registered_model": "ncctg-lung-cox"},
}


def lung_frame() -> pd.DataFrame:
    frame = lung_sites()
    return frame.assign(case_id=[f"case{i:04d}" for i in range(len(frame))])


def site_tables(frame: pd.DataFrame | None = None) -> dict[str, pd.DataFrame]:
    frame = lung_frame() if frame is None else frame
    return {site: part[["case_id", *FEATURES, "time", "status"]].reset_index(drop=True)
            for site, part in frame.groupby("site")}


def lung_protocol(**overrides):
    data = {**PROTOCOL, **overrides}
    protocol = parse_protocol(data)
    return protocol, protocol_id(protocol)


def write_study(root: Path, tables: dict[str, pd.DataFrame]) -> tuple[Path, Path]:
    """protocol.yaml and sites/<site>/features.csv under ``root`` (the layout `coordinator simulate` reads)."""
    protocol_path = root / "protocol.yaml"
    protocol_path.write_text(yaml.safe_dump(PROTOCOL, sort_keys=False))
    for site, table in tables.items():
        (root / "sites" / site).mkdir(parents=True, exist_ok=True)
        table.to_csv(root / "sites" / site / "features.csv", index=False)
    return protocol_path, root / "sites"
