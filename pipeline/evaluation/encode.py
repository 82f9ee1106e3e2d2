"""Batched inference for the ``evaluate`` stage: the models, latents, decoded faces, descriptors.

:func:`load_models` reads the face and voice model files (any registered kind,
:mod:`pipeline.models.registry`) and checks them against each other and the dataset;
:func:`encode_split` reads a split with the face model's latents of its real faces;
:func:`voice_latents` and :func:`decode_latents` run the voice -> face path and the decoder
over a whole split in batches (:func:`pipeline.models.inference.batched`);
:func:`add_descriptors` adds dlib's face descriptors of real and decoded faces.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from pipeline.evaluation.scoring import LABEL_COLUMNS, DescriptorCheck, HeldOut, Prediction
from pipeline.loaders import load_split, split_shards
from pipeline.models.inference import batched
from pipeline.models.registry import (
    FaceModel,
    check_fits_dataset,
    load_face_model,
    load_voice_model,
)
from pipeline.models.voice_to_face import VoiceToFace, pair_models


@dataclass(frozen=True)
class Models:
    """The face and voice models as one voice -> face path, with what their files recorded."""

    voice_to_face: VoiceToFace
    """The voice model on top of the face model."""
    provenance: dict[str, Mapping[str, Any]]
    """``{"face": ..., "voice": ...}`` as saved with each model."""

    @property
    def face(self) -> FaceModel:
        """Return the face model."""
        return self.voice_to_face.face

    def clip_emotions(self, labels: torch.Tensor) -> torch.Tensor | None:
        """Return clips' emotion labels ``(N,)`` as the face model takes them (None: none)."""
        return self.voice_to_face.clip_emotions(labels)


def load_models(
    face_path: str | Path, voice_path: str | Path, meta: Mapping[str, Any]
) -> Models:
    """Return the face and voice models (eval mode, CPU), checked against each other.

    Raises ``ValueError`` naming the files when the voice model's output is not the face
    model's voice target, or the face model was trained on other emotions or face sizes than
    the dataset's (``meta``: its ``meta.json``).
    """
    face, voice = load_face_model(face_path), load_voice_model(voice_path)
    check_fits_dataset(face.model, meta, face_path)
    return Models(pair_models(face, voice),
                  {"face": face.provenance, "voice": voice.provenance})


@dataclass(frozen=True)
class EncodedSplit:
    """One split in clip-id order: labels, faces, voices and the face model's latents."""

    labels: pd.DataFrame
    """Columns ``clip_id, speaker_id, sex, age, emotion``."""
    faces: np.ndarray
    """``(N, S, S)`` float32 in [0, 1]."""
    audio: torch.Tensor
    """``(N, L)`` waveforms, or ``(N, 0)`` when not read."""
    emotion: torch.Tensor
    """``(N,)`` emotion labels (index into ``meta.json``'s emotions)."""
    latents: np.ndarray
    """``(N, latent_dim)``: latent of each real face's voice target with its own emotion."""


def encode_split(
    models: Models, dataset_dir: str | Path, split: str, with_audio: bool
) -> EncodedSplit:
    """Return ``split`` read from the shards with the face model's latents of its faces."""
    tensors = load_split(dataset_dir, split, with_audio=with_audio)
    labels = read_labels(dataset_dir, split)
    if labels["clip_id"].tolist() != tensors.clip_id:
        raise ValueError(f"{dataset_dir}/{split}: label and tensor rows are not aligned")
    latents = encode_faces(models.face, tensors.face, models.clip_emotions(tensors.emotion))
    return EncodedSplit(labels, tensors.face[:, 0].numpy(), tensors.audio, tensors.emotion,
                        latents)


def read_labels(dataset_dir: str | Path, split: str) -> pd.DataFrame:
    """Return ``clip_id, speaker_id, sex, age, emotion`` of ``split``, sorted by clip id."""
    paths = split_shards(dataset_dir, split)
    if not paths:
        raise FileNotFoundError(f"no shards for split {split!r} in {dataset_dir}")
    tables = [pq.read_table(p, columns=list(LABEL_COLUMNS)) for p in paths]
    return pa.concat_tables(tables).sort_by("clip_id").to_pandas()


def encode_faces(
    face: FaceModel, faces: torch.Tensor, emotion: torch.Tensor | None
) -> np.ndarray:
    """Return latents ``(N, latent_dim)`` of faces ``(N, 1, S, S)`` with labels ``(N,)``.

    The latent of a face's own voice target: what a voice model that predicted the target
    exactly would give (for the VAE: ``mu`` of the face with its emotion code).
    """
    return batched(lambda f, e: face.latents(face.voice_target(f), e), faces,
                   emotion).double().numpy()


def voice_latents(
    models: Models, audio: torch.Tensor, emotion: torch.Tensor | None
) -> np.ndarray:
    """Return latents ``(N, latent_dim)`` predicted from waveforms ``(N, L)`` and labels ``(N,)``.

    Uses the one voice -> face definition, :meth:`VoiceToFace.voice_latents`.
    """
    return batched(models.voice_to_face.voice_latents, audio, emotion).double().numpy()


def decode_latents(
    face: FaceModel, latents: np.ndarray, emotion: torch.Tensor | None = None
) -> np.ndarray:
    """Return faces ``(N, S, S)`` float32 in [0, 1] decoded from latents ``(N, latent_dim)``.

    ``emotion`` ``(N,)``: each latent's emotion label; None for a face model without emotions.
    """
    z = torch.as_tensor(np.asarray(latents), dtype=torch.float32)
    return batched(face.decode, z, emotion)[:, 0].numpy()


def add_descriptors(
    held_out: HeldOut, predictions: Sequence[Prediction]
) -> tuple[HeldOut, list[Prediction], DescriptorCheck]:
    """Return the test set and predictions with dlib 128-d descriptors of their faces."""
    real = _unique_descriptors(held_out.faces)
    out, ok = [], {}
    for prediction in predictions:
        found = _unique_descriptors(prediction.faces)
        out.append(replace(prediction, descriptors=found.descriptors))
        ok[prediction.name] = found.landmarks_ok
    return (replace(held_out, descriptors=real.descriptors), out,
            DescriptorCheck(real.landmarks_ok, ok))


def _unique_descriptors(faces: np.ndarray) -> Any:
    """Return dlib descriptors of ``faces``, computing each distinct face once (~100 ms each).

    Constant baselines decode to one or two distinct faces, so this saves most of their cost.
    """
    from pipeline.evaluation.face_descriptors import FaceDescriptors, face_descriptors

    flat = np.asarray(faces).reshape(len(faces), -1)
    unique, inverse = np.unique(flat, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    found = face_descriptors(unique.reshape(-1, *faces.shape[1:]), progress=True)
    return FaceDescriptors(found.descriptors[inverse], found.landmarks_ok[inverse],
                           found.landmark_error[inverse])
