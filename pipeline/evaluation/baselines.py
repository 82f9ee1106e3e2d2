"""Baseline predictions: latents a voice model must beat, scored by the same code as the model.

Each function returns ``(N_test, D)`` predicted latents, exactly like the voice model's
output, so that the ``evaluate`` stage decodes and scores them through the one code path
(:func:`pipeline.evaluation.scoring.evaluate_prediction`).

:data:`ORACLE` names the ceiling row: the true test latents themselves as the prediction,
decoded by the VAE, so its image metrics are the VAE's reconstruction MSE / PSNR / SSIM and
its attribute scores are the probes' accuracy on real test faces.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

MEAN_FACE = "mean_face"
RANDOM_SPEAKER = "random_speaker"
SEX_MEAN_FACE = "sex_mean_face"
ORACLE = "oracle"
MODEL = "model"
"""The row of the voice model's predictions, which the baselines and the oracle frame."""


def mean_face(train_latents: np.ndarray, n: int) -> np.ndarray:
    """Return ``(n, D)`` copies of the mean training latent (the "average face")."""
    train_latents = _as_2d(train_latents)
    return np.repeat(train_latents.mean(axis=0, keepdims=True), n, axis=0)


def random_speaker_face(
    train_latents: np.ndarray, train_speakers: Sequence[str], n: int, seed: int
) -> np.ndarray:
    """Return, per test clip, the mean training latent of a random training speaker.

    One speaker is drawn uniformly (``numpy.random.default_rng(seed)``) for each of the ``n``
    test clips independently: a real face carrying no information about the voice.
    """
    train_latents = _as_2d(train_latents)
    speakers = np.asarray(train_speakers, dtype=object)
    names = sorted(set(speakers.tolist()))
    faces = np.stack([train_latents[speakers == s].mean(axis=0) for s in names])
    drawn = np.random.default_rng(seed).integers(0, len(names), size=n)
    return faces[drawn]


def sex_mean_face(
    train_latents: np.ndarray, train_sex: Sequence[object], test_sex: Sequence[object]
) -> np.ndarray:
    """Return, per test clip, the mean training latent of the speaker's sex.

    The best a predictor that knows only the speaker's sex can do in latent MSE; clips of
    unknown sex (or a sex absent from training) get the overall mean face.
    """
    train_latents = _as_2d(train_latents)
    train_sex = pd.Series(np.asarray(train_sex, dtype=object))
    overall = train_latents.mean(axis=0)
    by_sex = {
        sex: train_latents[(train_sex == sex).to_numpy()].mean(axis=0)
        for sex in train_sex.dropna().unique()
    }
    return np.stack([by_sex.get(s, overall) if s == s else overall for s in test_sex])


def baseline_predictions(
    train_latents: np.ndarray,
    train_labels: pd.DataFrame,
    test_labels: pd.DataFrame,
    seed: int,
) -> dict[str, np.ndarray]:
    """Return the three baselines' predicted test latents, keyed by row name."""
    n = len(test_labels)
    return {
        MEAN_FACE: mean_face(train_latents, n),
        RANDOM_SPEAKER: random_speaker_face(
            train_latents, train_labels["speaker_id"].tolist(), n, seed
        ),
        SEX_MEAN_FACE: sex_mean_face(
            train_latents, train_labels["sex"].tolist(), test_labels["sex"].tolist()
        ),
    }


def _as_2d(latents: np.ndarray) -> np.ndarray:
    latents = np.asarray(latents, dtype=np.float64)
    if latents.ndim != 2 or len(latents) == 0:
        raise ValueError(f"expected non-empty (N, D) latents, got shape {latents.shape}")
    return latents
