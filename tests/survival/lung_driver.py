"""Leave-one-institution-out federated Cox validation on NCCTG lung (lifelines), in-process, no Flower.

Each call below is one site half or one coordinator half; in a deployed study each site call is one Flower round.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from lifelines.datasets import load_lung

from coordinator.validation.survival_baseline import candidate_grid, carried_baseline, pooled_centre
from coordinator.validation.survival_cox import fit_stratified_cox
from fedmath.survival import CoxFit, CoxModel
from site_client.evaluation.survival_cox import SurvivalData, cox_terms, feature_sums
from site_client.evaluation.survival_grid import site_baseline
from site_client.evaluation.survival_validation import heldout_survival_metrics

FEATURES = ["age", "sex", "ph.ecog", "ph.karno"]
REFERENCE = ["ph.ecog"]  # the one-feature comparator (the role morph_volume plays for radiomics)
HORIZONS = [180.0, 365.0]
MIN_EVENTS = 10
K = 5


def lung_sites() -> pd.DataFrame:
    """Complete cases of NCCTG lung; institutions with at least MIN_EVENTS deaths are the sites."""
    frame = load_lung().dropna(subset=["inst", "time", "status", *FEATURES])
    frame = frame.assign(site=frame["inst"].astype(int).map(lambda i: f"inst{i:02d}"))
    events = frame.groupby("site")["status"].sum()
    return frame[frame["site"].isin(events[events >= MIN_EVENTS].index)].reset_index(drop=True)


def site_data(part: pd.DataFrame, columns: list[str]) -> SurvivalData:
    return SurvivalData.checked(part[columns].to_numpy(float), part["time"].to_numpy(float), part["status"].to_numpy())


@dataclass
class Fold:
    held_out: str
    fit: CoxFit
    volume_fit: CoxFit
    model: CoxModel
    volume_model: CoxModel
    metrics: dict


def train_model(train: pd.DataFrame, columns: list[str], horizons: list[float], k: int) -> tuple[CoxFit, CoxModel]:
    """Federated fit, centre, grid and carried baseline from the training sites' replies."""
    sites = {s: site_data(p, columns) for s, p in train.groupby("site")}
    fit = fit_stratified_cox({s: (lambda beta, d=d: cox_terms(d, beta, "efron")) for s, d in sites.items()}, len(columns))
    centre = pooled_centre({s: feature_sums(d) for s, d in sites.items()}, len(columns))
    candidates = candidate_grid(horizons)
    baseline = carried_baseline(
        candidates, {s: site_baseline(d, fit.beta, centre, candidates, k, keep=horizons) for s, d in sites.items()}
    )
    return fit, CoxModel(tuple(columns), fit.beta, centre, baseline)


def leave_one_site_out(frame: pd.DataFrame, k: int = K) -> list[Fold]:
    folds = []
    for held_out in sorted(frame["site"].unique()):
        train, test = frame[frame.site != held_out], frame[frame.site == held_out]
        fit, model = train_model(train, FEATURES, HORIZONS, k)
        volume_fit, volume_model = train_model(train, REFERENCE, HORIZONS, k)
        metrics = heldout_survival_metrics(
            site_data(test, FEATURES),
            model,
            volume_model,
            test[REFERENCE].to_numpy(float),
            HORIZONS,
            thresholds=[0.2, 0.3, 0.4, 0.5, 0.6],
            km_candidates=candidate_grid(HORIZONS),
            k=k,
            calibration_groups_wanted=3,
        )
        folds.append(Fold(held_out, fit, volume_fit, model, volume_model, metrics))
    return folds
