"""Small generated radiomic feature tables for deployment tests and the federation benchmark.

Each site: ``n`` cases, a string patient id (``case_id`` = "PAT-<site>-<i>"), a binary label driven by two
features, a multiplicative + additive site (scanner) effect on every feature, and a volume column.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from protocols import parse_protocol, protocol_id

LABEL = "malignant"
VOLUME = "morph_volume"
FEATURES = [f"feat_{i}" for i in range(6)]


def site_table(site: str, n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=(n, len(FEATURES)))
    logit = 1.4 * latent[:, 0] - 1.0 * latent[:, 1] + 0.2 * rng.normal(size=n)
    y = (logit > np.quantile(logit, 0.55)).astype(int)
    shift, scale = rng.normal(scale=0.8, size=len(FEATURES)), np.exp(rng.normal(scale=0.3, size=len(FEATURES)))
    table = pd.DataFrame(latent * scale + shift, columns=FEATURES)
    table.insert(0, "case_id", [f"PAT-{site}-{i:04d}" for i in range(n)])
    table.insert(1, LABEL, y)
    table[VOLUME] = np.exp(2.0 + 0.5 * latent[:, 0] + rng.normal(scale=0.3, size=n))
    return table


def write_sites(folder: Path, sizes: dict[str, int], seed: int = 11, file_name: str = "features.csv") -> dict[str, Path]:
    """One ``<folder>/<site>/<file_name>`` per site; returns site -> csv path."""
    paths = {}
    for index, (site, n) in enumerate(sorted(sizes.items())):
        path = folder / site / file_name
        path.parent.mkdir(parents=True, exist_ok=True)
        site_table(site, n, seed + index).to_csv(path, index=False)
        paths[site] = path
    return paths


def protocol_yaml(rounds: int = 2, min_sites: int = 3, version: str = "1", round_timeout_s: float = 120.0) -> str:
    """A small, fast study protocol (YAML text) for the generated tables."""
    return f"""study:
  name: deployment-test
  version: "{version}"
label:
  column: {LABEL}
  positive: "1"
  negative: "0"
harmonisation:
  combat: true
model:
  type: logistic
  optimiser: sgd
  learning_rate: 0.1
  batch_size: 16
  local_epochs: 1
  rounds: {rounds}
  seed: 5
validation:
  volume_feature: {VOLUME}
  histogram_bins: 20
federation:
  min_sites: {min_sites}
  round_timeout_s: {round_timeout_s}
privacy:
  min_cell_count: 5
"""


def write_protocol(path: Path, **kwargs: object) -> str:
    """Write :func:`protocol_yaml` to ``path``; returns its protocol id."""
    import yaml

    text = protocol_yaml(**kwargs)  # type: ignore[arg-type]
    path.write_text(text, encoding="utf-8")
    return protocol_id(parse_protocol(yaml.safe_load(text)))


def in_process_study(root: Path, n_sites: int, rounds: int, cases: int) -> dict[str, object]:
    """The benchmark's anchor (bench/federation.py): the loopback study's protocol and generated sites run
    with the in-process transport (site code called directly, no Flower). Wall time, message rounds, rounds
    by phase and the outcome."""
    import time

    import yaml

    from coordinator.study import run_study
    from site_client.study import SiteContext
    from tests.federation.inprocess import InProcessTransport

    names = [f"site-{i + 1}" for i in range(n_sites)]
    data = write_sites(root / "data", {n: cases + 4 * i for i, n in enumerate(names)})
    protocol = parse_protocol(yaml.safe_load(protocol_yaml(rounds=rounds, min_sites=max(2, n_sites - 1))))
    pid = protocol_id(protocol)
    contexts = {n: SiteContext(site_name=n, protocol=protocol, protocol_id=pid, approved_ids={pid}, data=data[n],
                               data_kind="features", work_dir=root / "work" / n) for n in names}
    started = time.monotonic()
    outcome = run_study(protocol, pid, InProcessTransport(contexts), progress=lambda line: None)
    return {"wall": time.monotonic() - started, "rounds": outcome.rounds, "by_phase": dict(outcome.rounds_by_phase),
            "outcome": outcome}
