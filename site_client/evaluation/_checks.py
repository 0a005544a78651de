"""Input checks shared by the site-side evaluation functions (clear messages, never silent NaN)."""

from __future__ import annotations

import numpy as np

from fedmath.logistic import logit  # noqa: F401  (one home: fedmath; clipped at EPS = 1e-12 there too)

#: Probabilities are clipped to [EPS, 1 - EPS] before taking logits, so that a model output of exactly 0 or 1
#: gives a finite logit (|logit| <= 27.6).
EPS = 1e-12


def _where(site: str | None) -> str:
    return f" at site {site!r}" if site else ""


def as_probabilities(p: object, name: str = "p", site: str | None = None) -> np.ndarray:
    """Return ``p`` as a 1-D float array, or raise naming the first bad row."""
    arr = np.asarray(p, dtype=float)
    if arr.ndim != 1:
        raise ValueError(f"{name}{_where(site)} must be a 1-D array of probabilities, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name}{_where(site)} is empty: at least one patient is needed")
    bad = np.flatnonzero(~np.isfinite(arr) | (arr < 0) | (arr > 1))
    if bad.size:
        i = int(bad[0])
        raise ValueError(
            f"{name}{_where(site)}: row {i} is {float(arr[i])!r}; expected a probability in [0, 1] "
            f"({bad.size} bad row(s) in total)"
        )
    return arr


def as_labels(y: object, n: int, name: str = "y", site: str | None = None) -> np.ndarray:
    """Return ``y`` as a 1-D int array of 0/1 with ``n`` rows, or raise naming the first bad row."""
    raw = np.asarray(y)
    if raw.ndim != 1 or raw.shape[0] != n:
        raise ValueError(f"{name}{_where(site)} must be a 1-D array with {n} rows (one per score), got shape {raw.shape}")
    arr = raw.astype(float)
    bad = np.flatnonzero(~np.isin(arr, (0.0, 1.0)))
    if bad.size:
        i = int(bad[0])
        raise ValueError(
            f"{name}{_where(site)}: row {i} is {raw[i].item()!r}; expected a class label 0 (negative) or 1 (positive)"
        )
    return arr.astype(np.int64)


def as_finite(x: object, n: int, name: str, site: str | None = None, ndim: int = 1) -> np.ndarray:
    """Return ``x`` as a float array with ``n`` rows and no NaN/inf, or raise naming the first bad row."""
    arr = np.asarray(x, dtype=float)
    if arr.ndim != ndim or arr.shape[0] != n:
        raise ValueError(f"{name}{_where(site)} must have {n} rows and {ndim} dimension(s), got shape {arr.shape}")
    bad = np.flatnonzero(~np.isfinite(arr).reshape(n, -1).all(axis=1))
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"{name}{_where(site)}: row {i} is not finite ({arr[i].tolist()!r}); expected a real number")
    return arr


def as_edges(edges: object, name: str = "edges") -> np.ndarray:
    """Return strictly increasing bin edges covering [0, 1]."""
    e = np.asarray(edges, dtype=float)
    if e.ndim != 1 or e.size < 2 or not np.all(np.diff(e) > 0) or e[0] != 0.0 or e[-1] != 1.0:
        raise ValueError(f"{name} must be strictly increasing bin edges from 0 to 1, got {e!r}")
    return e


