"""The trained models behind the app: voice -> faces, real faces -> latents, voices -> vectors.

The one module of the app that knows how models are loaded and run: it builds on
:mod:`pipeline.models.voice_to_face` (the API ``stages.generate`` uses), so that a change of
model interface touches this file only. Audio reaches it already prepared by the audio
stage's own :func:`~pipeline.audio.prepare.prepare_audio`.

Per request one pass of the voice encoder feeds the VAE posterior and decoder once per
emotion (a batch of E), so the face with each emotion costs one small decoder batch.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pipeline.audio.prepare import pcm_to_float
from pipeline.config import AudioParams
from pipeline.loaders import NO_EMOTION
from pipeline.models.voice_to_face import GenerationError, VoiceToFace, load_voice_to_face

log = logging.getLogger(__name__)

__all__ = ["FaceModel", "Generation", "GenerationError", "ModelFiles", "load_face_models"]


@dataclass(frozen=True)
class ModelFiles:
    """One trained model pair the app offers, under a name the page shows."""

    name: str
    """Name in the model picker."""
    vae: Path
    """Face VAE model file (the train_vae stage's output)."""
    voice: Path
    """Voice encoder model file (the train_voice stage's output)."""


@dataclass(frozen=True)
class Generation:
    """What one voice gives: its faces, the shown face's latent and the voice's vector."""

    faces: np.ndarray
    """``(E, S, S)`` float32 in [0, 1]: the face with each emotion (one row, unconditional)."""
    emotions: tuple[str, ...]
    """Emotion of each row of ``faces`` (empty for an unconditional VAE)."""
    shown: int
    """Row of ``faces`` asked for (the given emotion, else the model's default)."""
    latent: np.ndarray
    """``(latent_dim,)`` VAE latent of the shown face: compared with real faces' latents."""
    voice: np.ndarray
    """``(D,)`` the voice encoder's output: compared with enrolled voices."""
    voice_emotion: tuple[str, float] | None = None
    """Emotion read from the voice and its probability, when a model for it exists."""


class FaceModel:
    """A loaded voice-to-face model pair (eval mode, CPU); thread-safe for inference."""

    def __init__(self, name: str, model: VoiceToFace) -> None:
        self.name = name
        self._model = model

    @property
    def emotions(self) -> tuple[str, ...]:
        """Emotions the face model renders (empty: trained without emotion labels)."""
        return self._model.emotions if self._model.conditional else ()

    @property
    def default_emotion(self) -> str | None:
        """The emotion shown when none is asked for (None for an unconditional VAE)."""
        return self._model.default_emotion

    @property
    def image_size(self) -> int:
        """Side of the faces the VAE reads and writes."""
        return self._model.vae.config.image_size

    @property
    def reads_emotion(self) -> bool:
        """Whether the model reads the emotion from the voice (not yet: issue 18)."""
        return False

    @torch.no_grad()
    def generate(self, waveform: np.ndarray, emotion: str | None) -> Generation:
        """Return the :class:`Generation` of a prepared waveform ``(n_samples,)``.

        Raises :class:`GenerationError` (or its ``UnknownEmotionError``) for an emotion the
        model cannot render.
        """
        shown = self._model.emotion_index(emotion)
        labels = torch.arange(len(self.emotions)) if self.emotions else torch.tensor([NO_EMOTION])
        voice = self._model.encoder(torch.from_numpy(waveform).unsqueeze(0))
        latents = self._model.latents(voice.expand(len(labels), -1), labels)
        faces = self._model.decode(latents, labels)[:, 0].numpy()
        row = max(shown, 0)
        return Generation(faces, self.emotions, row, latents[row].numpy(), voice[0].numpy())

    @torch.no_grad()
    def face_latents(self, faces: np.ndarray, emotions: Sequence[str | None]) -> np.ndarray:
        """Return ``(N, latent_dim)`` VAE latents of uint8 face crops ``(N, s, s)``.

        Crops of another size are resized to the VAE's. Each face is encoded with its own
        emotion's code where the model knows it, else with the default emotion's.
        """
        size = self.image_size
        pixels = np.stack([face if face.shape == (size, size) else
                           np.asarray(Image.fromarray(face).resize((size, size), Image.LANCZOS))
                           for face in faces])
        batch = torch.from_numpy(pixels.astype(np.float32) / 255.0).unsqueeze(1)
        labels = torch.tensor([self._label(e) for e in emotions])
        return self._model.latents(self._model.vae.features(batch), labels).numpy()

    @torch.no_grad()
    def voice_vectors(self, pcm: np.ndarray) -> np.ndarray:
        """Return the voice encoder's outputs ``(N, D)`` of prepared int16 clips ``(N, L)``."""
        return self._model.encoder(torch.from_numpy(pcm_to_float(pcm))).numpy()

    def _label(self, emotion: str | None) -> int:
        if not self.emotions:
            return NO_EMOTION
        known = emotion is not None and emotion in self.emotions
        return self._model.emotion_index(emotion if known else None)


def load_face_models(files: Sequence[ModelFiles], audio: AudioParams) -> dict[str, FaceModel]:
    """Return the loaded models by name, each checked against the ``audio`` params.

    Raises :class:`GenerationError` naming the files when a pair does not fit together or
    was trained on clips unlike the ones ``audio`` makes; ``ValueError`` for a repeated name.
    """
    models: dict[str, FaceModel] = {}
    for entry in files:
        if entry.name in models:
            raise ValueError(f"model name {entry.name!r} given twice")
        model = load_voice_to_face(entry.vae, entry.voice)
        for key, trained, given in (("sample_rate", model.sample_rate, audio.sample_rate),
                                    ("n_samples", model.audio_samples, audio.n_samples)):
            if trained is not None and trained != given:
                raise GenerationError(f"{entry.voice} was trained on clips with {key}={trained}, "
                                      f"the audio params give {given}")
        models[entry.name] = FaceModel(entry.name, model)
        log.info("model %s: %s + %s", entry.name, entry.vae, entry.voice)
    if not models:
        raise ValueError("no model to serve")
    return models
