"""Does 002's model separate expression from identity when the faces hold nothing else?

Synthetic 64 px faces: each speaker a smooth random pattern, each expression (3 patterns and
a neutral zero) added at a random intensity, a little pixel noise; no pose, no mouth motion.
On these, 002's premise holds exactly (a face = identity + expression), so its ExpressionEncoder
should cluster the expressions (k-means++, k = 9, as the evaluate_expression stage) better
than the pixels do. The demo corpus adds head turns (+-16 degrees of yaw) that dominate
what is not identity; this separates "the method" from "the data".

Usage: ``python benchmarks/disentangle.py``. Prints, per training setting, k-means accuracy on
``z_e`` for 26 training and 8 test speakers, and the pixels' (PCA 64) for comparison.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import torch
from scipy.ndimage import gaussian_filter
from sklearn.decomposition import PCA

from pipeline.config import TrainDisentangledParams
from pipeline.evaluation.attributes import cluster_accuracy
from pipeline.loaders import SplitTensors
from pipeline.training.disentangle import (
    Run,
    TrainingData,
    expression_latents,
    loss_weights,
    stage_plan,
    train_model,
)

EMOTIONS = np.array(["ANG", "HAP", "SAD", "NEU"])
SETTINGS = {
    "conventional (no adversarial / switch), kl 1": {"adversarial_weight": 0.0,
                                                     "switch_weight": 0.0, "kl_weight": 1.0},
    "adversarial + switch, kl 0.25 (demo)": {"kl_weight": 0.25},
}
COMMON = {"rounds": 2, "identity_epochs": 10, "expression_epochs": 10, "device": "cpu"}


def smooth_pattern(rng: np.random.Generator, sigma: float) -> np.ndarray:
    """Return a 64 x 64 smooth random pattern scaled to [-1, 1]."""
    field = gaussian_filter(rng.standard_normal((64, 64)), sigma)
    return field / np.abs(field).max()


def synthetic_split(rng: np.random.Generator, expressions: list[np.ndarray], n_speakers: int,
                    per_emotion: int, first: int) -> SplitTensors:
    """Return faces = 0.5 + 0.3 speaker + 0.25 a expression + noise, clipped to [0, 1]."""
    faces, emotion, speaker = [], [], []
    for s in range(n_speakers):
        identity = smooth_pattern(rng, 4)
        for e, pattern in enumerate(expressions):
            for _ in range(per_emotion):
                face = 0.5 + 0.3 * identity + 0.25 * rng.uniform(0.5, 1) * pattern
                faces.append(np.clip(face + 0.02 * rng.standard_normal((64, 64)), 0, 1))
                emotion.append(e)
                speaker.append(f"s{first + s}")
    n = len(faces)
    return SplitTensors(torch.tensor(np.array(faces), dtype=torch.float32)[:, None],
                        torch.zeros(n, 0), torch.tensor(emotion), speaker,
                        [f"c{first}_{i}" for i in range(n)], [""] * n)


def main() -> None:
    """Train each setting on the synthetic faces and print the clustering accuracies."""
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    expressions = [smooth_pattern(rng, 6) for _ in range(3)] + [np.zeros((64, 64))]
    train, val, test = (synthetic_split(rng, expressions, n, 2, first)
                        for n, first in ((26, 0), (6, 100), (8, 200)))
    data = TrainingData(train, val, train, tuple(EMOTIONS), 64, "synthetic")
    for split, faces in (("train", train), ("test", test)):
        pixels = PCA(64, random_state=0).fit(train.face.flatten(1).numpy())
        result = cluster_accuracy(pixels.transform(faces.face.flatten(1).numpy()),
                                  EMOTIONS[faces.emotion.numpy()], 9, 20)
        print(f"pixels (PCA 64), {split}: {result.mean:.3f} (chance {result.chance:.3f})")
    for name, overrides in SETTINGS.items():
        params = dataclasses.replace(TrainDisentangledParams(), **COMMON, **overrides)
        torch.manual_seed(0)
        start = time.process_time()
        model, _ = train_model(Run(params, loss_weights(params), stage_plan(params), None), data)
        seconds = time.process_time() - start
        scores = [cluster_accuracy(expression_latents(model, f.face).double().numpy(),
                                   EMOTIONS[f.emotion.numpy()], 9, 20).mean
                  for f in (train, test)]
        print(f"z_e, {name}: train {scores[0]:.3f}, test {scores[1]:.3f} "
              f"({seconds:.0f} s CPU)")


if __name__ == "__main__":
    main()
