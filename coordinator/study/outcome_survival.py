"""What a time-to-event study produced, for the MLflow logger (coordinator/survival_tracking.py) and the table.

``results[variant]`` ("harmonised", "raw"): per held-out site its measures (the structure of
``site_client.evaluation.survival_validation.heldout_survival_metrics``, as the site released it), the training
sites of its fold, the REML random-effects pools, every Cox fit's coefficients, and the final all-sites model
(radiomic and volume-only) on the variant's input scale: what the registry stores (``CoxModel.to_dict``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from coordinator.validation.results import RandomEffects
from fedmath.survival import CoxModel
from protocols.schema import SURVIVAL

KIND = SURVIVAL  # SurvivalOutcome.kind: how the report, table and tracking tell it from a binary outcome


@dataclass
class SurvivalVariantResult:
    heldout: dict[str, dict]                            # held-out site → released measures
    training_sites: dict[str, list[str]]                # held-out site → its fold's training sites
    pooled: dict[str, RandomEffects | None]             # measure or "measure@t*" → pooled (None: no site)
    fits: dict[str, dict[str, Any]]                     # model key → beta, se, log_likelihood, iterations
    final_model: CoxModel | None = None                 # all-sites radiomic model, on the input scale
    final_volume_model: CoxModel | None = None


@dataclass
class SurvivalOutcome:
    study_name: str
    protocol_id: str
    protocol: dict[str, Any]
    sites: list[str]
    dropped: dict[str, str]
    counts: dict[str, dict[str, int]]                   # handshake counts (n_pos = events, n_neg = censored)
    features: list[str]
    volume_feature: str
    horizons: list[float]
    time_unit: str
    k: int
    grid: list[float]                                   # candidate time grid (public, from the horizons)
    results: dict[str, SurvivalVariantResult]
    preferred_variant: str
    rounds: int
    rounds_by_phase: dict[str, int]
    cox_rounds: int
    notes: list[str] = field(default_factory=list)
    kind: str = KIND

    @property
    def final_model(self) -> CoxModel | None:
        return self.results[self.preferred_variant].final_model
