"""Mesh area/volume and Moran's I / Geary's C against independent references.

- Mesh: pyradiomics' own ``cShape.calculate_coefficients`` on random masks with anisotropic spacing (our cube
  tables avoid its O(V^2) diameter search and must give the same numbers).
- Moran's I / Geary's C: brute-force double sums over all voxel pairs with w_ij = 1 / distance.
"""

from __future__ import annotations

import numpy as np
import pytest
from radiomics import cShape

from site_client.extraction.mesh import mesh_area_volume
from site_client.extraction.morphology import _spatial_autocorrelation


@pytest.mark.parametrize("seed", range(4))
def test_mesh_equals_pyradiomics(seed):
    rng = np.random.default_rng(seed)
    mask = rng.random((6 + seed, 7, 8)) > 0.45
    spacing = (2.5, 0.8, 1.1)
    area, volume, _ = cShape.calculate_coefficients(np.pad(mask, 1), np.asarray(spacing))
    ours = mesh_area_volume(mask, spacing)
    assert ours == pytest.approx((area, volume), rel=1e-12)


def _brute_force(image, mask, spacing):
    positions = np.argwhere(mask) * np.asarray(spacing)
    values = image[mask].astype(float)
    distance = np.sqrt(((positions[:, None, :] - positions[None, :, :]) ** 2).sum(-1))
    weight = np.divide(1.0, distance, out=np.zeros_like(distance), where=distance > 0)
    dev = values - values.mean()
    n, w_sum = len(values), weight.sum()
    moran = n / w_sum * (weight * np.outer(dev, dev)).sum() / (dev**2).sum()
    geary = (n - 1) * (weight * (values[:, None] - values[None, :]) ** 2).sum() / (2 * w_sum * (dev**2).sum())
    return moran, geary


@pytest.mark.parametrize("seed", range(3))
def test_moran_geary_equal_brute_force(seed):
    rng = np.random.default_rng(seed)
    image = rng.normal(size=(5, 6, 7)).cumsum(axis=2)
    mask = rng.random(image.shape) > 0.3
    spacing = (3.0, 1.0, 0.7)
    assert _spatial_autocorrelation(image, mask, spacing) == pytest.approx(_brute_force(image, mask, spacing), rel=1e-9)
