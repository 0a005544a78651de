"""No coordinator code at a site (issue 12.3), on a real loopback deployment (TLS, SuperNode auth).

The coordinator ships a FAB (Flower App Bundle) with every run. Flower's own ClientApp process would unpack
it, put it first on ``sys.path`` and import the component it names. Two attack bundles, launched with the
real ``flwr run`` against a SuperLink with three real sites (two serving ClientApps from warm forks, one
with ``--cold-clientapps``): one carries a package ``radiomics/`` that writes a marker file when imported
(the name of a dependency the study imports lazily during extraction), one names its own ``clientapp``.
Each is refused at every site before anything of it runs: the study fails with the site's refusal, no
marker file exists, and no FAB was unpacked in any site's FLWR_HOME. The legitimate study then runs to the
end on the same sites, so the refusals come from the bundle and not from a broken deployment.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from coordinator.commands.run import follow_run
from coordinator.flower.flwr_cli import APP_DIR, start_run
from coordinator.flower.server_app import encode_protocol
from coordinator.flower.state import flwr_home, runs_dir
from tests.deployment.harness import Deployment, process_groups_alive
from tests.deployment.synthetic import write_protocol, write_sites

pytestmark = [pytest.mark.deployment, pytest.mark.timeout(1800)]

SIZES = {"site-a": 40, "site-b": 44, "site-c": 48}
COLD = "site-c"
MARKER_CODE = """import os, pathlib
_folder = pathlib.Path({folder!r})
_folder.mkdir(parents=True, exist_ok=True)
(_folder / f"ran-in-{{os.getpid()}}").write_text(os.environ.get("FLWR_HOME", "?"))
"""


def shadowing_bundle(folder: Path, markers: Path) -> Path:
    """The study app folder (installed components) plus a ``radiomics`` package that writes a marker."""
    shutil.copytree(APP_DIR, folder)
    (folder / "radiomics").mkdir()
    (folder / "radiomics" / "__init__.py").write_text(MARKER_CODE.format(folder=str(markers)))
    return folder


def other_component_bundle(folder: Path, clientapp: str) -> Path:
    """The study app folder whose pyproject.toml names another ``clientapp`` (no other file)."""
    shutil.copytree(APP_DIR, folder)
    config = folder / "pyproject.toml"
    text = config.read_text()
    assert 'clientapp = "site_client.flower.client_app:app"' in text
    config.write_text(text.replace('clientapp = "site_client.flower.client_app:app"', f'clientapp = "{clientapp}"'))
    return folder


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("site-confinement")
    dep = Deployment(root)
    data = write_sites(root / "data", SIZES)
    protocol = root / "study.yaml"
    write_protocol(protocol, rounds=1, min_sites=3, round_timeout_s=120)
    dep.protocol = protocol
    try:
        dep.start_superlink()
        for name in SIZES:
            dep.add_site(name, data[name])
            dep.approve(name, protocol)
            dep.join(name, protocol, extra=("--cold-clientapps",) if name == COLD else ())
        dep.wait_online(len(SIZES))
        yield dep
    finally:
        dep.close()
        deadline = time.monotonic() + 30
        while process_groups_alive(dep.pgids) and time.monotonic() < deadline:
            time.sleep(1)
        assert not process_groups_alive(dep.pgids)


def _launch(dep: Deployment, app_dir: Path) -> int:
    return start_run(flwr_home(dep.state), {
        "protocol-b64": encode_protocol(dep.protocol.read_text(encoding="utf-8")), "protocol-id": "",
        "mlflow-uri": "", "status-dir": str(runs_dir(dep.state)), "wait-for": len(SIZES), "wait-timeout-s": 120.0,
    }, app_dir=app_dir)


def _assert_refused_everywhere(dep: Deployment, run_id: int, markers: Path, words: str) -> None:
    assert follow_run(flwr_home(dep.state), dep.state, run_id, poll_s=2) == 1
    status = dep.study_status(run_id)
    assert status.get("state") == "failed" and "app bundle" in status.get("error", ""), json.dumps(status)[-2000:]
    assert not markers.exists() or not list(markers.iterdir()), [p.read_text() for p in markers.iterdir()]
    for name, site in dep.sites.items():
        text = site.log.read_text(errors="replace")
        assert "refused the coordinator's app bundle before running anything" in text and words in text, \
            f"{name}: {text[-3000:]}"
        apps = site.work_dir / "flwr-home" / "apps"
        assert not apps.exists() or not any(apps.iterdir()), f"{name} unpacked a FAB: {list(apps.iterdir())}"


def test_a_bundle_carrying_a_shadowing_package_is_refused_and_nothing_of_it_runs(deployment: Deployment) -> None:
    markers = deployment.root / "markers-shadow"
    bundle = shadowing_bundle(deployment.root / "attack-shadow", markers)
    _assert_refused_everywhere(deployment, _launch(deployment, bundle), markers, "radiomics/__init__.py")


def test_a_bundle_naming_another_clientapp_is_refused(deployment: Deployment) -> None:
    """An installed object that is not the site's ClientApp (`flwr run` checks that the name exists)."""
    bundle = other_component_bundle(deployment.root / "attack-component", "coordinator.flower.server_app:app")
    _assert_refused_everywhere(deployment, _launch(deployment, bundle), deployment.root / "no-markers",
                               "names components")


def test_the_installed_study_app_still_runs_on_the_same_sites(deployment: Deployment) -> None:
    run_id = _launch(deployment, APP_DIR)
    assert follow_run(flwr_home(deployment.state), deployment.state, run_id, poll_s=2) == 0, \
        json.dumps(deployment.study_status(run_id))[-3000:]
    for site in deployment.sites.values():
        text = site.log.read_text(errors="replace")
        assert "site SuperExec serving" in text
    assert "spawn mode" in deployment.sites[COLD].log.read_text()
    assert "fork mode" in deployment.sites["site-a"].log.read_text()


def _acquire_task(port: int, secret: bytes | None) -> object:
    """One AcquireTask call on a site's Runtime API, as a SuperExec makes it (signed when ``secret``)."""
    from flwr.proto.runtime_pb2 import AcquireTaskRequest
    from flwr.supercore.interceptors import RuntimeVersionHttpInterceptor, SuperExecAuthHttpInterceptor
    from flwr.supercore.runtime import RuntimeHttpClient

    interceptors: list[object] = [RuntimeVersionHttpInterceptor(component_name="SuperExec")]
    if secret is not None:
        interceptors.append(SuperExecAuthHttpInterceptor(
            master_secret=secret, protected_methods=frozenset({"/flwr.proto.Runtime/AcquireTask"})))
    client = RuntimeHttpClient.from_server_address(server_address=f"127.0.0.1:{port}", insecure=True,
                                                   root_certificates=None, interceptors=interceptors)
    try:
        return client.AcquireTask(AcquireTaskRequest())
    finally:
        client.close()


def test_the_local_runtime_api_serves_tasks_only_to_the_site_superexec(deployment: Deployment) -> None:
    """Another local user reaching 127.0.0.1:<port> cannot take the site's tasks (and their tokens)."""
    site = deployment.sites["site-a"]
    secret_file = site.work_dir / "superexec-auth.secret"
    assert secret_file.stat().st_mode & 0o777 == 0o600 and site.work_dir.stat().st_mode & 0o777 == 0o700
    with pytest.raises(Exception, match="401 Unauthorized"):
        _acquire_task(site.port, None)
    with pytest.raises(Exception, match="401 Unauthorized"):
        _acquire_task(site.port, b"a guessed secret")
    _acquire_task(site.port, secret_file.read_bytes())  # the site's own SuperExec is let in
