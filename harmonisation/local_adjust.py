"""Site-side local step: standardise, empirical-Bayes estimates per local batch, adjust.

y*_ij = σ̂_j (z_ij - γ*_kj) / √δ*_kj + α̂_j + M_ij (``z_mod`` = (Z, α̂ + M) from
:func:`standardise`, if already computed); reference-batch rows are returned
unchanged.  Batches that span sites take γ*, δ* from the hub's ``eb`` broadcast; all
others are estimated here with no upload.
"""

from __future__ import annotations

import numpy as np

from .design import SiteData
from .eb import batch_adjustments
from .errors import HarmonisationError
from .messages import Message
from .schema import plan_options
from .site_stats import batch_stats, standardise


def local_adjust(sd: SiteData, plan: Message, fit: Message, scale: Message,
                 eb_msg: Message | None = None, z_mod: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """Harmonised samples x features matrix (plan feature order) for this site."""
    opts = plan_options(plan)
    z, fitted = z_mod if z_mod is not None else standardise(sd, plan, fit, scale)
    sigma = np.sqrt(scale["var_pooled"])
    out = np.empty_like(sd.y)
    spanning = set(plan["spanning"])
    local_batches = sorted(set(sd.batches.tolist()))
    for b in local_batches:
        rows = slice(None) if len(local_batches) == 1 else sd.batches == b
        if opts.ref_batch is not None and b == opts.ref_batch:
            out[rows] = sd.y[rows]
            continue
        if b in spanning:
            if eb_msg is None or b not in eb_msg["batches"]:
                raise HarmonisationError(
                    f"site {sd.site!r}: batch {b!r} spans sites but no hub estimates were received")
            i = list(eb_msg["batches"]).index(b)
            g, d = eb_msg["gamma_star"][i], eb_msg["delta_star"][i]
        else:
            n, gamma_hat, m2 = batch_stats(z[rows])
            g, d = batch_adjustments(n, gamma_hat, m2, eb=opts.eb, parametric=opts.parametric,
                                     mean_only=opts.mean_only, conv=opts.conv,
                                     max_iter=opts.max_iter, label=b)
        block = z[rows] - g
        block *= sigma / np.sqrt(d)
        block += fitted[rows]
        out[rows] = block
    return out
