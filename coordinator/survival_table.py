"""The console table of a time-to-event study: one row per held-out site and variant, then the pooled row."""

from __future__ import annotations

from typing import Any


def _fmt(entry: dict | None, estimate: str, se: str) -> str:
    if not entry or estimate not in entry:
        return "withheld"
    return f"{entry[estimate]:.3f} ({entry[se]:.3f})"


def _pooled(re_: Any) -> str:
    return "-" if re_ is None else f"{re_.estimate:.3f} [{re_.ci_low:.3f}, {re_.ci_high:.3f}]"


def print_survival_table(outcome: Any) -> None:
    """Harrell's C, Uno's C, ΔC vs volume only, calibration slope and O/E at the last horizon (SE in brackets)."""
    from rich.console import Console
    from rich.table import Table

    last = max(outcome.horizons)
    table = Table(title=f"External validation of {outcome.study_name} at each held-out site (time to event)")
    for column in ("held-out site", "variant", "n", "events", "Harrell C", "Uno C", "ΔC vs volume",
                   "cal. slope", f"O/E at {last:g} {outcome.time_unit}"):
        table.add_column(column)
    for variant, result in outcome.results.items():
        for site, r in sorted(result.heldout.items()):
            oe = r["horizons"].get(float(last), {}).get("oe")
            table.add_row(site, variant, str(r["n"]), str(r["n_events"]), _fmt(r["harrell"], "c", "se"),
                          _fmt(r["uno"], "c", "se"), _fmt(r["delta_c_vs_volume"], "delta", "se"),
                          _fmt(r["calibration_slope"], "slope", "se"), _fmt(oe, "oe", "log_oe_se"))
        p = result.pooled
        table.add_row("pooled (REML)", variant, "", "", _pooled(p.get("harrell_c")), _pooled(p.get("uno_c")),
                      _pooled(p.get("delta_c_vs_volume")), _pooled(p.get("calibration_slope")),
                      _pooled(p.get(f"oe@{last:g}")))
    Console(width=140).print(table)
