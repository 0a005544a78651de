"""DICOM RTSTRUCT and SEG masks on the IBSI CT phantom.

References: the IBSI's own NIfTI mask of the same phantom (voxel-identical DICOM image), and a DICOM SEG written
by highdicom from that NIfTI mask.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from site_client.imaging.dicom_seg import read_dicom_seg
from site_client.imaging.errors import CaseInputError
from site_client.imaging.masks import read_mask
from site_client.imaging.readers import read_image
from site_client.imaging.rtstruct import fill_polygon


@pytest.fixture(scope="module")
def phantom(reference_data):
    base = reference_data / "ibsi" / "ibsi_1_ct_radiomics_phantom"
    image = read_image(base / "dicom" / "image")
    reference = sitk.GetArrayFromImage(sitk.ReadImage(str(base / "nifti" / "mask" / "mask.nii.gz"))) > 0
    return base, image, reference


def test_rtstruct_equals_ibsi_nifti_mask(phantom):
    base, image, reference = phantom
    mask = read_mask(base / "dicom" / "mask" / "DCM_RS_00060.dcm", image, roi="GTV-1")
    array = sitk.GetArrayFromImage(mask) > 0
    assert array.sum() == 125_256
    assert np.array_equal(array, reference)


def test_rtstruct_roi_errors(phantom, tmp_path):
    base, image, _ = phantom
    path = base / "dicom" / "mask" / "DCM_RS_00060.dcm"
    with pytest.raises(CaseInputError, match=r"ROI 'liver' not in the RTSTRUCT; ROIs present: 'GTV-1'"):
        read_mask(path, image, roi="liver")
    dataset = pydicom.dcmread(str(path))
    extra = copy.deepcopy(dataset.StructureSetROISequence[0])
    extra.ROINumber, extra.ROIName = 2, "GTV-2"
    dataset.StructureSetROISequence.append(extra)
    contours = copy.deepcopy(dataset.ROIContourSequence[0])
    contours.ReferencedROINumber = 2
    dataset.ROIContourSequence.append(contours)
    two = tmp_path / "two_rois.dcm"
    dataset.save_as(str(two))
    with pytest.raises(CaseInputError, match=r"2 ROIs with contours .*'GTV-1', 'GTV-2'.*mask_roi column"):
        read_mask(two, image)
    assert sitk.GetArrayFromImage(read_mask(two, image, roi="gtv-2")).sum() == 125_256


def test_rtstruct_on_wrong_image_is_refused(phantom):
    base, image, _ = phantom
    shifted = sitk.Image(image)
    shifted.SetOrigin(tuple(np.array(image.GetOrigin()) + np.array([0.0, 0.0, 500.0])))
    with pytest.raises(CaseInputError, match=r"covers no voxel of the image \(26 contour\(s\) lie off the image slices"):
        read_mask(base / "dicom" / "mask" / "DCM_RS_00060.dcm", shifted)


def test_fill_polygon_even_odd_hole():
    square = (np.array([1.5, 8.5, 8.5, 1.5]), np.array([1.5, 1.5, 8.5, 8.5]))
    hole = (np.array([3.5, 6.5, 6.5, 3.5]), np.array([3.5, 3.5, 6.5, 6.5]))
    filled = fill_polygon(*square, (10, 10)) ^ fill_polygon(*hole, (10, 10))
    assert filled.sum() == 7 * 7 - 3 * 3
    assert not filled[5, 5] and filled[2, 2] and not filled[0, 0]


@pytest.fixture(scope="module")
def seg_file(phantom, tmp_path_factory):
    import highdicom as hd
    from pydicom.sr.codedict import codes

    base, _, reference = phantom
    sources = [pydicom.dcmread(str(f)) for f in sorted((base / "dicom" / "image").glob("*.dcm"))]
    sources.sort(key=lambda d: float(d.ImagePositionPatient[2]))
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=label,
            segmented_property_category=codes.SCT.Tissue,
            segmented_property_type=codes.SCT.Tissue,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
        )
        for number, label in ((1, "GTV-1"), (2, "core"))
    ]
    core = np.zeros_like(reference)
    core[30, 80:90, 80:90] = reference[30, 80:90, 80:90]
    pixels = np.stack([reference, core], axis=-1).astype(np.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the phantom's patient name "PAT1" has one component
        segmentation = _segmentation(hd, sources, pixels, descriptions)
    path = tmp_path_factory.mktemp("seg") / "seg.dcm"
    segmentation.save_as(str(path))
    return path, core


def _segmentation(hd, sources, pixels, descriptions):
    return hd.seg.Segmentation(
        source_images=sources,
        pixel_array=pixels,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=99,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="fedradval tests",
        manufacturer_model_name="test",
        software_versions="0",
        device_serial_number="0",
    )


def test_dicom_seg_equals_nifti_mask(phantom, seg_file):
    _, image, reference = phantom
    path, core = seg_file
    gtv = sitk.GetArrayFromImage(read_mask(path, image, roi="GTV-1")) > 0
    assert np.array_equal(gtv, reference)
    assert np.array_equal(sitk.GetArrayFromImage(read_mask(path, image, roi="core")) > 0, core)


def test_dicom_seg_errors(phantom, seg_file):
    _, image, _ = phantom
    path, _ = seg_file
    with pytest.raises(CaseInputError, match=r"2 segments in the DICOM SEG \('GTV-1', 'core'\); name the one"):
        read_dicom_seg(path, image, "")
    with pytest.raises(CaseInputError, match=r"segment 'liver' not in the DICOM SEG"):
        read_dicom_seg(path, image, "liver")
    half = sitk.Image(image)
    half.SetOrigin(tuple(np.array(image.GetOrigin()) + np.array([0.4, 0.0, 0.0])))
    with pytest.raises(CaseInputError, match=r"not on the image grid .*made on this image series"):
        read_dicom_seg(path, half, "GTV-1")
