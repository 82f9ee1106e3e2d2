"""A pretrained speaker embedding (004: "voice -> embedding -> MLP -> face").

The encoder is resemblyzer's GE2E d-vector network (Wan et al. 2018, "Generalized End-to-End
Loss for Speaker Verification"; Apache-2.0): 40 mel bands of 16 kHz audio, a 3-layer LSTM,
a 256-d L2-normalised embedding, trained on thousands of speakers (LibriSpeech, VoxCeleb 1
and 2). Its weights (``pretrained.pt``, 17 MB) ship inside the resemblyzer wheel, so loading
never touches the network.

What resemblyzer's own ``preprocess_wav`` does is split here: decoding and resampling are
the audio stage's (PyAV / libswresample, :func:`pipeline.audio.prepare.decode_audio`), and
silences are removed by the audio stage's rule (:func:`remove_long_silences`) instead of
resemblyzer's WebRTC VAD, so the embedding sees the same speech the voice encoder does. Its
volume normalisation (to -30 dBFS, raise only) is kept: the network was trained on it.

Packaging: resemblyzer 0.1.4 requires ``webrtcvad``, a 2017 sdist whose module imports
``pkg_resources`` (gone from setuptools >= 81) and needs a C compiler. ``webrtcvad-wheels``
ships the same ``webrtcvad`` module as maintained binary wheels, so resemblyzer is installed
with ``--no-deps`` (see ``pyproject.toml``) and its real dependencies are listed there.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.audio.prepare import decode_audio, remove_long_silences
from pipeline.config import AudioParams

log = logging.getLogger(__name__)

SPEAKER_RATE = 16_000
"""Sample rate the pretrained encoder was trained at (resemblyzer ``hparams.sampling_rate``)."""
EMBEDDING_DIM = 256
"""Width of the embedding (resemblyzer ``hparams.model_embedding_size``)."""
ENCODER_NAMES = ("resemblyzer",)
"""Pretrained speaker encoders this module can load."""


@dataclass(frozen=True)
class SpeakerEmbedding:
    """One clip's embedding and how much speech it was computed from."""

    vector: np.ndarray
    """float32 ``(EMBEDDING_DIM,)``, L2 norm 1."""
    speech_duration_s: float
    """Seconds of speech left after removing the long silences."""


class SpeakerEncoder:
    """resemblyzer's pretrained GE2E network, on the CPU, loaded from its wheel."""

    def __init__(self, name: str = "resemblyzer") -> None:
        if name not in ENCODER_NAMES:
            raise ValueError(f"unknown speaker encoder {name!r}; known: {list(ENCODER_NAMES)}")
        with warnings.catch_warnings():
            # resemblyzer 0.1.4 imports binary_dilation from scipy.ndimage.morphology, a
            # namespace SciPy deprecates (the function is the same); nothing we can fix here.
            warnings.filterwarnings("ignore", "Please import `binary_dilation`",
                                    DeprecationWarning)
            import resemblyzer
        self.name = name
        self._normalize_volume = resemblyzer.normalize_volume
        self._target_dbfs = resemblyzer.hparams.audio_norm_target_dBFS
        self._network = resemblyzer.VoiceEncoder("cpu", verbose=False)
        self._network.eval()
        if resemblyzer.sampling_rate != SPEAKER_RATE:
            raise RuntimeError(f"resemblyzer works at {resemblyzer.sampling_rate} Hz, "
                               f"this module assumes {SPEAKER_RATE}")

    def embed(self, speech: np.ndarray) -> np.ndarray:
        """Return the float32 ``(256,)`` embedding of mono speech at 16 kHz (silences removed).

        resemblyzer's ``embed_utterance``: 1.6 s windows 1.3 per second, each embedded,
        averaged and L2-normalised.
        """
        if speech.ndim != 1 or len(speech) == 0:
            raise ValueError(f"need a non-empty mono waveform, got shape {speech.shape}")
        wave = self._normalize_volume(speech.astype(np.float32), self._target_dbfs,
                                      increase_only=True)
        return np.asarray(self._network.embed_utterance(wave), dtype=np.float32)


def embed_media(
    path: str | Path, encoder: SpeakerEncoder, audio_params: AudioParams
) -> SpeakerEmbedding:
    """Return the embedding of any media file's voice at the encoder's 16 kHz.

    Decoding (at most ``max_input_s``) and silence removal are the audio stage's, with its
    ``audio_params``; only the rate differs (16 kHz instead of ``audio_params.sample_rate``).

    Raises:
        QuarantineError: ``decode_error``, ``no_audio``, ``all_silent`` or
            ``too_little_speech``, as the audio stage does.
    """
    wave, _, _ = decode_audio(path, SPEAKER_RATE, audio_params.max_input_s)
    speech, _ = remove_long_silences(wave, SPEAKER_RATE, audio_params, source=path)
    return SpeakerEmbedding(encoder.embed(speech), len(speech) / SPEAKER_RATE)
