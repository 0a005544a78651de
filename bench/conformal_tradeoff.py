"""Federated conformal thresholds vs exact split conformal on the pooled calibration scores: what privacy costs.

``python bench/conformal_tradeoff.py [--seeds 200] [--k 5] [--bins 50] [--sizes 15 25 100 400 1000]
[--epsilons 1 2 4 8 16] [--dp-bins 40] [--delta 0.005]``

Per seed: 4 generated sites (``tests/validation/conformal_sites.py``: site intercept shift, a miscalibrated
logistic model, the data of the DP conformal tests); 3 training sites release
their calibration scores the way the study's sites do, the coordinator computes the thresholds the way the
study's coordinator does, and both are compared on the 4th (held-out) site with the oracle: class-conditional
split conformal on the same pooled calibration scores (rank ⌈(1-α)(n_y+1)⌉, the product's ``fcp_rank`` with one
site, on its ``conformity_scores``). Methods:

* ``exact FCP``   — no privacy: the federated rank ⌈(1-α)(N+K)⌉ on the exact pooled scores (the floor every
  federated method here pays for its guarantee at the participating sites);
* ``histogram``   — ``conformal_method: histogram``: k-merged per-class histograms (``--k``, ``--bins``);
* ``dp ε=…``      — ``conformal_method: dp_quantile``: ε-DP noisy histograms on the fixed ``--dp-bins`` grid,
  threshold certified with probability 1 - δ (``site_client.evaluation.dp_conformal_histogram`` with a seeded
  generator here; the study's sites draw their noise from ``os.urandom``).

Reported per (calibration cases per site, α): mean difference method − oracle with a 95% CI half-width over
seeds, for coverage, mean set size and two-class rate at the held-out site, and each method's own coverage.
The last block names, per size, the smallest ε of the list meeting both targets (coverage excess ≤ 0.03,
set-size excess ≤ 0.15, at α = 0.1 and 0.2; point estimates). A statistical bench (no timings).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from coordinator.validation import thresholds_from_dp_histograms, thresholds_from_site_histograms  # noqa: E402
from fedmath.conformal import conformity_scores, fcp_rank, prediction_sets  # noqa: E402
from site_client.evaluation import conformal_histogram, dp_conformal_histogram, suppress_small_cells  # noqa: E402
from tests.validation.conformal_sites import shifted_sites  # noqa: E402  (the DP conformal tests' sites)

ALPHAS = (0.1, 0.2)
COVERAGE_TARGET, SIZE_TARGET = 0.03, 0.15


def oracle_thresholds(cal: list[tuple[np.ndarray, np.ndarray]], alpha: float, n_sites: int = 1) -> tuple[float, float]:
    """Order statistic of rank ⌈(1-α)(n + n_sites)⌉ (the product's ``fcp_rank``) of each class's pooled conformity
    scores (1.0 beyond n); n_sites = 1 is exact split conformal on the pooled scores, n_sites = K the federated
    (FCP) rank on the exact scores."""
    p = np.concatenate([c[0] for c in cal])
    y = np.concatenate([c[1] for c in cal])
    s = conformity_scores(p, y)
    q = []
    for label in (0, 1):
        sc = np.sort(s[y == label])
        r = fcp_rank(sc.size, n_sites, alpha)
        q.append(1.0 if r > sc.size else float(sc[r - 1]))
    return q[0], q[1]


def evaluate(p: np.ndarray, y: np.ndarray, q_neg: float, q_pos: float) -> tuple[float, float, float]:
    """(coverage, mean set size, two-class rate) at the held-out site, with the product's prediction sets."""
    in_neg, in_pos = prediction_sets(p, q_neg, q_pos)
    covered = np.where(y == 1, in_pos, in_neg)
    size = in_neg.astype(int) + in_pos.astype(int)
    return float(covered.mean()), float(size.mean()), float(np.mean(size == 2))


def method_thresholds(method: str, cal, alpha: float, args, noise_rng: np.random.Generator) -> tuple[float, float]:
    if method == "exact FCP":
        return oracle_thresholds(cal, alpha, n_sites=len(cal))
    if method == "histogram":
        hists = [[suppress_small_cells(conformal_histogram(p, y, args.bins, label), args.k) for p, y in cal]
                 for label in (0, 1)]
        return thresholds_from_site_histograms(hists[0], hists[1], alpha)[:2]
    eps = float(method.split("=")[1])
    hists = [[dp_conformal_histogram(p, y, label, args.dp_bins, eps, noise_rng) for p, y in cal] for label in (0, 1)]
    return thresholds_from_dp_histograms(hists[0], hists[1], alpha, eps, args.delta)[:2]


def run(n_cal: int, alpha: float, methods: list[str], args) -> dict[str, dict[str, tuple[float, float]]]:
    rows: dict[str, dict[str, list[float]]] = {m: {"coverage": [], "set_size": [], "two_class": [], "own": []} for m in methods}
    exact: dict[str, list[float]] = {"coverage": [], "set_size": [], "two_class": []}
    for seed in range(args.seeds):
        rng = np.random.default_rng(seed)
        cal, (p_t, y_t) = shifted_sites(rng, n_cal, args.n_test)
        ex = evaluate(p_t, y_t, *oracle_thresholds(cal, alpha))
        for name, value in zip(("coverage", "set_size", "two_class"), ex):
            exact[name].append(value)
        for j, method in enumerate(methods):
            noise_rng = np.random.default_rng([seed, j, int(n_cal), int(alpha * 1000)])
            try:
                got = evaluate(p_t, y_t, *method_thresholds(method, cal, alpha, args, noise_rng))
            except ValueError:  # histogram: a site's class below k (the study would leave it out)
                got = (math.nan,) * 3
            for name, value, ref in zip(("coverage", "set_size", "two_class"), got, ex):
                rows[method][name].append(value - ref)
            rows[method]["own"].append(got[0])
    out = {}
    for method, r in rows.items():
        out[method] = {name: _mean_ci(v) for name, v in r.items()}
    out["exact"] = {name: _mean_ci(v) for name, v in exact.items()}
    return out


def _mean_ci(values: list[float]) -> tuple[float, float]:
    a = np.asarray(values, dtype=float)
    a = a[np.isfinite(a)]
    if a.size < 2:
        return math.nan, math.nan
    return float(a.mean()), float(1.96 * a.std(ddof=1) / math.sqrt(a.size))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=200)
    ap.add_argument("--k", type=int, default=5, help="small-cell threshold of the histogram method")
    ap.add_argument("--bins", type=int, default=50, help="histogram bins of the histogram method")
    ap.add_argument("--dp-bins", type=int, default=40, help="grid of the dp method (validation.conformal_dp_bins)")
    ap.add_argument("--delta", type=float, default=0.005, help="validation.conformal_delta")
    ap.add_argument("--epsilons", type=float, nargs="+", default=[1, 2, 4, 8, 16])
    ap.add_argument("--sizes", type=int, nargs="+", default=[15, 25, 100, 400, 1000],
                    help="calibration cases per training site (the demo: ~15)")
    ap.add_argument("--n-test", type=int, default=100, help="cases at the held-out site")
    args = ap.parse_args()
    methods = ["exact FCP", "histogram"] + [f"dp eps={e:g}" for e in args.epsilons]
    print(f"seeds={args.seeds}, 3 calibration sites + 1 held-out site of {args.n_test}; histogram: k={args.k}, "
          f"bins={args.bins}; dp: grid {args.dp_bins} bins, delta={args.delta}")
    print("method − exact split conformal on the pooled scores (mean ± 95% CI half-width over seeds)")
    reached: dict[int, dict[str, bool]] = {}
    for n_cal in args.sizes:
        for alpha in ALPHAS:
            r = run(n_cal, alpha, methods, args)
            e = r["exact"]
            print(f"\ncalibration cases/site {n_cal}, alpha {alpha}: exact coverage {e['coverage'][0]:.3f}, "
                  f"set size {e['set_size'][0]:.3f}, two-class rate {e['two_class'][0]:.3f}")
            for m in methods:
                c, s, t, own = (r[m][x] for x in ("coverage", "set_size", "two_class", "own"))
                ok = c[0] <= COVERAGE_TARGET and abs(s[0]) <= SIZE_TARGET
                reached.setdefault(n_cal, {}).setdefault(m, True)
                reached[n_cal][m] &= ok
                print(f"  {m:12s} coverage {c[0]:+.3f}±{c[1]:.3f} (own {own[0]:.3f})  set size {s[0]:+.3f}±{s[1]:.3f}"
                      f"  two-class {t[0]:+.3f}±{t[1]:.3f}  {'meets' if ok else 'misses'} the targets")
    print("\nsmallest epsilon meeting both targets at alpha 0.1 and 0.2 (coverage excess <= 0.03, |set size excess| "
          "<= 0.15):")
    for n_cal in args.sizes:
        dp = [m for m in methods if m.startswith("dp") and reached[n_cal][m]]
        floor = "meets" if reached[n_cal]["exact FCP"] else "misses"
        print(f"  {n_cal:5d} cases/site: {dp[0].split('=')[1] if dp else 'none of ' + str(args.epsilons)} "
              f"(exact FCP, no privacy: {floor}; histogram: {'meets' if reached[n_cal]['histogram'] else 'misses'})")


if __name__ == "__main__":
    main()
