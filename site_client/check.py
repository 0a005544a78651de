"""``site-client check``: read every manifest row and report every problem, without stopping at the first.

Nothing is written anywhere: the check only reads the manifest, image headers and masks.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from protocols import Protocol
from protocols.schema import is_survival
from site_client.imaging.errors import CaseInputError
from site_client.imaging.masks import dicom_modality, read_label_mask, read_mask
from site_client.imaging.readers import read_geometry, read_image
from site_client.manifest import Manifest, ManifestRow


@dataclass(frozen=True)
class Problem:
    """One problem. ``line`` is the CSV line (header = 1); None for problems of the whole cohort."""

    line: int | None
    case_id: str
    field: str
    message: str


@dataclass
class CheckReport:
    source: str
    protocol_id: str
    rows_checked: int
    class_counts: dict[str, int]
    errors: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def bad_lines(self) -> list[int]:
        return sorted({p.line for p in self.errors if p.line is not None})

    def to_json(self) -> dict:
        return {
            "source": self.source,
            "protocol_id": self.protocol_id,
            "ok": self.ok,
            "rows_checked": self.rows_checked,
            "class_counts": self.class_counts,
            "errors": [asdict(p) for p in self.errors],
            "warnings": [asdict(p) for p in self.warnings],
        }


def _value_problems(line: int | None, case_id: str, values: dict[str, str], protocol: Protocol) -> list[Problem]:
    """Label, covariate and batch values of one case (shared by manifests and feature tables)."""
    problems: list[Problem] = []
    label = protocol.label
    if is_survival(protocol):
        from site_client.survival_checks import outcome_value_problems

        return outcome_value_problems(line, case_id, values, label) + _covariate_problems(line, case_id, values, protocol)
    allowed = (label.positive, label.negative)
    value = values.get(label.column)
    if value is None or value == "":
        problems.append(Problem(line, case_id, label.column, f"missing label; expected one of {list(allowed)}"))
    elif value not in allowed:
        problems.append(
            Problem(line, case_id, label.column, f"label value {value!r} is not one of the protocol's classes {list(allowed)}")
        )
    return problems + _covariate_problems(line, case_id, values, protocol)


def _covariate_problems(line: int | None, case_id: str, values: dict[str, str], protocol: Protocol) -> list[Problem]:
    problems: list[Problem] = []
    for covariate in protocol.covariates.categorical:
        value = values.get(covariate.name)
        if value is None or value == "":
            problems.append(Problem(line, case_id, covariate.name, "missing categorical covariate"))
        elif value not in covariate.levels:
            problems.append(
                Problem(line, case_id, covariate.name, f"unknown level {value!r}; allowed: {covariate.levels}")
            )
    for covariate in protocol.covariates.continuous:
        value = values.get(covariate.name)
        if value is None or value == "":
            problems.append(Problem(line, case_id, covariate.name, "missing continuous covariate"))
            continue
        try:
            number = float(value)
        except ValueError:
            problems.append(Problem(line, case_id, covariate.name, f"{value!r} is not a number"))
            continue
        if not math.isfinite(number) or not covariate.min <= number <= covariate.max:
            problems.append(
                Problem(
                    line,
                    case_id,
                    covariate.name,
                    f"value {value} outside the plausible range [{covariate.min:g}, {covariate.max:g}]",
                )
            )
    if protocol.batch.by == "column":
        column = protocol.batch.column or ""
        if not values.get(column):
            problems.append(Problem(line, case_id, column, "missing batch value (protocol batch.by = column)"))
    return problems


def _missing_columns(columns: list[str], protocol: Protocol, extra: list[str]) -> list[Problem]:
    wanted = [*protocol.label.columns(), *protocol.covariates.names(), *extra]
    if protocol.batch.by == "column" and protocol.batch.column:
        wanted.append(protocol.batch.column)
    return [
        Problem(None, "", name, f"column {name!r} required by the protocol is absent")
        for name in wanted
        if name not in columns
    ]


def _image_problems(row: ManifestRow, protocol: Protocol) -> list[Problem]:
    try:
        label_value = row.mask_label
    except ValueError:
        return [Problem(row.line, row.case_id, "mask_label", f"{row.mask_label_text!r} is not an integer label value")]
    try:
        geometry = read_geometry(row.image, row.series_uid)
    except CaseInputError as exc:
        return [Problem(row.line, row.case_id, "image", str(exc))]
    want = 2 if protocol.extraction.dimensionality == "2D" else 3
    if geometry.dimension < want or (want == 3 and min(geometry.size) < 2):
        message = f"{row.image}: image is {geometry.dimension}D {geometry.size}; the protocol needs a {want}D volume"
        return [Problem(row.line, row.case_id, "image", message)]
    try:
        if not row.mask.exists():
            raise CaseInputError(f"{row.mask}: file not found")
        if dicom_modality(row.mask):
            # RTSTRUCT / SEG masks are rasterised onto the image grid, so the voxels are needed.
            read_mask(row.mask, read_image(row.image, row.series_uid), label_value, row.mask_roi)
        else:
            # Label images are compared header-to-header; only the mask's voxels are read.
            read_label_mask(row.mask, geometry, label_value)
    except CaseInputError as exc:
        return [Problem(row.line, row.case_id, "mask", str(exc))]
    return []


def _class_problems(counts: Counter, protocol: Protocol) -> list[Problem]:
    need = protocol.validation.min_cases_per_class
    problems = []
    for name in (protocol.label.positive, protocol.label.negative):
        if counts.get(name, 0) < need:
            problems.append(
                Problem(
                    None,
                    "",
                    protocol.label.column,
                    f"too few cases of class {name!r}: {counts.get(name, 0)}, the protocol needs at least {need} per class",
                )
            )
    return problems


def _outcome_summary(rows: list[dict[str, str]], protocol: Protocol, report: CheckReport) -> None:
    """Cohort-level outcome counts and problems: classes of a binary label, events and follow-up of a survival one."""
    if is_survival(protocol):
        from site_client.survival_checks import cohort_problems

        report.class_counts, errors, warnings = cohort_problems(rows, protocol)
        report.errors.extend(errors)
        report.warnings.extend(warnings)
        return
    labels = Counter(values.get(protocol.label.column, "") for values in rows)
    report.class_counts = {k: labels.get(k, 0) for k in (protocol.label.positive, protocol.label.negative)}
    report.errors.extend(_class_problems(labels, protocol))


def check_manifest(manifest: Manifest, protocol: Protocol, protocol_id: str) -> CheckReport:
    """Every problem of every row, then the cohort-level class counts."""
    report = CheckReport(str(manifest.path), protocol_id, len(manifest.rows), {})
    report.errors.extend(_missing_columns(manifest.columns, protocol, extra=[]))
    first_line: dict[str, int] = {}
    for row in manifest.rows:
        if not row.case_id:
            report.errors.append(Problem(row.line, "", "case_id", "empty case_id"))
        elif row.case_id in first_line:
            report.errors.append(
                Problem(row.line, row.case_id, "case_id", f"duplicate case_id, first used on line {first_line[row.case_id]}")
            )
        else:
            first_line[row.case_id] = row.line
        report.errors.extend(_value_problems(row.line, row.case_id, row.values, protocol))
        report.errors.extend(_image_problems(row, protocol))
    _outcome_summary([row.values for row in manifest.rows], protocol, report)
    return report


def check_feature_table(path: Path, table: pd.DataFrame, protocol: Protocol, protocol_id: str) -> CheckReport:
    """Checks a ready feature table: ids, label, covariates, and the model's feature columns (numeric, finite)."""
    features = list(protocol.model.features or [])
    report = CheckReport(str(path), protocol_id, len(table), {})
    columns = [str(c) for c in table.columns]
    report.errors.extend(_missing_columns(columns, protocol, extra=["case_id", *features]))
    text = table.astype(object).where(table.notna(), "").astype(str)
    first_line: dict[str, int] = {}
    rows: list[dict[str, str]] = []
    for position, (_, row) in enumerate(text.iterrows()):
        line = position + 2  # header is line 1
        values = row.to_dict()
        case_id = values.get("case_id", "")
        if case_id in first_line:
            report.errors.append(Problem(line, case_id, "case_id", f"duplicate case_id, first used on line {first_line[case_id]}"))
        elif case_id:
            first_line[case_id] = line
        else:
            report.errors.append(Problem(line, "", "case_id", "empty case_id"))
        report.errors.extend(_value_problems(line, case_id, values, protocol))
        for name in features:
            if name not in table.columns:
                continue
            number = pd.to_numeric(pd.Series([table[name].iloc[position]]), errors="coerce").iloc[0]
            if pd.isna(number) or not math.isfinite(float(number)):
                report.errors.append(Problem(line, case_id, name, f"feature value {values.get(name)!r} is not a finite number"))
        rows.append(values)
    _outcome_summary(rows, protocol, report)
    return report
