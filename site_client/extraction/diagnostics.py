"""Pre-processing diagnostics with IBSI tags (``int_mask_*``, ``morph_mask_*``, ``img_dim_*_interp_img``, ...).

The IBSI reference tables give these per CT configuration so that resampling, mask interpolation and
re-segmentation can be checked on their own, before any feature. Stages: ``init`` (as read), ``interp`` (after
interpolation; the intensity mask equals the morphological one) and ``reseg`` (after re-segmentation).
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from protocols.schema import Extraction
from site_client.extraction.engine import as_3d
from site_client.extraction.preprocess import prepare_volume, target_grid

AXES = ("x", "y", "z")


def _mask_stats(prefix: str, stage: str, image: np.ndarray, mask: np.ndarray, with_intensity: bool) -> dict[str, float]:
    where = np.nonzero(mask)
    extent = [int(w.max() - w.min() + 1) for w in where][::-1]  # (x, y, z)
    out = {f"{prefix}_bb_dim_{a}_{stage}_roi": float(e) for a, e in zip(AXES, extent)}
    out[f"{prefix}_vox_count_{stage}_roi"] = float(mask.sum())
    if with_intensity:
        values = image[mask]
        out[f"int_mask_mean_int_{stage}_roi"] = float(values.mean())
        out[f"int_mask_min_int_{stage}_roi"] = float(values.min())
        out[f"int_mask_max_int_{stage}_roi"] = float(values.max())
    return out


def roi_diagnostics(image: sitk.Image, mask: sitk.Image, extraction: Extraction) -> dict[str, float]:
    """ROI-level diagnostics of the three pre-processing stages (grid sizes, box sizes, counts, intensities)."""
    image, mask = as_3d(image, mask, extraction)
    size = image.GetSize()
    spacing = image.GetSpacing()
    array = sitk.GetArrayFromImage(image).astype(np.float64)
    roi = sitk.GetArrayFromImage(mask) > 0
    out: dict[str, float] = {}
    for a, n in zip(AXES, size):
        out[f"int_mask_dim_{a}_init_roi"] = float(n)
    out.update(_mask_stats("int_mask", "init", array, roi, True))
    out.update(_mask_stats("morph_mask", "init", array, roi, False))
    new = extraction.resampling.spacing
    if new is None:
        grid = list(size)
        new_spacing = list(spacing)
    else:
        new_spacing = list(new)
        if extraction.resampling.in_plane_only:
            new_spacing[2] = spacing[2]
        grid = [target_grid(n, s, t)[0] for n, s, t in zip(size, spacing, new_spacing)]
    for a, n, s in zip(AXES, grid, new_spacing):
        out[f"img_dim_{a}_interp_img"] = float(n)
        out[f"vox_dim_{a}_interp_img"] = float(s)
        for stage in ("interp", "reseg"):
            out[f"int_mask_dim_{a}_{stage}_roi"] = float(n)
    volume = prepare_volume(image, mask, extraction)
    out.update(_mask_stats("int_mask", "interp", volume.image, volume.morph_mask, True))
    out.update(_mask_stats("morph_mask", "interp", volume.image, volume.morph_mask, False))
    out.update(_mask_stats("int_mask", "reseg", volume.image, volume.int_mask, True))
    out.update(_mask_stats("morph_mask", "reseg", volume.image, volume.morph_mask, False))
    return out
