"""One case from files: header-only size check, read image and mask, dispatch to the IBSI or pyradiomics engine."""

from __future__ import annotations

import math
from pathlib import Path

import SimpleITK as sitk

from protocols.schema import Extraction, Protocol
from site_client.extraction.integrity import check_complete
from site_client.imaging.errors import CaseInputError
from site_client.imaging.masks import read_mask
from site_client.imaging.readers import dicom_series_files, read_geometry, read_image


def _extraction(protocol: Protocol | Extraction) -> Extraction:
    return protocol.extraction if isinstance(protocol, Protocol) else protocol


def check_size(path: Path, extraction: Extraction, series_uid: str = "") -> None:
    """Refuse an image with more voxels than ``max_voxels`` from its header, before any voxel is read."""
    if path.is_dir():
        # A DICOM series: slices x the first slice's rows x columns, from headers only.
        files = dicom_series_files(path, series_uid)
        info = sitk.ImageFileReader()
        info.SetFileName(files[0])
        try:
            info.ReadImageInformation()
        except RuntimeError as exc:
            raise CaseInputError(f"{files[0]}: unreadable DICOM header ({str(exc).strip().splitlines()[-1]})") from None
        size = (*info.GetSize()[:2], len(files))
    else:
        size = read_geometry(path, series_uid).size
    voxels = math.prod(size)
    if voxels > extraction.max_voxels:
        raise CaseInputError(
            f"{path}: image too large for memory: {voxels:,} voxels (size {tuple(size)}) exceeds the protocol's "
            f"extraction.max_voxels = {extraction.max_voxels:,}; crop the image around the lesion or raise the limit"
        )


def load_case(
    image: Path, mask: Path, extraction: Extraction, label: int = 1, roi: str = "", series_uid: str = ""
) -> tuple[sitk.Image, sitk.Image]:
    """Image and binary mask on the image grid (label image, RTSTRUCT or SEG)."""
    check_size(image, extraction, series_uid)
    check_complete(image)
    check_complete(mask)
    loaded = read_image(image, series_uid)
    return loaded, read_mask(mask, loaded, label, roi)


def extract_case(
    image: sitk.Image | str | Path,
    mask: sitk.Image | str | Path,
    protocol: Protocol | Extraction,
    label: int = 1,
    roi: str = "",
    series_uid: str = "",
) -> dict[str, float]:
    """Features of one lesion, named by IBSI tags (IBSI mode) or pyradiomics names (pyradiomics mode).

    ``image`` / ``mask`` are SimpleITK images on the same grid (mask: binary or label ``label``) or paths.
    Raises :class:`CaseInputError` with a message naming the problem for bad input.
    """
    extraction = _extraction(protocol)
    if not isinstance(image, sitk.Image):
        image, mask = load_case(Path(image), Path(mask), extraction, label, roi, series_uid)
    elif not isinstance(mask, sitk.Image):
        mask = read_mask(Path(mask), image, label, roi)
    else:
        mask = sitk.Cast(mask == label, sitk.sitkUInt8)
    if extraction.mode == "pyradiomics":
        from site_client.extraction.pyradiomics_mode import extract_pyradiomics

        features = extract_pyradiomics(image, mask, extraction)
        bad = [name for name, value in features.items() if not math.isfinite(value)]
        if bad:
            raise CaseInputError(f"feature {bad[0]} is not finite ({features[bad[0]]}); pyradiomics could not compute it")
        return features
    from site_client.extraction.engine import extract_ibsi

    return extract_ibsi(image, mask, extraction)
