"""In-process federated ComBat: every site's work and the coordinator's, without a network.

Runs exactly the functions a deployment exchanges as messages (see :mod:`.messages`),
records every message in a :class:`MessageLog`, and returns harmonised tables, the frozen
:class:`ComBatModel` and a :class:`ComBatReport`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from .combine import combine_batch_moments, combine_round1, combine_scale
from .design import prepare_site
from .diagnostics import (batch_effect_table, batch_summary_table, pooled_batch_moments,
                          pooled_site_moments, site_diagnostics)
from .errors import HarmonisationError
from .frames import replace_columns
from .local_adjust import local_adjust
from .messages import HUB_TO_SITE, SITE_TO_HUB, MessageLog
from .model import ComBatModel
from .schema import ComBatOptions, build_plan, feature_matrix, level_str, site_schema
from .site_stats import site_batch_moments, site_round1, standardise


@dataclass
class ComBatReport:
    """What was decided and found: excluded features, batch sizes, design, diagnostics."""

    excluded: dict[str, str]
    batch_sizes: dict[str, int]
    spanning_batches: list[str]
    design_columns: list[str]
    condition_number: float
    warnings: list[str] = field(default_factory=list)
    batch_effect: pd.DataFrame | None = None
    batch_summary: pd.DataFrame | None = None
    site_summary: pd.DataFrame | None = None


@dataclass
class ComBatResult:
    data: dict[str, pd.DataFrame]
    model: ComBatModel
    report: ComBatReport
    log: MessageLog


def run_federated_combat(
    sites: Mapping[str, pd.DataFrame],
    features: Sequence[str],
    categorical: Sequence[str] = (),
    continuous: Sequence[str] = (),
    eb: bool = True,
    parametric: bool = True,
    mean_only: bool = False,
    ref_site: str | None = None,
    batch_col: str | None = None,
    float32_covariates: bool = False,
    diagnostics: bool = True,
    alpha: float = 0.05,
) -> ComBatResult:
    """Federated ComBat over ``sites`` (name -> samples x columns table), in one process.

    ``ref_site`` is the reference batch: a site name, or a ``batch_col`` value when
    ``batch_col`` is given.  ``diagnostics`` adds one optional upload after adjustment
    (per-batch mean / var of the harmonised features) for the before/after ANOVA table.
    """
    if not isinstance(sites, Mapping) or not sites:
        raise HarmonisationError("sites must be a non-empty mapping of site name -> DataFrame")
    features = list(features)
    if not features:
        raise HarmonisationError("no features given to harmonise")
    if len(set(features)) != len(features):
        dup = sorted({f for f in features if features.count(f) > 1})
        raise HarmonisationError(f"feature list has duplicates: {dup}")
    overlap = set(features) & (set(categorical) | set(continuous) | {batch_col})
    if overlap:
        raise HarmonisationError(f"column(s) {sorted(overlap)} are both features and covariates/batch")
    options = ComBatOptions(eb=eb, parametric=parametric, mean_only=mean_only,
                            ref_batch=None if ref_site is None else level_str(ref_site),
                            float32_covariates=float32_covariates)
    frames = {str(name): df for name, df in sites.items()}
    caught: list[warnings.WarningMessage] = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = _run(frames, features, categorical, continuous, options, batch_col, diagnostics, alpha)
        result.report.warnings = [f"{w.category.__name__}: {w.message}" for w in caught]
    finally:  # hand the warnings on to the caller, also when an error stopped the run
        for w in caught:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return result


def _run(frames: dict[str, pd.DataFrame], features: list[str], categorical: Sequence[str],
         continuous: Sequence[str], options: ComBatOptions, batch_col: str | None,
         diagnostics: bool, alpha: float) -> ComBatResult:
    log = MessageLog()
    # step 0: each site reads and validates its table once, sends its schema -> plan
    tables = {s: feature_matrix(s, df, features) for s, df in frames.items()}
    schemas = [log.record(SITE_TO_HUB, s, site_schema(s, df, features, categorical, continuous, batch_col,
                                                      y=tables[s]))
               for s, df in frames.items()]
    plan = build_plan(schemas, categorical, continuous, options, batch_col)
    for s in frames:
        log.record(HUB_TO_SITE, s, plan)
    local = {s: prepare_site(s, df, plan, y_all=tables.pop(s)) for s, df in frames.items()}
    # round 1: XᵀX, XᵀY (reference mode: also of the reference rows) -> B̂, α̂, and σ̂² with the schemas' moments
    round1 = {s: log.record(SITE_TO_HUB, s, site_round1(sd, options.ref_batch)) for s, sd in local.items()}
    fit = combine_round1(plan, list(round1.values()))
    scale = combine_scale(plan, fit, round1, {sc["site"]: sc for sc in schemas})
    for s in frames:
        log.record(HUB_TO_SITE, s, fit)
        log.record(HUB_TO_SITE, s, scale)
    # local standardisation; extra round only for batches spanning sites
    zs = {s: standardise(sd, plan, fit, scale) for s, sd in local.items()}
    eb_msg = None
    if [b for b in plan["spanning"] if b != options.ref_batch]:
        moments = []
        for s, sd in local.items():
            msg = site_batch_moments(sd, plan, zs[s][0])
            if msg is not None:
                moments.append(log.record(SITE_TO_HUB, s, msg))
        eb_msg = combine_batch_moments(plan, moments)
        for s in frames:
            log.record(HUB_TO_SITE, s, eb_msg)
    adjusted, out = {}, {}
    for s, sd in local.items():  # site by site, freeing each site's working copies as we go
        adjusted[s] = local_adjust(sd, plan, fit, scale, eb_msg, z_mod=zs.pop(s))
        out[s] = replace_columns(frames[s], plan["features"], adjusted[s])
        sd.y = sd.y[:0]
        if not diagnostics:
            del adjusted[s]

    model = ComBatModel.from_messages(plan, fit, scale)
    report = ComBatReport(
        excluded=dict(model.excluded),
        batch_sizes={b: int(n) for b, n in zip(plan["batches"], plan["batch_n"])},
        spanning_batches=list(plan["spanning"]), design_columns=list(plan["design_columns"]),
        condition_number=float(fit["cond"]),
    )
    if diagnostics:
        idx = np.array([features.index(f) for f in plan["features"]], dtype=int)
        before = pooled_batch_moments(schemas, plan["batches"], idx)
        diag_msgs = [log.record(SITE_TO_HUB, s, site_diagnostics(s, adjusted[s], local[s].batches))
                     for s in frames]
        after = pooled_batch_moments(diag_msgs, plan["batches"])
        report.batch_effect = batch_effect_table(plan["features"], before, after, alpha)
        report.batch_summary = batch_summary_table(plan["features"], before, after)
        report.site_summary = batch_summary_table(
            plan["features"], pooled_site_moments(schemas, idx), pooled_site_moments(diag_msgs), group="site")
    return ComBatResult(data=out, model=model, report=report, log=log)


def harmonise_sites(
    sites: Mapping[str, pd.DataFrame],
    features: Sequence[str],
    categorical: Sequence[str] = (),
    continuous: Sequence[str] = (),
    eb: bool = True,
    parametric: bool = True,
    mean_only: bool = False,
    ref_site: str | None = None,
    batch_col: str | None = None,
    float32_covariates: bool = False,
) -> dict[str, pd.DataFrame]:
    """Federated ComBat in one process; returns each site's table with harmonised features.

    Same result as pooled neuroCombat on the concatenated data (up to rounding), built only
    from the site / coordinator functions.  See :func:`run_federated_combat` for the model,
    report and message log.
    """
    return run_federated_combat(
        sites, features, categorical, continuous, eb=eb, parametric=parametric,
        mean_only=mean_only, ref_site=ref_site, batch_col=batch_col,
        float32_covariates=float32_covariates, diagnostics=False,
    ).data
