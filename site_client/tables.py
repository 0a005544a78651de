"""Feature tables on disk: CSV or Parquet chosen by extension, always written atomically.

Every CSV this project writes goes through :func:`csv_text` (formula neutralisation, below) and every CSV it reads
back through :func:`read_table` / :func:`restore_text_cells`, which undo it.

Formula neutralisation: a spreadsheet evaluates a cell that starts with ``=``, ``+``, ``-``, ``@``, tab or carriage
return (``=HYPERLINK(...)`` in a case id becomes a live link). Such text cells get a leading ``'`` (the usual
spreadsheet "this is text" mark). Numbers are never touched: numeric columns are skipped, and so is a text cell
that reads as a number (``-3.5`` in a covariate column). A text cell that already starts with ``'`` followed by a
trigger gets one more ``'``, so that reading strips exactly one and every value survives the round trip.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

import pandas as pd

TABLE_SUFFIXES = (".csv", ".parquet", ".pq")
FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")
_NEUTRALISED = re.compile(r"^'+[=+\-@\t\r]")


class TableError(ValueError):
    """A feature table that cannot be read or written; the message names the file."""


def table_format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in (".parquet", ".pq"):
        return "parquet"
    raise TableError(f"{path}: unsupported table extension {suffix!r}; use .csv or .parquet")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def neutralise_cell(value: object) -> object:
    """``'`` + text for a text cell a spreadsheet would evaluate; anything else unchanged."""
    if not isinstance(value, str) or not value:
        return value
    if (value.startswith(FORMULA_TRIGGERS) and not _is_number(value)) or _NEUTRALISED.match(value):
        return "'" + value
    return value


def restore_cell(value: object) -> object:
    """Undo :func:`neutralise_cell`."""
    if isinstance(value, str) and _NEUTRALISED.match(value):
        return value[1:]
    return value


def _text_columns(frame: pd.DataFrame) -> list:
    return [c for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c]) and not pd.api.types.is_bool_dtype(frame[c])]


def neutralise_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy with every text cell neutralised (numeric columns untouched); column names too."""
    out = frame.copy()
    for column in _text_columns(out):
        out[column] = out[column].map(neutralise_cell)
    out.columns = [neutralise_cell(c) for c in out.columns]
    return out


def restore_text_cells(frame: pd.DataFrame) -> pd.DataFrame:
    """Undo :func:`neutralise_frame` on a CSV read back (text columns and column names)."""
    for column in _text_columns(frame):
        frame[column] = frame[column].map(restore_cell)
    frame.columns = [restore_cell(c) for c in frame.columns]
    return frame


def csv_text(frame: pd.DataFrame) -> str:
    """The one CSV writer: ``frame`` as CSV text, formula-neutralised, without the index."""
    return neutralise_frame(frame).to_csv(index=False)


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a feature table; ``case_id`` is kept as text; CSV formula neutralisation is undone."""
    path = Path(path)
    kind = table_format(path)
    if not path.is_file():
        raise TableError(f"{path}: file not found")
    try:
        if kind == "csv":
            return restore_text_cells(pd.read_csv(path, dtype={"case_id": str}))
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
            Path(temporary).write_text(csv_text(frame), encoding="utf-8")
        else:
            frame.to_parquet(temporary, index=False)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path
