import numpy as np
import pytest
import torch

from pipeline.models.emotion_classifier import (
    N_FEATURES,
    feature_matrix,
    fit_emotion_classifier,
    load_emotion_classifier,
    save_emotion_classifier,
    voice_emotion_features,
)
from pipeline.models.files import ModelFileError

RATE = 8000
EMOTIONS = ("ANG", "HAP", "NEU", "SAD")
SHIFT = {0: 1.0, 1: 1.3, 2: 1.7, 3: 2.2}
"""The factory's emotion: a pure shift of the speaker's tone (ratio of its pitch)."""


def tone_clips(rng, speakers, clips_per_emotion=2, seconds=1.0):
    """Return ``(waves (N, L), labels (N,))``: harmonic tones at each speaker's pitch x shift."""
    t = np.arange(round(seconds * RATE)) / RATE
    waves, labels = [], []
    for _ in range(speakers):
        base = rng.uniform(110, 130)
        for label, shift in SHIFT.items():
            for _ in range(clips_per_emotion):
                f0 = base * shift * rng.uniform(0.98, 1.02)
                wave = sum(np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 6)) / k
                           for k in range(1, 4))
                waves.append(0.2 * wave + 0.005 * rng.standard_normal(len(t)))
                labels.append(label)
    return np.asarray(waves, np.float32), np.asarray(labels)


def test_a_pure_tone_shift_is_read_perfectly_and_shuffled_labels_give_chance(deterministic_rng):
    train_waves, train_labels = tone_clips(deterministic_rng, speakers=6)
    test_waves, test_labels = tone_clips(deterministic_rng, speakers=4)  # unseen speakers
    train = feature_matrix(train_waves, RATE)

    model = fit_emotion_classifier(train, train_labels, EMOTIONS, RATE, inverse_l2=1.0)
    reading = model.read(test_waves)
    assert torch.equal(reading.labels, torch.from_numpy(test_labels))
    torch.testing.assert_close(reading.probabilities.sum(dim=1), torch.ones(len(test_labels)))

    shuffled = deterministic_rng.permutation(train_labels)
    guess = fit_emotion_classifier(train, shuffled, EMOTIONS, RATE, inverse_l2=1.0)
    accuracy = float((guess.read(test_waves).labels.numpy() == test_labels).mean())
    # chance 0.25; 32 test clips: 0.45 is 3 standard deviations above it
    assert accuracy < 0.45


def test_features_are_finite_and_fixed_width(deterministic_rng):
    wave = 0.1 * deterministic_rng.standard_normal(RATE).astype(np.float32)
    features = voice_emotion_features(wave, RATE)
    assert features.shape == (N_FEATURES,) and np.isfinite(features).all()
    # louder: the level functionals move by the gain, the spectral shape's spread does not
    louder = voice_emotion_features(wave * 4, RATE)
    np.testing.assert_allclose(louder[120:124] - features[120:124], 20 * np.log10(4), atol=0.1)
    with pytest.raises(ValueError, match="at least 512 samples"):
        voice_emotion_features(wave[:100], RATE)


def test_missing_class_is_refused_and_files_round_trip(tmp_path, deterministic_rng):
    waves, labels = tone_clips(deterministic_rng, speakers=2)
    features = feature_matrix(waves, RATE)
    with pytest.raises(ValueError, match=r"no training clip of emotion\(s\) \['SAD'\]"):
        fit_emotion_classifier(features[labels < 3], labels[labels < 3], EMOTIONS, RATE, 1.0)
    model = fit_emotion_classifier(features, labels, EMOTIONS, RATE, 1.0)
    path = save_emotion_classifier(tmp_path / "emotion.pt", model, {"note": "test"})
    loaded = load_emotion_classifier(path)
    assert loaded.emotions == EMOTIONS
    torch.testing.assert_close(loaded.read(waves[:3]).probabilities,
                               model.read(waves[:3]).probabilities)
    torch.save({"kind": "FaceVAE"}, tmp_path / "vae.pt")
    with pytest.raises(ModelFileError, match="not a EmotionClassifier model file"):
        load_emotion_classifier(tmp_path / "vae.pt")
