"""Federated ComBat harmonisation (pure numpy / pandas; no Flower, no MLflow).

Site-side statistics (:mod:`.schema`, :mod:`.site_stats`), coordinator-side combination
(:mod:`.combine`), site-side local step (:mod:`.local_adjust`), held-out sites
(:mod:`.heldout`), aggregate-only diagnostics (:mod:`.diagnostics`) and the in-process
driver (:mod:`.api`).  Message sequence: :mod:`.messages`.
"""

from .api import ComBatReport, ComBatResult, harmonise_sites, run_federated_combat
from .errors import (ConvergenceWarning, CovariateRangeWarning, ExcludedFeatureWarning,
                     HarmonisationError, SmallBatchWarning)
from .heldout import apply_to_heldout_site
from .messages import MessageLog, check_wire
from .model import ComBatModel
from .schema import ComBatOptions

__all__ = [
    "ComBatModel", "ComBatOptions", "ComBatReport", "ComBatResult", "ConvergenceWarning",
    "CovariateRangeWarning", "ExcludedFeatureWarning", "HarmonisationError", "MessageLog",
    "SmallBatchWarning", "apply_to_heldout_site", "check_wire", "harmonise_sites",
    "run_federated_combat",
]
