"""The ``evaluate`` stage: score voice -> face on the held-out test split, against baselines.

:func:`evaluate_models` loads the dataset's train and test splits, the face model and the
voice model (:mod:`.encode`: any registered kinds, batched inference), and scores five
predictions of every test clip's latent through the one code path
(:func:`pipeline.evaluation.scoring.evaluate_prediction`):

- ``model``: voice -> encoder features ``h`` -> VAE posterior with the clip's labelled
  emotion code -> ``mu`` (decoded to the generated face), as in 003 section 3.3;
- ``oracle``: the VAE encoder's own latents of the real test faces (its image metrics are the
  VAE's reconstruction MSE / PSNR / SSIM);
- ``mean_face``, ``random_speaker``, ``sex_mean_face``: the baselines of
  :mod:`pipeline.evaluation.baselines`, from the training latents.

Every row's latents are decoded with the clip's labelled emotion code when the VAE's decoder
takes the code (``decoder_code``, CVAE-style), so the rows differ only in their latents.

Outputs, all in ``out_dir`` (the stage's ``--out``), each written atomically:

- ``metrics.json``: the results table ``{row: {metric: value}}`` (``dvc metrics``), and
  under ``train_speakers`` the diagnostic of :func:`training_speaker_fit`;
- ``per_clip.parquet``: one row per (prediction, test clip): clip id, speaker, ranks, scores;
- ``rank_histogram.json``: the model's rank of the true speaker in latent space (``dvc plots``,
  bar template); ``confusion_model.json`` / ``confusion_oracle.json``: emotion read by the
  probe vs the clip's label (confusion template);
- ``speakers.png``: per test speaker, a real face then the face generated from each clip;
- ``emotions.png``: a few test clips' voices decoded with every emotion code;
- ``report.md``: the table, the images and notes (split, chance levels, where dlib works).

Data without emotion labels (``meta.json`` ``emotions: []``): the emotion metrics (emotion
agreement, expression clustering, confusion matrices, the emotion grid) are left out, and
``metrics.json`` (key ``emotion``) and ``report.md`` say so; the confusion plot files hold no
rows and ``emotions.png`` says why, so every output ``dvc.yaml`` declares is still written.

The grids are drawn by :mod:`.grids`, the report's prose by :mod:`.report`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.config import EvaluateParams
from pipeline.evaluation.attributes import AttributeProbes, fit_attribute_probes
from pipeline.evaluation.baselines import (
    MEAN_FACE,
    MODEL,
    ORACLE,
    SEX_MEAN_FACE,
    baseline_predictions,
    sex_mean_face,
)
from pipeline.evaluation.encode import (
    EncodedSplit,
    Models,
    add_descriptors,
    decode_latents,
    encode_split,
    load_models,
    voice_latents,
)
from pipeline.evaluation.grids import emotion_grid, speaker_grid
from pipeline.evaluation.report import (
    CHANCE_ROW,
    CONFUSION_ROWS,
    confusion_rows,
    evaluation_report,
    per_clip_table,
    rank_histogram,
    report_notes,
    results_json,
    results_table,
)
from pipeline.evaluation.scoring import (
    DescriptorCheck,
    HeldOut,
    Prediction,
    RowResult,
    evaluate_prediction,
)
from pipeline.images import placeholder_image, save_png
from pipeline.loaders import has_emotion_labels, read_meta
from pipeline.runtime import atomic_path, atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)

METRICS_JSON = "metrics.json"
PER_CLIP_PARQUET = "per_clip.parquet"
RANK_HISTOGRAM_JSON = "rank_histogram.json"
SPEAKERS_PNG = "speakers.png"
EMOTIONS_PNG = "emotions.png"
REPORT_MD = "report.md"
TRAIN_SPEAKERS = "train_speakers"
"""``metrics.json`` key of :func:`training_speaker_fit`'s table."""
EMOTION_KEY = "emotion"
"""``metrics.json`` key saying why emotion was not evaluated (absent when it was)."""
NO_EMOTION_LABELS = "not evaluated: the dataset has no emotion labels"
TRAIN_FIT_COLUMNS = ("latent.r@1", "latent.mean_rank", "latent.match_same_sex_all",
                     "attr.sex_agreement")
IMAGES = {
    "Per test speaker: real face, then the face generated from each clip's voice":
        SPEAKERS_PNG,
    "Emotion grid: real face, then the voice decoded with each emotion code": EMOTIONS_PNG,
}
"""The report's figures: caption -> file."""


def confusion_json(row: str) -> str:
    """Return the file name of ``row``'s emotion confusion plot data."""
    return f"confusion_{row}.json"


def build_predictions(
    models: Models, train: EncodedSplit, test: EncodedSplit, seed: int
) -> list[Prediction]:
    """Return the model's, the oracle's and the baselines' latents, with decoded faces.

    Every row decodes each test clip's latent with that clip's labelled emotion (when the
    face model takes one), so rows differ only in their latents.
    """
    emotion = models.clip_emotions(test.emotion)
    latents = {
        MODEL: voice_latents(models, test.audio, emotion),
        ORACLE: test.latents,
        **baseline_predictions(train.latents, train.labels, test.labels, seed),
    }
    return [Prediction(name, z, decode_latents(models.face, z, emotion))
            for name, z in latents.items()]


def evaluate_models(
    dataset_dir: str | Path,
    face_path: str | Path,
    voice_path: str | Path,
    params: EvaluateParams,
    out_dir: str | Path,
) -> dict[str, dict[str, float | None]]:
    """Return the results table as written to ``metrics.json``, after writing every output.

    Logs a WARNING (and says so in ``report.md``) when the model does not beat the mean-face
    baseline on R@1 in latent space; that is a finding, not a failure of the stage.
    """
    meta = read_meta(dataset_dir)
    emotions = list(meta["emotions"])
    models = load_models(face_path, voice_path, meta)
    train = encode_split(models, dataset_dir, "train", with_audio=True)
    test = encode_split(models, dataset_dir, "test", with_audio=True)
    log.info("test split: %d clips of %d speakers; train: %d clips",
             len(test.labels), test.labels["speaker_id"].nunique(), len(train.labels))
    probes = fit_attribute_probes(train.latents, train.labels, emotions)
    predictions = build_predictions(models, train, test, params.seed)
    held_out = HeldOut(test.labels, test.latents, test.faces)
    check = None
    if params.face_embedding:
        held_out, predictions, check = add_descriptors(held_out, predictions)
    rows = []
    for prediction in predictions:
        log.info("scoring %s", prediction.name)
        rows.append(evaluate_prediction(prediction, held_out, probes, params))
    table = results_table(rows)
    beats = _beats_mean_face(table)
    fit = training_speaker_fit(models, train, probes, params)
    out_dir = Path(out_dir)
    per_clip = _per_clip(rows, check)
    _write_plots(rows, per_clip, test, out_dir)
    save_png(speaker_grid(test, predictions[0].faces, params.grid_clips), out_dir / SPEAKERS_PNG)
    labelled = has_emotion_labels(meta)
    save_png(emotion_grid(models, test, params.emotion_grid_clips) if labelled
             else placeholder_image(f"No emotion grid: emotion {NO_EMOTION_LABELS}."),
             out_dir / EMOTIONS_PNG)
    notes = report_notes(meta, train.labels, test.labels, table, models.provenance, check,
                         beats)
    if not labelled:
        notes.append(f"Emotion {NO_EMOTION_LABELS}: no emotion agreement, expression "
                     "clustering, confusion matrices or emotion grid (the face model is "
                     "unconditional; the confusion plot files hold no rows).")
    atomic_write_text(out_dir / REPORT_MD,
                      evaluation_report(table, rows, per_clip, notes, fit, IMAGES))
    metrics: dict[str, Any] = results_json(table)
    metrics[TRAIN_SPEAKERS] = results_json(fit)
    if not labelled:
        metrics[EMOTION_KEY] = NO_EMOTION_LABELS
    atomic_write_json(out_dir / METRICS_JSON, metrics)
    return metrics


def training_speaker_fit(
    models: Models, train: EncodedSplit, probes: AttributeProbes, params: EvaluateParams
) -> pd.DataFrame:
    """Return the model's and the sex-mean face's identity scores on the *training* speakers.

    A diagnostic beside the test table, scored by the same code against a gallery of the
    training speakers: an encoder that tells its own training speakers apart little better
    than the sex-mean face has not learned identity (it underfits: it needs more training,
    not more regularisation); one far better there than on the test speakers overfits them.
    """
    held = HeldOut(train.labels, train.latents)
    sexes = train.labels["sex"].tolist()
    predictions = [
        Prediction(MODEL, voice_latents(models, train.audio, models.clip_emotions(train.emotion))),
        Prediction(SEX_MEAN_FACE, sex_mean_face(train.latents, sexes, sexes)),
    ]
    rows = [evaluate_prediction(p, held, probes, params) for p in predictions]
    table = results_table(rows)[list(TRAIN_FIT_COLUMNS)]
    log.info("training speakers (diagnostic): model latent R@1 %.4g, sex-mean face %.4g, "
             "chance %.4g", *table["latent.r@1"].loc[[MODEL, SEX_MEAN_FACE, CHANCE_ROW]])
    return table


def _beats_mean_face(table: pd.DataFrame) -> bool:
    """Return whether the model's latent R@1 beats the mean face's, warning when it does not."""
    model, mean = table.loc[MODEL, "latent.r@1"], table.loc[MEAN_FACE, "latent.r@1"]
    if model > mean:
        return True
    log.warning("WARNING: the model does not beat the mean-face baseline on R@1 "
                "(latent space: model %.4f, mean face %.4f)", model, mean)
    return False


def _per_clip(rows: Sequence[RowResult], check: DescriptorCheck | None) -> pd.DataFrame:
    """Return the stacked per-clip table, with dlib's alignment check where it ran."""
    table = per_clip_table(rows)
    if check is not None:
        table["face.landmarks_ok"] = np.concatenate([check.predicted[r.name] for r in rows])
        table["face.real_landmarks_ok"] = np.tile(check.real, len(rows))
    return table


def _write_plots(
    rows: Sequence[RowResult], per_clip: pd.DataFrame, test: EncodedSplit, out_dir: Path
) -> None:
    """Write the per-clip Parquet and the dvc plot data (rank histogram, confusions)."""
    with atomic_path(out_dir / PER_CLIP_PARQUET) as tmp:
        per_clip.to_parquet(tmp, index=False)
    model = per_clip[per_clip["row"] == MODEL]
    n_speakers = test.labels["speaker_id"].nunique()
    atomic_write_json(out_dir / RANK_HISTOGRAM_JSON,
                      rank_histogram(model["latent.rank"].to_numpy(), n_speakers))
    for name in CONFUSION_ROWS:
        clips = per_clip[per_clip["row"] == name]
        atomic_write_json(out_dir / confusion_json(name),
                          confusion_rows(clips["emotion"].tolist(),
                                         clips["predicted_emotion"].tolist()))
