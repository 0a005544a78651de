"""Same seed -> identical voxels and byte-identical manifests; another seed -> another cohort."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from demo.cohort import generate_cohort


def _generate(out: Path, seed: int) -> list[Path]:
    return generate_cohort(out, sites=2, cases_per_site=14, seed=seed, progress=lambda _: None)


def _volumes(manifest: Path) -> list[tuple[np.ndarray, tuple, tuple, np.ndarray]]:
    """(image voxels, spacing, origin, mask voxels) of every case, in manifest order."""
    cases = []
    for line in manifest.read_text().splitlines()[1:]:
        _, image_path, mask_path, *_ = line.split(",")
        image = sitk.ReadImage(str(manifest.parent / image_path))
        mask = sitk.ReadImage(str(manifest.parent / mask_path))
        cases.append((sitk.GetArrayFromImage(image), image.GetSpacing(), image.GetOrigin(), sitk.GetArrayFromImage(mask)))
    return cases


def test_demo_cohort_same_seed_gives_identical_manifests_and_voxels(tmp_path: Path) -> None:
    first = _generate(tmp_path / "one", seed=11)
    second = _generate(tmp_path / "two", seed=11)
    assert (tmp_path / "one" / "cohort.json").read_bytes() == (tmp_path / "two" / "cohort.json").read_bytes()
    for a, b in zip(first, second, strict=True):
        assert a.read_bytes() == b.read_bytes()
        for (image_a, spacing_a, origin_a, mask_a), (image_b, spacing_b, origin_b, mask_b) in zip(
            _volumes(a), _volumes(b), strict=True
        ):
            assert image_a.dtype == np.int16 and mask_a.dtype == np.uint8
            np.testing.assert_array_equal(image_a, image_b)
            np.testing.assert_array_equal(mask_a, mask_b)
            assert spacing_a == spacing_b and origin_a == origin_b
            assert set(np.unique(mask_a)) == {0, 1}


def test_demo_cohort_other_seed_gives_other_voxels(tmp_path: Path) -> None:
    first = _volumes(_generate(tmp_path / "one", seed=11)[0])
    other = _volumes(_generate(tmp_path / "two", seed=12)[0])
    assert not any(np.array_equal(a[0], b[0]) for a, b in zip(first, other))
    assert not any(np.array_equal(a[3], b[3]) for a, b in zip(first, other))


def test_demo_cohort_images_are_small_volumes_on_each_sites_own_grid(tmp_path: Path) -> None:
    manifests = generate_cohort(tmp_path, sites=4, cases_per_site=17, seed=3, progress=lambda _: None)
    spacings = set()
    for manifest in manifests:
        image, spacing, _, mask = _volumes(manifest)[0]
        assert max(image.shape) <= 64 and min(image.shape) >= 8
        assert 0 < mask.sum() < mask.size
        spacings.add(spacing)
    assert len(spacings) == 4  # every site resamples the phantoms on its own voxel grid
