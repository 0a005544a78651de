"""Lesion masks: label images on the image grid, or DICOM RTSTRUCT / SEG rasterised onto it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from site_client.imaging.errors import CaseInputError
from site_client.imaging.geometry import Geometry, geometry_mismatches
from site_client.imaging.readers import read_image


def dicom_modality(path: Path) -> str:
    """Modality of a single DICOM file ('RTSTRUCT', 'SEG', ...) or '' when the file is not DICOM."""
    if not path.is_file():
        return ""
    with path.open("rb") as handle:
        handle.seek(128)
        if handle.read(4) != b"DICM":
            return ""
    import pydicom

    try:
        return str(pydicom.dcmread(str(path), stop_before_pixels=True, specific_tags=["Modality"]).get("Modality", ""))
    except Exception as exc:  # pydicom raises many types on corrupt headers
        raise CaseInputError(f"{path}: unreadable DICOM header ({exc})") from None


def _number(value: float) -> str:
    text = f"{value:.6g}"
    return text if any(c in text for c in ".einf") else text + ".0"


def _refuse_non_integer(path: Path, values: np.ndarray) -> None:
    """A label mask holds integer labels; a float mask with fractions (a probability map, a resampled mask) does not.

    Comparing such values with the label would pick an arbitrary subset, or none, of the lesion.
    """
    if values.dtype.kind != "f":
        return
    fractional = values[values != np.round(values)]
    if fractional.size:
        nonzero = values[values != 0]
        raise CaseInputError(
            f"{path}: mask has non-integer values {_number(float(nonzero.min()))}–{_number(float(nonzero.max()))} "
            f"({fractional.size:,} voxel(s) with a fraction); expected integer labels"
        )


def read_label_mask(path: Path, image_geometry: Geometry, label: int) -> sitk.Image:
    """Binary (uint8) mask of voxels equal to ``label`` from a label image on the image's grid."""
    mask = read_image(path)
    problems = geometry_mismatches(image_geometry, Geometry.of(mask))
    if problems:
        raise CaseInputError(f"{path}: mask does not match the image grid: " + "; ".join(problems))
    values = sitk.GetArrayViewFromImage(mask)
    _refuse_non_integer(path, values)
    selected = values == label
    if not selected.any():
        present = np.unique(values)
        nonzero = [int(v) for v in present if v != 0][:10]
        if not nonzero:
            raise CaseInputError(f"{path}: mask is empty (no non-zero voxel)")
        raise CaseInputError(f"{path}: label value {label} absent from the mask; labels present: {nonzero}")
    binary = sitk.GetImageFromArray(selected.astype(np.uint8))
    binary.CopyInformation(mask)
    return binary


def read_mask(path: Path, image: sitk.Image, label: int = 1, roi: str = "") -> sitk.Image:
    """Binary mask on ``image``'s grid from a label image, a DICOM RTSTRUCT (``roi``) or a DICOM SEG (``roi``)."""
    if not path.exists():
        raise CaseInputError(f"{path}: file not found")
    modality = dicom_modality(path)
    if modality == "RTSTRUCT":
        from site_client.imaging.rtstruct import rasterise_rtstruct

        return rasterise_rtstruct(path, image, roi)
    if modality == "SEG":
        from site_client.imaging.dicom_seg import read_dicom_seg

        return read_dicom_seg(path, image, roi)
    return read_label_mask(path, Geometry.of(image), label)
