"""The coordinator's check of every reply before any of it is used.

A reply must fit the message contract (:mod:`protocols.contract`: only described fields, types, shapes from
the protocol and the handshake, finite values, declared ranges, every field the request asked for) and the
replying site's own handshake: every patient count at most the cases it announced (``n``; training weights
at most ``n_train``), histogram bins summing to at most that. A reply that fails drops its site with a reason
naming the site and the field; the other sites' replies are used as if it had never been sent, so an honest
site is never blamed for another site's reply.

A handshake reply must also name the coordinator's own fedradval release (:data:`protocols.contract.RELEASE`,
compared by :func:`flowerglue.versions.same_release`): a site that runs another release, or does not say, is
dropped with a reason naming the site, both releases and what to do. Policy: the same release everywhere,
no tolerance for "compatible" releases, because a release fixes the maths every site computes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from flowerglue.versions import fedradval_version, same_release
from protocols.contract import (
    CONFORMAL, COUNT_FIELDS, HANDSHAKE, PHASE, RELEASE, REPLY, SITE, SUPPRESSED_COUNT, TRAIN, ContractViolation,
    Dims,
    check_message,
)
from protocols.schema import Protocol


@dataclass
class ReplyCheck:
    """What replies are checked against: the protocol, then (after the handshake) the study's sizes and
    each site's announced counts, then (after the ComBat plans) each fold's plan sizes. ``release``: the
    coordinator's fedradval release, sent in the handshake request and required in every handshake reply."""

    protocol: Protocol
    dims: Dims | None = None
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    sizes: dict[str, dict[str, int]] = field(default_factory=dict)
    release: str = field(default_factory=fedradval_version)

    def _bound(self, site: str, name: str) -> int | None:
        counts = self.counts.get(site)
        if counts is None:
            return None
        value = counts.get(name, counts.get("n", 0))
        return self.protocol.privacy.min_cell_count - 1 if value == SUPPRESSED_COUNT else value

    def _announced(self, site: str, *names: str, default: int) -> int:
        """The first of ``names`` the site's handshake shows (a count suppressed there may be >= k: it can be
        withheld because it would pin another cell by differencing, so it bounds nothing), else ``default``."""
        counts = self.counts.get(site, {})
        for name in names:
            if counts.get(name, SUPPRESSED_COUNT) != SUPPRESSED_COUNT:
                return int(counts[name])
        return default

    def problem(self, site: str, phase: str, request: dict, reply: dict) -> str | None:
        """None when the reply may be used; otherwise the reason, naming the site and the field."""
        dims = self.dims
        if phase == HANDSHAKE and isinstance(reply.get("features"), list) and isinstance(reply.get("model_features"), list):
            dims = Dims.of(self.protocol, len(reply["features"]), len(reply["model_features"]))
        try:
            matched = check_message(phase, REPLY, reply, dims, request, sizes=self.sizes)
        except ContractViolation as exc:
            return f"site {site} sent a malformed {phase} reply: field {exc}"
        if reply.get(SITE) != site or reply.get(PHASE) != phase:
            return f"site {site} sent a malformed {phase} reply: field {SITE}/{PHASE} names another site or phase"
        if phase == HANDSHAKE:
            return self._handshake_problem(site, reply)
        n_all = self._bound(site, "n")
        for f, parts, key in matched:
            if not f.counts or n_all is None:
                continue
            bound = self._bound(site, "n_train") if (phase == TRAIN and key.startswith("n/")) else n_all
            if key.startswith(CONFORMAL + "/") and key.endswith("/n"):  # dp conformal: one class's calibration cases
                bound = self._announced(site, f"n_cal_{parts['cls']}", "n_cal", default=n_all)
            value = np.asarray(reply[key])
            total = int(value.sum()) if "bin_n_" in key else int(value.max(initial=0))
            if total > bound:
                return (f"site {site} sent a malformed {phase} reply: field {key} counts more cases than the site "
                        f"announced in the handshake")
        return None

    def release_problem(self, site: str, reply: dict) -> str | None:
        """None when the site runs the coordinator's release; otherwise why the site is dropped."""
        theirs = reply.get(RELEASE)
        if theirs is None:
            return (f"site {site} did not report its fedradval release (an older release than the coordinator's "
                    f"{self.release}?): install fedradval {self.release} at site {site} and join again")
        if not same_release(str(theirs), self.release):
            return (f"site {site} runs fedradval {theirs}, the coordinator runs fedradval {self.release}: a study "
                    f"needs the same release everywhere; install fedradval {self.release} at site {site} and join "
                    f"again (or run the coordinator on {theirs})")
        return None

    def _handshake_problem(self, site: str, reply: dict) -> str | None:
        release = self.release_problem(site, reply)
        if release:
            return release
        c = {name: int(reply[name]) for name in COUNT_FIELDS}
        shown = {k: v for k, v in c.items() if v != SUPPRESSED_COUNT}
        pairs = (("n", "n_pos", "n_neg"), ("n", "n_train", "n_cal"), ("n_train", "n_train_pos", "n_train_neg"),
                 ("n_cal", "n_cal_pos", "n_cal_neg"))
        for total, a, b in pairs:
            if all(x in shown for x in (total, a, b)) and shown[a] + shown[b] != shown[total]:
                return f"site {site} sent a malformed handshake reply: field {total} is not {a} + {b}"
        return None
