"""pyradiomics-compatible mode reproduces pyradiomics' own baselines (tests/data/pyradiomics/baseline).

Tolerance: relative 1e-6 for every ``original_*`` feature of brain1, brain2, breast1, lung1 and lung2 (the
upstream tests allow 3 %). The only exceptions are listed in KNOWN_BASELINE_DRIFT with their cause; for those we
check instead that we equal plain pyradiomics run here on the uncropped image (so the gap is the baseline's age).
"""

from __future__ import annotations

import logging
import math

import pandas as pd
import pytest

from protocols.schema import Extraction
from site_client.extraction.case import extract_case

CASES = ["brain1", "brain2", "breast1", "lung1", "lung2"]
CLASSES = ["firstorder", "glcm", "gldm", "glrlm", "glszm", "ngtdm", "shape"]
SETTINGS = {"voxelArrayShift": 2000}  # the baseline's diagnostics_Configuration_Settings; all else default
# The brain1 shape baseline was written by pyradiomics 2.0.1b1 (diagnostics_Versions_PyRadiomics); later releases
# changed the marching-cubes mesh, and plain pyradiomics 3.1.4 gives the values we give (checked below).
KNOWN_BASELINE_DRIFT = {
    ("brain1", "original_shape_MeshVolume"),
    ("brain1", "original_shape_SurfaceArea"),
    ("brain1", "original_shape_SurfaceVolumeRatio"),
    ("brain1", "original_shape_Sphericity"),
}
EXTRACTION = Extraction(
    mode="pyradiomics",
    families=["morphology", "statistics", "glcm", "glrlm", "glszm", "ngtdm", "ngldm"],
    pyradiomics_settings=SETTINGS,
)


@pytest.fixture(scope="module")
def baseline(reference_data):
    root = reference_data / "pyradiomics" / "baseline"
    frames = [pd.read_csv(root / f"baseline_{c}.csv", index_col=0) for c in CLASSES]
    return pd.concat([f[CASES] for f in frames])


@pytest.fixture(scope="module")
def ours(reference_data):
    root = reference_data / "pyradiomics"
    return {c: extract_case(root / f"{c}_image.nrrd", root / f"{c}_label.nrrd", EXTRACTION) for c in CASES}


@pytest.mark.parametrize("case", CASES)
def test_baseline_reproduced(case, baseline, ours):
    names = [n for n in baseline.index if n.startswith("original_")]
    assert len(names) >= 100
    bad = []
    for name in names:
        reference = float(baseline.loc[name, case])
        value = ours[case].get(name)
        ok = value is not None and math.isclose(value, reference, rel_tol=1e-6, abs_tol=1e-12)
        if ok == ((case, name) in KNOWN_BASELINE_DRIFT):
            bad.append(f"{name}: ours {value!r}, baseline {reference!r}" + (" (listed as drift but matches)" if ok else ""))
    assert not bad, f"{case}: " + "; ".join(bad)
    assert ours[case]["morph_volume"] == ours[case]["original_shape_MeshVolume"]


@pytest.mark.parametrize("case", ["brain1", "lung1"])
def test_equals_plain_pyradiomics_uncropped(case, reference_data, ours):
    """Our crop-first shortcut changes nothing: plain RadiomicsFeatureExtractor on the full image agrees."""
    from radiomics import featureextractor

    logging.getLogger("radiomics").setLevel(logging.ERROR)
    root = reference_data / "pyradiomics"
    extractor = featureextractor.RadiomicsFeatureExtractor(**SETTINGS)
    plain = extractor.execute(str(root / f"{case}_image.nrrd"), str(root / f"{case}_label.nrrd"))
    plain = {k: float(v) for k, v in plain.items() if k.startswith("original_")}
    assert set(plain) == set(ours[case]) - {"morph_volume"}
    bad = [k for k, v in plain.items() if not math.isclose(ours[case][k], v, rel_tol=1e-12, abs_tol=1e-12)]
    assert not bad, bad
