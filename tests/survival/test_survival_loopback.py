"""A survival study on the real engine on loopback: SuperLink, one SuperNode per site (three NCCTG lung
institutions), `coordinator run` into MLflow. Kept to three sites: every Flower round trip costs seconds."""

from __future__ import annotations

import time

import pytest

from site_client.flower.audit import read_audit
from tests.deployment.harness import Deployment, process_groups_alive

from .study_sites import lung_frame, site_tables, write_study

pytestmark = [pytest.mark.deployment, pytest.mark.timeout(1500)]


def test_survival_study_over_superlink_and_supernodes_into_mlflow(tmp_path) -> None:
    from mlflow import MlflowClient

    frame = lung_frame()
    largest = frame.groupby("site").size().sort_values(ascending=False).index[:3]
    tables = site_tables(frame[frame.site.isin(largest)])
    protocol, sites_dir = write_study(tmp_path, tables)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    dep = Deployment(tmp_path / "deployment")
    dep.root.mkdir()
    try:
        dep.start_superlink()
        for name in tables:
            dep.add_site(name, sites_dir / name / "features.csv")
            dep.approve(name, protocol)
            dep.join(name, protocol)
        dep.wait_online(len(tables))
        done = dep.run(protocol, "--wait-for", str(len(tables)), "--mlflow-uri", uri, timeout=1200)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        for name, table in tables.items():
            records = read_audit(dep.sites[name].work_dir)
            assert {"handshake", "cox", "cox-baseline", "cox-evaluate"} <= {r["phase"] for r in records}
            assert not {"train", "calibrate", "evaluate"} & {r["phase"] for r in records}
            for record in records:
                for key, array in record["arrays"].items():
                    assert len(table) not in array["shape"], f"{name} sent {key} shaped {array['shape']}"
    finally:
        dep.close()
        deadline = time.monotonic() + 30
        while process_groups_alive(dep.pgids) and time.monotonic() < deadline:
            time.sleep(1)
    client = MlflowClient(tracking_uri=uri)
    (parent,) = client.search_runs([client.get_experiment_by_name("ncctg-lung").experiment_id], "tags.role = 'study'")
    assert parent.data.metrics["pooled_harrell_c_k"] == 3
    assert parent.data.tags["outcome"] == "survival" and "flower_run_id" in parent.data.tags
