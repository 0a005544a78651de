"""Time `coordinator demo-cohort` generation: wall and CPU seconds for a whole cohort, per case, per site.

    python bench/demo_cohort.py [--sites 4] [--cases-per-site 60] [--repeats 3] [--seed 20261123]

Each repeat writes a fresh cohort into a temporary folder (NIfTI writing included). CPU seconds are this
process's own (one thread: the generator limits BLAS to one thread), so they stay meaningful on a busy machine.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from demo.cohort import generate_cohort


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=int, default=4)
    parser.add_argument("--cases-per-site", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=20261123)
    args = parser.parse_args()
    cases = args.sites * args.cases_per_site
    walls, cpus = [], []
    for repeat in range(args.repeats):
        with tempfile.TemporaryDirectory() as folder:
            wall, cpu = time.perf_counter(), time.process_time()
            generate_cohort(Path(folder) / "cohort", args.sites, args.cases_per_site, args.seed + repeat,
                            progress=lambda _: None)
            walls.append(time.perf_counter() - wall)
            cpus.append(time.process_time() - cpu)
            size = sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())
        print(f"repeat {repeat + 1}: {walls[-1]:.1f} s wall, {cpus[-1]:.1f} s CPU, {size / 1e6:.1f} MB on disk")
    wall, cpu = statistics.median(walls), statistics.median(cpus)
    print(f"{args.sites} sites x {args.cases_per_site} cases = {cases} cases; median of {args.repeats}: "
          f"{wall:.1f} s wall ({1000 * wall / cases:.0f} ms/case), {cpu:.1f} s CPU ({1000 * cpu / cases:.0f} ms/case)")
    print(f"python {platform.python_version()}, numpy {np.__version__}, {platform.machine()}")


if __name__ == "__main__":
    main()
