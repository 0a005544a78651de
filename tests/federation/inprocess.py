"""In-process Transport for tests: calls ``site_client.study.handle`` directly for each site's SiteContext.

Every request and reply is logged (:class:`Exchange`), so tests can check what left each site. ``fail``
makes a site fail from a given phase and occurrence on (an exception becomes a SiteFailure, like an error
reply in a deployment).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from coordinator.study import SiteFailure
from protocols.payload import Payload
from site_client.study import SiteContext, handle


@dataclass
class Exchange:
    round: int
    phase: str
    site: str
    request: Payload
    reply: Payload | None
    error: str = ""


@dataclass
class InProcessTransport:
    contexts: dict[str, SiteContext]
    log: list[Exchange] = field(default_factory=list)
    fail: dict[str, tuple[str, int]] = field(default_factory=dict)   # site → (phase, from the n-th time on)
    rounds: int = 0
    _seen: dict[tuple[str, str], int] = field(default_factory=dict)

    def sites(self) -> list[str]:
        return list(self.contexts)

    def exchange(self, phase: str, requests: dict[str, Payload], timeout_s: float) -> dict[str, Payload | SiteFailure]:
        self.rounds += 1
        out: dict[str, Payload | SiteFailure] = {}
        for site, request in requests.items():
            count = self._seen.get((site, phase), 0) + 1
            self._seen[(site, phase)] = count
            when = self.fail.get(site)
            if when is not None and (when[0] == phase and count >= when[1] or when[0] == "gone"):
                self.fail[site] = ("gone", 0)
                out[site] = SiteFailure(site, "site process killed (test)")
                self.log.append(Exchange(self.rounds, phase, site, request, None, "killed"))
                continue
            try:
                reply = handle(phase, request, self.contexts[site])
            except Exception as exc:  # the deployment glue turns exceptions into error replies
                out[site] = SiteFailure(site, f"{type(exc).__name__}: {exc}")
                self.log.append(Exchange(self.rounds, phase, site, request, None, str(exc)))
                continue
            out[site] = reply
            self.log.append(Exchange(self.rounds, phase, site, request, reply))
        return out
