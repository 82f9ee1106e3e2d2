"""The comparison models of 002 Table 3, trained for the expression-recognition table.

Rows of 002 Table 3 and where their model comes from (the evaluation is
:mod:`pipeline.evaluation.expression`):

1. *conventional method* (002 section 3, [9]): one round, no adversarial or switch loss;
2. *+ adversarial loss*: one round, adversarial loss only;
3. *+ adversarial + switch*: one round of the full objective, which is the main model after
   its first round (the ``train_disentangled`` stage's ``rounds/round_1.pt``: same seed,
   data order and settings, so no second training);
4. *+ iterated stages*: the main model;
5. *original VAE*: :class:`~pipeline.models.disentangled.BaselineVAE`, unconditional, on the
   same layers, its ``z`` as wide as ``z_i ⊕ z_e``;
6. *VAE minus the speaker mean* (eq. 6): row 5's latents, computed at evaluation;
7. *C-VAE*: the same VAE conditioned on the training speaker's one-hot (002 [26]).

Rows 1 and 2 train exactly one round of the main model's settings; rows 5 and 7 train
``baseline_epochs`` epochs at the main model's learning rate and KL weight. None of them
sees an emotion label.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from pipeline.config import TrainDisentangledParams, to_dict
from pipeline.models.disentangled import BaselineConfig, BaselineVAE, save_model
from pipeline.models.files import load_model_payload, save_model_file
from pipeline.training.disentangle import (
    RESUME_IGNORED_HERE,
    Run,
    SpeakerFaces,
    TrainingData,
    fit_settings,
    kl_divergence,
    loss_weights,
    model_config,
    model_provenance,
    read_training_data,
    reconstruction,
    stage_plan,
    train_model,
)
from pipeline.training.fit import fit

log = logging.getLogger(__name__)

BASELINE_KIND = "ExpressionBaselineVAE"
CONVENTIONAL, ADVERSARIAL = "conventional", "adversarial"
VAE, CVAE = "vae", "cvae"
ABLATIONS = {CONVENTIONAL: (0.0, 0.0), ADVERSARIAL: (None, 0.0)}
"""Table 3 rows 1 and 2: (adversarial weight, switch weight); None keeps the params' value."""


def baseline_file(name: str) -> str:
    """Return the file name of comparison model ``name``."""
    return f"{name}.pt"


@dataclass(frozen=True)
class BaselineObjective:
    """A (conditional) VAE's objective: reconstruction + ``kl_weight`` * KL, as 002 eq. (2)."""

    kl_weight: float
    n_speakers: int
    """Width of the speaker one-hot; 0 for the unconditional VAE."""

    def __call__(self, model: BaselineVAE, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """Return ``{"loss", "recon", "kl", "mse"}`` of the batch's faces."""
        faces, code = batch["face"], self.code(batch["speaker"])
        mu, logvar = model.encode(faces, code)
        z = model.reparameterise(mu, logvar) if model.training else mu
        decoded = model.decode(z, code)
        recon, kl = reconstruction(decoded, faces), kl_divergence(mu, logvar)
        return {"loss": recon + self.kl_weight * kl, "recon": recon, "kl": kl,
                "mse": (decoded - faces).pow(2).mean().detach()}

    def code(self, speaker: torch.Tensor) -> torch.Tensor | None:
        """Return speakers' one-hot codes ``(B, n_speakers)``; None when unconditional."""
        return F.one_hot(speaker, self.n_speakers).float() if self.n_speakers else None


def train_baseline_vae(
    params: TrainDisentangledParams, data: TrainingData, conditional: bool,
    checkpoint_dir: Path | None,
) -> tuple[BaselineVAE, tuple[str, ...]]:
    """Return Table 3's VAE (row 5) or speaker C-VAE (row 7), and the speakers coded.

    The C-VAE knows only the training speakers, so it has no validation data.
    """
    train = SpeakerFaces(data.train.face, data.train.speaker_id)
    n_speakers = len(train.speakers) if conditional else 0
    model = BaselineVAE(model_config(params, data.face_size), n_speakers)
    objective = BaselineObjective(params.kl_weight, n_speakers)
    val = None if conditional else SpeakerFaces(data.val.face, data.val.speaker_id)
    fit(model, objective, train, val, fit_settings(params, params.baseline_epochs),
        params=to_dict(params), checkpoint_dir=checkpoint_dir,
        identity={"data": data.fingerprint, "model": model.config.to_dict()},
        resume_ignored=RESUME_IGNORED_HERE)
    return model.cpu().eval(), train.speakers if conditional else ()


def train_expression_baselines(
    params: TrainDisentangledParams,
    dataset_dir: str | Path,
    out_dir: str | Path,
    checkpoint_dir: str | Path,
) -> dict[str, Path]:
    """Return ``{row name: model file}`` after training Table 3's rows 1, 2, 5 and 7.

    The caller seeds the RNGs; each model starts from the same seed, as the main one does.
    """
    out_dir, checkpoint_dir = Path(out_dir), Path(checkpoint_dir)
    data = read_training_data(dataset_dir)
    written: dict[str, Path] = {}
    initial = torch.get_rng_state()
    for name, (adversarial, switch) in ABLATIONS.items():
        torch.set_rng_state(initial)
        weights = loss_weights(params)
        weights = replace(weights, switch=switch,
                          adversarial=weights.adversarial if adversarial is None else adversarial)
        plan = replace(stage_plan(params), rounds=1)
        log.info("Table 3 %s: one round, weights %s", name, weights)
        model, state = train_model(Run(params, weights, plan, checkpoint_dir / name), data)
        provenance = model_provenance(model, data, params, state.epoch) | {"row": name}
        written[name] = save_model(out_dir / baseline_file(name), model, provenance)
    for name, conditional in ((VAE, False), (CVAE, True)):
        torch.set_rng_state(initial)
        log.info("Table 3 %s: %d epochs", name, params.baseline_epochs)
        model, speakers = train_baseline_vae(params, data, conditional, checkpoint_dir / name)
        written[name] = save_model_file(out_dir / baseline_file(name), BASELINE_KIND, model, {
            "params": to_dict(params), "row": name, "speakers": list(speakers),
            "data": data.fingerprint})
    return written


def load_baseline_vae(path: str | Path) -> tuple[BaselineVAE, tuple[str, ...]]:
    """Return a Table 3 VAE / C-VAE saved by this stage (eval mode) and its coded speakers."""
    payload = load_model_payload(path, BASELINE_KIND)
    config = BaselineConfig.from_dict(payload["config"])
    model = BaselineVAE(config.layers, config.code_dim)
    model.load_state_dict(payload["state_dict"])
    return model.eval(), tuple(payload["provenance"].get("speakers", ()))
