"""``coordinator simulate``: run a study on one machine with Flower's simulation engine."""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import typer

from coordinator.cli import app
from protocols.console import load_protocol_for_command
from protocols.logs import get_logger

log = get_logger("coordinator.simulate")


@app.command("simulate")
def simulate_command(
    protocol: Path = typer.Option(..., "--protocol", exists=True, dir_okay=False, help="Study protocol YAML."),
    sites_dir: Path = typer.Option(..., "--sites-dir", help="One sub-folder per site with manifest.csv or features.csv/.parquet."),
    work_dir: Path = typer.Option(Path("fedradval-simulation"), "--work-dir", help="Per-site state folders go here."),
    mlflow_uri: str = typer.Option("", "--mlflow-uri", help="MLflow tracking URI for the results "
                                   "(default: $MLFLOW_TRACKING_URI, else sqlite:///<work-dir>/mlflow.db)."),
    promote: bool = typer.Option(False, "--promote", help="Move the registry alias to the new model version."),
    cpus_per_site: float = typer.Option(1.0, "--cpus-per-site", help="CPUs Ray reserves per simulated site."),
    ray_address: str = typer.Option(
        "", "--ray-address",
        help="Run the sites on this existing Ray cluster (e.g. 10.0.0.5:6379, or 'auto' on a cluster node); "
             "default: a local Ray instance. Data and --work-dir must be at the same paths on every node."),
) -> None:
    """Run the study's ServerApp and ClientApps for many sites on this machine (Flower simulation)."""
    if importlib.util.find_spec("ray") is None:  # Flower's own message would point at the FAB's dependencies
        typer.echo("error: simulation needs Flower's simulation engine (Ray), which only the simulation extra "
                   "installs: pip install 'fedradval[simulation]'", err=True)
        raise typer.Exit(2)
    from coordinator.flower.simulation import SimulationSetupError, simulate
    from coordinator.study_table import print_results_table
    from coordinator.tracking import resolve_tracking_uri

    loaded, identifier = load_protocol_for_command(protocol, announce=False)
    uri = resolve_tracking_uri(mlflow_uri, work_dir)
    log.info("simulating %s v%s, protocol id %s; results to %s", loaded.study.name, loaded.study.version, identifier, uri)
    started = time.monotonic()
    try:
        result = simulate(protocol, sites_dir, work_dir, mlflow_uri=uri, cpus_per_site=cpus_per_site,
                          status_dir=work_dir.resolve() / "runs", ray_address=ray_address,
                          outcome_dir=work_dir.resolve() / "outcomes", promote=promote)
    except SimulationSetupError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    if result.error is not None or result.outcome is None:
        log.error("simulation FAILED: %s", result.error or "the ServerApp did not finish")
        raise typer.Exit(1)
    print_results_table(result.outcome)
    typer.echo(f"simulation of {len(result.sites)} sites finished in {time.monotonic() - started:.0f} s, "
               f"{result.rounds} message rounds")
