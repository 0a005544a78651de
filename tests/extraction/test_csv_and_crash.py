"""CSV outputs never carry a live spreadsheet formula, and a ``kill -9`` during ``extract`` loses nothing (issue 13)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from site_client.tables import neutralise_cell, read_table, restore_cell

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "value, written",
    [
        ('=HYPERLINK("http://x","y")', '\'=HYPERLINK("http://x","y")'),
        ("+SUM(A1)", "'+SUM(A1)"),
        ("-cmd|' /C calc'!A0", "'-cmd|' /C calc'!A0"),
        ("@SUM(1)", "'@SUM(1)"),
        ("\tx", "'\tx"),
        ("\rx", "'\rx"),
        ("'=already quoted", "''=already quoted"),  # so that reading strips exactly one quote back
        ("-3.5", "-3.5"),                           # a number in a text column stays a number
        ("+1", "+1"),
        ("'plain", "'plain"),
        ("a=b", "a=b"),
        ("", ""),
    ],
)
def test_cells_a_spreadsheet_would_evaluate_get_a_leading_quote_and_read_back_unchanged(value, written):
    assert neutralise_cell(value) == written
    assert restore_cell(written) == value


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    from demo.cohort import generate_cohort

    root = tmp_path_factory.mktemp("demo")
    manifests = generate_cohort(root / "cohort", sites=2, cases_per_site=14, progress=lambda s: None)
    return manifests[0], REPO / "protocols" / "examples" / "demo_study.yaml"


def _extract_command(manifest: Path, protocol: Path, out: Path, workers: int = 1) -> list[str]:
    return [sys.executable, "-m", "site_client", "extract", "-m", str(manifest), "-p", str(protocol), "-o", str(out),
            "-w", str(workers), "--no-progress"]


def test_csv_outputs_neutralise_formulas_never_numbers_and_readers_undo_it(demo, tmp_path):
    manifest, protocol = demo
    lines = manifest.read_text(encoding="utf-8").splitlines()
    evil = '=HYPERLINK("http://evil.example","open")'
    cells = lines[1].split(",")
    cells[0] = f'"{evil.replace(chr(34), chr(34) * 2)}"'
    lines[1] = ",".join(cells)
    cells = lines[2].split(",")
    cells[0], cells[1] = "@missing", "images/absent.nii.gz"
    lines[2] = ",".join(cells)
    edited = manifest.with_name("evil.csv")
    edited.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "features.csv"
    run = subprocess.run(_extract_command(edited, protocol, out), capture_output=True, text=True, timeout=600)
    assert run.returncode == 1, run.stderr  # the @missing case fails

    raw = pd.read_csv(out, dtype={"case_id": str})  # as a spreadsheet would see the text
    assert raw["case_id"].iloc[0] == "'" + evil
    assert not any(str(c).startswith(("=", "+", "-", "@")) for c in raw["case_id"])
    numeric = raw.columns[4:]
    assert all(pd.api.types.is_float_dtype(raw[c]) for c in numeric), "a numeric column was touched"
    assert (raw[numeric] < 0).to_numpy().any(), "the table should hold negative numbers, written as numbers"
    assert "'-" not in out.read_text(encoding="utf-8")

    assert read_table(out)["case_id"].iloc[0] == evil  # the project's reader undoes it
    errors = pd.read_csv(out.with_name("features.csv.errors.csv"), dtype=str)
    assert errors["case_id"].tolist() == ["'@missing"]
    assert errors["error"].iloc[0].endswith("absent.nii.gz: file not found")

    check = subprocess.run([sys.executable, "-m", "site_client", "check", "-f", str(out), "-p", str(protocol), "--json"],
                           capture_output=True, text=True, timeout=300)
    assert check.returncode in (0, 1) and "'=HYPERLINK" not in check.stdout, "check reads the id back unquoted"


def test_kill_9_during_extract_then_rerun_gives_the_identical_table(demo, tmp_path):
    manifest, protocol = demo
    reference = tmp_path / "reference" / "features.csv"
    done = subprocess.run(_extract_command(manifest, protocol, reference), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr

    out = tmp_path / "killed" / "features.csv"
    process = subprocess.Popen(_extract_command(manifest, protocol, out, workers=2), start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    cache = out.with_name("features.csv.cache")
    deadline = time.monotonic() + 300
    while process.poll() is None and time.monotonic() < deadline:
        if cache.is_dir() and len(list(cache.glob("*.json"))) >= 3:
            break
        time.sleep(0.05)
    assert process.poll() is None, "extract finished before it could be killed"
    os.killpg(process.pid, signal.SIGKILL)  # the command and its worker processes
    process.wait(timeout=60)
    cached = len(list(cache.glob("*.json")))
    assert 3 <= cached < 14 and not out.exists(), "killed mid-run: some cases cached, no table yet"

    again = subprocess.run(_extract_command(manifest, protocol, out), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    assert f"({cached} skipped" in again.stderr
    assert out.read_bytes() == reference.read_bytes()
    assert not out.with_name("features.csv.errors.csv").exists()
    assert not [p.name for p in out.parent.iterdir() if p.name.endswith(".tmp")]
    pd.testing.assert_frame_equal(read_table(out), read_table(reference))
    np.testing.assert_array_equal(read_table(out).iloc[:, 4:].to_numpy(), read_table(reference).iloc[:, 4:].to_numpy())
    shutil.rmtree(cache)
