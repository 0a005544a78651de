"""Which files a case may read: regular files (or a DICOM folder of regular files), bounded in size.

A manifest path may point anywhere: at ``/dev/zero`` (endless), a FIFO (blocks forever), a socket, or a file far
larger than any image the protocol allows. Each is refused here, from ``stat`` alone, before a byte is read.
Symbolic links are resolved; the resolved target is what is read, and messages name both.

The size bound follows from ``extraction.max_voxels``: no image of that many voxels needs more than
``max_voxels x 8`` bytes (a float64 / int64 voxel, the widest scalar) plus a header.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from site_client.imaging.errors import CaseInputError

BYTES_PER_VOXEL_MAX = 8
HEADER_ALLOWANCE_BYTES = 16 << 20  # one file's header, or one DICOM slice's header (large private tags included)


@dataclass(frozen=True)
class InputFile:
    """A manifest path (``given``) and the regular file or folder it resolves to (``path``)."""

    given: Path
    path: Path

    @property
    def via_symlink(self) -> bool:
        return Path(os.path.abspath(self.given)) != self.path

    def link_notes(self, role: str) -> list[str]:
        """The note ``check`` and ``extract`` report for a followed symbolic link (empty for a plain path)."""
        return [f"{role} {self.given} is a symbolic link to {self.path}"] if self.via_symlink else []

    def describe(self) -> str:
        """The path as the manifest gives it, and its target when it is (or passes through) a symbolic link."""
        return f"{self.given} (symbolic link to {self.path})" if self.via_symlink else str(self.given)


def max_input_bytes(max_voxels: int) -> int:
    """Largest file (or per-slice share of a DICOM folder) an image of ``max_voxels`` voxels can need."""
    return max_voxels * BYTES_PER_VOXEL_MAX + HEADER_ALLOWANCE_BYTES


def _kind(mode: int) -> str:
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def _resolve(path: Path) -> Path:
    if not os.path.lexists(path):
        raise CaseInputError(f"{path}: file not found")
    try:
        return path.resolve(strict=True)
    except (OSError, RuntimeError):
        target = os.readlink(path) if path.is_symlink() else "?"
        raise CaseInputError(f"{path}: broken symbolic link (to {target}: no such file, or a link loop)") from None


def checked_input(path: Path, role: str, max_voxels: int) -> InputFile:
    """``path`` resolved, checked to be a regular file (or a folder of regular files) within the size bound.

    ``role`` ("image" / "mask") only words the message. Raises :class:`CaseInputError` naming the path and what
    was found.
    """
    given = Path(path)
    resolved = InputFile(given, _resolve(given))
    info = os.stat(resolved.path)
    limit = max_input_bytes(max_voxels)
    if stat.S_ISDIR(info.st_mode):
        total, count = 0, 0
        for item in sorted(resolved.path.rglob("*")):
            item_info = os.stat(item) if os.path.exists(item) else None
            if item_info is None:
                raise CaseInputError(f"{resolved.describe()}: folder holds {item.name}, a broken symbolic link")
            if stat.S_ISDIR(item_info.st_mode):
                continue
            if not stat.S_ISREG(item_info.st_mode):
                raise CaseInputError(
                    f"{resolved.describe()}: folder holds {item.relative_to(resolved.path)}, {_kind(item_info.st_mode)}; "
                    f"a DICOM {role} folder may hold only regular files"
                )
            total += item_info.st_size
            count += 1
        limit = max_voxels * BYTES_PER_VOXEL_MAX + count * HEADER_ALLOWANCE_BYTES
        size = total
    elif stat.S_ISREG(info.st_mode):
        size = info.st_size
    else:
        raise CaseInputError(
            f"{resolved.describe()}: {_kind(info.st_mode)}; the {role} must be a regular image file (or a DICOM folder)"
        )
    if size > limit:
        raise CaseInputError(
            f"{resolved.describe()}: {size:,} bytes, more than an image within extraction.max_voxels = {max_voxels:,} "
            f"can take ({limit:,} bytes); crop the image around the lesion or raise the limit"
        )
    return resolved


def stat_signature(path: Path) -> list[list]:
    """(name, size, mtime_ns, inode) of a file, or of every file below a folder: changes when a file is replaced."""
    path = Path(path)
    items = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    out = []
    for item in items:
        try:
            info = os.stat(item)
        except OSError:
            out.append([str(item), -1, -1, -1])
            continue
        out.append([str(item), info.st_size, info.st_mtime_ns, info.st_ino])
    return out
