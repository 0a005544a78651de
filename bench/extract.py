"""Benchmark: our IBSI-mode extractor vs plain pyradiomics' default extractor, in the same run.

    python bench/extract.py [--data tests/data] [--repeats 3] [--skip-workers]

Cases: the pyradiomics test cases (brain1, brain2, breast1, lung1, lung2) and the IBSI CT phantom. Per case:
median wall seconds (file read included for both), ROI voxels per second, and the ratio pyradiomics / ours.
Ours = ``extract_case`` with the default protocol extraction (IBSI mode, the 8 required families, 3D_avg + 3D_comb,
bin width 25, no resampling). pyradiomics = ``RadiomicsFeatureExtractor()`` with its defaults (7 classes, 107
features, additionalInfo on). Then a whole-cohort run with 1 and 2 workers (speed-up) and the peak resident
memory of a worker.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from protocols.schema import Extraction, Label, Protocol, Study  # noqa: E402
from site_client.extraction.case import extract_case  # noqa: E402
from site_client.extraction.runner import extract_cohort  # noqa: E402


def cases(data: Path) -> list[tuple[str, Path, Path]]:
    root = data / "pyradiomics"
    out = [(c, root / f"{c}_image.nrrd", root / f"{c}_label.nrrd") for c in ("brain1", "brain2", "breast1", "lung1", "lung2")]
    ct = data / "ibsi" / "ibsi_1_ct_radiomics_phantom" / "nifti"
    out.append(("ibsi_ct_phantom", ct / "image" / "phantom.nii.gz", ct / "mask" / "mask.nii.gz"))
    return out


def cpu_description() -> str:
    try:
        model = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        model = platform.processor() or "unknown CPU"
    return f"{model}, {os.cpu_count()} logical CPUs visible, Python {platform.python_version()}, {platform.system()}"


def timed(function, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def cohort_run(manifest: Path, protocol: Protocol, workers: int) -> tuple[float, float]:
    """(seconds, peak RSS MiB of a worker) for a fresh (uncached) cohort run in a child process."""
    code = (
        "import sys, time, resource; sys.path.insert(0, sys.argv[1]);"
        "from bench.extract import _child_run; _child_run(sys.argv[2], int(sys.argv[3]))"
    )
    with tempfile.TemporaryDirectory() as folder:
        protocol_path = Path(folder) / "p.yaml"
        import yaml

        protocol_path.write_text(yaml.safe_dump(protocol.model_dump(mode="json")), encoding="utf-8")
        result = subprocess.run(
            [sys.executable, "-c", code, str(REPO), f"{manifest}|{protocol_path}|{folder}", str(workers)],
            capture_output=True,
            text=True,
            check=True,
        )
    seconds, peak = result.stdout.strip().splitlines()[-1].split()
    return float(seconds), float(peak)


def _child_run(spec: str, workers: int) -> None:
    manifest, protocol_path, folder = spec.split("|")
    start = time.perf_counter()
    result = extract_cohort(manifest, protocol_path, Path(folder) / "out.csv", workers=workers, progress=False)
    seconds = time.perf_counter() - start
    assert not result.failed, result.failed
    print(f"{seconds:.3f} {result.peak_worker_rss_mib:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO / "tests" / "data")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-workers", action="store_true")
    parser.add_argument("--skip-cases", action="store_true", help="Only the 1- vs 2-worker cohort runs.")
    args = parser.parse_args()
    data = args.data.resolve()
    from radiomics import featureextractor

    logging.getLogger("radiomics").setLevel(logging.ERROR)  # after the import: radiomics sets its own level

    extraction = Extraction()
    plain = featureextractor.RadiomicsFeatureExtractor()
    print(f"machine: {cpu_description()}")
    if not args.skip_cases:
        print(f"{'case':16s} {'image voxels':>13s} {'ROI voxels':>10s} {'ours s':>8s} {'pyrad s':>8s} "
              f"{'ours vox/s':>11s} {'pyrad vox/s':>11s} {'speed-up':>8s}")
    rows = []
    for name, image, mask in [] if args.skip_cases else cases(data):
        roi = int((sitk.GetArrayFromImage(sitk.ReadImage(str(mask))) > 0).sum())
        size = int(np.prod(sitk.ReadImage(str(image)).GetSize()))
        extract_case(image, mask, extraction)  # warm-up (imports, caches)
        ours = timed(lambda: extract_case(image, mask, extraction), args.repeats)
        theirs = timed(lambda: plain.execute(str(image), str(mask)), args.repeats)
        rows.append((name, ours, theirs))
        print(f"{name:16s} {size:13,d} {roi:10,d} {ours:8.3f} {theirs:8.3f} {roi / ours:11,.0f} {roi / theirs:11,.0f} "
              f"{theirs / ours:7.2f}x")
    if args.skip_workers:
        return
    with tempfile.TemporaryDirectory() as folder:
        manifest = Path(folder) / "manifest.csv"
        lines = ["case_id,image,mask,label"]
        for repeat in range(2):
            lines += [f"{name}_{repeat},{image},{mask},{repeat}" for name, image, mask in cases(data)]
        manifest.write_text("\n".join(lines) + "\n", encoding="utf-8")
        protocol = Protocol(study=Study(name="bench"), label=Label(column="label", positive="1", negative="0"))
        one, peak_one = cohort_run(manifest, protocol, 1)
        two, peak_two = cohort_run(manifest, protocol, 2)
    print(f"cohort of {len(lines) - 1} cases: 1 worker {one:.2f} s, 2 workers {two:.2f} s, speed-up {one / two:.2f}x; "
          f"peak RSS per worker {peak_one:.0f} MiB (1 worker: the main process) / {peak_two:.0f} MiB (largest of 2 workers)")


if __name__ == "__main__":
    main()
