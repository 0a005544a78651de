"""Texture matrices per IBSI aggregation mode.

GLCM, GLRLM, GLSZM, NGTDM and NGLDM counts come from pyradiomics' C extension (``radiomics.cMatrices``); the
GLDZM (not in pyradiomics) is built here with ``scipy.ndimage``. Each function returns the *items* whose features
are averaged: 3D_avg = one matrix per 3D direction, 3D_comb = all directions merged, 2D_avg = one per slice and
in-plane direction, 2D_comb = one per slice (directions merged), 2_5D_avg = one per in-plane direction (slices
merged), 2_5D_comb = everything merged (IBSI 3.6.x "aggregating features"). Grey levels are kept 1..Ng
(row ``i - 1`` is level ``i``) so features can use the level values directly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from radiomics import cMatrices
from scipy import ndimage

DISTANCES = np.array([1])


@dataclass
class Item:
    """One matrix and the number of voxels it was built from (for the percentage features)."""

    matrix: np.ndarray
    voxels: float


def _slices(mask: np.ndarray) -> list[int]:
    return [int(z) for z in np.nonzero(mask.reshape(mask.shape[0], -1).any(axis=1))[0]]


def _dims(levels: np.ndarray, mask: np.ndarray, mode: str) -> list[tuple[np.ndarray, np.ndarray, bool]]:
    """Sub-volumes and the in-plane flag for a mode prefix: whole volume (3D, 2.5D) or each slice (2D)."""
    if mode.startswith("3D"):
        return [(levels, mask, False)]
    if mode.startswith("2_5D"):
        return [(levels, mask, True)]
    return [(levels[z : z + 1], mask[z : z + 1], True) for z in _slices(mask)]


def directional_groups(kind: str, levels: np.ndarray, mask: np.ndarray, ng: int, dim: str) -> list[list[Item]]:
    """Per-direction matrices, grouped per sub-volume (one group for 3D / 2.5D, one per slice for 2D)."""
    groups: list[list[Item]] = []
    for sub_levels, sub_mask, in_plane in _dims(levels, mask, dim):
        voxels = float(sub_mask.sum())
        if kind == "glcm":
            counts, _ = cMatrices.calculate_glcm(sub_levels, sub_mask, DISTANCES, ng, in_plane, 0)
            counts = counts[0]
            counts = counts + np.transpose(counts, (1, 0, 2))
        else:
            n_runs = max(sub_levels.shape)
            counts, _ = cMatrices.calculate_glrlm(sub_levels, sub_mask, ng, n_runs, in_plane, 0)
            counts = counts[0]
        groups.append([Item(counts[..., a], voxels) for a in range(counts.shape[-1])])
    return groups


def aggregate_directional(groups: list[list[Item]], mode: str) -> list[Item]:
    """_avg: every (sub-volume, direction) matrix; _comb: directions merged within each sub-volume."""
    items: list[Item] = []
    for group in groups:
        if mode.endswith("comb"):
            items.append(Item(sum(i.matrix for i in group), sum(i.voxels for i in group)))
        else:
            items.extend(group)
    return [i for i in items if i.matrix.sum() > 0]


def _directional(kind: str, levels: np.ndarray, mask: np.ndarray, ng: int, mode: str) -> list[Item]:
    """GLCM (symmetric) or GLRLM items for one aggregation mode."""
    return aggregate_directional(directional_groups(kind, levels, mask, ng, mode.rsplit("_", 1)[0]), mode)


def glcm_items(levels: np.ndarray, mask: np.ndarray, ng: int, mode: str) -> list[Item]:
    return _directional("glcm", levels, mask, ng, mode)


def glrlm_items(levels: np.ndarray, mask: np.ndarray, ng: int, mode: str) -> list[Item]:
    return _directional("glrlm", levels, mask, ng, mode)


def _merge_or_split(matrices: list[Item], mode: str) -> list[Item]:
    """2D: one item per slice; 2.5D / 3D: a single item (slices merged for 2.5D)."""
    nonempty = [m for m in matrices if m.matrix.sum() > 0]
    if mode.startswith("2D"):
        return nonempty
    width = max(m.matrix.shape[1] for m in nonempty)
    total = np.zeros((nonempty[0].matrix.shape[0], width))
    for m in nonempty:
        total[:, : m.matrix.shape[1]] += m.matrix
    return [Item(total, sum(m.voxels for m in nonempty))]


def glszm_items(levels: np.ndarray, mask: np.ndarray, ng: int, mode: str) -> list[Item]:
    """Zone-size matrices: 26-connected zones in 3D, 8-connected zones within each slice for 2D / 2.5D."""
    out = []
    for sub_levels, sub_mask, in_plane in _dims(levels, mask, "2D" if not mode.startswith("3D") else mode):
        counts = cMatrices.calculate_glszm(sub_levels, sub_mask, ng, int(sub_mask.sum()), in_plane, 0)[0]
        out.append(Item(counts.astype(np.float64), float(sub_mask.sum())))
    return _merge_or_split(out, mode)


def ngldm_items(levels: np.ndarray, mask: np.ndarray, ng: int, mode: str, alpha: int = 0) -> list[Item]:
    """Dependence matrices (Chebyshev distance 1, coarseness alpha); column j - 1 holds dependence j."""
    out = []
    for sub_levels, sub_mask, in_plane in _dims(levels, mask, "2D" if not mode.startswith("3D") else mode):
        counts = cMatrices.calculate_gldm(sub_levels, sub_mask, DISTANCES, ng, alpha, in_plane, 0)[0]
        out.append(Item(counts.astype(np.float64), float(sub_mask.sum())))
    return _merge_or_split(out, mode)


def ngtdm_items(levels: np.ndarray, mask: np.ndarray, ng: int, mode: str) -> list[Item]:
    """Neighbourhood grey-tone difference: matrix columns (n_i, s_i) per grey level i = 1..Ng."""
    out = []
    for sub_levels, sub_mask, in_plane in _dims(levels, mask, "2D" if not mode.startswith("3D") else mode):
        table = cMatrices.calculate_ngtdm(sub_levels, sub_mask, DISTANCES, ng, in_plane, 0)[0]
        out.append(Item(table[:, :2].astype(np.float64), float(sub_mask.sum())))
    nonempty = [m for m in out if m.matrix[:, 0].sum() > 0]
    if mode.startswith("2D"):
        return nonempty
    return [Item(sum(m.matrix for m in nonempty), sum(m.voxels for m in nonempty))] if nonempty else []


def gldzm_items(
    levels: np.ndarray, mask: np.ndarray, ng: int, mode: str, distance_mask: np.ndarray | None = None
) -> list[Item]:
    """Grey-level distance-zone matrices (IBSI 3.10).

    Distance of a voxel = taxicab steps to the nearest voxel outside ``distance_mask`` (the morphological mask;
    edge voxels: 1), in 3D for 3D and within the slice otherwise; a zone (26- / 8-connected, same grey level,
    within the intensity mask) takes its smallest voxel distance.
    """
    three_d = mode.startswith("3D")
    padded = np.pad(mask if distance_mask is None else distance_mask, 1)
    if three_d:
        distance = ndimage.distance_transform_cdt(padded, metric="taxicab")[1:-1, 1:-1, 1:-1]
        structure = np.ones((3, 3, 3), dtype=bool)
    else:
        distance = np.zeros(mask.shape, dtype=np.int64)
        for z in range(mask.shape[0]):
            distance[z] = ndimage.distance_transform_cdt(padded[z + 1], metric="taxicab")[1:-1, 1:-1]
        structure = np.zeros((3, 3, 3), dtype=bool)
        structure[1] = True
    max_distance = int(distance.max())
    per_slice: dict[int, np.ndarray] = {}
    total = np.zeros((ng, max_distance))
    for level in np.unique(levels[mask]):
        labels, n_zones = ndimage.label((levels == level) & mask, structure=structure)
        if n_zones == 0:
            continue
        inside = labels > 0
        zone_distance = np.full(n_zones + 1, np.iinfo(np.int64).max, dtype=np.int64)
        np.minimum.at(zone_distance, labels[inside], distance[inside])
        zone_distance = zone_distance[1:]
        if three_d or mode.startswith("2_5D"):
            np.add.at(total, (level - 1, zone_distance - 1), 1)
        else:
            first = ndimage.find_objects(labels)
            zone_slice = np.array([f[0].start for f in first])
            for z in np.unique(zone_slice):
                matrix = per_slice.setdefault(int(z), np.zeros((ng, max_distance)))
                np.add.at(matrix, (level - 1, zone_distance[zone_slice == z] - 1), 1)
    if three_d or mode.startswith("2_5D"):
        return [Item(total, float(mask.sum()))]
    return [Item(per_slice[z], float(mask[z].sum())) for z in sorted(per_slice)]
