"""The demo's printed coverage: a censored site value ("<k missed") is a lower bound, and so is a mean over it."""

from __future__ import annotations

from demo.results import DemoResults, HeldOutSite, VariantMetrics, coverage_text, mean_coverage_text


def _site(name: str, coverage: float | None, censored: int) -> HeldOutSite:
    metrics = VariantMetrics(auc=0.8, auc_ci_low=0.7, auc_ci_high=0.9, cal_slope=1.0, conformal_coverage=coverage,
                             coverage_censored=censored)
    return HeldOutSite(name, 60, 20, {"harmonised": metrics})


def _results(*sites: HeldOutSite) -> DemoResults:
    return DemoResults("exp", "run", ["harmonised"], list(sites), None)


def test_censored_site_and_the_mean_over_it_read_as_lower_bounds() -> None:
    exact, censored = _site("a", 0.90, 0), _site("b", 0.9333, 1)
    assert coverage_text(exact.variants["harmonised"]) == "0.90"
    assert coverage_text(censored.variants["harmonised"]) == "≥ 0.93"
    assert coverage_text(_site("u", 0.08, -1).variants["harmonised"]) == "≤ 0.08"
    assert mean_coverage_text(_results(exact, censored), "harmonised") == "≥ 0.92"
    assert mean_coverage_text(_results(exact, _site("c", 0.94, 0)), "harmonised") == "0.92"
    assert mean_coverage_text(_results(censored, _site("u", 0.08, -1)), "harmonised") == "~ 0.51"
    assert mean_coverage_text(_results(_site("d", None, 0)), "harmonised") == "–"


def test_set_sizes_are_printed_beside_coverage() -> None:
    from demo.results import prediction_sets_line

    def site(name, size, both):
        m = VariantMetrics(auc=0.8, auc_ci_low=0.7, auc_ci_high=0.9, cal_slope=1.0, conformal_coverage=0.9,
                           mean_set_size=size, rate_both=both)
        return HeldOutSite(name, 60, 20, {"harmonised": m})

    line = prediction_sets_line(_results(site("a", 1.5, 0.5), site("b", 1.2, 0.2)))
    assert line == "prediction sets (mean of held-out sites): harmonised (ComBat) mean set size 1.35, two-class sets 35%"
    assert prediction_sets_line(_results(_site("c", 0.9, 0))) is None
