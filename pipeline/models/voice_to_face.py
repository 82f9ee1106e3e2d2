"""Voice -> face (003 section 3.1, Fig. 2-3): a voice model, then a face model's latent and decoder.

The voice model is trained to predict the face model's *voice target* of the speaker's face
(:mod:`pipeline.training.voice`; the VAE's target is its encoder's conv features). At
generation time the predicted target takes the place of the face's: for the VAE, the emotion
code is appended (003 section 3.4), the posterior gives ``mu``, and the decoder turns
``z = mu`` (with the same code when the VAE's decoder takes it, CVAE-style) into a face. The
emotion therefore is a free choice at generation time (``--emotion``), while identity comes
from the voice. Both models are used through the interfaces of :mod:`pipeline.models.registry`.
A face model trained without emotions (an unconditional VAE, 000) takes none: asking it for
one is an :class:`UnknownEmotionError`.

:func:`generate_face` is the whole path from any media file: the audio stage's own
:func:`pipeline.audio.prepare.prepare_audio` (decode, resample, remove long silences, tile),
then the models.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pipeline.audio.prepare import prepare_audio
from pipeline.config import AudioParams
from pipeline.models.emotion_classifier import EmotionClassifier
from pipeline.models.registry import (
    FaceModel,
    LoadedModel,
    VoiceModel,
    load_face_model,
    load_voice_model,
)

log = logging.getLogger(__name__)

DEFAULT_EMOTION = "NEU"
"""Emotion used when none is given (003's Neutral); a face model without it uses its first."""


class GenerationError(ValueError):
    """Models or settings that cannot generate together (the message says which and why)."""


class UnknownEmotionError(GenerationError):
    """An emotion name the face model does not know; the message lists the valid names."""


@dataclass(frozen=True)
class VoiceToFace:
    """A trained voice model on top of a frozen face model: waveforms -> latents -> faces."""

    face: FaceModel
    """The face model (frozen)."""
    voice: VoiceModel
    """Voice model whose output is the face model's voice target (eval mode)."""
    sample_rate: int | None = None
    """Sample rate of the voice model's training audio (checked at generation), if recorded."""
    audio_samples: int | None = None
    """Length of the voice model's training clips in samples (checked at generation)."""

    def __post_init__(self) -> None:
        if self.voice.target_dim != self.face.target_dim:
            raise GenerationError(f"voice model outputs {self.voice.target_dim} features, the "
                                  f"face model expects {self.face.target_dim}")

    @property
    def default_emotion(self) -> str | None:
        """Return :data:`DEFAULT_EMOTION` if the face model knows it, else its first emotion.

        None when the face model takes no emotion.
        """
        emotions = self.face.emotions
        if not emotions:
            return None
        return DEFAULT_EMOTION if DEFAULT_EMOTION in emotions else emotions[0]

    def emotion_index(self, emotion: str | None) -> int | None:
        """Return the label of ``emotion`` (default: :attr:`default_emotion`); None: no emotion.

        Raises:
            UnknownEmotionError: the face model does not know ``emotion`` (or takes none).
        """
        if not self.face.emotions:
            if emotion is not None:
                raise UnknownEmotionError(f"unknown emotion {emotion!r}: the face model takes "
                                          "no emotion")
            return None
        name = self.default_emotion if emotion is None else emotion.upper()
        if name not in self.face.emotions:
            raise UnknownEmotionError(
                f"unknown emotion {emotion!r}; valid: {', '.join(self.face.emotions)}")
        return self.face.emotions.index(name)

    def emotion_labels(self, emotion: str | None, n: int) -> torch.Tensor | None:
        """Return ``n`` labels ``(n,)`` of ``emotion`` (see :meth:`emotion_index`), or None."""
        index = self.emotion_index(emotion)
        return None if index is None else torch.full((n,), index)

    def clip_emotions(self, labels: torch.Tensor) -> torch.Tensor | None:
        """Return clips' own emotion labels ``(N,)`` as the face model takes them (None: none)."""
        return labels if self.face.emotions else None

    def voice_latents(
        self,
        waves: torch.Tensor | None,
        emotion: torch.Tensor | None,
        embeddings: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Return latents ``(B, D)`` generated from voices (003 section 3.3).

        The voice model predicts the face model's voice target from waveforms ``(B, N)``
        and / or the clips' speaker embeddings ``(B, 256)`` (whichever it reads); the face
        model turns it and the emotion labels ``(B,)`` into the latent.
        """
        with torch.no_grad():
            return self.face.latents(self.voice.voice_target(waves, embeddings), emotion)

    def faces(
        self,
        waves: torch.Tensor | None,
        emotion: torch.Tensor | None,
        embeddings: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Return faces ``(B, 1, S, S)`` in [0, 1] generated from voices (as above)."""
        return self.face.decode(self.voice_latents(waves, emotion, embeddings), emotion)


def load_voice_to_face(face_path: str | Path, voice_path: str | Path) -> VoiceToFace:
    """Return the :class:`VoiceToFace` of a face model file and a voice model file (CPU).

    Raises:
        ModelFileError: either file is not a model file of its kind (the message says why).
        GenerationError: the two were not trained together (target widths, emotions).
    """
    return pair_models(load_face_model(face_path), load_voice_model(voice_path))


def pair_models(
    face: LoadedModel[FaceModel], voice: LoadedModel[VoiceModel]
) -> VoiceToFace:
    """Return the :class:`VoiceToFace` of two loaded models, checked against each other.

    Raises:
        GenerationError: naming both files, when the voice model's output is not the face
            model's voice target or the voice model was trained with other emotions.
    """
    voice_emotions = voice.provenance.get("emotions")
    if face.model.emotions and voice_emotions is not None and tuple(
            voice_emotions) != face.model.emotions:
        raise GenerationError(f"{voice.path} was trained with emotions {voice_emotions}, "
                              f"{face.path} has {list(face.model.emotions)}")
    if voice.model.target_dim != face.model.target_dim:
        raise GenerationError(f"{voice.path}: voice model outputs {voice.model.target_dim} "
                              f"features, the face model {face.path} expects "
                              f"{face.model.target_dim}")
    return VoiceToFace(face.model, voice.model, voice.provenance.get("sample_rate"),
                       voice.provenance.get("audio_samples"))


@dataclass(frozen=True)
class GeneratedFace:
    """A face generated from a voice, and the emotion it was rendered with."""

    face: np.ndarray
    """``(S, S)`` float32 in [0, 1]."""
    emotion: str | None
    """The emotion rendered (None: the face model takes none)."""
    probability: float | None
    """The classifier's probability of ``emotion`` when it was read from the voice, else None."""


def generate_face(
    audio_path: str | Path,
    model: VoiceToFace,
    emotion: str | None,
    audio_params: AudioParams,
) -> np.ndarray:
    """Return the face ``(S, S)`` of :func:`generate_from_voice` with no emotion classifier."""
    return generate_from_voice(audio_path, model, emotion, audio_params).face


def generate_from_voice(
    audio_path: str | Path,
    model: VoiceToFace,
    emotion: str | None,
    audio_params: AudioParams,
    emotion_classifier: EmotionClassifier | None = None,
) -> GeneratedFace:
    """Return the face generated from any media file's voice, with the emotion rendered.

    The audio goes through :func:`pipeline.audio.prepare.prepare_audio` with ``audio_params``
    (the ``audio`` section the training data was made with): decode, resample (decoding at
    most ``max_input_s``, with a warning when the file is longer), remove silences of
    ``min_silence_s`` or more, tile to ``length_s``. A voice model that reads the speaker
    embedding gets it from the same file (:func:`pipeline.embed.encoder.embed_media`).

    The emotion: ``emotion`` when given; else the one ``emotion_classifier`` reads from the
    voice (with its probability); else :attr:`VoiceToFace.default_emotion`.

    Raises:
        UnknownEmotionError: ``emotion`` is not one of the face model's emotions.
        GenerationError: ``audio_params`` make clips unlike the voice model's training clips,
            or the classifier reads other emotions than the face model's.
        QuarantineError: the file is missing or undecodable (``decode_error``), has no audio
            (``no_audio``), is silent (``all_silent``) or has too little speech.
    """
    model.emotion_labels(emotion, 1)  # fail on a bad name before decoding anything
    check_audio_params(model, audio_params)
    reader = emotion_classifier if emotion is None and model.face.emotions else None
    if reader is not None and tuple(reader.emotions) != tuple(model.face.emotions):
        raise GenerationError(f"the emotion classifier reads {list(reader.emotions)}, the face "
                              f"model has {list(model.face.emotions)}")
    prepared = prepare_audio(audio_path, audio_params)
    if prepared.truncated:
        log.warning("%s: longer than audio.max_input_s: only its first %g s are used",
                    audio_path, audio_params.max_input_s)
    log.info("%s: %.2f s decoded, %.2f s of speech, %d silences removed", audio_path,
             prepared.original_duration_s, prepared.speech_duration_s, prepared.silences_removed)
    wave = torch.from_numpy(prepared.waveform()).unsqueeze(0)
    probability = None
    if reader is not None:
        emotion, probability = reader.read_one(wave[0])
    labels = model.emotion_labels(emotion, 1)
    embedding = _speaker_embedding(audio_path, audio_params) if model.voice.uses_embedding else None
    face = model.faces(wave, labels, embedding)[0, 0].numpy()
    rendered = None if labels is None else model.face.emotions[int(labels[0])]
    return GeneratedFace(face, rendered, probability)


def _speaker_embedding(audio_path: str | Path, audio_params: AudioParams) -> torch.Tensor:
    """Return the pretrained speaker embedding ``(1, 256)`` of a media file's voice."""
    from pipeline.embed.encoder import SpeakerEncoder, embed_media  # loads resemblyzer

    embedding = embed_media(audio_path, SpeakerEncoder(), audio_params)
    return torch.from_numpy(embedding.vector).unsqueeze(0)


def check_audio_params(model: VoiceToFace, params: AudioParams) -> None:
    """Raise :class:`GenerationError` when ``params`` make clips unlike the training clips."""
    for key, trained, given in (("sample_rate", model.sample_rate, params.sample_rate),
                                ("n_samples", model.audio_samples, params.n_samples)):
        if trained is not None and trained != given:
            raise GenerationError(f"the voice model was trained on clips with {key}={trained}, "
                                  f"but the audio params give {given}")
