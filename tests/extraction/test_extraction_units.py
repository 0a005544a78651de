"""Small IBSI pre-processing rules checked on hand-computed examples (IBSI manual 2.x / 3.x formulas)."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from protocols.schema import Discretisation, Extraction, Resegmentation
from site_client.extraction.engine import extract_ibsi
from site_client.extraction.preprocess import discretise, resegment, target_grid
from site_client.imaging.errors import CaseInputError


def test_fixed_bin_width_counts_from_the_resegmentation_lower_bound():
    values = np.array([-500.0, -476.0, -475.0, 0.0, 399.0])
    levels, ng = discretise(values, Discretisation(method="fixed_bin_width", bin_width=25), -500.0)
    # floor((x + 500) / 25) + 1
    assert levels.tolist() == [1, 1, 2, 21, 36] and ng == 36
    # without a lower bound the ROI minimum is the origin
    levels, _ = discretise(values + 3, Discretisation(method="fixed_bin_width", bin_width=25), None)
    assert levels.tolist() == [1, 1, 2, 21, 36]


def test_fixed_bin_number_puts_the_maximum_in_the_last_bin():
    values = np.array([0.0, 1.0, 2.0, 3.0, 4.0])
    levels, ng = discretise(values, Discretisation(method="fixed_bin_number", bin_number=4), None)
    # floor(4 (x - 0) / 4) + 1, and the maximum in bin 4
    assert levels.tolist() == [1, 2, 3, 4, 4] and ng == 4


def test_ibsi_grid_is_centred():
    # CT phantom x axis: 204 voxels of 0.977 mm -> ceil(199.3 / 2) = 100 voxels of 2 mm, centres aligned.
    n_new, offset = target_grid(204, 0.977, 2.0)
    assert n_new == 100
    assert offset + (n_new - 1) / 2 * 2.0 == pytest.approx((204 - 1) / 2 * 0.977)


def test_range_and_outlier_resegmentation_together():
    image = np.array([-2000.0, -900.0, 10.0, 12.0, 14.0, 500.0] + [12.0] * 20)
    mask = np.ones_like(image, dtype=bool)
    kept = resegment(image, mask, Resegmentation(range=[-1000, 400], outlier_sigma=1))
    in_range = image[(image >= -1000) & (image <= 400)]
    mean, sd = in_range.mean(), in_range.std()
    expected = (image >= -1000) & (image <= 400) & (np.abs(image - mean) <= sd)
    assert np.array_equal(kept, expected) and not kept[1] and kept[2]


def test_too_many_grey_levels_is_a_clear_error():
    rng = np.random.default_rng(0)
    array = rng.integers(-1000, 3000, (10, 10, 10)).astype(np.int16)
    mask = np.zeros_like(array, dtype=np.uint8)
    mask[2:8, 2:8, 2:8] = 1
    with pytest.raises(CaseInputError, match=r"discretisation gives \d+ grey levels \(more than 1000\)"):
        extract_ibsi(sitk.GetImageFromArray(array), sitk.GetImageFromArray(mask), Extraction(discretisation=Discretisation(bin_width=1)))


def test_2d_image_with_a_2d_protocol():
    rng = np.random.default_rng(3)
    array = rng.normal(100, 30, (24, 24)).astype(np.int16)
    mask = np.zeros((24, 24), np.uint8)
    mask[5:19, 6:20] = 1
    extraction = Extraction(
        dimensionality="2D",
        families=["statistics", "glcm", "glszm"],
        texture_aggregation=["2D_avg", "2D_comb"],
    )
    features = extract_ibsi(sitk.GetImageFromArray(array), sitk.GetImageFromArray(mask), extraction)
    assert features["stat_mean"] == pytest.approx(array[mask == 1].mean())
    assert {"cm_joint_max_2D_avg", "cm_joint_max_2D_comb", "szm_sze_2D"} <= set(features)
    assert all(np.isfinite(v) for v in features.values())
