"""Truncation checks the ITK NIfTI reader skips: a cut .nii.gz or .nii is otherwise read with silent zeros."""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

from site_client.imaging.errors import CaseInputError

_CHUNK = 1 << 20


def _expected_nifti_bytes(header: bytes) -> int | None:
    """vox_offset + voxels * bitpix / 8 from a NIfTI-1 header; None when the header is not NIfTI-1."""
    if len(header) < 112:
        return None
    for endian in "<>":
        if struct.unpack(endian + "i", header[:4])[0] == 348:
            dims = struct.unpack(endian + "8h", header[40:56])
            bitpix = struct.unpack(endian + "h", header[72:74])[0]
            offset = struct.unpack(endian + "f", header[108:112])[0]
            count = 1
            for d in dims[1 : 1 + max(0, min(dims[0], 7))]:
                count *= max(int(d), 1)
            return int(offset) + count * bitpix // 8
    return None


def check_complete(path: Path) -> None:
    """Raise CaseInputError for a truncated NIfTI file (plain or gzip); other formats are left to ITK."""
    name = path.name.lower()
    if path.is_dir() or not (name.endswith(".nii") or name.endswith(".nii.gz")):
        return
    try:
        if name.endswith(".gz"):
            # Decompress only as far as the header says the data goes: a gzip bomb behind a small header costs
            # no more than the image it claims to be.
            size = 0
            header = b""
            expected = None
            with gzip.open(path, "rb") as handle:
                while chunk := handle.read(_CHUNK):
                    if len(header) < 352:
                        header += chunk[:352]
                        expected = _expected_nifti_bytes(header)
                    size += len(chunk)
                    if expected is not None and size >= expected:
                        break
        else:
            size = path.stat().st_size
            with path.open("rb") as handle:
                header = handle.read(352)
    except (OSError, EOFError, zlib.error) as exc:
        raise CaseInputError(f"{path}: unreadable image (corrupt or truncated file: {exc})") from None
    expected = _expected_nifti_bytes(header)
    if expected is not None and size < expected:
        raise CaseInputError(
            f"{path}: unreadable image (truncated NIfTI: {size:,} bytes of {expected:,} expected from its header)"
        )
