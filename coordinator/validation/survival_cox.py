"""Coordinator half of the federated stratified Cox model: check each site's terms, sum them, take Newton steps.

The stratified log partial likelihood is the sum of the sites' strata, so Newton on the summed gradient and
information is the pooled stratified fit exactly (no approximation, unlike federated averaging). One Newton
evaluation is one round: every training site computes :func:`site_client.evaluation.survival_cox.cox_terms`
at the broadcast beta. The volume-only baseline is the same fit with the volume as the only feature.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from fedmath.survival import CoxFit, CoxTerms, newton_maximise, sum_terms


class CoxReplyError(ValueError):
    """A site's Cox reply that the coordinator will not use; names the site and the defect."""


def checked_terms(site: str, terms: CoxTerms, n_parameters: int) -> CoxTerms:
    """A site's reply must have the model's sizes, be finite, and its information symmetric positive semidefinite."""
    gradient = np.asarray(terms.gradient, dtype=float)
    information = np.asarray(terms.information, dtype=float)
    if gradient.shape != (n_parameters,) or information.shape != (n_parameters, n_parameters):
        raise CoxReplyError(
            f"site {site!r}: Cox terms have shapes {gradient.shape} / {information.shape}, expected "
            f"({n_parameters},) / ({n_parameters}, {n_parameters})"
        )
    # log likelihood -inf is legitimate: the site's risk scores underflowed at an overshooting beta (Newton halves)
    if not (np.all(np.isfinite(gradient)) and np.all(np.isfinite(information)) and terms.log_likelihood < np.inf):
        raise CoxReplyError(f"site {site!r}: Cox terms hold a non-finite value")
    if np.isnan(terms.log_likelihood):
        raise CoxReplyError(f"site {site!r}: Cox terms hold a non-finite value")
    if terms.log_likelihood > 1e-9:
        raise CoxReplyError(f"site {site!r}: a log partial likelihood cannot be positive, got {terms.log_likelihood}")
    scale = max(1.0, float(np.abs(information).max()))
    if not np.allclose(information, information.T, atol=1e-9 * scale):
        raise CoxReplyError(f"site {site!r}: the Cox information matrix is not symmetric")
    if n_parameters and np.linalg.eigvalsh((information + information.T) / 2).min() < -1e-8 * scale:
        raise CoxReplyError(f"site {site!r}: the Cox information matrix is not positive semidefinite")
    return CoxTerms(gradient, information, float(terms.log_likelihood))


def fit_stratified_cox(
    sites: Mapping[str, Callable[[np.ndarray], CoxTerms]], n_parameters: int, ridge: float = 0.0
) -> CoxFit:
    """Federated Newton: ``sites[name](beta)`` is that site's reply for the round at beta."""
    if not sites:
        raise CoxReplyError("no training site to fit the Cox model on")

    def evaluate(beta: np.ndarray) -> CoxTerms:
        return sum_terms([checked_terms(name, reply(beta), n_parameters) for name, reply in sites.items()])

    return newton_maximise(evaluate, n_parameters, ridge)
