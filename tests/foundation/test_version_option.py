"""``--version`` on both CLIs: every site must run the same release, so IT can compare one line."""

from __future__ import annotations

import platform
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


@pytest.mark.parametrize("module", ["site_client", "coordinator"])
def test_version_prints_the_release_flower_and_python(module: str) -> None:
    release = tomllib.loads(PYPROJECT.read_text())["project"]["version"]
    done = subprocess.run([sys.executable, "-m", module, "--version"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    line = done.stdout.strip()
    assert line.startswith(f"fedradval {release} (flwr 1.41."), line
    assert line.endswith(f", Python {platform.python_version()})"), line


def test_version_wins_over_a_command() -> None:
    """Eager: ``site-client --version join`` prints the version and starts nothing."""
    done = subprocess.run([sys.executable, "-m", "site_client", "--version", "join"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and done.stdout.startswith("fedradval "), done.stdout + done.stderr
