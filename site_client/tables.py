"""Feature tables on disk: CSV or Parquet chosen by extension, always written atomically."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pandas as pd

TABLE_SUFFIXES = (".csv", ".parquet", ".pq")


class TableError(ValueError):
    """A feature table that cannot be read or written; the message names the file."""


def table_format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in (".parquet", ".pq"):
        return "parquet"
    raise TableError(f"{path}: unsupported table extension {suffix!r}; use .csv or .parquet")


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a feature table; ``case_id`` is kept as text."""
    path = Path(path)
    kind = table_format(path)
    if not path.is_file():
        raise TableError(f"{path}: file not found")
    try:
        if kind == "csv":
            return pd.read_csv(path, dtype={"case_id": str})
        return pd.read_parquet(path)
    except Exception as exc:  # pandas/pyarrow raise many types for corrupt files
        raise TableError(f"{path}: unreadable {kind} table ({exc})") from None


def write_table_atomic(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write to a temporary file in the same folder, then rename: readers never see a half-written table."""
    path = Path(path)
    kind = table_format(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        if kind == "csv":
            frame.to_csv(temporary, index=False)
        else:
            frame.to_parquet(temporary, index=False)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path
