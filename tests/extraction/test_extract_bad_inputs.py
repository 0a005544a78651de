"""Every bad input of issue 3 fails its own case with a clear message; the other cases of the run come out.

One cohort run (2 worker processes) holds two good cases and one case per bad input; each failure message is
checked in ``OUT.errors.csv``, and the good cases must be in the table with finite features.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from typer.testing import CliRunner

from site_client.cli import app
from site_client.extraction import extract_cohort

PROTOCOL_YAML = """
study: {name: bad-inputs}
label: {column: label, positive: "1", negative: "0"}
extraction:
  resampling: {spacing: [1.0, 1.0, 1.0]}
  resegmentation: {range: [-1000, 3000]}
  discretisation: {method: fixed_bin_width, bin_width: 25}
  max_voxels: 20000
"""


def _write(array: np.ndarray, path: Path, spacing=(1.0, 1.0, 1.0)) -> Path:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing[: array.ndim])
    sitk.WriteImage(image, str(path))
    return path


def _ball(shape=(16, 16, 16), radius=5.0) -> np.ndarray:
    grid = np.indices(shape) - (np.array(shape)[:, None, None, None] - 1) / 2
    return (np.sqrt((grid**2).sum(axis=0)) <= radius).astype(np.uint8)


def _intensities(shape=(16, 16, 16), seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.normal(100, 40, size=shape)).astype(np.int16)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("cohort")
    rows = []

    def add(case_id, image, mask, label="1"):
        rows.append(f"{case_id},{image},{mask},{label}")

    good_mask = _write(_ball(), root / "good_mask.nii.gz")
    add("good_a", _write(_intensities(seed=1), root / "good_a.nii.gz"), good_mask, "1")
    add("good_b", _write(_intensities(seed=2), root / "good_b.nrrd"), good_mask, "0")
    corrupt = root / "corrupt.nii.gz"
    corrupt.write_bytes(b"this is not a NIfTI file at all" * 10)
    add("corrupt", corrupt, good_mask)
    truncated = root / "truncated.nii"
    _write(_intensities(seed=3), truncated)
    truncated.write_bytes(truncated.read_bytes()[:600])
    add("truncated", truncated, good_mask)
    truncated_gz = root / "truncated_gz.nii.gz"
    _write(_intensities(seed=3), truncated_gz)
    truncated_gz.write_bytes(truncated_gz.read_bytes()[:-100])
    add("truncated_gz", truncated_gz, good_mask)
    add("geometry", _write(_intensities(seed=4), root / "geometry.nii.gz"),
        _write(_ball(), root / "geometry_mask.nii.gz", spacing=(1.0, 1.0, 2.0)))
    # One 0.4 mm voxel: after resampling to 1 mm its partial volume is far below 0.5.
    tiny = np.zeros((16, 16, 16), np.uint8)
    tiny[8, 8, 8] = 1
    add("empty_after_resampling", _write(_intensities(seed=5), root / "tiny_img.nii.gz", (0.4, 0.4, 0.4)),
        _write(tiny, root / "tiny_mask.nii.gz", (0.4, 0.4, 0.4)))
    add("empty_after_reseg", _write(np.full((16, 16, 16), 5000, np.int16), root / "bright.nii.gz"), good_mask)
    add("one_voxel", _write(_intensities(seed=6), root / "one_img.nii.gz"), _write(tiny, root / "one_mask.nii.gz"))
    nan_image = _intensities(seed=7).astype(np.float32)
    nan_image[8, 8, 8] = np.nan
    nan_image[7, 8, 8] = np.inf
    add("nan_voxels", _write(nan_image, root / "nan.nrrd"), good_mask)  # the NIfTI writer drops NaN
    flat = _intensities((1, 16, 16), seed=8)[0]
    flat_mask = _ball((1, 16, 16))[0]
    add("image_2d", _write(flat, root / "flat.nii.gz"), _write(flat_mask, root / "flat_mask.nii.gz"))
    add("too_large", _write(np.zeros((30, 30, 30), np.int16), root / "large.nii.gz"),
        _write(np.ones((30, 30, 30), np.uint8), root / "large_mask.nii.gz"))
    manifest = root / "manifest.csv"
    manifest.write_text("case_id,image,mask,label\n" + "\n".join(rows) + "\n", encoding="utf-8")
    protocol_path = root / "protocol.yaml"
    protocol_path.write_text(PROTOCOL_YAML, encoding="utf-8")
    out = root / "features.csv"
    result = extract_cohort(manifest, protocol_path, out, workers=2, progress=False)
    errors = pd.read_csv(out.with_name(out.name + ".errors.csv"), dtype=str).set_index("case_id")["error"]
    return result, pd.read_csv(out, dtype={"case_id": str, "label": str}), errors, manifest, protocol_path, out


def test_good_cases_come_out_with_finite_features(cohort):
    result, table, errors, *_ = cohort
    assert list(table["case_id"]) == ["good_a", "good_b"]
    assert list(table["label"]) == ["1", "0"]
    assert list(table.columns[:3]) == ["case_id", "label", "morph_volume"]
    features = table.drop(columns=["case_id", "label"]).to_numpy(dtype=float)
    assert np.isfinite(features).all()
    assert result.rows_written == 2 and len(result.failed) == len(errors) == 10


@pytest.mark.parametrize(
    "case_id, expected",
    [
        ("corrupt", ["corrupt.nii.gz", "unreadable image"]),
        ("truncated", ["truncated.nii", "unreadable image", "truncated NIfTI: 600 bytes of 8,544 expected"]),
        ("truncated_gz", ["truncated_gz.nii.gz", "unreadable image", "corrupt or truncated"]),
        ("geometry", ["geometry_mask.nii.gz", "does not match the image grid", "spacing differs"]),
        ("empty_after_resampling", ["empty after resampling", "partial-volume threshold 0.5"]),
        ("empty_after_reseg", ["empty after re-segmentation", "range [-1000.0, 3000.0]", "5000"]),
        ("one_voxel", ["1 voxel", "one-voxel ROI"]),
        ("nan_voxels", ["2 NaN or infinite voxel(s)", "expected finite intensities"]),
        ("image_2d", ["image is 2D", "protocol asks for 3D"]),
        ("too_large", ["large.nii.gz", "too large for memory", "27,000 voxels", "max_voxels = 20,000"]),
    ],
)
def test_bad_input_message(cohort, case_id, expected):
    errors = cohort[2]
    assert case_id in errors.index, f"{case_id} did not fail"
    for part in expected:
        assert part in errors[case_id], f"{case_id}: {part!r} not in {errors[case_id]!r}"


def test_rerun_skips_cached_cases_and_keeps_table(cohort):
    result, table, _, manifest, protocol_path, out = cohort
    again = extract_cohort(manifest, protocol_path, out, workers=1, progress=False)
    assert again.skipped_from_cache == 2 and len(again.failed) == 10
    pd.testing.assert_frame_equal(pd.read_csv(out, dtype={"case_id": str, "label": str}), table)
    assert not any(p.name.endswith(".tmp") for p in out.parent.iterdir()), "temporary file left behind"
    assert (out.parent / "features.csv.cache").is_dir()


def test_cli_exit_status_and_parquet(cohort, tmp_path):
    _, table, _, manifest, protocol_path, _ = cohort
    out = tmp_path / "f.parquet"
    run = CliRunner().invoke(
        app, ["extract", "-m", str(manifest), "-p", str(protocol_path), "-o", str(out), "-w", "1", "--no-progress"]
    )
    assert run.exit_code == 1, run.output
    assert "2 case(s) written" in run.output and "10 failed" in run.output
    written = pd.read_parquet(out)
    assert list(written["case_id"]) == ["good_a", "good_b"]
    assert math.isclose(written["morph_volume"][0], table["morph_volume"][0], rel_tol=1e-12)
