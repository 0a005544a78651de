"""The coordinator's side of the ``flwr`` CLI: a private FLWR_HOME profile and JSON-returning wrappers.

The profile lives in ``<state-dir>/flwr-home/config.toml`` (never ``~/.flwr``) and points only at the
study SuperLink: no ``supergrid`` / ``local`` entries, so nothing can reach flower.ai by accident.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from flowerglue.runtime_env import flower_env
from protocols.files import write_atomic

PROFILE = "study"
APP_DIR = Path(__file__).resolve().parent / "app"


class FlwrCommandError(RuntimeError):
    """A ``flwr`` command failed; carries its output."""


def flwr_executable(name: str = "flwr") -> str:
    """The Flower executable next to this Python (the venv), else on PATH."""
    candidate = Path(sys.executable).with_name(name)
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if not found:
        raise FileNotFoundError(f"{name} not found next to {sys.executable} nor on PATH; install fedradval first")
    return found


def _toml_str(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid TOML basic string


def write_profile(flwr_home: Path, address: str, root_certificates: Path | None, insecure: bool) -> Path:
    """(Re)write ``config.toml`` with one profile, ``study``, pointing at ``address``."""
    lines = ["[superlink]", f"default = {_toml_str(PROFILE)}", "", f"[superlink.{PROFILE}]", f"address = {_toml_str(address)}"]
    if insecure:
        lines.append("insecure = true")
    elif root_certificates is not None:
        lines.append(f"root-certificates = {_toml_str(str(root_certificates.resolve()))}")
    flwr_home.mkdir(parents=True, exist_ok=True)
    path = flwr_home / "config.toml"
    write_atomic(path, "\n".join(lines) + "\n")
    return path


def run_flwr(flwr_home: Path, args: list[str], timeout_s: float = 120.0) -> subprocess.CompletedProcess[str]:
    """Run ``flwr <args>`` with the private FLWR_HOME; raises :class:`FlwrCommandError` on failure."""
    result = subprocess.run(
        [flwr_executable(), *args],
        env=flower_env(flwr_home),
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    if result.returncode != 0:
        raise FlwrCommandError(f"flwr {' '.join(args[:2])} failed (exit {result.returncode}): {_tail(result)}")
    return result


def _tail(result: subprocess.CompletedProcess[str]) -> str:
    text = (result.stdout + result.stderr).strip()
    try:
        data = json.loads(result.stdout)
        if isinstance(data, dict) and data.get("error-message"):
            return str(data["error-message"])
    except json.JSONDecodeError:
        pass
    return text[-2000:]


def flwr_json(flwr_home: Path, args: list[str], timeout_s: float = 120.0) -> dict[str, Any]:
    """Run ``flwr <args> --format json`` and return the JSON object it prints."""
    result = run_flwr(flwr_home, [*args, "--format", "json"], timeout_s)
    text = result.stdout
    start = text.find("{")
    if start < 0:
        raise FlwrCommandError(f"flwr {' '.join(args[:2])} printed no JSON: {_tail(result)}")
    data = json.loads(text[start:])
    if isinstance(data, dict) and data.get("success") is False:
        raise FlwrCommandError(f"flwr {' '.join(args[:2])} failed: {data.get('error-message', data)}")
    return data


def start_run(flwr_home: Path, run_config: dict[str, Any], app_dir: Path = APP_DIR) -> int:
    """Ship the FAB with ``flwr run``; returns the run id."""
    # A TOML file, not `-c k=v`: Flower's k=v parser splits on spaces, which paths may contain.
    overrides = flwr_home / f"run-config-{os.getpid()}.toml"
    overrides.write_text(
        "".join(f"{k} = {_toml_str(v) if isinstance(v, str) else json.dumps(v)}\n" for k, v in run_config.items()),
        encoding="utf-8",
    )
    data = flwr_json(flwr_home, ["run", str(app_dir), PROFILE, "--run-config", str(overrides)], timeout_s=300)
    return int(data["run-id"])


def list_runs(flwr_home: Path, run_id: int | None = None) -> list[dict[str, Any]]:
    args = ["ls", PROFILE] + (["--run-id", str(run_id)] if run_id is not None else [])
    return list(flwr_json(flwr_home, args).get("runs", []))


def list_supernodes(flwr_home: Path) -> list[dict[str, Any]]:
    return list(flwr_json(flwr_home, ["supernode", "ls", PROFILE]).get("nodes", []))


def register_supernode(flwr_home: Path, public_key: Path, name: str) -> dict[str, Any]:
    return flwr_json(flwr_home, ["supernode", "register", str(public_key), PROFILE, "--name", name])


def run_log(flwr_home: Path, run_id: int) -> str:
    return run_flwr(flwr_home, ["log", str(run_id), PROFILE, "--show"]).stdout


def stop_run(flwr_home: Path, run_id: int) -> None:
    run_flwr(flwr_home, ["stop", str(run_id), PROFILE])
