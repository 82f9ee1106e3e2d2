"""The embed stage's table: read back clip embeddings, aligned with a list of clip ids."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch

EMBEDDINGS_PARQUET = "embeddings.parquet"


def read_embeddings(embed_dir: str | Path) -> tuple[list[str], np.ndarray]:
    """Return ``(clip ids, embeddings float32 (N, 256))`` of an embed stage output."""
    table = pq.read_table(Path(embed_dir) / EMBEDDINGS_PARQUET, columns=["clip_id", "embedding"])
    vectors = np.asarray(table.column("embedding").to_pylist(), dtype=np.float32)
    return table.column("clip_id").to_pylist(), vectors.reshape(len(table), -1)


def clip_embeddings(embed_dir: str | Path, clip_ids: Sequence[str]) -> torch.Tensor:
    """Return the embeddings ``(N, 256)`` of ``clip_ids``, in their order.

    Raises:
        ValueError: naming the clips the embed stage has no embedding of (it quarantined
            them: see its ``quarantine.parquet``).
    """
    ids, vectors = read_embeddings(embed_dir)
    row = {clip: i for i, clip in enumerate(ids)}
    missing = [clip for clip in clip_ids if clip not in row]
    if missing:
        raise ValueError(f"{embed_dir}: no speaker embedding for {len(missing)} clip(s) "
                         f"{missing[:5]} (see its quarantine.parquet)")
    return torch.from_numpy(vectors[[row[clip] for clip in clip_ids]])
