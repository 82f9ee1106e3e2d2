"""Emotion read from the voice (003 section 3.4's goal: the face's emotion from speech).

003 renders a face with the emotion code of the clip's *label*; a caller with a phone call
has no label. This classifier gives the code from the voice itself: ``generate`` uses its
prediction when no ``--emotion`` is given, and ``evaluate`` scores faces rendered with it.

The model is small on purpose (the demo trains it on 26 speakers x 8 clips): utterance-level
acoustic functionals, standardised, then a multinomial logistic regression.

- **Functionals** (:func:`voice_emotion_features`, 128 values, the usual paralinguistic
  descriptors in the spirit of eGeMAPS, Eyben et al. 2016): per band of a 40-band log-mel
  spectrogram (32 ms windows, 10 ms hop) its mean, its standard deviation and its mean
  absolute frame-to-frame change (spectral flux); the 10 ms frame level in dBFS (10th, 50th,
  90th, 99th percentile and standard deviation: emotion moves loudness); log F0 by YIN over
  the louder half of the frames (mean, standard deviation, 90-10 percentile range: emotion
  moves pitch and its range).
- **Classifier**: scikit-learn's ``LogisticRegression`` (L2, lbfgs) fitted on the training
  split; its standardisation and weights are copied into :class:`EmotionClassifier`, a torch
  module saved as a model file (``weights_only`` loadable).

Compared on the demo corpus, test speakers of ``dataset.seed`` 0-3 (accuracy, chance 0.25;
``C`` = 1): these functionals 0.94 / 0.88 / 0.86 / 0.86 (mean 0.88, recall ANG 0.83, HAP
0.83, NEU 0.94, SAD 0.94); a logistic regression on the pretrained speaker embedding
(:mod:`pipeline.embed.encoder`) 0.83 / 0.67 / 0.75 / 0.69 (mean 0.73, HAP 0.62: it
normalises loudness and is trained to ignore delivery); both concatenated 0.85. So the
functionals alone are kept; ``C`` = 0.1 gives 0.85.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pipeline.models.files import load_model_payload, save_model_file

MODEL_KIND = "EmotionClassifier"
N_MELS = 40
WINDOW_S = 0.032
HOP_S = 0.010
FMIN_HZ = 50.0
F0_RANGE_HZ = (60.0, 500.0)
YIN_WINDOW_S = 0.064
"""YIN's frame: long enough for two periods of the lowest F0 (2 / 60 Hz = 33 ms)."""
LEVEL_PERCENTILES = (10.0, 50.0, 90.0, 99.0)
N_FEATURES = 3 * N_MELS + len(LEVEL_PERCENTILES) + 1 + 3
_FLOOR = 1e-10


def voice_emotion_features(wave: np.ndarray, sample_rate: int) -> np.ndarray:
    """Return the 128 float32 functionals of a mono waveform in [-1, 1] (module docstring).

    Raises ``ValueError`` for a waveform shorter than one YIN frame.
    """
    import librosa  # local: only the stages that read emotion pay its import

    wave = np.asarray(wave, dtype=np.float32)
    window, hop = round(WINDOW_S * sample_rate), round(HOP_S * sample_rate)
    yin_window = round(YIN_WINDOW_S * sample_rate)
    if wave.ndim != 1 or len(wave) < yin_window:
        raise ValueError(f"need a mono waveform of at least {yin_window} samples, "
                         f"got shape {wave.shape}")
    mel = librosa.feature.melspectrogram(y=wave, sr=sample_rate, n_fft=window, hop_length=hop,
                                         n_mels=N_MELS, fmin=FMIN_HZ)
    log_mel = np.log(mel + _FLOOR)
    level = 20.0 * np.log10(librosa.feature.rms(y=wave, frame_length=window,
                                                hop_length=hop)[0] + _FLOOR)
    f0 = librosa.yin(wave, fmin=F0_RANGE_HZ[0], fmax=F0_RANGE_HZ[1], sr=sample_rate,
                     frame_length=yin_window, hop_length=hop)
    n = min(len(f0), len(level))
    log_f0 = np.log(f0[:n][level[:n] >= np.median(level[:n])])
    return np.concatenate([
        log_mel.mean(axis=1), log_mel.std(axis=1), np.abs(np.diff(log_mel, axis=1)).mean(axis=1),
        np.percentile(level, LEVEL_PERCENTILES), [level.std()],
        [log_f0.mean(), log_f0.std(), np.percentile(log_f0, 90) - np.percentile(log_f0, 10)],
    ]).astype(np.float32)


def feature_matrix(waves: np.ndarray | torch.Tensor, sample_rate: int) -> np.ndarray:
    """Return the functionals ``(N, 128)`` of waveforms ``(N, L)``."""
    waves = waves.numpy() if isinstance(waves, torch.Tensor) else np.asarray(waves)
    return np.stack([voice_emotion_features(w, sample_rate) for w in waves]) if len(
        waves) else np.zeros((0, N_FEATURES), np.float32)


@dataclass(frozen=True)
class EmotionClassifierConfig:
    """What an :class:`EmotionClassifier` reads and predicts; saved with its weights."""

    emotions: tuple[str, ...] = ()
    """Emotion names in label order (the dataset's); empty: the data had no emotion labels."""
    sample_rate: int = 8000
    """Rate of the waveforms it reads (the dataset's)."""
    n_features: int = N_FEATURES
    """Width of :func:`voice_emotion_features`."""

    def to_dict(self) -> dict[str, Any]:
        """Return the config as plain data."""
        data = dataclasses.asdict(self)
        data["emotions"] = list(self.emotions)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EmotionClassifierConfig:
        """Return the config saved by :meth:`to_dict`."""
        return cls(**{**data, "emotions": tuple(data["emotions"])})


@dataclass(frozen=True)
class EmotionReading:
    """The emotion read from each of a batch of voices."""

    labels: torch.Tensor
    """``(B,)`` the most probable emotion's label (index into the classifier's emotions)."""
    probabilities: torch.Tensor
    """``(B, E)`` class probabilities."""


class EmotionClassifier(nn.Module):
    """Standardised functionals -> logistic regression over the dataset's emotions."""

    def __init__(self, config: EmotionClassifierConfig) -> None:
        super().__init__()
        self.config = config
        classes = len(config.emotions)
        self.register_buffer("mean", torch.zeros(config.n_features))
        self.register_buffer("scale", torch.ones(config.n_features))
        self.linear = nn.Linear(config.n_features, classes) if classes else None

    @property
    def emotions(self) -> tuple[str, ...]:
        """Return the emotion names its labels index (empty: it reads none)."""
        return self.config.emotions

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Return logits ``(B, E)`` of functionals ``(B, n_features)``."""
        if self.linear is None:
            raise ValueError("this emotion classifier was trained without emotion labels")
        return self.linear((features - self.mean) / self.scale)

    @torch.no_grad()
    def read(self, waves: np.ndarray | torch.Tensor) -> EmotionReading:
        """Return the emotion read from waveforms ``(B, L)`` at ``config.sample_rate``."""
        features = torch.from_numpy(feature_matrix(waves, self.config.sample_rate))
        probabilities = torch.softmax(self(features.to(self.mean.dtype)), dim=1)
        return EmotionReading(probabilities.argmax(dim=1), probabilities)

    def read_one(self, wave: np.ndarray | torch.Tensor) -> tuple[str, float]:
        """Return ``(emotion, probability)`` read from one waveform ``(L,)``."""
        reading = self.read(wave[None])
        label = int(reading.labels[0])
        return self.emotions[label], float(reading.probabilities[0, label])


def fit_emotion_classifier(
    features: np.ndarray,
    labels: np.ndarray,
    emotions: Sequence[str],
    sample_rate: int,
    inverse_l2: float,
) -> EmotionClassifier:
    """Return a classifier fitted on functionals ``(N, F)`` and labels ``(N,)`` in ``[0, E)``.

    Raises ``ValueError`` when a class of ``emotions`` has no training clip (it could never
    be predicted, and the fitted weights would not line up with the labels).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    labels = np.asarray(labels)
    missing = [e for k, e in enumerate(emotions) if not np.any(labels == k)]
    if missing:
        raise ValueError(f"no training clip of emotion(s) {missing}: cannot learn to read them")
    scaler = StandardScaler().fit(features)
    fitted = LogisticRegression(C=inverse_l2, max_iter=5000).fit(
        scaler.transform(features), labels)
    model = EmotionClassifier(EmotionClassifierConfig(tuple(emotions), sample_rate,
                                                      features.shape[1]))
    with torch.no_grad():
        model.mean.copy_(torch.from_numpy(scaler.mean_))
        model.scale.copy_(torch.from_numpy(scaler.scale_))
        model.linear.weight.copy_(torch.from_numpy(fitted.coef_))
        model.linear.bias.copy_(torch.from_numpy(fitted.intercept_))
    return model.eval()


def save_emotion_classifier(
    path: str | Path, model: EmotionClassifier, provenance: Mapping[str, Any]
) -> Path:
    """Return ``path`` after writing the classifier, its config and provenance atomically."""
    return save_model_file(path, MODEL_KIND, model, provenance)


def load_emotion_classifier(path: str | Path) -> EmotionClassifier:
    """Return the classifier saved by :func:`save_emotion_classifier` (CPU, eval mode).

    Raises:
        ModelFileError: ``path`` is not an emotion classifier file (the message says why).
    """
    payload = load_model_payload(path, MODEL_KIND)
    model = EmotionClassifier(EmotionClassifierConfig.from_dict(payload["config"]))
    model.load_state_dict(payload["state_dict"])
    return model.eval()
