"""A whole cohort: manifest -> feature table, cases in parallel worker processes, cached, written atomically.

A failing case never stops the run: it is listed with its reason in ``FILE.errors.csv`` and left out of the
table (no NaN rows). Columns: ``case_id``, the manifest's label / covariate / batch columns as text, then features.

A ``case_id`` used on more than one manifest line fails on every one of those lines (nothing is written for it):
picking one of them would pair one row's image with another row's label and covariates.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import time
import traceback
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from protocols import Protocol, load_protocol, protocol_id
from site_client.extraction import cache
from site_client.extraction.deadline import CASE_TIME_LIMIT_S, time_limit
from site_client.imaging.errors import CaseInputError
from site_client.imaging.inputs import checked_input
from site_client.manifest import ManifestError, ManifestRow, duplicate_lines, duplicate_message, read_manifest
from site_client.tables import table_format, write_table_atomic

log = logging.getLogger("fedradval.site.extraction")
PROGRESS_LOG_EVERY_S = 30.0  # a progress line in the service log (site-client join) at most this often


@dataclass
class ExtractionResult:
    """What a run produced."""

    out_path: Path
    rows_written: int
    failed: list[tuple[str, str]] = field(default_factory=list)  # (case_id, reason)
    skipped_from_cache: int = 0
    errors_path: Path | None = None
    seconds: float = 0.0
    peak_worker_rss_mib: float = 0.0  # largest resident set of a process that extracted a case (Unix only)
    case_keys: dict[str, str] = field(default_factory=dict)  # case_id -> content key of each case written
    notes: list[str] = field(default_factory=list)  # e.g. "case X: image A is a symbolic link to B"


@dataclass(frozen=True)
class _Task:
    case_id: str
    line: int
    image: str
    mask: str
    label: str
    roi: str
    series_uid: str
    time_limit_s: float | None = CASE_TIME_LIMIT_S


@dataclass(frozen=True)
class _Outcome:
    """What a worker returns for one case (never an exception)."""

    case_id: str
    features: dict | None
    error: str
    from_cache: bool
    key: str = ""
    rss_mib: float = 0.0
    notes: tuple[str, ...] = ()


def errors_path_for(out_path: Path) -> Path:
    return out_path.with_name(out_path.name + ".errors.csv")


def _peak_rss_mib() -> float:
    try:
        import resource
    except ImportError:  # Windows
        return 0.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports KiB


def _run_case(task: _Task, protocol: Protocol, identifier: str, cache_folder: str) -> _Outcome:
    """Worker body. Never raises: a problem is the outcome's error message."""
    try:
        with time_limit(task.time_limit_s, f"case {task.case_id}"):
            outcome = _extract_one(task, protocol, identifier, cache_folder)
    except CaseInputError as exc:
        outcome = _Outcome(task.case_id, None, str(exc), False)
    except MemoryError:
        outcome = _Outcome(task.case_id, None, "out of memory while extracting (raise memory or lower extraction.max_voxels)", False)
    except Exception as exc:  # a bug or an unexpected library error: keep the run going, report it
        last = traceback.extract_tb(exc.__traceback__)[-1]
        where = f"{Path(last.filename).name}:{last.lineno}"
        outcome = _Outcome(task.case_id, None, f"internal error {type(exc).__name__}: {exc} (at {where})", False)
    return _Outcome(outcome.case_id, outcome.features, outcome.error, outcome.from_cache, outcome.key, _peak_rss_mib(),
                    outcome.notes)


def _extract_one(task: _Task, protocol: Protocol, identifier: str, cache_folder: str) -> _Outcome:
    """Cache hit, or the intake checks (the ones ``check`` runs) and the features."""
    from site_client.extraction.case import features_of
    from site_client.extraction.intake import CaseFiles, mask_label, validate_case

    mask_label(task.label)
    limit = protocol.extraction.max_voxels
    # Regular files within the size bound before the cache key hashes them (never /dev/zero or a FIFO).
    image = checked_input(Path(task.image), "image", limit)
    mask = checked_input(Path(task.mask), "mask", limit)
    notes = tuple(f"case {task.case_id}: {note}" for note in image.link_notes("image") + mask.link_notes("mask"))
    key = cache.case_key(image.path, mask.path, task.label.strip() or "1", task.roi, task.series_uid, identifier)
    hit = cache.load(Path(cache_folder), key)
    if hit is not None:
        return _Outcome(task.case_id, hit, "", True, key, notes=notes)
    files = CaseFiles(Path(task.image), Path(task.mask), task.label, task.roi, task.series_uid)
    features = features_of(validate_case(files, protocol.extraction), protocol.extraction)
    cache.store(Path(cache_folder), key, features)
    return _Outcome(task.case_id, features, "", False, key, notes=notes)


def _tasks(rows: list[ManifestRow], time_limit_s: float | None) -> tuple[list[_Task], list[_Failure]]:
    """Tasks for valid rows, and the failures of rows that cannot even be attempted (empty or repeated id)."""
    tasks, bad = [], []
    repeated = duplicate_lines(rows)
    for row in rows:
        if not row.case_id:
            bad.append(_Failure(f"<line {row.line}>", f"manifest line {row.line}: empty case_id", row))
        elif row.case_id in repeated:
            bad.append(_Failure(row.case_id, duplicate_message(row.case_id, repeated[row.case_id]), row))
        else:
            tasks.append(_Task(row.case_id, row.line, str(row.image), str(row.mask), row.mask_label_text, row.mask_roi,
                               row.series_uid, time_limit_s))
    return tasks, bad


@dataclass(frozen=True)
class _Failure:
    case_id: str
    reason: str
    row: ManifestRow | None


def _carried_columns(protocol: Protocol, columns: list[str], manifest: Path) -> list[str]:
    wanted = [*protocol.label.columns(), *protocol.covariates.names()]
    if protocol.batch.by == "column" and protocol.batch.column:
        wanted.append(protocol.batch.column)
    missing = [c for c in wanted if c not in columns]
    if missing:
        raise ManifestError(
            f"manifest {manifest}: missing column(s) {', '.join(missing)} named by the protocol "
            "(label, covariates, batch); they are carried into the feature table"
        )
    return list(dict.fromkeys(wanted))


def _progress(total: int, enabled: bool):
    """A rich progress bar with cases done, failures and rate (a no-op object when disabled)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(
        TextColumn("[bold]extract[/]"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("[red]{task.fields[failed]} failed[/]"),
        TextColumn("{task.fields[cached]} cached"),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        disable=not enabled,
        transient=False,
    )


def _executor(workers: int) -> ProcessPoolExecutor:
    """Forked workers where available (Linux).

    fork keeps start-up cheap and, unlike spawn / forkserver, does not re-import the caller's ``__main__`` (a
    script without a ``__name__ == "__main__"`` guard, or ``python -m site_client``, would run again in every
    worker). It is safe here: the pool starts before the progress bar's thread, and SimpleITK's default
    "Platform" threader creates its threads per call (no pool inherited half-alive).
    """
    # Import the engine once here so that forked workers inherit it instead of each importing it again.
    import site_client.extraction.case  # noqa: F401
    import site_client.extraction.engine  # noqa: F401
    import site_client.extraction.pyradiomics_mode  # noqa: F401

    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    return ProcessPoolExecutor(max_workers=workers, mp_context=context)


def extract_cohort(
    manifest_path: str | Path,
    protocol: Protocol | str | Path,
    out_path: str | Path,
    workers: int | None = None,
    progress: bool = True,
    case_time_limit_s: float | None = CASE_TIME_LIMIT_S,
) -> ExtractionResult:
    """Extract every manifest case into ``out_path`` (.csv or .parquet), in ``workers`` processes (default: all cores).

    Raises :class:`ManifestError` / :class:`TableError` for problems of the whole run (unreadable manifest,
    missing label column, unsupported output extension); per-case problems end up in ``FILE.errors.csv``.
    A case running past ``case_time_limit_s`` seconds fails with that reason (None: no bound).
    """
    start = time.perf_counter()
    out_path = Path(out_path)
    table_format(out_path)  # fail early on a bad extension
    if not isinstance(protocol, Protocol):
        protocol = load_protocol(protocol)
    identifier = protocol_id(protocol)
    manifest = read_manifest(manifest_path)
    carried = _carried_columns(protocol, manifest.columns, manifest.path)
    tasks, failures = _tasks(manifest.rows, case_time_limit_s)
    row_at = {row.line: row for row in manifest.rows}
    cache_folder = str(cache.cache_dir(out_path))
    workers = max(1, workers or os.cpu_count() or 1)
    results: dict[str, dict[str, float]] = {}
    keys: dict[str, str] = {}
    notes: list[str] = []
    task_of = {task.case_id: task for task in tasks}
    skipped = 0
    peak_rss = 0.0

    # Worker processes start (and every task is submitted) before the progress bar starts its refresh thread.
    pool = _executor(min(workers, len(tasks))) if workers > 1 and len(tasks) > 1 else None
    futures: dict[Future, _Task] = {}
    last_logged = [start]
    log.info("extracting %d case(s) of %s with %d worker(s)", len(manifest.rows), manifest.path, workers)
    if pool is not None:
        futures = {pool.submit(_run_case, t, protocol, identifier, cache_folder): t for t in tasks}
    try:
        with _progress(len(manifest.rows), progress) as bar:
            task_id = bar.add_task("extract", total=len(manifest.rows), failed=len(failures), cached=0, rate="")
            bar.advance(task_id, len(failures))

            def record(outcome: _Outcome) -> None:
                nonlocal skipped, peak_rss
                peak_rss = max(peak_rss, outcome.rss_mib)
                notes.extend(outcome.notes)
                if outcome.features is None:
                    failures.append(_Failure(outcome.case_id, outcome.error, row_at[task_of[outcome.case_id].line]))
                else:
                    results[outcome.case_id] = outcome.features
                    keys[outcome.case_id] = outcome.key
                    skipped += outcome.from_cache
                elapsed = max(time.perf_counter() - start, 1e-9)
                done = len(results) + len(failures)
                bar.update(task_id, advance=1, failed=len(failures), cached=skipped, rate=f"{done / elapsed:.2f} cases/s")
                if time.perf_counter() - last_logged[0] >= PROGRESS_LOG_EVERY_S or done == len(manifest.rows):
                    last_logged[0] = time.perf_counter()
                    log.info("extracted %d/%d case(s): %d failed, %d from cache, %.2f cases/s", done,
                             len(manifest.rows), len(failures), skipped, done / elapsed)

            if pool is None:
                for task in tasks:
                    record(_run_case(task, protocol, identifier, cache_folder))
            else:
                broken = _collect(futures, record)
                pool.shutdown()
                # A worker died (killed for memory, crash in C code): every unfinished case of that pool fails
                # with it. Retry them in one fresh pool, then whatever breaks again one at a time, so that only
                # the culprit fails.
                if broken:
                    with _executor(min(workers, len(broken))) as retry:
                        broken = _collect(
                            {retry.submit(_run_case, t, protocol, identifier, cache_folder): t for t in broken}, record
                        )
                for task in broken:
                    with _executor(1) as single:
                        try:
                            record(single.submit(_run_case, task, protocol, identifier, cache_folder).result())
                        except BrokenProcessPool:
                            record(_Outcome(task.case_id, None,
                                            "worker process died while extracting this case (out of memory or crash)", False))
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)

    feature_names = _feature_names([results[t.case_id] for t in tasks if t.case_id in results])
    for case_id in list(results):
        if list(results[case_id]) != feature_names:
            failures.append(_Failure(case_id, "feature set differs from the other cases (stale cache or engine bug)",
                                     row_at[task_of[case_id].line]))
            del results[case_id]
    rows = []
    for task in tasks:
        if task.case_id in results:
            row = row_at[task.line]
            rows.append({"case_id": task.case_id, **{c: row.values.get(c, "") for c in carried}, **results[task.case_id]})
    frame = pd.DataFrame(rows, columns=["case_id", *carried, *feature_names])
    for column in ["case_id", *carried]:
        frame[column] = frame[column].astype(str)
    write_table_atomic(frame, out_path)
    failures.sort(key=lambda f: f.row.line if f.row else 0)  # manifest order, whatever order workers finished in
    errors_path = _write_errors(out_path, failures)
    failed = [(f.case_id, f.reason) for f in failures]
    written_keys = {case_id: keys[case_id] for case_id in results}
    return ExtractionResult(out_path, len(rows), failed, skipped, errors_path, time.perf_counter() - start, peak_rss,
                            written_keys, sorted(notes))


def _collect(futures: dict[Future, _Task], record) -> list[_Task]:
    """Record every finished case; return the tasks lost to a broken pool."""
    broken: list[_Task] = []
    for future in as_completed(futures):
        try:
            record(future.result())
        except BrokenProcessPool:
            broken.append(futures[future])
    return broken


def _feature_names(feature_dicts: list[dict[str, float]]) -> list[str]:
    if not feature_dicts:
        return []
    counts: dict[tuple[str, ...], int] = {}
    for features in feature_dicts:
        counts[tuple(features)] = counts.get(tuple(features), 0) + 1
    return list(max(counts, key=counts.get))


def _write_errors(out_path: Path, failures: list[_Failure]) -> Path | None:
    """``FILE.errors.csv`` (atomically, formula-neutralised) when some case failed; a stale one is removed."""
    path = errors_path_for(out_path)
    if not failures:
        path.unlink(missing_ok=True)
        return None
    table = pd.DataFrame(
        [[f.case_id, f.row.line if f.row else "", str(f.row.image) if f.row else "", str(f.row.mask) if f.row else "",
          f.reason] for f in failures],
        columns=["case_id", "line", "image", "mask", "error"],
    ).astype(str)
    return write_table_atomic(table, path)
