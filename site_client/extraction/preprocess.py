"""IBSI image processing before feature computation: crop, resampling, re-segmentation, discretisation.

Arrays are in SimpleITK/numpy order (z, y, x); ``spacing`` tuples here are in the same order, in mm.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from protocols.schema import Discretisation, Extraction, Resampling, Resegmentation
from site_client.imaging.errors import CaseInputError

# Radius (mm) of a sphere of 1 cm^3: the IBSI local-intensity peak neighbourhood.
PEAK_RADIUS_MM = (3.0 / (4.0 * math.pi)) ** (1.0 / 3.0) * 10.0
# Extra original voxels kept around the region that is interpolated (cubic B-spline support and prefilter decay).
INTERPOLATION_PAD = 6


@dataclass
class Volume:
    """A cropped working volume: intensities, the morphological and intensity masks, voxel spacing (z, y, x)."""

    image: np.ndarray
    morph_mask: np.ndarray
    int_mask: np.ndarray
    spacing: tuple[float, float, float]


def _bbox(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    where = np.nonzero(mask)
    return np.array([w.min() for w in where]), np.array([w.max() for w in where])


def target_grid(size: int, spacing: float, new_spacing: float) -> tuple[int, float]:
    """IBSI grid aligned on the image centre along one axis: (n_b, offset) with x_a = (offset + i_b s_b) / s_a.

    n_b = ceil(n_a s_a / s_b); the centres of both grids coincide: offset = (s_a (n_a - 1) - s_b (n_b - 1)) / 2.
    """
    n_new = int(math.ceil(round(size * spacing / new_spacing, 6)))
    offset = (spacing * (size - 1) - new_spacing * (n_new - 1)) / 2.0
    return n_new, offset


def peak_margin_mm(extraction: Extraction) -> float:
    """Margin the local-intensity sphere needs around the ROI (0 when that family is off)."""
    return PEAK_RADIUS_MM if "local_intensity" in extraction.families else 0.0


def prepare_volume(image: sitk.Image, mask: sitk.Image, extraction: Extraction) -> Volume:
    """Crop to the mask's bounding box plus margin, resample on the IBSI grid, re-segment."""
    mask_full = sitk.GetArrayViewFromImage(mask)
    if not mask_full.any():
        raise CaseInputError("mask is empty (no voxel in the region of interest)")
    spacing = tuple(float(s) for s in reversed(image.GetSpacing()))
    shape = mask_full.shape
    lo, hi = _bbox(mask_full)
    resampling = extraction.resampling
    margin_mm = peak_margin_mm(extraction)
    if resampling.spacing is None:
        margin = [int(math.ceil(margin_mm / s)) + extraction.crop_margin_voxels for s in spacing]
        lo_c = np.maximum(lo - margin, 0)
        hi_c = np.minimum(hi + margin, np.array(shape) - 1)
        region = tuple(slice(a, b + 1) for a, b in zip(lo_c, hi_c))
        voxels = sitk.GetArrayViewFromImage(image)[region].astype(np.float64)
        _check_finite(voxels)
        morph = np.asarray(mask_full[region], dtype=bool)
        return Volume(voxels, morph, resegment(voxels, morph, extraction.resegmentation), spacing)
    return _resampled_volume(image, mask_full, spacing, lo, hi, margin_mm, extraction)


def _check_finite(voxels: np.ndarray) -> None:
    bad = ~np.isfinite(voxels)
    if bad.any():
        raise CaseInputError(
            f"image holds {int(bad.sum())} NaN or infinite voxel(s) near the region of interest; "
            "expected finite intensities"
        )


def _resampled_volume(
    image: sitk.Image,
    mask_full: np.ndarray,
    spacing: tuple[float, ...],
    lo: np.ndarray,
    hi: np.ndarray,
    margin_mm: float,
    extraction: Extraction,
) -> Volume:
    resampling: Resampling = extraction.resampling
    new_xyz = list(resampling.spacing or [])
    new_spacing = list(reversed(new_xyz))  # (z, y, x)
    if resampling.in_plane_only:
        new_spacing[0] = spacing[0]
    shape = mask_full.shape
    axes_coords: list[np.ndarray] = []
    crop: list[slice] = []
    for axis in range(3):
        n_new, offset = target_grid(shape[axis], spacing[axis], new_spacing[axis])
        positions = (offset + np.arange(n_new) * new_spacing[axis]) / spacing[axis]
        reach = 1.0 + (margin_mm + new_spacing[axis]) / spacing[axis] + extraction.crop_margin_voxels
        keep = np.nonzero((positions >= lo[axis] - reach) & (positions <= hi[axis] + reach))[0]
        positions = positions[keep]
        start = max(int(math.floor(positions.min())) - INTERPOLATION_PAD, 0)
        stop = min(int(math.ceil(positions.max())) + INTERPOLATION_PAD, shape[axis] - 1)
        crop.append(slice(start, stop + 1))
        axes_coords.append(positions - start)
    region = tuple(crop)
    voxels = sitk.GetArrayViewFromImage(image)[region].astype(np.float64)
    _check_finite(voxels)
    mask_crop = np.asarray(mask_full[region], dtype=np.float64)
    grid = np.meshgrid(*axes_coords, indexing="ij")
    order = {"nearest": 0, "linear": 1, "bspline": 3}[resampling.image_interpolator]
    resampled = ndimage.map_coordinates(voxels, grid, order=order, mode="nearest", prefilter=order > 1)
    if resampling.round_intensities:
        resampled = np.round(resampled)
    mask_order = {"nearest": 0, "linear": 1}[resampling.mask_interpolator]
    fraction = ndimage.map_coordinates(mask_crop, grid, order=mask_order, mode="nearest")
    morph = fraction >= resampling.partial_volume_threshold - 1e-12 if mask_order else fraction >= 0.5
    if not morph.any():
        raise CaseInputError(
            "mask is empty after resampling to "
            f"{new_xyz} mm (partial-volume threshold {resampling.partial_volume_threshold}); "
            "the region of interest is smaller than the new voxels"
        )
    return Volume(resampled, morph, resegment(resampled, morph, extraction.resegmentation), tuple(new_spacing))


def resegment(image: np.ndarray, mask: np.ndarray, settings: Resegmentation) -> np.ndarray:
    """Intensity mask: range re-segmentation [lo, hi] (inclusive), then outlier filter mean +- k SD (IBSI 3.6)."""
    keep = mask.copy()
    if settings.range is not None:
        lower, upper = settings.range
        if lower is not None:
            keep &= image >= lower
        if upper is not None:
            keep &= image <= upper
    if settings.outlier_sigma is not None and keep.any():
        values = image[keep]
        mean, sd = values.mean(), values.std()
        keep &= (image >= mean - settings.outlier_sigma * sd) & (image <= mean + settings.outlier_sigma * sd)
    if not keep.any():
        raise CaseInputError(
            f"mask is empty after re-segmentation (range {settings.range}, outlier_sigma {settings.outlier_sigma}): "
            f"no voxel of the region of interest has an intensity inside the range "
            f"(ROI intensities {image[mask].min():.6g} to {image[mask].max():.6g})"
        )
    return keep


def discretise(values: np.ndarray, settings: Discretisation, lower_bound: float | None) -> tuple[np.ndarray, int]:
    """Grey levels 1..Ng of the ROI intensities (IBSI 3.7) and Ng.

    Fixed bin width w: X_d = floor((X - X_min) / w) + 1 with X_min the re-segmentation lower bound when set, else
    the ROI minimum. Fixed bin number N: X_d = floor(N (X - X_min) / (X_max - X_min)) + 1, and X_d = N at X_max.
    ``none`` keeps the (integer) intensities as grey levels.
    """
    if settings.method == "none":
        levels = np.round(values).astype(np.int64)
        if levels.min() < 1:
            raise CaseInputError(
                f"discretisation 'none' needs integer intensities >= 1 in the ROI, found minimum {values.min():.6g}"
            )
        return levels, int(levels.max())
    if settings.method == "fixed_bin_width":
        x_min = lower_bound if lower_bound is not None else float(values.min())
        levels = np.floor((values - x_min) / settings.bin_width).astype(np.int64) + 1
        return levels, int(levels.max())
    x_min, x_max = float(values.min()), float(values.max())
    n_bins = settings.bin_number
    if x_max == x_min:
        return np.ones(values.shape, dtype=np.int64), n_bins
    levels = np.floor(n_bins * (values - x_min) / (x_max - x_min)).astype(np.int64) + 1
    levels[values >= x_max] = n_bins
    return levels, n_bins
