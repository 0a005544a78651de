"""Where the tests' reference data lives: ``tests/data`` inside the repository (README, licences and
SHA256SUMS there), so a fresh clone runs ``make test`` with nothing beside it."""

from __future__ import annotations

from pathlib import Path

REFERENCE_DATA = Path(__file__).resolve().parent / "data"
