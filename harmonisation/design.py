"""Site-side design matrix, built over the hub's global lists (never the site's local levels).

Columns, as in neuroCombat: one indicator per batch (sorted); with a reference batch its
column is all ones (it becomes the intercept); per categorical covariate one indicator per
level except the first (sorted); each continuous covariate (optionally rounded through
float32 for bit-level parity with neuroCombat).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from .errors import HarmonisationError
from .messages import Message
from .schema import (batch_labels, categorical_labels, continuous_values, feature_matrix,
                     plan_levels)


@dataclass
class SiteData:
    """What a site keeps locally: never sent.  ``y`` is samples x features (plan order)."""

    site: str
    y: np.ndarray
    x: np.ndarray
    batches: np.ndarray
    index: pd.Index


def design_matrix(
    site: str,
    df: pd.DataFrame,
    batches: Sequence[str],
    row_batches: np.ndarray | None,
    levels: dict[str, list[str]],
    continuous: Sequence[str],
    ref_batch: str | None,
    float32_covariates: bool,
) -> np.ndarray:
    """n x q design; ``row_batches`` None gives zero batch columns (held-out covariate part)."""
    n = len(df)
    cols: list[np.ndarray] = []
    batch_block = np.zeros((n, len(batches)))
    if row_batches is not None:
        for k, b in enumerate(batches):
            batch_block[:, k] = row_batches == b
        if ref_batch is not None:
            batch_block[:, list(batches).index(ref_batch)] = 1.0
    cols.append(batch_block)
    for cov, lv in levels.items():
        labels = categorical_labels(site, df, cov)
        unknown = sorted(set(labels.tolist()) - set(lv))
        if unknown:
            raise HarmonisationError(
                f"site {site!r}: categorical covariate {cov!r} has level(s) {unknown} not seen in "
                f"training (known levels: {lv}); the model cannot adjust for an unseen level")
        block = np.zeros((n, max(len(lv) - 1, 0)))
        for k, level in enumerate(lv[1:]):
            block[:, k] = labels == level
        cols.append(block)
    for cov in continuous:
        cols.append(continuous_values(site, df, cov, float32_covariates)[:, None])
    return np.hstack(cols)


def prepare_site(site: str, df: pd.DataFrame, plan: Message, y_all: np.ndarray | None = None) -> SiteData:
    """Site side, after the plan: feature matrix in plan order and the design rows.

    ``y_all`` may pass the feature matrix already read for the schema (columns in the
    plan's ``all_features`` order); the kept features are then selected from it."""
    batch_col = plan["batch_col"] or None
    labels = batch_labels(site, df, batch_col)
    x = design_matrix(
        site, df, plan["batches"], labels, plan_levels(plan), plan["continuous"],
        plan["ref_batch"] or None, bool(plan["float32_covariates"]))
    if y_all is None:
        y = feature_matrix(site, df, plan["features"])
    elif list(plan["features"]) == list(plan["all_features"]):
        y = y_all
    else:
        pos = {f: j for j, f in enumerate(plan["all_features"])}
        y = y_all[:, [pos[f] for f in plan["features"]]]
    return SiteData(site=site, y=y, x=x, batches=labels, index=df.index)
