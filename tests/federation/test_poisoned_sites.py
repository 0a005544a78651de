"""A poisoned site against the study runner: its reply is altered after it left the site (NaN, inf, a wrong
shape, a missing key, n inflated or negative, histogram counts beyond its cases). That site is dropped and
named with the field; the other sites finish; the final weights are finite; nobody else is blamed."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from coordinator.study import StudyFailed, run_study
from federation.conftest import make_contexts
from federation.inprocess import InProcessTransport
from federation.nsclc import protocol

POISONED = "R01-GE-CE1"
MODEL = "_all/raw/radiomic"
# the poisoned site's own validation histogram: its apparent (train-part) class totals are withheld by the
# whole-run release guard (they would give back a class × part cell below k), so they are not there to poison
HELD = f"before/{POISONED}/raw/radiomic/histograms"


@dataclass
class PoisoningTransport:
    """Alters one site's reply in one phase (its n-th occurrence), the way a compromised site could."""

    inner: InProcessTransport
    site: str
    phase: str
    alter: object
    occurrence: int = 1
    seen: int = 0

    def sites(self):
        return self.inner.sites()

    def exchange(self, phase, requests, timeout_s):
        replies = self.inner.exchange(phase, requests, timeout_s)
        if phase == self.phase and self.site in replies:
            self.seen += 1
            if self.seen == self.occurrence:
                replies[self.site] = self.alter(dict(replies[self.site]))
        return replies


def _set(key, value):
    def alter(reply):
        reply[key] = value
        return reply
    return alter


def _drop(key):
    def alter(reply):
        reply.pop(key)
        return reply
    return alter


def _nan_weights(reply):
    w = np.array(reply[f"w/{MODEL}/0"], dtype=float)
    w[0, 0] = np.nan
    reply[f"w/{MODEL}/0"] = w
    return reply


def _inf_weights(reply):
    w = np.array(reply[f"w/{MODEL}/1"], dtype=float)
    w[0] = np.inf
    reply[f"w/{MODEL}/1"] = w
    return reply


def _counts_beyond_cases(reply):
    key = f"{HELD}/bin_n_pos"
    counts = np.array(reply[key])
    counts[-1] += 10_000
    reply[key] = counts
    return reply


def _negative_counts(reply):
    key = f"{HELD}/bin_n_neg"
    counts = np.array(reply[key])
    counts[0] = -5
    reply[key] = counts
    return reply


def _negative_variances(reply):
    reply["schema/var"] = -1.0 - np.asarray(reply["schema/var"])
    return reply


CASES = [
    ("train", 2, _nan_weights, f"w/{MODEL}/0 holds NaN or inf"),
    ("train", 1, _inf_weights, f"w/{MODEL}/1 holds NaN or inf"),
    ("train", 2, _set(f"w/{MODEL}/0", np.zeros((3, 2))), f"w/{MODEL}/0 has the wrong shape"),
    ("train", 2, _drop(f"n/{MODEL}"), f"n/{MODEL} is required and missing"),
    ("train", 2, _set(f"n/{MODEL}", 10**12), f"n/{MODEL} counts more cases than the site announced in the handshake"),
    ("train", 2, _set(f"n/{MODEL}", -3), f"n/{MODEL} is below its declared range"),
    ("calibrate", 1, _counts_beyond_cases, f"{HELD}/bin_n_pos counts more cases than the site announced in the handshake"),
    ("calibrate", 1, _negative_counts, f"{HELD}/bin_n_neg is below its declared range"),
    ("train", 2, _set("export", 1), "export is not described by the message contract"),
    # without covariates ComBat is fitted from the handshake's per-batch moments: a poisoned schema never reaches it
    ("handshake", 1, _negative_variances, "schema/var is below its declared range"),
]


@pytest.mark.parametrize("phase,occurrence,alter,field", CASES, ids=[c[3].split(" ")[0] + "-" + c[3].split(" ", 1)[1][:20] for c in CASES])
def test_a_poisoned_reply_drops_that_site_only(tmp_path, nsclc_tables, phase, occurrence, alter, field):
    p, pid = protocol(model={"rounds": 3}, federation={"min_sites": 3})
    inner = InProcessTransport(make_contexts(tmp_path, p, pid, nsclc_tables))
    out = run_study(p, pid, PoisoningTransport(inner, POISONED, phase, alter, occurrence), progress=lambda s: None)
    assert list(out.dropped) == [POISONED]
    assert out.dropped[POISONED] == f"site {POISONED} sent a malformed {phase} reply: field {field}"
    assert out.sites == sorted(set(nsclc_tables) - {POISONED})
    for weights in out.final_weights.values():
        assert all(np.all(np.isfinite(w)) for w in weights)
    for result in out.results.values():
        assert sorted(f.heldout_site for f in result.folds) == out.sites


def test_poisoned_sites_below_min_sites_fail_the_study_naming_the_site_and_field(tmp_path, nsclc_tables):
    p, pid = protocol(model={"rounds": 2}, federation={"min_sites": 4})
    inner = InProcessTransport(make_contexts(tmp_path, p, pid, nsclc_tables))
    with pytest.raises(StudyFailed) as err:
        run_study(p, pid, PoisoningTransport(inner, POISONED, "train", _nan_weights, 1), progress=lambda s: None)
    assert f"{POISONED} (site {POISONED} sent a malformed train reply: field w/{MODEL}/0 holds NaN or inf)" in str(err.value)
    assert set(err.value.sites) == {POISONED}
