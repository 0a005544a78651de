"""The images a hospital and a coordinator run: built from this checkout by deploy/build-images.sh on a real
Docker daemon, then used the way docs/containers.md says.

Checks: ``--version`` of both images equals the project's version; they run as an unprivileged user;
``site-client check`` passes on a small demo cohort mounted read-only into the site image (and names the row
of a broken manifest); and a short study (TLS + site authentication) runs between a coordinator container and
two site containers on a Docker network, its results logged to an MLflow server started from the coordinator
image. Skipped, with the reason, where no Docker daemon answers or can be started; CI (.ci/run) starts one and
sets FEDRADVAL_REQUIRE_DOCKER=1, so there it fails instead of skipping.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path

import pytest
import yaml

from demo.cohort import generate_cohort
from demo.processes import free_port
from protocols import parse_protocol
from protocols import protocol_id as identify
from site_client.flower.audit import read_audit
from tests.deployment import docker_harness as dh
from tests.deployment.synthetic import protocol_yaml, write_sites

pytestmark = [pytest.mark.deployment, pytest.mark.timeout(5400)]

DEMO_PROTOCOL = dh.REPO_ROOT / "protocols" / "examples" / "demo_study.yaml"
SIZES = {"site-a": 44, "site-b": 52}


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory):
    scratch = tmp_path_factory.mktemp("docker")
    try:
        daemon = dh.Daemon.find_or_start(scratch)
    except dh.DockerUnavailable as reason:
        if os.environ.get(dh.REQUIRE_ENV) == "1":
            pytest.fail(f"{dh.REQUIRE_ENV}=1 but Docker is unavailable: {reason}")
        pytest.skip(f"container images not tested: {reason}")
    try:
        yield dh.build_images(scratch / "build.log")
    except dh.DockerUnavailable as reason:
        if os.environ.get(dh.REQUIRE_ENV) == "1":
            pytest.fail(f"{dh.REQUIRE_ENV}=1 but the images cannot be built here: {reason}")
        pytest.skip(f"container images not tested: {reason}")
    finally:
        daemon.stop()


@pytest.mark.parametrize("role", ["site", "coordinator"])
def test_version_is_the_smoke_test_and_the_user_is_not_root(images: dict[str, str], role: str) -> None:
    done = dh.run_once(images[role], "--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"fedradval {dh.project_version()} (flwr 1.41."), done.stdout
    who = dh.run_once(images[role], "-u", entrypoint="id")
    assert who.returncode == 0 and who.stdout.strip() == str(dh.IMAGE_UID), who.stdout + who.stderr


def test_site_image_holds_no_test_tools_and_no_ray(images: dict[str, str]) -> None:
    probe = ("import importlib.util as u; "
             "print(*[m for m in ('pytest', 'neuroCombat', 'ray', 'mlflow') if u.find_spec(m)], sep=',')")
    done = dh.run_once(images["site"], "-c", probe, entrypoint="python3")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "", f"the site image installs {done.stdout.strip()}"


def test_site_check_on_a_mounted_cohort(images: dict[str, str], tmp_path: Path) -> None:
    cohort = tmp_path / "cohort"
    generate_cohort(cohort, sites=2, cases_per_site=16, seed=7, progress=lambda _: None)
    (cohort / "study.yaml").write_bytes(DEMO_PROTOCOL.read_bytes())
    for path in [cohort, *cohort.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)  # readable by the image's user, mounted read-only
    mounts = {cohort: "/data:ro"}
    done = dh.run_once(images["site"], "check", "--manifest", "/data/site_a/manifest.csv",
                       "--protocol", "/data/study.yaml", "--json", mounts=mounts)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["ok"] and report["rows_checked"] == 16

    manifest = (cohort / "site_a" / "manifest.csv").read_text().splitlines()
    fields = manifest[3].split(",")
    fields[1] = "images/absent.nii.gz"
    (cohort / "site_a" / "broken.csv").write_text("\n".join([*manifest[:3], ",".join(fields), *manifest[4:]]) + "\n")
    (cohort / "site_a" / "broken.csv").chmod(0o644)
    done = dh.run_once(images["site"], "check", "--manifest", "/data/site_a/broken.csv",
                       "--protocol", "/data/study.yaml", "--json", mounts=mounts)
    assert done.returncode == 1, done.stdout + done.stderr
    errors = json.loads(done.stdout)["errors"]
    assert any(e["line"] == 4 and "absent.nii.gz" in e["message"] for e in errors), errors


def test_study_between_coordinator_and_two_site_containers(images: dict[str, str], tmp_path: Path) -> None:
    site_image, coordinator_image = images["site"], images["coordinator"]
    study = tmp_path / "study"
    data = write_sites(study / "data", SIZES)
    # Two sites: each leave-one-site-out fold trains on one site, where ComBat has a single batch; so no ComBat.
    text = protocol_yaml(rounds=2, min_sites=2, round_timeout_s=300).replace("combat: true", "combat: false")
    assert "combat: false" in text
    (study / "study.yaml").write_text(text, encoding="utf-8")
    protocol_id = identify(parse_protocol(yaml.safe_load(text)))
    for path in [study, *study.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    state = dh.owned_by_image_user(tmp_path / "coordinator")
    mlflow_store = dh.owned_by_image_user(tmp_path / "mlflow")
    keys = {name: dh.owned_by_image_user(tmp_path / "keys" / name) for name in SIZES}
    work = {name: dh.owned_by_image_user(tmp_path / "sites" / name) for name in SIZES}

    # Each site once: its key pair, and its approval of the protocol.
    for name in SIZES:
        made = dh.run_once(site_image, "keygen", "--out", "/keys", "--name", name, mounts={keys[name]: "/keys"})
        assert made.returncode == 0, made.stdout + made.stderr
        approved = dh.run_once(site_image, "approve", "/study/study.yaml", "--work-dir", "/work",
                               mounts={work[name]: "/work", study: "/study:ro"})
        assert approved.returncode == 0 and protocol_id in approved.stdout + approved.stderr, approved.stdout + approved.stderr
    # The coordinator: certificates naming the host the sites dial, the SuperLink, then each site's public key.
    certs = dh.run_once(coordinator_image, "certs", "/work/certs", "--host", "coordinator", mounts={state: "/work"})
    assert certs.returncode == 0, certs.stdout + certs.stderr

    network = dh.Network(f"fedradval-test-{uuid.uuid4().hex[:8]}")
    mlflow_port = free_port()
    try:
        dh.docker("run", "-d", "--name", f"{network.name}-mlflow", "--network", network.name, "--network-alias", "mlflow",
                  "-p", f"127.0.0.1:{mlflow_port}:5000", "-v", f"{mlflow_store}:/work", "--entrypoint", "mlflow",
                  coordinator_image, "server", "--host", "0.0.0.0", "--port", "5000", "--workers", "1",
                  "--backend-store-uri", "sqlite:////work/mlflow.db", "--artifacts-destination", "/work/artifacts",
                  "--allowed-hosts", "mlflow:5000,localhost:*,127.0.0.1:*")
        network.containers.append(f"{network.name}-mlflow")
        coordinator = network.start(f"{network.name}-coordinator", coordinator_image, "start", "--state-dir", "/work",
                                    "--host", "0.0.0.0", "--port", "8000",
                                    mounts={state: "/work", study: "/study:ro", tmp_path / "keys": "/keys:ro"},
                                    alias="coordinator")
        deadline = time.monotonic() + 120
        while dh.docker("exec", coordinator, "coordinator", "status", "--state-dir", "/work", check=False).returncode != 0:
            assert time.monotonic() < deadline, f"the SuperLink did not answer in 120 s:\n{network.logs(coordinator)[-3000:]}"
            time.sleep(2)
        for name in SIZES:
            dh.docker("exec", coordinator, "coordinator", "register-site", name, f"/keys/{name}/{name}.pub",
                      "--state-dir", "/work")
        for name in SIZES:
            network.start(f"{network.name}-{name}", site_image, "join", "--coordinator", "coordinator:8000",
                          "--site-name", name, "--features", "/data/features.csv",
                          "--protocol", "/study/study.yaml", "--root-certificates", "/certs/ca.crt",
                          "--key", f"/keys/{name}", "--work-dir", "/work", "--max-backoff", "10",
                          mounts={work[name]: "/work", keys[name]: "/keys:ro", state / "certs": "/certs:ro",
                                  data[name].parent: "/data:ro", study / "study.yaml": "/study/study.yaml:ro"})
        run = dh.docker("exec", coordinator, "coordinator", "run", "--protocol", "/study/study.yaml",
                        "--state-dir", "/work", "--wait-for", "2", "--wait-timeout", "600",
                        "--mlflow-uri", "http://mlflow:5000", timeout=1800, check=False)
        diagnosis = "\n".join(f"--- {c}\n{network.logs(c)[-2500:]}" for c in network.containers)
        assert run.returncode == 0, f"{run.stdout[-3000:]}\n{run.stderr[-3000:]}\n{diagnosis}"
        assert "sites: site-a, site-b" in run.stdout + run.stderr, run.stdout + run.stderr

        # Each site's own record, read from its work volume on the host: it answered every phase up to evaluate.
        for name in SIZES:
            phases = {r["phase"] for r in read_audit(work[name])}
            assert {"handshake", "train", "evaluate"} <= phases, (name, phases)
        # The results reached the MLflow server in the coordinator image.
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri=f"http://127.0.0.1:{mlflow_port}")
        deadline = time.monotonic() + 60
        parents = []
        while not parents and time.monotonic() < deadline:
            experiments = client.search_experiments()
            parents = client.search_runs([e.experiment_id for e in experiments], f"tags.protocol_id = '{protocol_id}'")
            time.sleep(1)
        assert parents, "no MLflow run carries the study's protocol id"
    finally:
        network.close()
