"""Privacy: after suppress_small_cells no emitted count cell is in 1..k-1, and metrics stay valid."""

from __future__ import annotations

import numpy as np
import pytest

from coordinator.validation import SuppressedAggregateError, combine_aggregates, threshold_metrics
from site_client.evaluation import (
    calibration_sums,
    class_histograms,
    conformal_histogram,
    confusion_counts,
    emitted_count_cells,
    feature_volume_sums,
    logistic_calibration_terms,
    prediction_set_coverage,
    prediction_set_sizes,
    reliability_bins,
    suppress_small_cells,
)


def all_aggregates(s, rng):
    return [
        class_histograms(s.p, s.y, 50),
        reliability_bins(s.p, s.y, 10),
        conformal_histogram(s.p, s.y, 50, 0),
        conformal_histogram(s.p, s.y, 50, 1),
        confusion_counts(s.p, s.y, 0.5),
        confusion_counts(s.p, s.y, np.unique(np.round(rng.uniform(0.02, 0.98, 15), 3))),
        calibration_sums(s.p, s.y),
        prediction_set_coverage(s.p, s.y, 0.6, 0.6),
        prediction_set_sizes(s.p, 0.4, 0.45),
        logistic_calibration_terms(s.p, s.y, 0.0, 1.0),
        feature_volume_sums(s.x, s.volume),
    ]


def interval_cells(agg):
    """Counts implied between adjacent thresholds (what differencing the emitted cumulative counts reveals)."""
    if "thresholds" not in agg:
        return np.zeros(0)
    tp, fp = agg["n_tp"], agg["n_fp"]
    return np.concatenate([np.diff(tp), np.diff(fp), agg["n_fn"][:1], agg["n_tn"][:1]])


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("k", [2, 5, 11])
def test_no_emitted_cell_in_1_to_k_minus_1(make_sites, seed, k):
    rng = np.random.default_rng(seed)
    sizes = [int(rng.integers(8, 120))]
    s = make_sites(seed, sizes)[0]
    for agg in all_aggregates(s, rng):
        out = suppress_small_cells(agg, k)
        cells = np.concatenate([emitted_count_cells(out), np.abs(interval_cells(out))]) if not out["suppressed"] else np.zeros(0)
        bad = cells[(cells >= 1) & (cells < k)]
        assert bad.size == 0, f"cells {bad} in 1..{k - 1} emitted from {sorted(agg)}"
        if out["suppressed"]:
            assert set(out) == {"suppressed", "k"}  # nothing else leaves the site
        else:
            # merged aggregates stay consistent: totals preserved
            for key in [k_ for k_ in agg if k_.startswith("bin_")]:
                assert np.sum(out[key]) == pytest.approx(np.sum(agg[key]))


def test_k1_changes_nothing(make_sites):
    s = make_sites(1, [40])[0]
    agg = class_histograms(s.p, s.y, 20)
    out = suppress_small_cells(agg, 1)
    assert np.array_equal(out["bin_n_pos"], agg["bin_n_pos"]) and np.array_equal(out["edges"], agg["edges"])


def test_merging_is_on_the_original_edges_and_sites_combine_on_common_edges(make_sites):
    sites = make_sites(2, [40, 200])
    merged = [suppress_small_cells(class_histograms(s.p, s.y, 50), 5) for s in sites]
    for m in merged:
        assert np.all(np.isin(np.round(m["edges"], 12), np.round(np.linspace(0, 1, 51), 12)))
    pooled = combine_aggregates(merged)
    assert pooled["bin_n_pos"].sum() == sum(int(s.y.sum()) for s in sites)
    assert set(np.round(pooled["edges"], 12)) <= set(np.round(merged[0]["edges"], 12))


def test_dropped_threshold_and_suppressed_site_give_clear_errors(make_sites):
    s = make_sites(3, [30])[0]
    grid = [0.1, 0.11, 0.5]
    out = suppress_small_cells(confusion_counts(s.p, s.y, grid), 6)
    if not out["suppressed"] and 0.11 not in out["thresholds"]:
        with pytest.raises(ValueError, match="threshold 0.11 is not in the confusion counts"):
            threshold_metrics(out, 0.11)
    few = suppress_small_cells(calibration_sums(s.p[:3], s.y[:3]), 5)
    assert few == {"suppressed": 1, "k": 5}
    with pytest.raises(SuppressedAggregateError, match="site hospitalB: aggregate suppressed"):
        combine_aggregates([calibration_sums(s.p, s.y), few], ["hospitalA", "hospitalB"])


def test_bad_k_is_rejected():
    with pytest.raises(ValueError, match="min_cell_count"):
        suppress_small_cells({"n": 3}, 0)


@pytest.mark.parametrize("seed", range(6))
def test_protected_threshold_survives_when_possible_and_cells_stay_safe(make_sites, seed):
    s = make_sites(seed, [150])[0]
    grid = [0.05, 0.1, 0.2, 0.3, 0.4, 0.45, 0.5, 0.55, 0.6]
    agg = confusion_counts(s.p, s.y, grid)
    out = suppress_small_cells(agg, 5, keep_thresholds=[0.5])
    i = grid.index(0.5)
    single_ok = all(v == 0 or v >= 5 for v in (agg["n_tp"][i], agg["n_fp"][i], agg["n_fn"][i], agg["n_tn"][i]))
    if single_ok:
        assert 0.5 in out["thresholds"]
    cells = np.concatenate([emitted_count_cells(out), np.abs(interval_cells(out))])
    assert not np.any((cells >= 1) & (cells < 5))
