"""Voice -> face (003 section 3.1, Fig. 2-3): voice encoder, then the VAE's posterior and decoder.

The voice encoder is trained to predict the VAE encoder's conv *features* of the speaker's
face (:mod:`pipeline.training.voice`). At generation time those predicted features take the
place of ``vae.features(face)``: the emotion code is appended (003 section 3.4), the posterior
gives ``mu``, and the decoder turns ``z = mu`` (with the same code when the VAE's decoder takes
it, CVAE-style) into a face. The emotion therefore is a free
choice at generation time (``--emotion``), while identity comes from the voice. An
unconditional VAE (trained on data without emotion labels, 000) takes no emotion: asking it
for one is a :class:`GenerationError`.

:func:`generate_face` is the whole path from any media file: the audio stage's own
:func:`pipeline.audio.stage.prepare_audio` (decode, resample, remove long silences, tile), then
the models.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pipeline.audio.prepare import prepare_audio
from pipeline.config import AudioParams
from pipeline.loaders import NO_EMOTION
from pipeline.models.vae import FaceVAE, load_model_file, load_vae
from pipeline.models.voice_encoder import (
    VoiceEncoder,
    load_voice_encoder,
    load_voice_encoder_file,
)

log = logging.getLogger(__name__)

DEFAULT_EMOTION = "NEU"
"""Emotion used when none is given (003's Neutral); a VAE without it uses its first emotion."""


class GenerationError(ValueError):
    """Models or settings that cannot generate together (the message says which and why)."""


class UnknownEmotionError(GenerationError):
    """An emotion name the VAE was not trained with; the message lists the valid names."""


def parse_code(bits: str) -> torch.Tensor:
    """Return the float 0/1 vector of a code string as the paper writes it (``"00110000"``)."""
    if not bits or set(bits) - {"0", "1"}:
        raise ValueError(f"not an emotion code string: {bits!r}")
    return torch.tensor([1.0 if b == "1" else 0.0 for b in bits])


def vae_emotion_codes(path: str | Path) -> tuple[tuple[str, ...], torch.Tensor]:
    """Return ``(emotions, codes (E, code_dim))`` recorded in a VAE model file's provenance.

    The train_vae stage records both, so generation uses exactly the codes the VAE was
    trained with, whatever ``params.yaml`` says today.
    """
    provenance = load_model_file(path)["provenance"]
    if "emotions" not in provenance or "codes" not in provenance:
        raise GenerationError(f"{path}: the VAE's provenance lacks its emotions / codes; "
                         "save it with the train_vae stage")
    emotions = tuple(provenance["emotions"])
    if not provenance["codes"]:  # an unconditional VAE has no codes
        return emotions, torch.zeros(len(emotions), 0)
    codes = torch.stack([parse_code(c) for c in provenance["codes"]])
    if len(codes) != len(emotions):
        raise ValueError(f"{path}: {len(emotions)} emotions but {len(codes)} codes")
    return emotions, codes


def voice_posterior_mean(
    vae: FaceVAE, encoder: VoiceEncoder, waves: torch.Tensor, codes: torch.Tensor | None
) -> torch.Tensor:
    """Return ``mu (B, latent_dim)`` generated from waveforms ``(B, N)`` (003 section 3.3).

    The encoder maps the voice to the VAE's conv features; the VAE posterior of those
    features with the emotion ``codes`` ``(B, code_dim)`` (None: unconditional VAE) gives mu.
    """
    return vae.posterior(encoder(waves), codes)[0]


@dataclass(frozen=True)
class VoiceToFace:
    """A trained voice encoder on top of a frozen face VAE: waveforms -> latents -> faces."""

    vae: FaceVAE
    """The face VAE (eval mode)."""
    encoder: VoiceEncoder
    """Voice encoder whose output lives in the VAE's feature space (eval mode)."""
    emotions: tuple[str, ...]
    """Emotion names, in the order of ``codes``' rows (the dataset's label order)."""
    codes: torch.Tensor
    """Emotion code table ``(E, code_dim)`` (unused by an unconditional VAE)."""
    sample_rate: int | None = None
    """Sample rate of the encoder's training audio (checked at generation), if recorded."""
    audio_samples: int | None = None
    """Length of the encoder's training clips in samples (checked at generation), if recorded."""

    def __post_init__(self) -> None:
        if self.encoder.config.out_dim != self.vae.config.feature_dim:
            raise GenerationError(f"voice encoder outputs {self.encoder.config.out_dim} features, "
                             f"the VAE expects {self.vae.config.feature_dim}")
        if self.vae.config.conditional and self.codes.shape[1] != self.vae.config.code_dim:
            raise GenerationError(f"emotion codes have {self.codes.shape[1]} bits, the VAE "
                             f"expects {self.vae.config.code_dim}")

    @property
    def conditional(self) -> bool:
        """Whether the VAE takes an emotion code (False: trained without emotions)."""
        return self.vae.config.conditional

    @property
    def default_emotion(self) -> str | None:
        """Return :data:`DEFAULT_EMOTION` if the VAE knows it, else its first emotion.

        None for an unconditional VAE.
        """
        if not self.conditional:
            return None
        return DEFAULT_EMOTION if DEFAULT_EMOTION in self.emotions else self.emotions[0]

    def emotion_index(self, emotion: str | None) -> int:
        """Return the row of ``emotion`` (default: :attr:`default_emotion`) in ``codes``.

        An unconditional VAE takes no emotion: None gives ``-1`` (no label), a name is a
        :class:`GenerationError`.
        """
        if not self.conditional:
            if emotion is not None:
                raise GenerationError(
                    f"emotion {emotion!r} given, but the VAE is unconditional (trained "
                    + ("on data without emotion labels" if not self.emotions
                       else "with train_vae.conditional false") + "): it takes no emotion")
            return NO_EMOTION
        name = self.default_emotion if emotion is None else emotion.upper()
        if name not in self.emotions:
            raise UnknownEmotionError(
                f"unknown emotion {emotion!r}; valid: {', '.join(self.emotions)}")
        return self.emotions.index(name)

    @torch.no_grad()
    def latents(self, features: torch.Tensor, emotion: torch.Tensor) -> torch.Tensor:
        """Return ``mu (B, latent_dim)`` of VAE features ``(B, D)`` with emotion labels ``(B,)``."""
        device = features.device
        mu, _ = self.vae.posterior(features, self.emotion_codes(emotion, device))
        return mu

    def emotion_codes(self, emotion: torch.Tensor, device: torch.device) -> torch.Tensor | None:
        """Return the codes ``(B, code_dim)`` of emotion labels ``(B,)`` on ``device``.

        None for an unconditional VAE (its labels are ignored).
        """
        if not self.conditional:
            return None
        return self.codes.to(device)[emotion.to(device)]

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, emotion: torch.Tensor) -> torch.Tensor:
        """Return faces ``(B, 1, S, S)`` decoded from ``mu (B, latent_dim)`` and labels ``(B,)``."""
        self.vae.eval()
        return self.vae.decode(latents, self.emotion_codes(emotion, latents.device))

    @torch.no_grad()
    def voice_latents(self, waves: torch.Tensor, emotion: torch.Tensor) -> torch.Tensor:
        """Return ``mu (B, latent_dim)`` generated from waveforms ``(B, N)`` and labels ``(B,)``."""
        self.encoder.eval()
        codes = self.emotion_codes(emotion, waves.device)
        return voice_posterior_mean(self.vae, self.encoder, waves, codes)

    @torch.no_grad()
    def faces(self, waves: torch.Tensor, emotion: torch.Tensor) -> torch.Tensor:
        """Return faces ``(B, 1, S, S)`` in [0, 1] generated from waveforms ``(B, N)``."""
        return self.decode(self.voice_latents(waves, emotion), emotion)


def load_voice_to_face(
    vae_path: str | Path, voice_path: str | Path, device: str | torch.device = "cpu"
) -> VoiceToFace:
    """Return the :class:`VoiceToFace` of a VAE file and a voice-encoder file, on ``device``.

    Raises :class:`GenerationError` when the two were not trained together (feature widths,
    emotions).
    """
    emotions, codes = vae_emotion_codes(vae_path)
    provenance = load_voice_encoder_file(voice_path)["provenance"]
    voice_emotions = provenance.get("emotions")
    if voice_emotions is not None and tuple(voice_emotions) != emotions:
        raise GenerationError(f"{voice_path} was trained with emotions {voice_emotions}, "
                         f"{vae_path} has {list(emotions)}")
    return VoiceToFace(load_vae(vae_path, device), load_voice_encoder(voice_path, device),
                       emotions, codes.to(device), provenance.get("sample_rate"),
                       provenance.get("audio_samples"))


def generate_face(
    audio_path: str | Path,
    model: VoiceToFace,
    emotion: str | None,
    audio_params: AudioParams,
) -> np.ndarray:
    """Return the face ``(S, S)`` float32 in [0, 1] generated from any media file's voice.

    The audio goes through :func:`pipeline.audio.stage.prepare_audio` with ``audio_params`` (the
    ``audio`` section the training data was made with): decode, resample, remove silences
    of ``min_silence_s`` or more, tile to ``length_s``.

    Raises:
        UnknownEmotionError: ``emotion`` is not one of ``model.emotions``.
        GenerationError: ``audio_params`` make clips unlike the encoder's training clips.
        QuarantineError: the file is missing or undecodable (``decode_error``), has no audio
            (``no_audio``), is silent (``all_silent``) or has too little speech.
    """
    index = model.emotion_index(emotion)  # fail on a bad name before decoding anything
    _check_audio_params(model, audio_params)
    prepared = prepare_audio(audio_path, audio_params)
    log.info("%s: %.2f s decoded, %.2f s of speech, %d silences removed", audio_path,
             prepared.original_duration_s, prepared.speech_duration_s, prepared.silences_removed)
    device = next(model.encoder.parameters()).device
    wave = torch.from_numpy(prepared.waveform()).unsqueeze(0).to(device)
    face = model.faces(wave, torch.tensor([index], device=device))
    return face[0, 0].cpu().numpy()


def _check_audio_params(model: VoiceToFace, params: AudioParams) -> None:
    """Raise :class:`GenerationError` when ``params`` make clips unlike the training clips."""
    for key, trained, given in (("sample_rate", model.sample_rate, params.sample_rate),
                                ("n_samples", model.audio_samples, params.n_samples)):
        if trained is not None and trained != given:
            raise GenerationError(f"the voice encoder was trained on clips with {key}={trained}, "
                             f"but the audio params give {given}")
