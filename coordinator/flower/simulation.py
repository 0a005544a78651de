"""``coordinator simulate``: the study's ServerApp and ClientApp on Flower's simulation engine (Ray).

One folder per site under ``sites_dir`` (the folder name is the site name) holding ``manifest.csv`` or
``features.csv`` / ``features.parquet``. The ClientApp is built by the FAB's component module (found by its
reference in ``app/pyproject.toml``, as Flower does, so the coordinator package never imports the site
package) with a resolver that maps the simulation's ``partition-id`` to that site's settings. The resolver
holds the site table itself and is pickled with the ClientApp into every Ray task, so the settings travel
with the run: no environment variable or file of the head node is read by a worker, and the same run works
on a Ray cluster (``ray_address``) as long as the data and work folders are at the same paths on every
node (a shared file system). Every simulated site is marked as having approved the protocol: the person
simulating holds all the data.
"""

from __future__ import annotations

import importlib
import json
import secrets
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coordinator.flower.flwr_cli import APP_DIR
from coordinator.flower.server_app import RunSettings, run_server
from protocols import load_protocol, protocol_id

DATA_FILES = (("manifest.csv", "manifest"), ("features.csv", "features"), ("features.parquet", "features"))


class SimulationSetupError(ValueError):
    """The sites folder is not usable (names the folder and what is expected)."""


@dataclass
class SimulationResult:
    outcome: Any = None
    error: BaseException | None = None
    rounds: int = 0  # message rounds on the wire, the identify round included
    sites: list[str] = field(default_factory=list)


def discover_sites(sites_dir: Path) -> list[tuple[str, Path, str]]:
    """(site name, data file, data kind) for every sub-folder, sorted by name."""
    if not sites_dir.is_dir():
        raise SimulationSetupError(f"{sites_dir} is not a folder; expected one sub-folder per site")
    found = []
    for folder in sorted(p for p in sites_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for name, kind in DATA_FILES:
            if (folder / name).is_file():
                found.append((folder.name, folder / name, kind))
                break
        else:
            raise SimulationSetupError(
                f"site folder {folder} holds none of {', '.join(n for n, _ in DATA_FILES)}"
            )
    if len(found) < 2:
        raise SimulationSetupError(f"{sites_dir} holds {len(found)} site folder(s); a study needs at least 2")
    return found


def _component_module(name: str) -> Any:
    config = tomllib.loads((APP_DIR / "pyproject.toml").read_text(encoding="utf-8"))
    return importlib.import_module(config["tool"]["flwr"]["app"]["components"][name].partition(":")[0])


def simulated_client_app(entries: list[dict[str, str]]) -> Any:
    """The site ClientApp whose site is ``entries[partition-id]`` (the table travels pickled with the app)."""
    module = _component_module("clientapp")

    def resolve(context: Any) -> Any:
        return module.settings_from_node_config(entries[int(context.node_config["partition-id"])])

    return module.make_client_app(resolve)


def write_site_table(sites: list[tuple[str, Path, str]], protocol_path: Path, work_root: Path) -> list[dict[str, str]]:
    """The node_configs (one per partition; also written to ``simulation-sites.json`` for the person
    simulating) and each site's approval of the protocol."""
    protocol = load_protocol(protocol_path)
    identifier = protocol_id(protocol)
    entries = []
    for name, data, kind in sites:
        work = (work_root / name).resolve()
        work.mkdir(parents=True, exist_ok=True)
        approvals = work / "approvals.json"
        approvals.write_text(json.dumps({"approved": [{"protocol_id": identifier, "study": protocol.study.name,
                                                      "version": protocol.study.version, "approved_at": "simulation",
                                                      "runs": 1, "grant": secrets.token_hex(8)}]}))  # a fresh privacy budget per simulation
        entries.append({"site-name": name, "data": str(data.resolve()), "data-kind": kind, "work-dir": str(work),
                        "protocol-path": str(protocol_path.resolve()), "approvals-path": str(approvals)})
    path = work_root.resolve() / "simulation-sites.json"
    path.write_text(json.dumps(entries, indent=1), encoding="utf-8")
    return entries


def simulate(
    protocol_path: Path,
    sites_dir: Path,
    work_root: Path,
    mlflow_uri: str = "",
    cpus_per_site: float = 1.0,
    status_dir: Path | None = None,
    ray_address: str = "",
    outcome_dir: Path | None = None,
    promote: bool = False,
) -> SimulationResult:
    """Run the whole study in simulation; returns the outcome (or the error that ended it). ``ray_address``:
    an existing Ray cluster to run the sites on ("" starts a local Ray instance). Progress is logged
    (:mod:`protocols.logs`)."""
    from flwr.app import Context
    from flwr.serverapp import Grid, ServerApp
    from flwr.simulation import run_simulation

    sites = discover_sites(sites_dir)
    protocol = load_protocol(protocol_path)
    work_root.mkdir(parents=True, exist_ok=True)
    entries = write_site_table(sites, protocol_path, work_root)
    result = SimulationResult(sites=[s[0] for s in sites])
    settings = RunSettings(protocol=protocol, protocol_id=protocol_id(protocol), mlflow_uri=mlflow_uri,
                           status_dir=status_dir, wait_for=len(sites), wait_timeout_s=600.0,
                           outcome_dir=outcome_dir, promote=promote)
    server = ServerApp()

    @server.main()
    def _main(grid: Grid, context: Context) -> None:
        try:
            stats: dict[str, Any] = {}
            result.outcome = run_server(grid, settings, context.run_id, stats=stats)
            result.rounds = int(stats.get("rounds", 0))
        except BaseException as exc:  # reported to the caller, not just to Flower's log
            result.error = exc

    run_simulation(
        server_app=server,
        client_app=simulated_client_app(entries),
        num_supernodes=len(sites),
        backend_config={
            "client_resources": {"num_cpus": cpus_per_site, "num_gpus": 0.0},
            "init_args": {"include_dashboard": False, **({"address": ray_address} if ray_address else {})},
        },
    )
    return result
