"""What this site has said and agreed to in one run (one protocol id): the state every request is checked
against. Persisted as ``run_state.json`` in the run's work folder (a fresh process may serve each message).

The handshake records the site's own feature list, batch labels and covariate levels (exactly what it
announced); the first ComBat round (or, without ComBat or without covariates, the first training message)
records the folds this run introduced and which of them the site trains; calibration step 0 records the models it calibrates and
validates. ``served`` counts the requests served per phase and ``limits`` is free room for per-run budgets
(the privacy budgets build on both); everything here is written only by :mod:`site_client.study.dispatch`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from protocols.models import ALL_SITES
from site_client.study.context import SiteContext
from site_client.study.store import SiteStore

STATE_FILE = "run_state.json"


@dataclass
class SiteRunState:
    features: list[str] = field(default_factory=list)
    model_features: list[str] = field(default_factory=list)
    volume_feature: str = ""
    eligible: bool = False
    batches: list[str] = field(default_factory=list)               # the site's own batch labels
    levels: dict[str, list[str]] = field(default_factory=dict)    # the site's own categorical levels
    folds: list[str] = field(default_factory=list)                # folds this run introduced
    train_folds: list[str] = field(default_factory=list)          # of those, the folds this site trains
    fold_sizes: dict[str, dict[str, int]] = field(default_factory=dict)  # fold → plan's q and p
    standardised: bool = False                                    # first training message served
    calibrated_models: list[str] = field(default_factory=list)    # calibration step 0: trained models
    validated_models: list[str] = field(default_factory=list)     # calibration step 0: validated models
    served: dict[str, int] = field(default_factory=dict)          # requests served per phase
    limits: dict[str, Any] = field(default_factory=dict)          # per-run budgets (extension point)

    @classmethod
    def load(cls, store: SiteStore) -> "SiteRunState | None":
        if not store.exists(STATE_FILE):
            return None
        return cls(**store.read_json(STATE_FILE))

    def save(self, store: SiteStore) -> None:
        store.write_json(STATE_FILE, asdict(self))


def own_heldout_folds(context: SiteContext) -> set[str]:
    """The folds this site is held out of, from the protocol and its own name alone (never from a request):
    its own leave-one-site-out fold, or the final model's fold when the protocol lists it as external."""
    v = context.protocol.validation
    if context.site_name in v.external_sites:
        return {ALL_SITES}
    return {context.site_name} if v.leave_one_site_out else set()
