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
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from pipeline.config import EvaluateParams
from pipeline.evaluation.attributes import AttributeProbes, fit_attribute_probes
from pipeline.evaluation.baselines import (
    MEAN_FACE,
    MODEL,
    ORACLE,
    RANDOM_SPEAKER,
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
from pipeline.evaluation.metrics import RetrievalResult
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
from pipeline.evaluation.voice_alone import (
    EmotionRecognition,
    emotion_recognition,
    enrolled_identification,
    identification_json,
    voice_alone_report,
)
from pipeline.images import placeholder_image, save_png
from pipeline.loaders import has_emotion_labels, read_meta, split_shards
from pipeline.models.emotion_classifier import EmotionReading, load_emotion_classifier
from pipeline.models.voice_to_face import VoiceToFace
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
VOICE_EMOTION = "model_voice_emotion"
"""The row of the model's faces with the emotion read from the voice instead of the label."""
IDENTIFICATION = "identification"
"""``metrics.json`` key of :func:`enrolled_speakers`' top-k accuracies."""
EMOTION_FROM_VOICE = "emotion_from_voice"
"""``metrics.json`` key of the emotion classifier's accuracy on the test clips."""
VOICE_CONFUSION = "voice"
"""Plot data ``confusion_voice.json``: emotion read from the voice vs the label."""
BASELINE_ROWS = (MEAN_FACE, RANDOM_SPEAKER, SEX_MEAN_FACE)
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
    models: Models,
    train: EncodedSplit,
    test: EncodedSplit,
    seed: int,
    others: Mapping[str, VoiceToFace] | None = None,
    voice_emotion: torch.Tensor | None = None,
) -> list[Prediction]:
    """Return the voice models', the oracle's and the baselines' latents, with decoded faces.

    Every row decodes each test clip's latent with that clip's labelled emotion (when the
    face model takes one), so rows differ only in their latents; ``others`` (name -> voice
    model) add a row each. With ``voice_emotion`` (the emotion labels read from each clip's
    voice) the :data:`VOICE_EMOTION` row is the model's voice -> face with that emotion
    instead of the label, in its latent and its decoded face: the face from the voice alone.
    """
    emotion = models.clip_emotions(test.emotion)
    latents = {MODEL: voice_latents(models.voice_to_face, test.audio, test.embeddings, emotion)}
    for name, pair in (others or {}).items():
        latents[name] = voice_latents(pair, test.audio, test.embeddings, emotion)
    latents |= {ORACLE: test.latents,
                **baseline_predictions(train.latents, train.labels, test.labels, seed)}
    predictions = [Prediction(name, z, decode_latents(models.face, z, emotion))
                   for name, z in latents.items()]
    if voice_emotion is not None:
        z = voice_latents(models.voice_to_face, test.audio, test.embeddings, voice_emotion)
        predictions.insert(1 + len(others or {}), Prediction(
            VOICE_EMOTION, z, decode_latents(models.face, z, voice_emotion)))
    return predictions


def evaluate_models(
    dataset_dir: str | Path,
    face_path: str | Path,
    voice_path: str | Path | Mapping[str, str | Path],
    params: EvaluateParams,
    out_dir: str | Path,
    embeddings_dir: str | Path | None = None,
    emotion_path: str | Path | None = None,
) -> dict[str, dict[str, float | None]]:
    """Return the results table as written to ``metrics.json``, after writing every output.

    ``voice_path``: one voice model file, or several by name (the first is the ``model``
    row, the others a row each under their names). ``embeddings_dir``: the embed stage's
    output (needed by voice models that read the speaker embedding, and for identification
    by voice embedding). ``emotion_path``: the emotion classifier (train_emotion), for the
    emotion read from the voice and the :data:`VOICE_EMOTION` row.

    Logs a WARNING (and says so in ``report.md``) when the model does not beat the mean-face
    baseline on R@1 in latent space; that is a finding, not a failure of the stage.
    """
    meta = read_meta(dataset_dir)
    emotions = list(meta["emotions"])
    voice_paths = (dict(voice_path) if isinstance(voice_path, Mapping)
                   else {MODEL: voice_path})
    primary, *extra = voice_paths
    models = load_models(face_path, voice_paths[primary], meta)
    others = {name: load_models(face_path, voice_paths[name], meta).voice_to_face
              for name in extra}
    train = encode_split(models, dataset_dir, "train", True, embeddings_dir)
    test = encode_split(models, dataset_dir, "test", True, embeddings_dir)
    log.info("test split: %d clips of %d speakers; train: %d clips",
             len(test.labels), test.labels["speaker_id"].nunique(), len(train.labels))
    probes = fit_attribute_probes(train.latents, train.labels, emotions)
    labelled = has_emotion_labels(meta)
    reading = read_voice_emotion(emotion_path, test, emotions) if labelled else None
    predictions = build_predictions(models, train, test, params.seed, others,
                                    None if reading is None else reading.labels)
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
    save_png(emotion_grid(models, test, params.emotion_grid_clips) if labelled
             else placeholder_image(f"No emotion grid: emotion {NO_EMOTION_LABELS}."),
             out_dir / EMOTIONS_PNG)
    notes = report_notes(meta, train.labels, test.labels, table, models.provenance, check,
                         beats)
    notes += _voice_row_notes(models, others, reading)
    if not labelled:
        notes.append(f"Emotion {NO_EMOTION_LABELS}: no emotion agreement, expression "
                     "clustering, confusion matrices or emotion grid (the face model is "
                     "unconditional; the confusion plot files hold no rows).")
    identification = enrolled_speakers(dataset_dir, models, train, test, predictions,
                                       embeddings_dir)
    recognition = _emotion_recognition(test, reading, emotions, out_dir)
    atomic_write_text(out_dir / REPORT_MD,
                      evaluation_report(table, rows, per_clip, notes, fit, IMAGES)
                      + voice_alone_report(recognition, identification, emotion_path))
    metrics: dict[str, Any] = results_json(table)
    metrics[TRAIN_SPEAKERS] = results_json(fit)
    metrics[IDENTIFICATION] = {name: identification_json(r) for name, r in identification.items()}
    if recognition is not None:
        metrics[EMOTION_FROM_VOICE] = recognition.to_json()
    if not labelled:
        metrics[EMOTION_KEY] = NO_EMOTION_LABELS
    atomic_write_json(out_dir / METRICS_JSON, metrics)
    return metrics


def _voice_row_notes(
    models: Models, others: Mapping[str, VoiceToFace], reading: EmotionReading | None
) -> list[str]:
    """Return the report's notes on the extra voice rows (other models, the voice's emotion)."""
    notes = []
    if others:
        notes.append(f"Voice models: `model` is `{models.provenance['voice'].get('model', '?')}`"
                     f"; {', '.join(f'`{n}`' for n in others)}: a row each (voice -> the same "
                     "face model, scored by the same code).")
    if reading is not None:
        notes.append(f"`{VOICE_EMOTION}` = `model` with the emotion read from each clip's "
                     "voice (train_emotion's classifier) instead of its label, in the latent "
                     "and the decoded face: the face from the voice alone. Its emotion "
                     "agreement is the face probe's reading of those faces against the label.")
    return notes


def _emotion_recognition(
    test: EncodedSplit, reading: EmotionReading | None, emotions: Sequence[str], out_dir: Path
) -> EmotionRecognition | None:
    """Return the emotion read from the voice against the labels, after writing its plot data.

    ``confusion_voice.json`` holds no rows when nothing was read (no classifier, no labels).
    """
    labels = test.labels["emotion"].tolist()
    read = [] if reading is None else [emotions[i] for i in reading.labels]
    atomic_write_json(out_dir / confusion_json(VOICE_CONFUSION),
                      confusion_rows(labels[:len(read)], read))
    return None if reading is None else emotion_recognition(labels, read, emotions)


def read_voice_emotion(
    emotion_path: str | Path | None, test: EncodedSplit, emotions: Sequence[str]
) -> EmotionReading | None:
    """Return the emotion the classifier reads from each test clip's voice (None: no model).

    Raises ``ValueError`` naming the file when it reads other emotions than the dataset's.
    """
    if emotion_path is None:
        return None
    classifier = load_emotion_classifier(emotion_path)
    if list(classifier.emotions) != list(emotions):
        raise ValueError(f"{emotion_path} reads emotions {list(classifier.emotions)}, the "
                         f"dataset has {list(emotions)}")
    reading = classifier.read(test.audio)
    log.info("emotion read from the voice: %d of %d test clips agree with their label",
             int((reading.labels == test.emotion).sum()), len(test.emotion))
    return reading


def enrolled_speakers(
    dataset_dir: str | Path,
    models: Models,
    train: EncodedSplit,
    test: EncodedSplit,
    predictions: Sequence[Prediction],
    embeddings_dir: str | Path | None,
) -> dict[str, RetrievalResult]:
    """Return top-k identification of each test voice among every dataset speaker (004).

    Enrolled: the train, val and test speakers. Keys: ``voice_embedding`` (the clip's speaker
    embedding against the speakers' mean embeddings, its own clip left out; only with
    ``embeddings_dir``) and ``generated_face.<row>`` for each voice row (its latent against
    the speakers' mean real-face latents).
    """
    splits = [train, test]
    if split_shards(dataset_dir, "val"):
        splits.insert(1, encode_split(models, dataset_dir, "val", False, embeddings_dir))
    speakers = [s for split in splits for s in split.labels["speaker_id"]]
    queries = test.labels["speaker_id"].tolist()
    ks = (1, 5)
    found: dict[str, RetrievalResult] = {}
    single = sorted(s for s, n in test.labels["speaker_id"].value_counts().items() if n < 2)
    if test.embeddings is not None and single:
        log.warning("no identification by voice embedding: test speaker(s) %s have one clip, "
                    "which leaves nothing to enrol them by", single)
    elif test.embeddings is not None:
        enrolled = np.concatenate([split.embeddings.numpy() for split in splits])
        own = len(speakers) - len(test.labels) + np.arange(len(test.labels))
        found["voice_embedding"] = enrolled_identification(
            test.embeddings.numpy(), queries, enrolled, speakers, ks, left_out=own)
    faces = np.concatenate([split.latents for split in splits])
    for prediction in predictions:
        if prediction.name not in (ORACLE, *BASELINE_ROWS):
            found[f"generated_face.{prediction.name}"] = enrolled_identification(
                prediction.latents, queries, faces, speakers, ks)
    return found


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
        Prediction(MODEL, voice_latents(models.voice_to_face, train.audio, train.embeddings,
                                        models.clip_emotions(train.emotion))),
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
