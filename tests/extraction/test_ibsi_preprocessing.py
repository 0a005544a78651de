"""Pre-processing alone against the IBSI CT-phantom diagnostics (configs A-E): grid sizes after interpolation,
ROI box sizes, voxel counts and ROI intensities after interpolation and after re-segmentation.

Reference: the ``int_mask_*``, ``morph_mask_*``, ``img_dim_*_interp_img`` and ``vox_dim_*_interp_img`` rows of
the IBSI reference CSVs; tolerance 0 = exact for integers, 3 significant digits otherwise.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from protocols import load_protocol
from site_client.extraction.case import load_case
from site_client.extraction.diagnostics import roi_diagnostics
from site_client.extraction.ibsi_reference import CONFIGURATIONS, phantom_paths, round_significant

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("configuration", ["config_a", "config_b", "config_c", "config_d", "config_e"])
def test_preprocessing_diagnostics(configuration, reference_data):
    csv_name, protocol_name = CONFIGURATIONS[configuration]
    extraction = load_protocol(REPO / "protocols" / "examples" / protocol_name).extraction
    image, mask = load_case(*phantom_paths(configuration, "nifti", reference_data), extraction)
    ours = roi_diagnostics(image, mask, extraction)
    checked, bad = 0, []
    with (reference_data / "ibsi" / "reference_values" / csv_name).open(encoding="utf-8") as handle:
        for row in csv.DictReader(handle, delimiter=";"):
            tag, text = row["tag"], row["reference value"].strip()
            if tag not in ours or not text:
                continue
            reference, tolerance = float(text), float(row["tolerance"] or 0)
            if tolerance > 0:
                ok = abs(ours[tag] - reference) <= tolerance
            elif reference == int(reference) and abs(reference) < 1e6:
                ok = ours[tag] == reference
            else:
                ok = round_significant(ours[tag]) == round_significant(reference)
            checked += 1
            if not ok:
                bad.append(f"{tag}: ours {ours[tag]}, reference {reference} +- {tolerance}")
    assert checked >= 45, f"only {checked} diagnostics compared"
    assert not bad, "; ".join(bad)
