"""DICOM RTSTRUCT -> binary mask on the image grid.

pydicom reads the structure set (no hand-written DICOM parsing); each CLOSED_PLANAR contour is mapped to the
image's continuous voxel indices (direction-aware) and filled on its slice with the even-odd rule (a voxel is
inside when its centre is), so nested contours make holes, as most planning systems intend.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from site_client.imaging.errors import CaseInputError

# A contour must lie within this many slices of a slice centre to be assigned to it.
SLICE_TOLERANCE = 0.25


def _roi_numbers(dataset, path: Path, roi: str) -> tuple[int, str]:
    rois = [(int(item.ROINumber), str(item.ROIName)) for item in getattr(dataset, "StructureSetROISequence", [])]
    with_contours = {
        int(item.ReferencedROINumber)
        for item in getattr(dataset, "ROIContourSequence", [])
        if getattr(item, "ContourSequence", None)
    }
    names = ", ".join(repr(name) for _, name in rois) or "none"
    if roi:
        exact = [r for r in rois if r[1] == roi] or [r for r in rois if r[1].strip().lower() == roi.strip().lower()]
        if not exact:
            raise CaseInputError(f"{path}: ROI {roi!r} not in the RTSTRUCT; ROIs present: {names}")
        if len(exact) > 1:
            raise CaseInputError(f"{path}: ROI name {roi!r} appears {len(exact)} times in the RTSTRUCT; it must be unique")
        number, name = exact[0]
        if number not in with_contours:
            raise CaseInputError(f"{path}: ROI {name!r} has no contour")
        return number, name
    usable = [r for r in rois if r[0] in with_contours]
    if len(usable) != 1:
        raise CaseInputError(
            f"{path}: {len(usable)} ROIs with contours in the RTSTRUCT ({names}); "
            "name the one to use in the manifest's mask_roi column"
        )
    return usable[0]


def fill_polygon(xs: np.ndarray, ys: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Voxels (rows = y, columns = x) whose centre lies inside the polygon (even-odd rule, scan line per row).

    A centre is inside when an odd number of polygon edges cross its row strictly to its right.
    """
    out = np.zeros(shape, dtype=bool)
    y_lo, y_hi = max(int(np.floor(ys.min())), 0), min(int(np.ceil(ys.max())), shape[0] - 1)
    if y_lo > y_hi:
        return out
    x0, y0, x1, y1 = xs, ys, np.roll(xs, -1), np.roll(ys, -1)
    sloped = y0 != y1
    x0, y0, x1, y1 = x0[sloped], y0[sloped], x1[sloped], y1[sloped]
    columns = np.arange(shape[1], dtype=np.float64)
    for row in range(y_lo, y_hi + 1):
        crosses = (y0 > row) != (y1 > row)
        if not crosses.any():
            continue
        a, b, c, d = x0[crosses], y0[crosses], x1[crosses], y1[crosses]
        x_cross = np.sort(a + (row - b) * (c - a) / (d - b))
        right = x_cross.size - np.searchsorted(x_cross, columns, side="right")
        out[row] = (right % 2) == 1
    return out


def rasterise_rtstruct(path: Path, image: sitk.Image, roi: str = "") -> sitk.Image:
    """Binary (uint8) mask of ROI ``roi`` (name; may be empty when the file holds a single contoured ROI)."""
    import pydicom

    try:
        dataset = pydicom.dcmread(str(path))
    except Exception as exc:  # pydicom raises several types for corrupt files
        raise CaseInputError(f"{path}: unreadable RTSTRUCT ({exc})") from None
    number, name = _roi_numbers(dataset, path, roi)
    size = image.GetSize()
    mask = np.zeros(size[::-1], dtype=bool)
    # continuous index = (D diag(spacing))^-1 (point - origin), for all points at once
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    to_index = np.linalg.inv(direction @ np.diag(image.GetSpacing()))
    origin = np.asarray(image.GetOrigin(), dtype=np.float64)
    outside = 0
    for item in dataset.ROIContourSequence:
        if int(item.ReferencedROINumber) != number:
            continue
        for contour in item.ContourSequence:
            kind = str(getattr(contour, "ContourGeometricType", "CLOSED_PLANAR"))
            if kind != "CLOSED_PLANAR":
                continue
            points = np.asarray(contour.ContourData, dtype=np.float64).reshape(-1, 3)
            index = (points - origin) @ to_index.T
            k = float(np.median(index[:, 2]))
            z = int(round(k))
            if abs(k - z) > SLICE_TOLERANCE or not 0 <= z < size[2] or np.ptp(index[:, 2]) > 2 * SLICE_TOLERANCE:
                outside += 1
                continue
            mask[z] ^= fill_polygon(index[:, 0], index[:, 1], (size[1], size[0]))
    if not mask.any():
        extra = f" ({outside} contour(s) lie off the image slices: wrong image series?)" if outside else ""
        raise CaseInputError(f"{path}: ROI {name!r} covers no voxel of the image{extra}")
    result = sitk.GetImageFromArray(mask.astype(np.uint8))
    result.CopyInformation(image)
    return result
