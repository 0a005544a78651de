"""Shared test data: a stratified survival cohort with ties (generated here; oracles are lifelines / sksurv)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest


def stratified_cohort(seed: int = 0, sizes=(80, 120, 60), p: int = 3, rounding: float = 1.0) -> pd.DataFrame:
    """Exponential times with site-specific baselines, random censoring, times rounded (ties) to ``rounding``."""
    rng = np.random.default_rng(seed)
    beta = np.array([0.7, -0.5, 0.3, 0.2, -0.1][:p])
    frames = []
    for s, n in enumerate(sizes):
        x = rng.normal(0.2 * s, 1.0, (n, p))
        hazard = 0.05 * (1 + s) * np.exp(x @ beta)
        event_time = rng.exponential(1 / hazard)
        censor_time = rng.uniform(2, 40, n)
        time = np.minimum(event_time, censor_time)
        time = np.maximum(np.ceil(time / rounding) * rounding, rounding)
        frame = pd.DataFrame(x, columns=[f"x{j}" for j in range(p)])
        frame["time"] = time
        frame["event"] = (event_time <= censor_time).astype(int)
        frame["site"] = f"site{s}"
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


@pytest.fixture(scope="session")
def cohort() -> pd.DataFrame:
    return stratified_cohort()
