"""The audio stage: every catalogue clip through :func:`~pipeline.audio.prepare.prepare_audio`.

Runs in parallel worker processes and writes the ``AUDIO`` shards plus the stage report.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from pipeline.audio.prepare import PreparedAudio, prepare_audio
from pipeline.config import AudioParams
from pipeline.runtime import QuarantineError, StageReport, atomic_directory, default_workers
from pipeline.schemas import AUDIO
from pipeline.shards import ShardWriter

log = logging.getLogger(__name__)

ROW_GROUP_ROWS = 256



def media_path(row: dict, catalogue_dir: Path) -> Path | None:
    """Return a catalogue row's audio source: its separate audio file, else its video."""
    relative = row.get("audio_path") or row.get("video_path")
    return catalogue_dir / relative if relative else None


def _prepare_item(item: tuple[str, str, AudioParams]) -> tuple[str, PreparedAudio | tuple]:
    """Return ``(clip_id, PreparedAudio)`` or ``(clip_id, (reason, detail, source))``."""
    clip_id, path, params = item
    try:
        return clip_id, prepare_audio(path, params)
    except QuarantineError as error:  # exceptions with extra fields do not pickle back
        return clip_id, (error.reason, error.detail, error.source)


def _results(items: list, workers: int) -> Iterator[tuple[str, PreparedAudio | tuple]]:
    if workers <= 1 or len(items) <= 1:
        yield from map(_prepare_item, items)
        return
    chunksize = max(1, min(16, len(items) // (workers * 4)))
    with ProcessPoolExecutor(max_workers=workers) as pool:
        yield from pool.map(_prepare_item, items, chunksize=chunksize)


def _row(clip_id: str, prepared: PreparedAudio) -> dict:
    return {
        "clip_id": clip_id,
        "pcm": prepared.pcm.astype("<i2").tobytes(),
        "sample_rate": prepared.sample_rate,
        "n_samples": len(prepared.pcm),
        "original_duration_s": prepared.original_duration_s,
        "speech_duration_s": prepared.speech_duration_s,
        "silences_removed": prepared.silences_removed,
    }


def process_catalogue(
    catalogue: str | Path, out_dir: str | Path, params: AudioParams
) -> StageReport:
    """Return the report of preparing every catalogue clip's audio into ``out_dir``.

    Writes ``<out_dir>/audio-NNNNN.parquet`` (:data:`pipeline.schemas.AUDIO`, sorted by
    clip id), ``report.json`` and ``quarantine.parquet``. The output is the same whatever
    ``params.workers`` is.
    """
    catalogue = Path(catalogue)
    rows = sorted(pq.read_table(catalogue).to_pylist(), key=lambda r: r["clip_id"])
    report = StageReport("audio")
    items = []
    for row in rows:
        path = media_path(row, catalogue.parent)
        if path is None:
            report.reject(row["clip_id"], "no_audio", "catalogue row has no audio or video file")
        else:
            items.append((row["clip_id"], str(path), params))
    workers = default_workers(params.workers)
    stats = {"original_s": 0.0, "speech_s": 0.0, "truncated": 0}
    with atomic_directory(out_dir) as tmp:
        with ShardWriter(tmp, "audio", AUDIO, params.shard_mb * 2**20, ROW_GROUP_ROWS) as shards:
            results = tqdm(_results(items, workers), total=len(items), desc="audio", unit="clip")
            for clip_id, result in results:
                if isinstance(result, tuple):
                    report.reject(clip_id, *result)
                    continue
                shards.write(pa.Table.from_pylist([_row(clip_id, result)]))
                report.count("written")
                stats["original_s"] += result.original_duration_s
                stats["speech_s"] += result.speech_duration_s
                stats["truncated"] += int(result.truncated)
        report.info.update(
            catalogue_clips=len(rows),
            sample_rate=params.sample_rate,
            n_samples=params.n_samples,
            shards=[p.name for p in shards.paths],
            input_hours=round(stats["original_s"] / 3600, 4),
            speech_hours=round(stats["speech_s"] / 3600, 4),
            truncated_inputs=stats["truncated"],
        )
        report.write(tmp)
    log.info("audio: %d written, %d quarantined %s", report.counts["written"],
             report.n_rejected, dict(report.reasons()))
    return report
