"""Site operations without a deployment: the one module that adapts Flower (FAB rule, version checks), the
supported Flower range, the SuperExec supervisor and its bounded executor, the work folder's protection,
and the logging module. The same rules on a real loopback deployment: test_site_confinement.py."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import subprocess
import sys
import textwrap
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from flwr.cli.build import build_fab_from_files

from coordinator.flower.flwr_cli import APP_DIR
from protocols.logs import configure_logging
from flowerglue.versions import flower_version_problem, supported_flower_range
from site_client.flower import flower_internals
from site_client.flower.flower_internals import (
    INSTALLED_COMPONENTS,
    FabRefused,
    FlowerInternalsError,
    check_flower_internals,
    verify_fab,
)
from site_client.flower.state import prepare_work_dir, superexec_secret
from site_client.flower.supernode import CompanionWatch, supernode_command, supervise
from site_client.flower.warm_exec import BoundedExecutor

ROOT = Path(__file__).resolve().parents[2]
APP_TOML = (APP_DIR / "pyproject.toml").read_bytes()
MARKER = "import os, pathlib; pathlib.Path(os.environ['MARKER']).write_text('ran')\n"


def fab(extra: dict[str, bytes] | None = None, clientapp: str | None = None) -> bytes:
    """A FAB built by Flower's own builder from the shipped study app (+ ``extra`` files)."""
    toml = APP_TOML
    if clientapp is not None:
        toml = toml.replace(b'clientapp = "site_client.flower.client_app:app"', f'clientapp = "{clientapp}"'.encode())
    return build_fab_from_files({"pyproject.toml": toml, **(extra or {})})[0]


# -- the FAB rule ---------------------------------------------------------------------------------------

def test_installed_components_are_the_ones_the_coordinator_ships() -> None:
    shipped = tomllib.loads(APP_TOML.decode())["tool"]["flwr"]["app"]["components"]
    assert shipped == INSTALLED_COMPONENTS


def test_the_shipped_study_bundle_is_accepted() -> None:
    verify_fab(fab())


@pytest.mark.parametrize(
    ("bundle", "words"),
    [
        (lambda: fab({"radiomics/__init__.py": MARKER.encode()}), "carries files (radiomics/__init__.py)"),
        (lambda: fab({"README.md": b"hello"}), "carries files (README.md)"),
        (lambda: fab(clientapp="evil:app"), "names components"),
        (lambda: fab(clientapp="harmonisation.api:app"), "'harmonisation.api:app'"),
        (lambda: b"not a zip", "cannot be read (BadZipFile)"),
    ],
)
def test_a_bundle_that_is_not_the_installed_study_app_is_refused(bundle, words: str) -> None:
    with pytest.raises(FabRefused) as info:
        verify_fab(bundle())
    assert words in str(info.value)


def test_a_bundle_with_a_pyproject_only_in_a_subfolder_is_refused() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("app/pyproject.toml", APP_TOML)
    with pytest.raises(FabRefused, match="carries files"):
        verify_fab(buffer.getvalue())


# Flower's own ClientApp steps (install_from_fab, then get_load_client_app_fn's loader), in a fresh Python,
# either as Flower ships them or after confine_clientapp(). The bundle shadows the site's own package.
CLIENTAPP_STEPS = textwrap.dedent("""
    import hashlib, sys
    fab = open(sys.argv[1], "rb").read()
    if sys.argv[2] == "confined":
        from site_client.flower.flower_internals import confine_clientapp
        confine_clientapp()
    from flwr.supernode.runtime import run_clientapp as entry
    entry.install_from_fab(fab, skip_prompt=True)
    load = entry.get_load_client_app_fn(default_app_ref="", app_path=None, multi_app=True)
    load("fedradval/fedradval-study", "0.1.0", hashlib.sha256(fab).hexdigest())
""")


@pytest.mark.parametrize("mode", ["flower", "confined"])
def test_flowers_own_loader_runs_a_shadowing_bundle_and_the_confined_one_does_not(tmp_path: Path, mode: str) -> None:
    """The attack is real (Flower's loader imports the bundle's ``site_client``) and the site stops it."""
    shadow = {"site_client/__init__.py": MARKER.encode(), "site_client/flower/__init__.py": b"",
              "site_client/flower/client_app.py": b"from flwr.clientapp import ClientApp\napp = ClientApp()\n"}
    bundle = tmp_path / "study.fab"
    bundle.write_bytes(fab(shadow))
    marker = tmp_path / "marker"
    env = {**os.environ, "MARKER": str(marker), "FLWR_HOME": str(tmp_path / "home"), "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", CLIENTAPP_STEPS, str(bundle), mode], env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=300)
    if mode == "flower":
        assert result.returncode == 0 and marker.read_text() == "ran", result.stderr[-2000:]
    else:
        assert result.returncode != 0 and "FabRefused" in result.stderr, result.stderr[-2000:]
        assert not marker.exists() and not (tmp_path / "home" / "apps").exists()


# -- versions ---------------------------------------------------------------------------------------------

def test_the_supported_flower_range_is_the_pyproject_pin() -> None:
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pin = Requirement(next(d for d in dependencies if d.startswith("flwr")))
    assert set(supported_flower_range().split(",")) == {str(s) for s in pin.specifier}


def test_a_requirement_without_an_extra_marker_sets_the_range() -> None:
    requirements = ['flwr[simulation]>=1.41,<1.42; extra == "simulation"', "flwr<1.44,>=1.43", "numpy>=2"]
    assert set(supported_flower_range(requirements).split(",")) == {">=1.43", "<1.44"}


def test_a_flower_outside_the_range_gets_a_message_that_says_what_to_do() -> None:
    assert flower_version_problem("1.41.0", ">=1.41,<1.42") is None
    problem = flower_version_problem("1.42.0", ">=1.41,<1.42")
    assert problem is not None and "Flower (flwr) 1.42.0 is installed" in problem and "supports flwr>=1.41,<1.42 only" in problem


def test_join_refuses_to_start_with_an_unsupported_flower(tmp_path: Path) -> None:
    """The real `site-client join`, with only the version that the metadata reports replaced."""
    script = textwrap.dedent("""
        import sys
        import flowerglue.versions as versions
        versions.flower_version = lambda: "1.40.2"
        from site_client.cli import app
        sys.argv = ["site-client", *sys.argv[1:]]
        app()
    """)
    result = subprocess.run([sys.executable, "-c", script, "join", "--coordinator", "h:1", "--site-name", "s",
                             "--protocol", "p.yaml", "--features", __file__, "--insecure"],
                            capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert result.returncode == 78, result.stderr
    assert "Flower (flwr) 1.40.2 is installed" in result.stderr and "supports flwr" in result.stderr
    assert not (tmp_path / "fedradval-site").exists()


def test_flower_internals_that_moved_stop_the_site_with_their_names(monkeypatch: pytest.MonkeyPatch) -> None:
    check_flower_internals()  # the installed Flower is the adapted one
    import flwr.supernode.runtime.run_clientapp as entry

    monkeypatch.delattr(entry, "install_from_fab")
    with pytest.raises(FlowerInternalsError, match="run_clientapp.install_from_fab is missing"):
        check_flower_internals()
    monkeypatch.setitem(flower_internals.EXPECTED_INTERNALS[flower_internals.RUN_SUPEREXEC], "run_superexec",
                        ("runtime_api_address", "a_parameter_flower_never_had"))
    with pytest.raises(FlowerInternalsError, match="no longer takes a_parameter_flower_never_had"):
        check_flower_internals()


# -- supervision ------------------------------------------------------------------------------------------

def test_the_supernode_always_leaves_clientapps_to_the_site_superexec_with_the_secret(tmp_path: Path) -> None:
    command = supernode_command("h:1", tmp_path / "n.toml", 9100, root_certificates=tmp_path / "ca.crt",
                                key=tmp_path / "k", executable="x", superexec_auth_secret_file=tmp_path / "s")
    assert command[command.index("--isolation") + 1] == "process"
    assert command[command.index("--superexec-auth-secret-file") + 1] == str(tmp_path / "s")


def test_a_dying_superexec_is_restarted_then_replaced_by_the_fresh_process_mode(tmp_path: Path) -> None:
    started = tmp_path / "started"
    said: list[str] = []

    def companion(parent: int, mode: str) -> list[str]:
        code = "raise SystemExit(1)" if mode == "fork" else "import time; time.sleep(60)"
        return [sys.executable, "-c", f"open({str(started)!r}, 'a').write({mode!r} + '\\n'); {code}"]

    watch = CompanionWatch(companion, dict(os.environ), said.append, fallback_after=3, restart_delay_s=0.1)
    node = [sys.executable, "-c", "import time; time.sleep(8)"]
    supervise(node, dict(os.environ), said.append, max_restarts=0, companion=watch)
    modes = started.read_text().split()
    assert modes[:3] == ["fork", "fork", "fork"] and modes[3:] == ["spawn"], modes
    text = "\n".join(said)
    assert "site SuperExec exited with code 1; restarting it" in text
    assert "falling back to 'spawn' mode" in text and "still only the installed study code" in text
    assert watch.process is None  # stopped with the SuperNode


def test_a_superexec_that_cannot_run_with_this_flower_stops_the_site() -> None:
    said: list[str] = []
    watch = CompanionWatch(lambda parent, mode: [sys.executable, "-c", "raise SystemExit(78)"], dict(os.environ),
                           said.append, fatal_codes=frozenset({78}))
    code = supervise([sys.executable, "-c", "import time; time.sleep(120)"], dict(os.environ), said.append,
                     companion=watch)
    assert code == 78 and any("cannot run with the installed Flower" in line for line in said)
    assert not any("restarting" in line for line in said)


def test_clientapp_processes_are_bounded() -> None:
    from flwr.supercore.constant import TaskType

    executor = BoundedExecutor("spawn", max_running=2)
    types = {TaskType.CLIENT_APP}
    sleepers = [subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
                for _ in range(2)]
    executor.children = {p.pid: (0.0, p) for p in sleepers}
    assert executor.get_eligible_capacity(types) == (set(), set())
    assert executor.launch(type("Spec", (), {"task_type": TaskType.CLIENT_APP})()).status == "capacity_rejected"
    sleepers[0].communicate(b"")
    assert executor.get_eligible_capacity(types) == (types, set())
    sleepers[1].communicate(b"")
    executor.reconcile()
    assert executor.children == {}
    with pytest.raises(ValueError, match="at least one"):
        BoundedExecutor("fork", max_running=0)


def test_the_work_folder_and_the_superexec_secret_are_private(tmp_path: Path) -> None:
    loose = tmp_path / "work"
    loose.mkdir(mode=0o755)
    os.chmod(loose, 0o755)
    work = prepare_work_dir(loose)
    assert work.stat().st_mode & 0o777 == 0o700
    secret = superexec_secret(work)
    assert secret.stat().st_mode & 0o777 == 0o600 and len(secret.read_bytes()) == 32
    assert superexec_secret(work).read_bytes() == secret.read_bytes()  # stable across restarts


# -- logging ----------------------------------------------------------------------------------------------

def test_log_lines_carry_a_utc_time_and_a_level_as_text_or_json() -> None:
    text = io.StringIO()
    configure_logging("INFO", False, stream=text, export=False)
    logging.getLogger("fedradval.site.join").debug("hidden")
    logging.getLogger("fedradval.site.join").warning("site %s is not approved", "A")
    line = text.getvalue().strip()
    assert "hidden" not in line
    stamp, level, rest = line.split(" ", 2)
    assert stamp.endswith("Z") and "T" in stamp and level == "WARNING"
    assert rest == "fedradval.site.join: site A is not approved"
    as_json = io.StringIO()
    configure_logging("debug", True, stream=as_json, export=False)
    logging.getLogger("fedradval.coordinator").debug("round %d", 3)
    entry = json.loads(as_json.getvalue())
    assert entry["level"] == "DEBUG" and entry["logger"] == "fedradval.coordinator" and entry["message"] == "round 3"
    configure_logging("INFO", False, export=False)


def test_both_clis_take_log_options_and_name_a_bad_level(tmp_path: Path) -> None:
    for tool, command in (("site-client", "audit"), ("coordinator", "status")):
        result = subprocess.run([str(Path(sys.executable).parent / tool), "--log-level", "LOUD", command, "--help"],
                                capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "200"})
        assert result.returncode == 2 and "LOUD" in result.stderr and "DEBUG, INFO, WARNING, ERROR" in result.stderr


# -- service units ----------------------------------------------------------------------------------------

UNITS = ROOT / "deploy" / "systemd"


def _exec_lines(text: str) -> list[list[str]]:
    """ExecStart= / ExecStartPre= command lines of a unit (continuations joined), split into words."""
    joined = text.replace("\\\n", " ")
    return [line.split("=", 1)[1].split() for line in joined.splitlines() if line.startswith(("ExecStart=", "ExecStartPre="))]


@pytest.mark.skipif(not __import__("shutil").which("systemd-analyze"), reason="systemd-analyze is not installed here")
def test_the_service_units_are_valid_systemd_units(tmp_path: Path) -> None:
    bin_dir = str(Path(sys.executable).parent)
    units = sorted(UNITS.glob("*.service"))
    assert {u.name for u in units} == {"fedradval-site.service", "fedradval-coordinator.service",
                                      "fedradval-mlflow.service"}
    for unit in units:
        (tmp_path / unit.name).write_text(unit.read_text().replace("/opt/fedradval/venv/bin", bin_dir))
    result = subprocess.run(["systemd-analyze", "verify", *(str(tmp_path / u.name) for u in units)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), result.stdout + result.stderr


def test_the_service_units_use_only_options_the_commands_have() -> None:
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "COLUMNS": "300"}
    seen = 0
    for unit in ("fedradval-site.service", "fedradval-coordinator.service", "fedradval-mlflow.service"):
        for words in _exec_lines((UNITS / unit).read_text()):
            tool = Path(words[0]).name
            first = next(i for i, w in enumerate(words[1:], 1) if not w.startswith("-") and not
                         words[i - 1] in ("--log-level",))
            top = [w for w in words[1:first] if w.startswith("--")]
            sub = [w for w in words[first + 1:] if w.startswith("--")]
            top_help = subprocess.run([str(bin_dir / tool), "--help"], capture_output=True, text=True, env=env,
                                      timeout=120).stdout
            sub_help = subprocess.run([str(bin_dir / tool), words[first], "--help"], capture_output=True, text=True,
                                      env=env, timeout=120).stdout
            for option in top:
                assert option in top_help, (unit, option)
            for option in sub:
                assert option in sub_help, (unit, words[first], option)
            seen += 1
    assert seen == 4  # site: doctor + join, coordinator start, mlflow server


def test_extraction_reports_progress_in_the_service_log(tmp_path: Path) -> None:
    """What `site-client join` shows while a ClientApp extracts a cohort (no progress bar in a service)."""
    from tests.extraction.test_extract_runner_recovery import PROTOCOL, _case
    from site_client.extraction import runner

    lines = ["case_id,image,mask,label"]
    for k, name in enumerate(["a", "b", "c"]):
        image, mask = _case(tmp_path, name, k)
        lines.append(f"{name},{image},{mask},{k % 2}")
    (tmp_path / "m.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (tmp_path / "p.yaml").write_text(PROTOCOL, encoding="utf-8")
    stream = io.StringIO()
    configure_logging("INFO", False, stream=stream, export=False)
    try:
        runner.extract_cohort(tmp_path / "m.csv", tmp_path / "p.yaml", tmp_path / "f.csv", workers=1, progress=False)
    finally:
        configure_logging("INFO", False, export=False)
    text = stream.getvalue()
    assert "INFO fedradval.site.extraction: extracting 3 case(s) of" in text
    assert "extracted 3/3 case(s): 0 failed, 0 from cache" in text


def test_the_site_superexec_refuses_to_start_with_an_unsupported_flower(tmp_path: Path) -> None:
    script = textwrap.dedent("""
        import flowerglue.versions as versions
        versions.flower_version = lambda: "1.42.1"
        from site_client.flower.warm_exec import main
        main(["--runtime-api-address", "127.0.0.1:1"])
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert result.returncode == 78, result.stderr
    assert "site SuperExec cannot start: Flower (flwr) 1.42.1 is installed" in result.stderr
