"""Step 0: each site describes its data (``schema``); the hub fixes the global ``plan``.

Site side: :func:`site_schema` validates the site's table (features present, numeric, no
NaN; covariates present and complete) and reports local batch labels, categorical
levels and per-batch feature moments (n, mean, var; used for diagnostics and for
detecting constant features).  Hub side: :func:`build_plan` merges the schemas into the
global, ordered lists every site uses to build its design rows.
"""

from __future__ import annotations

import math
import numbers
import warnings
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from .diagnostics import group_moments
from .errors import ExcludedFeatureWarning, HarmonisationError, SmallBatchWarning
from .messages import Message

MIN_BATCH = 2
RECOMMENDED_BATCH = 20


def level_str(value: object) -> str:
    """Canonical text of a categorical value, so 1, 1.0 and np.int64(1) give the same level."""
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        v = float(value)
        return str(int(v)) if v.is_integer() else repr(v)
    return str(value)


def sort_levels(levels: set[str] | Sequence[str]) -> list[str]:
    """Numeric order when every level is a number (as ``np.unique`` on numbers), else text order."""
    levels = list(set(levels))
    try:
        return sorted(levels, key=float)
    except ValueError:
        return sorted(levels)


def _is_missing(value: object) -> bool:
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    return isinstance(value, float) and math.isnan(value)


def _rows(index: pd.Index, mask: np.ndarray, limit: int = 3) -> str:
    labels = [str(x) for x in index[mask][:limit]]
    more = int(mask.sum()) - len(labels)
    return ", ".join(labels) + (f" and {more} more" if more > 0 else "")


def feature_matrix(site: str, df: pd.DataFrame, features: Sequence[str]) -> np.ndarray:
    """Samples x features float64 matrix, column-major whatever pandas' block layout (numpy sums a column of a
    row-major array in another order, so the schema's moments, and σ̂², which is computed from them, would
    depend on how the table was built; column-major is what a table read from CSV gives, so studies keep their
    bits); error naming site, feature and count on bad cells."""
    if not isinstance(df, pd.DataFrame):
        raise HarmonisationError(f"site {site!r}: expected a pandas DataFrame, got {type(df).__name__}")
    missing = [f for f in features if f not in df.columns]
    if missing:
        raise HarmonisationError(
            f"site {site!r} lacks {len(missing)} feature column(s): {missing[:5]}"
            f"{' ...' if len(missing) > 5 else ''}; every site must provide the same named features "
            "(order does not matter)"
        )
    dup = df.columns[df.columns.duplicated()].intersection(list(features))
    if len(dup):
        raise HarmonisationError(f"site {site!r}: duplicated column(s) {list(dup)}")
    sub = df[list(features)]
    if all(pd.api.types.is_numeric_dtype(t) and not pd.api.types.is_bool_dtype(t) for t in set(sub.dtypes)):
        out = sub.to_numpy(dtype=np.float64, na_value=np.nan)
        if np.isfinite(out).all():  # fast path: one block, no per-column work
            return np.asfortranarray(out)
    out = np.empty((len(df), len(features)), dtype=np.float64, order="F")
    for j, name in enumerate(features):
        col = sub.iloc[:, j]
        if pd.api.types.is_bool_dtype(col) or not pd.api.types.is_numeric_dtype(col):
            num = pd.to_numeric(col, errors="coerce")
            bad = (num.isna() & col.notna()).to_numpy()
            if bad.any():
                example = col[bad].iloc[0]
                raise HarmonisationError(
                    f"site {site!r}: feature {name!r} has {int(bad.sum())} non-numeric cell(s) "
                    f"(e.g. {example!r} in row(s) {_rows(df.index, bad)}); expected numbers"
                )
            col = num
        values = col.to_numpy(dtype=np.float64, na_value=np.nan)
        bad = ~np.isfinite(values)
        if bad.any():
            raise HarmonisationError(
                f"site {site!r}: feature {name!r} has {int(bad.sum())} missing/non-finite value(s) "
                f"(row(s) {_rows(df.index, bad)}); ComBat needs complete data: impute or drop "
                "these rows or this feature before harmonising"
            )
        out[:, j] = values
    return out


def _labels(site: str, df: pd.DataFrame, column: str, what: str) -> np.ndarray:
    """Canonical per-row level text of ``column`` (factorised: level_str runs once per level)."""
    codes, uniques = pd.factorize(df[column], use_na_sentinel=True)
    texts = [None if _is_missing(u) else level_str(u) for u in uniques]
    bad = codes < 0
    for k, t in enumerate(texts):
        if t is None:
            bad |= codes == k
    if bad.any():
        raise HarmonisationError(
            f"site {site!r}: {what} {column!r} has {int(bad.sum())} missing value(s) "
            f"(row(s) {_rows(df.index, bad)}); every sample needs a value: drop or complete these rows"
        )
    return np.array(texts, dtype=object)[codes]


def batch_labels(site: str, df: pd.DataFrame, batch_col: str | None) -> np.ndarray:
    """Per-row batch label (str): the site name, or the canonical text of ``batch_col``."""
    if batch_col is None:
        return np.full(len(df), site, dtype=object)
    if batch_col not in df.columns:
        raise HarmonisationError(f"site {site!r} lacks the batch column {batch_col!r}")
    return _labels(site, df, batch_col, "batch column")


def categorical_labels(site: str, df: pd.DataFrame, covariate: str) -> np.ndarray:
    if covariate not in df.columns:
        raise HarmonisationError(f"site {site!r} lacks the categorical covariate column {covariate!r}")
    return _labels(site, df, covariate, "categorical covariate")


def continuous_values(site: str, df: pd.DataFrame, covariate: str, float32: bool) -> np.ndarray:
    """Continuous covariate as float64 (optionally rounded through float32 like neuroCombat)."""
    if covariate not in df.columns:
        raise HarmonisationError(f"site {site!r} lacks the continuous covariate column {covariate!r}")
    col = pd.to_numeric(df[covariate], errors="coerce")
    values = col.to_numpy(dtype=np.float64, na_value=np.nan)
    bad = ~np.isfinite(values)
    if bad.any():
        raise HarmonisationError(
            f"site {site!r}: continuous covariate {covariate!r} has {int(bad.sum())} missing or "
            f"non-numeric value(s) (row(s) {_rows(df.index, bad)}); expected finite numbers"
        )
    if float32:
        values = values.astype(np.float32).astype(np.float64)
    return values


def site_schema(
    site: str,
    df: pd.DataFrame,
    features: Sequence[str],
    categorical: Sequence[str] = (),
    continuous: Sequence[str] = (),
    batch_col: str | None = None,
    y: np.ndarray | None = None,
) -> Message:
    """Site side, step 0: validate the table and describe it with aggregates only.

    ``y`` may pass the already-read :func:`feature_matrix` of ``df`` to avoid reading twice."""
    features = list(features)
    y = feature_matrix(site, df, features) if y is None else y
    labels = batch_labels(site, df, batch_col)
    msg: Message = {"kind": "schema", "site": site, "n": int(len(df)), "features": features}
    for cov in categorical:
        msg[f"levels:{cov}"] = sort_levels(set(categorical_labels(site, df, cov)))
    for cov in continuous:
        continuous_values(site, df, cov, float32=False)  # validation only
    mom = group_moments(y, labels)
    msg["batches"] = mom["groups"]
    msg["batch_n"] = mom["n"]
    msg["mean"] = mom["mean"]
    msg["var"] = mom["var"]
    const = np.zeros_like(mom["mean"], dtype=np.uint8)
    for k, b in enumerate(mom["groups"]):
        rows = y if len(mom["groups"]) == 1 else y[labels == b]
        const[k] = (rows.max(axis=0) == rows.min(axis=0)).astype(np.uint8)
    msg["constant"] = const
    return msg


@dataclass(frozen=True)
class ComBatOptions:
    """Model options; ``float32_covariates`` reproduces neuroCombat's float32 cast of
    continuous covariates, ``neurocombat_zero_variance`` its replacement of zero pooled
    variances by ``median(var != 0)`` (a boolean median; the default uses the median of the
    non-zero variances)."""

    eb: bool = True
    parametric: bool = True
    mean_only: bool = False
    ref_batch: str | None = None
    float32_covariates: bool = False
    neurocombat_zero_variance: bool = False
    conv: float = 1e-4
    max_iter: int = 10_000

    def to_message(self) -> Message:
        return {
            "eb": int(self.eb), "parametric": int(self.parametric), "mean_only": int(self.mean_only),
            "ref_batch": "" if self.ref_batch is None else self.ref_batch,
            "float32_covariates": int(self.float32_covariates),
            "neurocombat_zero_variance": int(self.neurocombat_zero_variance),
            "conv": float(self.conv), "max_iter": int(self.max_iter),
        }

    @classmethod
    def from_message(cls, msg: Message) -> "ComBatOptions":
        return cls(
            eb=bool(msg["eb"]), parametric=bool(msg["parametric"]), mean_only=bool(msg["mean_only"]),
            ref_batch=(msg["ref_batch"] or None), float32_covariates=bool(msg["float32_covariates"]),
            neurocombat_zero_variance=bool(msg["neurocombat_zero_variance"]),
            conv=float(msg["conv"]), max_iter=int(msg["max_iter"]),
        )


def _all_equal(rows: np.ndarray) -> np.ndarray:
    """Per column: all rows equal up to 1e-12 relative (means of identical values may differ by an ulp)."""
    scale = np.maximum(np.abs(rows).max(axis=0), np.finfo(float).tiny)
    return (rows.max(axis=0) - rows.min(axis=0)) <= 1e-12 * scale


def design_columns(batches: Sequence[str], levels: dict[str, list[str]],
                   categorical: Sequence[str], continuous: Sequence[str]) -> list[str]:
    """Names of the design columns: batches, categorical levels (first dropped), continuous."""
    cols = [f"batch={b}" for b in batches]
    for cov in categorical:
        cols += [f"{cov}={lvl}" for lvl in levels[cov][1:]]
    cols += list(continuous)
    return cols


def build_plan(
    schemas: Sequence[Message],
    categorical: Sequence[str] = (),
    continuous: Sequence[str] = (),
    options: ComBatOptions = ComBatOptions(),
    batch_col: str | None = None,
    min_batch: int = MIN_BATCH,
    warn_batch: int = RECOMMENDED_BATCH,
) -> Message:
    """Hub side, step 0: global batches and levels, excluded features, options.

    Raises :class:`HarmonisationError` for duplicated sites, feature lists that differ,
    batches with < ``min_batch`` samples (protocol ``harmonisation.min_batch_size``), an unknown
    reference batch, or fewer than 2 batches; warns (:class:`SmallBatchWarning`) for batches with
    < ``warn_batch`` samples (``harmonisation.warn_batch_size``) and
    (:class:`ExcludedFeatureWarning`) for constant features, which are excluded.
    """
    if not schemas:
        raise HarmonisationError("no sites given; federated ComBat needs at least one site")
    sites = [s["site"] for s in schemas]
    if len(set(sites)) != len(sites):
        raise HarmonisationError(f"duplicated site names: {sites}")
    features = list(schemas[0]["features"])
    for s in schemas[1:]:
        if list(s["features"]) != features:
            raise HarmonisationError(
                f"site {s['site']!r} reports a different feature list than site {sites[0]!r}")
    if len(set(features)) != len(features):
        raise HarmonisationError("duplicated feature names in the feature list")
    p = len(features)

    # batches: counts and moments pooled over the sites that hold them
    parts: dict[str, list[tuple[str, int, np.ndarray, np.ndarray, np.ndarray]]] = {}
    for s in schemas:
        for k, b in enumerate(s["batches"]):
            n_k = int(s["batch_n"][k])
            m2 = s["var"][k] * max(n_k - 1, 0)
            parts.setdefault(b, []).append((s["site"], n_k, s["mean"][k], m2, s["constant"][k]))
    batches = sort_levels(parts)
    if len(batches) < 2:
        raise HarmonisationError(
            f"only one batch ({batches}) across all sites; ComBat needs at least 2 batches")
    batch_n = np.array([sum(pt[1] for pt in parts[b]) for b in batches], dtype=np.int64)
    for b, n_b in zip(batches, batch_n):
        where = ", ".join(f"{pt[0]!r} ({pt[1]})" for pt in parts[b])
        if n_b < min_batch:
            raise HarmonisationError(
                f"batch {b!r} has {n_b} sample(s) (site(s) {where}); ComBat needs at least "
                f"{min_batch} per batch (harmonisation.min_batch_size; recommended >= {warn_batch}): "
                "merge or drop it")
        if n_b < warn_batch:
            warnings.warn(
                f"batch {b!r} has only {n_b} samples (site(s) {where}); ComBat estimates are "
                f"unstable below about {warn_batch} per batch (harmonisation.warn_batch_size)",
                SmallBatchWarning, stacklevel=2)
    spanning = [b for b in batches if len(parts[b]) > 1]

    if options.ref_batch is not None and options.ref_batch not in parts:
        raise HarmonisationError(
            f"reference batch {options.ref_batch!r} not found; batches are {batches}")
    if options.eb and p < 2:
        raise HarmonisationError(
            "empirical Bayes pools information across features and needs >= 2 features; "
            "use eb=False for a single feature")

    # constant features: constant within any batch (a feature constant overall is too)
    const_b = np.zeros((len(batches), p), dtype=bool)
    mean_b = np.zeros((len(batches), p))
    for k, b in enumerate(batches):
        const = np.ones(p, dtype=bool)
        for _, _, _, _, c in parts[b]:
            const &= c.astype(bool)
        means = np.stack([pt[2] for pt in parts[b]])
        if len(parts[b]) > 1 and const.any():
            const &= _all_equal(means)
        const_b[k] = const
        mean_b[k] = means[0]
    overall = const_b.all(axis=0) & _all_equal(mean_b)
    excluded: dict[str, str] = {}
    for j in range(p):
        if overall[j]:
            excluded[features[j]] = "constant across all samples"
        elif const_b[:, j].any():
            where = [batches[k] for k in np.flatnonzero(const_b[:, j])]
            excluded[features[j]] = f"constant within batch(es) {where}"
    if excluded:
        warnings.warn(
            f"{len(excluded)} feature(s) excluded from harmonisation and returned unchanged: "
            + "; ".join(f"{f!r}: {r}" for f, r in list(excluded.items())[:5])
            + (" ..." if len(excluded) > 5 else ""),
            ExcludedFeatureWarning, stacklevel=2)
    kept = [f for f in features if f not in excluded]
    if not kept:
        raise HarmonisationError("every feature is constant within some batch; nothing to harmonise")
    if options.eb and len(kept) < 2:
        raise HarmonisationError(
            f"only one feature ({kept[0]!r}) is left after excluding constant features; "
            "empirical Bayes needs >= 2: use eb=False")

    levels: dict[str, list[str]] = {}
    for cov in categorical:
        seen: set[str] = set()
        for s in schemas:
            seen.update(s[f"levels:{cov}"])
        levels[cov] = sort_levels(seen)

    plan: Message = {
        "kind": "plan",
        "features": kept,
        "all_features": features,
        "excluded": list(excluded),
        "excluded_reason": [excluded[f] for f in excluded],
        "batches": batches,
        "batch_n": batch_n,
        "spanning": spanning,
        "sites": sites,
        "categorical": list(categorical),
        "continuous": list(continuous),
        "batch_col": batch_col or "",
        "design_columns": design_columns(batches, levels, categorical, continuous),
    }
    for cov in categorical:
        plan[f"levels:{cov}"] = levels[cov]
    plan.update(options.to_message())
    return plan


def plan_levels(plan: Message) -> dict[str, list[str]]:
    return {cov: list(plan[f"levels:{cov}"]) for cov in plan["categorical"]}


def plan_options(plan: Message) -> ComBatOptions:
    return ComBatOptions.from_message(plan)
