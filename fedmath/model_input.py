"""The input check every registered model runs before predicting: the validated feature columns, all finite.

Shipped with the model (``code_paths``) like the rest of fedmath; it reads any table with ``columns`` and
column access (a pandas DataFrame), so it needs no pandas import of its own.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def feature_matrix(frame, features: Sequence[str]) -> np.ndarray:
    """``frame``'s ``features`` columns as a float64 matrix; a ValueError naming what is missing or which
    feature of which row is not a finite number (and how many such values there are)."""
    features = list(features)
    missing = [f for f in features if f not in frame.columns]
    if missing:
        raise ValueError(f"the model needs the feature column(s) {', '.join(missing)} "
                         f"(it was validated on: {', '.join(features)})")
    x = frame[features].to_numpy(dtype=np.float64)
    bad = ~np.isfinite(x)
    if bad.any():
        row, col = (int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"feature {features[col]!r} of row {row} is {float(x[row, col])!r}: every feature must be a "
                         f"finite number ({int(bad.sum())} such value(s) in the input)")
    return x
