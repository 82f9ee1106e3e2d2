"""Synthetic latent test sets with a known structure (identity, sex, age, emotion axes)."""

from __future__ import annotations

import numpy as np
import pandas as pd

EMOTIONS = ("ANG", "HAP", "NEU", "SAD")


def labelled_latents(
    rng: np.random.Generator,
    n_speakers: int = 8,
    clips_per_emotion: int = 2,
    dim: int = 12,
    prefix: str = "s",
    noise: float = 0.05,
) -> tuple[np.ndarray, pd.DataFrame]:
    """Return ``(latents, labels)``: dim 0 = sex (+-3), dim 1 = age / 10, dims 2-5 = emotion
    one-hot x 3, the rest a per-speaker identity code; speakers alternate F / M."""
    rows, latents = [], []
    for s in range(n_speakers):
        sex = "Female" if s % 2 == 0 else "Male"
        age = 20 + (5 * s) % 50
        identity = 0.3 * rng.normal(size=dim - 6)
        for e, emotion in enumerate(EMOTIONS):
            for c in range(clips_per_emotion):
                sex_axis = 3.0 if sex == "Male" else -3.0
                z = np.concatenate([[sex_axis, age / 10], np.zeros(4), identity])
                z[2 + e] = 3.0
                latents.append(z + noise * rng.normal(size=dim))
                rows.append(
                    {
                        "clip_id": f"{prefix}{s}_{emotion}_{c}",
                        "speaker_id": f"{prefix}{s}",
                        "sex": sex,
                        "age": age,
                        "emotion": emotion,
                    }
                )
    return np.array(latents), pd.DataFrame(rows)
