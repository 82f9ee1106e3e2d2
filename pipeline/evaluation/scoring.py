"""Score one set of predicted latents (the model, a baseline, the oracle) with every metric.

:func:`evaluate_prediction` is the one code path behind every row of the results table: the
voice model's predictions and the baselines' go through it identically. It returns the row's
summary metrics (flat ``group.metric`` names), their chance levels, and a per-clip table
that traces every number back to a clip.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipeline.config import EvaluateParams
from pipeline.evaluation.attributes import (
    AttributeChance,
    AttributeProbes,
    AttributeResult,
    attribute_chance,
    attribute_metrics,
    cluster_accuracy,
)
from pipeline.evaluation.metrics import (
    Gallery,
    image_metrics,
    latent_metrics,
    matching_1of2,
    retrieval_metrics,
    score_speakers,
    speaker_gallery,
)

LABEL_COLUMNS = ("clip_id", "speaker_id", "sex", "age", "emotion")


@dataclass(frozen=True)
class DescriptorCheck:
    """Where dlib's 5-point alignment was plausible (else a template was used), per face set."""

    real: np.ndarray
    """``(N,)`` bool for the real test crops."""
    predicted: dict[str, np.ndarray]
    """Row name -> ``(N,)`` bool for that row's decoded faces."""


@dataclass(frozen=True)
class HeldOut:
    """The held-out clips: labels and real-face representations, row-aligned."""

    labels: pd.DataFrame
    """Columns ``clip_id, speaker_id, sex, age, emotion`` (DATASET schema names)."""
    latents: np.ndarray
    """``(N, D)`` latents of the real test faces (the voice model's targets)."""
    faces: np.ndarray | None = None
    """``(N, S, S)`` real faces in [0, 1], for image metrics."""
    descriptors: np.ndarray | None = None
    """``(N, 128)`` dlib descriptors of the real faces, for face-space retrieval."""

    def __post_init__(self) -> None:
        missing = [c for c in LABEL_COLUMNS if c not in self.labels.columns]
        if missing:
            raise ValueError(f"test labels lack column(s) {missing}")
        for name in ("latents", "faces", "descriptors"):
            value = getattr(self, name)
            if value is not None and len(value) != len(self.labels):
                raise ValueError(f"{name} has {len(value)} rows, labels {len(self.labels)}")

    def sex_of(self, gallery: Gallery) -> list[object]:
        """Return the sex of each gallery speaker (first label seen for them)."""
        sex = self.labels.groupby("speaker_id", sort=False)["sex"].first()
        return [sex.get(s) for s in gallery.speakers]


@dataclass(frozen=True)
class Prediction:
    """One row of the table: latents predicted for every test clip, and what they decode to."""

    name: str
    latents: np.ndarray
    """``(N, D)`` predicted latents, row-aligned with the test set."""
    faces: np.ndarray | None = None
    """``(N, S, S)`` faces decoded from ``latents``, in [0, 1]."""
    descriptors: np.ndarray | None = None
    """``(N, 128)`` dlib descriptors of ``faces``."""


@dataclass(frozen=True)
class RowResult:
    """Everything measured for one prediction."""

    name: str
    metrics: dict[str, float]
    """Flat ``group.metric`` -> value, e.g. ``latent.r@1``."""
    chance: dict[str, float]
    """Chance level of each metric that has one (same keys)."""
    per_clip: pd.DataFrame
    """One row per test clip (see :func:`evaluate_prediction`)."""
    confusion: np.ndarray
    """Emotion confusion counts, rows = true, columns = predicted, in ``emotions`` order."""
    emotions: tuple[str, ...]


def evaluate_prediction(
    prediction: Prediction,
    test: HeldOut,
    probes: AttributeProbes,
    params: EvaluateParams,
) -> RowResult:
    """Return every metric of ``prediction`` on ``test``, with chance levels and per-clip rows.

    Retrieval and matching run in the VAE latent space (group ``latent``) and, when both the
    test set and the prediction carry dlib descriptors, in face-descriptor space (``face``).
    ``match`` is 1:2 accuracy with one seeded impostor per clip (Wen et al.); ``match_all``
    averages each clip over every eligible impostor instead (no draw, no sampling noise).
    The per-clip table has ``clip_id, speaker_id, sex, emotion``, then ``<space>.rank``,
    ``<space>.similarity_to_true``, ``<space>.match`` / ``.impostor`` (1:2, any impostor) and
    ``<space>.match_same_sex`` / ``.impostor_same_sex``, the latent and image metrics and the
    attributes the probes read (``predicted_sex``, ``predicted_age``, ``predicted_emotion``).
    """
    labels = test.labels.reset_index(drop=True)
    metrics: dict[str, float] = {}
    chance: dict[str, float] = {}
    per_clip = labels[["clip_id", "speaker_id", "sex", "emotion"]].copy()

    latent = latent_metrics(test.latents, prediction.latents)
    for key in ("mse", "cosine"):
        metrics[f"latent.{key}"] = float(np.mean(getattr(latent, key)))
        per_clip[f"latent.{key}"] = getattr(latent, key)

    if test.faces is not None and prediction.faces is not None:
        image = image_metrics(test.faces, prediction.faces)
        for key in ("mse", "psnr", "ssim"):
            metrics[f"image.{key}"] = float(np.mean(getattr(image, key)))
            per_clip[f"image.{key}"] = getattr(image, key)

    spaces = {"latent": (test.latents, prediction.latents)}
    if test.descriptors is not None and prediction.descriptors is not None:
        spaces["face"] = (test.descriptors, prediction.descriptors)
    for space, (real, predicted) in spaces.items():
        _score_identity(space, real, predicted, test, params, metrics, chance, per_clip)

    attributes = attribute_metrics(probes, prediction.latents, labels)
    _add_attributes(attributes, attribute_chance(probes, labels), metrics, chance, per_clip,
                    with_emotion=bool(probes.emotions))
    _add_clustering(prediction.latents, labels, probes, params, metrics, chance)

    per_clip.insert(0, "row", prediction.name)
    return RowResult(
        name=prediction.name,
        metrics=metrics,
        chance=chance,
        per_clip=per_clip,
        confusion=attributes.confusion,
        emotions=probes.emotions,
    )


def _score_identity(
    space: str,
    real: np.ndarray,
    predicted: np.ndarray,
    test: HeldOut,
    params: EvaluateParams,
    metrics: dict[str, float],
    chance: dict[str, float],
    per_clip: pd.DataFrame,
) -> None:
    """Add retrieval and 1:2 matching of ``predicted`` against a gallery of ``real``."""
    speakers = test.labels["speaker_id"].tolist()
    gallery = speaker_gallery(real, speakers)
    scores = score_speakers(predicted, gallery, speakers, params.similarity)
    retrieval = retrieval_metrics(scores, params.recall_ks, params.ties)
    for k in params.recall_ks:
        metrics[f"{space}.r@{k}"] = retrieval.recall[k]
        chance[f"{space}.r@{k}"] = retrieval.chance_recall[k]
    metrics[f"{space}.mean_rank"] = retrieval.mean_rank
    chance[f"{space}.mean_rank"] = retrieval.chance_mean_rank
    per_clip[f"{space}.rank"] = retrieval.rank
    per_clip[f"{space}.similarity_to_true"] = retrieval.similarity_to_true

    names = np.array([*gallery.speakers, None], dtype=object)  # index -1 -> None
    for suffix, sex in (("", None), ("_same_sex", test.sex_of(gallery))):
        match = matching_1of2(scores, params.seed, speaker_sex=sex)
        metrics[f"{space}.match{suffix}"] = match.accuracy
        metrics[f"{space}.match{suffix}_all"] = match.expected_accuracy
        chance[f"{space}.match{suffix}"] = chance[f"{space}.match{suffix}_all"] = match.chance
        per_clip[f"{space}.match{suffix}"] = match.outcome
        per_clip[f"{space}.impostor{suffix}"] = names[match.impostor]


def _add_attributes(
    attributes: AttributeResult,
    floor: AttributeChance,
    metrics: dict[str, float],
    chance: dict[str, float],
    per_clip: pd.DataFrame,
    with_emotion: bool = True,
) -> None:
    """Add sex / age / emotion agreement (and per-class emotion accuracy) to a row.

    Without emotion classes (data without emotion labels) the emotion metrics are left out,
    not reported as missing values.
    """
    keys = ("sex_agreement", "age_mae", "emotion_agreement")[:3 if with_emotion else 2]
    for key in keys:
        metrics[f"attr.{key}"] = getattr(attributes, key)
        chance[f"attr.{key}"] = getattr(floor, key)
    metrics |= {f"attr.emotion.{c}": v for c, v in attributes.emotion_per_class.items()}
    per_clip["predicted_sex"] = attributes.predicted_sex
    per_clip["predicted_age"] = attributes.predicted_age
    per_clip["predicted_emotion"] = attributes.predicted_emotion


def _add_clustering(
    latents: np.ndarray,
    labels: pd.DataFrame,
    probes: AttributeProbes,
    params: EvaluateParams,
    metrics: dict[str, float],
    chance: dict[str, float],
) -> None:
    """Add expression clustering accuracy on the clips with an emotion label."""
    known = labels["emotion"].notna().to_numpy()
    k = len(probes.emotions)
    if known.sum() < max(k, 2):
        return
    clusters = cluster_accuracy(
        np.asarray(latents)[known],
        labels["emotion"][known].tolist(),
        k=k,
        runs=params.clustering_runs,
        seed=params.seed,
    )
    metrics |= {"cluster.accuracy": clusters.mean, "cluster.accuracy_std": clusters.std}
    chance["cluster.accuracy"] = clusters.chance
