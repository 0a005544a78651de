"""The coordinator's state folder: SuperLink database, private FLWR_HOME (CLI profile), run status files."""

from __future__ import annotations

from pathlib import Path

DEFAULT_STATE_DIR = Path("fedradval-coordinator")


def flwr_home(state_dir: Path) -> Path:
    return state_dir.resolve() / "flwr-home"


def runs_dir(state_dir: Path) -> Path:
    return state_dir.resolve() / "runs"


def default_database(state_dir: Path) -> Path:
    return state_dir.resolve() / "superlink.db"


def require_profile(state_dir: Path) -> Path:
    """FLWR_HOME of a coordinator that ran ``coordinator start`` (else a clear error)."""
    home = flwr_home(state_dir)
    if not (home / "config.toml").is_file():
        raise FileNotFoundError(
            f"{home / 'config.toml'} does not exist: run `coordinator start --state-dir {state_dir}` first "
            "(it writes the connection profile the other commands use)"
        )
    return home
