"""DataFrame helper: return a copy of a site's table with harmonised feature columns."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd


def replace_columns(df: pd.DataFrame, columns: Sequence[str], values: np.ndarray) -> pd.DataFrame:
    """Copy of ``df`` (same index, column order and other columns) with ``columns`` set to
    the float64 ``values`` (samples x len(columns))."""
    harm = pd.DataFrame(values, index=df.index, columns=list(columns))
    rest = df.drop(columns=list(columns))
    out = pd.concat([rest, harm], axis=1) if rest.shape[1] else harm
    return out if list(out.columns) == list(df.columns) else out[list(df.columns)]
