"""The ``train_vae`` stage: train the face VAE on the dataset shards, save it, grid and score it.

Outputs (every path comes from the stage's command line):

- ``<out>/model.pt``: the final :class:`~pipeline.models.vae.FaceVAE` (:func:`save_model`),
  with provenance (params, emotions and their codes, epochs, data fingerprint). No git
  revision: it changes with every commit (and reads ``-dirty`` mid-repro), so the same
  weights would give other bytes; ``dvc.lock`` pins the code that made the file.
- ``<out>/reconstructions.png``: validation faces (top row) and their reconstructions
  (003 Fig. 4).
- ``<out>/label_swap.png``: the same faces (top row) re-encoded with every emotion code, one
  row per emotion (003 Fig. 7); for an unconditional VAE, an image saying why there is none.
- ``<checkpoints>/last.pt``: the resumable checkpoint of :func:`pipeline.training.fit.fit`.
- ``<live>/``: dvclive per-epoch terms (``train/*``, ``val/*``) and the final metrics
  (``final/*``) in ``metrics.json``.

``train_vae.conditional: auto`` trains the emotion-conditioned VAE when the dataset has
emotion labels and the unconditional one (code width 0, 000's setting) when it has none
(``meta.json`` ``emotions: []``); ``true`` on a dataset without labels is an error
(:func:`resolve_conditional`).
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from pipeline.config import TrainVaeParams, to_dict
from pipeline.images import image_grid, placeholder_image, psnr, save_png
from pipeline.loaders import (
    META_JSON,
    ShardDataset,
    frame_shards,
    load_split,
    read_meta,
    split_shards,
)
from pipeline.models.emotion_code import code_string, emotion_codes
from pipeline.models.registry import face_model_entry
from pipeline.models.vae import MODEL_KIND, FaceVAE, VaeConfig, save_model, vae_loss
from pipeline.runtime import hash_file
from pipeline.training import distributed
from pipeline.training.fit import RESUME_IGNORED, DvcLiveCallback, FitSettings, evaluate, fit

log = logging.getLogger(__name__)

MODEL_FILE = "model.pt"
RECONSTRUCTIONS_PNG = "reconstructions.png"
LABEL_SWAP_PNG = "label_swap.png"

# Where the mouth sits in the faces stage's contour crops (fractions of the side): rows
# ~65-92 %, columns ~20-80 %; the upper band (eyes, brows, forehead) is the control region.
MOUTH_ROWS, MOUTH_COLS = (0.65, 0.92), (0.20, 0.80)
UPPER_ROWS = (0.10, 0.50)


@dataclass(frozen=True)
class VaeObjective:
    """The VAE's training objective over sample dicts: ``vae_loss`` of face and emotion."""

    codes: torch.Tensor | None
    """Emotion code table ``(n_emotions, code_dim)``, indexed by the ``emotion`` label;
    None for an unconditional VAE."""
    beta: float
    """Weight of the KL term."""

    def __call__(self, model: torch.nn.Module, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """Return ``{"loss", "recon", "kl", "mse"}`` of the batch (see :func:`vae_loss`)."""
        faces = batch["face"]
        return vae_loss(model(faces, self.clip_codes(batch["emotion"])), faces, self.beta)

    def clip_codes(self, emotion: torch.Tensor) -> torch.Tensor | None:
        """Return the codes ``(B, code_dim)`` of labels ``(B,)``; None when unconditional."""
        return None if self.codes is None else self.codes.to(emotion.device)[emotion]


def resolve_conditional(
    params: TrainVaeParams, labelled: bool, dataset: str | Path = "the dataset"
) -> bool:
    """Return whether the VAE is conditional: ``train_vae.conditional``, ``auto`` = ``labelled``.

    Raises ``ValueError`` naming the setting and ``dataset`` when ``conditional`` is true but
    the data has no emotion labels.
    """
    if params.conditional == "auto":
        return labelled
    if params.conditional and not labelled:
        raise ValueError(
            f"train_vae.conditional is true, but {dataset} has no emotion labels "
            "(meta.json emotions: []): set train_vae.conditional to auto or false to train "
            "the unconditional VAE, or label the clips' emotions")
    return bool(params.conditional)


def vae_config(
    params: TrainVaeParams, face_size: int, n_emotions: int, dataset: str | Path = "the dataset"
) -> VaeConfig:
    """Return the architecture for ``params`` and the dataset's face size and emotions.

    An unconditional VAE (no emotion labels, or ``conditional: false``) has code width 0.
    """
    conditional = resolve_conditional(params, n_emotions > 0, dataset)
    return VaeConfig(
        image_size=face_size,
        feature_dim=params.feature_dim,
        latent_dim=params.latent_dim,
        code_dim=n_emotions * params.code_bits_per_class if conditional else 0,
        conditional=conditional,
        decoder_code=params.decoder_code,
        channels=params.channels,
    )


def train_vae(
    params: TrainVaeParams,
    dataset_dir: str | Path,
    out_dir: str | Path,
    checkpoint_dir: str | Path,
    live_dir: str | Path,
) -> dict[str, float]:
    """Return the final metrics after training, saving and gridding the face VAE.

    The caller seeds the RNGs (model initialisation draws from torch's generator). Under
    torchrun, every process trains and only rank 0 writes the outputs (the others return
    ``{}``).
    """
    if face_model_entry(params.model).kind != MODEL_KIND:
        raise ValueError(f"train_vae.model: {params.model!r} is not trained by this stage "
                         "(it trains the VAE)")
    out_dir = Path(out_dir)
    meta = read_meta(dataset_dir)
    emotions: list[str] = list(meta["emotions"])
    config = vae_config(params, int(meta["face_size"]), len(emotions),
                        f"the dataset {dataset_dir}")
    codes = _codes(config, emotions, params)
    train = _split(params, dataset_dir, "train")
    val = load_split(dataset_dir, "val")
    model = FaceVAE(config)
    objective = VaeObjective(codes, params.beta)
    settings = FitSettings.from_params(params)
    fingerprint = dataset_fingerprint(dataset_dir)
    live = DvcLiveCallback(live_dir)
    state = fit(
        model, objective, train, val, settings,
        params=to_dict(params), checkpoint_dir=checkpoint_dir,
        identity={"data": fingerprint, "model": config.to_dict()}, callbacks=[live],
        resume_ignored=(*RESUME_IGNORED, "threads", "grid_faces", "processes"),
    )
    if not distributed.is_main():
        return {}  # rank 0 writes the outputs
    metrics = final_metrics(model, objective, val, train, settings, emotions)
    live.finish({f"final/{k}": v for k, v in metrics.items()})
    save_model(out_dir / MODEL_FILE, model, {
        "params": to_dict(params), "emotions": emotions,
        "codes": [] if codes is None else [code_string(c) for c in codes], "epoch": state.epoch,
        "global_step": state.global_step, "data": fingerprint, "metrics": metrics,
    })
    faces, labels = _grid_faces(val, params.grid_faces)
    save_png(reconstruction_grid(model, faces, objective.clip_codes(labels)),
             out_dir / RECONSTRUCTIONS_PNG)
    if codes is None:  # dvc.yaml still expects the file: say why there is no grid
        swap = placeholder_image(
            f"No label swap: the VAE is unconditional ({_why_unconditional(emotions)}).")
    else:
        swap = label_swap_grid(model, faces, labels, codes, emotions)
    save_png(swap, out_dir / LABEL_SWAP_PNG)
    log.info("final metrics: %s", {k: round(v, 5) for k, v in metrics.items()})
    return metrics


def _codes(
    config: VaeConfig, emotions: Sequence[str], params: TrainVaeParams
) -> torch.Tensor | None:
    """Return the emotion code table of a conditional VAE (logged), None when unconditional."""
    if not config.conditional:
        log.info("unconditional VAE: %s", _why_unconditional(emotions))
        return None
    codes = emotion_codes(emotions, params.code_bits_per_class)
    log.info("emotion codes: %s", {e: code_string(codes[i]) for i, e in enumerate(emotions)})
    return codes


def _why_unconditional(emotions: Sequence[str]) -> str:
    return ("the dataset has no emotion labels" if not emotions
            else "train_vae.conditional is false")


def _split(params: TrainVaeParams, dataset_dir: str | Path, split: str) -> Dataset:
    if params.in_memory:
        return load_split(dataset_dir, split)
    return ShardDataset(dataset_dir, split, shuffle=True, seed=params.seed,
                        rank=distributed.rank(), world_size=distributed.world_size())


def dataset_fingerprint(dataset_dir: str | Path) -> str:
    """Return a SHA-256 over ``meta.json`` and every shard's name and bytes (frames too)."""
    digest = hashlib.sha256()
    files = [Path(dataset_dir) / META_JSON]
    for split in ("train", "val", "test"):
        files += split_shards(dataset_dir, split) + frame_shards(dataset_dir, split)
    for path in files:
        digest.update(str(path.relative_to(dataset_dir)).encode() + b"\0")
        hash_file(path, digest)
    return digest.hexdigest()


def final_metrics(
    model: FaceVAE,
    objective: VaeObjective,
    val: Any,
    train: Dataset,
    settings: FitSettings,
    emotions: Sequence[str],
) -> dict[str, float]:
    """Return validation MSE / KL / PSNR (z = mu), the mean-face baseline and the swap effect.

    ``val_mse`` and ``mean_face_mse`` are per-pixel means over all validation pixels;
    PSNR is ``10 log10(1 / mse)`` of that mean (faces in [0, 1]).
    """
    terms = evaluate(model, objective, val, settings)
    mean_face = _mean_face(train)
    baseline = float((val.face - mean_face).pow(2).mean())
    metrics = {
        "val_mse": terms["mse"], "val_kl": terms["kl"], "val_recon": terms["recon"],
        "val_psnr_db": psnr(terms["mse"]), "mean_face_mse": baseline,
        "mean_face_psnr_db": psnr(baseline),
    }
    if model.config.conditional and {"HAP", "SAD"} <= set(emotions):
        metrics["swap_mouth_ratio"] = mouth_swap_ratio(
            model, val.face, objective.codes[emotions.index("HAP")],
            objective.codes[emotions.index("SAD")],
        )
    return metrics


def _mean_face(data: Dataset) -> torch.Tensor:
    if hasattr(data, "face"):
        return data.face.mean(dim=0)
    total, n = None, 0
    for sample in data:  # streaming: one pass
        face = sample["face"].double()
        total = face if total is None else total + face
        n += 1
    if total is None:
        raise ValueError("training data is empty")
    return (total / n).float()


@torch.no_grad()
def swap_decode(model: FaceVAE, faces: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
    """Return ``faces (B, 1, S, S)`` re-encoded with one emotion ``code`` and decoded (z = mu).

    The swapped code enters both the posterior and (when the model takes it) the decoder.
    """
    model.eval()
    device = next(model.parameters()).device
    faces = faces.to(device)
    codes = code.to(device).expand(len(faces), -1)
    mu, _ = model.posterior(model.features(faces), codes)
    return model.decode(mu, codes).cpu()


def mouth_swap_ratio(
    model: FaceVAE, faces: torch.Tensor, hap_code: torch.Tensor, sad_code: torch.Tensor
) -> float:
    """Return how much more HAP vs SAD decodes differ at the mouth than at the upper face.

    The mean absolute difference between the HAP and SAD decodes of the same faces in the
    mouth region, divided by that in the eyes-and-forehead band: > 1 means the emotion code
    moves the mouth more than the rest (003 Fig. 7: raised mouth corners for Happy).
    """
    diff = (swap_decode(model, faces, hap_code) - swap_decode(model, faces, sad_code)).abs()
    size = faces.shape[-1]
    mouth = diff[..., _band(MOUTH_ROWS, size), _band(MOUTH_COLS, size)].mean()
    upper = diff[..., _band(UPPER_ROWS, size), _band(MOUTH_COLS, size)].mean()
    return float(mouth / upper.clamp_min(1e-8))


def _band(fractions: tuple[float, float], size: int) -> slice:
    return slice(int(fractions[0] * size), math.ceil(fractions[1] * size))


def _grid_faces(val: Any, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``n`` validation faces spread evenly over the split, and their labels."""
    index = np.linspace(0, len(val) - 1, num=min(n, len(val))).round().astype(int)
    return val.face[index], val.emotion[index]


def reconstruction_grid(
    model: FaceVAE, faces: torch.Tensor, codes: torch.Tensor | None
) -> Any:
    """Return a 2-row grid: inputs, and their reconstructions with their own codes (z = mu).

    ``codes`` is None for an unconditional VAE.
    """
    model.eval()
    with torch.no_grad():
        device = next(model.parameters()).device
        recon = model(faces.to(device), None if codes is None else codes.to(device))["recon"]
        recon = recon.cpu()
    tiles = [*faces.numpy(), *recon.numpy()]
    labels = ["input"] * len(faces) + ["recon"] * len(faces)
    return image_grid(tiles, ncols=len(faces), labels=labels, scale=2)


def label_swap_grid(
    model: FaceVAE,
    faces: torch.Tensor,
    labels: torch.Tensor,
    codes: torch.Tensor,
    emotions: Sequence[str],
) -> Any:
    """Return 003 Fig. 7: inputs (their true emotion), then one row per assigned emotion."""
    tiles = list(faces.numpy())
    captions = [f"in {emotions[int(e)]}" for e in labels]
    for i, emotion in enumerate(emotions):
        decoded = swap_decode(model, faces, codes[i]) if model.config.conditional else faces
        tiles += list(decoded.numpy())
        captions += [f"as {emotion}"] * len(faces)
    return image_grid(tiles, ncols=len(faces), labels=captions, scale=2)
