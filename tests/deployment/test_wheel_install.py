"""Lean install: the wheel ``python -m build`` makes installs into a fresh virtual environment with only the
``site`` extra, and that is enough for a hospital: the CLI and the ClientApp Flower loads import, and neither
the test tools (pytest, neuroCombat), nor Ray, nor the coordinator's MLflow come with it.

torch comes from this machine's pip settings (a local CPU wheel folder or index), as for any user of the wheel.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

pytestmark = [pytest.mark.deployment, pytest.mark.timeout(3600)]

REPO_ROOT = Path(__file__).resolve().parents[2]
SOURCE_IGNORE = shutil.ignore_patterns(".git", ".venv", "work", "build", "dist", "*.egg-info", "__pycache__",
                                       ".pytest_cache", "tests", "bench", "docs", "deploy")
ABSENT_AT_A_SITE = ("pytest", "neuroCombat", "ray", "mlflow", "statsmodels", "lifelines", "sksurv")


@pytest.fixture(scope="module")
def site_venv(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(wheel, venv): the wheel built from a copy of the source, installed with ``[site]`` into a fresh venv."""
    try:
        import build  # noqa: F401  (the dev extra installs it)
    except ImportError:
        pytest.fail("the `build` package (dev extra) is not installed: run `make venv`")
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"
    shutil.copytree(REPO_ROOT, source, ignore=SOURCE_IGNORE)
    built = subprocess.run([sys.executable, "-m", "build", "--outdir", str(root / "dist"), str(source)],
                           capture_output=True, text=True, timeout=1200)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    wheels = list((root / "dist").glob("fedradval-*-py3-none-any.whl"))
    assert len(wheels) == 1, list((root / "dist").iterdir())
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300, env=_clean_env())
    installed = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", f"{wheels[0]}[site]"],
                               capture_output=True, text=True, timeout=2400, cwd=root, env=_clean_env())
    assert installed.returncode == 0, installed.stdout[-3000:] + installed.stderr[-3000:]
    return wheels[0], venv


def _clean_env() -> dict[str, str]:
    """Without PYTHONPATH / VIRTUAL_ENV: only the fresh venv's packages count (a checkout on PYTHONPATH would
    make pip think fedradval is installed already, and the commands import the checkout instead of the wheel)."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}


def _run(venv: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(venv / "bin" / args[0]), *args[1:]], capture_output=True, text=True, timeout=600,
                          cwd=venv, env=_clean_env())


def test_site_client_runs_from_the_site_only_install(site_venv: tuple[Path, Path]) -> None:
    wheel, venv = site_venv
    shown = _run(venv, "site-client", "--help")
    assert shown.returncode == 0, shown.stderr
    assert "join" in shown.stdout and "check" in shown.stdout
    version = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert wheel.name.startswith(f"fedradval-{version}-")
    printed = _run(venv, "site-client", "--version")
    assert printed.returncode == 0 and printed.stdout.startswith(f"fedradval {version} (flwr 1.41."), printed.stdout
    # What Flower's SuperExec imports at the site, and the installed package (not this checkout) is the one used.
    loaded = _run(venv, "python", "-c",
                  "import site_client, site_client.flower.client_app, site_client.study.learning; print(site_client.__file__)")
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.strip().startswith(str(venv)), loaded.stdout


def test_site_only_install_holds_no_test_tools_ray_or_mlflow(site_venv: tuple[Path, Path]) -> None:
    _, venv = site_venv
    probe = f"import importlib.util as u; print(*[m for m in {ABSENT_AT_A_SITE!r} if u.find_spec(m)], sep=',')"
    found = _run(venv, "python", "-c", probe)
    assert found.returncode == 0, found.stderr
    assert found.stdout.strip() == "", f"a site-only install brings {found.stdout.strip()}"


def test_wheel_carries_the_data_files_the_commands_read(site_venv: tuple[Path, Path]) -> None:
    wheel, _ = site_venv
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "coordinator/flower/app/pyproject.toml" in names  # the Flower app `coordinator run` ships
    assert "protocols/examples/demo_study.yaml" in names
    assert not any(name.startswith("tests/") for name in names)
