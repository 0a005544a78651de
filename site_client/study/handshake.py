"""Handshake, site side: load and split the cohort, report counts (small cells suppressed), the ComBat schema
and the feature–volume sums. One reply per study; nothing patient-level.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from harmonisation.schema import site_schema
from protocols.payload import Payload, nest
from flowerglue.versions import fedradval_version
from protocols.schema import is_survival
from protocols.contract import ELIGIBLE, FEATURES, FVOL, MODEL_FEATURES, REASON, RELEASE, SCHEMA
from site_client.evaluation import feature_volume_sums
from site_client.privacy.partition import CLASS_PART_CELLS, CLASS_PART_SUBSETS, SUPPRESSED, protect_counts  # noqa: F401
from site_client.study.cohort import Cohort, build_cohort
from site_client.study.context import SiteContext, SiteStudyError
from site_client.study.store import SiteStore


#: Handshake reason of a survival site with too few events (max(k, 2, label.min_events_per_site) follows).
EVENTS_REASON = "fewer events than the protocol needs per site: "
#: A survival site's censored cases are a class like the events: 1..k-1 of them would be pinned by the patient
#: count and the event count every survival message carries (the whole-run guard would then withhold them all).
CENSORED_REASON = "censored cases: fewer than k={k} and not none"


def class_counts(cohort: Cohort) -> dict[str, int]:
    """Case counts by class and by part (train / calibration)."""
    y, train = cohort.y, cohort.train
    return {
        "n": cohort.n,
        "n_pos": int(y.sum()),
        "n_neg": int((1 - y).sum()),
        "n_train": int(train.sum()),
        "n_cal": int((~train).sum()),
        "n_train_pos": int(y[train].sum()),
        "n_train_neg": int((1 - y[train]).sum()),
        "n_cal_pos": int(y[~train].sum()),
        "n_cal_neg": int((1 - y[~train]).sum()),
    }


def suppress_counts(counts: dict[str, int], k: int) -> tuple[dict[str, int], list[str]]:
    """Counts in 1..k-1, and any count from which such a cell could be computed by differencing, become -1
    (:func:`site_client.privacy.partition.protect_counts`); returns the counts and the names suppressed."""
    return protect_counts(counts, CLASS_PART_SUBSETS, CLASS_PART_CELLS, k)


def batch_column(context: SiteContext) -> str | None:
    return context.protocol.batch.column if context.protocol.batch.by == "column" else None


def check_covariate_ranges(context: SiteContext, cohort: Cohort) -> None:
    """Every continuous covariate within the protocol's plausible [min, max] (a value outside is a data error;
    the case ids go to the site's log only, through the error's text)."""
    for cov in context.protocol.covariates.continuous:
        values = pd.to_numeric(cohort.table[cov.name], errors="coerce").to_numpy(dtype=np.float64)
        bad = np.isfinite(values) & ((values < cov.min) | (values > cov.max))
        if bad.any():
            cases = cohort.table["case_id"][bad].tolist()
            raise SiteStudyError(
                f"site {context.site_name}: continuous covariate {cov.name!r} outside the protocol's range "
                f"[{cov.min:g}, {cov.max:g}] for {int(bad.sum())} case(s): {cases[:5]}")


def handle_handshake(payload: Payload, context: SiteContext, store: SiteStore) -> Payload:
    protocol = context.protocol
    k = protocol.privacy.min_cell_count
    cohort = build_cohort(context, store)
    check_covariate_ranges(context, cohort)
    counts = class_counts(cohort)
    reply: Payload = {RELEASE: fedradval_version(), FEATURES: cohort.features,
                      MODEL_FEATURES: cohort.model_features, "volume_feature": cohort.volume_feature}
    need = max(k, 2)
    if is_survival(protocol):  # survival: n_pos = events, n_neg = censored; Cox needs events, censoring may be absent
        wanted = max(need, protocol.label.min_events_per_site)
        problems = [f"{EVENTS_REASON}{wanted}"] if counts["n_pos"] < wanted else []
        if 0 < counts["n_neg"] < need:
            problems.append(CENSORED_REASON.format(k=k))
    else:
        problems = [f"{cls} class has fewer than k={k} cases" for cls, key in (("positive", "n_pos"), ("negative", "n_neg"))
                    if counts[key] < need]
    schema = site_schema(
        context.site_name, cohort.table, cohort.features,
        [c.name for c in protocol.covariates.categorical], [c.name for c in protocol.covariates.continuous],
        batch_column(context),
    )
    small = [b for b, n in zip(schema["batches"], schema["batch_n"]) if int(n) < need]
    if small:
        problems.append(f"{len(small)} batch(es) have fewer than k={k} cases")
    shown, hidden = suppress_counts(counts, k)
    reply.update(shown)
    reply["suppressed"] = hidden
    reply[ELIGIBLE] = not problems
    reply[REASON] = "; ".join(problems)
    if problems:  # an ineligible site sends no statistics at all
        return reply
    reply.update(nest(SCHEMA, {k_: v for k_, v in schema.items() if k_ not in ("kind", "site")}))
    x = cohort.table[cohort.model_features].to_numpy(dtype=np.float64)
    v = cohort.table[cohort.volume_feature].to_numpy(dtype=np.float64)
    reply.update(nest(FVOL, feature_volume_sums(x, v, context.site_name)))
    return reply
