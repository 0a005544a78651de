"""IBSI chapter 1 reference values: reading the consensus CSVs and the match rule.

CSV format ``reference value;tolerance;tag`` (``;``-separated); an empty value means no consensus. A value
matches when |ours - reference| <= tolerance; a tolerance of 0 (the whole digital phantom, a few CT values) means
equal after rounding both numbers to 3 significant digits (IBSI manual: values are given to 3 digits). Pre-processing diagnostics (``img_*``,
``vox_*``, ``int_mask_*``, ``morph_mask_*`` and ``*_int_*_img`` rows) are not features and are left out.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

FAMILY_PREFIXES = ("morph_", "loc_", "stat_", "ih_", "ivh_", "cm_", "rlm_", "szm_", "dzm_", "ngt_", "ngl_")
REQUIRED_PREFIXES = ("morph_", "stat_", "ih_", "cm_", "rlm_", "szm_", "ngt_", "ngl_")

CONFIGURATIONS = {
    "digital_phantom": ("ibsi_1_dig_phantom.csv", "ibsi_digital_phantom.yaml"),
    "config_a": ("ibsi_1_chest_config_a.csv", "ibsi_ct_config_a.yaml"),
    "config_b": ("ibsi_1_chest_config_b.csv", "ibsi_ct_config_b.yaml"),
    "config_c": ("ibsi_1_chest_config_c.csv", "ibsi_ct_config_c.yaml"),
    "config_d": ("ibsi_1_chest_config_d.csv", "ibsi_ct_config_d.yaml"),
    "config_e": ("ibsi_1_chest_config_e.csv", "ibsi_ct_config_e.yaml"),
}


@dataclass(frozen=True)
class Reference:
    tag: str
    value: float
    tolerance: float


def is_feature(tag: str) -> bool:
    return tag.startswith(FAMILY_PREFIXES) and not tag.startswith("morph_mask_")


def read_reference(path: Path) -> list[Reference]:
    """Consensus feature values of one IBSI CSV (rows without a consensus value are skipped)."""
    out = []
    with path.open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle, delimiter=";"):
            value = (row["reference value"] or "").strip()
            tag = row["tag"].strip()
            if not value or not is_feature(tag):
                continue
            out.append(Reference(tag, float(value), float(row["tolerance"] or 0)))
    return out


def round_significant(value: float, digits: int = 3) -> float:
    if value == 0 or not math.isfinite(value):
        return value
    return round(value, digits - 1 - int(math.floor(math.log10(abs(value)))))


def matches(ours: float | None, reference: Reference) -> bool:
    """The IBSI match rule for one value (tolerance 0: equal after rounding to 3 significant digits)."""
    if ours is None or not math.isfinite(ours):
        return False
    if reference.tolerance == 0:
        return round_significant(ours) == round_significant(reference.value)
    return abs(ours - reference.value) <= reference.tolerance * (1 + 1e-9) + 1e-12 * abs(reference.value)


def compare(features: dict[str, float], references: list[Reference]) -> list[tuple[Reference, float | None, bool]]:
    """(reference, our value, matched) for every reference value."""
    return [(ref, features.get(ref.tag), matches(features.get(ref.tag), ref)) for ref in references]


def phantom_paths(configuration: str, source: str, data_root: Path) -> tuple[Path, Path]:
    """(image, mask) of the IBSI phantom for a configuration; ``source`` is ``nifti`` or ``dicom``.

    The digital phantom exists as NIfTI only (its DICOM version was withdrawn upstream: wrong spacing).
    """
    ibsi = data_root / "ibsi"
    if configuration == "digital_phantom":
        if source != "nifti":
            raise ValueError("the IBSI digital phantom is only available as NIfTI")
        base = ibsi / "ibsi_1_digital_phantom" / "nifti"
        return base / "image" / "phantom.nii.gz", base / "mask" / "mask.nii.gz"
    base = ibsi / "ibsi_1_ct_radiomics_phantom"
    if source == "nifti":
        return base / "nifti" / "image" / "phantom.nii.gz", base / "nifti" / "mask" / "mask.nii.gz"
    return base / "dicom" / "image", base / "dicom" / "mask" / "DCM_RS_00060.dcm"


def conformance(configuration: str, source: str, data_root: Path, protocols_dir: Path) -> list[tuple[Reference, float | None, bool]]:
    """Extract the phantom with the configuration's example protocol and compare with the IBSI values."""
    from protocols import load_protocol
    from site_client.extraction.case import extract_case

    csv_name, protocol_name = CONFIGURATIONS[configuration]
    protocol = load_protocol(protocols_dir / protocol_name)
    image, mask = phantom_paths(configuration, source, data_root)
    features = extract_case(image, mask, protocol)
    return compare(features, read_reference(data_root / "ibsi" / "reference_values" / csv_name))
