"""Study-level behaviour with the in-process transport: determinism, a site failing mid-study, a site that
has not approved the protocol, a site too small to take part, and a manifest without extraction."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from coordinator.study import StudyFailed, run_study
from federation.nsclc import protocol
from site_client.study import ProtocolNotApproved, SiteContext, handle
from site_client.study.validator import Refusal


def _short(**extra):
    overrides = {"model": {"rounds": 3}}
    for section, values in extra.items():
        overrides[section] = {**overrides.get(section, {}), **values}
    return protocol(**overrides)


def test_same_seed_gives_identical_weights_and_another_seed_does_not(tmp_path_factory, nsclc_tables):
    from federation.conftest import make_contexts
    from federation.inprocess import InProcessTransport

    def weights(seed, tag):
        p, pid = _short(model={"seed": seed}, harmonisation={"combat": False})
        root = tmp_path_factory.mktemp(tag)
        out = run_study(p, pid, InProcessTransport(make_contexts(root, p, pid, nsclc_tables)), progress=lambda s: None)
        return out.final_weights

    first, second, other = weights(11, "a"), weights(11, "b"), weights(12, "c")
    assert first.keys() == second.keys()
    for key in first:
        for a, b in zip(first[key], second[key]):
            np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, b) for key in first for a, b in zip(first[key], other[key]))


def test_site_killed_during_training_is_dropped_and_the_study_goes_on(transport_for):
    p, pid = _short(federation={"min_sites": 3})
    transport = transport_for(p, pid, fail={"R01-other": ("train", 2)})
    out = run_study(p, pid, transport, progress=lambda s: None)
    assert "R01-other" in out.dropped and "killed" in out.dropped["R01-other"]
    assert out.sites == ["AMC", "R01-GE-CE0", "R01-GE-CE1"]
    for result in out.results.values():
        assert sorted(f.heldout_site for f in result.folds) == ["AMC", "R01-GE-CE0", "R01-GE-CE1"]
    later = [e for e in transport.log if e.site == "R01-other" and e.phase in ("calibrate", "evaluate")]
    assert later == [], "a dropped site gets no further messages"


def test_site_killed_below_min_sites_fails_the_study_naming_it(transport_for):
    p, pid = _short(federation={"min_sites": 4})
    transport = transport_for(p, pid, fail={"R01-GE-CE0": ("train", 2)})
    with pytest.raises(StudyFailed) as err:
        run_study(p, pid, transport, progress=lambda s: None)
    text = str(err.value)
    assert "R01-GE-CE0" in text and "at least 4" in text and "only 3 site(s) remain" in text
    assert set(err.value.sites) == {"R01-GE-CE0"}


def test_unapproved_protocol_is_refused_and_the_study_fails_naming_site_and_id(transport_for):
    p, pid = _short(federation={"min_sites": 4})
    transport = transport_for(p, pid, approved={"AMC": {"0" * 64}})
    with pytest.raises(StudyFailed) as err:
        run_study(p, pid, transport, progress=lambda s: None)
    text = str(err.value)
    assert f"site AMC has not approved protocol {pid}" in text
    assert "site-client approve" in text
    assert transport.log[0].phase == "handshake"


def test_handle_refuses_an_unapproved_id_directly(tmp_path):
    p, pid = _short()
    ctx = SiteContext("H1", p, pid, set(), tmp_path / "f.csv", "features", tmp_path / "work")
    with pytest.raises(ProtocolNotApproved, match=f"site H1 has not approved protocol {pid}"):
        handle("handshake", {"protocol_id": pid, "phase": "handshake"}, ctx)
    other = "f" * 64
    ctx.approved_ids = {pid, other}
    with pytest.raises(ProtocolNotApproved, match="different protocol file"):
        handle("handshake", {"protocol_id": other, "phase": "handshake"}, ctx)


def test_site_with_fewer_than_k_cases_of_a_class_says_it_cannot_take_part(tmp_path, nsclc_tables):
    from site_client.tables import write_table_atomic

    p, pid = _short(privacy={"min_cell_count": 10})
    path = write_table_atomic(nsclc_tables["R01-other"], tmp_path / "features.csv")
    ctx = SiteContext("R01-other", p, pid, {pid}, path, "features", tmp_path / "work")
    reply = handle("handshake", {"protocol_id": pid, "phase": "handshake"}, ctx)
    assert reply["eligible"] is False
    assert "positive class has fewer than k=10 cases" in reply["reason"]
    assert reply["n_pos"] == -1 and "n_pos" in reply["suppressed"]
    assert not any(k.startswith(("schema/", "fvol/")) for k in reply), "no statistics from an ineligible site"


def test_ineligible_site_is_dropped_with_its_reason(transport_for):
    p, pid = _short(privacy={"min_cell_count": 9}, federation={"min_sites": 4})
    with pytest.raises(StudyFailed, match=r"R01-GE-CE0 \(site R01-GE-CE0 cannot take part: positive class has fewer than k=9"):
        run_study(p, pid, transport_for(p, pid), progress=lambda s: None)


def test_a_bad_manifest_fails_the_handshake_generically_and_names_the_manifest_in_the_site_log(tmp_path):
    """Manifest data goes through feature extraction; a failure leaves the site as a code and a generic reason,
    the manifest's path (and whatever else the error said) only in the site's own log."""
    p, pid = _short()
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("case_id,image,mask\nc1,a.nii,b.nii\n")
    ctx = SiteContext("H1", p, pid, {pid}, manifest, "manifest", tmp_path / "work")
    with pytest.raises(Refusal) as err:
        handle("handshake", {"protocol_id": pid, "phase": "handshake"}, ctx)
    assert str(err.value) in (
        f"site H1 refused handshake (data-error): the site's data does not meet protocol {pid[:12]}; details in the site's log",
        "site H1 refused handshake (internal-error): the site could not compute the reply; details in the site's log")
    log = next((tmp_path / "work").glob("study/*/notes.log")).read_text()
    assert str(manifest) in log


def test_site_lost_during_combat_refits_combat_without_it(transport_for):
    """With covariates ComBat takes one round, σ̂² follows from its sums (without, none: the NSCLC studies have
    no ComBat round). H1 fails in it: the round is run again for the remaining sites."""
    from federation.synthetic import synthetic_protocol, synthetic_sites

    p, pid = synthetic_protocol(model={"rounds": 2}, federation={"min_sites": 3})
    transport = transport_for(p, pid, fail={"H1": ("combat-round1", 1)}, tables=synthetic_sites())
    out = run_study(p, pid, transport, progress=lambda s: None)
    assert "H1" in out.dropped
    assert out.rounds_by_phase["combat-round1"] == 2 and "combat-round2" not in out.rounds_by_phase
    assert sorted(out.combat_models) == ["H2", "H3", "H4", "_all"]
    assert not {"S0a", "S0b"} & set(out.combat_models["_all"].batches)  # H1's scanners


def test_external_site_validates_only_the_final_model_and_never_trains(transport_for):
    p, pid = _short(validation={"external_sites": ["R01-other"]})
    transport = transport_for(p, pid)
    out = run_study(p, pid, transport, progress=lambda s: None)
    for entry in transport.log:
        if entry.site == "R01-other":
            assert entry.phase != "train" or entry.request["models"] == []
            assert not entry.request.get("train_models")
    result = out.results["harmonised"]
    assert sorted(f.heldout_site for f in result.folds) == ["AMC", "R01-GE-CE0", "R01-GE-CE1", "R01-other"]
    external = [f for f in result.folds if f.heldout_site == "R01-other"][0]
    assert external.training_sites == ["AMC", "R01-GE-CE0", "R01-GE-CE1"]
    assert external.before.auc is not None


def test_manifest_site_extracts_features_in_the_handshake(tmp_path):
    """A site joining with a manifest: images → IBSI features (cached in the work folder) → counts and schema."""
    from demo.cohort import generate_cohort
    from protocols import load_protocol, protocol_id

    manifests = generate_cohort(tmp_path / "cohort", sites=2, cases_per_site=14, progress=lambda s: None)
    p = load_protocol(Path(__file__).resolve().parents[2] / "protocols" / "examples" / "demo_study.yaml")
    pid = protocol_id(p)
    ctx = SiteContext("site_a", p, pid, {pid}, manifests[0], "manifest", tmp_path / "work")
    reply = handle("handshake", {"protocol_id": pid, "phase": "handshake"}, ctx)
    assert reply["eligible"] is True and reply["n"] == 14
    assert p.validation.volume_feature in reply["features"] and len(reply["model_features"]) > 10
    assert list((tmp_path / "work").glob("study/*/extracted_features.parquet"))
    assert all(14 not in v.shape for v in reply.values() if isinstance(v, np.ndarray))


@pytest.mark.parametrize("model,recalibration", [
    ({"type": "mlp", "hidden_sizes": [8], "optimiser": "adam", "learning_rate": 0.01, "aggregation": "fedprox",
      "proximal_mu": 0.1, "batch_size": 16}, "temperature"),
    ({"type": "linear_svm"}, "platt"),
])
def test_other_models_optimisers_and_recalibrations_run_to_the_end(transport_for, model, recalibration):
    p, pid = _short(model={**model, "rounds": 2}, harmonisation={"combat": False},
                    validation={"recalibration": recalibration})
    out = run_study(p, pid, transport_for(p, pid), progress=lambda s: None)
    result = out.results["raw"]
    assert len(result.folds) == 4
    for fold in result.folds:
        assert fold.recalibration.method == recalibration
        assert 0.0 <= fold.before.auc.auc <= 1.0
    shapes = [w.shape for w in out.final_weights["_all/raw/radiomic"]]
    n_in = len(out.features)
    assert shapes == ([(8, n_in), (8,), (1, 8), (1,)] if model["type"] == "mlp" else [(1, n_in), (1,)])
    assert out.rounds_by_phase["train"] == 2 and "combat-round1" not in out.rounds_by_phase


def test_a_reference_batch_in_a_leave_one_site_out_study_fails_naming_the_fold_and_the_fix(transport_for):
    """M-ComBat maps every batch onto the reference batch; the fold that holds out the reference batch's site has
    none among its training sites. The study fails before any ComBat or training round, naming the fold, the
    protocol field and what to do instead (before, it failed with build_plan's bare 'not found')."""
    p, pid = protocol(harmonisation={"reference_batch": "AMC"}, model={"rounds": 2})
    transport = transport_for(p, pid)
    with pytest.raises(StudyFailed) as err:
        run_study(p, pid, transport, progress=lambda s: None)
    assert str(err.value) == (
        "harmonisation failed: ComBat fold AMC (held out: AMC): reference batch 'AMC' not found; batches are "
        "['R01-GE-CE0', 'R01-GE-CE1', 'R01-other']; leave-one-site-out holds out every site once, and the fold "
        "holding out the site of harmonisation.reference_batch ('AMC') has no reference batch to map onto: leave "
        "reference_batch empty (ComBat on the pooled training sites) for a leave-one-site-out study")
    assert {e.phase for e in transport.log} == {"handshake"}
