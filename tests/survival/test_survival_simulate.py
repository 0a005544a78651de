"""``coordinator simulate`` on a survival study (NCCTG lung, four institutions as sites) on Flower's simulation
engine: the CLI finishes, prints the survival table, logs to MLflow, and gives exactly the study that the
in-process transport (site code called directly) gives on the same data."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from coordinator.outcome_store import load_outcome
from coordinator.study import run_study
from federation.conftest import make_contexts
from federation.inprocess import InProcessTransport
from protocols import load_protocol, protocol_id

from .study_sites import lung_frame, site_tables, write_study


@pytest.mark.deployment
@pytest.mark.timeout(1200)
def test_coordinator_simulate_runs_a_survival_study_into_mlflow(tmp_path: Path) -> None:
    frame = lung_frame()
    largest = frame.groupby("site").size().sort_values(ascending=False).index[:4]
    tables = site_tables(frame[frame.site.isin(largest)])
    protocol_path, sites_dir = write_study(tmp_path, tables)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[2]),
                                                         os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-m", "coordinator", "simulate", "--protocol", str(protocol_path),
                           "--sites-dir", str(sites_dir), "--work-dir", str(tmp_path / "work"), "--mlflow-uri", uri],
                          capture_output=True, text=True, env=env, timeout=1100)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Harrell C" in done.stdout and "pooled (REML)" in done.stdout

    simulated = load_outcome(next((tmp_path / "work" / "outcomes").glob("outcome-*.pkl")))
    assert simulated.kind == "survival" and sorted(simulated.sites) == sorted(tables)
    protocol = load_protocol(protocol_path)
    pid = protocol_id(protocol)
    reference = run_study(protocol, pid, InProcessTransport(make_contexts(tmp_path / "inprocess", protocol, pid, tables)),
                          progress=lambda line: None)
    got = {s: r["harrell"]["c"] for s, r in simulated.results["raw"].heldout.items()}
    assert got == {s: r["harrell"]["c"] for s, r in reference.results["raw"].heldout.items()}
    assert simulated.rounds_by_phase == reference.rounds_by_phase

    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("ncctg-lung")
    (parent,) = client.search_runs([experiment.experiment_id], "tags.role = 'study'")
    assert parent.data.metrics["pooled_harrell_c"] == pytest.approx(simulated.results["raw"].pooled["harrell_c"].estimate)
    assert parent.data.tags["registered_variant"] == "raw"
