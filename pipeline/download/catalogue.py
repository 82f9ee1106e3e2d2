"""Dataset catalogues: the ``download`` stage's library entry point.

:func:`prepare_dataset` builds ``<out>/catalogue.parquet`` (:data:`pipeline.schemas.CATALOGUE`),
``<out>/media/`` and the stage report for the dataset chosen in ``params.download.dataset``.

Fetched datasets (``crema-d``, ``folder``) go through a download cache directory kept outside
the DVC output: files are fetched and verified into ``<cache>/<dataset>/files/`` (resumable
``.part`` files and the verified-state record live there too), then hard-linked into a fresh
``<out>/media/`` that replaces the old output atomically. The output therefore holds exactly
the current selection and only verified files, whatever a killed earlier run left behind, and
DVC may delete the output before a run (its default) without losing any downloaded byte.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline import schemas
from pipeline.config import DownloadParams, to_dict
from pipeline.download import crema_d, folder
from pipeline.download.demo import catalogue as demo
from pipeline.download.fetch import (
    FetchItem,
    FetchOptions,
    FetchResult,
    VerifiedState,
    fetch_all,
    link_or_copy,
    safe_destination,
)
from pipeline.runtime import StageReport, atomic_directory, atomic_path

log = logging.getLogger(__name__)

CATALOGUE_FILE = "catalogue.parquet"
MEDIA_DIR = "media"
ROLES = ("video", "audio")


def fetch_options(params: DownloadParams, progress: bool = True) -> FetchOptions:
    """Return the fetch settings of the ``download`` params."""
    return FetchOptions(workers=params.workers, retries=params.retries,
                        timeout_s=params.timeout_s, backoff_s=params.backoff_s,
                        progress=progress)


def prepare_dataset(params: DownloadParams, out_dir: Path, cache_dir: Path,
                    progress: bool = True) -> StageReport:
    """Return the report after cataloguing (and fetching) the configured dataset into ``out_dir``.

    ``report.info["missing_required"]`` counts files that should be there and are not; the
    caller fails the stage when it is non-zero (the rest is still written).
    """
    report = StageReport("download")
    # No code revision or machine facts here: the output must be byte-identical across runs
    # and commits (dvc.lock already pins the code that made it).
    report.info.update(dataset=params.dataset, params=to_dict(params), cache_dir=str(cache_dir))
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
    return report


def fetch_and_link(planned: pd.DataFrame, cache: Path, media: Path, options: FetchOptions,
                   report: StageReport) -> pd.DataFrame:
    """Return the planned clips whose files all verified, linked under ``media``.

    ``planned`` has, per role, ``<role>_src``, ``<role>_path``, ``<role>_size`` and
    ``<role>_sha256`` (None where the role is absent or the expectation is unknown). Each
    failed file is quarantined with its URL and reason and its clip left out.
    """
    files_root = cache / "files"
    state = VerifiedState(cache / "verified.json")
    records = planned.to_dict("records")
    jobs = [(i, role, FetchItem(row[f"{role}_src"], row[f"{role}_path"],
                                _int_or_none(row[f"{role}_size"]), row[f"{role}_sha256"]))
            for i, row in enumerate(records) for role in ROLES if _present(row, f"{role}_src")]
    results = fetch_all([item for _, _, item in jobs], files_root, options, state)
    failed = set()
    for (i, role, _), result in zip(jobs, results, strict=True):
        _count(report, result)
        if not result.ok:
            failed.add(i)
            error = result.error
            report.reject(records[i]["clip_id"], error.reason, error.detail, error.url)
            continue
        link_or_copy(result.path, safe_destination(media, result.item.dest))
        records[i].update({f"{role}_path": f"{MEDIA_DIR}/{result.item.dest}",
                           f"{role}_size": result.size, f"{role}_sha256": result.sha256})
    state.forget_missing()
    state.save()
    kept = [row for i, row in enumerate(records) if i not in failed]
    return pd.DataFrame(kept, columns=planned.columns)


def _present(row: dict, column: str) -> bool:
    return isinstance(row.get(column), str) and bool(row[column])


def _int_or_none(value: object) -> int | None:
    return None if value is None or pd.isna(value) else int(value)


def _count(report: StageReport, result: FetchResult) -> None:
    if not result.ok:
        report.count("files_failed")
    elif result.skipped:
        report.count("files_already_verified")
    else:
        report.count("files_fetched")
        report.count("bytes_fetched", result.size - result.resumed_from)
        if result.resumed_from:
            report.count("files_resumed")


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
