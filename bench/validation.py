"""Benchmark of the external-validation halves and of MLflow logging.

``python bench/validation.py [--patients 100000] [--sites 8] [--bins 50] [--repeats 5] [--mlflow]``

Times (median over repeats): every site aggregate for one held-out evaluation (histograms, confusion grid,
calibration sums, reliability, paired ΔAUC, conformal histograms, small-cell control) summed over sites, the
coordinator's metrics from them, and, with ``--mlflow``, ``log_study`` of the tests' synthetic 4-site study (run by
``run_study`` over the in-process transport) into a SQLite store in a temporary folder (with the pyfunc model and
its registration).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from coordinator.validation import (  # noqa: E402
    auc_from_site_histograms,
    conformal_stats,
    fit_logistic_calibration,
    pooled_metrics,
    thresholds_from_site_histograms,
)
from site_client import evaluation as ev  # noqa: E402


def site_data(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    z = rng.normal(size=n)
    y = (rng.uniform(size=n) < 1 / (1 + np.exp(-(1.5 * z - 0.3)))).astype(int)
    p = 1 / (1 + np.exp(-(1.2 * z + rng.normal(0, 0.5, n))))
    b = 1 / (1 + np.exp(-(0.6 * z + rng.normal(0, 1.0, n))))
    return p, y, b


def run_once(sites: list, bins: int, k: int) -> tuple[float, float]:
    grid = [0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
    t0 = time.perf_counter()
    per_site, neg, pos = [], [], []
    for i, (p, y, b) in enumerate(sites):
        name = f"s{i}"
        aggs = {
            "histograms": ev.class_histograms(p, y, bins, name),
            "confusion": ev.confusion_counts(p, y, grid, name),
            "calibration": ev.calibration_sums(p, y, name),
            "reliability": ev.reliability_bins(p, y, 10, name),
        }
        per_site.append({kk: ev.suppress_small_cells(v, k, keep_thresholds=[0.5]) for kk, v in aggs.items()})
        ev.suppress_small_cells(ev.paired_auc_difference(p, b, y, name), k)
        neg.append(ev.suppress_small_cells(ev.conformal_histogram(p, y, 100, 0, name), k))
        pos.append(ev.suppress_small_cells(ev.conformal_histogram(p, y, 100, 1, name), k))
    t_site = time.perf_counter() - t0
    t0 = time.perf_counter()
    names = [f"s{i}" for i in range(len(sites))]
    fit = fit_logistic_calibration(lambda a, b_: [ev.logistic_calibration_terms(p, y, a, b_) for p, y, _ in sites])
    m = pooled_metrics(per_site, names, 0.5, fit)
    auc_from_site_histograms([a["histograms"] for a in per_site])
    q_neg, q_pos, _ = thresholds_from_site_histograms(neg, pos, 0.1)
    p, y, _ = sites[0]
    conformal_stats(0.1, q_neg, q_pos, *ev.released_set_statistics(p, y, q_neg, q_pos, k))
    t_coord = time.perf_counter() - t0
    assert m.auc is not None
    return t_site, t_coord


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--patients", type=int, default=100_000, help="total patients over all sites")
    ap.add_argument("--sites", type=int, default=8)
    ap.add_argument("--bins", type=int, default=50)
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--mlflow", action="store_true", help="also time log_study into a SQLite store")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    sites = [site_data(rng, args.patients // args.sites) for _ in range(args.sites)]
    runs = [run_once(sites, args.bins, args.k) for _ in range(args.repeats)]
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load {os.getloadavg()}")
    print(f"{args.patients} patients / {args.sites} sites, {args.bins} bins, k={args.k}, {args.repeats} repeats")
    print("site aggregates (all sites), median s:", round(statistics.median(r[0] for r in runs), 3), [round(r[0], 3) for r in runs])
    print("coordinator metrics, median s:", round(statistics.median(r[1] for r in runs), 3), [round(r[1], 3) for r in runs])
    if args.mlflow:
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        from federation.conftest import make_contexts  # the tests' four synthetic sites, run by the product's path
        from federation.inprocess import InProcessTransport
        from federation.synthetic import synthetic_protocol, synthetic_sites

        from coordinator.study import run_study
        from coordinator.tracking import default_tracking_uri, log_study

        protocol, pid = synthetic_protocol()
        with tempfile.TemporaryDirectory() as tmp:
            contexts = make_contexts(Path(tmp), protocol, pid, synthetic_sites())
            outcome = run_study(protocol, pid, InProcessTransport(contexts), progress=lambda s: None)
        study = outcome.results[outcome.preferred_variant]
        times = []
        for _ in range(args.repeats):
            with tempfile.TemporaryDirectory() as tmp:
                t0 = time.perf_counter()
                log_study(study, default_tracking_uri(tmp), experiment="bench", registered_model="bench")
                times.append(time.perf_counter() - t0)
        print("log_study to sqlite (the synthetic 4-site study: 4 folds, figures, pyfunc + registry), median s:",
              round(statistics.median(times), 1), [round(t, 1) for t in times])


if __name__ == "__main__":
    main()
