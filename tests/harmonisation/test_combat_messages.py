"""Communication budget: what leaves a site, how often, and how big."""

from __future__ import annotations

import numpy as np
import pytest

from combat_testkit import feature_names, generate_sites
from harmonisation import check_wire, run_federated_combat
from harmonisation.messages import HUB_TO_SITE

COVARS = dict(categorical=["sex", "grade"], continuous=["age"])


def _shapes(result, direction="site->hub"):
    return [(e.site, e.kind, e.shapes) for e in result.log.entries if e.direction == direction]


def test_one_statistics_round_after_the_schema() -> None:
    """σ̂² needs no round of its own: the coordinator has its sums from round 1 and the schemas."""
    frames = generate_sites()
    result = run_federated_combat(frames, feature_names(), diagnostics=False, **COVARS)
    for site in frames:
        assert result.log.kinds(site=site) == ["schema", "round1"]
        assert result.log.kinds(HUB_TO_SITE, site=site) == ["plan", "fit", "scale"]


def test_reference_mode_only_reference_site_sends_its_reference_rows_sums() -> None:
    frames = generate_sites()
    result = run_federated_combat(frames, feature_names(), ref_site="site0", diagnostics=False, **COVARS)
    assert result.log.kinds(site="site0") == ["schema", "round1"]
    assert result.log.kinds(site="site1") == ["schema", "round1"]
    round1 = {e.site: e.shapes for e in result.log.uploads() if e.kind == "round1"}
    q, p = round1["site0"]["xty"]
    assert round1["site0"]["ref_xtx"] == (q, q) and round1["site0"]["ref_xty"] == (q, p)
    assert not {"ref_xtx", "ref_xty"} & set(round1["site1"]) and not {"ref_xtx", "ref_xty"} & set(round1["site2"])


def test_spanning_batch_adds_one_round_and_diagnostics_are_optional() -> None:
    frames = generate_sites(scanners=True)
    result = run_federated_combat(frames, feature_names(), batch_col="scanner", diagnostics=True, **COVARS)
    for site in frames:
        assert result.log.kinds(site=site) == ["schema", "round1", "batch_moments", "diagnostics"]


@pytest.mark.parametrize("batch_col", [None, "scanner"])
def test_message_sizes_do_not_grow_with_patients(batch_col) -> None:
    """Same sites with 10x the patients: every message has identical field shapes."""
    small = generate_sites(sizes=(30, 40, 50), seed=5, scanners=True)
    large = generate_sites(sizes=(300, 400, 500), seed=5, scanners=True)
    feats = feature_names()
    runs = [run_federated_combat(f, feats, batch_col=batch_col, **COVARS) for f in (small, large)]
    for direction in ("site->hub", "hub->site"):
        assert _shapes(runs[0], direction) == _shapes(runs[1], direction)
    sizes = [sum(e.nbytes for e in r.log.uploads()) for r in runs]
    assert sizes[0] == sizes[1]
    # and far smaller than the data: p features x n patients x 8 bytes
    assert sizes[1] < 0.2 * 1200 * len(feats) * 8
    q = len(runs[1].report.design_columns)
    r1 = [e for e in runs[1].log.uploads() if e.kind == "round1"][0]
    assert r1.shapes["xtx"] == (q, q) and r1.shapes["xty"] == (q, len(feats))


def test_wire_format_is_enforced() -> None:
    check_wire({"kind": "x", "a": np.zeros(3), "n": 3, "v": 1.5, "names": ["a", "b"]})
    with pytest.raises(TypeError, match="'bad'"):
        check_wire({"bad": {"nested": 1}})
    with pytest.raises(TypeError, match="bool"):
        check_wire({"flag": True})
    with pytest.raises(TypeError, match="object array"):
        check_wire({"o": np.array([object()])})
