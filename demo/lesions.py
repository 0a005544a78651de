"""Continuous liver-lesion phantoms: a shape defined in millimetres and a tissue image on a fine grid.

A lesion is a star-shaped body around its centre. Its surface radius in direction ``u`` is

    r(u) = R · e(u) · (1 + Σ_k a_k · cos(π f_k (u·v_k) + φ_k))

with ``e(u) = 1 / ‖A⁻¹ Qᵀ u‖`` a unit-volume ellipsoid (axes A, rotation Q) and the sum a set of zonal waves
around random axes v_k (a cheap stand-in for spherical harmonics of degree ≈ f_k). Benign lesions get
few, weak, low-order waves (smooth, well defined); malignant ones stronger, higher-order waves (lobulated).

Inside, the tissue is ``mean + texture + rim − necrosis``: texture is zero-mean Gaussian-correlated noise
summed over length scales (weaker, 1.5 and 3 mm, for benign; stronger, 1 to 5 mm, for malignant), rim
is peripheral enhancement, necrosis a hypo-attenuating core with an irregular edge. The margin is a ramp
of width ``margin_mm`` (sharp for benign, infiltrative for malignant). Every class difference is a
distribution shift with overlap, so no single property separates the classes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from demo.grids import apply_separable, gaussian_matrix, interpolation_matrix

LIVER_HU = 105.0  # portal-venous liver parenchyma
TRUTH_SPACING_MM = 0.75  # the "continuous" phantom is rendered on this isotropic grid before acquisition


@dataclass(frozen=True)
class Lesion:
    """Every parameter of one lesion phantom (millimetres and Hounsfield-like units)."""

    malignant: bool
    radius_mm: float  # equivalent radius R before lobulation
    centre_mm: np.ndarray  # (3,) offset from the field-of-view centre, (x, y, z)
    axes: np.ndarray  # (3,) ellipsoid semi-axes relative to R, product 1
    rotation: np.ndarray  # (3, 3) orthonormal
    wave_axes: np.ndarray  # (K, 3) unit vectors v_k
    wave_orders: np.ndarray  # (K,) f_k
    wave_phases: np.ndarray  # (K,) φ_k
    wave_amplitudes: np.ndarray  # (K,) a_k
    margin_mm: float  # width of the lesion/liver transition ramp
    mean_hu: float
    texture_sd: float  # SD of the summed texture field
    texture_scales_mm: tuple[float, ...]  # Gaussian correlation lengths of the texture components
    rim_hu: float  # peripheral enhancement (added in the outer quarter of the radius)
    necrosis_radius: float  # necrotic core radius relative to r(u); 0 = none
    necrosis_hu: float  # how much darker the core is
    liver_texture_sd: float

    @property
    def max_radius_mm(self) -> float:
        """Upper bound of r(u): used to check the lesion fits in the field of view."""
        return float(self.radius_mm * self.axes.max() * (1.0 + np.abs(self.wave_amplitudes).sum()))


def _rotation(rng: np.random.Generator) -> np.ndarray:
    """Uniform random rotation (QR of a Gaussian matrix with the sign fix)."""
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def _unit_vectors(rng: np.random.Generator, count: int) -> np.ndarray:
    vectors = rng.standard_normal((count, 3))
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def draw_lesion(rng: np.random.Generator, malignant: bool, max_radius_mm: float) -> Lesion:
    """Draw one lesion of the given class; class-conditional distributions overlap on purpose.

    Size: log-normal, medians 8.5 mm (benign) vs 9.5 mm (malignant), log-SD 0.30 → size-only AUC ≈ 0.6.
    The whole lesion is scaled down when r(u) could leave ``max_radius_mm``.
    """
    radius = float(np.clip(rng.lognormal(np.log(9.5 if malignant else 8.5), 0.30), 4.5, 17.0))
    elongation = rng.lognormal(0.0, 0.10, size=3)
    axes = elongation / np.prod(elongation) ** (1.0 / 3.0)
    if malignant:
        count = int(rng.integers(3, 8))
        orders = rng.uniform(2.5, 6.0, size=count)
        amplitude_total = float(np.clip(rng.lognormal(np.log(0.12), 0.45), 0.03, 0.45))
    else:
        count = int(rng.integers(2, 5))
        orders = rng.uniform(1.0, 3.5, size=count)
        amplitude_total = float(np.clip(rng.lognormal(np.log(0.07), 0.50), 0.01, 0.35))
    amplitudes = amplitude_total * rng.dirichlet(np.ones(count))
    lesion = Lesion(
        malignant=malignant,
        radius_mm=radius,
        centre_mm=rng.uniform(-2.5, 2.5, size=3),
        axes=axes,
        rotation=_rotation(rng),
        wave_axes=_unit_vectors(rng, count),
        wave_orders=orders,
        wave_phases=rng.uniform(0.0, 2.0 * np.pi, size=count),
        wave_amplitudes=amplitudes,
        margin_mm=float(rng.uniform(1.0, 2.6) if malignant else rng.uniform(0.6, 1.8)),
        mean_hu=float(rng.normal(57.0 if malignant else 62.0, 12.0)),
        texture_sd=float(np.clip(rng.lognormal(np.log(12.5 if malignant else 6.0), 0.45), 2.0, 40.0)),
        texture_scales_mm=(1.0, 2.5, 5.0) if malignant else (1.5, 3.0),
        rim_hu=float(abs(rng.normal(12.0, 6.0))) if rng.random() < (0.45 if malignant else 0.20) else 0.0,
        necrosis_radius=float(rng.uniform(0.3, 0.6)) if rng.random() < (0.45 if malignant else 0.12) else 0.0,
        necrosis_hu=float(rng.uniform(20.0, 45.0)),
        liver_texture_sd=float(rng.uniform(2.0, 4.0)),
    )
    bound = lesion.max_radius_mm + np.abs(lesion.centre_mm).max() + lesion.margin_mm
    if bound > max_radius_mm:
        shrink = (max_radius_mm - np.abs(lesion.centre_mm).max() - lesion.margin_mm) / (
            lesion.max_radius_mm
        )
        lesion = replace(lesion, radius_mm=lesion.radius_mm * shrink)
    return lesion


def surface_radius(lesion: Lesion, directions: np.ndarray) -> np.ndarray:
    """r(u) for unit direction vectors ``directions`` of shape (..., 3), in mm (float32 arithmetic)."""
    directions = directions.astype(np.float32, copy=False)
    local = directions @ lesion.rotation.astype(np.float32)  # components along the ellipsoid axes (Qᵀ u)
    ellipsoid = 1.0 / np.sqrt(np.sum((local / lesion.axes.astype(np.float32)) ** 2, axis=-1))
    projections = directions @ lesion.wave_axes.T.astype(np.float32)  # (..., K)
    angles = projections * np.float32(np.pi) * lesion.wave_orders.astype(np.float32) + lesion.wave_phases.astype(np.float32)
    waves = np.cos(angles) @ lesion.wave_amplitudes.astype(np.float32)
    return np.float32(lesion.radius_mm) * ellipsoid * (1.0 + waves)


def radial_coordinates(lesion: Lesion, points_mm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For points (..., 3) relative to the FOV centre: distance to the lesion centre and r(u) in that direction."""
    offsets = points_mm - lesion.centre_mm.astype(np.float32)
    distance = np.linalg.norm(offsets, axis=-1)
    directions = offsets / np.maximum(distance, 1e-9)[..., None]
    return distance, surface_radius(lesion, directions)


def _box(lesion: Lesion, x: np.ndarray, y: np.ndarray, z: np.ndarray, reach: float) -> tuple[slice, slice, slice]:
    """Array slices (z, y, x) of the grid points within ``reach`` mm of the lesion centre along every axis."""
    slices = []
    for axis, centre in zip((z, y, x), lesion.centre_mm[::-1]):
        near = np.flatnonzero(np.abs(axis - centre) <= reach)
        slices.append(slice(int(near[0]), int(near[-1]) + 1) if near.size else slice(0, 0))
    return tuple(slices)  # type: ignore[return-value]


def inside(lesion: Lesion, x: np.ndarray, y: np.ndarray, z: np.ndarray, bias_mm: float = 0.0,
           jitter_mm: float = 0.0, rng: np.random.Generator | None = None) -> np.ndarray:
    """Segmentation on the grid with voxel-centre coordinates x, y, z: distance ≤ r(u) + bias + jitter·n(x).

    ``bias_mm`` draws the contour outside (+) or inside (−) the true surface; ``jitter_mm`` scales a
    unit-SD noise field n (3.5 mm correlation, drawn from ``rng``) that makes the contour ragged.
    """
    result = np.zeros((z.size, y.size, x.size), dtype=bool)
    region = _box(lesion, x, y, z, lesion.max_radius_mm + max(bias_mm, 0.0) + 3.0 * jitter_mm)
    box_axes = (x[region[2]], y[region[1]], z[region[0]])
    distance, radius = radial_coordinates(lesion, _points(*box_axes))
    radius = radius + bias_mm
    if jitter_mm > 0:
        if rng is None:
            raise ValueError("a contour jitter needs a random generator")
        radius = radius + jitter_mm * correlated_noise(rng, *box_axes, 3.5)
    result[region] = distance <= radius
    return result


def correlated_noise(rng: np.random.Generator, x: np.ndarray, y: np.ndarray, z: np.ndarray, scale_mm: float) -> np.ndarray:
    """Zero-mean, unit-SD Gaussian-correlated noise (correlation length ``scale_mm``) at grid axes x, y, z.

    White noise is drawn on a lattice of spacing max(truth spacing, scale/2) covering the grid, blurred with
    σ = scale, then linearly interpolated onto the grid: coarse scales cost almost nothing.
    """
    step = max(TRUTH_SPACING_MM, scale_mm / 2.0)
    lattice = [np.arange(a.min() - 2 * scale_mm, a.max() + 2 * scale_mm + step, step) for a in (x, y, z)]
    white = rng.standard_normal((lattice[2].size, lattice[1].size, lattice[0].size), dtype=np.float32)
    ox, oy, oz = (interpolation_matrix(c, a) @ gaussian_matrix(c, scale_mm) for c, a in zip(lattice, (x, y, z)))
    field = apply_separable(white, ox, oy, oz)
    field -= field.mean()
    return field / max(float(field.std()), 1e-12)


def truth_axis(size: int) -> np.ndarray:
    """Physical coordinates (mm) of the centred isotropic truth grid along one axis."""
    return ((np.arange(size) - (size - 1) / 2.0) * TRUTH_SPACING_MM).astype(np.float32)


def _points(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    zz, yy, xx = np.meshgrid(z, y, x, indexing="ij")
    return np.stack([xx, yy, zz], axis=-1)


def render_truth(lesion: Lesion, rng: np.random.Generator, axis: np.ndarray) -> np.ndarray:
    """Tissue intensities (float32, z-y-x) of liver with the lesion, on the isotropic grid ``axis``³.

    The lesion is only rendered inside its bounding box (everything beyond it is liver).
    """
    liver = LIVER_HU + lesion.liver_texture_sd * correlated_noise(rng, axis, axis, axis, 1.5)
    region = _box(lesion, axis, axis, axis, lesion.max_radius_mm + lesion.margin_mm + TRUTH_SPACING_MM)
    box_axes = (axis[region[2]], axis[region[1]], axis[region[0]])  # x, y, z
    points = _points(*box_axes)
    shape = points.shape[:-1]

    distance, radius = radial_coordinates(lesion, points)
    relative = distance / radius
    # Lesion fraction: 1 inside, 0 outside, a linear ramp of width margin_mm across the surface.
    fraction = np.clip(0.5 - (distance - radius) / lesion.margin_mm, 0.0, 1.0).astype(np.float32)

    weights = np.linspace(1.0, 1.6, len(lesion.texture_scales_mm))  # coarser scales carry more variance
    texture = sum(w * correlated_noise(rng, *box_axes, s) for w, s in zip(weights, lesion.texture_scales_mm))
    texture *= lesion.texture_sd / np.sqrt(np.sum(weights**2))
    tissue = lesion.mean_hu + texture
    if lesion.rim_hu > 0:
        tissue += lesion.rim_hu * np.clip((relative - 0.7) / 0.2, 0.0, 1.0)
    if lesion.necrosis_radius > 0:
        # Irregular core edge: the core radius wobbles with a coarse noise field (±25 %).
        wobble = 1.0 + 0.25 * correlated_noise(rng, *box_axes, 4.0)
        core = np.clip((lesion.necrosis_radius * wobble - relative) / 0.08, 0.0, 1.0)
        tissue -= lesion.necrosis_hu * core

    local = liver[region]
    liver[region] = fraction * tissue + (1.0 - fraction) * local
    return liver.astype(np.float32, copy=False)
