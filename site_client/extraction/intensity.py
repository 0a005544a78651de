"""Intensity-based families (IBSI 3.2-3.5): local intensity, statistics, intensity histogram, intensity-volume
histogram."""

from __future__ import annotations

import numpy as np

from site_client.extraction.fft import convolve_same_many
from site_client.extraction.preprocess import PEAK_RADIUS_MM


def _moments(x: np.ndarray) -> tuple[float, float, float, float]:
    """Mean, variance (/N), skewness and *excess* kurtosis (IBSI: kurtosis - 3)."""
    mean = float(x.mean())
    d = x - mean
    var = float((d**2).mean())
    if var > 0:
        skew = float((d**3).mean() / var**1.5)
        kurt = float((d**4).mean() / var**2 - 3.0)
    else:
        skew, kurt = 0.0, 0.0
    return mean, var, skew, kurt


def _distribution(x: np.ndarray) -> dict[str, float]:
    """Features shared by the statistics and intensity-histogram families."""
    mean, var, skew, kurt = _moments(x)
    p10, p25, p75, p90 = (float(v) for v in np.percentile(x, [10, 25, 75, 90]))
    median = float(np.median(x))
    robust = x[(x >= p10) & (x <= p90)]
    return {
        "mean": mean,
        "var": var,
        "skew": skew,
        "kurt": kurt,
        "median": median,
        "min": float(x.min()),
        "p10": p10,
        "p90": p90,
        "max": float(x.max()),
        "iqr": p75 - p25,
        "range": float(x.max() - x.min()),
        "mad": float(np.abs(x - mean).mean()),
        "rmad": float(np.abs(robust - robust.mean()).mean()),
        "medad": float(np.abs(x - median).mean()),
        "cov": float(np.sqrt(var) / mean) if mean != 0 else float("nan"),
        "qcod": (p75 - p25) / (p75 + p25) if (p75 + p25) != 0 else float("nan"),
    }


def statistics(x: np.ndarray) -> dict[str, float]:
    """Intensity statistics on the ROI intensities (IBSI 3.3); energy without any shift."""
    values = _distribution(x)
    values["energy"] = float((x**2).sum())
    values["rms"] = float(np.sqrt((x**2).mean()))
    return values


def intensity_histogram(levels: np.ndarray, ng: int) -> dict[str, float]:
    """Intensity-histogram features on the discretised grey levels 1..Ng (IBSI 3.4)."""
    values = _distribution(levels.astype(np.float64))
    counts = np.bincount(levels, minlength=ng + 1)[1 : ng + 1].astype(np.float64)
    p = counts / counts.sum()
    nz = p[p > 0]
    values["entropy"] = float(-(nz * np.log2(nz)).sum())
    values["uniformity"] = float((p**2).sum())
    top = np.flatnonzero(counts == counts.max()) + 1
    values["mode"] = float(top[np.argmin(np.abs(top - values["mean"]))])
    gradient = np.gradient(counts) if counts.size > 1 else np.zeros(1)
    values["max_grad"] = float(gradient.max())
    values["max_grad_g"] = float(np.argmax(gradient) + 1)
    values["min_grad"] = float(gradient.min())
    values["min_grad_g"] = float(np.argmin(gradient) + 1)
    return values


def intensity_volume_histogram(gamma: np.ndarray, grid: np.ndarray, lower: float, upper: float) -> dict[str, float]:
    """IVH features (IBSI 3.5) of intensities ``gamma`` on the level ``grid`` (every possible discretised level from
    the lowest to the highest present, empty ones included) with intensity range [lower, upper].

    nu(g) = fraction of the volume with intensity >= g; V_x = nu at the first level with intensity fraction
    (g - lower) / (upper - lower) >= x; I_x = the lowest level with nu(g) <= x.
    """
    sorted_gamma = np.sort(gamma)
    nu = 1.0 - np.searchsorted(sorted_gamma, grid - 1e-9 * max(1.0, abs(grid).max()), side="left") / gamma.size
    fraction = (grid - lower) / (upper - lower) if upper > lower else np.zeros_like(grid)

    def volume_at(x: float) -> float:
        above = fraction >= x
        return float(nu[above][0]) if above.any() else 0.0

    def intensity_at(x: float) -> float:
        below = nu <= x
        return float(grid[below][0]) if below.any() else float(grid[-1])

    v10, v90 = volume_at(0.10), volume_at(0.90)
    i10, i90 = intensity_at(0.10), intensity_at(0.90)
    return {"v10": v10, "v90": v90, "i10": i10, "i90": i90, "diff_v10_v90": v10 - v90, "diff_i10_i90": i10 - i90}


def local_intensity(image: np.ndarray, roi: np.ndarray, spacing: tuple[float, float, float]) -> dict[str, float]:
    """Local (around the maximum) and global intensity peaks: mean in a 1 cm^3 sphere (IBSI 3.2).

    The sphere holds every voxel whose centre lies within r = (3 / 4pi)^(1/3) cm of the central voxel.
    """
    reach = [int(np.floor(PEAK_RADIUS_MM / s)) for s in spacing]
    grids = np.meshgrid(*[np.arange(-r, r + 1) * s for r, s in zip(reach, spacing)], indexing="ij")
    kernel = (sum(g**2 for g in grids) <= PEAK_RADIUS_MM**2 + 1e-9).astype(np.float64)
    sums, count = convolve_same_many([image, np.ones_like(image)], kernel)
    means = sums / np.round(count)
    roi_values = image[roi]
    top = roi & (image == roi_values.max())
    return {"peak_loc": float(means[top].max()), "peak_glob": float(means[roi].max())}


__all__ = ["statistics", "intensity_histogram", "intensity_volume_histogram", "local_intensity"]
