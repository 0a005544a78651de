"""On a real loopback deployment (SuperLink, SuperNodes with TLS and keys, `site-client join`): a study
approved for one run completes and every site's audit log verifies; a second run of the same protocol is
refused by every site's privacy budget through its SuperNode, audited as a refusal, and recorded in the ledger;
`site-client approve --runs` renews it and `site-client revoke` withdraws it."""

from __future__ import annotations

import json

import pytest

from deployment.harness import Deployment, process_groups_alive
from deployment.synthetic import write_protocol, write_sites
from site_client.flower.audit import read_audit
from site_client.privacy import Ledger

SITES = {"site-a": 40, "site-b": 44, "site-c": 48}


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory):
    import time

    root = tmp_path_factory.mktemp("privacy-deployment")
    dep = Deployment(root)
    data = write_sites(root / "data", SITES)
    protocol = root / "study.yaml"
    dep.protocol_id = write_protocol(protocol, rounds=2, min_sites=3, round_timeout_s=300)
    dep.protocol = protocol
    try:
        dep.start_superlink()
        for name in SITES:
            dep.add_site(name, data[name])
            result = dep.cli("site-client", "approve", str(protocol), "--runs", "1",
                             "--work-dir", str(dep.sites[name].work_dir))
            assert "approved for 1 study run(s)" in result.stdout
            dep.join(name, protocol)
        dep.wait_online(3)
        yield dep
    finally:
        dep.close()
        deadline = time.monotonic() + 30
        while process_groups_alive(dep.pgids) and time.monotonic() < deadline:
            time.sleep(1)


def test_one_approved_run_completes_audits_verify_and_a_second_run_is_refused(deployment: Deployment) -> None:
    first = deployment.run(deployment.protocol, "--wait-for", "3")
    assert first.returncode == 0, (first.stdout + first.stderr)[-3000:]
    for name, site in deployment.sites.items():
        verified = deployment.cli("site-client", "audit", "--verify", "--work-dir", str(site.work_dir))
        assert "audit log intact" in verified.stdout, verified.stdout + verified.stderr
        directions = {r["direction"] for r in read_audit(site.work_dir)}
        assert directions == {"in", "out"}
    second = deployment.run(deployment.protocol, "--wait-for", "3")
    text = second.stdout + second.stderr
    assert second.returncode == 1, text[-3000:]
    assert "studies per approval" in text, text[-3000:]
    for name, site in deployment.sites.items():
        ledger = Ledger.read(site.work_dir, deployment.protocol_id)
        assert [r["budget"] for r in ledger["refusals"]][:1] == ["studies per approval"], json.dumps(ledger)[-2000:]
        assert sum(len(runs) for runs in ledger["grants"].values()) == 1
        refused = [r for r in read_audit(site.work_dir) if r["status"] != "reply" and r["direction"] == "out"]
        assert refused and "studies per approval" in refused[-1]["values"]["error"]
        assert deployment.cli("site-client", "audit", "--verify", "--work-dir", str(site.work_dir)).returncode == 0
    revoked = deployment.cli("site-client", "revoke", str(deployment.protocol), "--work-dir",
                             str(deployment.sites["site-a"].work_dir))
    assert "revoked" in revoked.stdout
