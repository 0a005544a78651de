"""The site's cohort as the study sees it: feature matrix, labels, covariates and the train/calibration split.

Built once, in the handshake, from the site's feature table (or from the manifest through feature
extraction) and stored in the site's work folder; later phases read it back (a fresh process may serve each
message). Case identifiers are stored locally only (``split.csv``) and never enter a reply.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from harmonisation.schema import level_str
from protocols.schema import Protocol, is_survival
from site_client.extraction.study_table import StudyDataChanged, current_table, refuse_if_changed
from site_client.study.context import SiteContext, SiteStudyError
from site_client.study.store import SiteStore
from site_client.survival_checks import parse_event, parse_time
from site_client.tables import csv_text

COHORT_FILE = "cohort.parquet"
SPLIT_FILE = "split.csv"
META_FILE = "cohort.json"


@dataclass
class Cohort:
    """Rows in a fixed order (sorted by case id). ``table`` keeps covariate and batch columns for ComBat."""

    table: pd.DataFrame
    features: list[str]          # ComBat / matrix columns: model features, then the volume feature if extra
    model_features: list[str]    # inputs of the radiomic model
    volume_feature: str
    y: np.ndarray                # 0/1 (survival: the event indicator)
    train: np.ndarray            # bool: train part (True) or calibration part (False); survival: all True
    time: np.ndarray | None = None  # survival studies: follow-up time in label.time_unit (None: binary)

    @property
    def n(self) -> int:
        return int(self.y.size)

    def matrix(self) -> np.ndarray:
        return self.table[self.features].to_numpy(dtype=np.float64)


def reserved_columns(protocol: Protocol) -> set[str]:
    """Columns that are never model features: id, label, covariates, batch column."""
    cols = {"case_id", *protocol.label.columns(), *protocol.covariates.names()}
    if protocol.batch.column:
        cols.add(protocol.batch.column)
    return cols


def _feature_table(context: SiteContext, store: SiteStore) -> pd.DataFrame:
    """The site's feature table as it is at the run's start: read directly, or extracted from the manifest
    (only changed cases again; see site_client.extraction.study_table)."""
    if context.data_kind not in ("manifest", "features"):
        raise SiteStudyError(
            f"site {context.site_name}: unknown data kind {context.data_kind!r}; expected 'manifest' or 'features'"
        )
    try:
        return current_table(context.data, context.data_kind, context.protocol, store.root, store.append_log).frame
    except StudyDataChanged as exc:
        raise SiteStudyError(f"site {context.site_name}: {exc}") from None


def _cell_text(value: object) -> str | None:
    return None if value is None or (isinstance(value, float) and np.isnan(value)) else str(value)


def survival_outcome(site: str, table: pd.DataFrame, protocol: Protocol, source: Path) -> tuple[np.ndarray, np.ndarray]:
    """(follow-up time, event 0/1) of every row, checked as ``site-client check`` checks them
    (:mod:`site_client.survival_checks`); the first bad cell is named by case, row and column."""
    label = protocol.label
    for column in label.columns():
        if column not in table.columns:
            raise SiteStudyError(f"site {site}: {source} has no column {column!r} (protocol label "
                                 f"{'time_column' if column == label.time_column else 'event_column'})")
    time = np.empty(len(table), dtype=np.float64)
    event = np.empty(len(table), dtype=np.int64)
    for i, (t, e) in enumerate(zip(table[label.time_column].tolist(), table[label.event_column].tolist())):
        time_value, time_reason = parse_time(_cell_text(t))
        event_value, event_reason = parse_event(_cell_text(e))
        for column, reason in ((label.time_column, time_reason), (label.event_column, event_reason)):
            if reason:
                raise SiteStudyError(f"site {site}: {source} case {table['case_id'].iloc[i]!r} (row {i + 2}) "
                                     f"column {column!r}: {reason}")
        time[i], event[i] = time_value, event_value
    return time, event


def _outcome(site: str, table: pd.DataFrame, protocol: Protocol, source: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """(y, follow-up time) of every row, each outcome column parsed once: survival, the event indicator and
    the time (:func:`survival_outcome`); binary, the 0/1 label and None."""
    if is_survival(protocol):
        time, event = survival_outcome(site, table, protocol, source)
        return event, time
    return _binary_labels(site, table, protocol, source), None


def _binary_labels(site: str, table: pd.DataFrame, protocol: Protocol, source: Path) -> np.ndarray:
    column = protocol.label.column
    if column not in table.columns:
        raise SiteStudyError(f"site {site}: {source} has no label column {column!r} (protocol label.column)")
    pos, neg = protocol.label.positive, protocol.label.negative
    y = np.empty(len(table), dtype=np.int64)
    for i, value in enumerate(table[column].tolist()):
        text = "" if value is None or (isinstance(value, float) and np.isnan(value)) else level_str(value)
        if text == pos:
            y[i] = 1
        elif text == neg:
            y[i] = 0
        else:
            raise SiteStudyError(
                f"site {site}: {source} case {table['case_id'].iloc[i]!r} (row {i + 2}) has label "
                f"{column}={value!r}; expected {pos!r} (positive) or {neg!r} (negative)"
            )
    return y


def _features(site: str, table: pd.DataFrame, protocol: Protocol, source: Path) -> tuple[list[str], list[str], str]:
    volume = protocol.validation.volume_feature
    if protocol.model.features is not None:
        model_features = list(protocol.model.features)
    else:
        reserved = reserved_columns(protocol)
        model_features = [c for c in table.columns if c not in reserved]
    missing = [f for f in model_features + [volume] if f not in table.columns]
    if missing:
        raise SiteStudyError(
            f"site {site}: {source} lacks feature column(s) {missing[:5]}"
            f"{' ...' if len(missing) > 5 else ''} required by the protocol (model.features / "
            "validation.volume_feature)"
        )
    if not model_features:
        raise SiteStudyError(f"site {site}: {source} has no feature columns besides id, label and covariates")
    features = model_features + ([volume] if volume not in model_features else [])
    for name in features:
        if not pd.api.types.is_numeric_dtype(table[name]) or pd.api.types.is_bool_dtype(table[name]):
            bad = pd.to_numeric(table[name], errors="coerce").isna() & table[name].notna()
            example = table.loc[bad, name].iloc[0] if bad.any() else table[name].iloc[0]
            raise SiteStudyError(
                f"site {site}: {source} feature column {name!r} is not numeric (e.g. {example!r}); "
                "expected numbers (list only feature columns in model.features)"
            )
    return features, model_features, volume


def split_train_calibration(case_ids: list[str], y: np.ndarray, fraction: float, protocol_id: str) -> np.ndarray:
    """Stratified split: per class, round(fraction·n_c) cases go to calibration (False), the rest train (True).

    Cases are ordered by case id, then permuted by a generator seeded with the protocol id, so the split
    depends only on the protocol and the cohort, not on the table's row order.
    """
    order = np.argsort(np.asarray(case_ids, dtype=str), kind="stable")
    rng = np.random.default_rng(int(protocol_id[:16], 16))
    train = np.ones(len(case_ids), dtype=bool)
    for cls in (0, 1):
        members = order[y[order] == cls]
        members = members[rng.permutation(members.size)]
        n_cal = int(round(fraction * members.size))
        train[members[:n_cal]] = False
    return train


def build_cohort(context: SiteContext, store: SiteStore) -> Cohort:
    """Read, check, order and split the site's cohort; write it (and the split) to the work folder."""
    site, protocol = context.site_name, context.protocol
    table = _feature_table(context, store)
    source = Path(context.data)
    if "case_id" not in table.columns:
        raise SiteStudyError(f"site {site}: {source} has no case_id column; every row needs a case identifier")
    table = table.copy()
    table["case_id"] = table["case_id"].astype(str)
    dupes = table["case_id"][table["case_id"].duplicated()].unique().tolist()
    if dupes:
        raise SiteStudyError(f"site {site}: {source} repeats case_id(s) {dupes[:5]}; each case must appear once")
    features, model_features, volume = _features(site, table, protocol, source)
    values = table[features].apply(pd.to_numeric, errors="coerce")
    bad_rows = ~np.isfinite(values.to_numpy(dtype=np.float64)).all(axis=1)
    if bad_rows.any():
        if protocol.harmonisation.nan_policy == "drop_case":
            table = table.loc[~bad_rows]
        else:
            row = int(np.flatnonzero(bad_rows)[0])
            cols = [c for c in features if not np.isfinite(float(values[c].iloc[row]))]
            raise SiteStudyError(
                f"site {site}: {source} case {table['case_id'].iloc[row]!r} has missing or non-finite value(s) "
                f"in {cols[:5]} ({int(bad_rows.sum())} such case(s)); complete or drop them, or set "
                "harmonisation.nan_policy: drop_case"
            )
    table = table.sort_values("case_id", kind="stable").reset_index(drop=True)
    y, time = _outcome(site, table, protocol, source)
    if is_survival(protocol):  # a Cox model has no recalibration step: every case trains
        train = np.ones(y.size, dtype=bool)
    else:
        train = split_train_calibration(table["case_id"].tolist(), y, protocol.validation.calibration_fraction,
                                        context.protocol_id)
    keep = ["case_id", *protocol.label.columns(), *protocol.covariates.names()]
    if protocol.batch.column:
        keep.append(protocol.batch.column)
    missing = [c for c in keep if c not in table.columns]
    if missing:
        raise SiteStudyError(f"site {site}: {source} lacks covariate/batch column(s) {missing} named in the protocol")
    stored = table[list(dict.fromkeys(keep + features))].copy()
    stored[features] = stored[features].astype(np.float64)
    _write(store, stored)
    split = pd.DataFrame({"case_id": table["case_id"], "part": np.where(train, "train", "calibration")})
    store.write_text(SPLIT_FILE, csv_text(split))
    store.write_json(META_FILE, {"features": features, "model_features": model_features, "volume_feature": volume})
    return Cohort(stored, features, model_features, volume, y, train, time)


def _write(store: SiteStore, frame: pd.DataFrame) -> None:
    store._atomic(COHORT_FILE, lambda h: frame.to_parquet(h, index=False))


def load_cohort(context: SiteContext, store: SiteStore) -> Cohort:
    """The cohort written by the handshake; a clear error if this site skipped it."""
    if not store.exists(META_FILE) or not store.exists(COHORT_FILE):
        raise SiteStudyError(
            f"site {context.site_name}: no cohort for protocol {context.protocol_id[:12]} in {store.root}; "
            "the handshake phase must run first (was the work folder changed or deleted?)"
        )
    try:
        refuse_if_changed(context.data, context.data_kind, store.root, store.append_log)
    except StudyDataChanged as exc:
        raise SiteStudyError(f"site {context.site_name}: {exc}") from None
    meta = store.read_json(META_FILE)
    table = pd.read_parquet(store.path(COHORT_FILE))
    split = pd.read_csv(store.path(SPLIT_FILE), dtype={"case_id": str})
    y, time = _outcome(context.site_name, table, context.protocol, store.path(COHORT_FILE))
    train = (split["part"] == "train").to_numpy()
    return Cohort(table, meta["features"], meta["model_features"], meta["volume_feature"], y, train, time)
