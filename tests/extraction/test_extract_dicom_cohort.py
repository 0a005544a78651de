"""A cohort with the IBSI CT phantom as DICOM series + RTSTRUCT and as NIfTI: same features, header-only size check."""

from __future__ import annotations

import pandas as pd
import pytest

from protocols.schema import Extraction
from site_client.extraction import extract_cohort
from site_client.extraction.intake import check_header_size
from site_client.imaging.inputs import checked_input
from site_client.imaging.errors import CaseInputError

PROTOCOL = """
study: {name: dicom-cohort}
label: {column: label, positive: "1", negative: "0"}
extraction:
  resampling: {spacing: [2.0, 2.0, 2.0], round_intensities: true}
  resegmentation: {range: [-1000, 400]}
  families: [morphology, statistics, intensity_histogram]
"""


def test_dicom_rtstruct_case_equals_nifti_case(reference_data, tmp_path):
    base = reference_data / "ibsi" / "ibsi_1_ct_radiomics_phantom"
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(
        "case_id,image,mask,mask_roi,label\n"
        f"dicom,{base / 'dicom' / 'image'},{base / 'dicom' / 'mask' / 'DCM_RS_00060.dcm'},GTV-1,1\n"
        f"nifti,{base / 'nifti' / 'image' / 'phantom.nii.gz'},{base / 'nifti' / 'mask' / 'mask.nii.gz'},,0\n"
        f"wrong_roi,{base / 'dicom' / 'image'},{base / 'dicom' / 'mask' / 'DCM_RS_00060.dcm'},lung,1\n",
        encoding="utf-8",
    )
    protocol = tmp_path / "protocol.yaml"
    protocol.write_text(PROTOCOL, encoding="utf-8")
    out = tmp_path / "features.csv"
    result = extract_cohort(manifest, protocol, out, workers=1, progress=False)
    table = pd.read_csv(out, dtype={"case_id": str, "label": str}).set_index("case_id")
    assert list(table.index) == ["dicom", "nifti"]
    features = table.drop(columns=["label"])
    # Same voxels; the NIfTI header stores spacing/origin in float32, hence the tiny tolerance.
    pd.testing.assert_series_equal(features.loc["dicom"], features.loc["nifti"], check_names=False, rtol=1e-5)
    # IBSI config-C-like pre-processing: the volume is the configuration C consensus 367 000 +- 6 000 mm^3.
    assert abs(features.loc["dicom", "morph_volume"] - 367_000) <= 6_000
    assert result.failed == [("wrong_roi", f"{base / 'dicom' / 'mask' / 'DCM_RS_00060.dcm'}: ROI 'lung' not in the RTSTRUCT; ROIs present: 'GTV-1'")]


def test_dicom_series_too_large_is_refused_from_headers(reference_data):
    folder = reference_data / "ibsi" / "ibsi_1_ct_radiomics_phantom" / "dicom" / "image"
    with pytest.raises(CaseInputError, match=r"image too large for memory: 2,460,240 voxels \(size \(204, 201, 60\)\)"):
        check_header_size(checked_input(folder, "image", 1_000_000), "image", Extraction(max_voxels=1_000_000))
    check_header_size(checked_input(folder, "image", 3_000_000), "image", Extraction(max_voxels=3_000_000))
