"""Per-case feature cache next to the output table (``FILE.cache/``), keyed by content hashes.

Key = sha256 over: engine version, protocol id, the image bytes (every file of a DICOM series folder, in name
order), the mask bytes, mask label, ROI name and series UID. A changed image, mask or protocol gives a new key;
stale entries are simply never read again. Entries are written atomically (temp file + rename).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from protocols.files import write_atomic

# Bump when a code change alters feature values: old cache entries then stop matching.
ENGINE_VERSION = "ibsi-1"
_CHUNK = 1 << 20


def _hash_file(digest: "hashlib._Hash", path: Path) -> None:
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)


def hash_input(digest: "hashlib._Hash", path: Path) -> None:
    """Feed a file, or every file below a folder (sorted relative names included), into ``digest``."""
    if path.is_dir():
        for item in sorted(p for p in path.rglob("*") if p.is_file()):
            digest.update(str(item.relative_to(path)).encode())
            _hash_file(digest, item)
    else:
        _hash_file(digest, path)


def case_key(image: Path, mask: Path, label: str, roi: str, series_uid: str, protocol_id: str) -> str:
    digest = hashlib.sha256()
    for text in (ENGINE_VERSION, protocol_id, label, roi, series_uid):
        digest.update(text.encode() + b"\0")
    hash_input(digest, image)
    digest.update(b"\0mask\0")
    hash_input(digest, mask)
    return digest.hexdigest()


def cache_dir(out_path: Path) -> Path:
    return out_path.with_name(out_path.name + ".cache")


def load(folder: Path, key: str) -> dict[str, float] | None:
    path = folder / f"{key}.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    features = data.get("features") if isinstance(data, dict) else None
    return {str(k): float(v) for k, v in features.items()} if isinstance(features, dict) else None


def store(folder: Path, key: str, features: dict[str, float]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    write_atomic(folder / f"{key}.json", json.dumps({"engine": ENGINE_VERSION, "features": features}), mode=0o600)
