"""``coordinator demo-cohort``: write the seeded synthetic multi-centre cohort of the demo."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from coordinator.cli import app
from demo.cohort import CohortError, generate_cohort


@app.command("demo-cohort")
def demo_cohort(
    out: Path = typer.Argument(..., help="Output folder; one sub-folder per site with images, masks and manifest.csv."),
    sites: int = typer.Option(4, "--sites", help="Number of sites (hospitals), 2 to 26."),
    cases_per_site: int = typer.Option(60, "--cases-per-site", help="Lesions per site."),
    seed: int = typer.Option(20261123, "--seed", help="Random seed; the same seed gives the same cohort."),
    force: bool = typer.Option(False, "--force", help="Replace a different cohort already in OUT."),
) -> None:
    """Generate a seeded synthetic liver-lesion cohort (NIfTI images, masks, one manifest per site)."""
    start = time.perf_counter()
    try:
        manifests = generate_cohort(out, sites=sites, cases_per_site=cases_per_site, seed=seed, force=force,
                                    progress=typer.echo)
    except CohortError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"{len(manifests)} site manifests under {out} ({time.perf_counter() - start:.1f} s):")
    for manifest in manifests:
        typer.echo(f"  {manifest}")
