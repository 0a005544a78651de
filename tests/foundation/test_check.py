"""``site-client check``: every bad row named with its reason; the clean pyradiomics cases pass."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import yaml

PROTOCOL = {
    "study": {"name": "check-test"},
    "label": {"column": "malignant", "positive": "1", "negative": "0"},
    "covariates": {
        "categorical": [{"name": "sex", "levels": ["F", "M"]}],
        "continuous": [{"name": "age", "min": 18, "max": 100}],
    },
    "validation": {"min_cases_per_class": 1},
}
HEADER = "case_id,image,mask,mask_label,malignant,sex,age"


def _write(path: Path, array: np.ndarray, spacing=(1.0, 1.0, 2.0), origin=(0.0, 0.0, 0.0), direction=None) -> Path:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing[: array.ndim])
    image.SetOrigin(origin[: array.ndim])
    if direction is not None:
        image.SetDirection(direction)
    sitk.WriteImage(image, str(path))
    return path


def _run_check(manifest: Path, protocol: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "site_client", "check", "--manifest", str(manifest), "--protocol", str(protocol), *extra],
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture()
def protocol_file(tmp_path: Path) -> Path:
    path = tmp_path / "protocol.yaml"
    path.write_text(yaml.safe_dump(PROTOCOL))
    return path


@pytest.fixture()
def bad_cohort(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A manifest where each row after the first two has exactly one named problem."""
    data = tmp_path / "cohort"
    data.mkdir()
    rng = np.random.default_rng(0)
    volume = rng.normal(40, 10, (8, 10, 12)).astype(np.float32)
    lesion = np.zeros((8, 10, 12), np.uint8)
    lesion[3:6, 4:7, 5:8] = 1
    _write(data / "img.nii.gz", volume)
    _write(data / "mask.nii.gz", lesion)
    _write(data / "mask_big.nii.gz", np.zeros((9, 10, 12), np.uint8))
    _write(data / "mask_spacing.nii.gz", lesion, spacing=(1.0, 1.0, 3.0))
    _write(data / "mask_origin.nii.gz", lesion, origin=(0.0, 5.0, 0.0))
    _write(data / "mask_direction.nii.gz", lesion, direction=(0, 1, 0, 1, 0, 0, 0, 0, 1))
    _write(data / "mask_empty.nii.gz", np.zeros_like(lesion))
    _write(data / "mask_label2.nii.gz", lesion * 2)
    _write(data / "flat.nii.gz", volume[0])
    _write(data / "flat_mask.nii.gz", lesion[4])
    (data / "corrupt.nii.gz").write_bytes(b"this is not a NIfTI file at all")
    rows = {
        "ok1": "img.nii.gz,mask.nii.gz,1,1,F,54",
        "ok2": "img.nii.gz,mask.nii.gz,1,0,M,61",
        "missing_image": "absent.nii.gz,mask.nii.gz,1,0,F,50",
        "corrupt_image": "corrupt.nii.gz,mask.nii.gz,1,0,F,50",
        "size_mismatch": "img.nii.gz,mask_big.nii.gz,1,0,F,50",
        "spacing_mismatch": "img.nii.gz,mask_spacing.nii.gz,1,0,F,50",
        "origin_mismatch": "img.nii.gz,mask_origin.nii.gz,1,0,F,50",
        "direction_mismatch": "img.nii.gz,mask_direction.nii.gz,1,0,F,50",
        "empty_mask": "img.nii.gz,mask_empty.nii.gz,1,0,F,50",
        "absent_label": "img.nii.gz,mask_label2.nii.gz,1,0,F,50",
        "bad_mask_label": "img.nii.gz,mask.nii.gz,one,0,F,50",
        "label_outside": "img.nii.gz,mask.nii.gz,1,2,F,50",
        "label_missing": "img.nii.gz,mask.nii.gz,1,,F,50",
        "age_missing": "img.nii.gz,mask.nii.gz,1,0,F,",
        "age_range": "img.nii.gz,mask.nii.gz,1,0,F,140",
        "age_text": "img.nii.gz,mask.nii.gz,1,0,F,old",
        "sex_level": "img.nii.gz,mask.nii.gz,1,0,X,50",
        "image_2d": "flat.nii.gz,flat_mask.nii.gz,1,0,F,50",
        "ok1#dup": "img.nii.gz,mask.nii.gz,1,1,F,54",
    }
    expected = {
        "missing_image": "file not found",
        "corrupt_image": "unreadable image",
        "size_mismatch": "size differs",
        "spacing_mismatch": "spacing differs",
        "origin_mismatch": "origin differs",
        "direction_mismatch": "direction differs",
        "empty_mask": "mask is empty",
        "absent_label": "label value 1 absent from the mask; labels present: [2]",
        "bad_mask_label": "'one' is not an integer label value",
        "label_outside": "label value '2' is not one of the protocol's classes ['1', '0']",
        "label_missing": "missing label",
        "age_missing": "missing continuous covariate",
        "age_range": "value 140 outside the plausible range [18, 100]",
        "age_text": "'old' is not a number",
        "sex_level": "unknown level 'X'; allowed: ['F', 'M']",
        "image_2d": "image is 2D (size (12, 10)) but the protocol asks for 3D features",
        "ok1": "case_id 'ok1' is used on manifest lines 2, 20; case ids must be unique: none of these rows is used",
        "ok1#dup": "case_id 'ok1' is used on manifest lines 2, 20; case ids must be unique: none of these rows is used",
    }
    lines = [HEADER] + [f"{case.split('#')[0]},{cells}" for case, cells in rows.items()]
    manifest = data / "manifest.csv"
    manifest.write_text("\n".join(lines) + "\n")
    line_of = {case: number + 2 for number, case in enumerate(rows)}
    return manifest, {f"{case}@{line_of[case]}": reason for case, reason in expected.items()}


def test_every_bad_row_is_named_with_its_reason(bad_cohort, protocol_file) -> None:
    manifest, expected = bad_cohort
    before = sorted(p.name for p in manifest.parent.iterdir())
    result = _run_check(manifest, protocol_file, "--json")
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] is False
    by_line: dict[int, list[str]] = {}
    for error in report["errors"]:
        by_line.setdefault(error["line"], []).append(error["message"])
    for key, reason in expected.items():
        line = int(key.split("@")[1])
        assert any(reason in m for m in by_line.get(line, [])), f"{key}: {by_line.get(line)}"
    # Only the expected rows are bad; the clean row on line 3 is not flagged (line 2 shares its id with line 20).
    assert set(by_line) == {int(k.split("@")[1]) for k in expected}
    # The check never writes into the input folder.
    assert sorted(p.name for p in manifest.parent.iterdir()) == before


def test_human_output_names_rows_and_exits_1(bad_cohort, protocol_file) -> None:
    manifest, _ = bad_cohort
    result = _run_check(manifest, protocol_file)
    assert result.returncode == 1
    assert "is used on manifest lines 2, 20" in result.stdout and "size differs" in result.stdout
    assert "protocol check-test v1 id " in result.stderr


def test_too_few_cases_per_class(tmp_path: Path, bad_cohort) -> None:
    manifest, _ = bad_cohort
    strict = tmp_path / "strict.yaml"
    strict.write_text(yaml.safe_dump({**PROTOCOL, "validation": {"min_cases_per_class": 30}}))
    report = json.loads(_run_check(manifest, strict, "--json").stdout)
    messages = [e["message"] for e in report["errors"] if e["line"] is None]
    assert any("too few cases of class '1'" in m and "at least 30" in m for m in messages), messages


def test_missing_required_manifest_column_exits_2(tmp_path: Path, protocol_file: Path) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text("case_id,image\nA,a.nii.gz\n")
    result = _run_check(manifest, protocol_file)
    assert result.returncode == 2
    assert "missing required column(s) mask" in result.stderr


def test_protocol_column_absent_from_manifest(tmp_path: Path, bad_cohort, protocol_file) -> None:
    manifest, _ = bad_cohort
    text = manifest.read_text().replace(",age", ",years", 1)
    other = manifest.with_name("renamed.csv")
    other.write_text(text)
    report = json.loads(_run_check(other, protocol_file, "--json").stdout)
    assert any(e["line"] is None and "column 'age' required by the protocol is absent" in e["message"] for e in report["errors"])


def test_clean_pyradiomics_cases_pass(tmp_path: Path, reference_data: Path, protocol_file: Path) -> None:
    cases = ["brain1", "brain2", "breast1", "lung1", "lung2"]
    folder = reference_data / "pyradiomics"
    lines = [HEADER]
    for number, case in enumerate(cases):
        lines.append(
            f"{case},{folder / (case + '_image.nrrd')},{folder / (case + '_label.nrrd')},1,{number % 2},{'FM'[number % 2]},{40 + number}"
        )
    manifest = tmp_path / "pyradiomics.csv"
    manifest.write_text("\n".join(lines) + "\n")
    result = _run_check(manifest, protocol_file, "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] and report["rows_checked"] == 5 and report["class_counts"] == {"1": 2, "0": 3}
