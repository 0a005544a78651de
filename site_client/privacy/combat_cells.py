"""ComBat's sums hold counts: no batch or categorical covariate level with 1..k-1 cases at a site is sent.

Federated ComBat's first round sends XᵀX and XᵀY of the design [batch indicators | level indicators |
continuous covariates] over all the site's cases. Between indicator columns XᵀX *is* a count table: its diagonal
holds the number of cases of each batch and of each level, its off-diagonal the cases of a batch with a level
and of one covariate's level with another's; the reference level (the one without a column) is the batch's
count minus the others. So every one-way and two-way table of the factors (batch and each categorical covariate),
reference levels included, is released or computable. A cell of 1..k-1 in any of them refuses the ComBat
request at this site: counted from the site's own cohort, never from the coordinator's plan. (The handshake
already makes a site with a batch of 1..k-1 cases ineligible; this covers levels and their crossings.)

In reference mode a site also sends XᵀX of its reference-batch rows (for σ̂²): between level columns it counts
the reference batch's cases of one covariate's level with another's, a three-way cell when the site holds other
batches too; those cells are checked the same way.
"""

from __future__ import annotations

from itertools import combinations

import numpy as np
import pandas as pd

from harmonisation.schema import batch_labels, categorical_labels


def small_combat_cells(site: str, table: pd.DataFrame, batch_column: str | None, categorical: list[str],
                       k: int, reference_batch: str | None = None) -> list[str]:
    """Descriptions (for the site's log only) of every cell in 1..k-1 of the one- and two-way tables of the
    site's batches and categorical covariate levels (and, with a ``reference_batch``, the two-way tables of the
    levels within its rows); empty when ComBat's sums pin no small count."""
    factors = {"batch": np.asarray(batch_labels(site, table, batch_column), dtype=str)}
    for cov in categorical:
        factors[cov] = np.asarray(categorical_labels(site, table, cov), dtype=str)
    small = []
    for name, labels in factors.items():
        levels, counts = np.unique(labels, return_counts=True)
        small += [f"{name}={level}: {n} case(s)" for level, n in zip(levels, counts) if 0 < n < k]
    for (a, la), (b, lb) in combinations(factors.items(), 2):
        table_ab = pd.crosstab(la, lb)
        for level_a, row in table_ab.iterrows():
            small += [f"{a}={level_a} & {b}={level_b}: {n} case(s)" for level_b, n in row.items() if 0 < n < k]
    reference_rows = factors["batch"] == str(reference_batch)
    if reference_batch is not None and reference_rows.any() and not reference_rows.all():
        levels = {cov: labels[reference_rows] for cov, labels in factors.items() if cov != "batch"}
        for (a, la), (b, lb) in combinations(levels.items(), 2):
            for level_a, row in pd.crosstab(la, lb).iterrows():
                small += [f"batch={reference_batch} & {a}={level_a} & {b}={level_b}: {n} case(s)"
                          for level_b, n in row.items() if 0 < n < k]
    return small
