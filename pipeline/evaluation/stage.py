"""The ``evaluate`` stage: score voice -> face on the held-out test split, against baselines.

:func:`evaluate_models` loads the dataset's train and test splits, the face VAE and the voice
encoder, and scores five predictions of every test clip's latent through the one code path
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
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from PIL import Image

from pipeline.config import EvaluateParams
from pipeline.evaluation.attributes import AttributeProbes, fit_attribute_probes
from pipeline.evaluation.baselines import (
    MEAN_FACE,
    ORACLE,
    SEX_MEAN_FACE,
    baseline_predictions,
    sex_mean_face,
)
from pipeline.evaluation.report import (
    CHANCE_ROW,
    confusion_rows,
    markdown_table,
    per_clip_table,
    rank_histogram,
    render_report,
    results_json,
    results_table,
)
from pipeline.evaluation.scoring import (
    LABEL_COLUMNS,
    HeldOut,
    Prediction,
    RowResult,
    evaluate_prediction,
)
from pipeline.images import image_grid, save_png
from pipeline.loaders import load_split, read_meta, split_shards
from pipeline.models.emotion_code import code_string, emotion_codes
from pipeline.models.vae import FaceVAE, load_model_file, load_vae
from pipeline.models.voice_encoder import (
    VoiceEncoder,
    load_voice_encoder,
    load_voice_encoder_file,
)
from pipeline.models.voice_to_face import voice_posterior_mean
from pipeline.runtime import atomic_path, atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)

MODEL = "model"
METRICS_JSON = "metrics.json"
PER_CLIP_PARQUET = "per_clip.parquet"
RANK_HISTOGRAM_JSON = "rank_histogram.json"
CONFUSION_ROWS = (MODEL, ORACLE)
SPEAKERS_PNG = "speakers.png"
EMOTIONS_PNG = "emotions.png"
REPORT_MD = "report.md"
TRAIN_SPEAKERS = "train_speakers"
"""``metrics.json`` key of :func:`training_speaker_fit`'s table."""
TRAIN_FIT_COLUMNS = ("latent.r@1", "latent.mean_rank", "latent.match_same_sex_all",
                     "attr.sex_agreement")
GRID_SCALE = 2
"""Grid tiles are faces upscaled by this factor (nearest neighbour)."""

_BATCH = 64


def confusion_json(row: str) -> str:
    """Return the file name of ``row``'s emotion confusion plot data."""
    return f"confusion_{row}.json"


@dataclass(frozen=True)
class Models:
    """The two trained models and the emotion codes the VAE was trained with."""

    vae: FaceVAE
    voice: VoiceEncoder
    codes: torch.Tensor | None
    """``(n_emotions, code_dim)`` code table in ``meta.json`` order; None if unconditional."""
    provenance: dict[str, dict[str, Any]]
    """``{"vae": ..., "voice": ...}`` as saved with each model."""

    def clip_codes(self, emotion: torch.Tensor) -> torch.Tensor | None:
        """Return the codes ``(N, code_dim)`` of emotion labels ``(N,)``; None if unconditional."""
        return None if self.codes is None else self.codes[emotion]


def load_models(vae_path: str | Path, voice_path: str | Path, emotions: Sequence[str]) -> Models:
    """Return the VAE and voice encoder (eval mode, CPU), checked against each other.

    Raises ``ValueError`` naming the files when the encoder's output width is not the VAE's
    feature width, or the VAE was trained on another emotion list than the dataset's.
    """
    vae, voice = load_vae(vae_path), load_voice_encoder(voice_path)
    provenance = {
        "vae": dict(load_model_file(vae_path).get("provenance", {})),
        "voice": dict(load_voice_encoder_file(voice_path).get("provenance", {})),
    }
    if voice.config.out_dim != vae.config.feature_dim:
        raise ValueError(f"{voice_path}: voice encoder outputs {voice.config.out_dim} features, "
                         f"the VAE {vae_path} expects {vae.config.feature_dim}")
    return Models(vae, voice, vae_codes(vae, emotions, provenance["vae"], vae_path), provenance)


def vae_codes(
    vae: FaceVAE, emotions: Sequence[str], provenance: Mapping[str, Any], path: str | Path = ""
) -> torch.Tensor | None:
    """Return the emotion code table the VAE was trained with, or None when unconditional."""
    if not vae.config.conditional:
        return None
    trained_on = provenance.get("emotions")
    if trained_on is not None and list(trained_on) != list(emotions):
        raise ValueError(f"{path}: VAE trained on emotions {trained_on}, dataset has {emotions}")
    bits, rest = divmod(vae.config.code_dim, len(emotions))
    if rest or bits < 1:
        raise ValueError(f"{path}: code width {vae.config.code_dim} does not fit "
                         f"{len(emotions)} emotions")
    codes = emotion_codes(emotions, bits)
    recorded = provenance.get("codes")
    if recorded is not None and list(recorded) != [code_string(c) for c in codes]:
        raise ValueError(f"{path}: VAE trained with emotion codes {recorded}, not the codes of "
                         f"{list(emotions)} at {bits} bits per class")
    return codes


@dataclass(frozen=True)
class EncodedSplit:
    """One split in clip-id order: labels, faces, voices and the VAE latents of the faces."""

    labels: pd.DataFrame
    """Columns ``clip_id, speaker_id, sex, age, emotion``."""
    faces: np.ndarray
    """``(N, S, S)`` float32 in [0, 1]."""
    audio: torch.Tensor
    """``(N, L)`` waveforms, or ``(N, 0)`` when not read."""
    emotion: torch.Tensor
    """``(N,)`` emotion labels (index into ``meta.json``'s emotions)."""
    latents: np.ndarray
    """``(N, latent_dim)``: ``mu`` of each real face with its own emotion code."""


def encode_split(
    models: Models, dataset_dir: str | Path, split: str, with_audio: bool
) -> EncodedSplit:
    """Return ``split`` read from the shards with the VAE encoder's latents of its faces."""
    tensors = load_split(dataset_dir, split, with_audio=with_audio)
    labels = read_labels(dataset_dir, split)
    if labels["clip_id"].tolist() != tensors.clip_id:
        raise ValueError(f"{dataset_dir}/{split}: label and tensor rows are not aligned")
    latents = encode_faces(models.vae, tensors.face, models.clip_codes(tensors.emotion))
    return EncodedSplit(labels, tensors.face[:, 0].numpy(), tensors.audio, tensors.emotion,
                        latents)


def read_labels(dataset_dir: str | Path, split: str) -> pd.DataFrame:
    """Return ``clip_id, speaker_id, sex, age, emotion`` of ``split``, sorted by clip id."""
    paths = split_shards(dataset_dir, split)
    if not paths:
        raise FileNotFoundError(f"no shards for split {split!r} in {dataset_dir}")
    tables = [pq.read_table(p, columns=list(LABEL_COLUMNS)) for p in paths]
    return pa.concat_tables(tables).sort_by("clip_id").to_pandas()


@torch.no_grad()
def encode_faces(vae: FaceVAE, faces: torch.Tensor, codes: torch.Tensor | None) -> np.ndarray:
    """Return ``mu`` ``(N, latent_dim)`` of faces ``(N, 1, S, S)`` with their codes."""
    out = []
    for start in range(0, len(faces), _BATCH):
        batch = slice(start, start + _BATCH)
        code = None if codes is None else codes[batch]
        out.append(vae.posterior(vae.features(faces[batch]), code)[0])
    return torch.cat(out).double().numpy()


@torch.no_grad()
def voice_latents(models: Models, audio: torch.Tensor, codes: torch.Tensor | None) -> np.ndarray:
    """Return ``mu`` ``(N, latent_dim)`` predicted from waveforms ``(N, L)`` and codes, in batches.

    Uses the one voice -> face definition, :func:`voice_posterior_mean`.
    """
    out = []
    for start in range(0, len(audio), _BATCH):
        batch = slice(start, start + _BATCH)
        code = None if codes is None else codes[batch]
        out.append(voice_posterior_mean(models.vae, models.voice, audio[batch], code))
    return torch.cat(out).double().numpy()


@torch.no_grad()
def decode_latents(
    vae: FaceVAE, latents: np.ndarray, codes: torch.Tensor | None = None
) -> np.ndarray:
    """Return faces ``(N, S, S)`` float32 in [0, 1] decoded from latents ``(N, latent_dim)``.

    ``codes`` ``(N, code_dim)``: each latent's emotion code, required when the VAE's decoder
    takes it (``vae.config.decodes_code``), else ignored.
    """
    z = torch.as_tensor(np.asarray(latents), dtype=torch.float32)
    faces = []
    for start in range(0, len(z), _BATCH):
        batch = slice(start, start + _BATCH)
        faces.append(vae.decode(z[batch], None if codes is None else codes[batch]))
    return torch.cat(faces)[:, 0].numpy()


def build_predictions(
    models: Models, train: EncodedSplit, test: EncodedSplit, seed: int
) -> list[Prediction]:
    """Return the model's, the oracle's and the baselines' latents, with decoded faces.

    Every row decodes each test clip's latent with that clip's labelled emotion code (when
    the VAE's decoder takes one), so rows differ only in their latents.
    """
    codes = models.clip_codes(test.emotion)
    latents = {
        MODEL: voice_latents(models, test.audio, codes),
        ORACLE: test.latents,
        **baseline_predictions(train.latents, train.labels, test.labels, seed),
    }
    return [Prediction(name, z, decode_latents(models.vae, z, codes))
            for name, z in latents.items()]


@dataclass(frozen=True)
class DescriptorCheck:
    """Where dlib's 5-point alignment was plausible (else a template was used), per face set."""

    real: np.ndarray
    """``(N,)`` bool for the real test crops."""
    predicted: dict[str, np.ndarray]
    """Row name -> ``(N,)`` bool for that row's decoded faces."""


def add_descriptors(
    held_out: HeldOut, predictions: Sequence[Prediction]
) -> tuple[HeldOut, list[Prediction], DescriptorCheck]:
    """Return the test set and predictions with dlib 128-d descriptors of their faces."""
    real = _unique_descriptors(held_out.faces)
    out, ok = [], {}
    for prediction in predictions:
        found = _unique_descriptors(prediction.faces)
        out.append(replace(prediction, descriptors=found.descriptors))
        ok[prediction.name] = found.landmarks_ok
    return (replace(held_out, descriptors=real.descriptors), out,
            DescriptorCheck(real.landmarks_ok, ok))


def _unique_descriptors(faces: np.ndarray) -> Any:
    """Return dlib descriptors of ``faces``, computing each distinct face once (~100 ms each).

    Constant baselines decode to one or two distinct faces, so this saves most of their cost.
    """
    from pipeline.evaluation.face_descriptors import FaceDescriptors, face_descriptors

    flat = np.asarray(faces).reshape(len(faces), -1)
    unique, inverse = np.unique(flat, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    found = face_descriptors(unique.reshape(-1, *faces.shape[1:]), progress=True)
    return FaceDescriptors(found.descriptors[inverse], found.landmarks_ok[inverse],
                           found.landmark_error[inverse])


def evaluate_models(
    dataset_dir: str | Path,
    vae_path: str | Path,
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
    models = load_models(vae_path, voice_path, emotions)
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
    save_png(emotion_grid(models, test, emotions, params.emotion_grid_clips),
             out_dir / EMOTIONS_PNG)
    notes = report_notes(meta, train, test, table, models, check, beats)
    atomic_write_text(out_dir / REPORT_MD, _report(table, rows, per_clip, notes, fit))
    metrics: dict[str, Any] = results_json(table)
    metrics[TRAIN_SPEAKERS] = results_json(fit)
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
        Prediction(MODEL, voice_latents(models, train.audio, models.clip_codes(train.emotion))),
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


def speaker_grid(test: EncodedSplit, generated: np.ndarray, max_clips: int) -> Image.Image:
    """Return one row per test speaker: a real face, then the faces generated from its clips.

    Captions: the speaker id over the real face, each clip's emotion over its generated face;
    at most ``max_clips`` clips per speaker (in clip-id order), blank tiles pad short rows.
    """
    by_speaker = test.labels.groupby("speaker_id", sort=True).indices
    ncols = 1 + min(max_clips, max(len(rows) for rows in by_speaker.values()))
    blank = np.ones_like(test.faces[0])
    tiles, captions = [], []
    for speaker, rows in by_speaker.items():
        rows = np.sort(rows)[:max_clips]
        tiles += [test.faces[rows[0]], *generated[rows]]
        captions += [str(speaker), *(str(e) for e in test.labels["emotion"].iloc[rows])]
        tiles += [blank] * (ncols - 1 - len(rows))
        captions += [""] * (ncols - 1 - len(rows))
    return image_grid(tiles, ncols=ncols, labels=captions, scale=GRID_SCALE)


def emotion_grid(
    models: Models, test: EncodedSplit, emotions: Sequence[str], n_clips: int
) -> Image.Image:
    """Return the emotion grid: real faces, then each clip's voice decoded with every code.

    Columns: one clip of each of up to ``n_clips`` test speakers spread over the sorted
    speakers. Rows: the real face (captioned with speaker and labelled emotion), then one row
    per emotion code (a single "generated" row when the VAE is not conditional).
    """
    first = test.labels.reset_index(drop=True).groupby("speaker_id", sort=True).head(1).index
    picks = np.asarray(first)[np.unique(np.linspace(0, len(first) - 1, n_clips).round()
                                        .astype(int))]
    audio = test.audio[picks]
    tiles = list(test.faces[picks])
    captions = [f"{test.labels['speaker_id'].iloc[i]} {test.labels['emotion'].iloc[i]}"
                for i in picks]
    variants: list[tuple[str, torch.Tensor | None]] = [("generated", None)]
    if models.codes is not None:
        variants = [(f"as {e}", torch.full((len(picks),), i)) for i, e in enumerate(emotions)]
    for caption, label in variants:
        code = None if label is None else models.clip_codes(label)
        tiles += list(decode_latents(models.vae, voice_latents(models, audio, code), code))
        captions += [caption] * len(picks)
    return image_grid(tiles, ncols=len(picks), labels=captions, scale=GRID_SCALE)


def report_notes(
    meta: Mapping[str, Any],
    train: EncodedSplit,
    test: EncodedSplit,
    table: pd.DataFrame,
    models: Models,
    check: DescriptorCheck | None,
    beats_mean_face: bool,
) -> list[str]:
    """Return the report's bullet points: data, rows, chance levels, verdict, dlib's reach."""
    n_speakers = test.labels["speaker_id"].nunique()
    chance = table.loc[CHANCE_ROW]
    shared = set(test.labels["speaker_id"]) & set(train.labels["speaker_id"])
    disjoint = ("speakers disjoint from training" if not shared
                else f"{len(shared)} of them also in training")
    notes = [
        f"Test split ({meta.get('split_mode', '?')} split): {len(test.labels)} clips of "
        f"{n_speakers} speakers, {disjoint}; probes and baselines fitted on the train split "
        f"({len(train.labels)} clips of {train.labels['speaker_id'].nunique()} speakers).",
        "Rows: `model` = voice -> encoder features -> VAE posterior with the clip's labelled "
        "emotion code -> mu -> decoder (003 section 3.3); `oracle` = the VAE's own latents of "
        "the real test faces (its image.* are the VAE's reconstruction MSE / PSNR / SSIM, its "
        "attr.* the probes' ceiling); `mean_face`, `random_speaker`, `sex_mean_face` = "
        "baselines from the training latents; every row is decoded with the clip's emotion "
        "code when the VAE's decoder takes it.",
        f"Retrieval ranks each generated face against a gallery of {n_speakers} test speakers "
        "(one mean real-face embedding each): chance R@k = k / N "
        f"(R@1 = {chance['latent.r@1']:.4g}), mean rank (N + 1) / 2 = "
        f"{chance['latent.mean_rank']:.4g}; 1:2 matching chance 0.5; attribute chance = "
        "majority share (sex, emotion) and MAE of the training median age; clustering "
        f"(k-means++, mean of seeded runs) chance {chance.get('cluster.accuracy', np.nan):.4g}.",
        "Latent space: the VAE's mu. With a conditional VAE, `model` and `oracle` latents "
        "carry the labelled emotion code, so their emotion agreement and clustering can "
        "reflect the code alone; identity and sex do not come from it.",
        _verdict(table, beats_mean_face),
    ]
    notes += _descriptor_notes(table, check)
    vae, voice = models.provenance["vae"], models.provenance["voice"]
    notes.append(f"Models: VAE epoch {vae.get('epoch', '?')}, voice encoder epoch "
                 f"{voice.get('epoch', '?')}; dvc.lock pins the code and data that made them.")
    return notes


def _verdict(table: pd.DataFrame, beats_mean_face: bool) -> str:
    model, mean = table.loc[MODEL, "latent.r@1"], table.loc[MEAN_FACE, "latent.r@1"]
    if beats_mean_face:
        return f"The model beats the mean-face baseline on R@1 ({model:.4g} vs {mean:.4g})."
    return (f"**WARNING: the model does not beat the mean-face baseline on R@1** ({model:.4g} "
            f"vs {mean:.4g}): its faces carry no more identity than the average face.")


def _descriptor_notes(table: pd.DataFrame, check: DescriptorCheck | None) -> list[str]:
    """Return notes on whether dlib's descriptor is usable on these crops."""
    if check is None:
        return ["dlib face-descriptor space: off (`evaluate.face_embedding: false`)."]
    shares = ", ".join(f"{name} {ok.mean():.0%}" for name, ok in check.predicted.items())
    oracle, chance = table.loc[ORACLE, "face.r@1"], table.loc[CHANCE_ROW, "face.r@1"]
    works = "works" if oracle > chance else "does NOT work"
    return [
        f"dlib descriptors (128-d ResNet on crops upscaled to 150x150): 5-point landmarks "
        f"plausible on {check.real.mean():.0%} of real test crops; on decoded faces: {shares} "
        "(elsewhere a fixed template aligned the crop; see face.landmarks_ok per clip).",
        f"Face-space retrieval {works} on these sizes: the oracle's VAE reconstructions reach "
        f"face R@1 {oracle:.4g} against chance {chance:.4g}. Use face.* only for ranking "
        "(distances between small grayscale crops are compressed).",
    ]


def _report(
    table: pd.DataFrame,
    rows: Sequence[RowResult],
    per_clip: pd.DataFrame,
    notes: list[str],
    fit: pd.DataFrame,
) -> str:
    """Return report.md: notes, table, grids, the training-speaker fit, ranks, confusions."""
    images = {
        "Per test speaker: real face, then the face generated from each clip's voice":
            SPEAKERS_PNG,
        "Emotion grid: real face, then the voice decoded with each emotion code": EMOTIONS_PNG,
    }
    parts = [render_report(table, images, notes)]
    parts += ["## Fit on the training speakers (diagnostic)", "",
              "The same scores against a gallery of the training speakers (chance row: their "
              "number sets it). Near the sex-mean face's, the encoder has not learned identity "
              "(underfitting); far above the test table's, it overfits its training speakers.",
              "",
              markdown_table(fit), ""]
    rank = np.floor(per_clip["latent.rank"]).astype(int).rename("rank (latent)")
    ranks = per_clip.groupby([rank, per_clip["row"]], sort=True).size().unstack(fill_value=0)
    ranks = ranks[[row.name for row in rows]]
    parts += ["## Rank of the true speaker (latent space, clips per rank)", "",
              markdown_table(ranks), ""]
    for row in rows:
        if row.name in CONFUSION_ROWS and len(row.emotions):
            confusion = pd.DataFrame(row.confusion, index=list(row.emotions),
                                     columns=list(row.emotions))
            confusion.index.name = "true \\ read"
            parts += [f"## Emotion confusion ({row.name}: probe reading vs label)", "",
                      markdown_table(confusion), ""]
    return "\n".join(parts)
