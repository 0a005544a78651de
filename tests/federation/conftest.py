"""Fixtures of the in-process study tests: the NSCLC sites written as feature tables, one folder per site."""

from __future__ import annotations

from pathlib import Path

import pytest

from federation.inprocess import InProcessTransport
from federation.nsclc import load_sites
from site_client.study import SiteContext
from site_client.tables import write_table_atomic


def make_contexts(root: Path, protocol, pid: str, tables: dict, approved: dict[str, set[str]] | None = None) -> dict[str, SiteContext]:
    contexts = {}
    for name, table in tables.items():
        path = root / name / "features.csv"
        if not path.exists():
            write_table_atomic(table, path)
        ids = approved.get(name, {pid}) if approved is not None else {pid}
        contexts[name] = SiteContext(name, protocol, pid, set(ids), path, "features", root / name / f"work-{pid[:8]}")
    return contexts


@pytest.fixture(scope="session")
def nsclc_tables(reference_data) -> dict:
    return load_sites(reference_data / "nsclc_radiogenomics")


@pytest.fixture
def transport_for(tmp_path, nsclc_tables):
    def build(protocol, pid, approved=None, fail=None, tables=None):
        t = InProcessTransport(make_contexts(tmp_path, protocol, pid, tables or nsclc_tables, approved))
        if fail:
            t.fail.update(fail)
        return t
    return build
