"""Every side of a study runs the same fedradval release: the handshake carries it both ways.

The coordinator sends its release in the handshake request; a site on another release refuses before
anything is computed (code ``version-mismatch``, both releases named) and its log says which release each
side runs. A site whose handshake reply names another release, names none, or holds something that is not a
release string is dropped by the coordinator, named with both releases and what to do; the others finish.
Texts are asserted exactly (the releases are not data: they may leave the site).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import pytest

from coordinator.study import StudyFailed, run_study
from federation.conftest import make_contexts
from federation.inprocess import InProcessTransport
from federation.synthetic import synthetic_protocol, synthetic_sites
from flowerglue.versions import fedradval_version, same_release
from protocols.contract import RELEASE
from site_client.study import handle
from site_client.study.validator import VERSION_MISMATCH, Refusal

SITE = "H2"
OTHER = "0.0.1"  # a release no checkout of this project has ever had


@dataclass
class AlteringTransport:
    """Changes one site's handshake request (``request``) or reply (``reply``) on the wire."""

    inner: InProcessTransport
    site: str
    request: object = None
    reply: object = None

    def sites(self):
        return self.inner.sites()

    def exchange(self, phase, requests, timeout_s):
        if phase == "handshake" and self.request is not None and self.site in requests:
            requests = {**requests, self.site: self.request(dict(requests[self.site]))}
        replies = self.inner.exchange(phase, requests, timeout_s)
        if phase == "handshake" and self.reply is not None and isinstance(replies.get(self.site), dict):
            replies[self.site] = self.reply(dict(replies[self.site]))
        return replies


def _setting(value):
    def alter(message):
        message[RELEASE] = value
        return message
    return alter


def _without(message):
    message.pop(RELEASE)
    return message


def _study(tmp_path, **alter):
    p, pid = synthetic_protocol(model={"rounds": 2})
    tables = synthetic_sites()
    inner = InProcessTransport(make_contexts(tmp_path, p, pid, tables))
    return p, pid, inner, AlteringTransport(inner, SITE, **alter)


def test_the_handshake_carries_the_release_both_ways(tmp_path):
    p, pid, inner, transport = _study(tmp_path)
    out = run_study(p, pid, transport, progress=lambda s: None)
    assert out.dropped == {}
    handshakes = [e for e in inner.log if e.phase == "handshake"]
    assert handshakes and all(e.request[RELEASE] == fedradval_version() for e in handshakes)
    assert all(e.reply[RELEASE] == fedradval_version() for e in handshakes)
    note = next(inner.contexts[SITE].work_dir.glob("study/*/notes.log")).read_text()
    release = fedradval_version()
    assert f"phase handshake: coordinator runs fedradval {release}, this site runs fedradval {release}" in note


@pytest.mark.parametrize("alter,reason", [
    (_setting(OTHER), f"site {SITE} runs fedradval {OTHER}, the coordinator runs fedradval {{ours}}: a study needs the "
                      f"same release everywhere; install fedradval {{ours}} at site {SITE} and join again (or run the "
                      f"coordinator on {OTHER})"),
    (_without, f"site {SITE} did not report its fedradval release (an older release than the coordinator's {{ours}}?): "
               f"install fedradval {{ours}} at site {SITE} and join again"),
    (_setting("1.0; see http://x"), f"site {SITE} sent a malformed handshake reply: field {RELEASE} is not of the "
                                    f"expected form"),
    (_setting("9" * 65), f"site {SITE} sent a malformed handshake reply: field {RELEASE} is not of the expected form"),
    (_setting(3), f"site {SITE} sent a malformed handshake reply: field {RELEASE} must be a string"),
], ids=["other-release", "no-release", "not-a-release", "too-long", "not-a-string"])
def test_a_site_reporting_another_release_is_named_and_excluded(tmp_path, alter, reason):
    p, pid, inner, transport = _study(tmp_path, reply=alter)
    out = run_study(p, pid, transport, progress=lambda s: None)
    assert out.dropped == {SITE: reason.format(ours=fedradval_version())}
    assert out.sites == sorted(set(inner.contexts) - {SITE})
    assert sorted(f.heldout_site for f in out.results["harmonised"].folds) == out.sites


def test_a_site_refuses_a_coordinator_on_another_release_and_the_study_names_it(tmp_path):
    p, pid, inner, transport = _study(tmp_path, request=_setting(OTHER))
    out = run_study(p, pid, transport, progress=lambda s: None)
    ours = fedradval_version()
    assert out.dropped[SITE] == (
        f"phase handshake: Refusal: site {SITE} refused handshake (version-mismatch): the coordinator runs fedradval "
        f"{OTHER}, this site runs fedradval {ours}; a study needs the same release at the coordinator and every "
        f"site: install fedradval {OTHER} here, or agree with the coordinator on another release")
    assert out.sites == sorted(set(inner.contexts) - {SITE})


def test_the_site_refuses_before_touching_its_data_and_logs_both_releases(tmp_path):
    p, pid = synthetic_protocol()
    context = make_contexts(tmp_path, p, pid, {SITE: synthetic_sites()[SITE]})[SITE]
    with pytest.raises(Refusal) as err:
        handle("handshake", {"protocol_id": pid, "phase": "handshake", RELEASE: OTHER}, context)
    ours = fedradval_version()
    assert err.value.code == VERSION_MISMATCH
    assert str(err.value) == (
        f"site {SITE} refused handshake (version-mismatch): the coordinator runs fedradval {OTHER}, this site runs "
        f"fedradval {ours}; a study needs the same release at the coordinator and every site: install fedradval "
        f"{OTHER} here, or agree with the coordinator on another release")
    written = [p.relative_to(context.work_dir) for p in context.work_dir.rglob("*") if p.is_file()]
    assert [p.name for p in written] == ["notes.log"], "a refused handshake builds no cohort and charges no budget"
    log = (context.work_dir / written[0]).read_text()
    assert f"refused (version-mismatch): the coordinator runs fedradval {OTHER}, this site runs fedradval {ours}" in log


def test_a_coordinator_that_sends_no_release_is_served_and_noted(tmp_path):
    """An older coordinator sends no release: the site serves it (the coordinator cannot read the reply's
    release either, and reports that) and its log says the coordinator did not say."""
    p, pid = synthetic_protocol()
    context = make_contexts(tmp_path, p, pid, {SITE: synthetic_sites()[SITE]})[SITE]
    reply = handle("handshake", {"protocol_id": pid, "phase": "handshake"}, context)
    assert reply[RELEASE] == fedradval_version()
    log = next(context.work_dir.glob("study/*/notes.log")).read_text()
    assert (f"the coordinator did not say which fedradval release it runs (an older release?); this site runs "
            f"{fedradval_version()}") in log


def test_a_malformed_release_in_the_request_is_refused_by_the_contract(tmp_path):
    p, pid = synthetic_protocol()
    context = make_contexts(tmp_path, p, pid, {SITE: synthetic_sites()[SITE]})[SITE]
    with pytest.raises(Refusal) as err:
        handle("handshake", {"protocol_id": pid, "phase": "handshake", RELEASE: "x" * 10_000}, context)
    assert str(err.value) == (f"site {SITE} refused handshake (not-in-contract): request not allowed by protocol "
                              f"{pid[:12]}: {RELEASE} is not of the expected form")
    assert "x" * 100 not in next(context.work_dir.glob("study/*/notes.log")).read_text()


def test_sites_on_another_release_below_min_sites_fail_the_study_naming_them(tmp_path):
    """Three of four sites on another release: the study fails, naming every one of them."""
    p, pid = synthetic_protocol(model={"rounds": 2})
    inner = InProcessTransport(make_contexts(tmp_path, p, pid, synthetic_sites()))

    class Everyone(AlteringTransport):
        def exchange(self, phase, requests, timeout_s):
            replies = self.inner.exchange(phase, requests, timeout_s)
            if phase == "handshake":
                for site in ("H1", "H2", "H3"):
                    replies[site] = _setting(OTHER)(dict(replies[site]))
            return replies

    with pytest.raises(StudyFailed) as err:
        run_study(p, pid, Everyone(inner, SITE), progress=lambda s: None)
    assert set(err.value.sites) == {"H1", "H2"}  # the study stops when fewer than min_sites (3) remain
    for site in err.value.sites:
        assert f"site {site} runs fedradval {OTHER}, the coordinator runs fedradval {fedradval_version()}" in str(err.value)


@pytest.mark.parametrize("first,second,same", [
    ("0.1", "0.1.0", True), ("0.1.0", "0.1.1", False), ("0.1.0+hospital.patch", "0.1.0", False),
    ("0.2.0rc1", "0.2.0", False), ("0+unknown", "0+unknown", True), ("not a version", "not a version", True),
    ("not a version", "0.1.0", False),
])
def test_the_same_release_is_pep440_equality(first, second, same):
    assert same_release(first, second) is same
