"""Study design: which folds exist, which sites train each fold, and which models each site trains or
validates. All leave-one-site-out folds and the final all-sites model run in lockstep in the same messages.
"""

from __future__ import annotations

from dataclasses import dataclass

from protocols.models import ALL_SITES, FEATURE_SETS, model_key
from protocols.schema import Protocol


@dataclass
class StudyDesign:
    """Folds over the current active sites. ``heldout[f]`` is the held-out site of LOSO fold f (= f)."""

    development: list[str]   # sites that train (all active sites not listed as external)
    external: list[str]      # sites used only to validate the final model
    folds: list[str]         # LOSO fold names (= held-out site) + ALL_SITES
    variants: list[str]      # "harmonised" (when ComBat is on) and "raw"

    @classmethod
    def build(cls, protocol: Protocol, sites: list[str]) -> "StudyDesign":
        external = [s for s in sites if s in set(protocol.validation.external_sites)]
        development = [s for s in sites if s not in external]
        folds = list(development) if protocol.validation.leave_one_site_out else []
        variants = ["harmonised", "raw"] if protocol.harmonisation.combat else ["raw"]
        return cls(development, external, folds + [ALL_SITES], variants)

    def training_sites(self, fold: str) -> list[str]:
        return [s for s in self.development if s != fold]

    def heldout_sites(self, fold: str) -> list[str]:
        """Sites that validate the fold's models: its held-out site, or the external sites for ALL_SITES."""
        return list(self.external) if fold == ALL_SITES else [fold]

    def train_folds(self, site: str) -> list[str]:
        return [f for f in self.folds if site in self.training_sites(f)]

    def heldout_folds(self, site: str) -> list[str]:
        return [f for f in self.folds if site in self.heldout_sites(f)]

    def models(self, fold: str) -> list[str]:
        return [model_key(fold, v, fs) for v in self.variants for fs in FEATURE_SETS]

    def all_models(self) -> list[str]:
        return [m for f in self.folds for m in self.models(f)]

    def models_trained_by(self, site: str) -> list[str]:
        return [m for f in self.train_folds(site) for m in self.models(f)]

    def models_validated_by(self, site: str) -> list[str]:
        return [m for f in self.heldout_folds(site) for m in self.models(f)]

    def without(self, site: str) -> "StudyDesign":
        """The design after ``site`` dropped out: its fold disappears, it trains nothing."""
        return StudyDesign(
            [s for s in self.development if s != site], [s for s in self.external if s != site],
            [f for f in self.folds if f != site], list(self.variants),
        )
