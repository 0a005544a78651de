"""Flower glue without a deployment: wire codec, approvals, audit log, keys, certificates, command lines,
the ClientApp's reply path (with the real site study code), the SuperNode supervisor, CLI error messages."""

from __future__ import annotations

import dataclasses

import json
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import numpy as np
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from flwr.app import Message, Metadata

from coordinator.flower.certs import check_certificate_folder, create_certificates
from coordinator.flower.superlink import superlink_command
from flowerglue.wire import PayloadError, from_record, to_record
from site_client.flower.approvals import ApprovalsError, approve, approved_ids
from site_client.flower.audit import AuditLogError, append_audit, audit_record, read_audit
from site_client.flower.client_app import FAILED_CODE, REFUSED_CODE, SiteSettings, respond
from site_client.flower.keys import generate_keypair
from site_client.flower.supernode import backoff_delays, node_config_toml, supernode_command, supervise
from tests.deployment.synthetic import write_protocol, write_sites

BIN = Path(sys.executable).parent


def test_flower_glue_wire_round_trip_is_lossless() -> None:
    rng = np.random.default_rng(3)
    payload = {
        "w": rng.normal(size=(3, 4)),
        "counts": np.array([5, 7], dtype=np.int64),
        "f32": rng.normal(size=2).astype(np.float32),
        "phase": "train",
        "n": 12,
        "lr": 0.1 + 1e-17,
        "ok": True,
        "names": ["a", "b"],
        "vals": [0.25, 1e-300],
        "ints": [1, 2, 3],
        "none": [],
        "scalar": np.float64(2.5),
    }
    back = from_record(to_record(payload))
    assert set(back) == set(payload)
    for key in ("w", "counts", "f32"):
        assert back[key].dtype == payload[key].dtype and back[key].shape == payload[key].shape
        assert back[key].tobytes() == payload[key].tobytes()
    for key in ("phase", "n", "lr", "ok", "names", "vals", "ints", "none"):
        assert back[key] == payload[key] and type(back[key]) is type(payload[key])
    assert back["scalar"] == 2.5 and type(back["scalar"]) is float


def test_flower_glue_wire_packs_every_array_into_one_flower_array() -> None:
    """Many small arrays (a calibration reply has hundreds) must travel as one Flower object, not one each."""
    rng = np.random.default_rng(5)
    payload = {f"hist/{i}": rng.integers(0, 9, size=(i % 4 + 1, 3)).astype(np.int64) for i in range(700)}
    payload["zero_d"] = np.array(3.5)
    payload["empty"] = np.zeros((0, 4), dtype=np.float32)
    payload["flags"] = np.array([True, False])
    payload["big_endian"] = np.arange(3, dtype=">f8")
    record = to_record(payload)
    assert len(record.array_records["arrays"]) == 1
    back = from_record(record)
    assert set(back) == set(payload)
    for key, value in payload.items():
        assert back[key].dtype == value.dtype and back[key].shape == value.shape, key
        assert np.array_equal(back[key], value), key


def test_flower_glue_wire_refuses_a_buffer_that_does_not_match_its_layout() -> None:
    record = to_record({"a": np.arange(4.0), "b": np.arange(2.0)})
    damaged = to_record({"a": np.arange(4.0)})
    record.array_records["arrays"] = damaged.array_records["arrays"]
    with pytest.raises(PayloadError, match="buffer too short for key 'b'"):
        from_record(record)


@pytest.mark.parametrize(
    ("value", "words"),
    [
        (np.array(["a", None], dtype=object), "object arrays"),
        ({"nested": 1}, "unsupported type dict"),
        ([1, "a"], "one scalar type"),
    ],
)
def test_flower_glue_wire_rejects_values_that_cannot_travel(value: object, words: str) -> None:
    with pytest.raises(PayloadError, match=words) as info:
        to_record({"bad/key": value})
    assert "bad/key" in str(info.value)


def test_flower_glue_approvals_store(tmp_path: Path) -> None:
    path = tmp_path / "approvals.json"
    assert approved_ids(path) == set()
    assert approve(path, "abc", "study", "1") is True
    assert approve(path, "abc", "study", "1") is False
    assert approve(path, "def", "study", "2") is True
    assert approved_ids(path) == {"abc", "def"}
    path.write_text("{not json")
    with pytest.raises(ApprovalsError, match=str(path)):
        approved_ids(path)


def test_flower_glue_audit_log_records_shapes_bytes_and_values(tmp_path: Path) -> None:
    payload = {"w": np.zeros((2, 3)), "site": "s1", "phase": "train", "n": 4}
    record = audit_record(7, "train", payload)
    assert record["arrays"] == {"w": {"shape": [2, 3], "dtype": "float64"}}
    assert record["values"] == {"site": "s1", "phase": "train", "n": 4}
    # 48 array bytes + one 8-byte int + UTF-8 strings + key names
    assert record["bytes"] == 48 + 8 + len("s1") + len("train") + len("w") + len("site") + len("phase") + len("n")
    append_audit(tmp_path, record)
    append_audit(tmp_path, audit_record(7, "evaluate", {"x": 1}))
    assert [r["phase"] for r in read_audit(tmp_path)] == ["train", "evaluate"]
    with open(tmp_path / "audit.jsonl", "a") as handle:
        handle.write('{"phase": "tra')
    with pytest.raises(AuditLogError, match="line 3"):
        read_audit(tmp_path)


def test_flower_glue_keygen_writes_p384_openssh_pair(tmp_path: Path) -> None:
    public = generate_keypair(tmp_path / "k")
    private = serialization.load_ssh_private_key((tmp_path / "k").read_bytes(), password=None)
    assert isinstance(private, ec.EllipticCurvePrivateKey) and private.curve.name == "secp384r1"
    text = public.read_text()
    assert text.startswith("ecdsa-sha2-nistp384 ")
    loaded = serialization.load_ssh_public_key(text.encode())
    assert loaded.public_numbers() == private.public_key().public_numbers()
    assert (tmp_path / "k").stat().st_mode & 0o777 == 0o600
    with pytest.raises(FileExistsError, match="already exists"):
        generate_keypair(tmp_path / "k")


def test_flower_glue_certificates_chain_to_the_ca(tmp_path: Path) -> None:
    create_certificates(tmp_path, ["study.example.org", "127.0.0.1"])
    ca = x509.load_pem_x509_certificate((tmp_path / "ca.crt").read_bytes())
    server = x509.load_pem_x509_certificate((tmp_path / "server.pem").read_bytes())
    server.verify_directly_issued_by(ca)  # raises when the signature or issuer is wrong
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "study.example.org" in san.get_values_for_type(x509.DNSName)
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    key = serialization.load_pem_private_key((tmp_path / "server.key").read_bytes(), password=None)
    assert key.public_key().public_numbers() == server.public_key().public_numbers()
    with pytest.raises(FileExistsError, match="already exist"):
        create_certificates(tmp_path, ["x"])
    (tmp_path / "server.key").unlink()
    with pytest.raises(FileNotFoundError, match="server.key"):
        check_certificate_folder(tmp_path)


def test_flower_glue_superlink_command_secure_by_default(tmp_path: Path) -> None:
    create_certificates(tmp_path, ["localhost"])
    secure = superlink_command("flower-superlink", tmp_path / "db", tmp_path, insecure=False)
    assert "--enable-supernode-auth" in secure and "--ssl-certfile" in secure and "--insecure" not in secure
    assert "--disable-runtime-dependency-installation" in secure and "--database" in secure
    plain = superlink_command("flower-superlink", tmp_path / "db", None, insecure=True)
    assert "--insecure" in plain and "--enable-supernode-auth" not in plain
    in_memory = superlink_command("flower-superlink", None, tmp_path, insecure=False)
    assert "--database" not in in_memory and "--enable-supernode-auth" in in_memory and "--ssl-keyfile" in in_memory


def test_flower_glue_node_config_is_quoted_toml(tmp_path: Path) -> None:
    odd = tmp_path / 'dir with "quotes" and spaces'
    settings = SiteSettings("site-1", odd / "f.csv", "features", odd / "work", odd / "p.yaml", odd / "a.json")
    parsed = tomllib.loads(node_config_toml(settings))
    assert parsed["site-name"] == "site-1" and parsed["data"] == str((odd / "f.csv").resolve())
    assert parsed["data-kind"] == "features" and parsed["approvals-path"] == str((odd / "a.json").resolve())
    with pytest.raises(ValueError, match="needs TLS"):
        supernode_command("h:1", tmp_path / "n.toml", 9094, key=tmp_path / "k", insecure=True, executable="x")


def test_flower_glue_supervisor_restarts_with_backoff() -> None:
    assert [round(d, 3) for d, _ in zip(backoff_delays(0.5, 3.0), range(5))] == [0.5, 1.0, 2.0, 3.0, 3.0]
    said: list[str] = []
    started = time.monotonic()
    code = supervise([sys.executable, "-c", "raise SystemExit(7)"], env={}, say=said.append,
                     initial_backoff_s=0.2, max_backoff_s=0.4, max_restarts=2)
    assert code == 7
    assert sum("SuperNode started" in line for line in said) == 3
    assert [line for line in said if "restarting in" in line] and "giving up after 2" in said[-1]
    assert time.monotonic() - started >= 0.2 + 0.4


def test_flower_glue_supervisor_ends_a_supernode_that_hangs_after_saying_goodbye(monkeypatch: pytest.MonkeyPatch) -> None:
    import site_client.flower.supernode as supernode

    monkeypatch.setattr(supernode, "HUNG_AFTER_S", 0.5)
    said: list[str] = []
    started = time.monotonic()
    hang = "import time; print('INFO: SuperNode terminated gracefully', flush=True); time.sleep(120)"
    supervise([sys.executable, "-c", hang], env={}, say=said.append, initial_backoff_s=0.1, max_restarts=0)
    assert time.monotonic() - started < 30
    assert any("still running" in line and "stopping it" in line for line in said), said


def _message(payload: dict, run_id: int = 99) -> Message:
    metadata = Metadata(run_id=run_id, message_id="m-1", src_node_id=1, dst_node_id=2, reply_to_message_id="",
                        group_id="", created_at=time.time(), ttl=600.0, message_type="query")
    return Message(content=to_record(payload), metadata=metadata)


@pytest.fixture()
def one_site(tmp_path: Path) -> tuple[SiteSettings, str, Path]:
    data = write_sites(tmp_path / "data", {"site-q": 40})["site-q"]
    protocol = tmp_path / "p.yaml"
    identifier = write_protocol(protocol)
    settings = SiteSettings("site-q", data, "features", tmp_path / "work", protocol, tmp_path / "work" / "approvals.json")
    return settings, identifier, protocol


def test_flower_glue_client_app_refuses_unapproved_protocol(one_site: tuple[SiteSettings, str, Path]) -> None:
    settings, identifier, _ = one_site
    reply = respond(_message({"phase": "handshake", "protocol_id": identifier}), settings)
    assert reply.has_error() and reply.error.code == REFUSED_CODE
    assert "site-q" in reply.error.reason and identifier in reply.error.reason
    assert identifier in (settings.work_dir / "site.log").read_text()
    [record] = read_audit(settings.work_dir)
    assert record["status"] == "error" and identifier in record["values"]["error"] and record["run_id"] == 99


def test_flower_glue_client_app_answers_and_audits(one_site: tuple[SiteSettings, str, Path]) -> None:
    settings, identifier, _ = one_site
    approve(settings.approvals_path, identifier, "deployment-test", "1")
    reply = respond(_message({"phase": "handshake", "protocol_id": identifier}), settings)
    assert not reply.has_error(), reply.error
    payload = from_record(reply.content)
    assert payload["site"] == "site-q" and payload["phase"] == "handshake"
    [record] = read_audit(settings.work_dir)
    assert record["phase"] == "handshake" and record["status"] == "reply" and sorted(payload) == record["keys"]
    broken = respond(_message({"phase": "no-such-phase", "protocol_id": identifier}), settings)
    assert broken.has_error() and broken.error.code == REFUSED_CODE
    assert broken.error.reason == "site site-q refused no-such-phase (not-in-contract): the phase is not in the message contract"
    lost = dataclasses.replace(settings, protocol_path=settings.work_dir / "moved-away.yaml")
    failed = respond(_message({"phase": "handshake", "protocol_id": identifier}), lost)
    assert failed.has_error() and failed.error.code == FAILED_CODE
    assert failed.error.reason == "site site-q: phase handshake failed (internal-error); details in the site's log"
    assert "moved-away.yaml" in (settings.work_dir / "site.log").read_text()


def _cli(tool: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / tool), *args], capture_output=True, text=True, cwd=cwd, timeout=120)


def test_flower_glue_cli_error_messages(tmp_path: Path, one_site: tuple[SiteSettings, str, Path]) -> None:
    settings, _, protocol = one_site
    result = _cli("coordinator", "start", "--state-dir", str(tmp_path / "st"), "--port", "1", cwd=tmp_path)
    assert result.returncode == 2 and "ca.crt" in result.stderr and "coordinator certs" in result.stderr
    both = _cli("site-client", "join", "--coordinator", "h:1", "--site-name", "s", "--protocol", str(protocol),
                "--manifest", str(settings.data), "--features", str(settings.data), "--insecure", cwd=tmp_path)
    assert both.returncode == 2 and "exactly one of --manifest" in both.stderr
    no_ca = _cli("site-client", "join", "--coordinator", "h:1", "--site-name", "s", "--protocol", str(protocol),
                 "--features", str(settings.data), cwd=tmp_path)
    assert no_ca.returncode == 2 and "--root-certificates" in no_ca.stderr
    rsa = tmp_path / "rsa.pub"
    rsa.write_text("ssh-rsa AAAAB3NzaC1yc2E test\n")
    bad_key = _cli("coordinator", "register-site", "s", str(rsa), "--state-dir", str(tmp_path / "st"), cwd=tmp_path)
    assert bad_key.returncode == 2 and "ECDSA P-384" in bad_key.stderr and str(rsa) in bad_key.stderr
    keys = _cli("site-client", "keygen", "--out", str(tmp_path / "keys"), "--name", "k1", cwd=tmp_path)
    assert keys.returncode == 0 and (tmp_path / "keys" / "k1.pub").read_text().startswith("ecdsa-sha2-nistp384 ")
    empty = _cli("site-client", "audit", "--work-dir", str(tmp_path / "nowhere"), cwd=tmp_path)
    assert empty.returncode == 0 and "no messages have left this site" in empty.stdout
    approved = _cli("site-client", "approve", str(protocol), "--work-dir", str(tmp_path / "w"), cwd=tmp_path)
    assert approved.returncode == 0 and "approved" in approved.stdout
    assert json.loads((tmp_path / "w" / "approvals.json").read_text())["approved"][0]["study"] == "deployment-test"


def test_flower_glue_a_reply_that_cannot_be_decoded_drops_its_site_and_never_ends_the_server_app() -> None:
    from coordinator.flower.transport import GridTransport
    from coordinator.study import SiteFailure

    record = to_record({"a": np.arange(4.0), "b": np.arange(2.0)})
    record.array_records["arrays"] = to_record({"a": np.arange(4.0)}).array_records["arrays"]
    reply = _message({})
    reply.content = record
    failure = GridTransport(grid=None, protocol_id="0" * 64)._decode("site-q", "train", reply)  # type: ignore[arg-type]
    assert isinstance(failure, SiteFailure) and failure.site == "site-q"
    assert failure.message == ("site site-q sent a train reply that cannot be decoded: PayloadError: "
                               "packed arrays: buffer too short for key 'b' (32 bytes, need 48)")
