"""Lesion measures computed straight from a demo site's NIfTI voxels (numpy/scipy only, no extraction engine).

Used by the demo-cohort tests as an independent reference for the claims the generator makes.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage
from scipy.spatial import ConvexHull

_CORNERS = np.array(np.meshgrid([-0.5, 0.5], [-0.5, 0.5], [-0.5, 0.5], indexing="ij")).reshape(3, -1).T


def read_case(image_path: Path, mask_path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image as float z-y-x, boolean mask, spacing z-y-x in mm)."""
    image = sitk.ReadImage(str(image_path))
    mask = sitk.GetArrayFromImage(sitk.ReadImage(str(mask_path))) > 0
    return sitk.GetArrayFromImage(image).astype(float), mask, np.array(image.GetSpacing())[::-1]


def solidity(mask: np.ndarray, spacing: np.ndarray) -> float:
    """Mask volume / volume of the convex hull of all voxel corners (1 = convex; lobulation lowers it)."""
    centres = np.argwhere(mask) * spacing
    corners = (centres[:, None, :] + (_CORNERS * spacing)[None]).reshape(-1, 3)
    return float(mask.sum() * spacing.prod() / ConvexHull(corners).volume)


def case_measures(image: np.ndarray, mask: np.ndarray, spacing: np.ndarray) -> dict[str, float]:
    """Volume, mean intensity, heterogeneity (SD after 1 mm Gaussian smoothing, inner voxels), irregularity."""
    inner = ndimage.binary_erosion(mask)
    core = inner if inner.sum() >= 20 else mask
    smooth = ndimage.gaussian_filter(image, 1.0 / spacing)
    outside = ~ndimage.binary_dilation(mask, iterations=3)
    return {
        "volume_mm3": float(mask.sum() * spacing.prod()),
        "mean": float(image[mask].mean()),
        "heterogeneity": float(smooth[core].std()),
        "irregularity": 1.0 - solidity(mask, spacing),
        "background_sd": float(image[outside].std()),
    }


def site_measures(manifest: Path) -> list[dict]:
    """One dict per manifest row: the row's values plus :func:`case_measures` of its voxels."""
    rows = []
    with manifest.open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            image, mask, spacing = read_case(manifest.parent / row["image"], manifest.parent / row["mask"])
            rows.append({**row, **case_measures(image, mask, spacing)})
    return rows
