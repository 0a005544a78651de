"""One case from files: validated by :mod:`site_client.extraction.intake` (the same steps ``check`` runs), then
dispatched to the IBSI or pyradiomics engine."""

from __future__ import annotations

import math
from pathlib import Path

import SimpleITK as sitk

from protocols.schema import Extraction, Protocol
from site_client.extraction.intake import CaseFiles, ValidatedCase, validate_case
from site_client.imaging.errors import CaseInputError
from site_client.imaging.masks import read_mask


def _extraction(protocol: Protocol | Extraction) -> Extraction:
    return protocol.extraction if isinstance(protocol, Protocol) else protocol


def load_case(
    image: Path, mask: Path, extraction: Extraction, label: int = 1, roi: str = "", series_uid: str = ""
) -> tuple[sitk.Image, sitk.Image]:
    """Image and binary mask on the image grid (label image, RTSTRUCT or SEG), after every intake check."""
    case = validate_case(CaseFiles(Path(image), Path(mask), str(label), roi, series_uid), extraction)
    return case.image, case.mask


def features_of(case: ValidatedCase, extraction: Extraction) -> dict[str, float]:
    """Features of a validated case: the only step after :func:`validate_case`."""
    if extraction.mode == "pyradiomics":
        return _pyradiomics(case.image, case.mask, extraction)
    from site_client.extraction.engine import extract_volume

    return extract_volume(case.volume, extraction)


def _pyradiomics(image: sitk.Image, mask: sitk.Image, extraction: Extraction) -> dict[str, float]:
    from site_client.extraction.pyradiomics_mode import extract_pyradiomics

    features = extract_pyradiomics(image, mask, extraction)
    bad = [name for name, value in features.items() if not math.isfinite(value)]
    if bad:
        raise CaseInputError(f"feature {bad[0]} is not finite ({features[bad[0]]}); pyradiomics could not compute it")
    return features


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
        case = validate_case(CaseFiles(Path(image), Path(mask), str(label), roi, series_uid), extraction)
        return features_of(case, extraction)
    if not isinstance(mask, sitk.Image):
        mask = read_mask(Path(mask), image, label, roi)
    else:
        mask = sitk.Cast(mask == label, sitk.sitkUInt8)
    if extraction.mode == "pyradiomics":
        return _pyradiomics(image, mask, extraction)
    from site_client.extraction.engine import extract_ibsi

    return extract_ibsi(image, mask, extraction)
