"""Helpers for the federated ComBat tests: generated multi-site data and a quiet call of the
neuroCombat 0.2.12 oracle (the independent reference)."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np
import pandas as pd

N_FEATURES = 40


def generate_sites(sizes=(42, 57, 73), p: int = N_FEATURES, seed: int = 0, scanners: bool = False) -> dict[str, pd.DataFrame]:
    """Sites with additive + multiplicative site effects, sex / grade (categorical) and age
    (continuous) effects, features on scales 0.1 .. 3.6e4.  ``scanners`` adds a 'scanner'
    column whose values are shared across sites (batches spanning sites)."""
    rng = np.random.default_rng(seed)
    scales = np.geomspace(0.1, 3.6e4, p)
    shift = rng.normal(size=(len(sizes), p))
    stretch = rng.uniform(0.6, 1.8, size=(len(sizes), p))
    frames = {}
    for k, n in enumerate(sizes):
        sex = rng.integers(0, 2, n)
        age = rng.uniform(40, 85, n).round(1)
        grade = rng.choice(["G1", "G2", "G3"], n)
        noise = rng.normal(size=(n, p))
        bio = 0.4 * sex[:, None] + 0.03 * (age[:, None] - 60) + 0.5 * (grade == "G2")[:, None] - 0.3 * (grade == "G3")[:, None]
        y = (noise * stretch[k] + shift[k] + bio) * scales + 5 * scales
        df = pd.DataFrame(y, columns=[f"feat_{j:02d}" for j in range(p)])
        df.insert(0, "sex", sex)
        df.insert(1, "age", age)
        df.insert(2, "grade", grade)
        if scanners:
            scanner = rng.choice(["scA", "scB"], n, p=[0.6, 0.4])
            df.insert(3, "scanner", scanner)
            df.loc[:, df.columns[4:]] = df.iloc[:, 4:].to_numpy() * np.where(scanner == "scB", 1.3, 1.0)[:, None] + np.where(scanner == "scB", 2.0, 0.0)[:, None] * scales
        df.index = [f"site{k}-{i:03d}" for i in range(n)]
        frames[f"site{k}"] = df
    return frames


def feature_names(p: int = N_FEATURES) -> list[str]:
    return [f"feat_{j:02d}" for j in range(p)]


def run_neurocombat(pooled: pd.DataFrame, features, batch_col, categorical=(), continuous=(), **kw) -> np.ndarray:
    """neuroCombat 0.2.12 on the pooled table; float64 p x n input; returns samples x features."""
    return neurocombat_output(pooled, features, batch_col, categorical, continuous, **kw)["data"].T


def neurocombat_output(pooled: pd.DataFrame, features, batch_col, categorical=(), continuous=(), **kw) -> dict:
    """neuroCombat 0.2.12's whole output (``data`` features x samples, ``estimates``, ``info``).

    ``ref_batch`` needs ``np.int``, removed in numpy >= 1.24: a test-only shim sets it."""
    from neuroCombat import neuroCombat

    shim = kw.get("ref_batch") is not None and not hasattr(np, "int")
    if shim:
        np.int = int  # test-only shim for neuroCombat #33, removed again below
    covars = pooled[[batch_col, *categorical, *continuous]].reset_index(drop=True)
    dat = np.ascontiguousarray(pooled[list(features)].to_numpy(dtype=np.float64).T)
    try:
        with contextlib.redirect_stdout(io.StringIO()), np.errstate(all="ignore"):
            out = neuroCombat(dat, covars, batch_col, categorical_cols=list(categorical),
                              continuous_cols=list(continuous), **kw)
    finally:
        if shim:
            del np.int
    return out


def pool(frames: dict[str, pd.DataFrame], site_col: str = "site") -> pd.DataFrame:
    return pd.concat([df.assign(**{site_col: name}) for name, df in frames.items()])


def max_scaled_diff(a: np.ndarray, b: np.ndarray, scale: np.ndarray) -> float:
    return float(np.max(np.abs(a - b) / scale))


