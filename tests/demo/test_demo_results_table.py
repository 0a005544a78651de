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


def test_set_size_and_two_class_rate_stand_beside_coverage_in_every_row() -> None:
    """Per site and in the mean row, on one line each in the 140-column console the commands print to."""
    from rich.console import Console

    from demo.results import results_table

    def site(name: str, size: float, both: float) -> HeldOutSite:
        m = VariantMetrics(auc=0.8412, auc_ci_low=0.7012, auc_ci_high=0.9311, cal_slope=1.03, conformal_coverage=0.9,
                           mean_set_size=size, rate_both=both)
        return HeldOutSite(name, 60, 36, {"harmonised": m})

    console = Console(width=140, record=True)
    console.print(results_table(_results(site("site_a", 1.46, 0.46), site("site_b", 1.20, 0.20)), 0.8))
    lines = console.export_text().splitlines()
    assert any("two-class" in line for line in lines) and any("set size" in line for line in lines)
    rows = {cells[0]: cells for cells in ([c.strip() for c in line.strip().strip("│").split("│")] for line in lines)
            if len(cells) == 8}
    assert rows["site_a"][5:] == ["0.90", "1.46", "0.46"]
    assert rows["site_b"][5:] == ["0.90", "1.20", "0.20"]
    assert rows["mean of held-out sites"][3:] == ["0.84", "1.03", "0.90", "1.33", "0.33"]
