"""DataFrame helper: return a copy of a site's table with harmonised feature columns."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd


def replace_columns(df: pd.DataFrame, columns: Sequence[str], values: np.ndarray) -> pd.DataFrame:
    """Copy of ``df`` (same index, column order and other columns) with ``columns`` set to
    the float64 ``values`` (samples x len(columns))."""
    pos = {c: j for j, c in enumerate(columns)}
    data = {c: (values[:, pos[c]] if c in pos else df[c].to_numpy(copy=True)) for c in df.columns}
    out = pd.DataFrame(data, index=df.index.copy(), columns=df.columns)
    for c in df.columns:
        if c not in pos and out[c].dtype != df[c].dtype:
            out[c] = df[c].copy()
    return out
