"""How much identity the demo corpus's voices carry: the ceiling of any voice encoder.

Ridge regression from the corpus's *ground-truth* voice parameters (sex, espeak pitch, rate,
vocal-tract scale, variant) to each speaker's mean VAE latent, scored as train_voice and
evaluate score it: R@1 among 4 held-out speakers (2 male + 2 female, cosine), against the
sex-mean-face baseline. Averaged over random speaker splits, and on the dataset's own test
split. If exact voice parameters cannot beat the sex-mean face, no encoder can.

Usage: ``python benchmarks/voice_face_tie.py [--dataset data/dataset] [--vae
models/vae/model.pt] [--ground-truth data/download/media/ground_truth.csv]`` (the defaults are
where ``make demo`` writes them; when one is absent the benchmark is skipped with a line that
says so: only the demo corpus has ground-truth voice parameters).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.loaders import META_JSON, load_split
from pipeline.models.registry import load_face_model
from pipeline.models.voice_encoder import VoiceEncoder, VoiceEncoderConfig
from pipeline.models.voice_to_face import VoiceToFace
from pipeline.training.voice import face_features

SPLITS = ("train", "val", "test")


def speaker_latents(dataset: str, vae_path: str) -> tuple[list[str], np.ndarray, list[str]]:
    """Return speaker ids, their mean VAE latents (default emotion code) and their split."""
    face = load_face_model(vae_path).model
    model = VoiceToFace(face, VoiceEncoder(VoiceEncoderConfig(out_dim=face.target_dim)))
    speakers, means, splits = [], [], []
    for split in SPLITS:
        data = load_split(dataset, split, with_audio=False)
        emotion = model.emotion_labels(None, len(data))
        latents = face.latents(face_features(face, data.face), emotion).numpy()
        for speaker in dict.fromkeys(data.speaker_id):
            rows = [i for i, s in enumerate(data.speaker_id) if s == speaker]
            speakers.append(speaker)
            means.append(latents[rows].mean(axis=0))
            splits.append(split)
    return speakers, np.stack(means), splits


def voice_parameters(ground_truth: str, speakers: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Return the speakers' voice parameters ``(S, 5)`` and their sex (True = male)."""
    table = pd.read_csv(ground_truth, dtype={"speaker_id": str}).groupby("speaker_id").first()
    rows = table.loc[speakers]
    male = (rows["sex"] == "Male").to_numpy()
    variant = rows["voice_variant"].str[1:].astype(float).to_numpy()
    params = rows[["voice_pitch", "voice_speed_wpm", "voice_tract_scale"]].to_numpy(float)
    return np.column_stack([male, params, variant]), male


def ridge_predict(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray,
                  alpha: float) -> np.ndarray:
    """Return ridge predictions for ``x_test`` (inputs standardised on the training rows)."""
    mean, std = x_train.mean(0), x_train.std(0) + 1e-8
    a, b = (x_train - mean) / std, (x_test - mean) / std
    centred = y_train - y_train.mean(0)
    weights = np.linalg.solve(a.T @ a + alpha * np.eye(a.shape[1]), a.T @ centred)
    return b @ weights + y_train.mean(0)


def recall_at_1(queries: np.ndarray, gallery: np.ndarray) -> float:
    """Return the share of queries most cosine-similar to their own gallery row (ties split)."""
    unit = [v / np.linalg.norm(v, axis=1, keepdims=True) for v in (queries, gallery)]
    sim = unit[0] @ unit[1].T
    own = np.diag(sim)
    wins = [(1.0 / np.isclose(row, own[i]).sum()) if np.isclose(row.max(), own[i]) else 0.0
            for i, row in enumerate(sim)]
    return float(np.mean(wins))


def scores(x: np.ndarray, male: np.ndarray, latents: np.ndarray, test: np.ndarray,
           alpha: float) -> tuple[float, float]:
    """Return (R@1 of ridge from voice parameters, R@1 of the sex-mean face) on ``test``."""
    train = np.setdiff1d(np.arange(len(x)), test)
    predicted = ridge_predict(x[train], latents[train], x[test], alpha)
    sex_mean = np.stack([latents[train][male[train] == m].mean(0) for m in male[test]])
    return recall_at_1(predicted, latents[test]), recall_at_1(sex_mean, latents[test])


def main() -> None:
    """Print the ceiling R@1 on random splits and on the dataset's test split."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, default=Path("data/dataset"))
    parser.add_argument("--vae", type=Path, default=Path("models/vae/model.pt"))
    parser.add_argument("--ground-truth", type=Path,
                        default=Path("data/download/media/ground_truth.csv"))
    parser.add_argument("--splits", type=int, default=300)
    parser.add_argument("--alpha", type=float, default=1.0)
    args = parser.parse_args()
    absent = [str(p) for p in (args.dataset / META_JSON, args.vae, args.ground_truth)
              if not p.is_file()]
    if absent:
        print(f"voice_face_tie skipped: {', '.join(absent)} absent (`make demo` writes them)")
        return
    speakers, latents, split_of = speaker_latents(args.dataset, args.vae)
    x, male = voice_parameters(args.ground_truth, speakers)
    rng = np.random.default_rng(0)
    men, women = np.flatnonzero(male), np.flatnonzero(~male)
    random_splits = [scores(x, male, latents, np.r_[rng.choice(men, 2, replace=False),
                                                   rng.choice(women, 2, replace=False)],
                            args.alpha) for _ in range(args.splits)]
    ridge_r1, sex_r1 = np.mean(random_splits, axis=0)
    print(f"random 2M+2F held-out splits ({args.splits}): R@1 from exact voice parameters "
          f"{ridge_r1:.3f}, sex-mean face {sex_r1:.3f}, chance 0.250")
    test = np.flatnonzero(np.array(split_of) == "test")
    ridge_r1, sex_r1 = scores(x, male, latents, test, args.alpha)
    print(f"the dataset's test split {[speakers[i] for i in test]}: R@1 from exact voice "
          f"parameters {ridge_r1:.3f}, sex-mean face {sex_r1:.3f}")


if __name__ == "__main__":
    main()
