"""The study Transport over a Flower Grid: site names <-> node ids, one query message per site and phase.

A reply that is a Flower error, or no reply within the timeout, or a node that went offline while its
request was pending, becomes a ``SiteFailure`` for that site (the study runner decides whether to go on).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from flwr.app import Message, MessageType
from flwr.serverapp import Grid

from flowerglue.wire import from_record, to_record
from protocols.logs import get_logger
from protocols.payload import payload_nbytes

log = get_logger("coordinator.transport")

IDENTIFY = "identify"  # answered by the site's glue with its node_config site-name
POLL_S = 0.25  # pulls for pending replies: 4 a second (at 1 s this poll was ~10 % of a loopback round); one
# request for all pending message ids, answered from the SuperLink's state
REJOIN_WAIT_S = 60.0  # how long a site whose heartbeat lapsed may take to come back before it counts as lost
RETRIES = 6  # SuperLink calls that fail (HTTP 5xx under load, a restart) are retried this often, 5 s apart


class SiteLookupError(RuntimeError):
    """Too few sites online, or two nodes claim the same site name."""


def retrying(call: Callable[[], Any], what: str) -> Any:
    """``call()``, retried on any error (transient SuperLink failures); the last error propagates."""
    for attempt in range(RETRIES):
        try:
            return call()
        except Exception as exc:
            if attempt == RETRIES - 1:
                raise RuntimeError(f"SuperLink call {what} failed {RETRIES} times: {exc}") from exc
            log.warning("SuperLink call %s failed (%s); retrying in 5 s", what, exc)
            time.sleep(5)
    raise AssertionError("unreachable")


def online_nodes(grid: Grid) -> dict[int, str]:
    """node id -> registered name ('' when the SuperLink has none) of every online node."""
    nodes = retrying(lambda: list(grid.get_nodes()), "get-nodes")
    return {int(n.node_id): str(getattr(n, "name", "") or "") for n in nodes}


def wait_for_nodes(grid: Grid, wanted: int, timeout_s: float, say: Callable[[str], None]) -> dict[int, str]:
    """Poll until ``wanted`` nodes are online or the timeout passes; returns what is online then."""
    deadline = time.monotonic() + timeout_s
    seen = -1
    while True:
        nodes = online_nodes(grid)
        if len(nodes) != seen:
            seen = len(nodes)
            say(f"{seen} site(s) online, waiting for {wanted}")
        if len(nodes) >= wanted or time.monotonic() >= deadline:
            return nodes
        time.sleep(POLL_S)


def _failure(site: str, message: str) -> Any:
    from coordinator.flower.server_app import study_module

    return study_module().SiteFailure(site=site, message=message)


class GridTransport:
    """``coordinator.study.Transport`` over a Grid; counts rounds and bytes per site."""

    def __init__(
        self,
        grid: Grid,
        protocol_id: str,
        on_phase: Callable[[str], None] = lambda phase: None,
    ) -> None:
        self.grid = grid
        self.protocol_id = protocol_id
        self.on_phase = on_phase
        self.node_of: dict[str, int] = {}
        self.rounds = 0
        self.failures: list[str] = []  # nodes that could not even say who they are
        self.bytes_sent: dict[str, int] = {}
        self.bytes_received: dict[str, int] = {}

    # -- site names -------------------------------------------------------------------------------------
    def bind(self, nodes: dict[int, str], timeout_s: float) -> list[str]:
        """Learn site names: the SuperLink's registered names, else one ``identify`` round."""
        if nodes and all(nodes.values()):
            names = dict(nodes)
        else:
            self.node_of = {f"node-{nid}": nid for nid in nodes}
            replies = self._round(IDENTIFY, {f"node-{nid}": {} for nid in nodes}, timeout_s)
            names = {}
            failed = []
            for key, reply in replies.items():
                if isinstance(reply, dict) and reply.get("site"):
                    names[self.node_of[key]] = str(reply["site"])
                else:
                    failed.append(f"{key}: {getattr(reply, 'message', reply)}")
            if failed:
                self.failures = failed
        for counts in (self.bytes_sent, self.bytes_received):  # identify bytes: file them under the site name
            for nid, name in names.items():
                if f"node-{nid}" in counts:
                    counts[name] = counts.get(name, 0) + counts.pop(f"node-{nid}")
        taken: dict[str, int] = {}
        for nid, name in names.items():
            if name in taken:
                raise SiteLookupError(f"nodes {taken[name]} and {nid} both call themselves site {name!r}")
            taken[name] = nid
        self.node_of = taken
        return self.sites()

    def sites(self) -> list[str]:
        return sorted(self.node_of)

    # -- messages -----------------------------------------------------------------------------------------
    def exchange(self, phase: str, requests: dict[str, dict[str, Any]], timeout_s: float) -> dict[str, Any]:
        unknown = sorted(set(requests) - set(self.node_of))
        results: dict[str, Any] = {s: _failure(s, f"site {s} is not connected") for s in unknown}
        known = {s: p for s, p in requests.items() if s in self.node_of}
        self.on_phase(phase)
        results.update(self._round(phase, known, timeout_s))
        return results

    def _push(self, phase: str, bodies: dict[str, dict[str, Any]]) -> dict[str, str]:
        """Push one message per site; returns message id -> site."""
        messages = [
            Message(to_record(body), dst_node_id=self.node_of[site], message_type=MessageType.QUERY, group_id=phase)
            for site, body in bodies.items()
        ]
        ids = retrying(lambda: list(self.grid.push_messages(messages)), "push-messages")
        return dict(zip(ids, bodies))

    def _round(self, phase: str, requests: dict[str, dict[str, Any]], timeout_s: float) -> dict[str, Any]:
        if not requests:
            return {}
        self.rounds += 1
        bodies: dict[str, dict[str, Any]] = {}
        for site, payload in requests.items():
            body = dict(payload)
            body.setdefault("phase", phase)
            body.setdefault("protocol_id", self.protocol_id)
            self.bytes_sent[site] = self.bytes_sent.get(site, 0) + payload_nbytes(body)
            bodies[site] = body
        pending = self._push(phase, bodies)
        results: dict[str, Any] = {}
        resent: set[str] = set()
        lapsed: dict[str, tuple[float, Message]] = {}  # site → (give-up time, its "Node Unavailable" reply)
        offline_checks: dict[str, int] = {}
        deadline = time.monotonic() + timeout_s
        last_check = time.monotonic()
        while pending or lapsed:
            for reply in retrying(lambda: list(self.grid.pull_messages(list(pending))), "pull-messages") if pending else []:
                site = pending.pop(reply.metadata.reply_to_message_id, None)
                if site is None:
                    continue
                if self._lapsed(reply) and site not in resent:
                    # The SuperLink lost the site's heartbeat: a SuperNode restarting (site-client join restarts
                    # it) or a missed beat under load. Wait for the site to come back, then ask once more.
                    log.warning("site %s missed a heartbeat in %s; resending once it is back", site, phase)
                    lapsed[site] = (min(deadline, time.monotonic() + REJOIN_WAIT_S), reply)
                    continue
                results[site] = self._decode(site, phase, reply)
            if lapsed:
                online = set(online_nodes(self.grid))
                for site, (give_up, reply) in list(lapsed.items()):
                    if self.node_of[site] in online:
                        del lapsed[site]
                        resent.add(site)
                        pending.update(self._push(phase, {site: bodies[site]}))
                    elif time.monotonic() >= give_up:
                        del lapsed[site]
                        results[site] = self._decode(site, phase, reply)
            if not pending and not lapsed:
                break
            now = time.monotonic()
            if now >= deadline:
                for site in pending.values():
                    results[site] = _failure(site, f"site {site} sent no {phase} reply within {timeout_s:.0f} s")
                for site, (_, reply) in lapsed.items():
                    results[site] = self._decode(site, phase, reply)
                break
            if now - last_check > 10:  # a node offline in 3 checks in a row (~30 s) will not answer
                last_check = now
                online = set(online_nodes(self.grid))
                for mid, site in list(pending.items()):
                    offline_checks[site] = 0 if self.node_of[site] in online else offline_checks.get(site, 0) + 1
                    if offline_checks[site] >= 3:
                        pending.pop(mid)
                        results[site] = _failure(site, f"site {site} went offline during {phase}")
            time.sleep(POLL_S)
        return results

    @staticmethod
    def _lapsed(reply: Message) -> bool:
        return reply.has_error() and "Node Unavailable" in (reply.error.reason or "")

    def _decode(self, site: str, phase: str, reply: Message) -> Any:
        if reply.has_error():
            reason = reply.error.reason or f"error code {reply.error.code}"
            return _failure(site, reason if site in reason else f"site {site}: {reason}")
        try:
            payload = from_record(reply.content)
        except Exception as exc:  # noqa: BLE001 - a malformed reply drops its site, it never ends the ServerApp
            return _failure(site, f"site {site} sent a {phase} reply that cannot be decoded: {type(exc).__name__}: {exc}")
        self.bytes_received[site] = self.bytes_received.get(site, 0) + payload_nbytes(payload)
        claimed = payload.get("site")
        if phase != IDENTIFY and claimed is not None and claimed != site:
            return _failure(site, f"node registered as site {site} answered as site {claimed!r}")
        return payload


def describe_nodes(nodes: Iterable[tuple[int, str]]) -> str:
    return ", ".join(f"{name or '?'} (node {nid})" for nid, name in nodes)
