"""The coordinator's view of the network: a Transport exchanges one message per site per round.

Implementations: ``coordinator.flower.transport.GridTransport`` (Flower deployment or simulation) and, in
tests, ``tests/federation/inprocess.py`` (calls the site code directly). :class:`Session` wraps a transport
for the study runner: it stamps every request with the protocol id and phase, counts rounds and bytes, and
drops failed sites, raising :class:`StudyFailed` when fewer than ``federation.min_sites`` remain.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol as TypingProtocol
from typing import runtime_checkable

from coordinator.study.replies import ReplyCheck
from protocols.payload import Payload, payload_nbytes


@dataclass
class SiteFailure:
    """A site that did not answer usefully: error reply, timeout, or gone."""

    site: str
    message: str


class StudyFailed(RuntimeError):
    """The study cannot go on; the message names the site(s) and why."""

    def __init__(self, message: str, sites: dict[str, str] | None = None) -> None:
        self.sites = dict(sites or {})
        super().__init__(message)


@runtime_checkable
class Transport(TypingProtocol):
    def sites(self) -> list[str]:
        """Names of the connected sites."""
        ...

    def exchange(self, phase: str, requests: dict[str, Payload], timeout_s: float) -> dict[str, Payload | SiteFailure]:
        """Send one request to each named site; return each site's reply or a SiteFailure."""
        ...


@dataclass
class Session:
    """Round bookkeeping and failure policy around a Transport."""

    transport: Transport
    protocol_id: str
    min_sites: int
    timeout_s: float
    progress: Callable[[str], None]
    active: list[str] = field(default_factory=list)
    dropped: dict[str, str] = field(default_factory=dict)
    rounds: int = 0
    rounds_by_phase: dict[str, int] = field(default_factory=dict)
    bytes_sent: dict[str, int] = field(default_factory=dict)
    bytes_received: dict[str, int] = field(default_factory=dict)
    checker: ReplyCheck | None = None

    def drop(self, site: str, why: str) -> None:
        """Remove a site; raise StudyFailed when too few remain."""
        if site in self.active:
            self.active.remove(site)
        self.dropped[site] = why
        self.progress(f"site {site} dropped: {why}")
        if len(self.active) < self.min_sites:
            names = ", ".join(f"{s} ({w})" for s, w in self.dropped.items())
            raise StudyFailed(
                f"study failed: only {len(self.active)} site(s) remain ({', '.join(self.active) or 'none'}), "
                f"the protocol needs at least {self.min_sites} (federation.min_sites); lost: {names}",
                self.dropped,
            )

    def exchange(self, phase: str, requests: dict[str, Payload]) -> dict[str, Payload]:
        """One message round: returns the replies of the sites that answered with a reply that passes the
        contract check (:class:`ReplyCheck`); failed sites and sites with a malformed reply are dropped."""
        stamped = {}
        for site, payload in requests.items():
            if site not in self.active:
                continue
            request = dict(payload)
            request["protocol_id"] = self.protocol_id
            request["phase"] = phase
            stamped[site] = request
            self.bytes_sent[site] = self.bytes_sent.get(site, 0) + payload_nbytes(request)
        if not stamped:
            return {}
        self.rounds += 1
        self.rounds_by_phase[phase] = self.rounds_by_phase.get(phase, 0) + 1
        replies = self.transport.exchange(phase, stamped, self.timeout_s)
        good: dict[str, Payload] = {}
        failures: list[tuple[str, str]] = []
        for site in stamped:
            reply = replies.get(site)
            if reply is None:
                failures.append((site, f"no reply in phase {phase}"))
            elif isinstance(reply, SiteFailure):
                failures.append((site, f"phase {phase}: {reply.message}"))
            else:
                self.bytes_received[site] = self.bytes_received.get(site, 0) + payload_nbytes(reply)
                problem = self.checker.problem(site, phase, stamped[site], reply) if self.checker else None
                if problem:
                    failures.append((site, problem))
                else:
                    good[site] = reply
        for site, why in failures:
            self.drop(site, why)
        return good
