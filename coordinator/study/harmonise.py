"""Federated ComBat for every fold at once, coordinator side: one message round with covariates, none without.

Per fold f (training sites T_f): plan_f = ``build_plan`` over the handshake schemas of T_f; round 1 sums
XᵀX, XᵀY of T_f → B̂_f, α̂_f (``combine_round1``), and σ̂²_f follows from those sums and the handshake's
per-batch moments with no round of its own (``combine_scale``): round 1 covers all of a site's cases, the
cases its handshake moments describe (same cohort; ``combine_scale`` checks the counts), and per site
SSR = M2 − 2 Dᵀ Xᵀ(Y − m) + Dᵀ XᵀX D with D = B̂ − u mᵀ, m the site's mean and X u = 1
(:func:`harmonisation.combine.residual_sum_of_squares`). In reference mode σ̂² is fitted on the reference
batch's rows only: the site holding them adds their XᵀX, XᵀY to round 1. The fits (B̂_f, α̂_f) and σ̂²_f go out
with the first training message; the held-out site of f then applies the frozen (α̂_f, β̂_f, σ̂²_f) without
refitting. The frozen estimates of each fold are kept as :class:`harmonisation.ComBatModel`.

Without covariates (the design holds batch columns only) round 1 is not needed either: the handshake's
per-batch moments are the sums it would send. XᵀX = Σ_b n_b·x_b x_bᵀ and XᵀY = Σ_b n_b·x_b ȳ_bᵀ (x_b the
design row of batch b; :func:`fit_from_handshake`), and least squares on batch indicators fits every batch its
own mean, so the SSR of batch b is (n_b − 1)·s²_b (:func:`scale_from_handshake`). Each site's plans then travel
with its first training message too, where the site gate checks them as it would in round 1
(``HarmonisationResult.plans_with_training``).

Standardisation without an extra round (:func:`standardisation`): the raw variant uses the exact pooled mean
and SD of the fold's training sites from the handshake's per-batch moments; the harmonised variant uses the
ComBat grand mean α̂_f and pooled SD σ̂_f (the location and scale ComBat maps every batch to), and the raw
pooled moments for features ComBat excluded (constant within a batch).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np

from harmonisation.combine import combine_round1, combine_scale, pooled_variance
from harmonisation.errors import HarmonisationError
from fedmath.moments import pool_mean_variance
from harmonisation.model import ComBatModel
from harmonisation.schema import ComBatOptions, build_plan
from protocols.payload import Payload, nest, unnest
from protocols.schema import Protocol
from protocols.contract import COMBAT1, FIT, HELDOUT_FOLDS, PLAN, R1, SCALE, STD, TRAIN_FOLDS, fold_sizes, key
from coordinator.study.design import StudyDesign
from coordinator.study.handshake import HandshakeResult
from coordinator.study.transport import Session


@dataclass
class HarmonisationResult:
    plans: dict[str, dict] = field(default_factory=dict)
    fits: dict[str, dict] = field(default_factory=dict)
    scales: dict[str, dict] = field(default_factory=dict)
    models: dict[str, ComBatModel] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    plans_with_training: bool = False  # no ComBat round: the plans go out with the first training message


def options(protocol: Protocol) -> ComBatOptions:
    h = protocol.harmonisation
    return ComBatOptions(eb=h.eb, parametric=h.parametric, mean_only=h.mean_only, ref_batch=h.reference_batch)


def batch_column(protocol: Protocol) -> str | None:
    return protocol.batch.column if protocol.batch.by == "column" else None


def _plans(protocol: Protocol, design: StudyDesign, hs: HandshakeResult, notes: list[str]) -> dict[str, dict]:
    plans = {}
    cov = protocol.covariates
    reference = protocol.harmonisation.reference_batch
    for fold in design.folds:
        schemas = [hs.schemas[s] for s in design.training_sites(fold)]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                plan = build_plan(schemas, [c.name for c in cov.categorical], [c.name for c in cov.continuous],
                                  options(protocol), batch_column(protocol),
                                  protocol.harmonisation.min_batch_size, protocol.harmonisation.warn_batch_size)
            except HarmonisationError as exc:
                hint = ""
                if reference is not None and f"reference batch {reference!r} not found" in str(exc):
                    hint = (f"; leave-one-site-out holds out every site once, and the fold holding out the site of "
                            f"harmonisation.reference_batch ({reference!r}) has no reference batch to map onto: leave "
                            "reference_batch empty (ComBat on the pooled training sites) for a leave-one-site-out study")
                raise HarmonisationError(f"ComBat fold {fold} (held out: {', '.join(design.heldout_sites(fold)) or 'none'}): "
                                         f"{exc}{hint}") from exc
        notes += [f"ComBat fold {fold}: {w.message}" for w in caught]
        if plan["spanning"]:
            raise ValueError(
                f"fold {fold}: batch(es) {plan['spanning']} span several sites; the study runner supports batches "
                "inside one site only (batch.by: site, or a batch column whose values do not repeat across sites)")
        plans[fold] = plan
    return plans


def run_harmonisation(protocol: Protocol, session: Session, design: StudyDesign, hs: HandshakeResult) -> HarmonisationResult:
    """One round (XᵀX/XᵀY) for every fold, none without covariates; fails (ValueError) on an impossible design."""
    out = HarmonisationResult()
    out.plans = _plans(protocol, design, hs, out.notes)
    if session.checker is not None:
        session.checker.sizes = fold_sizes(out.plans)
    if all(_batch_columns_only(plan) for plan in out.plans.values()):
        for fold, plan in out.plans.items():
            sites = design.training_sites(fold)
            out.fits[fold] = fit_from_handshake(plan, hs, sites)
            out.scales[fold] = scale_from_handshake(plan, hs, sites)
            out.models[fold] = ComBatModel.from_messages(plan, out.fits[fold], out.scales[fold])
        out.plans_with_training = True
        return out
    requests: dict[str, Payload] = {}
    for site in session.active:
        req: Payload = {TRAIN_FOLDS: design.train_folds(site)}
        for fold, plan in out.plans.items():
            req.update(nest(key(PLAN, fold), plan))
        requests[site] = req
    replies = session.exchange(COMBAT1, requests)
    for fold, plan in out.plans.items():
        msgs = {s: unnest(replies[s], key(R1, fold)) for s in design.training_sites(fold) if s in replies}
        out.fits[fold] = combine_round1(plan, list(msgs.values()))
        out.scales[fold] = combine_scale(plan, out.fits[fold], msgs, hs.schemas)
        out.models[fold] = ComBatModel.from_messages(plan, out.fits[fold], out.scales[fold])
    return out


def _batch_columns_only(plan: dict) -> bool:
    return not (plan["categorical"] or plan["continuous"] or plan["spanning"])


def _design_row(plan: dict, batch: str) -> np.ndarray:
    """The design row of every case of ``batch`` when the design holds batch columns only (reference mode:
    the reference batch's column is all ones, as ``harmonisation.design.prepare_site`` builds it)."""
    batches = list(plan["batches"])
    row = np.zeros(len(plan["design_columns"]))
    row[batches.index(batch)] = 1.0
    if plan.get("ref_batch"):
        row[batches.index(plan["ref_batch"])] = 1.0
    return row


def fit_from_handshake(plan: dict, hs: HandshakeResult, sites: list[str]) -> dict:
    """Round 1 of a design with batch columns only, from the handshake: per site XᵀX = Σ_b n_b·x_b x_bᵀ and
    XᵀY = Σ_b n_b·x_b ȳ_bᵀ over its batches (every case of a batch has the same design row x_b), combined by
    ``combine_round1`` like the sites' round-1 messages."""
    idx = [hs.features.index(f) for f in plan["features"]]
    msgs = []
    for site in sites:
        schema = hs.schemas[site]
        q = len(plan["design_columns"])
        xtx, xty, n = np.zeros((q, q)), np.zeros((q, len(idx))), 0
        for i, batch in enumerate(schema["batches"]):
            n_b = int(np.asarray(schema["batch_n"])[i])
            row = _design_row(plan, batch)
            xtx += n_b * np.outer(row, row)
            xty += n_b * np.outer(row, np.asarray(schema["mean"][i], dtype=float)[idx])
            n += n_b
        msgs.append({"xtx": xtx, "xty": xty, "n": n})
    return combine_round1(plan, msgs)


def scale_from_handshake(plan: dict, hs: HandshakeResult, sites: list[str]) -> dict:
    """σ̂² of a design with batch columns only (no covariates, every batch inside one site), from the
    handshake: the fitted value of every row is its batch's mean, so SSR = Σ_b (n_b − 1)·s²_b (s² with ddof 1,
    as the sites announced it); in reference-batch mode only the reference batch counts
    (:func:`harmonisation.combine.pooled_variance`)."""
    idx = [hs.features.index(f) for f in plan["features"]]
    ref = plan.get("ref_batch") or None
    ssr, n = 0, 0
    for site in sites:  # summed per site, then over sites (the order the sites' round-2 sums were added in)
        schema = hs.schemas[site]
        site_ssr = np.zeros(len(idx))
        for i, batch in enumerate(schema["batches"]):
            n_b = int(np.asarray(schema["batch_n"])[i])
            if ref is not None and batch != ref:
                continue
            if n_b > 1:
                site_ssr += (n_b - 1) * np.asarray(schema["var"][i], dtype=float)[idx]
            n += n_b
        ssr = ssr + site_ssr
    return pooled_variance(plan, ssr, n)


def raw_moments(hs: HandshakeResult, sites: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Exact pooled mean and SD (ddof 1) of every feature over ``sites`` from their per-batch moments."""
    schemas = [hs.schemas[site] for site in sites]
    _, mean, var = pool_mean_variance([size for sc in schemas for size in np.asarray(sc["batch_n"])],
                                      [m for sc in schemas for m in sc["mean"]], [v for sc in schemas for v in sc["var"]])
    return mean, np.sqrt(var)


def standardisation(design: StudyDesign, hs: HandshakeResult, harm: HarmonisationResult | None,
                    notes: list[str]) -> dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """fold → variant → (mean, sd) over ``hs.features`` (see the module docstring)."""
    out: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
    for fold in design.folds:
        mean, sd = raw_moments(hs, design.training_sites(fold))
        out[fold] = {"raw": (mean, sd)}
        if harm is not None and fold in harm.models:
            model = harm.models[fold]
            h_mean, h_sd = mean.copy(), sd.copy()
            idx = [hs.features.index(f) for f in model.features]
            h_mean[idx] = model.alpha
            h_sd[idx] = np.sqrt(model.var_pooled)
            out[fold]["harmonised"] = (h_mean, h_sd)
        for variant, (m, s) in out[fold].items():
            zero = ~(s > 0)
            if zero.any():
                notes.append(f"fold {fold} {variant}: {int(zero.sum())} constant feature(s) left unscaled")
                s[zero] = 1.0
    return out


def first_round_extras(site: str, design: StudyDesign, harm: HarmonisationResult | None,
                       std: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]) -> Payload:
    """What the first training message adds for ``site``: the fit and σ̂² of its folds (and their plans when no
    ComBat round carried them) and their standardisation."""
    folds = design.train_folds(site) + design.heldout_folds(site)
    extra: Payload = {TRAIN_FOLDS: design.train_folds(site), HELDOUT_FOLDS: design.heldout_folds(site)}
    for fold in folds:
        if harm is not None and fold in harm.scales:
            extra.update(nest(key(SCALE, fold), harm.scales[fold]))
            extra.update(nest(key(FIT, fold), harm.fits[fold]))
            if harm.plans_with_training:
                extra.update(nest(key(PLAN, fold), harm.plans[fold]))
        for variant, (mean, sd) in std[fold].items():
            extra.update(nest(key(STD, fold, variant), {"mean": mean, "sd": sd}))
    return extra
