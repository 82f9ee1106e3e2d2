"""002 section 5.2 on the disentangled face model: expression recognition, leakage, figures.

**Expression recognition** (002 5.2.1, Table 3): k-means++ on each row's latents of the
dataset's faces (the frames the faces stage chose, where the labelled expression shows),
``clusters`` clusters, each labelled by its member nearest the centroid, accuracy mean ±
std over ``clustering_runs`` seeded runs (:func:`~pipeline.evaluation.attributes.cluster_accuracy`),
on the training speakers and on the test speakers. Rows (models from
:mod:`pipeline.training.expression_baselines`): the conventional method, + adversarial,
+ adversarial + switch (the main model after round 1), + iterated stages (the main model),
an unconditional VAE's latent, that latent minus each speaker's mean (eq. 6), a
speaker-conditioned C-VAE; the last two need the speaker, so they have no test column
(as in 002). Each round's snapshot gives the accuracy against rounds (002 Fig. 3).

**Leakage**: a linear probe (standardised logistic regression) reads the speaker from
``z_e`` (cross-validated over the training speakers' faces) and the emotion from ``z_i``
(fitted on the training speakers, scored on the test speakers); near their chance level
(the majority share) is good. The opposite probes (speaker from ``z_i``, emotion from
``z_e``) are reported beside them as their ceilings.

**Figures**: expression swap across test speakers (002 Fig. 4) and interpolation between two
expressions of one test speaker (Fig. 5), rows per method.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from pipeline.config import EvaluateExpressionParams
from pipeline.evaluation.attributes import cluster_accuracy, subtract_group_mean
from pipeline.images import image_grid
from pipeline.loaders import SplitTensors
from pipeline.models.disentangled import DisentangledVAE
from pipeline.models.inference import batched
from pipeline.training.disentangle import expression_latents, identity_latents

log = logging.getLogger(__name__)

TRAIN, TEST = "train", "test"
ROWS = {
    "conventional": "① conventional method [9] (one round, no adversarial / switch loss)",
    "adversarial": "② + adversarial loss (one round)",
    "adversarial_switch": "③ + adversarial + switch loss (one round: the model after round 1)",
    "iterated": "④ + adversarial + switch, iterated stages (the model)",
    "vae": "⑥ original VAE (unconditional, same layers)",
    "vae_minus_speaker_mean": "⑦ original VAE minus each speaker's mean latent (eq. 6)",
    "cvae": "⑧ C-VAE conditioned on the speaker",
}
"""Table 3 rows: key -> description (002's numbering; its ⑤ is the 128 px model)."""
SPEAKER_ROWS = ("vae_minus_speaker_mean", "cvae")
"""Rows that need each face's speaker: no test column (002 Table 3)."""
GRID_SCALE = 2


@dataclass(frozen=True)
class LabelledFaces:
    """The faces of one group of speakers with their emotion and speaker labels."""

    faces: torch.Tensor
    """``(N, 1, S, S)`` in [0, 1]."""
    emotion: np.ndarray
    """``(N,)`` emotion names."""
    speaker: np.ndarray
    """``(N,)`` speaker ids."""

    @classmethod
    def of(cls, split: SplitTensors, emotions: Sequence[str]) -> LabelledFaces:
        """Return a split's faces with emotion names (labels index ``emotions``)."""
        names = np.array(list(emotions) or [""], dtype=object)
        return cls(split.face, names[np.clip(split.emotion.numpy(), 0, None)],
                   np.array(split.speaker_id, dtype=object))


Encoder = Callable[[LabelledFaces], np.ndarray]
"""A row's latents of a group of faces ``(N, D)``; or None-returning for no test column."""


def expression_table(
    rows: Mapping[str, Mapping[str, np.ndarray]],
    groups: Mapping[str, LabelledFaces],
    params: EvaluateExpressionParams,
) -> pd.DataFrame:
    """Return Table 3: per row, accuracy mean and std on each group, with chance levels.

    ``rows``: row -> group -> latents ``(N, D)`` (a group may be missing for a row).
    Columns ``<group>`` and ``<group>_std`` (NaN where the row has no latents for the group);
    the last row, ``chance``, is the clustering's chance level of each group's labels. A
    group of fewer faces than ``clusters`` is clustered into as many clusters as faces.
    """
    records, chance = {}, {}
    for name, latents in rows.items():
        record = {}
        for group, faces in groups.items():
            if group not in latents:
                record |= {group: np.nan, f"{group}_std": np.nan}
                continue
            k = min(params.clusters, len(faces.emotion))
            result = cluster_accuracy(latents[group], faces.emotion.tolist(), k,
                                      params.clustering_runs, params.seed)
            record |= {group: result.mean, f"{group}_std": result.std}
            chance[group] = result.chance
        records[name] = record
    table = pd.DataFrame.from_dict(records, orient="index")
    table.loc["chance"] = {g: chance.get(g, np.nan) for g in groups} | {
        f"{g}_std": np.nan for g in groups}
    table.index.name = "row"
    return table


def model_rows(
    models: Mapping[str, DisentangledVAE], groups: Mapping[str, LabelledFaces]
) -> dict[str, dict[str, np.ndarray]]:
    """Return ``z_e`` of every group for each 002 model (rows 1-4)."""
    return {name: {g: _numpy(expression_latents(model, faces.faces))
                   for g, faces in groups.items()} for name, model in models.items()}


def vae_rows(
    vae: Callable[[torch.Tensor], torch.Tensor],
    cvae: Callable[[torch.Tensor, Sequence[str]], torch.Tensor],
    groups: Mapping[str, LabelledFaces],
) -> dict[str, dict[str, np.ndarray]]:
    """Return the VAE rows: its latent, minus the speaker mean (train), the C-VAE's (train).

    ``vae(faces) -> mu``; ``cvae(faces, speakers) -> mu`` (training speakers only).
    """
    latents = {g: _numpy(vae(faces.faces)) for g, faces in groups.items()}
    train = groups[TRAIN]
    return {
        "vae": latents,
        "vae_minus_speaker_mean": {TRAIN: subtract_group_mean(latents[TRAIN], train.speaker)},
        "cvae": {TRAIN: _numpy(cvae(train.faces, train.speaker.tolist()))},
    }


def _numpy(latents: torch.Tensor) -> np.ndarray:
    return latents.double().numpy()


# --- leakage probes -------------------------------------------------------------------------


def leakage_probes(
    model: DisentangledVAE,
    groups: Mapping[str, LabelledFaces],
    params: EvaluateExpressionParams,
    with_emotion: bool = True,
) -> pd.DataFrame:
    """Return linear-probe accuracies and chance levels of speaker and emotion from each latent.

    Speaker probes: ``probe_folds``-fold cross-validation (stratified by speaker) over the
    training speakers' faces. Emotion probes: fitted on the training speakers' faces, scored
    on the test speakers' (left out without emotion labels). Rows ``speaker from z_e`` /
    ``emotion from z_i`` are the leakage (near chance is good); ``speaker from z_i`` /
    ``emotion from z_e`` what each latent is for.
    """
    train, test = groups[TRAIN], groups[TEST]
    z = {(g, latent): _numpy(encode(model, groups[g].faces))
         for g in (TRAIN, TEST)
         for latent, encode in (("z_i", identity_latents), ("z_e", expression_latents))}
    rows = {}
    folds = min(params.probe_folds, int(pd.Series(train.speaker).value_counts().min()))
    for latent in ("z_e", "z_i"):
        rows[f"speaker from {latent}"] = {
            "accuracy": _cross_validated(z[TRAIN, latent], train.speaker, folds, params.seed),
            "chance": _majority_share(train.speaker), "scored_on": f"train speakers, {folds}-fold"}
    for latent in ("z_i", "z_e") if with_emotion else ():
        probe = _probe().fit(z[TRAIN, latent], train.emotion.astype(str))
        rows[f"emotion from {latent}"] = {
            "accuracy": float(probe.score(z[TEST, latent], test.emotion.astype(str))),
            "chance": _majority_share(test.emotion), "scored_on": "test speakers"}
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "probe"
    return table


def _probe() -> Any:
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))


def _cross_validated(latents: np.ndarray, labels: np.ndarray, folds: int, seed: int) -> float:
    if folds < 2:
        return float("nan")  # a speaker with one face: no fold can hold them out and in
    split = StratifiedKFold(folds, shuffle=True, random_state=seed)
    with threadpool_limits(limits=1):
        return float(cross_val_score(_probe(), latents, labels.astype(str), cv=split).mean())


def _majority_share(labels: np.ndarray) -> float:
    return float(pd.Series(labels).value_counts(normalize=True).iloc[0])


# --- figures ---------------------------------------------------------------------------------


def swap_figure(model: DisentangledVAE, test: LabelledFaces, n: int) -> Image.Image:
    """Return 002 Fig. 4 on test speakers: identity faces across, expression faces down.

    Top row: one face of each of up to ``n`` test speakers (their first face) gives ``z_i``;
    left column: up to ``n`` faces of one test speaker, one per emotion where there are
    labels, give ``z_e``; each cell decodes the column's ``z_i`` with the row's ``z_e``.
    """
    identity = _first_per_speaker(test)[:n]
    expression = _one_per_emotion(test)[:n]
    z_i = identity_latents(model, test.faces[identity])
    z_e = expression_latents(model, test.faces[expression])
    blank = np.ones(test.faces.shape[-2:], np.float32)
    tiles = [blank, *test.faces[identity, 0].numpy()]
    captions = ["z_e \\ z_i", *(str(s) for s in test.speaker[identity])]
    for row, k in enumerate(expression):
        decoded = _decode(model, z_i, z_e[row].expand(len(identity), -1))
        tiles += [test.faces[k, 0].numpy(), *decoded]
        captions += [f"{test.speaker[k]} {test.emotion[k]}", *[""] * len(identity)]
    return image_grid(tiles, ncols=len(identity) + 1, labels=captions, scale=GRID_SCALE)


def interpolation_figure(
    models: Mapping[str, DisentangledVAE], test: LabelledFaces, steps: int
) -> Image.Image:
    """Return 002 Fig. 5: one test face's expression moved to another's, a row per model.

    Source and target: two faces of the first test speaker with different emotions (HAP and
    SAD when it has both); ``z_i`` of the source, ``z_e`` from the source's to the target's
    in ``steps`` equal steps.
    """
    source, target = _interpolation_pair(test)
    blank = np.ones(test.faces.shape[-2:], np.float32)
    tiles = [test.faces[source, 0].numpy(), *[blank] * (steps - 2), test.faces[target, 0].numpy()]
    captions = [f"source {test.emotion[source]}", *[""] * (steps - 2),
                f"target {test.emotion[target]}"]
    weights = torch.linspace(0, 1, steps)[:, None]
    pair = test.faces[[source, target]]
    for name, model in models.items():
        z_i = identity_latents(model, pair[:1]).expand(steps, -1)
        z_e = expression_latents(model, pair)
        tiles += _decode(model, z_i, (1 - weights) * z_e[0] + weights * z_e[1])
        captions += [name, *[""] * (steps - 1)]
    return image_grid(tiles, ncols=steps, labels=captions, scale=GRID_SCALE)


def _decode(model: DisentangledVAE, z_i: torch.Tensor, z_e: torch.Tensor) -> list[np.ndarray]:
    model.eval()
    return list(batched(model.decode, z_i, z_e)[:, 0].numpy())


def _first_per_speaker(faces: LabelledFaces) -> list[int]:
    return list(pd.Series(faces.speaker).drop_duplicates().index)


def _one_per_emotion(faces: LabelledFaces) -> list[int]:
    """Return one face per emotion of the first speaker (all its faces without labels)."""
    own = np.flatnonzero(faces.speaker == faces.speaker[0])
    return list(pd.Series(faces.emotion[own], index=own).drop_duplicates().index)


def _interpolation_pair(faces: LabelledFaces) -> tuple[int, int]:
    own = np.flatnonzero(faces.speaker == faces.speaker[0])
    emotions = faces.emotion[own].tolist()
    if "HAP" in emotions and "SAD" in emotions:
        return int(own[emotions.index("HAP")]), int(own[emotions.index("SAD")])
    different = [i for i in own if faces.emotion[i] != faces.emotion[own[0]]]
    return int(own[0]), int(different[0] if different else own[-1])
