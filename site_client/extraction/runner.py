"""A whole cohort: manifest -> feature table, cases in parallel worker processes, cached, written atomically.

A failing case never stops the run: it is listed with its reason in ``FILE.errors.csv`` and left out of the
table (no NaN rows). Columns: ``case_id``, the manifest's label / covariate / batch columns as text, then features.
"""

from __future__ import annotations

import csv
import io
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
from site_client.imaging.errors import CaseInputError
from site_client.manifest import ManifestError, ManifestRow, read_manifest
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


@dataclass(frozen=True)
class _Task:
    case_id: str
    image: str
    mask: str
    label: str
    roi: str
    series_uid: str


def errors_path_for(out_path: Path) -> Path:
    return out_path.with_name(out_path.name + ".errors.csv")


def _peak_rss_mib() -> float:
    try:
        import resource
    except ImportError:  # Windows
        return 0.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports KiB


def _run_case(task: _Task, protocol: Protocol, identifier: str, cache_folder: str) -> tuple[str, dict | None, str, bool, float]:
    """Worker body: (case_id, features or None, error message, from_cache, peak RSS MiB). Never raises."""
    return (*_extract_one(task, protocol, identifier, cache_folder), _peak_rss_mib())


def _extract_one(task: _Task, protocol: Protocol, identifier: str, cache_folder: str) -> tuple[str, dict | None, str, bool]:
    try:
        label_text = task.label.strip() or "1"
        try:
            label = int(label_text)
        except ValueError:
            raise CaseInputError(f"mask_label {task.label!r} is not an integer label value") from None
        image, mask = Path(task.image), Path(task.mask)
        for path in (image, mask):
            if not path.exists():
                raise CaseInputError(f"{path}: file not found")
        key = cache.case_key(image, mask, label_text, task.roi, task.series_uid, identifier)
        hit = cache.load(Path(cache_folder), key)
        if hit is not None:
            return task.case_id, hit, "", True
        from site_client.extraction.case import extract_case

        features = extract_case(image, mask, protocol, label=label, roi=task.roi, series_uid=task.series_uid)
        cache.store(Path(cache_folder), key, features)
        return task.case_id, features, "", False
    except CaseInputError as exc:
        return task.case_id, None, str(exc), False
    except MemoryError:
        return task.case_id, None, "out of memory while extracting (raise memory or lower extraction.max_voxels)", False
    except Exception as exc:  # a bug or an unexpected library error: keep the run going, report it
        last = traceback.extract_tb(exc.__traceback__)[-1]
        return task.case_id, None, f"internal error {type(exc).__name__}: {exc} (at {Path(last.filename).name}:{last.lineno})", False


def _tasks(rows: list[ManifestRow]) -> tuple[list[_Task], list[tuple[str, str]]]:
    """Tasks for valid rows, and (case_id, reason) for rows that cannot even be attempted."""
    tasks, bad = [], []
    seen: set[str] = set()
    for row in rows:
        if not row.case_id:
            bad.append((f"<line {row.line}>", f"manifest line {row.line}: empty case_id"))
            continue
        if row.case_id in seen:
            bad.append((row.case_id, f"manifest line {row.line}: case_id {row.case_id!r} repeated; case ids must be unique"))
            continue
        seen.add(row.case_id)
        tasks.append(_Task(row.case_id, str(row.image), str(row.mask), row.mask_label_text, row.mask_roi, row.series_uid))
    return tasks, bad


def _carried_columns(protocol: Protocol, columns: list[str], manifest: Path) -> list[str]:
    wanted = [protocol.label.column, *protocol.covariates.names()]
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
) -> ExtractionResult:
    """Extract every manifest case into ``out_path`` (.csv or .parquet), in ``workers`` processes (default: all cores).

    Raises :class:`ManifestError` / :class:`TableError` for problems of the whole run (unreadable manifest,
    missing label column, unsupported output extension); per-case problems end up in ``FILE.errors.csv``.
    """
    start = time.perf_counter()
    out_path = Path(out_path)
    table_format(out_path)  # fail early on a bad extension
    if not isinstance(protocol, Protocol):
        protocol = load_protocol(protocol)
    identifier = protocol_id(protocol)
    manifest = read_manifest(manifest_path)
    carried = _carried_columns(protocol, manifest.columns, manifest.path)
    tasks, failed = _tasks(manifest.rows)
    by_id = {row.case_id: row for row in manifest.rows}
    cache_folder = str(cache.cache_dir(out_path))
    workers = max(1, workers or os.cpu_count() or 1)
    results: dict[str, dict[str, float]] = {}
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
            task_id = bar.add_task("extract", total=len(manifest.rows), failed=len(failed), cached=0, rate="")
            bar.advance(task_id, len(failed))

            def record(case_id: str, features: dict | None, error: str, from_cache: bool, rss: float = 0.0) -> None:
                nonlocal skipped, peak_rss
                peak_rss = max(peak_rss, rss)
                if features is None:
                    failed.append((case_id, error))
                else:
                    results[case_id] = features
                    skipped += from_cache
                elapsed = max(time.perf_counter() - start, 1e-9)
                done = len(results) + len(failed)
                bar.update(task_id, advance=1, failed=len(failed), cached=skipped, rate=f"{done / elapsed:.2f} cases/s")
                if time.perf_counter() - last_logged[0] >= PROGRESS_LOG_EVERY_S or done == len(manifest.rows):
                    last_logged[0] = time.perf_counter()
                    log.info("extracted %d/%d case(s): %d failed, %d from cache, %.2f cases/s", done,
                             len(manifest.rows), len(failed), skipped, done / elapsed)

            if pool is None:
                for task in tasks:
                    record(*_run_case(task, protocol, identifier, cache_folder))
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
                            record(*single.submit(_run_case, task, protocol, identifier, cache_folder).result())
                        except BrokenProcessPool:
                            record(task.case_id, None, "worker process died while extracting this case (out of memory or crash)", False)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)

    feature_names = _feature_names([results[t.case_id] for t in tasks if t.case_id in results])
    for case_id in list(results):
        if list(results[case_id]) != feature_names:
            failed.append((case_id, "feature set differs from the other cases (stale cache or engine bug)"))
            del results[case_id]
    rows = []
    for task in tasks:
        if task.case_id in results:
            row = by_id[task.case_id]
            rows.append({"case_id": task.case_id, **{c: row.values.get(c, "") for c in carried}, **results[task.case_id]})
    frame = pd.DataFrame(rows, columns=["case_id", *carried, *feature_names])
    for column in ["case_id", *carried]:
        frame[column] = frame[column].astype(str)
    write_table_atomic(frame, out_path)
    errors_path = _write_errors(out_path, failed, by_id)
    return ExtractionResult(out_path, len(rows), failed, skipped, errors_path, time.perf_counter() - start, peak_rss)


def _collect(futures: dict[Future, _Task], record) -> list[_Task]:
    """Record every finished case; return the tasks lost to a broken pool."""
    broken: list[_Task] = []
    for future in as_completed(futures):
        try:
            record(*future.result())
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


def _write_errors(out_path: Path, failed: list[tuple[str, str]], by_id: dict[str, ManifestRow]) -> Path | None:
    """``FILE.errors.csv`` (atomically) when some case failed; a stale one from an earlier run is removed."""
    path = errors_path_for(out_path)
    if not failed:
        path.unlink(missing_ok=True)
        return None
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["case_id", "line", "image", "mask", "error"])
    for case_id, reason in failed:
        row = by_id.get(case_id)
        writer.writerow([case_id, row.line if row else "", row.image if row else "", row.mask if row else "", reason])
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(buffer.getvalue(), encoding="utf-8")
    os.replace(temporary, path)
    return path
