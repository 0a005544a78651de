"""``site-client check`` for time-to-event studies: the outcome columns of each row, then the site as a whole.

Per row: the time must be a finite number >= 0 and the event indicator 0 or 1 (as text ``0``/``1``, or a number
equal to 0 or 1, which is how a feature table written by pandas may hold it). Per site: at least
``label.min_events_per_site`` events (a Cox model learns from events, not cases), and every horizon t* within the
site's follow-up (the longest observed time must reach t*: beyond it the Kaplan-Meier estimate, the IPCW weights
and the calibration at t* are undefined). A horizon at which fewer than k patients are still at risk is a warning:
the site will report no curve point or calibration there (privacy.min_cell_count).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from protocols import Protocol
from protocols.schema import SurvivalLabel
from site_client.check import Problem


def parse_time(text: str | None) -> tuple[float | None, str | None]:
    """(time, None) or (None, reason) for one cell of the time column."""
    if text is None or text.strip() == "":
        return None, "missing follow-up time"
    try:
        value = float(text)
    except ValueError:
        return None, f"follow-up time {text!r} is not a number"
    if not math.isfinite(value):
        return None, f"follow-up time {text!r} is not a finite number"
    if value < 0:
        return None, f"follow-up time {text} is negative; times are measured from the scan and must be >= 0"
    return value, None


def parse_event(text: str | None) -> tuple[int | None, str | None]:
    """(0 or 1, None) or (None, reason) for one cell of the event column."""
    if text is None or text.strip() == "":
        return None, "missing event indicator; expected 1 (event) or 0 (censored)"
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if value not in (0.0, 1.0):
        return None, f"event indicator {text!r} is not 1 (event) or 0 (censored)"
    return int(value), None


def outcome_value_problems(line: int | None, case_id: str, values: dict[str, str], label: SurvivalLabel) -> list[Problem]:
    """Problems of one row's time and event cells."""
    problems = []
    _, time_reason = parse_time(values.get(label.time_column))
    if time_reason:
        problems.append(Problem(line, case_id, label.time_column, time_reason))
    _, event_reason = parse_event(values.get(label.event_column))
    if event_reason:
        problems.append(Problem(line, case_id, label.event_column, event_reason))
    return problems


def cohort_problems(rows: Iterable[dict[str, str]], protocol: Protocol) -> tuple[dict[str, int], list[Problem], list[Problem]]:
    """(counts, errors, warnings) of the whole site from its valid rows: events, follow-up against the horizons."""
    label = protocol.label
    assert isinstance(label, SurvivalLabel)
    k = protocol.privacy.min_cell_count
    outcomes = []
    for values in rows:
        time, _ = parse_time(values.get(label.time_column))
        event, _ = parse_event(values.get(label.event_column))
        if time is not None and event is not None:
            outcomes.append((time, event))
    events = sum(e for _, e in outcomes)
    counts = {"events": events, "censored": len(outcomes) - events}
    errors: list[Problem] = []
    warnings: list[Problem] = []
    if events < label.min_events_per_site:
        errors.append(
            Problem(
                None,
                "",
                label.event_column,
                f"too few events: {events}, the protocol needs at least {label.min_events_per_site} per site",
            )
        )
    longest = max((t for t, _ in outcomes), default=0.0)
    for horizon in label.horizons:
        if horizon > longest:
            errors.append(
                Problem(
                    None,
                    "",
                    label.time_column,
                    f"horizon {horizon:g} {label.time_unit} is beyond this site's follow-up "
                    f"(longest observed time {longest:g} {label.time_unit})",
                )
            )
            continue
        at_risk = sum(1 for t, _ in outcomes if t >= horizon)
        if at_risk < k:
            warnings.append(
                Problem(
                    None,
                    "",
                    label.time_column,
                    f"fewer than {k} patients (privacy.min_cell_count) are still followed at the horizon "
                    f"{horizon:g} {label.time_unit}: this site will report no estimate at that horizon",
                )
            )
    return counts, errors, warnings
