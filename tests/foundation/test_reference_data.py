"""The reference data ships with the repository and is intact: every file listed in tests/data/SHA256SUMS is
present with its published bytes, and no data file is unlisted (so a new case cannot arrive without a checksum)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from tests.reference_data import REFERENCE_DATA


def _listed(root: Path) -> dict[str, str]:
    listed = {}
    for line in (root / "SHA256SUMS").read_text(encoding="ascii").splitlines():
        digest, name = line.split(maxsplit=1)
        listed[name.removeprefix("./")] = digest
    return listed


def test_every_reference_file_matches_its_checksum(reference_data: Path) -> None:
    listed = _listed(reference_data)
    assert len(listed) > 100
    bad = [name for name, digest in listed.items()
           if not (reference_data / name).is_file()
           or hashlib.sha256((reference_data / name).read_bytes()).hexdigest() != digest]
    assert not bad, f"missing or changed reference files (git LFS pointer? line-ending conversion?): {bad[:5]}"


def test_no_unlisted_data_file(reference_data: Path) -> None:
    present = {p.relative_to(reference_data).as_posix() for p in reference_data.rglob("*")
               if p.is_file() and p.name not in ("README.md", "SHA256SUMS")}
    assert present == set(_listed(reference_data)), sorted(present ^ set(_listed(reference_data)))[:5]


def test_the_tests_read_the_in_repository_copy() -> None:
    assert REFERENCE_DATA == Path(__file__).resolve().parents[1] / "data"
