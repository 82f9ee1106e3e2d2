"""Dataset catalogues: the ``download`` stage's library entry point.

:func:`prepare_dataset` builds ``<out>/catalogue.parquet`` (:data:`pipeline.schemas.CATALOGUE`),
``<out>/media/`` and the stage report for the dataset chosen in ``params.download.dataset``.

Fetched datasets (``crema-d``, ``folder``) go through a download cache directory kept outside
the DVC output: files are fetched and verified into ``<cache>/<dataset>/files/`` (resumable
``.part`` files and the verified-state record live there too), then hard-linked into a fresh
``<out>/media/`` that replaces the old output atomically. The output therefore holds exactly
the current selection and only verified files, whatever a killed earlier run left behind, and
DVC may delete the output before a run (its default) without losing any downloaded byte.

The output depends on the data alone: fetch settings and this run's history (files fetched,
already verified, resumed) go to the log and to ``<cache>/<dataset>/last-run.json``, so a
changed ``download.workers`` or a warm cache leaves every byte, and the stages downstream, as
they were. A dataset that yields no clip fails the stage, after writing the report and the
quarantine that say why.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline import schemas
from pipeline.config import DownloadParams, to_dict
from pipeline.download import crema_d, folder
from pipeline.download.demo import catalogue as demo
from pipeline.download.fetch import (
    DownloadError,
    FetchItem,
    FetchOptions,
    FetchResult,
    VerifiedState,
    fetch_all,
    link_or_copy,
    safe_destination,
)
from pipeline.runtime import (
    EmptyOutputError,
    StageReport,
    atomic_directory,
    atomic_path,
    atomic_write_json,
)

log = logging.getLogger(__name__)

CATALOGUE_FILE = "catalogue.parquet"
MEDIA_DIR = "media"
ROLES = ("video", "audio")
LAST_RUN_JSON = "last-run.json"
SOURCE_KEYS = frozenset({"raw_base_url", "media_base_url", "local_dir", "videos_dir",
                         "labels_csv"})
"""Params that say where a dataset comes from, not which data it is."""


def fetch_options(params: DownloadParams, progress: bool = True) -> FetchOptions:
    """Return the fetch settings of the ``download`` params."""
    return FetchOptions(workers=params.workers, retries=params.retries,
                        timeout_s=params.timeout_s, backoff_s=params.backoff_s,
                        progress=progress)


def data_params(params: DownloadParams) -> dict:
    """Return the params that define the data: the chosen dataset's selection, not its source.

    How it is fetched (workers, retries, timeouts) and where from (URLs, directories) leave
    the catalogue's content as it is, so they stay out of the hashed output: changing them
    must not re-run the stages downstream.
    """
    section = to_dict(getattr(params, params.dataset.replace("-", "_")))
    return {k: v for k, v in section.items() if k not in SOURCE_KEYS}


def prepare_dataset(params: DownloadParams, out_dir: Path, cache_dir: Path,
                    progress: bool = True) -> StageReport:
    """Return the report after cataloguing (and fetching) the configured dataset into ``out_dir``.

    ``report.info["missing_required"]`` counts files that should be there and are not; the
    caller fails the stage when it is non-zero (the rest is still written). The output holds
    only what depends on the data; this run's fetch history goes to the log and to
    ``<cache>/<dataset>/last-run.json``. Raises :class:`~pipeline.runtime.EmptyOutputError`, after
    writing the report and quarantine, when no clip is kept.
    """
    report = StageReport("download")
    # No code revision, machine or run facts here: the output must be byte-identical across
    # runs, commits and fetch settings (dvc.lock already pins the code that made it).
    report.info.update(dataset=params.dataset, params=data_params(params))
    options = fetch_options(params, progress)
    with atomic_directory(out_dir) as tmp:
        media = tmp / MEDIA_DIR
        if params.dataset == "demo":
            clips = demo.catalogue_demo(params.demo, media, report)
        else:
            cache = cache_dir / params.dataset
            if params.dataset == "crema-d":
                planned = crema_d.catalogue_crema_d(params.crema_d, cache, options, report)
            else:
                planned = folder.catalogue_folder(params.folder, report)
            clips = fetch_and_link(planned, cache, media, options, report)
        write_catalogue(clips, tmp / CATALOGUE_FILE)
        report.count("clips_catalogued", len(clips))
        report.info["missing_required"] = report.counts["files_failed"]
        report.write(tmp)
    log.info("catalogued %d clips of %s into %s (%d rejected)", len(clips), params.dataset,
             out_dir, report.n_rejected)
    if clips.empty:
        raise EmptyOutputError(empty_catalogue_problem(params, report), report, out_dir)
    return report


def empty_catalogue_problem(params: DownloadParams, report: StageReport) -> str:
    """Return why no clip was kept: what was listed, and what the selection left out."""
    source = {"folder": f"labels CSV {params.folder.labels_csv}",
              "crema-d": "CREMA-D", "demo": "the demo corpus"}[params.dataset]
    parts = [f"{report.info.get('clips_listed', 0)} listed"]
    if report.info.get("clips_not_selected"):
        parts.append(f"{report.info['clips_not_selected']} not selected by download.crema_d")
    if report.n_rejected:
        parts.append(f"{report.n_rejected} quarantined")
    return f"no clip kept from {source}: {', '.join(parts)}"


def fetch_and_link(planned: pd.DataFrame, cache: Path, media: Path, options: FetchOptions,
                   report: StageReport) -> pd.DataFrame:
    """Return the planned clips whose files all verified, linked under ``media``.

    ``planned`` has, per role, ``<role>_src``, ``<role>_path``, ``<role>_size`` and
    ``<role>_sha256`` (None where the role is absent or the expectation is unknown). A clip
    with a file that failed (or is empty) is quarantined once, with the URL and reason, and
    none of its files is linked: ``media`` holds exactly the kept clips.
    """
    state = VerifiedState(cache / "verified.json")
    records = planned.to_dict("records")
    wanted = [{role: _fetch_item(row, role) for role in ROLES if _present(row, f"{role}_src")}
              for row in records]
    unique = list(dict.fromkeys(item for roles in wanted for item in roles.values()))
    started = time.monotonic()
    results = dict(zip(unique, fetch_all(unique, cache / "files", options, state),
                       strict=True))
    state.forget_missing()
    state.save()
    record_fetch_run(results.values(), options, cache, time.monotonic() - started)
    kept = []
    for row, roles in zip(records, wanted, strict=True):
        outcomes = {role: results[item] for role, item in roles.items()}
        problem = _clip_problem(outcomes)
        if problem is not None:
            report.reject(row["clip_id"], problem.reason, problem.detail, problem.url)
            continue
        for role, result in outcomes.items():
            link_or_copy(result.path, safe_destination(media, result.item.dest))
            row.update({f"{role}_path": f"{MEDIA_DIR}/{result.item.dest}",
                        f"{role}_size": result.size, f"{role}_sha256": result.sha256})
        kept.append(row)
    for result in results.values():
        report.count("files_verified" if result.ok else "files_failed")
    return pd.DataFrame(kept, columns=planned.columns)


def _fetch_item(row: dict, role: str) -> FetchItem:
    return FetchItem(row[f"{role}_src"], row[f"{role}_path"],
                     _int_or_none(row[f"{role}_size"]), row[f"{role}_sha256"])


def _clip_problem(outcomes: dict[str, FetchResult]) -> DownloadError | None:
    """Return why a clip cannot be kept (its first failed or empty file), or None."""
    for result in outcomes.values():
        if not result.ok:
            return result.error
    for result in outcomes.values():
        if result.size == 0:
            return DownloadError("empty_file", f"{result.item.dest} is empty (0 bytes)",
                                 result.item.url)
    return None


def record_fetch_run(results: Iterable[FetchResult], options: FetchOptions, cache: Path,
                     seconds: float) -> None:
    """Log this run's fetch history and write it to ``<cache>/last-run.json`` (not hashed)."""
    run: Counter[str] = Counter()
    for result in results:
        if not result.ok:
            run["files_failed"] += 1
        elif result.skipped:
            run["files_already_verified"] += 1
        else:
            run["files_fetched"] += 1
            run["bytes_fetched"] += result.size - result.resumed_from
            run["files_resumed"] += bool(result.resumed_from)
    log.info("fetch: %s in %.1f s (workers=%d, retries=%d, timeout %.0f s)",
             ", ".join(f"{k}={v}" for k, v in sorted(run.items())) or "nothing to fetch",
             seconds, options.workers, options.retries, options.timeout_s)
    atomic_write_json(cache / LAST_RUN_JSON, {
        "counts": dict(run), "seconds": round(seconds, 3),
        "options": {"workers": options.workers, "retries": options.retries,
                    "timeout_s": options.timeout_s, "backoff_s": options.backoff_s},
    })


def _present(row: dict, column: str) -> bool:
    return isinstance(row.get(column), str) and bool(row[column])


def _int_or_none(value: object) -> int | None:
    return None if value is None or pd.isna(value) else int(value)


def write_catalogue(clips: pd.DataFrame, path: Path) -> pa.Table:
    """Write ``clips`` as the CATALOGUE table at ``path`` (atomically); return the table."""
    columns = {}
    for name in schemas.CATALOGUE.names:
        values = clips[name] if name in clips.columns else pd.Series([None] * len(clips))
        columns[name] = [None if _missing(v) else v for v in values]
    table = schemas.conform(pa.table(columns), schemas.CATALOGUE)
    table = table.sort_by("clip_id")
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return table


def _missing(value: object) -> bool:
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False
