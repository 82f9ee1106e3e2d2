"""The ``evaluate`` stage's image grids: generated faces per test speaker, and per emotion."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from PIL import Image

from pipeline.evaluation.encode import EncodedSplit, Models, decode_latents, voice_latents
from pipeline.images import image_grid

GRID_SCALE = 2
"""Grid tiles are faces upscaled by this factor (nearest neighbour)."""


def speaker_grid(test: EncodedSplit, generated: np.ndarray, max_clips: int) -> Image.Image:
    """Return one row per test speaker: a real face, then the faces generated from its clips.

    Captions: the speaker id over the real face, each clip's emotion over its generated face;
    at most ``max_clips`` clips per speaker (in clip-id order), blank tiles pad short rows.
    """
    by_speaker = test.labels.groupby("speaker_id", sort=True).indices
    ncols = 1 + min(max_clips, max(len(rows) for rows in by_speaker.values()))
    blank = np.ones_like(test.faces[0])
    tiles, captions = [], []
    for speaker, rows in by_speaker.items():
        rows = np.sort(rows)[:max_clips]
        tiles += [test.faces[rows[0]], *generated[rows]]
        captions += [str(speaker), *(str(e) if pd.notna(e) else ""
                                     for e in test.labels["emotion"].iloc[rows])]
        tiles += [blank] * (ncols - 1 - len(rows))
        captions += [""] * (ncols - 1 - len(rows))
    return image_grid(tiles, ncols=ncols, labels=captions, scale=GRID_SCALE)


def emotion_grid(models: Models, test: EncodedSplit, n_clips: int) -> Image.Image:
    """Return the emotion grid: real faces, then each clip's voice decoded with every emotion.

    Columns: one clip of each of up to ``n_clips`` test speakers spread over the sorted
    speakers. Rows: the real face (captioned with speaker and labelled emotion), then one row
    per emotion of the face model (a single "generated" row when it takes no emotion).
    """
    first = test.labels.reset_index(drop=True).groupby("speaker_id", sort=True).head(1).index
    picks = np.asarray(first)[np.unique(np.linspace(0, len(first) - 1, n_clips).round()
                                        .astype(int))]
    audio = test.audio[picks]
    tiles = list(test.faces[picks])
    captions = [f"{test.labels['speaker_id'].iloc[i]} {test.labels['emotion'].iloc[i]}"
                for i in picks]
    variants: list[tuple[str, torch.Tensor | None]] = [("generated", None)]
    if models.face.emotions:
        variants = [(f"as {e}", torch.full((len(picks),), i))
                    for i, e in enumerate(models.face.emotions)]
    for caption, label in variants:
        tiles += list(decode_latents(models.face, voice_latents(models, audio, label), label))
        captions += [caption] * len(picks)
    return image_grid(tiles, ncols=len(picks), labels=captions, scale=GRID_SCALE)
