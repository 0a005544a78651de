"""One case's validation, from manifest paths to the pre-processed volume: the single function ``check`` and
``extract`` both run, so a case ``check`` passes cannot fail in ``extract`` for a reason ``check`` could have seen.

Order (cheapest and safest first; nothing is read that an earlier step could have refused):

1. the mask label is an integer;
2. image and mask are regular files (or DICOM folders of regular files) within the size bound (symlinks resolved);
3. both headers are within ``extraction.max_voxels`` (image, label-image mask, DICOM SEG frames) - no voxel read;
4. NIfTI files are complete (a cut file would read as silent zeros);
5. image and mask voxels are read; the mask has integer labels on the image grid and the label is present;
6. pre-processing (IBSI mode: crop, resample, re-segment) and the ROI checks: finite intensities, at least two
   voxels, intensities not constant.

Only the feature computation comes after this.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from protocols.schema import Extraction
from site_client.extraction.integrity import check_complete
from site_client.imaging.errors import CaseInputError
from site_client.imaging.inputs import InputFile, checked_input
from site_client.imaging.masks import dicom_modality, read_mask
from site_client.imaging.readers import dicom_series_files, read_image


@dataclass(frozen=True)
class CaseFiles:
    """What a manifest row names for one lesion."""

    image: Path
    mask: Path
    label_text: str = ""
    roi: str = ""
    series_uid: str = ""


@dataclass
class ValidatedCase:
    """A case ready for feature computation: the read image and binary mask, and (IBSI mode) the prepared volume."""

    image_file: InputFile
    mask_file: InputFile
    image: sitk.Image
    mask: sitk.Image
    volume: object | None = None  # preprocess.Volume in IBSI mode
    notes: list[str] = field(default_factory=list)  # e.g. symbolic links followed


def mask_label(text: str) -> int:
    """The manifest's ``mask_label`` (empty = 1) as an integer, or a CaseInputError naming the value."""
    stripped = text.strip() or "1"
    try:
        return int(stripped)
    except ValueError:
        raise CaseInputError(f"mask_label {text!r} is not an integer label value") from None


def _image_info(path: str) -> sitk.ImageFileReader:
    info = sitk.ImageFileReader()
    info.SetFileName(path)
    try:
        info.ReadImageInformation()
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else "unknown reader error"
        raise CaseInputError(f"{path}: unreadable image ({first})") from None
    return info


def header_size(path: Path, series_uid: str = "") -> tuple[int, ...] | None:
    """Voxel grid size from headers only: an image file, a DICOM series folder (slices x rows x columns) or a
    DICOM SEG (rows x columns x frames). None for a DICOM RTSTRUCT (contours are drawn on the image's grid)."""
    if path.is_dir():
        files = dicom_series_files(path, series_uid)
        return (*_image_info(files[0]).GetSize()[:2], len(files))
    modality = dicom_modality(path)
    if modality == "RTSTRUCT":
        return None
    if modality == "SEG":
        import pydicom

        header = pydicom.dcmread(str(path), stop_before_pixels=True)
        return (int(header.get("Columns", 0)), int(header.get("Rows", 0)), int(header.get("NumberOfFrames", 1) or 1))
    return tuple(_image_info(str(path)).GetSize())


def check_header_size(file: InputFile, role: str, extraction: Extraction, series_uid: str = "") -> None:
    """Refuse an image or mask whose header claims more than ``max_voxels`` voxels, before any voxel is read."""
    size = header_size(file.path, series_uid)
    if size is None:
        return
    voxels = math.prod(size)
    if voxels > extraction.max_voxels:
        raise CaseInputError(
            f"{file.describe()}: {role} too large for memory: {voxels:,} voxels (size {tuple(size)}) from its header "
            f"exceeds the protocol's extraction.max_voxels = {extraction.max_voxels:,}; crop the image around the "
            "lesion or raise the limit"
        )


def _check_roi_intensities(values: np.ndarray) -> None:
    bad = ~np.isfinite(values)
    if bad.any():
        raise CaseInputError(
            f"image holds {int(bad.sum())} NaN or infinite voxel(s) in the region of interest; expected finite intensities"
        )
    if values.size and values.min() == values.max():
        raise CaseInputError(
            f"image intensity is constant ({values.min():.6g}) over the region of interest; spread, texture and "
            "correlation features are undefined (wrong image, or an image of padding values?)"
        )


def _prepare(image: sitk.Image, mask: sitk.Image, extraction: Extraction):
    """IBSI mode: the pre-processed volume; pyradiomics mode: the same 3D / ROI checks on the raw grid."""
    from site_client.extraction.engine import as_3d, check_volume
    from site_client.extraction.preprocess import prepare_volume

    image3, mask3 = as_3d(image, mask, extraction)
    if extraction.mode == "pyradiomics":
        roi = sitk.GetArrayViewFromImage(mask3) > 0
        if not roi.any():
            raise CaseInputError("mask is empty (no voxel in the region of interest)")
        _check_roi_intensities(sitk.GetArrayViewFromImage(image3)[roi].astype(np.float64))
        return None
    volume = prepare_volume(image3, mask3, extraction)
    check_volume(volume)
    _check_roi_intensities(volume.image[volume.int_mask])
    return volume


def validate_case(files: CaseFiles, extraction: Extraction) -> ValidatedCase:
    """Every check up to the feature computation, in the order of the module docstring; CaseInputError on the
    first problem, its message naming the file and what was found."""
    label = mask_label(files.label_text)
    image_file = checked_input(files.image, "image", extraction.max_voxels)
    mask_file = checked_input(files.mask, "mask", extraction.max_voxels)
    check_header_size(image_file, "image", extraction, files.series_uid)
    check_header_size(mask_file, "mask", extraction)
    check_complete(image_file.path)
    check_complete(mask_file.path)
    image = read_image(image_file.path, files.series_uid)
    mask = read_mask(mask_file.path, image, label, files.roi)
    notes = image_file.link_notes("image") + mask_file.link_notes("mask")
    return ValidatedCase(image_file, mask_file, image, mask, _prepare(image, mask, extraction), notes)
