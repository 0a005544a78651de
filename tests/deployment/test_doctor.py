"""``site-client doctor`` and ``coordinator doctor`` against a real loopback SuperLink (TLS + SuperNode auth).

The server certificate names 127.0.0.1 only, so dialling ``localhost`` is a host-name mismatch. Each cause
of "the site cannot connect" gets its own line: a wrong ca.crt, a host name the certificate does not list,
an unregistered key, a registered key; Flower alone ends the first and the third with the same exit code.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from coordinator.flower.certs import create_certificates
from site_client.flower.keys import generate_keypair
from tests.deployment.harness import Deployment

pytestmark = [pytest.mark.deployment, pytest.mark.timeout(900)]

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("doctor")
    dep = Deployment(root)
    create_certificates(dep.certs, ["127.0.0.1"])  # before start: the SuperLink serves this certificate
    create_certificates(root / "other-ca", ["127.0.0.1"])  # a CA that is not the study's
    try:
        dep.start_superlink()
        dep.add_site("site-good", root / "unused.csv")
        generate_keypair(root / "keys" / "site-unknown")
        yield dep
    finally:
        dep.close()


def _doctor(dep: Deployment, *args: str) -> tuple[int, dict[str, str]]:
    result = subprocess.run([str(BIN / "site-client"), "doctor", "--work-dir", str(dep.root / "site-work"), *args],
                            capture_output=True, text=True, timeout=300, cwd=dep.root, env=dep.env(dep.root / "h"))
    lines = {}
    for line in result.stdout.splitlines():
        status, _, rest = line.partition(" ")
        name, _, detail = rest.strip().partition(": ")
        if status in ("OK", "FIX", "WARN", "INFO"):
            lines[name] = f"{status} {detail}"
    assert result.returncode == (1 if any(v.startswith("FIX") for v in lines.values()) else 0), result.stdout
    return result.returncode, lines


def test_a_registered_key_and_the_study_ca_pass(deployment: Deployment) -> None:
    code, lines = _doctor(deployment, "--coordinator", deployment.address, "--root-certificates",
                          str(deployment.certs / "ca.crt"), "--key", str(deployment.sites["site-good"].key))
    for name in ("software", "resolve", "reach", "tls", "key"):
        assert lines[name].startswith("OK"), lines
    assert "key registered" in lines["key"]
    node_status = {n.get("status") for n in deployment.nodes()}
    assert "online" not in node_status  # the probe leaves the node as it found it


def test_an_unregistered_key_is_named_as_such(deployment: Deployment) -> None:
    code, lines = _doctor(deployment, "--coordinator", deployment.address, "--root-certificates",
                          str(deployment.certs / "ca.crt"), "--key", str(deployment.root / "keys" / "site-unknown"))
    assert code == 1 and lines["tls"].startswith("OK")
    assert lines["key"].startswith("FIX") and "does not accept this key" in lines["key"] and "register-site" in lines["key"]


def test_a_wrong_ca_is_named_as_such_and_the_key_is_not_blamed(deployment: Deployment) -> None:
    code, lines = _doctor(deployment, "--coordinator", deployment.address, "--root-certificates",
                          str(deployment.root / "other-ca" / "ca.crt"), "--key", str(deployment.sites["site-good"].key))
    assert code == 1 and lines["reach"].startswith("OK")
    assert lines["tls"].startswith("FIX") and "is not signed by the CA in" in lines["tls"]
    assert "TLS-inspecting proxy" in lines["tls"] and "key" not in lines


def test_a_host_name_the_certificate_does_not_list_is_named(deployment: Deployment) -> None:
    code, lines = _doctor(deployment, "--coordinator", f"localhost:{deployment.port}", "--root-certificates",
                          str(deployment.certs / "ca.crt"))
    assert code == 1
    assert lines["tls"].startswith("FIX") and "valid for 127.0.0.1, not for localhost" in lines["tls"]


def test_nothing_listening_is_a_reach_problem(deployment: Deployment) -> None:
    from demo.processes import free_port

    code, lines = _doctor(deployment, "--coordinator", f"127.0.0.1:{free_port()}", "--root-certificates",
                          str(deployment.certs / "ca.crt"))
    assert code == 1 and lines["reach"].startswith("FIX") and "tls" not in lines


def test_protocol_approval_and_data_are_checked(deployment: Deployment, tmp_path: Path) -> None:
    from tests.deployment.synthetic import write_protocol, write_sites

    protocol = tmp_path / "study.yaml"
    write_protocol(protocol, rounds=1, min_sites=3)
    table = write_sites(tmp_path / "data", {"s": 30})["s"]
    code, lines = _doctor(deployment, "--coordinator", deployment.address, "--root-certificates",
                          str(deployment.certs / "ca.crt"), "--protocol", str(protocol), "--features", str(table))
    assert lines["protocol"].startswith("FIX") and "is not approved" in lines["protocol"]
    assert lines["data"].startswith("OK") and "30 rows, no problems" in lines["data"]
    deployment.sites["site-good"].work_dir = deployment.root / "site-work"
    deployment.approve("site-good", protocol)
    _, lines = _doctor(deployment, "--coordinator", deployment.address, "--root-certificates",
                       str(deployment.certs / "ca.crt"), "--protocol", str(protocol), "--features", str(table))
    assert lines["protocol"].startswith("OK") and "approved" in lines["protocol"]


def test_coordinator_doctor_checks_its_certificates_superlink_and_sites(deployment: Deployment) -> None:
    result = subprocess.run([str(BIN / "coordinator"), "doctor", "--state-dir", str(deployment.state)],
                            capture_output=True, text=True, timeout=300, cwd=deployment.root,
                            env=deployment.env(deployment.root / "h"))
    text = result.stdout
    assert "OK   certificates: server certificate signed by the study CA, for 127.0.0.1" in text, text
    assert "OK   tls:" in text and "OK   control api: answers" in text, text
    assert "sites: 1 registered; online: none; not online: site-good" in text, text
    assert result.returncode == (1 if "\nFIX" in "\n" + text else 0)
