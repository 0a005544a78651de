"""DerSimonian-Laird against the BCG vaccine example (metafor, method='DL') and a hand computation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

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


def test_dl_matches_metafor_bcg():
    yi, se = bcg_log_rr()
    re = random_effects(yi, se)
    # metafor::rma(yi, vi, data=escalc("RR", ...), method="DL"): tau^2 = 0.3088, estimate -0.7141, se 0.1787
    assert re.tau2 == pytest.approx(0.3088, abs=5e-5)
    assert re.estimate == pytest.approx(-0.7141, abs=5e-5)
    assert (re.estimate - re.ci_low) / 1.959964 == pytest.approx(0.1787, abs=5e-5)
    assert re.q == pytest.approx(152.2330, abs=5e-4)
    assert re.k == 13


def test_dl_hand_computation_with_t_prediction_interval():
    theta = [0.78, 0.71, 0.84, 0.69]
    se = [0.03, 0.04, 0.025, 0.05]
    w = [1 / s**2 for s in se]
    fe = sum(wi * t for wi, t in zip(w, theta)) / sum(w)
    q = sum(wi * (t - fe) ** 2 for wi, t in zip(w, theta))
    tau2 = max(0.0, (q - 3) / (sum(w) - sum(wi**2 for wi in w) / sum(w)))
    ws = [1 / (s**2 + tau2) for s in se]
    mu = sum(wi * t for wi, t in zip(ws, theta)) / sum(ws)
    se_mu = (1 / sum(ws)) ** 0.5
    half = stats.t.ppf(0.975, 2) * (tau2 + se_mu**2) ** 0.5
    re = random_effects(theta, se)
    assert re.tau2 == pytest.approx(tau2, rel=1e-12) and tau2 > 0
    assert re.estimate == pytest.approx(mu, rel=1e-12)
    assert (re.pi_low, re.pi_high) == pytest.approx((mu - half, mu + half), rel=1e-12)
    assert re.i2 == pytest.approx((q - 3) / q, rel=1e-12)


def test_small_k_behaviour_is_explicit():
    one = random_effects([0.8], [0.03], scale="logit")
    assert one.tau2 is None and one.pi_low is None and "one site" in one.note
    assert one.ci_low < 0.8 < one.ci_high
    two = random_effects([0.8, 0.7], [0.03, 0.04], scale="logit")
    assert two.pi_low is None and "K-2 = 0 df" in two.note and two.tau2 is not None


def test_logit_scale_back_transforms():
    re = random_effects([0.8, 0.75, 0.85], [0.03, 0.04, 0.02], scale="logit")
    assert 0 < re.ci_low < re.estimate < re.ci_high < 1
    with pytest.raises(ValueError, match="strictly in \\(0, 1\\)"):
        random_effects([1.0, 0.7], [0.01, 0.02], scale="logit")
    with pytest.raises(ValueError, match="SEs positive"):
        random_effects([0.7, 0.6], [0.0, 0.02])
