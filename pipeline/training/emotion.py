"""The ``train_emotion`` stage: fit the classifier that reads the emotion from the voice.

:mod:`pipeline.models.emotion_classifier` on the training split's clips (the dataset's 8 kHz
waveforms, the voice encoder's input too), scored on the validation split. Data without
emotion labels gives a classifier that reads none (``emotions == ()``), so ``generate`` and
``evaluate`` know there is no emotion to read.

Outputs (paths from the stage's command line): ``<out>/model.pt`` and ``<out>/metrics.json``
(validation accuracy and chance).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from pipeline.config import TrainEmotionParams, to_dict
from pipeline.loaders import has_emotion_labels, load_split, read_meta
from pipeline.models.emotion_classifier import (
    EmotionClassifier,
    EmotionClassifierConfig,
    feature_matrix,
    fit_emotion_classifier,
    save_emotion_classifier,
)
from pipeline.models.files import MODEL_FILE
from pipeline.runtime import atomic_write_json
from pipeline.training.vae import dataset_fingerprint

log = logging.getLogger(__name__)

METRICS_JSON = "metrics.json"


def train_emotion(
    params: TrainEmotionParams, dataset_dir: str | Path, out_dir: str | Path
) -> dict[str, float]:
    """Return the validation metrics after fitting and saving the emotion classifier."""
    meta = read_meta(dataset_dir)
    rate = int(meta["sample_rate"])
    metrics: dict[str, float] = {}
    if not has_emotion_labels(meta):
        log.info("train_emotion: the dataset has no emotion labels; the classifier reads none")
        model = EmotionClassifier(EmotionClassifierConfig((), rate))
    else:
        emotions = list(meta["emotions"])
        train, val = load_split(dataset_dir, "train"), load_split(dataset_dir, "val")
        features = feature_matrix(train.audio, rate)
        model = fit_emotion_classifier(features, train.emotion.numpy(), emotions, rate,
                                       params.inverse_l2)
        metrics = _accuracy(model, val.audio, val.emotion.numpy(), "val")
        log.info("train_emotion: %d train clips; val accuracy %.3f (chance %.3f)",
                 len(train), metrics.get("val_accuracy", float("nan")),
                 metrics.get("val_chance", float("nan")))
    out_dir = Path(out_dir)
    save_emotion_classifier(out_dir / MODEL_FILE, model, {
        "params": to_dict(params), "emotions": list(model.emotions),
        "data": dataset_fingerprint(dataset_dir), "sample_rate": rate, "metrics": metrics,
    })
    atomic_write_json(out_dir / METRICS_JSON, metrics)
    return metrics


def _accuracy(
    model: EmotionClassifier, audio: object, labels: np.ndarray, split: str
) -> dict[str, float]:
    """Return ``{<split>_accuracy, <split>_chance}`` (chance: the majority class's share)."""
    if len(labels) == 0:
        return {}
    read = model.read(audio).labels.numpy()
    return {f"{split}_accuracy": float(np.mean(read == labels)),
            f"{split}_chance": float(np.bincount(labels).max() / len(labels))}
