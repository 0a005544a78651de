"""``coordinator simulate``: the same ServerApp and ClientApp on Flower's simulation engine give exactly the
study that the in-process transport (site code called directly, no Flower) gives on the same data."""

from __future__ import annotations

from pathlib import Path

import pytest

from coordinator.flower.simulation import SimulationSetupError, discover_sites, simulate
from coordinator.study import run_study
from protocols import load_protocol, protocol_id
from site_client.flower.audit import read_audit
from site_client.study import SiteContext
from tests.deployment.synthetic import write_protocol, write_sites
from tests.federation.inprocess import InProcessTransport


def test_flower_simulation_discovery_errors_name_the_folder(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    with pytest.raises(SimulationSetupError, match=r"site folder .*a holds none of manifest.csv"):
        discover_sites(tmp_path)
    with pytest.raises(SimulationSetupError, match="is not a folder"):
        discover_sites(tmp_path / "missing")


@pytest.mark.deployment
@pytest.mark.timeout(1200)
def test_flower_simulation_matches_the_in_process_study(tmp_path: Path) -> None:
    sizes = {"sim-a": 44, "sim-b": 52, "sim-c": 40}
    data = write_sites(tmp_path / "sites", sizes)
    protocol_path = tmp_path / "study.yaml"
    write_protocol(protocol_path, rounds=2, min_sites=3, round_timeout_s=600)
    result = simulate(protocol_path, tmp_path / "sites", tmp_path / "work")
    assert result.error is None, result.error
    simulated = result.outcome
    assert sorted(simulated.sites) == sorted(sizes)
    # identify (node ids -> names: the simulation engine has no names) + the study's own rounds
    assert result.rounds == simulated.rounds + 1

    protocol = load_protocol(protocol_path)
    pid = protocol_id(protocol)
    contexts = {
        name: SiteContext(site_name=name, protocol=protocol, protocol_id=pid, approved_ids={pid}, data=path,
                          data_kind="features", work_dir=tmp_path / "inprocess" / name)
        for name, path in data.items()
    }
    reference = run_study(protocol, pid, InProcessTransport(contexts), progress=lambda line: None)
    for variant, expected in reference.results.items():
        got = {f.heldout_site: f.before.auc.auc for f in simulated.results[variant].folds}
        want = {f.heldout_site: f.before.auc.auc for f in expected.folds}
        assert got == want, (variant, got, want)
    assert simulated.bytes_received == reference.bytes_received
    for name in sizes:
        assert {r["phase"] for r in read_audit(tmp_path / "work" / name)} >= {"identify", "handshake", "train", "evaluate"}
