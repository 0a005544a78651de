"""Default locations of a site's durable state, and the folder's protection.

The work folder holds caches of extracted features, the audit log, approvals and the SuperExec secret:
data of the hospital's patients or derived from them, so it is created (and tightened) to mode 0700,
readable by the site's service account only.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from site_client.flower.approvals import APPROVALS_FILE
from protocols.files import write_atomic

DEFAULT_WORK_DIR = Path("fedradval-site")
SUPEREXEC_SECRET_FILE = "superexec-auth.secret"
WORK_DIR_MODE = 0o700


def approvals_path(work_dir: Path) -> Path:
    return work_dir.resolve() / APPROVALS_FILE


def prepare_work_dir(work_dir: Path) -> Path:
    """Create ``work_dir`` (mode 0700) or tighten an existing one to 0700; returns it resolved."""
    work_dir = work_dir.resolve()
    work_dir.mkdir(parents=True, exist_ok=True)
    if work_dir.stat().st_mode & 0o777 != WORK_DIR_MODE:
        os.chmod(work_dir, WORK_DIR_MODE)
    return work_dir


def superexec_secret(work_dir: Path) -> Path:
    """``<work-dir>/superexec-auth.secret`` (32 random bytes, mode 0600), created on first use: the SuperNode
    and the site's SuperExec share it, so no other local user can take the site's tasks from the Runtime API."""
    path = work_dir.resolve() / SUPEREXEC_SECRET_FILE
    if not path.is_file() or path.stat().st_size == 0:
        write_atomic(path, secrets.token_bytes(32), mode=0o600)
    return path
