"""The site cohort manifest: one CSV row per lesion.

Required columns ``case_id,image,mask``; optional ``mask_label`` (integer label value, default 1),
``mask_roi`` (ROI name in a DICOM RTSTRUCT or segment label in a DICOM SEG), ``series_uid`` (pick one
DICOM series when a folder holds several), plus the protocol's label, covariate and batch columns.
Paths are absolute or relative to the manifest's folder.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

REQUIRED_COLUMNS = ("case_id", "image", "mask")
OPTIONAL_COLUMNS = ("mask_label", "mask_roi", "series_uid")


class ManifestError(ValueError):
    """The manifest as a whole cannot be read (not a per-row problem)."""


@dataclass(frozen=True)
class ManifestRow:
    """One lesion. ``line`` is the 1-based line number in the CSV file (header = line 1)."""

    line: int
    case_id: str
    image: Path
    mask: Path
    mask_label_text: str
    mask_roi: str
    series_uid: str
    values: dict[str, str] = field(default_factory=dict)

    @property
    def mask_label(self) -> int:
        """Integer label value; raises ValueError when the text is not an integer."""
        text = self.mask_label_text.strip() or "1"
        return int(text)


@dataclass(frozen=True)
class Manifest:
    path: Path
    columns: list[str]
    rows: list[ManifestRow]


def _resolve(base: Path, text: str) -> Path:
    path = Path(text.strip()).expanduser()
    return path if path.is_absolute() else (base / path)


def read_manifest(path: str | Path) -> Manifest:
    """Parse the CSV; structural problems (missing file, missing columns) raise :class:`ManifestError`."""
    path = Path(path)
    try:
        handle = path.open(newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise ManifestError(f"manifest {path}: cannot open ({exc.strerror or exc})") from None
    with handle:
        reader = csv.DictReader(handle)
        columns = [c.strip() for c in (reader.fieldnames or [])]
        missing = [c for c in REQUIRED_COLUMNS if c not in columns]
        if missing:
            raise ManifestError(
                f"manifest {path}: missing required column(s) {', '.join(missing)}; "
                f"expected at least {','.join(REQUIRED_COLUMNS)} (found: {','.join(columns) or 'no header'})"
            )
        base = path.parent.resolve()
        rows: list[ManifestRow] = []
        for raw in reader:
            cells = {(k or "").strip(): (v or "").strip() for k, v in raw.items() if k is not None}
            rows.append(
                ManifestRow(
                    line=reader.line_num,
                    case_id=cells.get("case_id", ""),
                    image=_resolve(base, cells.get("image", "")),
                    mask=_resolve(base, cells.get("mask", "")),
                    mask_label_text=cells.get("mask_label", ""),
                    mask_roi=cells.get("mask_roi", ""),
                    series_uid=cells.get("series_uid", ""),
                    values=cells,
                )
            )
    if not rows:
        raise ManifestError(f"manifest {path}: no data rows below the header")
    return Manifest(path=path, columns=columns, rows=rows)


def duplicate_lines(rows: list[ManifestRow]) -> dict[str, list[int]]:
    """Every non-empty case id used on more than one row -> all its line numbers."""
    lines: dict[str, list[int]] = {}
    for row in rows:
        if row.case_id:
            lines.setdefault(row.case_id, []).append(row.line)
    return {case_id: found for case_id, found in lines.items() if len(found) > 1}


def duplicate_message(case_id: str, lines: list[int]) -> str:
    """The one wording of a repeated case id, for ``check``, ``extract`` and ``join``."""
    return (
        f"case_id {case_id!r} is used on manifest lines {', '.join(map(str, lines))}; case ids must be unique: "
        "none of these rows is used (each could carry another row's label and covariates)"
    )
