"""What a study produced, for the MLflow logger (coordinator/tracking.py) and the report.

``results[variant]`` ("harmonised", "raw") is a :class:`coordinator.validation.results.StudyResult`: per fold
(held-out site) the radiomic model's metrics before and after recalibration, conformal stats, the volume-only
baseline and ΔAUC, pooled and random-effects summaries, and the final all-sites model. Everything else
(rounds, bytes, per-model training curves, every model's weights, ComBat estimates) sits beside it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from coordinator.validation.results import SiteMetrics, StudyResult
from harmonisation.model import ComBatModel


@dataclass
class StudyOutcome:
    study_name: str
    protocol_id: str
    sites: list[str]                                   # sites that finished the study
    dropped: dict[str, str]                            # site → why it left
    counts: dict[str, dict[str, int]]                  # handshake counts per site (-1 = suppressed, < k)
    results: dict[str, StudyResult]                    # variant → C's StudyResult
    features: list[str]                                # model (radiomic) features
    volume_feature: str
    preferred_variant: str                             # the variant whose final model is registered
    rounds: int
    rounds_by_phase: dict[str, int]
    training_rounds: int
    newton_rounds: int
    bytes_sent: dict[str, int]                         # coordinator → site, per site
    bytes_received: dict[str, int]                     # site → coordinator, per site
    training_history: dict[str, list[float]]           # model key → loss per round
    final_weights: dict[str, list[np.ndarray]]         # model key → parameters [W1, b1, ...]
    standardisation: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]  # fold → variant → (mean, sd) over features_all
    features_all: list[str]                            # columns of the standardisation vectors
    combat_models: dict[str, ComBatModel] = field(default_factory=dict)   # fold → frozen estimates
    combat_diagnostics: dict[str, dict[str, Any]] = field(default_factory=dict)
    apparent: dict[str, SiteMetrics] = field(default_factory=dict)       # model key → pooled train-part metrics
    notes: list[str] = field(default_factory=list)

    @property
    def final_model(self):
        """The registered model: the final all-sites radiomic model of the preferred variant."""
        return self.results[self.preferred_variant].final_model
