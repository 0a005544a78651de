"""The demo cohort has the properties the demo relies on, measured from its voxels with numpy/scipy/sklearn.

One full-size cohort (4 sites x 60 lesions, the demo default) is generated once for the module.
"""

from __future__ import annotations

import json
import subprocess
import sys
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest
from demo_voxel_measures import site_measures
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from demo.cohort import generate_cohort
from protocols import load_protocol, protocol_id
from site_client.check import check_manifest
from site_client.manifest import read_manifest

REPO_ROOT = Path(__file__).resolve().parents[2]
DEMO_PROTOCOL = REPO_ROOT / "protocols" / "examples" / "demo_study.yaml"
SITES, CASES = 4, 60


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo-cohort")
    generate_cohort(out, sites=SITES, cases_per_site=CASES, seed=20261123, progress=lambda _: None)
    return out


@pytest.fixture(scope="module")
def measures(cohort: Path) -> dict[str, list[dict]]:
    record = json.loads((cohort / "cohort.json").read_text())
    return {site: site_measures(cohort / site / "manifest.csv") for site in record["sites"]}


def _labels(rows: list[dict]) -> np.ndarray:
    return np.array([int(r["malignant"]) for r in rows])


def _values(rows: list[dict], key: str) -> np.ndarray:
    return np.array([r[key] for r in rows], dtype=float)


def test_demo_manifests_pass_site_check(cohort: Path) -> None:
    protocol = load_protocol(DEMO_PROTOCOL)
    identifier = protocol_id(protocol)
    manifests = sorted(cohort.glob("*/manifest.csv"))
    assert [m.parent.name for m in manifests] == ["site_a", "site_b", "site_c", "site_d"]
    for manifest in manifests:
        report = check_manifest(read_manifest(manifest), protocol, identifier)
        assert report.ok, [p.message for p in report.errors[:5]]
        assert report.rows_checked == CASES
        header = manifest.read_text().splitlines()[0]
        assert header == "case_id,image,mask,malignant,sex,age"
    # The command a site runs, end to end, on one of them.
    done = subprocess.run(
        [sys.executable, "-m", "site_client", "check", "--manifest", str(manifests[0]), "--protocol", str(DEMO_PROTOCOL)],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_demo_class_balance_is_the_configured_one_per_site(cohort: Path, measures: dict[str, list[dict]]) -> None:
    record = json.loads((cohort / "cohort.json").read_text())
    fractions = {site: scanner["malignant_fraction"] for site, scanner in record["sites"].items()}
    for site, rows in measures.items():
        assert int(_labels(rows).sum()) == round(fractions[site] * CASES), site
    assert max(fractions.values()) - min(fractions.values()) >= 0.25  # case mix really differs between sites


def test_demo_site_effect_on_lesion_intensity_exceeds_within_site_spread(measures: dict[str, list[dict]]) -> None:
    means = {site: _values(rows, "mean") for site, rows in measures.items()}
    exceeding = [
        (a, b)
        for a, b in combinations(means, 2)
        if abs(means[a].mean() - means[b].mean()) > max(means[a].std(ddof=1), means[b].std(ddof=1))
    ]
    assert exceeding, {s: (round(v.mean(), 1), round(v.std(ddof=1), 1)) for s, v in means.items()}
    noise = {site: np.median(_values(rows, "background_sd")) for site, rows in measures.items()}
    assert max(noise.values()) > 2.0 * min(noise.values()), noise  # scanners differ in noise too


def test_demo_classes_differ_in_texture_and_in_shape_within_every_site(measures: dict[str, list[dict]]) -> None:
    for site, rows in measures.items():
        y = _labels(rows)
        texture = roc_auc_score(y, _values(rows, "heterogeneity"))
        shape = roc_auc_score(y, _values(rows, "irregularity"))
        assert texture > 0.65, (site, texture)
        assert shape > 0.65, (site, shape)
        # Overlap: neither property alone separates the classes.
        assert texture < 0.97 and shape < 0.97, (site, texture, shape)


def test_demo_lesion_size_overlaps_between_classes(measures: dict[str, list[dict]]) -> None:
    rows = [r for site_rows in measures.values() for r in site_rows]
    pooled = roc_auc_score(_labels(rows), _values(rows, "volume_mm3"))
    assert pooled < 0.7, pooled
    for site, site_rows in measures.items():
        assert roc_auc_score(_labels(site_rows), _values(site_rows, "volume_mm3")) < 0.75, site


def test_demo_covariates_are_plausible_and_mildly_related_to_the_label(measures: dict[str, list[dict]]) -> None:
    rows = [r for site_rows in measures.values() for r in site_rows]
    y = _labels(rows)
    age = _values(rows, "age")
    male = np.array([r["sex"] == "M" for r in rows])
    assert 18 <= age.min() and age.max() <= 100
    assert 0.5 < roc_auc_score(y, age) < 0.75
    assert male[y == 1].mean() > male[y == 0].mean()
    assert 0.3 < male.mean() < 0.7


def test_demo_site_effect_hurts_transfer_unless_sites_are_standardised(measures: dict[str, list[dict]]) -> None:
    """Leave-one-site-out on four voxel measures: raw features vs per-site standardised (location/scale) ones.

    Per-site z-scoring is the simplest location/scale harmonisation; if the scanners did not matter the two
    would transfer equally well.
    """
    keys = ["volume_mm3", "mean", "heterogeneity", "irregularity"]
    features = {s: np.array([[r[k] for k in keys] for r in rows]) for s, rows in measures.items()}
    labels = {s: _labels(rows) for s, rows in measures.items()}

    def zscore(x: np.ndarray) -> np.ndarray:
        return (x - x.mean(axis=0)) / x.std(axis=0)

    raw, standardised = [], []
    for held_out in features:
        train = [s for s in features if s != held_out]
        y = np.concatenate([labels[s] for s in train])
        pooled = np.vstack([features[s] for s in train])
        centre, scale = pooled.mean(axis=0), pooled.std(axis=0)
        model = LogisticRegression(max_iter=1000).fit((pooled - centre) / scale, y)
        raw.append(roc_auc_score(labels[held_out], model.predict_proba((features[held_out] - centre) / scale)[:, 1]))
        model = LogisticRegression(max_iter=1000).fit(np.vstack([zscore(features[s]) for s in train]), y)
        standardised.append(roc_auc_score(labels[held_out], model.predict_proba(zscore(features[held_out]))[:, 1]))
    assert np.mean(standardised) > np.mean(raw) + 0.03, (raw, standardised)
    assert min(raw) < 0.8  # at least one held-out site loses discrimination without harmonisation
