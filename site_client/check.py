"""``site-client check``: read every manifest row and report every problem, without stopping at the first.

Each case goes through :func:`site_client.extraction.intake.validate_case`, the very function ``extract`` runs
before computing features, so a case that passes here fails in ``extract`` only in the feature computation
itself. Nothing is written anywhere.

Per-row label, covariate and batch values are validated in :func:`row_value_problems` (the one place to add
label checks, e.g. for other label kinds).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from protocols import Protocol
from protocols.schema import is_survival
from site_client.extraction.deadline import CASE_TIME_LIMIT_S, time_limit
from site_client.extraction.intake import CaseFiles, validate_case
from site_client.imaging.errors import CaseInputError
from site_client.manifest import Manifest, ManifestRow, duplicate_lines, duplicate_message


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


def row_value_problems(line: int | None, case_id: str, values: dict[str, str], protocol: Protocol) -> list[Problem]:
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


def _problem_field(message: str, files: CaseFiles) -> str:
    if message.startswith("mask_label"):
        return "mask_label"
    if str(files.mask) in message or (str(files.image) not in message and "mask" in message):
        return "mask"
    return "image"


def _image_problems(row: ManifestRow, protocol: Protocol, time_limit_s: float | None) -> tuple[list[Problem], list[Problem]]:
    """(errors, warnings) of a row's image and mask: the intake checks of ``extract``, up to the features."""
    files = CaseFiles(row.image, row.mask, row.mask_label_text, row.mask_roi, row.series_uid)
    try:
        with time_limit(time_limit_s, f"case {row.case_id or '<line ' + str(row.line) + '>'}"):
            case = validate_case(files, protocol.extraction)
    except CaseInputError as exc:
        message = str(exc)
        return [Problem(row.line, row.case_id, _problem_field(message, files), message)], []
    except MemoryError:
        message = "out of memory while reading the case (raise memory or lower extraction.max_voxels)"
        return [Problem(row.line, row.case_id, "image", message)], []
    warnings = [Problem(row.line, row.case_id, note.split(" ", 1)[0], note) for note in case.notes]
    return [], warnings


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


def check_manifest(
    manifest: Manifest, protocol: Protocol, protocol_id: str, case_time_limit_s: float | None = CASE_TIME_LIMIT_S
) -> CheckReport:
    """Every problem of every row, then the cohort-level class counts."""
    report = CheckReport(str(manifest.path), protocol_id, len(manifest.rows), {})
    report.errors.extend(_missing_columns(manifest.columns, protocol, extra=[]))
    repeated = duplicate_lines(manifest.rows)
    for row in manifest.rows:
        if not row.case_id:
            report.errors.append(Problem(row.line, "", "case_id", "empty case_id"))
        elif row.case_id in repeated:
            report.errors.append(Problem(row.line, row.case_id, "case_id", duplicate_message(row.case_id, repeated[row.case_id])))
        report.errors.extend(row_value_problems(row.line, row.case_id, row.values, protocol))
        errors, warnings = _image_problems(row, protocol, case_time_limit_s)
        report.errors.extend(errors)
        report.warnings.extend(warnings)
    _outcome_summary([row.values for row in manifest.rows], protocol, report)
    return report


def check_feature_table(path: Path, table: pd.DataFrame, protocol: Protocol, protocol_id: str) -> CheckReport:
    """Checks a ready feature table: ids, label, covariates, and the model's feature columns (numeric, finite)."""
    features = list(protocol.model.features or [])
    report = CheckReport(str(path), protocol_id, len(table), {})
    columns = [str(c) for c in table.columns]
    report.errors.extend(_missing_columns(columns, protocol, extra=["case_id", *features]))
    text = table.astype(object).where(table.notna(), "").astype(str)
    ids = text["case_id"].tolist() if "case_id" in text.columns else [""] * len(text)
    lines_of: dict[str, list[int]] = {}
    for position, case_id in enumerate(ids):
        lines_of.setdefault(case_id, []).append(position + 2)  # header is line 1
    rows: list[dict[str, str]] = []
    for position, (_, row) in enumerate(text.iterrows()):
        line = position + 2
        values = row.to_dict()
        case_id = values.get("case_id", "")
        if not case_id:
            report.errors.append(Problem(line, "", "case_id", "empty case_id"))
        elif len(lines_of[case_id]) > 1:
            message = (f"case_id {case_id!r} is used on lines {', '.join(map(str, lines_of[case_id]))}; "
                       "case ids must be unique")
            report.errors.append(Problem(line, case_id, "case_id", message))
        report.errors.extend(row_value_problems(line, case_id, values, protocol))
        for name in features:
            if name not in table.columns:
                continue
            number = pd.to_numeric(pd.Series([table[name].iloc[position]]), errors="coerce").iloc[0]
            if pd.isna(number) or not math.isfinite(float(number)):
                report.errors.append(Problem(line, case_id, name, f"feature value {values.get(name)!r} is not a finite number"))
        rows.append(values)
    _outcome_summary(rows, protocol, report)
    return report
