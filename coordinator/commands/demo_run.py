"""``coordinator demo``: run a whole multi-centre study on this machine (real SuperLink and SuperNodes)."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from coordinator.cli import app
from demo.run import DEFAULT_SEED, DEFAULT_WORK, DemoSettings, run_demo


@app.command("demo")
def demo(
    work: Path = typer.Option(DEFAULT_WORK, "--work", help="Work folder: cohort, keys, SuperLink and site state, logs, MLflow store, report."),
    sites: int = typer.Option(4, "--sites", help="Number of sites (hospitals), 2 to 26."),
    cases_per_site: int = typer.Option(60, "--cases-per-site", help="Lesions per site."),
    seed: int = typer.Option(DEFAULT_SEED, "--seed", help="Random seed of the synthetic cohort."),
    rounds: int | None = typer.Option(None, "--rounds", help="Federated training rounds (default: the demo protocol's, 20)."),
) -> None:
    """Run a whole demo study on this machine: synthetic cohort, real SuperLink and SuperNodes, table, report.

    Generates the cohort, starts a SuperLink and one SuperNode per site on loopback (TLS, site keys), runs the
    whole study, prints the held-out-site table read back from MLflow, and stops everything it started.
    """
    from rich.console import Console

    console = Console(width=None if sys.stdout.isatty() else 140)
    raise typer.Exit(run_demo(DemoSettings(work, sites, cases_per_site, seed, rounds), console))
