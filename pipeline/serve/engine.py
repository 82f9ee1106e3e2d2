"""The trained models behind the app: voice -> faces, real faces -> latents, voices -> vectors.

The one module of the app that knows how models are found, loaded and run: it builds on
:mod:`pipeline.models.voice_to_face` (the API ``stages.generate`` uses) and the model
registry (:mod:`pipeline.models.registry`), so that a change of model interface touches this
file only. Audio reaches it already prepared by the audio stage's own
:func:`~pipeline.audio.prepare.prepare_audio`.

:func:`discover_model_files` turns the model files a pipeline wrote into the pairs the page
offers: each voice model with the face model it was trained on (its provenance records that
file's SHA-256), named by their registry names (``deeptalk + vae``).

Per request one pass of the voice model feeds the face model's latent and decoder once per
emotion (a batch of E), so the face with each emotion costs one small decoder batch. With the
train_emotion stage's classifier the emotion shown by default is the one read from the voice
(issue 18); a voice model that reads the pretrained speaker embedding (004's
``embedding_mlp``, ``ridge``) gets it from the upload at the encoder's 16 kHz, and from the
gallery's clips resampled to it (libswresample, as decoding does).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pipeline.audio.prepare import pcm_to_float, resample
from pipeline.config import AudioParams
from pipeline.embed.encoder import SPEAKER_RATE, SpeakerEncoder, embed_media
from pipeline.models.emotion_classifier import EmotionClassifier, load_emotion_classifier
from pipeline.models.files import ModelFileError
from pipeline.models.registry import LoadedModel, load_face_model, load_voice_model
from pipeline.models.voice_to_face import (
    GenerationError,
    VoiceToFace,
    check_audio_params,
    pair_models,
)
from pipeline.runtime import sha256_file

log = logging.getLogger(__name__)

__all__ = ["Generation", "GenerationError", "ModelFileError", "ModelFiles", "ServedModel",
           "discover_model_files", "load_served_models"]


@dataclass(frozen=True)
class ModelFiles:
    """One trained model pair the app offers, under a name the page shows."""

    name: str
    """Name in the model picker."""
    face: Path
    """Face model file (the train_vae stage's output)."""
    voice: Path
    """Voice model file (the train_voice stage's output), trained on ``face``'s targets."""


@dataclass(frozen=True)
class Generation:
    """What one voice gives: its faces, the shown face's latent and the voice's vector."""

    faces: np.ndarray
    """``(E, S, S)`` float32 in [0, 1]: the face with each emotion (one row without emotions)."""
    emotions: tuple[str, ...]
    """Emotion of each row of ``faces`` (empty for a face model without emotions)."""
    shown: int
    """Row of ``faces`` asked for (the given emotion, else the model's default)."""
    latent: np.ndarray
    """``(D,)`` latent of the shown face: compared with real faces' latents."""
    voice: np.ndarray
    """``(T,)`` the voice model's output: compared with enrolled voices."""
    voice_emotion: tuple[str, float] | None = None
    """Emotion read from the voice and its probability, when a model for it exists."""


class ServedModel:
    """A voice model on its face model, as the app uses it (CPU, no gradients, thread-safe).

    ``emotion_reader`` (the train_emotion stage's classifier, over the face model's emotions)
    picks the emotion shown when none is asked for. ``speaker_encoder`` is required by a voice
    model that reads the pretrained speaker embedding.
    """

    def __init__(self, name: str, model: VoiceToFace,
                 emotion_reader: EmotionClassifier | None = None,
                 speaker_encoder: SpeakerEncoder | None = None) -> None:
        if model.voice.uses_embedding and speaker_encoder is None:
            raise GenerationError(f"{name}: the voice model reads the speaker embedding; "
                                  "no speaker encoder was given")
        self.name = name
        self._model = model
        self._reader = emotion_reader if model.face.emotions else None
        self._speaker = speaker_encoder

    @property
    def emotions(self) -> tuple[str, ...]:
        """Emotions the face model renders (empty: trained without emotion labels)."""
        return self._model.face.emotions

    @property
    def default_emotion(self) -> str | None:
        """The emotion shown when none is asked for (None without emotions)."""
        return self._model.default_emotion

    @property
    def image_size(self) -> int:
        """Side of the faces the face model reads and writes."""
        return self._model.face.image_size

    @property
    def reads_emotion(self) -> bool:
        """Whether the emotion shown by default is read from the voice."""
        return self._reader is not None

    @property
    def uses_embedding(self) -> bool:
        """Whether the voice model reads the pretrained speaker embedding of the source file."""
        return self._model.voice.uses_embedding

    def embed(self, path: Path, audio: AudioParams) -> np.ndarray:
        """Return the speaker embedding ``(256,)`` of a media file (the embed stage's rule).

        Raises QuarantineError as the audio stage does (undecodable, silent, ...).
        """
        return embed_media(path, self._require_speaker(), audio).vector

    @torch.no_grad()
    def generate(self, waveform: np.ndarray, emotion: str | None,
                 embedding: np.ndarray | None = None) -> Generation:
        """Return the :class:`Generation` of a prepared waveform ``(n_samples,)``.

        ``embedding`` (from :meth:`embed`) is required when :attr:`uses_embedding`. Without
        ``emotion`` the shown face has the emotion read from the voice when
        :attr:`reads_emotion`, else the model's default.

        Raises :class:`~pipeline.models.voice_to_face.UnknownEmotionError` for an emotion
        the face model does not render.
        """
        shown = self._model.emotion_index(emotion) or 0
        read = None
        if emotion is None and self._reader is not None:
            read = self._reader.read_one(torch.from_numpy(waveform))
            shown = self.emotions.index(read[0])
        n = max(len(self.emotions), 1)
        labels = torch.arange(n) if self.emotions else None
        voice = self._voice_targets(waveform[None], None if embedding is None else embedding[None])
        latents = self._model.face.latents(voice.expand(n, -1), labels)
        faces = self._model.face.decode(latents, labels)[:, 0].numpy()
        return Generation(faces, self.emotions, shown, latents[shown].numpy(), voice[0].numpy(),
                          read)

    @torch.no_grad()
    def face_latents(self, faces: np.ndarray, emotions: Sequence[str | None]) -> np.ndarray:
        """Return ``(N, D)`` latents of uint8 face crops ``(N, s, s)``.

        Crops of another size are resized to the face model's. Each face is encoded with its
        own emotion where the model knows it, else with the default emotion.
        """
        size = self.image_size
        pixels = np.stack([face if face.shape == (size, size) else
                           np.asarray(Image.fromarray(face).resize((size, size), Image.LANCZOS))
                           for face in faces])
        batch = torch.from_numpy(pixels.astype(np.float32) / 255.0).unsqueeze(1)
        labels = None
        if self.emotions:
            labels = torch.tensor([self._model.emotion_index(e if e in self.emotions else None)
                                   for e in emotions])
        return self._model.face.latents(self._model.face.voice_target(batch), labels).numpy()

    @torch.no_grad()
    def voice_vectors(self, pcm: np.ndarray, sample_rate: int) -> np.ndarray:
        """Return the voice model's outputs ``(N, T)`` of prepared int16 clips ``(N, L)``.

        A model reading the speaker embedding gets it from each clip resampled to 16 kHz.
        """
        waves = pcm_to_float(pcm)
        embeddings = None
        if self.uses_embedding:
            speaker = self._require_speaker()
            embeddings = np.stack([speaker.embed(resample(wave, sample_rate, SPEAKER_RATE))
                                   for wave in waves])
        return self._voice_targets(waves, embeddings).numpy()

    def _voice_targets(self, waves: np.ndarray, embeddings: np.ndarray | None) -> torch.Tensor:
        if self.uses_embedding and embeddings is None:
            raise GenerationError(f"{self.name}: the voice model reads the speaker embedding; "
                                  "none was given")
        return self._model.voice.voice_target(
            torch.from_numpy(waves), None if embeddings is None else torch.from_numpy(embeddings))

    def _require_speaker(self) -> SpeakerEncoder:
        if self._speaker is None:
            raise GenerationError(f"{self.name}: no speaker encoder")
        return self._speaker


def load_served_models(files: Sequence[ModelFiles], audio: AudioParams,
                       emotion_model: Path | None = None) -> dict[str, ServedModel]:
    """Return the loaded models by name, each checked against the ``audio`` params.

    ``emotion_model`` (the train_emotion stage's classifier) reads the emotion of the voice for
    every model whose face model renders the same emotions; the pretrained speaker encoder is
    loaded once, if a voice model reads its embedding.

    Raises:
        ModelFileError: a file is not a model file of its kind.
        GenerationError: a pair does not fit together, or was trained on clips unlike the
            ones ``audio`` makes.
        ValueError: a name given twice, or no model at all.
    """
    reader = None if emotion_model is None else load_emotion_classifier(emotion_model)
    speaker: SpeakerEncoder | None = None
    models: dict[str, ServedModel] = {}
    for entry in files:
        if entry.name in models:
            raise ValueError(f"model name {entry.name!r} given twice")
        model = pair_models(load_face_model(entry.face), load_voice_model(entry.voice))
        try:
            check_audio_params(model, audio)
        except GenerationError as error:
            raise GenerationError(f"{entry.voice}: {error}") from None
        if model.voice.uses_embedding and speaker is None:
            speaker = SpeakerEncoder()
        fits = reader is not None and tuple(reader.emotions) == tuple(model.face.emotions)
        if reader is not None and not fits:
            log.warning("model %s: the emotion classifier reads %s, the face model renders %s: "
                        "its default emotion is shown", entry.name, list(reader.emotions),
                        list(model.face.emotions))
        models[entry.name] = ServedModel(entry.name, model, reader if fits else None,
                                         speaker if model.voice.uses_embedding else None)
        log.info("model %s: %s on %s", entry.name, entry.voice, entry.face)
    if not models:
        raise ValueError("no model to serve")
    return models


def discover_model_files(paths: Sequence[Path]) -> list[ModelFiles]:
    """Return the pairs among model files: each voice model with the face model it fits.

    Files that are missing are skipped; so are files that are not face or voice model files
    (logged). A voice model pairs with the face model whose SHA-256 its provenance records
    (``vae_sha256``), or with every face model of its target width when none is recorded.
    """
    faces: list[tuple[LoadedModel, str]] = []
    voices: list[LoadedModel] = []
    for path in paths:
        if not path.is_file():
            continue
        try:
            faces.append((load_face_model(path), sha256_file(path)))
            continue
        except ModelFileError:
            pass
        try:
            voices.append(load_voice_model(path))
        except ModelFileError as error:
            log.info("not a face or voice model, skipped: %s", error)
    pairs: list[ModelFiles] = []
    for voice in voices:
        trained_on = voice.provenance.get("vae_sha256")
        for face, digest in faces:
            if (trained_on is None and voice.model.target_dim == face.model.target_dim) or (
                    trained_on == digest):
                name = f"{_registry_name(voice)} + {_registry_name(face)}"
                if any(pair.name == name for pair in pairs):
                    name = f"{name} ({voice.path.parent.name})"
                pairs.append(ModelFiles(name, face.path, voice.path))
    return pairs


def _registry_name(model: LoadedModel) -> str:
    """Return the registry name a model was trained as (its folder's name if unrecorded)."""
    return str(model.provenance.get("model") or model.provenance.get("params", {}).get("model")
               or model.path.parent.name)
