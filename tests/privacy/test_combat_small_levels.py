"""ComBat's XᵀX between indicator columns is a count table (per batch, per covariate level, batch × level):
a site where a categorical covariate level has 1..k-1 cases refuses the ComBat sums on its own, with the
generic budget reason; the level and its count stay in the site's log and ledger."""

from __future__ import annotations

import pandas as pd
import pytest
import yaml

from coordinator.study import run_study
from deployment.synthetic import protocol_yaml, write_sites
from federation.inprocess import InProcessTransport
from protocols import parse_protocol, protocol_id
from site_client.privacy import Ledger
from site_client.privacy.combat_cells import small_combat_cells
from site_client.study import SiteContext

SIZES = {"site-a": 40, "site-b": 36, "site-c": 44, "site-d": 38}
FEMALES = {"site-a": 20, "site-b": 3, "site-c": 22, "site-d": 19}  # site-b: 3 women, below k = 5


@pytest.fixture(scope="module")
def refused_study(tmp_path_factory):
    root = tmp_path_factory.mktemp("combat-levels")
    data = write_sites(root / "data", SIZES, seed=8)
    for site, path in data.items():
        table = pd.read_csv(path)
        table["sex"] = ["F"] * FEMALES[site] + ["M"] * (len(table) - FEMALES[site])
        table.to_csv(path, index=False)
    raw = yaml.safe_load(protocol_yaml(rounds=2, min_sites=2))
    raw["covariates"] = {"categorical": [{"name": "sex", "levels": ["F", "M"]}]}
    protocol = parse_protocol(raw)
    pid = protocol_id(protocol)
    contexts = {name: SiteContext(name, protocol, pid, {pid}, path, "features", root / "work" / name)
                for name, path in data.items()}
    transport = InProcessTransport(contexts)
    out = run_study(protocol, pid, transport, progress=lambda s: None)
    return root, pid, transport, out


def test_a_site_with_a_small_covariate_level_refuses_the_combat_sums(refused_study) -> None:
    root, pid, transport, out = refused_study
    assert out.dropped["site-b"] == (
        "phase combat-round1: Refusal: site site-b refused combat-round1 (over-budget): request not allowed by the privacy budget of protocol "
        f"{pid[:12]}: ComBat batches and covariate levels of at least k cases (privacy.min_cell_count) (limit 5)")
    assert not [e for e in transport.log if e.site == "site-b" and e.phase == "combat-round1" and e.reply]
    assert out.sites == ["site-a", "site-c", "site-d"]  # the others finish the study
    log = "".join(p.read_text(encoding="utf-8") for p in (root / "work" / "site-b").rglob("notes.log"))
    assert "3 case" not in out.dropped["site-b"]  # the count and the level stay at the site
    assert "sex=F: 3 case(s)" in log
    refusals = Ledger.read(root / "work" / "site-b", pid)["refusals"]
    assert [(r["phase"], r["detail"]) for r in refusals] == [("combat-round1", "sex=F: 3 case(s); batch=site-b & sex=F: 3 case(s)")]


def test_every_one_and_two_way_cell_is_counted_reference_levels_included() -> None:
    """Independent count: pandas value_counts / crosstab of the same labels, by hand."""
    table = pd.DataFrame({"case_id": [f"c{i}" for i in range(20)], "scanner": ["A"] * 12 + ["B"] * 8,
                          "sex": ["F"] * 10 + ["M"] * 2 + ["F"] * 6 + ["M"] * 2, "stage": ["I"] * 16 + ["II"] * 4})
    found = small_combat_cells("s", table, "scanner", ["sex", "stage"], 5)
    # rows 0-11 scanner A, 12-19 B; sex F: 0-9, 12-17; stage II: 16-19. Counted by hand from those ranges
    assert sorted(found) == sorted([
        "sex=M: 4 case(s)", "stage=II: 4 case(s)",
        "batch=A & sex=M: 2 case(s)", "batch=B & sex=M: 2 case(s)",
        "batch=B & stage=I: 4 case(s)", "batch=B & stage=II: 4 case(s)",  # batch A & stage II is 0: allowed
        "sex=F & stage=II: 2 case(s)", "sex=M & stage=I: 2 case(s)", "sex=M & stage=II: 2 case(s)",
    ])
    assert small_combat_cells("s", table, "scanner", ["sex", "stage"], 2) == []


def test_reference_mode_also_counts_the_reference_batchs_level_pairs() -> None:
    """In reference mode the site holding the reference batch sends its rows' XᵀX too: the level pairs within
    that batch are three-way cells (batch × sex × stage) that the all-rows tables do not show. Counted by hand."""
    table = pd.DataFrame({"case_id": [f"c{i}" for i in range(30)], "scanner": ["A"] * 15 + ["B"] * 15,
                          "sex": (["F"] * 9 + ["M"] * 6) * 2,
                          "stage": ["I"] * 6 + ["II"] * 3 + ["I"] * 3 + ["II"] * 3 + ["I"] * 3 + ["II"] * 6 + ["I"] * 6})
    # A: F&I 6, F&II 3, M&I 3, M&II 3;  B: F&I 3, F&II 6, M&I 6;  all rows: F&I 9, F&II 9, M&I 9, M&II 3
    assert small_combat_cells("s", table, "scanner", ["sex", "stage"], 5) == ["sex=M & stage=II: 3 case(s)"]
    assert sorted(small_combat_cells("s", table, "scanner", ["sex", "stage"], 5, reference_batch="A")) == sorted([
        "sex=M & stage=II: 3 case(s)",
        "batch=A & sex=F & stage=II: 3 case(s)", "batch=A & sex=M & stage=I: 3 case(s)",
        "batch=A & sex=M & stage=II: 3 case(s)"])
    assert sorted(small_combat_cells("s", table, "scanner", ["sex", "stage"], 5, reference_batch="B")) == sorted([
        "sex=M & stage=II: 3 case(s)", "batch=B & sex=F & stage=I: 3 case(s)"])  # B & M & II is 0: allowed
    only_a = table[table["scanner"] == "A"]  # the reference batch alone: its pairs are the two-way table already
    assert small_combat_cells("s", only_a, "scanner", ["sex", "stage"], 5, reference_batch="A") == \
        small_combat_cells("s", only_a, "scanner", ["sex", "stage"], 5)
