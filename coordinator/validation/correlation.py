"""Pearson correlation of each model feature with tumour volume from pooled sufficient statistics."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats

from coordinator.validation.results import Correlation

Aggregate = dict[str, "np.ndarray | float | int"]


def pearson_from_sums(agg: Aggregate, features: Sequence[str], level: float = 0.95) -> list[Correlation]:
    """r = (nΣxv - ΣxΣv)/√((nΣx² - (Σx)²)(nΣv² - (Σv)²)); CI tanh(atanh r ± z/√(n-3)) (None if n <= 3).

    Pooled over sites (site mean differences count as signal: harmonise first). Raises if a feature or the
    volume is constant.
    """
    n = int(agg["n"])
    sx, sx2, sxv = (np.atleast_1d(np.asarray(agg[k], dtype=float)) for k in ("sum_x", "sum_x2", "sum_xv"))
    sv, sv2 = float(agg["sum_v"]), float(agg["sum_v2"])
    if len(features) != sx.size:
        raise ValueError(f"{len(features)} feature names for {sx.size} features")
    vv = n * sv2 - sv * sv
    if vv <= 0:
        raise ValueError("volume is constant across patients: correlation undefined")
    z = float(stats.norm.ppf(0.5 + level / 2))
    out = []
    for j, name in enumerate(features):
        xx = n * sx2[j] - sx[j] ** 2
        if xx <= 0:
            raise ValueError(f"feature {name!r} is constant across patients: correlation with volume undefined")
        r = float(np.clip((n * sxv[j] - sx[j] * sv) / math.sqrt(xx * vv), -1.0, 1.0))
        if n > 3 and abs(r) < 1:
            h = z / math.sqrt(n - 3)
            lo, hi = math.tanh(math.atanh(r) - h), math.tanh(math.atanh(r) + h)
        else:
            lo = hi = None
        out.append(Correlation(name, r, lo, hi, n))
    return out
