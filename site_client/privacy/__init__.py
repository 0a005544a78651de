"""The site's privacy controls beyond small-cell suppression: the per-protocol ledger and query budget
(docs/privacy.md is the threat model they serve)."""

from site_client.privacy.budget import Budget, BudgetCheck, in_recalibration_box, steepness
from site_client.privacy.charge import charge_request, release_kind, request_models
from site_client.privacy.ledger import BudgetExceeded, Ledger

__all__ = ["Budget", "BudgetCheck", "BudgetExceeded", "Ledger", "charge_request", "in_recalibration_box",
           "release_kind", "request_models", "steepness"]
