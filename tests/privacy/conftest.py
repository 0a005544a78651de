"""A small three-site study on generated feature tables, served in process through the site's own handler
with a Flower-like run id, every request and reply recorded: the base of the adversarial-coordinator tests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from coordinator.study import run_study
from deployment.synthetic import protocol_yaml, write_sites
from federation.inprocess import InProcessTransport
from protocols import parse_protocol, protocol_id
from site_client.study import SiteContext

SIZES = {"site-a": 26, "site-b": 34, "site-c": 44}
RUN_ID = 7


@dataclass
class RecordedStudy:
    root: Path
    protocol: object
    pid: str
    data: dict[str, Path]
    transport: InProcessTransport

    def requests(self, site: str) -> list[tuple[str, dict]]:
        return [(e.phase, e.request) for e in self.transport.log if e.site == site]

    def replies(self, site: str) -> list[tuple[str, dict]]:
        return [(e.phase, e.reply) for e in self.transport.log if e.site == site and e.reply is not None]

    def fresh_context(self, site: str, tag: str, run_id: int | None = RUN_ID, **extra) -> SiteContext:
        """The site with an empty work folder (a new ledger), serving ``run_id``."""
        return SiteContext(site, self.protocol, self.pid, {self.pid}, self.data[site], "features",
                           self.root / f"fresh-{tag}-{site}", extra=dict(extra), run_id=run_id)


def build_study(root: Path, **protocol_overrides) -> RecordedStudy:
    data = write_sites(root / "data", SIZES, seed=3)
    raw = yaml.safe_load(protocol_yaml(rounds=2))
    for section, values in protocol_overrides.items():
        raw.setdefault(section, {}).update(values)
    protocol = parse_protocol(raw)
    pid = protocol_id(protocol)
    contexts = {name: SiteContext(name, protocol, pid, {pid}, path, "features", root / "work" / name, run_id=RUN_ID)
                for name, path in data.items()}
    transport = InProcessTransport(contexts)
    run_study(protocol, pid, transport, progress=lambda s: None)
    return RecordedStudy(root, protocol, pid, data, transport)


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> RecordedStudy:
    return build_study(tmp_path_factory.mktemp("privacy-study"))
