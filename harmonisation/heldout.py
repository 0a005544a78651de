"""Apply a frozen ComBat model to a site that took no part in training (external validation).

Only that site's own location and scale are estimated, from its own unlabelled features,
against the frozen training estimates (α̂, covariate rows β̂ of B̂, σ̂²); nothing is refitted
and nothing is uploaded:

    μ_ij = α̂_j + x̃_iᵀβ̂_j;  z_ij = (y_ij - μ_ij)/σ̂_j
    γ̂_j = mean_i z_ij; δ̂²_j = var_i z_ij (ddof 1); priors across the site's own features
    EB (or eb=False / mean_only) -> γ*_j, δ*_j;  y*_ij = σ̂_j (z_ij - γ*_j)/√δ*_j + μ_ij
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from .design import design_matrix
from .eb import batch_adjustments
from .frames import replace_columns
from .errors import CovariateRangeWarning, HarmonisationError, SmallBatchWarning
from .model import ComBatModel
from .schema import MIN_BATCH, RECOMMENDED_BATCH, continuous_values, feature_matrix
from .site_stats import batch_stats

RANGE_SD = 3.0


def apply_to_heldout_site(
    model: ComBatModel,
    df: pd.DataFrame,
    site: str = "held-out site",
    *,
    eb: bool | None = None,
    parametric: bool | None = None,
    mean_only: bool | None = None,
) -> pd.DataFrame:
    """Harmonise ``df`` (one new batch) with the frozen ``model``; returns a copy of ``df``
    with the model's features replaced.  eb / parametric / mean_only default to the model's."""
    opts = model.options
    eb = opts.eb if eb is None else eb
    parametric = opts.parametric if parametric is None else parametric
    mean_only = opts.mean_only if mean_only is None else mean_only
    y = feature_matrix(site, df, model.features)
    n = y.shape[0]
    if n < MIN_BATCH:
        raise HarmonisationError(
            f"held-out site {site!r} has {n} sample(s); estimating its location and scale needs "
            f"at least {MIN_BATCH} (recommended >= {RECOMMENDED_BATCH})")
    if n < RECOMMENDED_BATCH:
        warnings.warn(f"held-out site {site!r} has only {n} samples; its ComBat estimates are "
                      f"unstable below about {RECOMMENDED_BATCH} (consider mean_only=True)",
                      SmallBatchWarning, stacklevel=2)
    for i, cov in enumerate(model.continuous):
        x = continuous_values(site, df, cov, model.options.float32_covariates)
        far = np.abs(x - model.cont_mean[i]) > RANGE_SD * model.cont_sd[i]
        if far.any():
            warnings.warn(
                f"held-out site {site!r}: {int(far.sum())} value(s) of continuous covariate {cov!r} lie "
                f"more than {RANGE_SD:g} training SDs from the training mean "
                f"({model.cont_mean[i]:.4g} ± {model.cont_sd[i]:.4g}); the covariate effect is "
                "extrapolated there", CovariateRangeWarning, stacklevel=2)
    x = design_matrix(site, df, model.batches, None, model.levels, model.continuous, None,
                      model.options.float32_covariates)
    k = len(model.batches)
    mu = model.alpha + (x[:, k:] @ model.beta[k:] if x.shape[1] > k else 0.0)
    sigma = np.sqrt(model.var_pooled)
    z = (y - mu) / sigma
    if eb and len(model.features) < 2:
        raise HarmonisationError("empirical Bayes needs >= 2 features; use eb=False")
    n_b, mean, m2 = batch_stats(z)
    g, d = batch_adjustments(n_b, mean, m2, eb=eb, parametric=parametric, mean_only=mean_only,
                             conv=opts.conv, max_iter=opts.max_iter, label=site)
    adjusted = sigma * (z - g) / np.sqrt(d) + mu
    return replace_columns(df, model.features, adjusted)
