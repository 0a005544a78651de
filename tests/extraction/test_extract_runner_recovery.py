"""Runner robustness: a worker process that dies (as when the OS kills it for memory) fails only its own case,
and a manifest without the protocol's label column stops the run before any extraction (exit status 2)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk
from typer.testing import CliRunner

from site_client.cli import app
from site_client.extraction import runner

PROTOCOL = """
study: {name: recovery}
label: {column: label, positive: "1", negative: "0"}
extraction:
  families: [morphology, statistics]
"""


def _case(folder: Path, name: str, seed: int) -> tuple[Path, Path]:
    rng = np.random.default_rng(seed)
    image = sitk.GetImageFromArray(rng.normal(100, 20, (12, 12, 12)).astype(np.int16))
    mask_array = np.zeros((12, 12, 12), np.uint8)
    mask_array[3:9, 3:9, 3:9] = 1
    sitk.WriteImage(image, str(folder / f"{name}.nii.gz"))
    sitk.WriteImage(sitk.GetImageFromArray(mask_array), str(folder / f"{name}_mask.nii.gz"))
    return folder / f"{name}.nii.gz", folder / f"{name}_mask.nii.gz"


def test_dead_worker_fails_only_its_case(tmp_path, monkeypatch):
    lines = ["case_id,image,mask,label"]
    for k, name in enumerate(["a", "boom", "b", "c"]):
        image, mask = _case(tmp_path, name, k)
        lines.append(f"{name},{image},{mask},{k % 2}")
    (tmp_path / "m.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (tmp_path / "p.yaml").write_text(PROTOCOL, encoding="utf-8")
    real = runner._extract_one

    def dying(task, *args):
        if task.case_id == "boom":
            os._exit(137)  # what a kill for memory looks like to the pool
        return real(task, *args)

    monkeypatch.setattr(runner, "_extract_one", dying)  # forked workers inherit the patch
    result = runner.extract_cohort(tmp_path / "m.csv", tmp_path / "p.yaml", tmp_path / "f.csv", workers=2, progress=False)
    assert result.failed == [("boom", "worker process died while extracting this case (out of memory or crash)")]
    table = pd.read_csv(tmp_path / "f.csv", dtype=str)
    assert sorted(table["case_id"]) == ["a", "b", "c"]
    errors = pd.read_csv(tmp_path / "f.csv.errors.csv", dtype=str)
    assert errors["case_id"].tolist() == ["boom"]


def test_missing_label_column_is_exit_2(tmp_path):
    image, mask = _case(tmp_path, "a", 0)
    (tmp_path / "m.csv").write_text(f"case_id,image,mask,outcome\na,{image},{mask},1\n", encoding="utf-8")
    (tmp_path / "p.yaml").write_text(PROTOCOL, encoding="utf-8")
    run = CliRunner().invoke(
        app, ["extract", "-m", str(tmp_path / "m.csv"), "-p", str(tmp_path / "p.yaml"), "-o", str(tmp_path / "f.csv")]
    )
    assert run.exit_code == 2
    assert "missing column(s) label named by the protocol" in run.output
    assert not (tmp_path / "f.csv").exists()
