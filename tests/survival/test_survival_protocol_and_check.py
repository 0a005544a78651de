"""The survival form of `label`, and `site-client check` on survival feature tables: every bad input named."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from protocols.errors import ProtocolError
from protocols.identity import protocol_id
from protocols.loader import load_protocol, parse_protocol
from protocols.schema import SurvivalLabel, is_survival

EXAMPLES = Path(__file__).resolve().parents[2] / "protocols" / "examples"

SURVIVAL_LABEL = {
    "type": "survival",
    "time_column": "os_months",
    "event_column": "death",
    "time_unit": "months",
    "horizons": [12, 24],
    "min_events_per_site": 3,
}
PROTOCOL = {
    "study": {"name": "survival-check"},
    "label": SURVIVAL_LABEL,
    "covariates": {"continuous": [{"name": "age", "min": 18, "max": 100}]},
    "model": {"features": ["f1"]},
    "privacy": {"min_cell_count": 2},
}


def test_the_binary_label_resolves_as_before_the_survival_form() -> None:
    """The binary label's resolved form (what the protocol id hashes) is the one the code wrote before the survival
    form existed (main at 0c4b292, printed by that code): adding the survival form changes no binary protocol's id.
    (Ids do change when other sections gain fields, e.g. the privacy budgets; that is on purpose.)"""
    for name in ("demo_study.yaml", "liver_lesion_study.yaml"):
        label = load_protocol(EXAMPLES / name).model_dump(mode="json")["label"]
        assert label == {"column": "malignant", "positive": "1", "negative": "0"}


def test_survival_example_protocol_loads() -> None:
    protocol = load_protocol(EXAMPLES / "survival_study.yaml")
    assert is_survival(protocol) and isinstance(protocol.label, SurvivalLabel)
    assert protocol.label.columns() == [protocol.label.time_column, protocol.label.event_column]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"event_column": "os_months"}, "label.survival: got {...}; time_column and event_column must differ, both are 'os_months'"),
        ({"horizons": [24, 12]}, "label.survival.horizons: got [24, 12]; horizons must be strictly increasing, got [24.0, 12.0]"),
        ({"horizons": [0, 12]}, "label.survival.horizons: got [0, 12]; horizons must be positive finite times, got [0.0, 12.0]"),
        ({"horizons": []}, "label.survival.horizons: got []; List should have at least 1 item after validation, not 0"),
        ({"time_unit": "fortnights"}, "label.survival.time_unit: got 'fortnights'; Input should be 'days', 'weeks', 'months' or 'years'"),
        ({"min_events_per_site": 0}, "label.survival.min_events_per_site: got 0; Input should be greater than or equal to 1"),
        ({"positive": "1"}, "label.survival.positive: unknown field (value '1'); check the spelling against docs/protocol.md"),
    ],
)
def test_bad_survival_labels_name_the_field(change: dict, message: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_protocol({**PROTOCOL, "label": {**SURVIVAL_LABEL, **change}})
    assert message in caught.value.problems


def test_outcome_column_must_not_be_a_covariate() -> None:
    data = {**PROTOCOL, "covariates": {"continuous": [{"name": "os_months", "min": 0, "max": 100}]}}
    with pytest.raises(ProtocolError) as caught:
        parse_protocol(data)
    assert caught.value.problems == [
        "(top level): got {...}; the label column 'os_months' must not be a covariate (it is the outcome)"
    ]


def _check(tmp_path: Path, rows: list[dict], protocol: dict = PROTOCOL) -> tuple[int, dict]:
    protocol_path = tmp_path / "protocol.yaml"
    protocol_path.write_text(yaml.safe_dump(protocol))
    table = tmp_path / "features.csv"
    pd.DataFrame(rows).to_csv(table, index=False)
    done = subprocess.run(
        [sys.executable, "-m", "site_client", "check", "--features", str(table), "--protocol", str(protocol_path), "--json"],
        capture_output=True, text=True, timeout=300,
    )
    return done.returncode, json.loads(done.stdout)


def _row(i: int, time: object, death: object) -> dict:
    return {"case_id": f"c{i}", "os_months": time, "death": death, "age": 60, "f1": 0.5 * i}


def test_check_names_every_bad_time_and_event(tmp_path: Path) -> None:
    rows = [_row(i, 30 + i, i % 2) for i in range(8)]
    rows += [_row(8, -3, 1), _row(9, "", 0), _row(10, "soon", 1), _row(11, 5, 2), _row(12, 7, ""), _row(13, 9, "yes")]
    code, report = _check(tmp_path, rows)
    assert code == 1
    found = {(p["line"], p["field"], p["message"]) for p in report["errors"]}
    assert found == {
        (10, "os_months", "follow-up time -3 is negative; times are measured from the scan and must be >= 0"),
        (11, "os_months", "missing follow-up time"),
        (12, "os_months", "follow-up time 'soon' is not a number"),
        (13, "death", "event indicator '2' is not 1 (event) or 0 (censored)"),
        (14, "death", "missing event indicator; expected 1 (event) or 0 (censored)"),
        (15, "death", "event indicator 'yes' is not 1 (event) or 0 (censored)"),
    }
    assert report["class_counts"] == {"events": 4, "censored": 4}  # counted over the valid rows only


def test_check_site_level_events_and_follow_up(tmp_path: Path) -> None:
    rows = [_row(i, 6 + i, 1 if i < 2 else 0) for i in range(10)]  # 2 events; longest follow-up 15 months
    code, report = _check(tmp_path, rows, {**PROTOCOL, "privacy": {"min_cell_count": 5}})  # 4 followed to 12
    assert code == 1
    messages = [(p["line"], p["field"], p["message"]) for p in report["errors"]]
    assert messages == [
        (None, "death", "too few events: 2, the protocol needs at least 3 per site"),
        (None, "os_months", "horizon 24 months is beyond this site's follow-up (longest observed time 15 months)"),
    ]
    assert [p["message"] for p in report["warnings"]] == [
        "fewer than 5 patients (privacy.min_cell_count) are still followed at the horizon 12 months: "
        "this site will report no estimate at that horizon"
    ]


def test_clean_survival_table_passes_and_missing_columns_are_named(tmp_path: Path) -> None:
    rows = [_row(i, 10 + 2 * i, i % 2) for i in range(16)]
    code, report = _check(tmp_path, rows)
    assert (code, report["errors"], report["class_counts"]) == (0, [], {"events": 8, "censored": 8})
    code, report = _check(tmp_path, [{k: v for k, v in r.items() if k != "death"} for r in rows])
    assert code == 1
    assert {"line": None, "case_id": "", "field": "death", "message": "column 'death' required by the protocol is absent"} in report["errors"]


def test_manifest_check_reads_survival_columns_beside_images(tmp_path: Path) -> None:
    import numpy as np
    import SimpleITK as sitk

    volume = sitk.GetImageFromArray(np.random.default_rng(0).normal(40, 10, (6, 8, 8)).astype(np.float32))
    mask_array = np.zeros((6, 8, 8), np.uint8)
    mask_array[2:4, 3:6, 3:6] = 1
    sitk.WriteImage(volume, str(tmp_path / "image.nii.gz"))
    sitk.WriteImage(sitk.GetImageFromArray(mask_array), str(tmp_path / "mask.nii.gz"))
    lines = ["case_id,image,mask,os_months,death,age"]
    lines += [f"c{i},image.nii.gz,mask.nii.gz,{30 + i},{i % 2},60" for i in range(8)]
    lines += ["c8,image.nii.gz,mask.nii.gz,-1,1,60", "c9,image.nii.gz,mask.nii.gz,40,dead,60"]
    (tmp_path / "manifest.csv").write_text("\n".join(lines) + "\n")
    protocol_path = tmp_path / "protocol.yaml"
    protocol_path.write_text(yaml.safe_dump(PROTOCOL))
    done = subprocess.run(
        [sys.executable, "-m", "site_client", "check", "--manifest", str(tmp_path / "manifest.csv"),
         "--protocol", str(protocol_path), "--json"],
        capture_output=True, text=True, timeout=300,
    )
    report = json.loads(done.stdout)
    assert done.returncode == 1
    assert [(p["line"], p["field"], p["message"]) for p in report["errors"]] == [
        (10, "os_months", "follow-up time -1 is negative; times are measured from the scan and must be >= 0"),
        (11, "death", "event indicator 'dead' is not 1 (event) or 0 (censored)"),
    ]
    assert report["class_counts"] == {"events": 4, "censored": 4}
