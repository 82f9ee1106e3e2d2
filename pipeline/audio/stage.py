"""The audio stage: every catalogue clip through :func:`~pipeline.audio.prepare.prepare_audio`.

Runs in parallel worker processes and writes the ``AUDIO`` shards plus the stage report.
"""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.audio.prepare import PreparedAudio, prepare_audio
from pipeline.config import AudioParams
from pipeline.runtime import (
    EmptyOutputError,
    QuarantineError,
    StageReport,
    atomic_directory,
    default_workers,
    map_items,
    remove_stale_temporaries,
)
from pipeline.schemas import AUDIO
from pipeline.shards import ShardWriter

log = logging.getLogger(__name__)

ROW_GROUP_ROWS = 256


def media_path(row: dict, catalogue_dir: Path) -> Path | None:
    """Return a catalogue row's audio source: its separate audio file, else its video."""
    relative = row.get("audio_path") or row.get("video_path")
    return catalogue_dir / relative if relative else None


def _prepare_item(item: tuple[str, str], params: AudioParams) -> PreparedAudio:
    return prepare_audio(item[1], params)


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
    ``params.workers`` is. Raises :class:`~pipeline.runtime.EmptyOutputError` (after writing
    them) when no clip's audio is kept.
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
            items.append((row["clip_id"], str(path)))
    workers = default_workers(params.workers)
    stats = {"original_s": 0.0, "speech_s": 0.0, "truncated": 0}
    remove_stale_temporaries(out_dir)
    with atomic_directory(out_dir) as tmp:
        with ShardWriter(tmp, "audio", AUDIO, params.shard_mb * 2**20, ROW_GROUP_ROWS) as shards:
            prepare = partial(_prepare_item, params=params)
            for (clip_id, _), result in map_items(prepare, items, workers, "audio"):
                if isinstance(result, QuarantineError):
                    report.reject_error(clip_id, result)
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
    if not report.counts["written"]:
        raise EmptyOutputError(f"no audio kept of {len(rows)} clips", report, out_dir)
    return report
