"""A small seeded cohort of four sites with covariates (sex, age) and two scanners per site (batch.by column):
the NSCLC tables carry no covariates, and the ComBat plan checks need some."""

from __future__ import annotations

import numpy as np
import pandas as pd

from protocols import parse_protocol, protocol_id

SITES = ("H1", "H2", "H3", "H4")


def synthetic_sites(seed: int = 3) -> dict[str, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    out = {}
    for s, name in enumerate(SITES):
        n = 60 + 10 * s
        sex = rng.choice(["F", "M"], n)
        age = rng.uniform(30, 80, n)
        scanner = rng.choice([f"S{s}a", f"S{s}b"], n)
        y = rng.integers(0, 2, n)
        x = rng.normal(size=(n, 6)) + s * 0.3 + y[:, None] * 0.5 + (scanner == f"S{s}a")[:, None] * 0.4
        table = pd.DataFrame(x, columns=[f"f{i}" for i in range(5)] + ["vol"])
        table.insert(0, "case_id", [f"{name}-{i:03d}" for i in range(n)])
        table["y"], table["sex"], table["age"], table["scanner"] = y, sex, age, scanner
        out[name] = table
    return out


def synthetic_protocol(**overrides):
    data = {
        "study": {"name": "synth"}, "label": {"column": "y", "positive": "1", "negative": "0"},
        "covariates": {"categorical": [{"name": "sex", "levels": ["F", "M"]}],
                       "continuous": [{"name": "age", "min": 0, "max": 120}]},
        "batch": {"by": "column", "column": "scanner"},
        "model": {"type": "mlp", "hidden_sizes": [4], "rounds": 5, "batch_size": 16, "learning_rate": 0.1},
        "validation": {"volume_feature": "vol", "histogram_bins": 20, "recalibration": "temperature"},
        "federation": {"min_sites": 3},
    }
    for section, values in overrides.items():
        data[section] = {**data.get(section, {}), **values}
    p = parse_protocol(data)
    return p, protocol_id(p)
