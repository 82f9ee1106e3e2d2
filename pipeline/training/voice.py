"""The ``train_voice`` stage: train the voice encoder to hit the frozen VAE's face features.

003 section 3.3 / 4.3: the DeepTalk-style encoder (:mod:`pipeline.models.voice_encoder`; the
voice model ``train_voice.model`` names, :mod:`pipeline.models.registry`) is trained with MSE
(Adam, batch 32) to output, from a clip's voice, the features the VAE encoder extracts from
the clip's face (the face model's voice target). Generation then runs those features through
the VAE's posterior and decoder (:mod:`pipeline.models.voice_to_face`).

**Target: ``vae.features(face)``, not ``mu``.** These are the conv features the VAE turns
into mu / sigma, *before* the emotion code is appended (003 section 3.4). The voice encoder
therefore carries identity only; the emotion code is supplied at generation time, which is
what ``generate --emotion`` controls, and the same voice can be rendered with any emotion.
An unconditional VAE (data without emotion labels) has no code: targets, metrics and grids
then use the features and z alone.
The target is also deterministic (no sampling of z), so the regression has one answer per
face. The VAE is frozen, so the targets are computed once per run, not every step.

**Speaker-mean targets** (``target: speaker_mean``): 003 regresses each clip's own face
features, which carry that frame's expression and mouth shape; the emotion code already
supplies the expression at generation time, and the rest of the frame-to-frame variation is
noise no voice can predict, which the MSE fit spends its few speakers on. With
``speaker_mean`` every clip's target is the mean of its speaker's features (train and val
alike; :func:`speaker_mean_targets`), so the encoder is fitted to identity only. The final
metrics are measured against each clip's own features either way.

**Target standardisation** (``standardize_targets``): the features are standardised per
dimension on the training split, so that MSE weighs every feature alike instead of being
dominated by the few with the largest spread; after training the inverse affine map is
folded exactly into the encoder's last projection (:func:`fold_output_affine`), so the
saved encoder outputs raw VAE features and needs no scaler at generation time.

**Against memorising the training speakers** (26 speakers x 8 clips in the demo): with one
fixed waveform per clip, the encoder fits the training targets (standardised loss ~0.05)
from sample positions while its validation loss stays at the mean predictor's (~1.0).
``time_shift`` rotates every training clip by a random circular shift at each draw
(:func:`circular_shift`; the clips are tilings of their speech, so a rotation is the same
utterance), which removes that shortcut; ``select_best`` keeps the weights of the epoch
with the lowest validation loss (:class:`BestWeights`) instead of the last epoch's.

**Collapse guard** (000 section 4.2: every voice gave the same face): the ratio of the
variance across validation speakers of the predicted latents to that of the true latents
(:func:`speaker_variance_ratio`); below ``collapse_warning`` a warning is logged. With
speaker retrieval (R@1 among validation speakers vs its chance level 1/N) it is in the
final metrics.

Outputs (paths from the stage's command line): ``<out>/model.pt`` (the voice encoder with
provenance), ``<out>/voice_to_face.png`` (validation clips: true face | VAE reconstruction
| face from the voice, 003 Fig. 6), ``<checkpoints>/last.pt``, ``<live>/`` (dvclive).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import Dataset

from pipeline.config import TrainVoiceParams, to_dict
from pipeline.evaluation.metrics import retrieval_metrics, score_speakers, speaker_gallery
from pipeline.images import image_grid, save_png
from pipeline.loaders import SplitTensors, load_split, read_meta
from pipeline.models.files import save_model_file, save_payload
from pipeline.models.inference import batched
from pipeline.models.registry import (
    FaceModel,
    check_fits_dataset,
    load_face_model,
    voice_model_entry,
)
from pipeline.models.voice_encoder import VoiceEncoder
from pipeline.models.voice_to_face import VoiceToFace
from pipeline.runtime import sha256_file
from pipeline.training.fit import (
    RESUME_IGNORED,
    Callback,
    DvcLiveCallback,
    FitSettings,
    FitState,
    fit,
)
from pipeline.training.vae import dataset_fingerprint

log = logging.getLogger(__name__)

MODEL_FILE = "model.pt"
BEST_NAME = "best.pt"
GRID_PNG = "voice_to_face.png"
_STD_FLOOR = 1e-2
"""A feature's std is floored at this share of the mean std: near-constant features are not
blown up into noise the encoder would have to chase."""


# --- targets -------------------------------------------------------------------------------


def face_features(face: FaceModel, faces: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Return the frozen face model's voice targets ``(N, target_dim)`` of faces ``(N, 1, S, S)``.

    For the VAE, its encoder's conv features: the voice encoder's regression targets (003
    section 3.3; see the module docstring for why features rather than mu).
    """
    return batched(face.voice_target, faces, batch_size=batch_size)


def speaker_mean_targets(targets: torch.Tensor, speakers: Sequence[str]) -> torch.Tensor:
    """Return ``targets`` ``(N, D)`` with each row replaced by the mean of its speaker's rows."""
    gallery = speaker_gallery(targets.numpy(), speakers)
    return torch.from_numpy(gallery.vectors[gallery.index_of(speakers)]).to(targets.dtype)


@dataclass(frozen=True)
class TargetScaler:
    """Per-dimension affine standardisation of the targets: ``(t - shift) / scale``."""

    shift: torch.Tensor
    """``(D,)`` per-dimension mean on the training split (zeros: not standardised)."""
    scale: torch.Tensor
    """``(D,)`` per-dimension std on the training split, floored (ones: not standardised)."""

    @classmethod
    def fit(cls, targets: torch.Tensor, standardize: bool = True) -> TargetScaler:
        """Return the scaler of training targets ``(N, D)`` (identity when not ``standardize``)."""
        dim = targets.shape[1]
        if not standardize:
            return cls(torch.zeros(dim), torch.ones(dim))
        std = targets.std(dim=0, unbiased=False)
        floor = _STD_FLOOR * float(std.mean()) if float(std.mean()) > 0 else 1.0
        return cls(targets.mean(dim=0), std.clamp_min(floor))

    def transform(self, targets: torch.Tensor) -> torch.Tensor:
        """Return targets ``(N, D)`` in the standardised space the encoder is trained in."""
        return (targets - self.shift) / self.scale

    def inverse(self, outputs: torch.Tensor) -> torch.Tensor:
        """Return standardised outputs ``(N, D)`` mapped back to VAE feature units."""
        return outputs * self.scale.to(outputs.device) + self.shift.to(outputs.device)


@torch.no_grad()
def fold_output_affine(encoder: VoiceEncoder, scaler: TargetScaler) -> VoiceEncoder:
    """Return ``encoder`` changed in place to output ``scaler.inverse(encoder(x))`` exactly.

    The output is the attention's weighted sum of value projections ``W m_i + b`` with
    weights summing to 1 per head, so scaling rows of ``W`` and ``b`` by ``scale`` and adding
    ``shift`` to ``b`` scales and shifts the output itself.
    """
    value = encoder.attention.value
    scale = scaler.scale.to(value.weight.device)
    value.weight.mul_(scale[:, None])
    value.bias.mul_(scale).add_(scaler.shift.to(value.bias.device))
    return encoder


# --- the objective -------------------------------------------------------------------------


@dataclass(frozen=True)
class VoiceTargets(Dataset):
    """Clips and their precomputed (standardised) targets: samples ``{"audio", "target"}``.

    With ``time_shift`` every draw of a clip is rotated by a random number of samples
    (:func:`circular_shift`); the draws come from torch's global generator, which the stage
    seeds and ``fit`` checkpoints, so a run stays reproducible and resumable.
    """

    audio: torch.Tensor
    """float32 ``(N, L)`` waveforms in [-1, 1)."""
    target: torch.Tensor
    """float32 ``(N, D)`` targets in the training space."""
    time_shift: bool = False
    """Rotate each drawn clip by a uniform random shift (training augmentation)."""

    def __len__(self) -> int:
        return len(self.audio)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        audio = self.audio[i]
        if self.time_shift:
            audio = circular_shift(audio, int(torch.randint(audio.shape[-1], ())))
        return {"audio": audio, "target": self.target[i]}


def circular_shift(audio: torch.Tensor, shift: int) -> torch.Tensor:
    """Return waveform ``(L,)`` rotated left by ``shift`` samples (same length, same samples).

    The audio stage tiles each clip's speech to a fixed length, so a rotation is the same
    utterance started elsewhere: what identifies a speaker is unchanged, while the absolute
    sample positions the encoder could otherwise memorise (16 training speakers, 8 clips
    each, one fixed waveform per clip) change every epoch.
    """
    return torch.roll(audio, -shift, dims=-1)


class BestWeights(Callback):
    """Keep the weights of the epoch with the lowest validation loss (early-stopping choice).

    The best weights are also written to ``<directory>/best.pt`` (atomically), so that a
    resumed run still ends with the best epoch of the whole run, not of its last part.
    """

    def __init__(self, directory: str | Path | None = None, key: str = "val/loss") -> None:
        self.path = Path(directory) / BEST_NAME if directory else None
        self.key = key
        self.epoch = 0
        self.value = math.inf
        self.state: dict[str, torch.Tensor] | None = None

    def on_fit_start(self, state: FitState) -> None:
        """Restore the best epoch so far of a resumed run from ``best.pt`` when it matches."""
        if self.path is None or not state.history or not self.path.exists():
            return
        saved = torch.load(self.path, map_location="cpu", weights_only=True)
        epoch = int(saved["epoch"])
        if epoch <= len(state.history) and state.history[epoch - 1].get(self.key) == saved[
                "value"]:
            self.epoch, self.value, self.state = epoch, float(saved["value"]), saved["model"]

    def on_epoch_end(self, state: FitState, record: Mapping[str, float]) -> None:
        """Copy the weights when this epoch's validation loss is the lowest so far."""
        value = record.get(self.key)
        if value is None or not value < self.value:
            return
        self.epoch, self.value = state.epoch, float(value)
        self.state = {k: v.detach().cpu().clone() for k, v in state.model.state_dict().items()}
        if self.path is not None:
            save_payload(self.path, {"epoch": self.epoch, "value": self.value,
                                     "model": self.state})

    def restore(self, model: nn.Module) -> int:
        """Return the best epoch (0: none seen) after loading its weights into ``model``."""
        if self.state is not None:
            model.load_state_dict(self.state)
        return self.epoch


@dataclass(frozen=True)
class VoiceObjective:
    """003 section 4.3's MSE between the encoder's output and the face features."""

    scale: torch.Tensor
    """``(D,)`` the scaler's scale: turns the standardised error into feature units."""

    def __call__(self, model: nn.Module, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """Return ``{"loss", "feature_mse"}``: see :func:`voice_loss`."""
        return voice_loss(model(batch["audio"]), batch["target"], self.scale)


def voice_loss(
    predicted: torch.Tensor, target: torch.Tensor, scale: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Return ``{"loss", "feature_mse"}`` of predictions and targets ``(B, D)``.

    ``loss``: the mean squared error in the training space (003 section 4.3: MSE); equal to
    ``feature_mse`` when targets are not standardised. ``feature_mse``: the same error in
    VAE feature units (``error * scale``), comparable across settings; not optimised.
    """
    error = predicted - target
    return {
        "loss": error.pow(2).mean(),
        "feature_mse": (error.detach() * scale.to(error.device)).pow(2).mean(),
    }


# --- metrics -------------------------------------------------------------------------------


def speaker_variance_ratio(
    predicted: np.ndarray, true: np.ndarray, speakers: Sequence[str]
) -> float:
    """Return Var_speakers(predicted) / Var_speakers(true): the collapse guard.

    Per speaker, the mean latent of their clips; then the variance of those means across
    speakers, summed over dimensions. 0 means every voice gives the same face (000 section
    4.2); 1 means the predictions spread across speakers as much as the true latents.
    """
    spread = [_speaker_spread(x, speakers) for x in (predicted, true)]
    if spread[1] <= 0:
        raise ValueError("the true latents do not vary across speakers")
    return spread[0] / spread[1]


def _speaker_spread(latents: np.ndarray, speakers: Sequence[str]) -> float:
    means = speaker_gallery(latents, speakers).vectors
    return float(means.var(axis=0).sum())


def voice_metrics(
    model: VoiceToFace, val: SplitTensors, true_features: torch.Tensor, collapse_warning: float
) -> dict[str, float]:
    """Return val feature MSE, the collapse ratio and R@1 among validation speakers.

    Latents are ``mu`` with one emotion code for every clip (the default emotion, as
    ``generate`` uses), for the generated (from the voice) and the true (from the face)
    features alike: these metrics are about identity, and ``mu`` is affine in the code, so
    each clip's own code would add the speakers' emotion mix to the spread and let the
    code alone point at a speaker. R@1: share of validation clips
    whose generated latent is closest (cosine) to their own speaker's mean true latent among
    all validation speakers' means; ``r1_chance`` is 1 / speakers. ``r1_true_latents``
    ranks the clips' true latents the same way: the ceiling the face side allows.
    """
    predicted = batched(model.voice.voice_target, val.audio)
    emotion = model.emotion_labels(None, len(predicted))
    generated = model.face.latents(predicted, emotion).numpy()
    true = model.face.latents(true_features, emotion).numpy()
    gallery = speaker_gallery(true, val.speaker_id)
    voice = retrieval_metrics(score_speakers(generated, gallery, val.speaker_id), ks=(1,))
    ceiling = retrieval_metrics(score_speakers(true, gallery, val.speaker_id), ks=(1,))
    ratio = speaker_variance_ratio(generated, true, val.speaker_id)
    if ratio < collapse_warning:
        log.warning("collapse guard: generated latents vary %.3f times as much across "
                    "validation speakers as the true ones (< %.2f): voices are mapped to "
                    "nearly the same face (000 section 4.2)", ratio, collapse_warning)
    return {
        "val_feature_mse": float((predicted - true_features).pow(2).mean()),
        "val_latent_mse": float(np.mean((generated - true) ** 2)),
        "collapse_ratio": ratio,
        "r1": voice.recall[1],
        "r1_chance": voice.chance_recall[1],
        "mean_rank": voice.mean_rank,
        "mean_rank_chance": voice.chance_mean_rank,
        "r1_true_latents": ceiling.recall[1],
        "val_speakers": float(voice.n_gallery),
    }


def voice_to_face_grid(model: VoiceToFace, val: SplitTensors, n: int) -> Image.Image:
    """Return 003 Fig. 6: per validation clip (one per speaker), true | VAE | from the voice."""
    index = _one_clip_per_speaker(val.speaker_id)[:n]
    faces, emotion = val.face[index], model.clip_emotions(val.emotion[index])
    face = model.face
    recon = face.decode(face.latents(face.voice_target(faces), emotion), emotion)
    generated = model.faces(val.audio[index], emotion)
    tiles, labels = [], []
    for i, k in enumerate(index):
        tiles += [faces[i].numpy(), recon[i].numpy(), generated[i].numpy()]
        labels += [f"{val.speaker_id[k]}", "VAE", "voice"]
    return image_grid(tiles, ncols=3, labels=labels, scale=2)


def _one_clip_per_speaker(speakers: Sequence[str]) -> list[int]:
    first: dict[str, int] = {}
    for i, speaker in enumerate(speakers):
        first.setdefault(speaker, i)
    return sorted(first.values())


# --- the stage -----------------------------------------------------------------------------




def train_voice(
    params: TrainVoiceParams,
    dataset_dir: str | Path,
    vae_path: str | Path,
    out_dir: str | Path,
    checkpoint_dir: str | Path,
    live_dir: str | Path,
) -> dict[str, float]:
    """Return the final metrics after training, saving and gridding the voice encoder.

    The caller seeds the RNGs (model initialisation draws from torch's generator).
    """
    meta = read_meta(dataset_dir)
    entry = voice_model_entry(params.model)
    face = load_face_model(vae_path).model
    check_fits_dataset(face, meta, vae_path)
    train, val = load_split(dataset_dir, "train"), load_split(dataset_dir, "val")
    train_targets, val_features = face_features(face, train.face), face_features(face, val.face)
    val_targets = val_features
    if params.target == "speaker_mean":
        train_targets = speaker_mean_targets(train_targets, train.speaker_id)
        val_targets = speaker_mean_targets(val_features, val.speaker_id)
    scaler = TargetScaler.fit(train_targets, params.standardize_targets)
    encoder = entry.build(params, face.target_dim)
    objective = VoiceObjective(scaler.scale)
    settings = FitSettings.from_params(params)
    identity = {"data": dataset_fingerprint(dataset_dir), "vae": sha256_file(vae_path),
                "model": encoder.config.to_dict()}
    live = DvcLiveCallback(live_dir)
    best = BestWeights(checkpoint_dir)
    log.info("train_voice: %d train / %d val clips, targets %s from %s", len(train), len(val),
             tuple(train_targets.shape), vae_path)
    state = fit(
        encoder, objective,
        VoiceTargets(train.audio, scaler.transform(train_targets), params.time_shift),
        VoiceTargets(val.audio, scaler.transform(val_targets)), settings,
        params=to_dict(params), checkpoint_dir=checkpoint_dir, identity=identity,
        callbacks=[live, best], resume_ignored=(*RESUME_IGNORED, "threads", "grid_clips",
                                                "collapse_warning", "select_best"),
    )
    epoch = state.epoch
    if params.select_best:
        epoch = best.restore(encoder)
        log.info("keeping epoch %d of %d (lowest val loss %.4f)", epoch, state.epoch, best.value)
    encoder = fold_output_affine(encoder.cpu(), scaler)
    model = VoiceToFace(face, encoder.eval())
    metrics = {"val_mse": state.history[epoch - 1]["val/loss"], "epoch": float(epoch),
               **voice_metrics(model, val, val_features, params.collapse_warning)}
    live.finish({f"final/{k}": v for k, v in metrics.items()})
    out_dir = Path(out_dir)
    save_model_file(out_dir / MODEL_FILE, entry.kind, encoder, {
        "params": to_dict(params), "emotions": list(face.emotions), "vae_sha256": identity["vae"],
        "data": identity["data"], "sample_rate": int(meta["sample_rate"]),
        "audio_samples": int(meta["audio_samples"]), "targets": "vae.features (standardised "
        "in training, folded back)" if params.standardize_targets else "vae.features",
        "epoch": epoch, "epochs_trained": state.epoch, "global_step": state.global_step,
        "metrics": metrics,
    })
    save_png(voice_to_face_grid(model, val, params.grid_clips), out_dir / GRID_PNG)
    log.info("final metrics: %s", {k: round(v, 5) for k, v in metrics.items()})
    return metrics

