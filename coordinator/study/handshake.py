"""Handshake, coordinator side: check every site's counts and feature list, keep the ComBat schemas.

A site with fewer than k cases of a class (or a batch smaller than k) cannot take part: it says so without
sending any statistics and is dropped with that reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from protocols.payload import Payload, unnest
from flowerglue.versions import fedradval_version
from protocols.contract import (
    COUNT_FIELDS, ELIGIBLE, FEATURES, FVOL, HANDSHAKE, MODEL_FEATURES, REASON, RELEASE, SCHEMA, VOLUME_FEATURE,
)
from coordinator.study.transport import Session



@dataclass
class HandshakeResult:
    features: list[str]
    model_features: list[str]
    volume_feature: str
    counts: dict[str, dict[str, int]] = field(default_factory=dict)     # -1 = suppressed (< k)
    schemas: dict[str, dict] = field(default_factory=dict)              # harmonisation site_schema per site
    feature_volume: dict[str, dict] = field(default_factory=dict)       # feature_volume_sums per site


def run_handshake(session: Session) -> HandshakeResult:
    """One round; the request carries the coordinator's fedradval release (a site on another release refuses;
    a reply naming another release is dropped by :class:`coordinator.study.replies.ReplyCheck`)."""
    release = session.checker.release if session.checker else fedradval_version()
    replies = session.exchange(HANDSHAKE, {site: {RELEASE: release} for site in list(session.active)})
    result: HandshakeResult | None = None
    for site, reply in sorted(replies.items()):
        if not reply.get(ELIGIBLE, False):
            session.drop(site, f"site {site} cannot take part: {reply.get(REASON) or 'not eligible'}")
            continue
        if result is None:
            result = HandshakeResult(list(reply[FEATURES]), list(reply[MODEL_FEATURES]), str(reply[VOLUME_FEATURE]))
        elif (list(reply[FEATURES]) != result.features or str(reply[VOLUME_FEATURE]) != result.volume_feature
              or list(reply[MODEL_FEATURES]) != result.model_features):
            theirs, ours = list(reply[FEATURES]), result.features
            diff = sorted(set(theirs) ^ set(ours))[:5] or ["(same names, different order)"]
            session.drop(site, f"site {site} reports a different feature list than the other sites (differences: {diff})")
            continue
        result.counts[site] = {k: int(reply[k]) for k in COUNT_FIELDS}
        schema = unnest(reply, SCHEMA)
        schema["site"], schema["kind"] = site, "schema"
        result.schemas[site] = schema
        result.feature_volume[site] = unnest(reply, FVOL)
    if result is None:
        raise RuntimeError("no site is eligible")  # unreachable: Session raises StudyFailed first
    return result
