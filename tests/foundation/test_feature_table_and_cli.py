"""Feature-table intake, DICOM-series intake, and the --help contract of both command-line tools."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import click
import pandas as pd
import pytest
import typer.main
import yaml

from coordinator.cli import app as coordinator_app
from site_client.cli import app as site_app

PROTOCOL = {
    "study": {"name": "table-test"},
    "label": {"column": "malignant", "positive": "1", "negative": "0"},
    "covariates": {"categorical": [{"name": "sex", "levels": ["F", "M"]}]},
    "model": {"features": ["stat_mean", "morph_volume"]},
    "validation": {"min_cases_per_class": 1},
}


def _check(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "site_client", "check", *args], capture_output=True, text=True, timeout=120)


@pytest.fixture()
def protocol_file(tmp_path: Path) -> Path:
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(PROTOCOL))
    return path


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_clean_feature_table_passes(tmp_path: Path, protocol_file: Path, suffix: str) -> None:
    table = pd.DataFrame(
        {"case_id": ["a", "b"], "malignant": ["1", "0"], "sex": ["F", "M"], "stat_mean": [1.0, 2.0], "morph_volume": [3.0, 4.0]}
    )
    path = tmp_path / f"features{suffix}"
    table.to_csv(path, index=False) if suffix == ".csv" else table.to_parquet(path, index=False)
    result = _check("--features", str(path), "--protocol", str(protocol_file), "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout)["class_counts"] == {"1": 1, "0": 1}


def test_bad_feature_table_rows_are_named(tmp_path: Path, protocol_file: Path) -> None:
    path = tmp_path / "features.csv"
    path.write_text(
        "case_id,malignant,sex,stat_mean,morph_volume\n"
        "a,1,F,1.0,3.0\n"
        "b,0,M,nan,4.0\n"
        "a,0,F,2.0,inf\n"
        "c,maybe,Q,2.0,5.0\n"
    )
    result = _check("--features", str(path), "--protocol", str(protocol_file), "--json")
    assert result.returncode == 1
    errors = json.loads(result.stdout)["errors"]
    found = {(e["line"], e["field"]): e["message"] for e in errors}
    assert "not a finite number" in found[(3, "stat_mean")]
    assert found[(2, "case_id")] == found[(4, "case_id")] == "case_id 'a' is used on lines 2, 4; case ids must be unique"
    assert "not a finite number" in found[(4, "morph_volume")]
    assert "not one of the protocol's classes" in found[(5, "malignant")]
    assert "unknown level 'Q'" in found[(5, "sex")]


def test_feature_table_missing_model_feature_column(tmp_path: Path, protocol_file: Path) -> None:
    path = tmp_path / "features.csv"
    path.write_text("case_id,malignant,sex,stat_mean\na,1,F,1.0\nb,0,M,2.0\n")
    result = _check("--features", str(path), "--protocol", str(protocol_file), "--json")
    assert result.returncode == 1
    messages = [e["message"] for e in json.loads(result.stdout)["errors"]]
    assert "column 'morph_volume' required by the protocol is absent" in messages


def test_dicom_series_folder_is_read_and_checked(tmp_path: Path, reference_data: Path, protocol_file: Path) -> None:
    """The CT phantom's DICOM series (60 slices) against its NIfTI mask: same grid, so the row is clean."""
    phantom = reference_data / "ibsi" / "ibsi_1_ct_radiomics_phantom"
    manifest = tmp_path / "m.csv"
    manifest.write_text(
        "case_id,image,mask,malignant,sex\n"
        f"ct,{phantom / 'dicom' / 'image'},{phantom / 'nifti' / 'mask' / 'mask.nii.gz'},1,F\n"
        f"empty_dir,{tmp_path},{phantom / 'nifti' / 'mask' / 'mask.nii.gz'},0,M\n"
    )
    result = _check("--manifest", str(manifest), "--protocol", str(protocol_file), "--json")
    errors = json.loads(result.stdout)["errors"]
    assert [e["line"] for e in errors] == [3], errors
    assert "folder holds no readable DICOM image series" in errors[0]["message"]


def _commands(app: typer.Typer) -> dict[str, click.Command]:
    group = typer.main.get_command(app)
    assert isinstance(group, click.Group)
    return dict(group.commands)


@pytest.mark.parametrize("app", [site_app, coordinator_app], ids=["site-client", "coordinator"])
def test_every_command_has_a_one_line_help(app: typer.Typer) -> None:
    commands = _commands(app)
    assert commands
    for name, command in commands.items():
        summary = (command.help or "").strip()
        assert summary, f"command {name!r} has no help text"
        assert "\n" not in summary.split("\n\n")[0], f"command {name!r}: first paragraph must be one line"


@pytest.mark.parametrize(("module", "app"), [("site_client", site_app), ("coordinator", coordinator_app)])
def test_help_lists_commands_and_each_command_help_runs(module: str, app: typer.Typer) -> None:
    top = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, timeout=120)
    assert top.returncode == 0
    for name in _commands(app):
        assert name in top.stdout
        sub = subprocess.run([sys.executable, "-m", module, name, "--help"], capture_output=True, text=True, timeout=120)
        assert sub.returncode == 0, sub.stderr
        assert "Usage:" in sub.stdout
