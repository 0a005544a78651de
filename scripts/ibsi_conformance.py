"""Print matched / total IBSI reference values per configuration, from NIfTI and from DICOM + RTSTRUCT.

Usage: python scripts/ibsi_conformance.py [--data tests/data] [--source nifti|dicom|both] [--verbose]
Exit status 1 when any value does not match.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from site_client.extraction.ibsi_reference import CONFIGURATIONS, conformance  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO / "tests" / "data")
    parser.add_argument("--source", choices=["nifti", "dicom", "both"], default="both")
    parser.add_argument("--verbose", action="store_true", help="List every unmatched value.")
    args = parser.parse_args()
    sources = ["nifti", "dicom"] if args.source == "both" else [args.source]
    all_ok = True
    print(f"{'configuration':18s} {'source':6s} {'matched':>8s} {'total':>6s} {'share':>7s} {'seconds':>8s}")
    for source in sources:
        for configuration in CONFIGURATIONS:
            if configuration == "digital_phantom" and source == "dicom":
                continue
            start = time.perf_counter()
            rows = conformance(configuration, source, args.data.resolve(), REPO / "protocols" / "examples")
            seconds = time.perf_counter() - start
            matched = sum(ok for _, _, ok in rows)
            all_ok &= matched == len(rows)
            print(f"{configuration:18s} {source:6s} {matched:8d} {len(rows):6d} {matched / len(rows):7.1%} {seconds:8.1f}")
            if args.verbose:
                for ref, ours, ok in rows:
                    if not ok:
                        print(f"    {ref.tag}: ours {ours!r}, reference {ref.value} +- {ref.tolerance}")
    return 0 if all_ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
