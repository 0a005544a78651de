"""Benchmark: a leave-one-site-out study over Flower, on loopback processes and in simulation.

    python bench/federation.py [--rounds 20] [--sites 4] [--sim-sites 4 20 50] [--skip-deployment]
                               [--skip-simulation] [--cases 60] [--compare-flower-sleeps]

Deployment: one SuperLink (TLS + SuperNode authentication, persistent database) and one SuperNode per
site (``site-client join``), each its own process group, generated feature tables (``--cases`` per site).
Reports total wall time (``coordinator run`` launch to finished), message rounds, seconds per round and
bytes sent per site (from each site's audit log), and the ratio to the same study run in process (site code
called directly, no Flower: the anchor). Simulation: ``coordinator simulate`` (Ray) with the
same protocol for each site count. Prints a Markdown table for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from coordinator.commands.run import follow_run  # noqa: E402
from coordinator.flower.state import flwr_home  # noqa: E402
from site_client.flower.audit import read_audit  # noqa: E402
from site_client.flower.supernode_launcher import KEEP_FLOWER_SLEEPS_ENV  # noqa: E402
from tests.deployment.harness import Deployment, process_groups_alive  # noqa: E402
from tests.deployment.synthetic import in_process_study, write_protocol, write_sites  # noqa: E402


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg()[0]
    return f"{platform.system()} {platform.machine()}, {cpu}, {os.cpu_count()} CPUs, Python {platform.python_version()}, load avg {load:.1f} at start"


def site_training_compute(n_folds: int, cases: int, repeats: int = 15) -> dict[str, float]:
    """CPU seconds of one site's training message at the tests' sizes (logistic, SGD, batch 16, 1 epoch, 7
    radiomic features, ``cases`` training cases): 4·K models (K folds × raw/harmonised × radiomic/volume) in one
    batched call, the same models one call each (the per-model cost), and one model. Medians of ``repeats``
    (CPU time of this process: what transfers from a loaded machine)."""
    import numpy as np

    from protocols.models import init_params, model_spec
    from site_client.study.learning import LocalModel, TrainConfig, train_models

    rng = np.random.default_rng(0)
    config = TrainConfig("sgd", 0.1, 0.0, batch_size=16, local_epochs=1, proximal_mu=0.0)
    y = (rng.random(cases) < 0.45).astype(float)
    models = []
    for i in range(4 * n_folds):
        spec = model_spec("logistic", [], "volume" if i % 2 else "radiomic", 7)
        models.append(LocalModel(spec, init_params(spec, 5), rng.normal(size=(cases, spec.n_inputs)), y, i))

    def cpu(fn) -> float:
        times = []
        for _ in range(repeats):
            started = time.process_time()
            fn()
            times.append(time.process_time() - started)
        return sorted(times)[len(times) // 2]

    train_models(models[:1], config)  # warm-up: torch's first optimiser imports its compiler stack
    return {"one": cpu(lambda: train_models(models[:1], config)),
            "batched": cpu(lambda: train_models(models, config)),
            "one_by_one": cpu(lambda: [train_models([m], config) for m in models])}


def deployment_study(root: Path, n_sites: int, rounds: int, cases: int) -> dict[str, object]:
    names = [f"site-{i + 1}" for i in range(n_sites)]
    data = write_sites(root / "data", {n: cases + 4 * i for i, n in enumerate(names)})
    protocol = root / "study.yaml"
    write_protocol(protocol, rounds=rounds, min_sites=max(2, n_sites - 1), round_timeout_s=600)
    dep = Deployment(root)
    try:
        dep.start_superlink()
        for name in names:
            dep.add_site(name, data[name])
            dep.approve(name, protocol)
            dep.join(name, protocol)
        dep.wait_online(n_sites, timeout=300)
        started = time.monotonic()
        run_id = dep.launch(protocol, "--wait-for", str(n_sites))
        code = follow_run(flwr_home(dep.state), dep.state, run_id, poll_s=1.0)
        wall = time.monotonic() - started
        status = dep.study_status(run_id)
        if code != 0:
            raise SystemExit(f"deployment study failed: {status.get('error')}")
        rounds_line = next(line for line in status["lines"] if line.startswith("message rounds:"))
        message_rounds = int(re.search(r"message rounds: (\d+)", rounds_line).group(1))
        sent = {n: sum(r["bytes"] for r in read_audit(dep.sites[n].work_dir) if r["run_id"] == run_id) for n in names}
        return {"wall": wall, "rounds": message_rounds, "bytes": sent}
    finally:
        dep.close()
        left = process_groups_alive(dep.pgids)
        if left:
            print(f"WARNING: leftover processes {left}", file=sys.stderr)


def _tree_usage(root_pid: int, cpu_seen: dict[int, float]) -> int:
    """Proportional set size (bytes) of a process and all its descendants (Ray's GCS, raylet, workers): PSS
    splits shared pages between the processes, so the sum is the memory the whole simulation holds. Updates
    ``cpu_seen`` (pid -> user + system CPU seconds so far) for every process of the tree."""
    tick = os.sysconf("SC_CLK_TCK")
    children: dict[int, list[int]] = {}
    cpu: dict[int, float] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            pid = int(stat.parent.name)
            children.setdefault(int(fields[1]), []).append(pid)
            cpu[pid] = (int(fields[11]) + int(fields[12])) / tick  # utime + stime
        except (OSError, IndexError, ValueError):
            continue
    total, todo = 0, [root_pid]
    while todo:
        pid = todo.pop()
        todo.extend(children.get(pid, []))
        cpu_seen[pid] = max(cpu_seen.get(pid, 0.0), cpu.get(pid, 0.0))
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1]) * 1024
                    break
        except OSError:
            continue
    return total


def _allow_sites(protocol: Path, n_sites: int) -> None:
    """A study of more sites than ``privacy.max_sites``' default (12) says so in its protocol, as a coordinator
    planning a 50-centre study would (the sites approve that number; it bounds the models per message)."""
    import yaml

    data = yaml.safe_load(protocol.read_text(encoding="utf-8"))
    data.setdefault("privacy", {})["max_sites"] = max(n_sites, data.get("privacy", {}).get("max_sites", 12))
    protocol.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")


def simulation_study(root: Path, n_sites: int, rounds: int, cases: int, cases_max: int) -> dict[str, object]:
    """``coordinator simulate`` on ``n_sites`` generated sites of ``cases``..``cases_max`` cases; wall time,
    message rounds, median bytes sent per site and the peak memory (PSS, sampled every 0.5 s) of all its
    processes, and their CPU time (user + system, summed over every process seen; sampled, so a process that
    lives under 0.5 s is missed): CPU time is what transfers from a shared, loaded machine to an idle one."""
    import threading

    names = [f"site-{i + 1:02d}" for i in range(n_sites)]
    spread = max(cases_max - cases, 0)
    write_sites(root / "sites", {n: cases + (i * 7919) % (spread + 1) for i, n in enumerate(names)},
                file_name="features.csv")
    protocol = root / "study.yaml"
    write_protocol(protocol, rounds=rounds, min_sites=max(2, n_sites - 1), round_timeout_s=1200)
    _allow_sites(protocol, n_sites)
    started = time.monotonic()
    with open(root / "simulate.log", "w") as log:
        proc = subprocess.Popen(
            [str(Path(sys.executable).with_name("coordinator")), "simulate", "--protocol", str(protocol),
             "--sites-dir", str(root / "sites"), "--work-dir", str(root / "work")],
            stdout=log, stderr=subprocess.STDOUT, text=True, cwd=root, start_new_session=True,
        )
        peak = [0]
        cpu_seen: dict[int, float] = {}
        done = threading.Event()

        def sample() -> None:
            while not done.wait(0.5):
                peak[0] = max(peak[0], _tree_usage(proc.pid, cpu_seen))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            code = proc.wait(timeout=7200)
        finally:
            done.set()
            sampler.join()
            if proc.poll() is None:
                os.killpg(proc.pid, 9)
    wall = time.monotonic() - started
    output = (root / "simulate.log").read_text(errors="replace")
    found = re.search(r"(\d+) message rounds", output)
    if code != 0 or not found:
        raise SystemExit(f"simulation with {n_sites} sites failed:\n{output[-4000:]}")
    sent = [sum(r["bytes"] for r in read_audit(root / "work" / n)) for n in names]
    return {"wall": wall, "rounds": int(found.group(1)), "bytes_median": sorted(sent)[len(sent) // 2],
            "bytes_max": max(sent), "peak_pss": peak[0], "cpu": sum(cpu_seen.values()), "phases": phase_times(root / "work")}


def phase_times(work: Path) -> dict[str, float]:
    """Seconds from the first to the last reply of each phase, over all sites' audit logs."""
    from datetime import datetime

    spans: dict[str, list[float]] = {}
    for audit in work.glob("*/audit.jsonl"):
        for record in read_audit(audit.parent):
            t = datetime.fromisoformat(record["time"]).timestamp()
            lo, hi = spans.get(record["phase"], [t, t])
            spans[record["phase"]] = [min(lo, t), max(hi, t)]
    return {phase: hi - lo for phase, (lo, hi) in spans.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20, help="training rounds")
    parser.add_argument("--sites", type=int, default=4, help="sites in the loopback deployment")
    parser.add_argument("--sim-sites", type=int, nargs="*", default=[4, 20, 50])
    parser.add_argument("--cases", type=int, default=60, help="cases per site (generated; loopback and training rows)")
    parser.add_argument("--sim-cases", type=int, nargs=2, default=[30, 80], metavar=("MIN", "MAX"),
                        help="cases per simulated site, spread over this range")
    parser.add_argument("--skip-deployment", action="store_true")
    parser.add_argument("--compare-flower-sleeps", action="store_true",
                        help="also run the loopback study with Flower's own SuperNode sleeps (3 s idle, 0.5 s reply poll)")
    parser.add_argument("--skip-simulation", action="store_true")
    args = parser.parse_args()
    print(f"machine: {machine()}")
    print()
    print("| folds K (sites) | models 4·K | one model (ms CPU) | 4·K batched (ms CPU) | batched / one model "
          "| 4·K one at a time (ms CPU) |")
    print("|---|---|---|---|---|---|")
    for n_sites in sorted({args.sites, *args.sim_sites}):
        t = site_training_compute(n_sites, args.cases)
        print(f"| {n_sites} | {4 * n_sites} | {1000 * t['one']:.1f} | {1000 * t['batched']:.1f} | "
              f"**{t['batched'] / t['one']:.2f}x** | {1000 * t['one_by_one']:.0f} |", flush=True)
    print()
    rows = []
    with tempfile.TemporaryDirectory(prefix="fedradval-bench-") as tmp:
        if not args.skip_deployment:
            anchor = in_process_study(Path(tmp) / "inproc", args.sites, args.rounds, args.cases)
            rows.append(f"| in process (no Flower: the anchor) | {args.sites} | {args.rounds} | {anchor['rounds']} | "
                        f"{anchor['wall']:.0f} | {anchor['wall'] / anchor['rounds']:.2f} | — |")
            print(rows[-1], flush=True)
            extra = anchor["rounds"] - args.rounds
            print(f"message rounds by phase: {anchor['by_phase']}; training + {extra} "
                  f"(target: training + 5 or fewer: {'met' if extra <= 5 else 'not met'})", flush=True)
            r = deployment_study(Path(tmp) / "deploy", args.sites, args.rounds, args.cases)
            per_site = ", ".join(f"{k} {v / 1024:.1f} KiB" for k, v in r["bytes"].items())
            rows.append(f"| loopback processes, TLS + auth | {args.sites} | {args.rounds} | {r['rounds']} | "
                        f"{r['wall']:.0f} | {r['wall'] / r['rounds']:.1f} | {per_site} |")
            print(rows[-1], flush=True)
            print(f"loopback / in-process wall time: {r['wall'] / anchor['wall']:.1f}x", flush=True)
            if args.compare_flower_sleeps:
                os.environ[KEEP_FLOWER_SLEEPS_ENV] = "flower"
                try:
                    f = deployment_study(Path(tmp) / "deploy-flower-sleeps", args.sites, args.rounds, args.cases)
                finally:
                    del os.environ[KEEP_FLOWER_SLEEPS_ENV]
                rows.append(f"| loopback, Flower's own SuperNode sleeps | {args.sites} | {args.rounds} | {f['rounds']} | "
                            f"{f['wall']:.0f} | {f['wall'] / f['rounds']:.1f} | — |")
                print(rows[-1], flush=True)
                print(f"shortened / Flower's sleeps: {r['wall'] / f['wall']:.2f}x", flush=True)
        if not args.skip_simulation:
            for n in args.sim_sites:
                r = simulation_study(Path(tmp) / f"sim-{n}", n, args.rounds, *args.sim_cases)
                rows.append(f"| simulation (Ray), peak memory {r['peak_pss'] / 2**30:.2f} GiB, CPU {r['cpu']:.0f} s | {n} | "
                            f"{args.rounds} | {r['rounds']} | {r['wall']:.0f} | {r['wall'] / r['rounds']:.1f} | "
                            f"median {r['bytes_median'] / 1024:.1f} KiB, max {r['bytes_max'] / 1024:.1f} KiB |")
                print(rows[-1], flush=True)
                print("  phase spans (s, first to last reply): " +
                      ", ".join(f"{k} {v:.0f}" for k, v in r["phases"].items()), flush=True)
    print()
    print("| engine | sites | training rounds | message rounds | wall (s) | s / round | bytes sent per site |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
