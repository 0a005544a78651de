"""External-validation report from an MLflow parent run: self-contained HTML + Markdown summary.

``write_report(run_id, out_dir, tracking_uri)`` reads the parent run logged by :func:`coordinator.tracking.log_study`
(params, tags, ``summary/study.json``, figures of the parent and its fold runs) and writes ``report.html``
(figures inline as base64 PNG) and ``report.md``, following the TRIPOD+AI items for external validation, then
attaches both to the parent run under ``report/``. Command line: ``coordinator report RUN_ID [--mlflow-uri URI]``.
"""

from __future__ import annotations

import base64
import html
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coordinator.study.outcome_survival import KIND as SURVIVAL_KIND
from coordinator.validation.auc import BINNING_BOUND_LIMIT
from coordinator.validation.conformal import censored_direction
from protocols.files import write_atomic

REPORT_ARTIFACT_DIR = "report"

HELD_OUT_HARMONISATION = (
    "**How a held-out site is harmonised.** The held-out site's ComBat batch effect (location and scale per feature) "
    "is estimated from its own cases, with the training sites' model held fixed: the harmonisation is transductive. "
    "A new hospital therefore needs a batch of cases before the model can be applied to them, and because the "
    "adjustment centres the site's features, part of a genuine case-mix difference between hospitals is removed "
    "with the scanner effect. The unharmonised variant (same design, raw features) is reported beside it so the two "
    "can be compared site by site.")


ROC_FIGURE = (
    "**ROC figure.** Each held-out site's curve is computed at the site as a k-anonymous step curve: its patients, "
    "in decreasing order of predicted probability, are grouped into steps of 0 or at least k patients of each "
    "class (ties in one step; the grouping with the fewest benign–malignant pairs inside a step), and only the "
    "steps' class counts leave. Every released point lies on the exact ROC curve. Inside a step holding both "
    "classes the curve is drawn through one knot placed so that the area under the drawn curve equals the site's "
    "exact AUC (the same share of every such step's box); the legend gives that AUC and the within-step shape "
    "bound ½·ΣΔFP·ΔTP/(n⁺n⁻), the most another curve through the same points could differ in area. The shape "
    "between released points is approximate; the number is exact.")
RELIABILITY_FIGURE = (
    "**Reliability figure.** For each held-out site the points are groups made at the site: patients sorted by "
    "predicted probability, cut into about equal-sized groups (protocol reliability_bins) without looking at the "
    "outcomes, adjacent groups merged until each holds 0 or at least k patients of each class; each point is a "
    "group's mean prediction and observed proportion (Wilson 95% CI). The groups cover every patient, so the "
    "count-weighted mean of observed − predicted equals mean(y) − mean(p), whose sign is that of "
    "calibration-in-the-large. The dashed line is the site's logistic calibration curve σ(a + b·logit p) with the "
    "intercept a and slope b of the table above. ECE uses fixed equal-width bins (merged likewise); the pooled "
    "points are those bins summed over sites.")


@dataclass
class Section:
    """One report section: paragraphs, tables (header, rows) and figures (caption, PNG bytes)."""

    title: str
    paragraphs: list[str] = field(default_factory=list)
    tables: list[tuple[list[str], list[list[str]]]] = field(default_factory=list)
    figures: list[tuple[str, bytes]] = field(default_factory=list)


def _f(x: Any, digits: int = 3) -> str:
    if x is None:
        return "–"
    if isinstance(x, bool):
        return str(x)
    if isinstance(x, int):
        return str(x)
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def _ci(d: dict | None, value: str, lo: str = "ci_low", hi: str = "ci_high", digits: int = 3) -> str:
    if not d or d.get(value) is None:
        return "–"
    if d.get(lo) is None or d.get(hi) is None:
        return _f(d[value], digits)
    return f"{_f(d[value], digits)} ({_f(d[lo], digits)}–{_f(d[hi], digits)})"


def _prop(d: dict | None) -> str:
    """x (lo–hi); a coverage censored at the site reads "≥ x (lo–hi)" ("<k missed") or "≤ x (lo–hi)"."""
    text = _ci(d, "value")
    direction = censored_direction(str(d.get("method", ""))) if d and d.get("value") is not None else 0
    return {1: "≥ ", -1: "≤ "}.get(direction, "") + text


def _read_png(root: Path, rel: str) -> bytes | None:
    p = root / rel
    return p.read_bytes() if p.is_file() else None


def build_sections(
    study: dict, run: Any, parent_plots: Path, fold_plots: dict[str, Path], others: dict[str, dict] | None = None
) -> list[Section]:
    """The report's content from the study summary (``summary/study.json``), the other model variants' summaries
    (``summary/study_<variant>.json``, e.g. the unharmonised models) and downloaded figures."""
    params, tags = run.data.params, run.data.tags
    folds = study.get("folds", [])
    alpha = study.get("alpha")
    k = study.get("k_min_cell")
    sites = study.get("sites", [])
    meta = study.get("meta", {})
    secs: list[Section] = []

    s = Section("1. Design and source of data (TRIPOD+AI 5, 6; TRIPOD-Cluster)")
    s.paragraphs += [
        f"Study **{study.get('study_name')}**, protocol id `{study.get('protocol_id')}` (MLflow run `{run.info.run_id}`).",
        "Design: leave-one-site-out internal–external validation. In each fold the model is trained, recalibrated and "
        "conformalised on the other sites and evaluated at the held-out hospital, which it never saw.",
        f"No patient-level data left any site: every number below was computed from site aggregates in which no "
        f"bin, count or cell holds fewer than k = {k} patients (smaller cells were merged or suppressed).",
    ]
    secs.append(s)

    s = Section("2. Participants per site (TRIPOD+AI 20a–c)")
    rows = [[x["name"], x.get("role", ""), _f(x["n"]), _f(x["n_events"]),
             _f(x["n_events"] / x["n"] if x["n"] else None)] for x in sites]
    s.tables.append((["site", "role", "patients", "events", "prevalence"], rows))
    secs.append(s)

    s = Section("3. Discrimination at each held-out site (TRIPOD+AI 12e, 23a)")
    thr = None
    rows = []
    for f in folds:
        b = f["before"]
        thr = b.get("threshold", thr)
        auc = b.get("auc") or {}
        rows.append([f["heldout_site"], _ci(auc, "auc"), _f(auc.get("binning_bound"), 4), _prop(b.get("sensitivity")),
                     _prop(b.get("specificity")), _prop(b.get("ppv")), _prop(b.get("npv"))])
    re_auc = meta.get("auc")
    if re_auc:
        rows.append([f"random effects over {re_auc.get('k')} held-out sites (headline)", _ci(re_auc, "estimate"),
                     "–", "", "", "", ""])
    pooled = study.get("pooled")
    if pooled:
        auc = pooled.get("auc") or {}
        bound = auc.get("binning_bound")
        auc_text = (f"not reported (binning bound ±{bound:.3f} > {BINNING_BOUND_LIMIT})"
                    if bound is not None and bound > BINNING_BOUND_LIMIT else _ci(auc, "auc"))
        rows.append(["pooled held-out patients", auc_text, _f(bound, 4),
                     _prop(pooled.get("sensitivity")), _prop(pooled.get("specificity")), _prop(pooled.get("ppv")),
                     _prop(pooled.get("npv"))])
    s.tables.append((["site", "AUC (95% CI)", "binning bound", f"sensitivity @ {_f(thr, 2)}", "specificity",
                      "PPV", "NPV"], rows))
    s.paragraphs.append(
        "Each held-out site's AUC is computed at the site on its raw scores (DeLong SE, logit-scale 95% CI; binning "
        "bound 0). The headline summary is their random-effects meta-analysis (REML τ², Hartung–Knapp–Sidik–Jonkman "
        "95% CI; section 6 gives τ², I² and the prediction interval for a new hospital). The pooled-patients AUC is "
        "computed from k-merged score histograms; its binning bound is the largest possible difference from the AUC "
        f"on unbinned scores, and above {BINNING_BOUND_LIMIT} it is not reported. Sensitivity, specificity, PPV and NPV "
        "are exact counts at the protocol's pre-specified decision threshold (Wilson 95% CIs); a site shows them "
        "whenever each cell of its confusion table at that threshold is 0 or at least k.")
    s.paragraphs.append(ROC_FIGURE)
    for name in ("forest_auc.png", "roc_heldout_sites.png"):
        png = _read_png(parent_plots, name)
        if png:
            s.figures.append((name, png))
    secs.append(s)

    s = Section("4. Calibration (TRIPOD+AI 12e; METRICS 22)")
    rows = []
    for f in folds:
        b = f["before"]
        cal = b.get("calibration") or {}
        rows.append([f["heldout_site"], _ci(b.get("oe_ratio"), "value"), _ci(cal.get("citl"), "value"),
                     _ci(cal.get("slope"), "value"), _f(b.get("brier")), _f(b.get("scaled_brier")), _f(b.get("ece"))])
    summary = ["random effects (headline)", _ci(meta.get("oe_ratio"), "estimate"), _ci(meta.get("citl"), "estimate"),
               _ci(meta.get("cal_slope"), "estimate"), "", "", ""]
    if any(meta.get(key) for key in ("oe_ratio", "citl", "cal_slope")):
        rows.append(summary)
    if pooled:
        rows.append(["pooled held-out patients", _ci(pooled.get("oe_ratio"), "value"), "–", "–",
                     _f(pooled.get("brier")), _f(pooled.get("scaled_brier")), _f(pooled.get("ece"))])
    s.tables.append((["site", "O/E (95% CI)", "calibration-in-the-large (95% CI)", "calibration slope (95% CI)",
                      "Brier", "scaled Brier", "ECE"], rows))
    s.paragraphs.append(
        "Calibration-in-the-large is the intercept of a logistic model of the outcome with logit(p) as an offset "
        "(slope fixed at 1): 0 when the mean predicted risk is right, negative when risks are too high. The "
        "calibration slope is the slope of logit(p) in a logistic model with its own intercept: 1 is ideal, below 1 "
        "predictions too extreme. Both are fitted at each held-out site on its own patients (Wald 95% CIs) and "
        "meta-analysed; O/E is observed over expected events.")
    s.paragraphs.append(RELIABILITY_FIGURE)
    for name in ("reliability.png", "forest_calibration_slope.png"):
        png = _read_png(parent_plots, name)
        if png:
            s.figures.append((name, png))
    secs.append(s)

    s = Section("5. Clinical utility: decision curve (TRIPOD+AI 12e)")
    s.paragraphs.append("Net benefit of the model against treating everyone and no one, over the protocol's threshold "
                        "range, on the held-out patients.")
    png = _read_png(parent_plots, "decision_curve.png")
    if png:
        s.figures.append(("decision_curve.png", png))
    secs.append(s)

    s = Section("6. Heterogeneity across held-out sites (TRIPOD+AI 12d, 23b)")
    labels = {"auc": "AUC", "cal_slope": "calibration slope", "citl": "calibration-in-the-large", "oe_ratio": "O/E",
              "auc_difference": "ΔAUC vs volume only", "baseline_auc": "volume-only AUC",
              "recal_auc": "AUC after recalibration", "recal_cal_slope": "slope after recalibration",
              "recal_citl": "calibration-in-the-large after recalibration", "coverage": "conformal coverage"}
    rows = []
    for key, r in meta.items():
        tau2 = _f(r.get("tau2"), 4)
        if r.get("tau2_ci_low") is not None:
            tau2 += f" ({_f(r['tau2_ci_low'], 4)}–{_f(r['tau2_ci_high'], 4)})"
        i2 = "–" if r.get("i2") is None else f"{100 * r['i2']:.0f}%"
        if r.get("i2_ci_low") is not None:
            i2 += f" ({100 * r['i2_ci_low']:.0f}–{100 * r['i2_ci_high']:.0f}%)"
        note = r.get("note", "")
        if r.get("adjusted"):
            note = "; ".join(x for x in (note, f"continuity-corrected: {', '.join(r['adjusted'])}") if x)
        if key == "coverage":  # coverage never without how informative the sets were
            note = "; ".join(x for x in (note, _set_size_summary(folds)) if x)
        rows.append([labels.get(key, key), str(r.get("k")), _ci(r, "estimate"), tau2, i2,
                     "–" if r.get("pi_low") is None else f"{_f(r['pi_low'])}–{_f(r['pi_high'])}",
                     r.get("scale", ""), note])
    s.tables.append((["quantity", "sites", "random-effects estimate (95% CI)", "τ² (95% CI)", "I² (95% CI)",
                      "95% prediction interval", "pooled on", "note"], rows))
    s.paragraphs.append(
        "Random effects with τ² by restricted maximum likelihood; the 95% CI of the pooled estimate uses the "
        "Hartung–Knapp–Sidik–Jonkman standard error with a t distribution on K−1 degrees of freedom (valid with few "
        "sites, where the normal-based DerSimonian–Laird interval is too narrow). τ² has a Q-profile 95% CI and I² "
        "the interval it implies. The prediction interval (t with K−1 df on √(τ² + SE²)) is the range expected at a "
        "new hospital; it needs at least 3 held-out sites. A site whose AUC is exactly 0 or 1 (or coverage 0 or 1) "
        "is kept with a continuity correction and named in the note; a coverage released only as a bound is "
        "reported apart (section 8), never pooled as a point.")
    secs.append(s)

    s = Section("7. Model updating: recalibration before/after (TRIPOD+AI 12f, 24)")
    rows = []
    for f in folds:
        b, a, rec = f["before"], f.get("after") or {}, f.get("recalibration") or {}
        cb, ca = b.get("calibration") or {}, a.get("calibration") or {}
        rows.append([f["heldout_site"], rec.get("method", "none"),
                     ", ".join(f"{kk}={_f(v)}" for kk, v in (rec.get("params") or {}).items()),
                     f"{_f((cb.get('slope') or {}).get('value'))} → {_f((ca.get('slope') or {}).get('value'))}",
                     f"{_f(b.get('ece'))} → {_f(a.get('ece'))}", f"{_f(b.get('brier'))} → {_f(a.get('brier'))}"])
    s.tables.append((["held-out site", "method", "fitted on training sites", "slope before → after", "ECE", "Brier"], rows))
    secs.append(s)

    s = Section("8. Calibrated confidence: conformal prediction sets (CLEAR 40; METRICS 21)")
    s.paragraphs.append(
        f"Class-conditional split conformal prediction, score 1 − p̂(true class), federated quantile (FCP, "
        f"k* = ⌈(1−α)(N+K)⌉ per class) on the training sites' calibration parts, α = {alpha}. Coverage is measured at "
        f"each held-out site with a Clopper–Pearson 95% CI, beside the mean set size and the share of two-class sets.")
    if params.get("protocol.validation.conformal_method") == "dp_quantile":
        s.paragraphs.append(
            "The training sites released their calibration scores as ε-differentially private histograms on a fixed "
            f"grid of {params.get('protocol.validation.conformal_dp_bins')} bins (ε = "
            f"{params.get('protocol.validation.conformal_epsilon')} per site and model); the thresholds use the rank "
            f"at α − δ (δ = {params.get('protocol.validation.conformal_delta')}) with a margin for the noise, so they "
            "are at least the exact ones except with probability δ, and coverage stays ≥ 1 − α.")
    else:
        s.paragraphs.append("The training sites released their calibration scores as small-cell-merged histograms; the "
                            "thresholds are conservative (each at least the exact pooled order statistic).")
    rows = []
    for f in folds:
        c = f.get("conformal") or {}
        rows.append([f["heldout_site"], _prop(c.get("coverage")), _prop(c.get("coverage_neg")), _prop(c.get("coverage_pos")),
                     _f(c.get("mean_set_size")), _f(c.get("rate_empty")), _f(c.get("rate_both")), c.get("note", "")])
    s.tables.append((["held-out site", "coverage (CP 95% CI)", "coverage, negatives", "coverage, positives",
                      "mean set size", "empty sets", "two-class sets", "note"], rows))
    png = _read_png(parent_plots, "forest_conformal_coverage.png")
    if png:
        s.figures.append(("forest_conformal_coverage.png", png))
    secs.append(s)

    s = Section("9. Is it just volume? (METRICS 24–25; comparator)")
    rows = []
    for f in folds:
        base = (f.get("baseline") or {}).get("auc") or {}
        d = f.get("auc_difference") or {}
        rows.append([f["heldout_site"], _ci((f["before"].get("auc") or {}), "auc"), _ci(base, "auc"),
                     _ci(d, "difference"), "<0.001" if (d.get("p_value") or 1) < 0.001 else _f(d.get("p_value"))])
    s.tables.append((["held-out site", "model AUC", "volume-only AUC", "ΔAUC (95% CI)", "p"], rows))
    methods = sorted({(f.get("auc_difference") or {}).get("method") for f in folds} - {None})
    if methods:
        s.paragraphs.append(
            f"ΔAUC variance: {'; '.join(methods)}. The paired DeLong variance uses both models' scores of the same "
            "patients at the held-out site (their covariance included); an unpaired variance appears only where a "
            "site did not release the paired one, and is conservative when the two models' errors correlate.")
    corr = study.get("feature_volume") or []
    if corr:
        s.tables.append((["model feature", "Pearson r with volume (95% CI)", "n"],
                         [[c["feature"], _ci(c, "r"), _f(c["n"])] for c in corr]))
        strong = [c["feature"] for c in corr if abs(c["r"]) >= 0.7]
        if strong:
            s.paragraphs.append(f"Features strongly correlated with volume (|r| ≥ 0.7): {', '.join(strong)}.")
    png = _read_png(parent_plots, "forest_delta_auc_vs_volume.png")
    if png:
        s.figures.append(("forest_delta_auc_vs_volume.png", png))
    secs.append(s)

    secs.append(_variants_section(study, run.data.tags.get("variant", "harmonised"), others or {}))

    harm = sorted((parent_plots / "harmonisation").glob("*.png")) if (parent_plots / "harmonisation").is_dir() else []
    if harm:
        s = Section("10. Harmonisation diagnostics per site")
        s.paragraphs.append("Site offsets of feature means and SD ratios before and after harmonisation (0 and 1 = no "
                            "site effect).")
        s.figures += [(f"harmonisation/{p.name}", p.read_bytes()) for p in harm]
        secs.append(s)

    s = Section("Per-fold figures")
    for site, root in fold_plots.items():
        for name in ("roc.png", "reliability.png"):
            png = _read_png(root, name)
            if png:
                s.figures.append((f"{site}: {name}", png))
    if s.figures:
        secs.append(s)

    s = Section("Limitations and uncertainty (TRIPOD+AI 25, 27)")
    s.paragraphs += [
        "**The conformal guarantee does not cover a new site.** Federated conformal coverage ≥ 1−α holds on average for "
        "patients of the sites that contributed calibration data, assuming patients are exchangeable within a site. It "
        "gives no guarantee at a hospital outside the study; the held-out coverages above are the evidence for new "
        "sites, and they can fall below 1−α when case mix or scanners differ.",
        "Per-site AUCs are exact (computed at the site). A held-out site's ROC curve is exact at its released "
        "points and approximate between them (its area is the exact AUC); pooled values built from histograms are "
        "coarsened by small-cell merging; each carries its binning bound, and a pooled AUC whose bound exceeds "
        f"{BINNING_BOUND_LIMIT} is not reported.",
        "ΔAUC against the volume-only model: " + "; ".join(sorted({(f.get("auc_difference") or {}).get("method", "not computed")
                                                                     for f in folds})) + ".",
        "Random-effects summaries with few sites are imprecise: τ² is poorly estimated with fewer than ~10 sites (see "
        "its CI), and the prediction interval needs at least 3.",
        HELD_OUT_HARMONISATION,
    ]
    grid = ((study.get("protocol") or {}).get("validation") or {}).get("decision_curve_thresholds")
    dc = (pooled or {}).get("decision_curve") or {}
    if grid and dc and len(dc.get("thresholds", [])) < len(grid):
        s.paragraphs.append(
            f"The pooled decision curve is available at thresholds {dc['thresholds']} only: the other pre-specified "
            "thresholds were dropped at one or more sites by small-cell control (per-site curves keep their own).")
    notes = list(study.get("notes") or [])
    for f in folds:
        notes += [f"{f['heldout_site']}: {n}" for n in (f["before"].get("notes") or [])]
    if pooled:
        notes += [f"pooled: {n}" for n in (pooled.get("notes") or [])]
    if notes:
        s.paragraphs.append("Study notes: " + "; ".join(notes))
    secs.append(s)

    s = Section("Reproducibility (TRIPOD+AI 18e–f; METRICS 28–30)")
    versions = sorted((key[len("version."):], v) for key, v in params.items() if key.startswith("version."))
    s.tables.append((["package", "version"], [[a, b] for a, b in versions]))
    s.paragraphs.append(f"Protocol id `{tags.get('protocol_id', study.get('protocol_id'))}`; final model: "
                        f"{tags.get('registered_model', tags.get('model_uri', 'not logged'))}.")
    secs.append(s)
    return secs


def _set_size_summary(folds: list[dict]) -> str:
    """Mean over held-out sites of the mean prediction-set size and of the two-class-set rate (section 8's
    columns), the text set beside every pooled coverage."""
    sizes = [c["mean_set_size"] for f in folds if (c := f.get("conformal") or {}).get("mean_set_size") is not None]
    both = [c["rate_both"] for f in folds if (c := f.get("conformal") or {}).get("rate_both") is not None]
    if not sizes and not both:
        return "set sizes withheld at every site"
    parts = []
    if sizes:
        parts.append(f"mean set size {sum(sizes) / len(sizes):.2f}")
    if both:
        parts.append(f"two-class sets {sum(both) / len(both):.2f}")
    return ", ".join(parts) + f" (mean over {max(len(sizes), len(both))} held-out sites)"


def _variants_section(study: dict, preferred: str, others: dict[str, dict]) -> Section:
    """How the held-out site is harmonised, and each model variant's AUC / calibration at each held-out site."""
    s = Section("Harmonisation of the held-out site, and the unharmonised models beside it")
    s.paragraphs.append(HELD_OUT_HARMONISATION)
    variants = {preferred: study, **others}
    header = ["held-out site"]
    for name in variants:
        header += [f"AUC, {name}", f"calibration slope, {name}"]
    by_site: dict[str, list[str]] = {}
    for i, (name, summary) in enumerate(variants.items()):
        for f in summary.get("folds", []):
            row = by_site.setdefault(f["heldout_site"], ["–"] * (2 * len(variants)))
            b = f["before"]
            row[2 * i] = _ci(b.get("auc") or {}, "auc")
            row[2 * i + 1] = _ci((b.get("calibration") or {}).get("slope"), "value")
    rows = [[site, *cells] for site, cells in sorted(by_site.items())]
    summary_row = ["random effects"]
    for summary in variants.values():
        m = summary.get("meta", {})
        summary_row += [_ci(m.get("auc"), "estimate"), _ci(m.get("cal_slope"), "estimate")]
    rows.append(summary_row)
    s.tables.append((header, rows))
    if not others:
        s.paragraphs.append("This run holds one model variant only; the unharmonised comparison was not logged.")
    return s


def render_markdown(title: str, sections: list[Section]) -> str:
    """Markdown summary (figures referenced by artifact name, not embedded)."""
    out = [f"# {title}", ""]
    for s in sections:
        out += [f"## {s.title}", ""]
        for p in s.paragraphs:
            out += [p, ""]
        for header, rows in s.tables:
            out.append("| " + " | ".join(header) + " |")
            out.append("|" + "---|" * len(header))
            out += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows]
            out.append("")
        for caption, _ in s.figures:
            out += [f"*Figure: `{caption}` (see the HTML report or the run's artifacts).*", ""]
    return "\n".join(out)


def _md_inline(text: str) -> str:
    """Escape, then render **bold** and `code` (the only inline markup the report uses)."""
    import re

    t = html.escape(text)
    t = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", t)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", t)


def render_html(title: str, sections: list[Section]) -> str:
    """Self-contained HTML: inline CSS, figures as base64 PNG data URIs."""
    css = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}"
           "table{border-collapse:collapse;margin:0.8em 0;font-size:0.9em}td,th{border:1px solid #bbb;padding:3px 7px}"
           "th{background:#eee}img{max-width:100%;border:1px solid #ddd;margin:0.5em 0}figure{margin:0.5em 0}"
           "figcaption{font-size:0.8em;color:#555}")
    out = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
           f"<style>{css}</style></head><body><h1>{html.escape(title)}</h1>"]
    for s in sections:
        out.append(f"<h2>{html.escape(s.title)}</h2>")
        out += [f"<p>{_md_inline(p)}</p>" for p in s.paragraphs]
        for header, rows in s.tables:
            out.append("<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>")
            out += ["<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows]
            out.append("</table>")
        for caption, png in s.figures:
            data = base64.b64encode(png).decode("ascii")
            out.append(f"<figure><img alt='{html.escape(caption)}' src='data:image/png;base64,{data}'>"
                       f"<figcaption>{html.escape(caption)}</figcaption></figure>")
    out.append("</body></html>")
    return "\n".join(out)


def write_report(run_id: str, out_dir: str | os.PathLike[str], tracking_uri: str) -> tuple[Path, Path]:
    """Write ``report.html`` and ``report.md`` for the study's parent run and attach both to it."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from coordinator.tracking import SUMMARY_PATH

    client = MlflowClient(tracking_uri=tracking_uri)
    try:
        run = client.get_run(run_id)
    except MlflowException as exc:
        raise ValueError(f"run {run_id!r} not found at {tracking_uri}: {exc.message}") from exc
    if run.data.tags.get("mlflow.parentRunId"):
        raise ValueError(f"run {run_id} is a child run (fold or final model); pass the study's parent run id "
                         f"{run.data.tags['mlflow.parentRunId']}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        try:
            summary = Path(client.download_artifacts(run_id, SUMMARY_PATH, str(root)))
        except (MlflowException, OSError) as exc:
            raise ValueError(f"run {run_id} has no {SUMMARY_PATH}: it was not logged by coordinator.tracking.log_study") from exc
        study = json.loads(summary.read_text())
        try:
            parent_plots = Path(client.download_artifacts(run_id, "plots", str(root / "parent")))
        except (MlflowException, OSError):
            parent_plots = root / "parent" / "plots"
        children = client.search_runs([run.info.experiment_id], f"tags.mlflow.parentRunId = '{run_id}'")
        fold_plots: dict[str, Path] = {}
        for child in children:
            site = child.data.tags.get("heldout_site")
            if site:
                try:
                    fold_plots[site] = Path(client.download_artifacts(child.info.run_id, "plots", str(root / "folds" / child.info.run_id)))
                except (MlflowException, OSError):
                    pass
        others: dict[str, dict] = {}
        preferred = run.data.tags.get("variant", "")
        for variant in [v for v in run.data.tags.get("variants", "").split(",") if v and v != preferred]:
            try:
                path = Path(client.download_artifacts(run_id, f"summary/study_{variant}.json", str(root / "variants")))
                others[variant] = json.loads(path.read_text())
            except (MlflowException, OSError, ValueError):
                pass
        title = f"External validation report: {study.get('study_name')}"
        if study.get("kind") == SURVIVAL_KIND:
            from coordinator.survival_report import build_survival_sections

            sections = build_survival_sections(study, run, parent_plots, dict(sorted(fold_plots.items())))
        else:
            sections = build_sections(study, run, parent_plots, dict(sorted(fold_plots.items())), others)
        html_path, md_path = out / "report.html", out / "report.md"
        write_atomic(html_path, render_html(title, sections))
        write_atomic(md_path, render_markdown(title, sections))
    client.log_artifact(run_id, str(html_path), REPORT_ARTIFACT_DIR)
    client.log_artifact(run_id, str(md_path), REPORT_ARTIFACT_DIR)
    return html_path, md_path
