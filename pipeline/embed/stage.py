"""The embed stage: every catalogue clip's voice through the pretrained speaker encoder.

Each clip's source audio (its separate audio file, else its video's track) is decoded at the
encoder's own 16 kHz, its long silences removed by the audio stage's rule, and embedded
(:func:`pipeline.embed.encoder.embed_media`). Clips the audio stage would
quarantine (no audio, undecodable, silent, too little speech) are quarantined here for the
same reason; every catalogue clip is either written or quarantined.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from pipeline.audio.stage import media_path
from pipeline.config import AudioParams, EmbedParams
from pipeline.embed.encoder import SPEAKER_RATE, SpeakerEncoder, embed_media
from pipeline.embed.table import EMBEDDINGS_PARQUET
from pipeline.runtime import QuarantineError, StageReport, atomic_directory
from pipeline.schemas import SPEAKER_EMBEDDINGS, conform

log = logging.getLogger(__name__)



def embed_catalogue(
    catalogue: str | Path, out_dir: str | Path, params: EmbedParams, audio_params: AudioParams
) -> StageReport:
    """Return the report of embedding every catalogue clip's voice into ``out_dir``.

    Writes ``<out_dir>/embeddings.parquet`` (:data:`pipeline.schemas.SPEAKER_EMBEDDINGS`,
    sorted by clip id), ``report.json`` and ``quarantine.parquet``.

    Raises:
        ValueError: no clip could be embedded.
    """
    catalogue = Path(catalogue)
    rows = sorted(pq.read_table(catalogue).to_pylist(), key=lambda r: r["clip_id"])
    encoder = SpeakerEncoder(params.encoder)
    report = StageReport("embed")
    written = []
    for row in tqdm(rows, desc="embed", unit="clip", disable=None):
        path = media_path(row, catalogue.parent)
        if path is None:
            report.reject(row["clip_id"], "no_audio", "catalogue row has no audio or video file")
            continue
        try:
            embedding = embed_media(path, encoder, audio_params)
        except QuarantineError as error:
            report.reject_error(row["clip_id"], error)
            continue
        written.append(_row(row, embedding.vector, embedding.speech_duration_s, params.encoder,
                            path.relative_to(catalogue.parent)))
        report.count("written")
    if not written:
        raise ValueError(f"{catalogue}: none of its {len(rows)} clips could be embedded "
                         f"({dict(report.reasons())})")
    with atomic_directory(out_dir) as tmp:
        table = conform(pa.Table.from_pylist(written), SPEAKER_EMBEDDINGS)
        pq.write_table(table, tmp / EMBEDDINGS_PARQUET)
        report.info.update(catalogue_clips=len(rows), encoder=params.encoder,
                           sample_rate=SPEAKER_RATE,
                           speech_hours=round(sum(r["speech_duration_s"] for r in written)
                                              / 3600, 4))
        report.write(tmp)
    log.info("embed: %d written, %d quarantined %s", report.counts["written"],
             report.n_rejected, dict(report.reasons()))
    return report


def _row(row: dict, vector: np.ndarray, speech_s: float, encoder: str, source: Path) -> dict:
    return {"clip_id": row["clip_id"], "speaker_id": row["speaker_id"],
            "embedding": vector.tolist(), "encoder": encoder, "sample_rate": SPEAKER_RATE,
            "speech_duration_s": speech_s, "source": source.as_posix()}
