"""Seeded synthetic multi-centre liver-lesion cohort: NIfTI images, masks and one manifest per site.

Layout written under OUT::

    OUT/cohort.json                      generator parameters and each site's scanner (for humans and checks)
    OUT/<site>/manifest.csv              case_id,image,mask,malignant,sex,age (paths relative to the manifest)
    OUT/<site>/images/<case_id>.nii.gz   int16 CT-like patch around the lesion
    OUT/<site>/masks/<case_id>.nii.gz    uint8 reference segmentation (1 = lesion) on the image grid

Every random draw comes from its own stream ``numpy.random.default_rng(stream_key(seed, ...))``, so one case
does not depend on how many others are generated, and the same seed gives identical voxels and byte-identical
manifests. Everything is built in a temporary folder beside OUT's sites and moved into place per site, so
an interrupted run leaves no half-written site.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from threadpoolctl import threadpool_limits

from demo.lesions import TRUTH_SPACING_MM, draw_lesion, inside, render_truth, truth_axis
from demo.scanners import FIELD_OF_VIEW_MM, Scanner, acquire, scanner_for_site, stream_key

GENERATOR_VERSION = 1
MIN_CASES_PER_CLASS = 5  # the demo protocol's validation.min_cases_per_class
MAX_SITES = 26
MANIFEST_COLUMNS = ("case_id", "image", "mask", "malignant", "sex", "age")

_TRUTH_AXIS = truth_axis(int(np.ceil((FIELD_OF_VIEW_MM + 2.0) / TRUTH_SPACING_MM)) + 1)
_STREAM_LESION, _STREAM_TEXTURE, _STREAM_NOISE, _STREAM_COVARIATES, _STREAM_CONTOUR = range(1, 6)


class CohortError(ValueError):
    """Bad generator arguments or an output folder that cannot be used; the message says what to do."""


@dataclass(frozen=True)
class Case:
    """One generated lesion: voxels, reference mask and the manifest values."""

    case_id: str
    image: np.ndarray  # int16, array order (z, y, x)
    mask: np.ndarray  # uint8, same shape
    malignant: int
    sex: str
    age: int


def site_names(count: int) -> list[str]:
    """``site_a``, ``site_b``, ... (the SuperNode names of the demo)."""
    return [f"site_{chr(ord('a') + i)}" for i in range(count)]


def class_counts(cases_per_site: int, scanner: Scanner) -> tuple[int, int]:
    """(malignant, benign) counts of a site: round(fraction · n) malignant, exactly."""
    malignant = int(round(scanner.malignant_fraction * cases_per_site))
    return malignant, cases_per_site - malignant


def validate_arguments(sites: int, cases_per_site: int, seed: int) -> None:
    """Reject arguments that cannot give a usable study, naming the argument and the accepted range."""
    if not 2 <= sites <= MAX_SITES:
        raise CohortError(f"--sites must be between 2 and {MAX_SITES} (a study needs several sites), got {sites}")
    if seed < 0:
        raise CohortError(f"--seed must be a non-negative integer, got {seed}")
    short = []
    for index, name in enumerate(site_names(sites)):
        scanner = scanner_for_site(index, seed)
        malignant, benign = class_counts(cases_per_site, scanner)
        if min(malignant, benign) < MIN_CASES_PER_CLASS:
            short.append(
                f"{name} (malignant fraction {scanner.malignant_fraction:.2f}) would get {malignant} malignant "
                f"and {benign} benign lesions"
            )
    if short:
        raise CohortError(
            f"--cases-per-site {cases_per_site} is too small: {'; '.join(short)}; "
            f"each class needs at least {MIN_CASES_PER_CLASS} per site"
        )


def _covariates(rng: np.random.Generator, malignant: bool) -> tuple[str, int]:
    """Sex and age, mildly related to malignancy (malignant: older, more often male)."""
    sex = "M" if rng.random() < (0.58 if malignant else 0.45) else "F"
    age = int(np.clip(np.rint(rng.normal(63.0 if malignant else 57.0, 13.0)), 18, 95))
    return sex, age


def generate_case(seed: int, site_index: int, case_index: int, scanner: Scanner, malignant: bool, case_id: str) -> Case:
    """Draw the lesion, render it on the truth grid, acquire it with the site's scanner, segment it."""

    def stream(kind: int) -> np.random.Generator:
        return np.random.default_rng(stream_key(seed, "case", site_index, case_index, kind))

    lesion = draw_lesion(stream(_STREAM_LESION), malignant, max_radius_mm=FIELD_OF_VIEW_MM / 2.0 - 1.0)
    truth = render_truth(lesion, stream(_STREAM_TEXTURE), _TRUTH_AXIS)
    image = acquire(truth, _TRUTH_AXIS, scanner, stream(_STREAM_NOISE))
    mask = inside(lesion, *scanner.voxel_axes(), bias_mm=scanner.contour_bias_mm,
                  jitter_mm=scanner.contour_jitter_mm, rng=stream(_STREAM_CONTOUR)).astype(np.uint8)
    sex, age = _covariates(stream(_STREAM_COVARIATES), malignant)
    return Case(case_id, image, mask, int(malignant), sex, age)


def site_labels(seed: int, site_index: int, cases_per_site: int, scanner: Scanner) -> list[bool]:
    """The site's exact case mix in a seeded random order."""
    malignant, benign = class_counts(cases_per_site, scanner)
    labels = np.array([True] * malignant + [False] * benign)
    rng = np.random.default_rng(stream_key(seed, "labels", site_index))
    return [bool(v) for v in rng.permutation(labels)]


def _write_volume(array: np.ndarray, scanner: Scanner, path: Path) -> None:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(scanner.spacing_mm)
    image.SetOrigin(scanner.origin_mm())
    sitk.WriteImage(image, str(path), useCompression=True)


def _manifest_text(rows: list[dict[str, str]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=MANIFEST_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def write_site(folder: Path, site: str, site_index: int, cases_per_site: int, seed: int,
               progress: Callable[[str], None]) -> None:
    """Generate one site's cases into ``folder`` (images/, masks/, manifest.csv)."""
    scanner = scanner_for_site(site_index, seed)
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    rows: list[dict[str, str]] = []
    for case_index, malignant in enumerate(site_labels(seed, site_index, cases_per_site, scanner)):
        case_id = f"{site}-{case_index + 1:04d}"
        case = generate_case(seed, site_index, case_index, scanner, malignant, case_id)
        _write_volume(case.image, scanner, folder / "images" / f"{case_id}.nii.gz")
        _write_volume(case.mask, scanner, folder / "masks" / f"{case_id}.nii.gz")
        rows.append({"case_id": case_id, "image": f"images/{case_id}.nii.gz", "mask": f"masks/{case_id}.nii.gz",
                     "malignant": str(case.malignant), "sex": case.sex, "age": str(case.age)})
    (folder / "manifest.csv").write_text(_manifest_text(rows), encoding="utf-8")
    malignant = sum(int(r["malignant"]) for r in rows)
    progress(f"{site}: {len(rows)} lesions ({malignant} malignant), {scanner.description}")


def cohort_record(sites: int, cases_per_site: int, seed: int) -> dict:
    """What cohort.json holds: the arguments, the generator version and every site's scanner."""
    return {
        "generator_version": GENERATOR_VERSION,
        "seed": seed,
        "cases_per_site": cases_per_site,
        "sites": {name: asdict(scanner_for_site(i, seed)) for i, name in enumerate(site_names(sites))},
    }


def generate_cohort(out: Path, sites: int = 4, cases_per_site: int = 60, seed: int = 20261123,
                    force: bool = False, progress: Callable[[str], None] = print) -> list[Path]:
    """Write the cohort under ``out`` and return the manifest paths, one per site.

    An ``out`` that already holds this exact cohort (same cohort.json and manifests) is left as it is;
    one holding anything else is refused unless ``force`` (then its site folders are replaced).
    """
    validate_arguments(sites, cases_per_site, seed)
    out = Path(out)
    names = site_names(sites)
    record = json.dumps(cohort_record(sites, cases_per_site, seed), indent=2, sort_keys=True) + "\n"
    manifests = [out / name / "manifest.csv" for name in names]
    record_path = out / "cohort.json"
    for leftover in out.glob(".demo-cohort-*"):  # scratch of an earlier run that was killed
        shutil.rmtree(leftover, ignore_errors=True)
    if record_path.is_file() and record_path.read_text(encoding="utf-8") == record and all(m.is_file() for m in manifests):
        progress(f"{out}: cohort already generated with these settings, left unchanged")
        return manifests
    if out.exists() and any(out.iterdir()) and not force:
        raise CohortError(
            f"output folder {out} is not empty and does not hold this cohort (seed {seed}, {sites} sites, "
            f"{cases_per_site} cases per site); choose an empty folder or pass --force to replace it"
        )
    out.mkdir(parents=True, exist_ok=True)
    # The matrices are tiny: BLAS threads only fight over the cores (3x slower on 2 busy cores).
    with tempfile.TemporaryDirectory(prefix=".demo-cohort-", dir=out) as scratch, threadpool_limits(1):
        for index, name in enumerate(names):
            write_site(Path(scratch) / name, name, index, cases_per_site, seed, progress)
        record_path.unlink(missing_ok=True)  # a partly replaced cohort must not look complete
        stale = [p for p in out.iterdir() if p.is_dir() and (p / "manifest.csv").is_file() and p.name not in names]
        for target in [out / name for name in names] + stale:
            if target.exists():
                shutil.rmtree(target)
        for name in names:
            os.replace(Path(scratch) / name, out / name)
        (Path(scratch) / "cohort.json").write_text(record, encoding="utf-8")
        os.replace(Path(scratch) / "cohort.json", record_path)
    return manifests
