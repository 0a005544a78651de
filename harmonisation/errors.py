"""Exception and warning classes for harmonisation.

Every error message names where the problem is (site, feature, covariate, batch) and
what was expected, so a coordinator can forward it to the hospital unchanged.
"""

from __future__ import annotations


class HarmonisationError(ValueError):
    """Bad input or an impossible model (singular design, too-small batch, ...)."""


class SmallBatchWarning(UserWarning):
    """A batch has fewer samples than the recommended minimum (20) for ComBat."""


class ExcludedFeatureWarning(UserWarning):
    """Features were excluded from harmonisation (constant overall or within a batch)."""


class ConvergenceWarning(UserWarning):
    """Parametric empirical Bayes hit the iteration cap before converging."""


class CovariateRangeWarning(UserWarning):
    """A held-out site's continuous covariate lies far outside the training distribution."""
