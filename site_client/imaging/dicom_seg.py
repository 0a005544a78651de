"""DICOM SEG -> binary mask on the image grid, read with highdicom.

The segment is chosen by label (``mask_roi``; may be empty when the SEG holds one segment). highdicom gives the
segment as a volume with its affine (patient coordinates, LPS like ITK); each segmented voxel centre is mapped to
the image's voxel index. The SEG grid must coincide with the image grid (same voxel centres): a SEG made on
another series or resampled grid is refused rather than silently re-interpolated.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from site_client.imaging.errors import CaseInputError

# Largest distance (in image voxels) between a SEG voxel centre and the nearest image voxel centre.
GRID_TOLERANCE = 0.05


def _segment_number(segmentation, path: Path, roi: str) -> tuple[int, str]:
    segments = [
        (int(item.SegmentNumber), str(item.SegmentLabel)) for item in segmentation.SegmentSequence
    ]
    names = ", ".join(repr(label) for _, label in segments) or "none"
    if roi:
        found = [s for s in segments if s[1] == roi] or [s for s in segments if s[1].strip().lower() == roi.strip().lower()]
        if not found:
            raise CaseInputError(f"{path}: segment {roi!r} not in the DICOM SEG; segments present: {names}")
        if len(found) > 1:
            raise CaseInputError(f"{path}: segment label {roi!r} appears {len(found)} times; it must be unique")
        return found[0]
    if len(segments) != 1:
        raise CaseInputError(
            f"{path}: {len(segments)} segments in the DICOM SEG ({names}); name the one to use in the manifest's "
            "mask_roi column"
        )
    return segments[0]


def read_dicom_seg(path: Path, image: sitk.Image, roi: str = "") -> sitk.Image:
    """Binary (uint8) mask of segment ``roi`` on ``image``'s grid."""
    import highdicom

    try:
        segmentation = highdicom.seg.segread(str(path))
    except Exception as exc:  # highdicom / pydicom raise several types for corrupt or non-SEG files
        raise CaseInputError(f"{path}: unreadable DICOM SEG ({exc})") from None
    number, label = _segment_number(segmentation, path, roi)
    try:
        volume = segmentation.get_volume(segment_numbers=[number], combine_segments=True, dtype=np.uint8)
    except Exception as exc:
        raise CaseInputError(f"{path}: segment {label!r} cannot be arranged as a volume ({exc})") from None
    array = np.asarray(volume.array)
    voxels = np.argwhere(array > 0)
    if voxels.size == 0:
        raise CaseInputError(f"{path}: segment {label!r} is empty")
    homogeneous = np.c_[voxels.astype(np.float64), np.ones(len(voxels))]
    points = (np.asarray(volume.affine, dtype=np.float64) @ homogeneous.T).T[:, :3]
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    to_index = np.linalg.inv(direction @ np.diag(image.GetSpacing()))
    index = (points - np.asarray(image.GetOrigin())) @ to_index.T
    rounded = np.round(index).astype(np.int64)
    off_grid = np.abs(index - rounded).max()
    if off_grid > GRID_TOLERANCE:
        raise CaseInputError(
            f"{path}: segment {label!r} is not on the image grid (voxel centres off by up to {off_grid:.2f} voxels); "
            "the SEG must be made on this image series"
        )
    size = np.asarray(image.GetSize())
    inside = np.all((rounded >= 0) & (rounded < size), axis=1)
    if not inside.all():
        raise CaseInputError(
            f"{path}: {int((~inside).sum())} voxel(s) of segment {label!r} lie outside the image; "
            "the SEG belongs to another series"
        )
    mask = np.zeros(tuple(size[::-1]), dtype=np.uint8)
    mask[rounded[:, 2], rounded[:, 1], rounded[:, 0]] = 1
    result = sitk.GetImageFromArray(mask)
    result.CopyInformation(image)
    return result
