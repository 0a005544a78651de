"""Image grid geometry and the tolerant comparison of an image with its mask."""

from __future__ import annotations

from dataclasses import dataclass

import SimpleITK as sitk

# Relative tolerance on spacing and absolute tolerances on origin (mm) and direction cosines: masks written by
# other tools carry float32 round-off in their headers; a real mismatch is orders of magnitude larger.
SPACING_RTOL = 1e-4
ORIGIN_ATOL_MM = 1e-3
DIRECTION_ATOL = 1e-4


@dataclass(frozen=True)
class Geometry:
    size: tuple[int, ...]
    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    direction: tuple[float, ...]

    @classmethod
    def of(cls, image: sitk.Image) -> "Geometry":
        return cls(
            size=tuple(image.GetSize()),
            spacing=tuple(image.GetSpacing()),
            origin=tuple(image.GetOrigin()),
            direction=tuple(image.GetDirection()),
        )

    @property
    def dimension(self) -> int:
        return len(self.size)


def _fmt(values: tuple[float, ...]) -> str:
    return "(" + ", ".join(f"{v:.6g}" for v in values) + ")"


def geometry_mismatches(image: Geometry, mask: Geometry) -> list[str]:
    """Human-readable differences between image and mask grids; empty when they match within tolerance."""
    problems: list[str] = []
    if image.size != mask.size:
        problems.append(f"size differs: image {image.size}, mask {mask.size}")
        return problems
    if any(abs(a - b) > SPACING_RTOL * max(abs(a), abs(b)) for a, b in zip(image.spacing, mask.spacing)):
        problems.append(f"spacing differs: image {_fmt(image.spacing)} mm, mask {_fmt(mask.spacing)} mm")
    if any(abs(a - b) > ORIGIN_ATOL_MM for a, b in zip(image.origin, mask.origin)):
        problems.append(f"origin differs: image {_fmt(image.origin)} mm, mask {_fmt(mask.origin)} mm")
    if any(abs(a - b) > DIRECTION_ATOL for a, b in zip(image.direction, mask.direction)):
        problems.append(f"direction differs: image {_fmt(image.direction)}, mask {_fmt(mask.direction)}")
    return problems
