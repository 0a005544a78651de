"""Separable grid operators: a blur or a linear interpolation along one axis is a small matrix.

Applying one matrix per axis (x, then y, then z) to a z-y-x volume equals trilinear interpolation (and
Gaussian blur) of the whole volume, at the cost of three small matrix products.
"""

from __future__ import annotations

import numpy as np


def interpolation_matrix(source: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """(targets × source) weights of linear interpolation on the regular axis ``source`` (clamped at the ends)."""
    step = float(source[1] - source[0])
    n = source.size
    position = np.clip((np.asarray(targets, dtype=np.float64) - float(source[0])) / step, 0.0, n - 1.0)
    lower = np.minimum(np.floor(position).astype(int), n - 2)
    weight = position - lower
    matrix = np.zeros((position.size, n))
    rows = np.arange(position.size)
    matrix[rows, lower] = 1.0 - weight
    matrix[rows, lower + 1] = weight
    return matrix


def gaussian_matrix(axis: np.ndarray, sigma_mm: float) -> np.ndarray:
    """(n × n) Gaussian blur with standard deviation ``sigma_mm``, rows renormalised at the edges (σ = 0: identity)."""
    if sigma_mm <= 0:
        return np.eye(axis.size)
    offsets = axis[:, None].astype(np.float64) - axis[None, :]
    matrix = np.exp(-0.5 * (offsets / sigma_mm) ** 2)
    return matrix / matrix.sum(axis=1, keepdims=True)


def apply_separable(volume: np.ndarray, ox: np.ndarray, oy: np.ndarray, oz: np.ndarray) -> np.ndarray:
    """out[z, y, x] = Σ oz[z, k] · oy[y, j] · ox[x, i] · volume[k, j, i] (float32)."""
    volume = np.asarray(volume, dtype=np.float32)
    ox, oy, oz = (np.asarray(m, dtype=np.float32) for m in (ox, oy, oz))
    nz, ny, nx = volume.shape
    out = (volume.reshape(-1, nx) @ ox.T).reshape(nz, ny, ox.shape[0])
    out = (oy @ out.transpose(1, 0, 2).reshape(ny, -1)).reshape(oy.shape[0], nz, ox.shape[0])
    out = (oz @ out.transpose(1, 0, 2).reshape(nz, -1)).reshape(oz.shape[0], oy.shape[0], ox.shape[0])
    return out
