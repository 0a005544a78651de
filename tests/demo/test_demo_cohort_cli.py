"""``coordinator demo-cohort``: bad arguments and occupied output folders are refused with a clear message."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from coordinator.cli import app

runner = CliRunner()


def _run(*args: str):
    return runner.invoke(app, ["demo-cohort", *args])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--sites", "1"], "--sites must be between 2 and 26 (a study needs several sites), got 1"),
        (["--sites", "27"], "--sites must be between 2 and 26"),
        (["--seed", "-4"], "--seed must be a non-negative integer, got -4"),
        (
            ["--cases-per-site", "12"],
            "--cases-per-site 12 is too small: site_b (malignant fraction 0.35) would get 4 malignant and 8 benign "
            "lesions; site_d (malignant fraction 0.30) would get 4 malignant and 8 benign lesions; "
            "each class needs at least 5 per site",
        ),
    ],
)
def test_demo_cohort_rejects_bad_arguments_with_reason(tmp_path: Path, args: list[str], message: str) -> None:
    result = _run(str(tmp_path / "out"), *args)
    assert result.exit_code == 2
    assert message in result.output
    assert not (tmp_path / "out").exists()  # nothing written


def test_demo_cohort_too_few_cases_names_the_failing_site(tmp_path: Path) -> None:
    result = _run(str(tmp_path / "out"), "--cases-per-site", "15")
    assert result.exit_code == 2
    assert "site_b" not in result.output  # 5 malignant, 10 benign: enough
    assert "too small: site_d (malignant fraction 0.30) would get 4 malignant and 11 benign lesions;" in result.output


def test_demo_cohort_refuses_a_folder_holding_something_else(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    result = _run(str(out), "--sites", "2", "--cases-per-site", "14")
    assert result.exit_code == 2
    assert f"output folder {out} is not empty and does not hold this cohort (seed 20261123, 2 sites, 14 cases per site)" in result.output
    assert "pass --force to replace it" in result.output
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


def test_demo_cohort_rerun_keeps_the_cohort_and_force_replaces_it(tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = _run(str(out), "--sites", "3", "--cases-per-site", "14", "--seed", "5")
    assert first.exit_code == 0, first.output
    assert "site_c: 14 lesions" in first.output
    manifest = out / "site_a" / "manifest.csv"
    stamp = manifest.stat().st_mtime_ns

    again = _run(str(out), "--sites", "3", "--cases-per-site", "14", "--seed", "5")
    assert again.exit_code == 0 and "cohort already generated with these settings, left unchanged" in again.output
    assert manifest.stat().st_mtime_ns == stamp

    other = _run(str(out), "--sites", "2", "--cases-per-site", "14", "--seed", "6")
    assert other.exit_code == 2 and "not empty and does not hold this cohort (seed 6" in other.output

    forced = _run(str(out), "--sites", "2", "--cases-per-site", "14", "--seed", "6", "--force")
    assert forced.exit_code == 0, forced.output
    assert sorted(p.name for p in out.iterdir()) == ["cohort.json", "site_a", "site_b"]  # stale site_c removed
    assert '"seed": 6' in (out / "cohort.json").read_text()


def test_demo_cohort_ignores_the_scratch_folder_of_a_killed_run(tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / ".demo-cohort-abc123" / "site_a").mkdir(parents=True)
    result = _run(str(out), "--sites", "2", "--cases-per-site", "14")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["cohort.json", "site_a", "site_b"]
