"""The per-site result table printed at the end of ``coordinator run`` / ``simulate`` / ``log``, from the outcome
itself (the demo prints the same table read back from MLflow: :mod:`demo.results`)."""

from __future__ import annotations

from typing import Any

from demo.results import DemoResults, HeldOutSite, _variant, results_table
from coordinator.study.outcome_survival import KIND as SURVIVAL_KIND
from coordinator.tracking import fold_values


def results_from_outcome(outcome: Any, registered_model: str | None = None) -> DemoResults:
    """Held-out-site metrics of every variant (preferred first), named as the tracking layer names them."""
    variants = [outcome.preferred_variant] + [v for v in outcome.results if v != outcome.preferred_variant]
    sites: dict[str, HeldOutSite] = {}
    for variant in variants:
        for fold in outcome.results[variant].folds:
            values = fold_values(fold)
            site = sites.setdefault(fold.heldout_site, HeldOutSite(
                fold.heldout_site, int(values["n"]) if "n" in values else None,
                int(values["n_events"]) if "n_events" in values else None))
            metrics = _variant(values, "")
            if metrics is not None:
                site.variants[variant] = metrics
    return DemoResults("", "", variants, [sites[s] for s in sorted(sites)], registered_model)


def print_results_table(outcome: Any, registered_model: str | None = None) -> None:
    """Print the table with rich (one row per held-out site and variant, then the mean)."""
    from rich.console import Console

    if getattr(outcome, "kind", "") == SURVIVAL_KIND:
        from coordinator.survival_table import print_survival_table

        print_survival_table(outcome)
        return

    results = results_from_outcome(outcome, registered_model)
    table = results_table(results, 1 - outcome.results[outcome.preferred_variant].alpha)
    table.title = f"External validation of {outcome.study_name} at each held-out site (leave-one-site-out)"
    Console(width=140).print(table)
