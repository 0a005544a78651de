"""Site scanner models: how one hospital's CT turns the continuous phantom into its own voxels.

Acquisition of the truth image t (fine isotropic grid) at a site:

    image = scale · resample(G_psf ∗ t, site grid) + offset + noise_sd · N_kernel

G_psf is an anisotropic Gaussian point-spread function (reconstruction kernel in-plane, slice profile in z),
``resample`` trilinear interpolation onto the site's voxel grid (its own spacing), and N_kernel unit-SD white
noise correlated in-plane by the kernel (smooth kernels give blotchy noise). Intensities are rounded to
int16 as a CT scanner stores them. Each site also has its own contouring habit (contours drawn a little
outside or inside the true surface, more or less ragged) and its own case mix (share of malignant lesions).

The four preset sites are chosen so the site effects run against the case mix: the site with the most
malignant lesions has the least noise, the lowest contrast scale, the brightest offset and the smoothest
contours, while within a site malignant lesions are more heterogeneous, more irregular and mostly darker.
Pooled without harmonisation, the training sites then teach the model part of the scanner as "benign",
and it transfers worse to a held-out site than after a per-site location/scale correction.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from demo.grids import apply_separable, gaussian_matrix, interpolation_matrix

FIELD_OF_VIEW_MM = 48.0  # every image covers this cube (liver patch around the lesion)
_NAMESPACES = {"case": 1, "labels": 2, "scanner": 3}


def stream_key(seed: int, namespace: str, site: int, case: int = 0, kind: int = 1) -> list[int]:
    """Entropy of one independent random stream: five words, the last never 0.

    numpy's SeedSequence gives [a, b] and [a, b, 0] the same stream, so every key has the same length and a
    non-zero last word, and each use (cases, a site's label order, a drawn scanner) has its own namespace.
    """
    if kind < 1:
        raise ValueError(f"stream kind must be >= 1, got {kind}")
    return [seed, _NAMESPACES[namespace], site, case, kind]


@dataclass(frozen=True)
class Scanner:
    """One site's acquisition chain and case mix."""

    description: str
    spacing_mm: tuple[float, float, float]  # voxel spacing (x, y, z)
    psf_sigma_mm: tuple[float, float, float]  # Gaussian blur (x, y, z): kernel and slice profile
    noise_sd: float  # image noise SD in output units
    noise_correlation_mm: float  # in-plane noise correlation length (0 = white)
    offset: float  # added after scaling (calibration drift, contrast timing)
    scale: float  # contrast scale (tube voltage, contrast dose)
    contour_bias_mm: float  # the site's contouring habit: + draws outside the true surface, − inside
    contour_jitter_mm: float  # raggedness of the site's (semi-automatic) contours
    malignant_fraction: float  # share of malignant lesions at this site

    def grid_size(self) -> tuple[int, int, int]:
        """Voxels per axis (x, y, z) covering the field of view."""
        return tuple(int(round(FIELD_OF_VIEW_MM / s)) for s in self.spacing_mm)  # type: ignore[return-value]

    def voxel_axes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Voxel-centre coordinates (mm) along x, y and z; the grid is centred on the field of view."""
        return tuple(  # type: ignore[return-value]
            ((np.arange(n) - (n - 1) / 2.0) * s).astype(np.float32) for n, s in zip(self.grid_size(), self.spacing_mm)
        )

    def origin_mm(self) -> tuple[float, float, float]:
        """Position of the first voxel centre (identity direction)."""
        return tuple(float(-(n - 1) / 2.0 * s) for n, s in zip(self.grid_size(), self.spacing_mm))  # type: ignore[return-value]


PRESET_SCANNERS: tuple[Scanner, ...] = (
    Scanner("tertiary centre, recent scanner, sharp kernel, thin slices",
            spacing_mm=(0.75, 0.75, 1.0), psf_sigma_mm=(0.45, 0.45, 0.5), noise_sd=8.0, noise_correlation_mm=0.3,
            offset=30.0, scale=0.85, contour_bias_mm=-0.5, contour_jitter_mm=0.2, malignant_fraction=0.60),
    Scanner("district hospital, older scanner, smooth kernel, thick slices",
            spacing_mm=(0.9, 0.9, 2.5), psf_sigma_mm=(0.9, 0.9, 1.2), noise_sd=18.0, noise_correlation_mm=0.9,
            offset=-15.0, scale=1.12, contour_bias_mm=0.6, contour_jitter_mm=0.9, malignant_fraction=0.35),
    Scanner("university hospital, other vendor, standard kernel",
            spacing_mm=(0.8, 0.8, 1.5), psf_sigma_mm=(0.65, 0.65, 0.8), noise_sd=13.0, noise_correlation_mm=0.6,
            offset=10.0, scale=0.95, contour_bias_mm=0.0, contour_jitter_mm=0.5, malignant_fraction=0.50),
    Scanner("private clinic, low-dose protocol, thick slices",
            spacing_mm=(1.0, 1.0, 3.0), psf_sigma_mm=(1.0, 1.0, 1.5), noise_sd=26.0, noise_correlation_mm=0.7,
            offset=-30.0, scale=1.25, contour_bias_mm=1.0, contour_jitter_mm=1.2, malignant_fraction=0.30),
)


def draw_scanner(rng: np.random.Generator) -> Scanner:
    """A random scanner for sites beyond the presets, within the presets' ranges."""
    in_plane = float(rng.uniform(0.75, 1.0))
    thickness = float(rng.choice([1.0, 1.25, 1.5, 2.0, 2.5, 3.0]))
    blur = float(rng.uniform(0.45, 1.0))
    return Scanner(
        description="additional site, randomly drawn scanner",
        spacing_mm=(in_plane, in_plane, thickness),
        psf_sigma_mm=(blur, blur, thickness / 2.0),
        noise_sd=float(rng.uniform(9.0, 24.0)),
        noise_correlation_mm=float(rng.uniform(0.3, 0.9)),
        offset=float(rng.uniform(-25.0, 30.0)),
        scale=float(rng.uniform(0.85, 1.2)),
        contour_bias_mm=float(rng.uniform(-0.4, 0.8)),
        contour_jitter_mm=float(rng.uniform(0.2, 1.2)),
        malignant_fraction=float(np.round(rng.uniform(0.30, 0.60), 2)),
    )


def scanner_for_site(index: int, seed: int) -> Scanner:
    """Preset scanner for the first sites, a seeded random one after them."""
    if index < len(PRESET_SCANNERS):
        return PRESET_SCANNERS[index]
    return draw_scanner(np.random.default_rng(stream_key(seed, "scanner", index)))


def acquire(truth: np.ndarray, truth_axis: np.ndarray, scanner: Scanner, rng: np.random.Generator) -> np.ndarray:
    """The site's int16 image (z, y, x) of the truth image (isotropic cube with coordinates ``truth_axis``)."""
    # Blur then trilinear resampling, both separable: one (site voxels × truth voxels) matrix per axis.
    ox, oy, oz = (
        interpolation_matrix(truth_axis, target) @ gaussian_matrix(truth_axis, sigma)
        for target, sigma in zip(scanner.voxel_axes(), scanner.psf_sigma_mm)
    )
    sampled = apply_separable(truth, ox, oy, oz)
    noise = rng.standard_normal(sampled.shape, dtype=np.float32)
    if scanner.noise_correlation_mm > 0:
        in_plane = [0.0, scanner.noise_correlation_mm / scanner.spacing_mm[1], scanner.noise_correlation_mm / scanner.spacing_mm[0]]
        noise = ndimage.gaussian_filter(noise, in_plane)
        noise /= max(float(noise.std()), 1e-12)
    image = scanner.scale * sampled + scanner.offset + scanner.noise_sd * noise
    return np.clip(np.rint(image), -1024, 3071).astype(np.int16)
