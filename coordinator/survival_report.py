"""Report sections of a time-to-event study (TRIPOD+AI items for the external validation of a prognostic model).

Built from the study's ``summary/study.json`` (a :class:`coordinator.study.outcome_survival.SurvivalOutcome` as
JSON) and the figures of the parent run and the held-out site runs; rendered by :mod:`coordinator.report` like a
binary study's report.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from coordinator.report import Section, _f, _read_png

WITHHELD = "withheld"


def _est(entry: dict | None, estimate: str, se: str) -> str:
    if not entry or entry.get(estimate) is None:
        return WITHHELD
    return f"{entry[estimate]:.3f} (SE {entry[se]:.3f})"


def _pooled(re_: dict | None) -> str:
    if not re_:
        return "–"
    text = f"{re_['estimate']:.3f} (95% CI {re_['ci_low']:.3f}–{re_['ci_high']:.3f}"
    if re_.get("pi_low") is not None:
        text += f"; 95% PI {re_['pi_low']:.3f}–{re_['pi_high']:.3f}"
    return text + f"; {re_['k']} sites)"


def _count(value: int) -> str:
    return "< k" if value == -1 else str(value)


def _figures(section: Section, root: Path, names: list[tuple[str, str]]) -> None:
    for caption, rel in names:
        png = _read_png(root, rel)
        if png:
            section.figures.append((caption, png))


def build_survival_sections(study: dict, run: Any, parent_plots: Path, fold_plots: dict[str, Path]) -> list[Section]:
    """The report's content from the survival study summary and downloaded figures."""
    protocol = study.get("protocol", {})
    label = protocol.get("label", {})
    unit, horizons, k = study.get("time_unit", ""), study.get("horizons", []), study.get("k")
    variant = study.get("preferred_variant", "raw")
    result = study["results"][variant]
    heldout, pooled = result["heldout"], result["pooled"]
    secs: list[Section] = []

    s = Section("1. Design, outcome and source of data (TRIPOD+AI 5, 6, 8; TRIPOD-Cluster)")
    s.paragraphs += [
        f"Study **{study.get('study_name')}**, protocol id `{study.get('protocol_id')}` (MLflow run `{run.info.run_id}`).",
        f"Outcome: time to event (`{label.get('time_column')}`, event indicator `{label.get('event_column')}`, in "
        f"{unit}); horizons t* = {', '.join(f'{h:g}' for h in horizons)} {unit}.",
        "Model: Cox proportional hazards stratified by site (one baseline hazard per hospital), fitted by federated "
        f"Newton on the sites' exact gradient and information sums (ties: {label.get('cox_ties')}, ridge "
        f"{label.get('cox_ridge')}); comparator: the same model on `{study.get('volume_feature')}` alone. Design: "
        "leave-one-site-out internal–external validation; each fold's model and its carried baseline survival "
        "(patient-weighted mean of the training hospitals' Breslow curves) are evaluated at the held-out hospital.",
        f"No patient-level data left any site: every number below comes from site aggregates in which no cell, "
        f"step or group holds fewer than k = {k} patients or events.",
    ]
    secs.append(s)

    s = Section("2. Participants per site (TRIPOD+AI 20a–c)")
    rows = [[site, _count(c["n"]), _count(c["n_pos"]), _count(c["n_neg"]),
             "dropped: " + study.get("dropped", {}).get(site, "") if site in study.get("dropped", {}) else "completed"]
            for site, c in sorted(study.get("counts", {}).items())]
    s.tables.append((["site", "patients", "events", "censored", "status"], rows))
    secs.append(s)

    s = Section("3. The model (TRIPOD+AI 22)")
    final = result.get("final_model")
    if final:
        s.paragraphs.append(f"Final model ({variant} features, all sites), coefficients on the features' own scale; "
                            "linear predictor (x − centre)·β, risk by t* = 1 − exp(−H(t*)·exp(linear predictor)).")
        s.tables.append((["feature", "β", "centre"], [[f, _f(b, 4), _f(c, 4)] for f, b, c in
                                                     zip(final["features"], final["beta"], final["centre"])]))
        times, hazard = final["baseline"]["times"], final["baseline"]["cumulative_hazard"]
        rows = []
        for h in horizons:
            value = next((hz for t, hz in zip(times, hazard) if abs(t - h) < 1e-9), None)
            rows.append([f"{h:g} {unit}", _f(value, 4), _f(math.exp(-value) if value is not None else None, 4)])
        s.tables.append((["horizon", "carried cumulative baseline hazard H(t*)", "baseline survival at the centre"], rows))
    secs.append(s)

    s = Section("4. Discrimination at each held-out site (TRIPOD+AI 23a)")
    rows = [[site, str(r["n"]), str(r["n_events"]), _est(r["harrell"], "c", "se"), _est(r["uno"], "c", "se"),
             _est(r["delta_c_vs_volume"], "delta", "se")] for site, r in sorted(heldout.items())]
    rows.append(["random effects (REML, HKSJ)", "", "", _pooled(pooled.get("harrell_c")), _pooled(pooled.get("uno_c")),
                 _pooled(pooled.get("delta_c_vs_volume"))])
    s.tables.append((["held-out site", "patients", "events", "Harrell's C", "Uno's C", "ΔC vs volume only"], rows))
    _figures(s, parent_plots, [("Harrell's C per held-out site", "forest_harrell_c.png"),
                               ("Uno's C per held-out site", "forest_uno_c.png")])
    secs.append(s)

    s = Section("5. Calibration and overall accuracy at each horizon (TRIPOD+AI 12e, 23a)")
    header = ["held-out site", "calibration slope"]
    for h in horizons:
        header += [f"AUC({h:g})", f"O/E at {h:g}", f"Brier({h:g})"]
    rows = []
    for site, r in sorted(heldout.items()):
        row = [site, _est(r["calibration_slope"], "slope", "se")]
        for h in horizons:
            entry = r["horizons"].get(str(float(h)), r["horizons"].get(float(h), {})) or {}
            if entry.get("suppressed"):
                row += [WITHHELD + " (< k followed or events)"] * 3
            else:
                row += [_est(entry.get("auc"), "auc", "se"), _est(entry.get("oe"), "oe", "log_oe_se"),
                        _est(entry.get("brier"), "brier", "se")]
        rows.append(row)
    row = ["random effects", _pooled(pooled.get("calibration_slope"))]
    for h in horizons:
        row += [_pooled(pooled.get(f"{name}@{h:g}")) for name in ("auc", "oe", "brier")]
    rows.append(row)
    s.tables.append((header, rows))
    s.paragraphs.append("O/E: observed (1 − Kaplan–Meier at t*) over mean predicted risk, SE of ln O/E (Greenwood); "
                        "Brier: IPCW with the held-out site's own censoring distribution; calibration slope: Cox "
                        "regression of the outcome on the linear predictor at the site (1 = ideal).")
    _figures(s, parent_plots, [(f"Calibration at {h:g} {unit}", f"calibration_at_{h:g}.png") for h in horizons])
    secs.append(s)

    s = Section(f"6. Net benefit at {max(horizons):g} {unit} (TRIPOD+AI 23b)" if horizons else "6. Net benefit")
    last = float(max(horizons)) if horizons else None
    rows, thresholds = [], []
    for site, r in sorted(heldout.items()):
        entry = r["horizons"].get(str(last), r["horizons"].get(last, {})) or {}
        nb = entry.get("net_benefit")
        if not nb:
            continue
        thresholds = nb["thresholds"]
        rows.append([site] + [WITHHELD if m is None else f"{m:.3f} (all {a:.3f})" for m, a in zip(nb["model"], nb["treat_all"])])
    if rows:
        s.tables.append((["held-out site"] + [f"{t:g}" for t in thresholds], rows))
    secs.append(s)

    s = Section("7. Survival by predicted-risk group at each held-out site (TRIPOD+AI 23a)")
    s.paragraphs.append("Kaplan–Meier curves by tertile of the predicted risk at the last horizon, released only at "
                        "grid points whose steps hold 0 or at least k events and while at least k patients are followed.")
    for site, folder in fold_plots.items():
        _figures(s, folder, [(f"{site}: survival by predicted risk", "km_by_risk_group.png")])
    secs.append(s)

    s = Section("8. Notes")
    s.paragraphs += list(study.get("notes", [])) or ["none"]
    secs.append(s)
    return secs
