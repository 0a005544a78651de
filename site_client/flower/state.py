"""Default locations of a site's durable state."""

from __future__ import annotations

from pathlib import Path

from site_client.flower.approvals import APPROVALS_FILE

DEFAULT_WORK_DIR = Path("fedradval-site")


def approvals_path(work_dir: Path) -> Path:
    return work_dir.resolve() / APPROVALS_FILE
