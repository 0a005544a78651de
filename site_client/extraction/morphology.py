"""Morphological features (IBSI 3.1).

Mesh volume and area are pyradiomics' marching-cubes mesh (``radiomics.cShape``, see :mod:`mesh`). With a binary mask and
iso-level 0.5 every mesh vertex is the midpoint of an edge between an ROI voxel and a non-ROI 6-neighbour, so the
vertex set (for convex hull, bounding box and diameter) is built directly from those edges.
Corrections to pyradiomics: PCA eigenvalues use the unbiased covariance (N - 1).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import special
from scipy.spatial import ConvexHull
from scipy.spatial.distance import pdist

from site_client.extraction.fft import convolve_same_many
from site_client.extraction.mesh import mesh_area_volume


def mesh_vertices(mask: np.ndarray, spacing: tuple[float, float, float]) -> np.ndarray:
    """Positions (mm) of the marching-cubes vertices of a binary mask (edge midpoints at the ROI border)."""
    padded = np.pad(mask, 1)
    points = []
    for axis in range(3):
        lower = np.take(padded, range(padded.shape[axis] - 1), axis=axis)
        upper = np.take(padded, range(1, padded.shape[axis]), axis=axis)
        idx = np.argwhere(lower != upper).astype(np.float64)
        idx[:, axis] += 0.5
        points.append(idx)
    return (np.concatenate(points) - 1.0) * np.asarray(spacing)


def _ellipsoid_area(a: float, b: float, c: float) -> float:
    """Surface of an ellipsoid with semi-axes a >= b >= c, Legendre series of IBSI 3.1.20 (20 terms)."""
    alpha = math.sqrt(max(0.0, 1 - b**2 / a**2))
    beta = math.sqrt(max(0.0, 1 - c**2 / a**2))
    if alpha * beta == 0:
        arg = 1.0
    else:
        arg = (alpha**2 + beta**2) / (2 * alpha * beta)
    total = 0.0
    for nu in range(21):
        total += (alpha * beta) ** nu / (1 - 4 * nu**2) * special.eval_legendre(nu, arg)
    return 4 * math.pi * a * b * total


def _spatial_autocorrelation(
    image: np.ndarray, mask: np.ndarray, spacing: tuple[float, float, float]
) -> tuple[float, float]:
    """Moran's I and Geary's C with weights 1 / distance over all voxel pairs of the intensity mask.

    Exact, via FFT convolutions with the weight kernel over voxel offsets d:
    sum_ij w_ij y_i y_j = sum_d w(d) sum_i y_i y_(i+d) = sum_i y_i (w * y)_i.
    """
    where = np.nonzero(mask)
    box = tuple(slice(w.min(), w.max() + 1) for w in where)
    m = mask[box].astype(np.float64)
    x = image[box]
    n = m.sum()
    mean = (x * m).sum() / n
    y = (x - mean) * m
    sq = y**2
    offsets = np.meshgrid(*[np.arange(-(k - 1), k) * s for k, s in zip(m.shape, spacing)], indexing="ij")
    dist = np.sqrt(sum(o**2 for o in offsets))
    weight = np.divide(1.0, dist, out=np.zeros_like(dist), where=dist > 0)

    # sum_d w(d) sum_i a_i b_(i+d) = sum_i a_i (w * b)_i because w is symmetric: two convolutions suffice.
    spread_m, spread_y = convolve_same_many([m, y], weight)
    w_sum = float((m * spread_m).sum())
    s_yy = float((y * spread_y).sum())
    s_sq_m = float((sq * spread_m).sum())
    denom = float(sq.sum())
    if w_sum <= 0 or denom <= 0:
        return float("nan"), float("nan")
    moran = n / w_sum * s_yy / denom
    geary = (n - 1) * (2 * s_sq_m - 2 * s_yy) / (2 * w_sum * denom)
    return float(moran), float(geary)


def morphology(
    image: np.ndarray, morph_mask: np.ndarray, int_mask: np.ndarray, spacing: tuple[float, float, float]
) -> dict[str, float]:
    """All IBSI morphological features with a consensus value (OMBB / MVEE are not computed)."""
    area, volume = mesh_area_volume(morph_mask, spacing)
    voxel_volume = float(np.prod(spacing))
    n_voxels = int(morph_mask.sum())
    vertices = mesh_vertices(morph_mask, spacing)
    hull = ConvexHull(vertices)
    diameter = float(pdist(vertices[hull.vertices]).max())
    positions = np.argwhere(morph_mask) * np.asarray(spacing)
    eigen = np.sort(np.linalg.eigvalsh(np.cov(positions, rowvar=False)))[::-1]
    eigen = np.clip(eigen, 0.0, None)
    major, minor, least = (float(v) for v in eigen)
    extent = vertices.max(axis=0) - vertices.min(axis=0)
    box_volume = float(np.prod(extent))
    box_area = float(2 * (extent[0] * extent[1] + extent[1] * extent[2] + extent[0] * extent[2]))
    semi = [2 * math.sqrt(v) for v in (major, minor, least)]
    ellipsoid_volume = 4 * math.pi * semi[0] * semi[1] * semi[2] / 3
    int_positions = np.argwhere(int_mask) * np.asarray(spacing)
    int_values = image[int_mask]
    com_geom = positions.mean(axis=0)
    com_grey = (int_positions * int_values[:, None]).sum(axis=0) / int_values.sum()
    moran, geary = _spatial_autocorrelation(image, int_mask, spacing)
    sphere = (36 * math.pi * volume**2) ** (1 / 3)
    return {
        "volume": volume,
        "vol_approx": n_voxels * voxel_volume,
        "area_mesh": area,
        "av": area / volume,
        "comp_1": volume / (math.sqrt(math.pi) * area**1.5),
        "comp_2": 36 * math.pi * volume**2 / area**3,
        "sph_dispr": area / sphere,
        "sphericity": sphere / area,
        "asphericity": (area**3 / (36 * math.pi * volume**2)) ** (1 / 3) - 1,
        "com": float(np.linalg.norm(com_geom - com_grey)),
        "diam": diameter,
        "pca_maj_axis": 4 * math.sqrt(major),
        "pca_min_axis": 4 * math.sqrt(minor),
        "pca_least_axis": 4 * math.sqrt(least),
        "pca_elongation": math.sqrt(minor / major) if major > 0 else float("nan"),
        "pca_flatness": math.sqrt(least / major) if major > 0 else float("nan"),
        "vol_dens_aabb": volume / box_volume,
        "area_dens_aabb": area / box_area,
        "vol_dens_aee": volume / ellipsoid_volume if ellipsoid_volume > 0 else float("nan"),
        "area_dens_aee": area / _ellipsoid_area(*semi) if semi[2] > 0 else float("nan"),
        "vol_dens_conv_hull": volume / hull.volume,
        "area_dens_conv_hull": area / hull.area,
        "integ_int": float(int_values.mean()) * volume,
        "moran_i": moran,
        "geary_c": geary,
    }
