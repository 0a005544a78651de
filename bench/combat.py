"""Benchmark: federated ComBat (all sites' work + the coordinator's, one process) vs pooled
neuroCombat 0.2.12 in the same run, parametric EB, sex + age covariates.

    python bench/combat.py [--samples 10000] [--features 1000] [--sites 10] [--repeats 3]
                           [--neurocombat-max-samples 20000]

Reports median wall times, their ratio and the max abs difference (also relative to each
feature's SD).  Above --neurocombat-max-samples neuroCombat is skipped (its per-feature OLS
loop and p x n float64 copies make it slow and memory-heavy) and only ours runs.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from harmonisation import harmonise_sites  # noqa: E402


def make_sites(samples: int, features: int, n_sites: int, seed: int = 0) -> dict[str, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    per = samples // n_sites
    scales = np.geomspace(0.1, 1e4, features)
    frames = {}
    for k in range(n_sites):
        sex = rng.integers(0, 2, per)
        age = rng.uniform(40, 85, per).round(1)
        y = (rng.normal(size=(per, features)) * rng.uniform(0.6, 1.8, features) + rng.normal(size=features)
             + 0.4 * sex[:, None] + 0.03 * (age[:, None] - 60)) * scales + 5 * scales
        df = pd.DataFrame(y, columns=[f"f{j:04d}" for j in range(features)])
        df.insert(0, "sex", sex)
        df.insert(1, "age", age)
        frames[f"site{k:02d}"] = df
    return frames


def cpu_description() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        model = next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except Exception:
        model = platform.processor() or "unknown CPU"
    return f"{model}, {os.cpu_count()} logical CPUs, Python {platform.python_version()}, numpy {np.__version__}"


def run(samples: int, features: int, n_sites: int, repeats: int, nc_max: int) -> dict:
    frames = make_sites(samples, features, n_sites)
    feats = [c for c in frames["site00"].columns if c.startswith("f")]
    result = {"samples": samples, "features": features, "sites": n_sites, "repeats": repeats}
    with_nc = samples <= nc_max
    if with_nc:
        from neuroCombat import neuroCombat

        pooled = pd.concat([df.assign(site=s) for s, df in frames.items()], ignore_index=True)
        dat = np.ascontiguousarray(pooled[feats].to_numpy(dtype=np.float64).T)
        covars = pooled[["site", "sex", "age"]]
        del pooled
    else:
        result["neurocombat"] = f"skipped (samples > {nc_max})"
    ours_t, nc_t, ours, ref = [], [], None, None
    for _ in range(repeats):  # alternate, so both see the same background load
        t0 = time.perf_counter()
        ours = harmonise_sites(frames, feats, categorical=["sex"], continuous=["age"], float32_covariates=True)
        ours_t.append(time.perf_counter() - t0)
        if with_nc:
            t0 = time.perf_counter()
            with contextlib.redirect_stdout(io.StringIO()):
                ref = neuroCombat(dat, covars, "site", categorical_cols=["sex"], continuous_cols=["age"])["data"]
            nc_t.append(time.perf_counter() - t0)
    result.update({"ours_median_s": statistics.median(ours_t), "ours_all_s": ours_t})
    if not with_nc:
        return result
    got = pd.concat([ours[s] for s in frames])[feats].to_numpy()
    diff = np.abs(got - ref.T)
    sd = dat.std(axis=1, ddof=1)
    result.update({
        "neurocombat_median_s": statistics.median(nc_t), "neurocombat_all_s": nc_t,
        "speedup": statistics.median(nc_t) / statistics.median(ours_t),
        "max_abs_diff": float(diff.max()), "max_diff_over_sd": float((diff / sd).max()),
    })
    return result


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=10_000)
    ap.add_argument("--features", type=int, default=1_000)
    ap.add_argument("--sites", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--neurocombat-max-samples", type=int, default=20_000)
    args = ap.parse_args(argv)
    print(f"machine: {cpu_description()}")
    r = run(args.samples, args.features, args.sites, args.repeats, args.neurocombat_max_samples)
    print(f"{r['features']} features x {r['samples']} samples x {r['sites']} sites, parametric EB, "
          f"sex + age, {r['repeats']} repeats")
    print(f"  federated (in-process): median {r['ours_median_s']:.2f} s  "
          f"(runs {', '.join(f'{t:.2f}' for t in r['ours_all_s'])})")
    if "speedup" in r:
        print(f"  pooled neuroCombat:     median {r['neurocombat_median_s']:.2f} s  "
              f"(runs {', '.join(f'{t:.2f}' for t in r['neurocombat_all_s'])})")
        print(f"  speed-up {r['speedup']:.1f}x; max abs diff {r['max_abs_diff']:.3g} "
              f"(max diff / feature SD {r['max_diff_over_sd']:.3g})")
    else:
        print(f"  pooled neuroCombat: {r['neurocombat']}")
    print(f"  peak RSS of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
