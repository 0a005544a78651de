"""One case, IBSI mode: pre-process (crop, resample, re-segment), then every family, named by IBSI tags."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import SimpleITK as sitk

from protocols.schema import Extraction
from site_client.extraction import intensity, matrices, morphology, texture_features
from site_client.extraction.preprocess import Volume, discretise, prepare_volume
from site_client.imaging.errors import CaseInputError

# Protocol family -> IBSI tag prefix of its feature columns.
FAMILY_PREFIX = {
    "morphology": "morph",
    "local_intensity": "loc",
    "statistics": "stat",
    "intensity_histogram": "ih",
    "intensity_volume_histogram": "ivh",
    "glcm": "cm",
    "glrlm": "rlm",
    "glszm": "szm",
    "gldzm": "dzm",
    "ngtdm": "ngt",
    "ngldm": "ngl",
}
# Ng x Ng x 13 co-occurrence matrices: 1000 levels are ~100 MB per copy (bounded memory per worker).
MAX_GREY_LEVELS = 1000


def as_3d(image: sitk.Image, mask: sitk.Image, extraction: Extraction) -> tuple[sitk.Image, sitk.Image]:
    """Refuse 2D input for a 3D protocol; lift 2D images to one-slice volumes for a 2D protocol."""
    dimension = image.GetDimension()
    one_slice = dimension == 2 or (dimension == 3 and image.GetSize()[2] == 1)
    if one_slice and extraction.dimensionality == "3D":
        raise CaseInputError(
            f"image is 2D (size {image.GetSize()}) but the protocol asks for 3D features; "
            "give a 3D volume or use a protocol with dimensionality 2D"
        )
    if dimension == 2:
        image = sitk.JoinSeries(image)
        mask = sitk.JoinSeries(mask)
    elif dimension != 3:
        raise CaseInputError(f"image has {dimension} dimensions; expected a 3D volume")
    return image, mask


def _average(items: list[matrices.Item], compute: Callable[[matrices.Item], dict[str, float]]) -> dict[str, float]:
    """Mean of each feature over the items (IBSI feature aggregation); empty when there is no item."""
    if not items:
        return {}
    rows = [compute(item) for item in items]
    return {name: float(np.mean([row[name] for row in rows])) for name in rows[0]}


def _suffix_dims(modes: list[str]) -> list[str]:
    """Non-directional families are named _2D, _2_5D or _3D: one per dimension that appears in the modes."""
    dims: list[str] = []
    for mode in modes:
        dim = mode.rsplit("_", 1)[0]
        if dim not in dims:
            dims.append(dim)
    return dims


def texture(
    levels: np.ndarray, mask: np.ndarray, ng: int, extraction: Extraction, morph_mask: np.ndarray | None = None
) -> dict[str, float]:
    """Texture families for every requested aggregation mode."""
    out: dict[str, float] = {}
    families = extraction.families
    groups: dict[tuple[str, str], list[list[matrices.Item]]] = {}  # 3D_avg and 3D_comb share the matrices
    for mode in extraction.texture_aggregation:
        dim = mode.rsplit("_", 1)[0]
        for family, prefix in (("glcm", "cm"), ("glrlm", "rlm")):
            if family not in families:
                continue
            if (family, dim) not in groups:
                groups[(family, dim)] = matrices.directional_groups(family, levels, mask, ng, dim)
            items = matrices.aggregate_directional(groups[(family, dim)], mode)
            if family == "glcm":
                values = _average(items, lambda i: texture_features.glcm_features(i.matrix, ng))
            else:
                values = _average(items, lambda i: texture_features.glrlm_features(i.matrix, i.voxels))
            out.update(_named(prefix, values, mode))
    for dim in _suffix_dims(extraction.texture_aggregation):
        mode = f"{dim}_comb"
        if "glszm" in families:
            values = _average(
                matrices.glszm_items(levels, mask, ng, mode), lambda i: texture_features.glszm_features(i.matrix, i.voxels)
            )
            out.update(_named("szm", values, dim))
        if "gldzm" in families:
            values = _average(
                matrices.gldzm_items(levels, mask, ng, mode, morph_mask), lambda i: texture_features.gldzm_features(i.matrix, i.voxels)
            )
            out.update(_named("dzm", values, dim))
        if "ngtdm" in families:
            values = _average(matrices.ngtdm_items(levels, mask, ng, mode), lambda i: texture_features.ngtdm_features(i.matrix))
            out.update(_named("ngt", values, dim))
        if "ngldm" in families:
            values = _average(
                matrices.ngldm_items(levels, mask, ng, mode), lambda i: texture_features.ngldm_features(i.matrix, i.voxels)
            )
            out.update(_named("ngl", values, dim))
    return out


def _named(prefix: str, values: dict[str, float], suffix: str) -> dict[str, float]:
    if not values:
        raise CaseInputError(
            f"no {prefix} matrix could be built for aggregation {suffix}: the region of interest has no voxel "
            "pair / neighbourhood in that geometry (too small or too thin)"
        )
    return {f"{prefix}_{name}_{suffix}": value for name, value in values.items()}


def _ivh(volume: Volume, extraction: Extraction) -> dict[str, float]:
    """IVH on intensities discretised per ``ivh_discretisation`` (FBS: bin centres in intensity units)."""
    values = volume.image[volume.int_mask]
    settings = extraction.ivh_discretisation
    bounds = extraction.resegmentation.range or [None, None]
    lower = bounds[0] if bounds[0] is not None else float(values.min())
    upper = bounds[1] if bounds[1] is not None else float(values.max())
    if settings.method == "none":
        gamma = values
        integer = bool(np.all(values == np.round(values)))
        grid = np.arange(values.min(), values.max() + 1.0) if integer else np.unique(values)
    elif settings.method == "fixed_bin_width":
        width = settings.bin_width
        bins = np.floor((values - lower) / width)
        gamma = lower + (bins + 0.5) * width
        grid = lower + (np.arange(bins.min(), bins.max() + 1) + 0.5) * width
    else:
        v_min, v_max = float(values.min()), float(values.max())
        if v_max == v_min:
            gamma = np.ones_like(values)
        else:
            gamma = np.floor(settings.bin_number * (values - v_min) / (v_max - v_min)) + 1
            gamma[values >= v_max] = settings.bin_number
        grid = np.arange(1.0, settings.bin_number + 1.0)
        lower, upper = 1.0, float(settings.bin_number)
    result = intensity.intensity_volume_histogram(gamma, grid, lower, upper)
    return {f"ivh_{k}": v for k, v in result.items()}


def check_volume(volume: Volume) -> None:
    """Both masks of a prepared volume hold at least two voxels (a one-voxel ROI has no shape, spread or texture)."""
    for name, mask in (("morphological", volume.morph_mask), ("intensity", volume.int_mask)):
        count = int(mask.sum())
        if count < 2:
            raise CaseInputError(
                f"the {name} mask holds {count} voxel after pre-processing; at least 2 voxels are needed "
                "(a one-voxel ROI has no shape, spread or texture)"
            )


def extract_volume(volume: Volume, extraction: Extraction) -> dict[str, float]:
    """Every requested family on a prepared volume."""
    check_volume(volume)
    families = extraction.families
    out: dict[str, float] = {}
    if "morphology" in families:
        values = morphology.morphology(volume.image, volume.morph_mask, volume.int_mask, volume.spacing)
        out.update({f"morph_{k}": v for k, v in values.items()})
    if "local_intensity" in families:
        values = intensity.local_intensity(volume.image, volume.int_mask, volume.spacing)
        out.update({f"loc_{k}": v for k, v in values.items()})
    roi = volume.image[volume.int_mask]
    if "statistics" in families:
        out.update({f"stat_{k}": v for k, v in intensity.statistics(roi).items()})
    if "intensity_volume_histogram" in families:
        out.update(_ivh(volume, extraction))
    bounds = extraction.resegmentation.range
    lower = bounds[0] if bounds is not None else None
    texture_families = {"intensity_histogram", "glcm", "glrlm", "glszm", "gldzm", "ngtdm", "ngldm"}
    if texture_families & set(families):
        roi_levels, ng = discretise(roi, extraction.discretisation, lower)
        if ng > MAX_GREY_LEVELS:
            raise CaseInputError(
                f"discretisation gives {ng} grey levels (more than {MAX_GREY_LEVELS}): texture matrices of that size "
                "do not fit a worker's memory; use a larger bin width or a fixed bin number"
            )
        if "intensity_histogram" in families:
            out.update({f"ih_{k}": v for k, v in intensity.intensity_histogram(roi_levels, ng).items()})
        levels = np.zeros(volume.image.shape, dtype=np.int32)
        levels[volume.int_mask] = roi_levels
        out.update(texture(levels, volume.int_mask, ng, extraction, volume.morph_mask))
    bad = [name for name, value in out.items() if not math.isfinite(value)]
    if bad:
        raise CaseInputError(
            f"feature {bad[0]} is not finite ({out[bad[0]]})"
            + (f" (and {len(bad) - 1} more: {', '.join(bad[1:6])})" if len(bad) > 1 else "")
            + "; the region of interest is degenerate for this feature (e.g. constant intensity or a flat shape)"
        )
    return out


def extract_ibsi(image: sitk.Image, mask: sitk.Image, extraction: Extraction) -> dict[str, float]:
    """IBSI-mode features of one image + binary mask on the same grid."""
    image, mask = as_3d(image, mask, extraction)
    volume = prepare_volume(image, mask, extraction)
    return extract_volume(volume, extraction)
