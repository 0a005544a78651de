"""Marching-cubes mesh area and volume of a binary mask, without pyradiomics' O(V^2) diameter search.

pyradiomics' ``cShape.calculate_coefficients`` (the mesh whose values the IBSI phantoms confirm) also computes
the maximum diameters by brute force over all vertex pairs, which dominates for large ROIs. Area and volume are
sums over the 2x2x2 cubes of the grid: area = sum area(c); volume (signed tetrahedra from the origin)
= sum D(c) + o . N(c), with c the cube's 8-corner configuration, o its corner position, D(c) the cube's
tetrahedra volume at the origin and N(c) = sum over its triangles of (a x b + b x c + c x a) / 6.
The per-configuration tables are measured once per spacing by calling the same C code on single cubes (and on
two stacked cubes, for N), so the result equals pyradiomics' to rounding.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from radiomics import cShape

# Corner (dz, dy, dx) of bit b in the configuration index.
CORNERS = np.array([(b >> 2 & 1, b >> 1 & 1, b & 1) for b in range(8)])


def _cube(config: int) -> np.ndarray:
    cube = np.zeros((2, 2, 2), dtype=bool)
    for bit, (dz, dy, dx) in enumerate(CORNERS):
        cube[dz, dy, dx] = bool(config >> bit & 1)
    return cube


@lru_cache(maxsize=8)
def _tables(spacing: tuple[float, float, float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """area(c), D(c) and N(c) (shape 256 x 3) for one voxel spacing (z, y, x)."""
    spacing_array = np.asarray(spacing, dtype=np.float64)
    area = np.zeros(256)
    origin_volume = np.zeros(256)
    normal = np.zeros((256, 3))
    for config in range(256):
        cube = _cube(config)
        area[config], origin_volume[config], _ = cShape.calculate_coefficients(cube, spacing_array)
    for config in range(256):
        cube = _cube(config)
        for axis in range(3):
            # Two cubes along ``axis``: an empty plane, then this cube: the second cube sits one voxel further.
            stacked = np.concatenate([np.zeros_like(np.take(cube, [0], axis=axis)), cube], axis=axis)
            first = np.concatenate([np.zeros_like(np.take(cube, [0], axis=axis)), np.take(cube, [0], axis=axis)], axis=axis)
            first_config = _config_of(first)
            _, total, _ = cShape.calculate_coefficients(stacked, spacing_array)
            normal[config, axis] = (total - origin_volume[first_config] - origin_volume[config]) / spacing[axis]
    return area, origin_volume, normal


def _config_of(cube: np.ndarray) -> int:
    return int(sum(int(cube[dz, dy, dx]) << bit for bit, (dz, dy, dx) in enumerate(CORNERS)))


def mesh_area_volume(mask: np.ndarray, spacing: tuple[float, float, float]) -> tuple[float, float]:
    """(surface area mm^2, volume mm^3) of the marching-cubes mesh at iso-level 0.5 of a binary mask (z, y, x)."""
    padded = np.pad(mask.astype(bool), 1)
    nz, ny, nx = (n - 1 for n in padded.shape)
    config = np.zeros((nz, ny, nx), dtype=np.int32)
    for bit, (dz, dy, dx) in enumerate(CORNERS):
        config |= padded[dz : dz + nz, dy : dy + ny, dx : dx + nx].astype(np.int32) << bit
    used = np.nonzero((config != 0) & (config != 255))
    configs = config[used]
    area_table, volume_table, normal_table = _tables(tuple(float(s) for s in spacing))
    origin = np.stack(used, axis=1) * np.asarray(spacing)
    area = float(area_table[configs].sum())
    volume = float(volume_table[configs].sum() + (origin * normal_table[configs]).sum())
    return area, abs(volume)
