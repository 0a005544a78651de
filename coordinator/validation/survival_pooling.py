"""Coordinator half of survival validation: pool each held-out site's measures by random effects.

Scales as for the binary metrics (``coordinator.validation.meta``): C statistics and AUC(t*) on the logit scale,
O/E on the log scale, ΔC, calibration slope and Brier on their own scale. A site whose measure was withheld
(small cells, a horizon beyond its follow-up, or not estimable there) is left out of that measure's pool, never
imputed; the pooled result's ``k`` says how many sites it holds.
"""

from __future__ import annotations

from collections.abc import Mapping

from coordinator.validation.meta import random_effects
from coordinator.validation.results import RandomEffects

SITE_MEASURES = {  # name: (path into a site's result, estimate key, SE key, scale)
    "harrell_c": (("harrell",), "c", "se", "logit"),
    "uno_c": (("uno",), "c", "se", "logit"),
    "delta_c_vs_volume": (("delta_c_vs_volume",), "delta", "se", "identity"),
    "calibration_slope": (("calibration_slope",), "slope", "se", "identity"),
}
HORIZON_MEASURES = {
    "auc": ("auc", "auc", "se", "logit"),
    "brier": ("brier", "brier", "se", "identity"),
    "oe": ("oe", "oe", "log_oe_se", "log"),
}


def _pool(pairs: list[tuple[float, float]], scale: str) -> RandomEffects | None:
    if not pairs:
        return None
    estimates, ses = zip(*pairs)
    return random_effects(list(estimates), list(ses), scale=scale)


def pool_survival_results(sites: Mapping[str, dict], horizons: list[float]) -> dict[str, RandomEffects | None]:
    """{measure or "measure@t*": pooled result}; ``sites`` maps site -> ``heldout_survival_metrics`` output."""
    pooled: dict[str, RandomEffects | None] = {}
    for name, (path, estimate, se, scale) in SITE_MEASURES.items():
        pairs = []
        for result in sites.values():
            entry = result
            for key in path:
                entry = entry[key]
            if estimate in entry:
                pairs.append((entry[estimate], entry[se]))
        pooled[name] = _pool(pairs, scale)
    for horizon in horizons:
        for name, (key, estimate, se, scale) in HORIZON_MEASURES.items():
            pairs = []
            for result in sites.values():
                entry = result["horizons"].get(float(horizon), {}).get(key)
                if entry and estimate in entry:
                    # O/E arrives with the SE of its log; meta takes natural-scale SEs (delta method: SE = O/E · SE_log)
                    pairs.append((entry[estimate], entry[se] * (entry[estimate] if scale == "log" else 1.0)))
            pooled[f"{name}@{horizon:g}"] = _pool(pairs, scale)
    return pooled
