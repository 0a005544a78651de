"""Random effects against published metafor outputs for the BCG vaccine trials (metafor's dat.bcg).

yi/vi are computed from the 2x2 counts as ``escalc(measure="RR", ai=tpos, bi=tneg, ci=cpos, di=cneg)`` does:
yi = log((a/(a+b))/(c/(c+d))), vi = 1/a - 1/(a+b) + 1/c - 1/(c+d). Published values quoted below:

* metafor README (``res <- rma(yi, vi, data=dat, test="knha")``, REML by default): τ² = 0.3132 (SE = 0.1664),
  I² = 92.22%, Q(df = 12) = 152.2330, estimate -0.7145, se 0.1808, t df 12, CI (-1.1084, -0.3206);
  ``predict(res, transf=exp, digits=2)``: pred 0.49, CI 0.33-0.73, PI 0.14-1.76.
* metafor tests/testthat/test_misc_confint.r (``rma(yi, vi, method="DL")``; ``confint(res)``): τ² 0.3088 with
  Q-profile CI (0.1197, 1.1115), I² 92.1173% (81.9177, 97.6781). The Q-profile CI of τ² does not depend on the
  τ² estimator, so the same interval holds for the REML fit.
* metafor's DL fit: estimate -0.7141, se 0.1787 (z-based), as in the previous version of this module.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from coordinator.validation import random_effects

# Colditz et al. 1994, BCG vaccine trials: tpos, tneg, cpos, cneg (metafor's dat.bcg)
BCG = [
    (4, 119, 11, 128), (6, 300, 29, 274), (3, 228, 11, 209), (62, 13536, 248, 12619), (33, 5036, 47, 5761),
    (180, 1361, 372, 1079), (8, 2537, 10, 619), (505, 87886, 499, 87892), (29, 7470, 45, 7232),
    (17, 1699, 65, 1600), (186, 50448, 141, 27197), (5, 2493, 3, 2338), (27, 16886, 29, 17825),
]


def bcg_log_rr():
    yi, vi = [], []
    for a, b, c, d in BCG:
        yi.append(math.log((a / (a + b)) / (c / (c + d))))
        vi.append(1 / a - 1 / (a + b) + 1 / c - 1 / (c + d))
    return np.array(yi), np.sqrt(np.array(vi))


def test_reml_hksj_matches_metafor_readme():
    yi, se = bcg_log_rr()
    re = random_effects(yi, se)
    assert re.method == "REML" and re.ci_method == "HKSJ" and re.df == 12 and re.k == 13
    assert re.tau2 == pytest.approx(0.3132, abs=5e-5)
    assert re.i2 == pytest.approx(0.9222, abs=5e-5)
    assert re.q == pytest.approx(152.2330, abs=5e-4)
    assert re.estimate == pytest.approx(-0.7145, abs=5e-5)
    assert re.se == pytest.approx(0.1808, abs=5e-5)
    assert (re.ci_low, re.ci_high) == pytest.approx((-1.1084, -0.3206), abs=5e-5)
    # predict(res, transf=exp, digits=2): PI 0.14 to 1.76
    assert (round(math.exp(re.pi_low), 2), round(math.exp(re.pi_high), 2)) == (0.14, 1.76)
    assert (round(math.exp(re.ci_low), 2), round(math.exp(re.ci_high), 2)) == (0.33, 0.73)


def test_reml_tau2_se_matches_metafor():
    from coordinator.validation.meta import tau2_reml

    yi, se = bcg_log_rr()
    tau2, tau2_se, _ = tau2_reml(yi, se**2)
    assert tau2 == pytest.approx(0.3132, abs=5e-5)
    assert tau2_se == pytest.approx(0.1664, abs=5e-5)


def test_q_profile_ci_matches_metafor_confint():
    yi, se = bcg_log_rr()
    dl = random_effects(yi, se, method="DL")
    assert dl.tau2 == pytest.approx(0.3088, abs=5e-5)
    assert (dl.tau2_ci_low, dl.tau2_ci_high) == pytest.approx((0.1197, 1.1115), abs=5e-5)
    assert dl.i2 == pytest.approx(0.921173, abs=5e-7)
    # metafor finds the bounds with uniroot (tolerance ~1e-4 on τ²), hence 4 decimals on I² in percent
    assert (dl.i2_ci_low, dl.i2_ci_high) == pytest.approx((0.819177, 0.976781), abs=5e-5)
    reml = random_effects(yi, se)
    assert (reml.tau2_ci_low, reml.tau2_ci_high) == pytest.approx((0.1197, 1.1115), abs=5e-5)


def test_dl_estimate_matches_metafor():
    yi, se = bcg_log_rr()
    dl = random_effects(yi, se, method="DL")
    assert dl.estimate == pytest.approx(-0.7141, abs=5e-5)
    # the HKSJ scale factor multiplies metafor's DL se 0.1787: SE_HK² = se²·Q(τ²)/(K-1)
    from coordinator.validation.meta import generalised_q

    assert dl.se == pytest.approx(0.1787 * math.sqrt(generalised_q(yi, se**2, dl.tau2) / 12), abs=5e-4)


def test_homogeneous_sites_have_zero_tau2_and_zero_lower_bound():
    re = random_effects([0.80, 0.81, 0.79, 0.80], [0.05, 0.05, 0.05, 0.05], scale="logit")
    assert re.tau2 == 0.0 and re.tau2_ci_low == 0.0 and re.i2 == 0.0
    assert 0 < re.ci_low < re.estimate < re.ci_high < 1


def test_small_k_behaviour_is_explicit():
    one = random_effects([0.8], [0.03], scale="logit")
    assert one.tau2 is None and one.pi_low is None and "one site" in one.note and one.ci_method == "z"
    assert one.ci_low < 0.8 < one.ci_high
    two = random_effects([0.8, 0.7], [0.03, 0.04], scale="logit")
    assert two.pi_low is None and "two sites" in two.note and two.tau2 is not None and two.df == 1


def test_logit_scale_back_transforms():
    re = random_effects([0.8, 0.75, 0.85], [0.03, 0.04, 0.02], scale="logit")
    assert 0 < re.ci_low < re.estimate < re.ci_high < 1
    assert 0 < re.pi_low < re.ci_low and re.ci_high < re.pi_high < 1
    with pytest.raises(ValueError, match="strictly in \\(0, 1\\)"):
        random_effects([1.0, 0.7], [0.01, 0.02], scale="logit")
    with pytest.raises(ValueError, match="SEs positive"):
        random_effects([0.7, 0.6], [0.0, 0.02])
    with pytest.raises(ValueError, match="unknown τ² estimator"):
        random_effects([0.7, 0.6], [0.01, 0.02], method="PM")
