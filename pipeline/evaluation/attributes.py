"""Attribute agreement (sex, age, emotion) and expression clustering on latents.

Attribute *probes* are fitted once on the real training faces' latents and then applied,
unchanged, to any set of latents (generated faces, baselines, real test faces), so every row
of the results table is scored by the same classifiers. A probe's score on the real test
faces is its *ceiling*: a generated face cannot be read better than a real one.

Expression clustering follows Kanou & Nagao (paper 002, section 5.2.1): k-means++ with
Euclidean distance, each cluster labelled by the label of the point nearest its centroid,
accuracy averaged over seeded runs.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.cluster import KMeans
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression, RidgeCV
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

_RIDGE_ALPHAS = np.logspace(-3, 4, 15)


@dataclass(frozen=True)
class AttributeProbes:
    """Classifiers fitted on real training latents; ``None`` where the labels did not allow it."""

    sex: Pipeline | None
    """Standardised logistic regression latent -> sex."""
    age: Pipeline | None
    """Standardised ridge regression (alpha by leave-one-out) latent -> age in years."""
    emotion: Pipeline | None
    """Standardised multinomial logistic regression latent -> emotion."""
    emotions: tuple[str, ...]
    """Emotion classes, in report order (rows / columns of confusion matrices)."""
    train_median_age: float
    """The constant age prediction that minimises MAE on training labels (age chance level)."""


def fit_attribute_probes(
    latents: np.ndarray,
    labels: pd.DataFrame,
    emotions: Sequence[str] | None = None,
    c: float = 1.0,
) -> AttributeProbes:
    """Return sex / age / emotion probes fitted on real training latents.

    Args:
        latents: ``(N, D)`` latents of the real training faces.
        labels: ``N`` rows with columns ``sex``, ``age``, ``emotion`` (nulls are skipped).
        emotions: class order for reports (``meta.json``'s list); default: sorted labels seen.
        c: inverse regularisation strength of the logistic regressions.
    """
    latents = _latents(latents, labels)
    labels = labels.reset_index(drop=True)
    seen = sorted(_known(labels["emotion"]).unique().tolist())
    emotions = tuple(emotions) if emotions is not None else tuple(seen)
    age = pd.to_numeric(labels["age"], errors="coerce")
    return AttributeProbes(
        sex=_fit_classifier(latents, labels["sex"], c),
        age=_fit_regressor(latents, age),
        emotion=_fit_classifier(latents, labels["emotion"], c),
        emotions=emotions,
        train_median_age=float(age.median()) if age.notna().any() else float("nan"),
    )


def _fit_classifier(latents: np.ndarray, target: pd.Series, c: float) -> Pipeline | None:
    known = _known(target)
    if known.nunique() < 2:
        return None
    model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000))
    return model.fit(latents[known.index.to_numpy()], known.astype(str).to_numpy())


def _fit_regressor(latents: np.ndarray, target: pd.Series) -> Pipeline | None:
    known = target.dropna()
    if len(known) < 3:
        return None
    model = make_pipeline(StandardScaler(), RidgeCV(alphas=_RIDGE_ALPHAS))
    return model.fit(latents[known.index.to_numpy()], known.to_numpy(dtype=np.float64))


@dataclass(frozen=True)
class AttributeResult:
    """Attributes read from one set of latents by the probes, against the clips' labels."""

    predicted_sex: np.ndarray
    """``(N,)`` object array; None where there is no sex probe."""
    predicted_age: np.ndarray
    """``(N,)`` floats; NaN where there is no age probe."""
    predicted_emotion: np.ndarray
    """``(N,)`` object array; None where there is no emotion probe."""
    sex_agreement: float
    """Share of clips (with a known sex) whose predicted sex is the speaker's."""
    age_mae: float
    """Mean absolute error in years over clips with a known age."""
    emotion_agreement: float
    """Share of clips (with a known emotion) whose predicted emotion is the clip's label."""
    emotion_per_class: dict[str, float]
    """Per true emotion class: share predicted correctly (recall); NaN for absent classes."""
    confusion: np.ndarray
    """``(C, C)`` counts, rows = true emotion, columns = predicted, in ``probes.emotions``."""


def attribute_metrics(
    probes: AttributeProbes, latents: np.ndarray, labels: pd.DataFrame
) -> AttributeResult:
    """Return the probes' predictions on ``latents`` and their agreement with ``labels``."""
    latents = _latents(latents, labels)
    n = len(latents)
    sex = _predict_labels(probes.sex, latents)
    emotion = _predict_labels(probes.emotion, latents)
    age = probes.age.predict(latents) if probes.age is not None else np.full(n, np.nan)
    true_emotion = labels["emotion"].to_numpy(dtype=object)
    confusion = confusion_counts(true_emotion, emotion, probes.emotions)
    return AttributeResult(
        predicted_sex=sex,
        predicted_age=age,
        predicted_emotion=emotion,
        sex_agreement=_agreement(labels["sex"].to_numpy(dtype=object), sex),
        age_mae=_mae(pd.to_numeric(labels["age"], errors="coerce").to_numpy(float), age),
        emotion_agreement=_agreement(true_emotion, emotion),
        emotion_per_class=_per_class(confusion, probes.emotions),
        confusion=confusion,
    )


@dataclass(frozen=True)
class AttributeChance:
    """What attribute scores a predictor that ignores its input reaches (the test labels')."""

    sex_agreement: float
    """Share of the most frequent sex."""
    age_mae: float
    """MAE of always predicting the training median age."""
    emotion_agreement: float
    """Share of the most frequent emotion."""


def attribute_chance(probes: AttributeProbes, labels: pd.DataFrame) -> AttributeChance:
    """Return the best scores of a constant prediction on ``labels`` (majority / median)."""
    age = pd.to_numeric(labels["age"], errors="coerce").to_numpy(float)
    return AttributeChance(
        sex_agreement=_majority_share(labels["sex"]),
        age_mae=_mae(age, np.full(len(age), probes.train_median_age)),
        emotion_agreement=_majority_share(labels["emotion"]),
    )


def confusion_counts(
    true: Sequence[object], predicted: Sequence[object], classes: Sequence[str]
) -> np.ndarray:
    """Return ``(C, C)`` counts of (true, predicted) pairs; pairs outside ``classes`` skipped."""
    index = {c: i for i, c in enumerate(classes)}
    counts = np.zeros((len(classes), len(classes)), dtype=np.int64)
    for t, p in zip(true, predicted, strict=True):
        if t in index and p in index:
            counts[index[t], index[p]] += 1
    return counts


@dataclass(frozen=True)
class ClusteringResult:
    """Expression clustering accuracy over seeded k-means++ runs (002 section 5.2.1)."""

    mean: float
    std: float
    accuracies: np.ndarray
    """``(runs,)`` accuracy of each run."""
    chance: float
    """Expected accuracy when the labels are independent of the latents (see below)."""


def cluster_accuracy(
    latents: np.ndarray,
    labels: Sequence[object],
    k: int | None = None,
    runs: int = 100,
    seed: int = 0,
) -> ClusteringResult:
    """Return k-means++ clustering accuracy (mean, std over ``runs`` seeded runs).

    Each run fits ``KMeans(k, init="k-means++", n_init=1, random_state=seed + run)``; each
    non-empty cluster takes the label of its member nearest the centroid; accuracy is the
    share of points whose cluster's label is their own. When several members are equally near
    (identical latents, e.g. a constant predictor), the cluster is scored by the expectation
    over those candidates, so a degenerate input cannot win by the order of the rows.

    ``chance`` is the exact expectation when labels are drawn independently of the latents with
    the observed class shares ``p_c``: the nearest point always matches itself, every other point
    matches with probability ``sum p_c^2``, so ``chance = (k + (n - k) sum p_c^2) / n``
    (slightly above ``1/k`` for balanced classes: the nearest points are free hits). Inputs with
    fewer distinct points than ``k`` (a constant predictor) fill fewer clusters and score
    ``sum p_c^2``, below that chance.
    """
    latents = np.asarray(latents, dtype=np.float64)
    labels = np.asarray(labels, dtype=object)
    if latents.ndim != 2 or len(latents) != len(labels):
        raise ValueError(f"latents {latents.shape} and {len(labels)} labels do not match")
    k = k if k is not None else len(set(labels.tolist()))
    if not 1 <= k <= len(latents):
        raise ValueError(f"k must be in [1, {len(latents)}], got {k}")
    # One thread: these fits are small, and OpenMP threads spinning on a busy machine made
    # each fit ~100x slower (2.7 s vs 0.03 s measured for 1,200 x 5 points under load).
    with threadpool_limits(limits=1):
        accuracies = np.array(
            [_one_clustering(latents, labels, k, seed + run) for run in range(runs)]
        )
    shares = pd.Series(labels).value_counts(normalize=True).to_numpy()
    n = len(latents)
    return ClusteringResult(
        mean=float(accuracies.mean()),
        std=float(accuracies.std()),
        accuracies=accuracies,
        chance=float((k + (n - k) * np.sum(shares**2)) / n),
    )


def _one_clustering(latents: np.ndarray, labels: np.ndarray, k: int, seed: int) -> float:
    with warnings.catch_warnings():
        # Fewer distinct points than k (constant predictors) is a legitimate input here.
        warnings.simplefilter("ignore", ConvergenceWarning)
        kmeans = KMeans(n_clusters=k, init="k-means++", n_init=1, random_state=seed)
        assignment = kmeans.fit_predict(latents)
    hits = 0.0
    for cluster in np.unique(assignment):
        members = np.flatnonzero(assignment == cluster)
        distance = np.linalg.norm(latents[members] - kmeans.cluster_centers_[cluster], axis=1)
        nearest = members[np.isclose(distance, distance.min(), rtol=1e-9, atol=1e-12)]
        member_labels = labels[members]
        hits += np.mean([np.sum(member_labels == labels[c]) for c in nearest])
    return hits / len(latents)


def subtract_group_mean(latents: np.ndarray, groups: Sequence[object]) -> np.ndarray:
    """Return latents minus the mean latent of their group (002 eq. (6), per speaker).

    002 uses it to strip identity before clustering expressions; it needs the speaker of every
    clip, which a voice-only test-time system does not have, so report it as a reference.
    """
    latents = np.asarray(latents, dtype=np.float64)
    groups = np.asarray(groups, dtype=object)
    out = latents.copy()
    for group in set(groups.tolist()):
        rows = groups == group
        out[rows] -= latents[rows].mean(axis=0)
    return out


def _latents(latents: np.ndarray, labels: pd.DataFrame) -> np.ndarray:
    latents = np.asarray(latents, dtype=np.float64)
    if latents.ndim != 2 or len(latents) != len(labels):
        raise ValueError(f"latents {latents.shape} and {len(labels)} label rows do not match")
    return latents


def _known(values: pd.Series) -> pd.Series:
    return values.dropna()


def _predict_labels(model: Pipeline | None, latents: np.ndarray) -> np.ndarray:
    if model is None:
        return np.full(len(latents), None, dtype=object)
    return model.predict(latents).astype(object)


def _agreement(true: np.ndarray, predicted: np.ndarray) -> float:
    known = np.array([t is not None and t == t for t in true]) & (predicted != None)  # noqa: E711
    if not known.any():
        return float("nan")
    return float(np.mean(true[known].astype(str) == predicted[known].astype(str)))


def _mae(true: np.ndarray, predicted: np.ndarray) -> float:
    known = ~np.isnan(true) & ~np.isnan(predicted)
    return float(np.mean(np.abs(true[known] - predicted[known]))) if known.any() else float("nan")


def _per_class(confusion: np.ndarray, classes: Sequence[str]) -> dict[str, float]:
    totals = confusion.sum(axis=1)
    return {
        c: float(confusion[i, i] / totals[i]) if totals[i] else float("nan")
        for i, c in enumerate(classes)
    }


def _majority_share(values: pd.Series) -> float:
    known = values.dropna()
    return float(known.value_counts(normalize=True).iloc[0]) if len(known) else float("nan")
