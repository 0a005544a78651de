"""Batch-effect diagnostics from per-batch aggregates only, against scipy on pooled data."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from combat_testkit import feature_names, generate_sites, pool
from harmonisation import run_federated_combat
from harmonisation.diagnostics import anova_from_moments


def test_anova_from_moments_equals_f_oneway_on_pooled_data() -> None:
    rng = np.random.default_rng(0)
    groups = [rng.normal(loc, 2.0, size=(n, 3)) for loc, n in ((0, 12), (0.8, 30), (0.1, 7))]
    n = np.array([len(g) for g in groups])
    mean = np.stack([g.mean(0) for g in groups])
    var = np.stack([g.var(0, ddof=1) for g in groups])
    f, p = anova_from_moments(n, mean, var)
    ref = stats.f_oneway(*groups)
    np.testing.assert_allclose(f, ref.statistic, rtol=1e-10)
    np.testing.assert_allclose(p, ref.pvalue, rtol=1e-8)


def test_report_before_after_and_flags() -> None:
    frames = generate_sites(scanners=True)
    feats = feature_names()
    rng = np.random.default_rng(9)
    for s in frames:  # a feature with no scanner or site effect at all
        frames[s]["feat_03"] = rng.normal(size=len(frames[s]))
    result = run_federated_combat(frames, feats, categorical=["sex"], continuous=["age"], batch_col="scanner")
    table = result.report.batch_effect
    pooled = pool(result.data)
    raw = pool(frames)
    for feat in ("feat_00", "feat_03", "feat_30"):
        before = stats.f_oneway(*[g[feat].to_numpy() for _, g in raw.groupby("scanner")])
        after = stats.f_oneway(*[g[feat].to_numpy() for _, g in pooled.groupby("scanner")])
        assert np.isclose(table.loc[feat, "F_before"], before.statistic, rtol=1e-9)
        assert np.isclose(table.loc[feat, "p_after"], after.pvalue, rtol=1e-7)
    assert bool(table.loc["feat_03", "no_batch_effect"])
    strong = table["p_before"] < 1e-6
    assert strong.sum() >= 30
    # ComBat removes the scanner effect: no feature keeps a significant one
    assert (table["p_after"] > 0.05).all()
    summary = result.report.batch_summary
    row = summary[(summary.batch == "scB") & (summary.feature == "feat_00")].iloc[0]
    grp = raw[raw.scanner == "scB"]["feat_00"]
    assert row.n == len(grp) and np.isclose(row.mean_before, grp.mean()) and np.isclose(row.sd_before, grp.std())
    grp_after = pooled[pooled.scanner == "scB"]["feat_00"]
    assert np.isclose(row.sd_after, grp_after.std())
    sites = result.report.site_summary
    row = sites[(sites.site == "site2") & (sites.feature == "feat_10")].iloc[0]
    assert row.n == len(frames["site2"])
    assert np.isclose(row.mean_before, frames["site2"]["feat_10"].mean(), rtol=1e-12)
    assert np.isclose(row.sd_before, frames["site2"]["feat_10"].std(), rtol=1e-10)
    assert np.isclose(row.mean_after, result.data["site2"]["feat_10"].mean(), rtol=1e-12)
    assert np.isclose(row.sd_after, result.data["site2"]["feat_10"].std(), rtol=1e-10)
