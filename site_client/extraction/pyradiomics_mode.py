"""pyradiomics-compatible mode: plain ``RadiomicsFeatureExtractor`` output (pyradiomics names), for comparison with
studies that used pyradiomics. Not IBSI-conformant (see docs/ibsi-conformance.md).

The protocol's discretisation, re-segmentation range and resampling are translated to pyradiomics settings;
``extraction.pyradiomics_settings`` overrides them (e.g. ``voxelArrayShift``). Image and mask are first cropped
to the mask's bounding box plus pyradiomics' ``padDistance`` and a safety margin, which leaves every feature
unchanged (pyradiomics itself works on that box) but skips its whole-image checks.
"""

from __future__ import annotations

import logging

import numpy as np
import SimpleITK as sitk

from protocols.schema import Extraction
from site_client.imaging.errors import CaseInputError

FAMILY_CLASSES = {
    "morphology": "shape",
    "statistics": "firstorder",
    "intensity_histogram": "firstorder",
    "glcm": "glcm",
    "glrlm": "glrlm",
    "glszm": "glszm",
    "ngtdm": "ngtdm",
    "ngldm": "gldm",
}
UNSUPPORTED = ("local_intensity", "intensity_volume_histogram", "gldzm")
_INTERPOLATORS = {"nearest": "sitkNearestNeighbor", "linear": "sitkLinear", "bspline": "sitkBSpline"}


def unsupported_families(extraction: Extraction) -> list[str]:
    """Families the protocol asks for that pyradiomics does not compute."""
    return [f for f in extraction.families if f in UNSUPPORTED]


def settings_for(extraction: Extraction) -> dict:
    """pyradiomics settings equivalent to the protocol (as far as pyradiomics can follow it)."""
    settings: dict = {"additionalInfo": False, "label": 1}
    disc = extraction.discretisation
    if disc.method == "fixed_bin_number":
        settings["binCount"] = disc.bin_number
    elif disc.method == "fixed_bin_width":
        settings["binWidth"] = disc.bin_width
    if extraction.resegmentation.range is not None:
        settings["resegmentRange"] = list(extraction.resegmentation.range)
    if extraction.resampling.spacing is not None:
        settings["resampledPixelSpacing"] = list(extraction.resampling.spacing)
        settings["interpolator"] = _INTERPOLATORS[extraction.resampling.image_interpolator]
    if extraction.dimensionality == "2D":
        settings["force2D"] = True
    settings.update(extraction.pyradiomics_settings)
    settings["additionalInfo"] = False
    return settings


def _crop(image: sitk.Image, mask: sitk.Image, margin: int) -> tuple[sitk.Image, sitk.Image]:
    array = sitk.GetArrayViewFromImage(mask)
    where = np.nonzero(array)
    if not where[0].size:
        raise CaseInputError("mask is empty (no voxel in the region of interest)")
    lo = [int(w.min()) for w in where][::-1]
    hi = [int(w.max()) for w in where][::-1]
    size = image.GetSize()
    start = [max(0, a - margin) for a in lo]
    stop = [min(n - 1, b + margin) for b, n in zip(hi, size)]
    extent = [b - a + 1 for a, b in zip(start, stop)]
    return sitk.RegionOfInterest(image, extent, start), sitk.RegionOfInterest(mask, extent, start)


def extract_pyradiomics(image: sitk.Image, mask: sitk.Image, extraction: Extraction) -> dict[str, float]:
    """pyradiomics features of one case, named ``original_<class>_<Feature>``, plus ``morph_volume``."""
    from radiomics import featureextractor

    logging.getLogger("radiomics").setLevel(logging.ERROR)
    missing = unsupported_families(extraction)
    if missing:
        raise CaseInputError(f"families {missing} are not available in pyradiomics mode; remove them or use mode ibsi")
    if image.GetDimension() != 3:
        raise CaseInputError(f"image has {image.GetDimension()} dimensions; pyradiomics mode expects a 3D volume")
    settings = settings_for(extraction)
    margin = int(settings.get("padDistance", 5)) + 5
    image, mask = _crop(image, mask, margin)
    extractor = featureextractor.RadiomicsFeatureExtractor(**settings)
    extractor.disableAllFeatures()
    for name in dict.fromkeys(FAMILY_CLASSES[f] for f in extraction.families):
        extractor.enableFeatureClassByName(name)
    try:
        raw = extractor.execute(image, mask)
    except ValueError as exc:  # pyradiomics reports bad masks / ROIs this way
        raise CaseInputError(f"pyradiomics refused the case: {exc}") from None
    out = {k: float(v) for k, v in raw.items() if not k.startswith("diagnostics_")}
    if "original_shape_MeshVolume" in out:
        out = {"morph_volume": out["original_shape_MeshVolume"], **out}
    return out
