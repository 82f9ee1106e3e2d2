"""Training of paper 002's face model: identity stage, expression stage, repeated.

Kanou & Nagao (002 sections 3-4) use speaker ids only, never emotion labels:

- **identity stage** (eq. 1): the ExpressionEncoder is unused (``z_e = 0``, the prior's most
  average expression); the IdentityEncoder and the Decoder learn to rebuild, from a face,
  a *random other face of the same speaker* (:class:`SpeakerFaces` draws it), so ``z_i``
  can only carry what the speaker's faces share;
- **expression stage** (eq. 5 = eq. 2 + beta eq. 3 + gamma eq. 4): the IdentityEncoder is
  frozen; the ExpressionEncoder and the Decoder rebuild the face itself, so ``z_e`` takes
  what ``z_i`` lacks; a Discriminator tells real faces from reconstructions and from decoded
  prior samples (:func:`discriminator_loss`, its step is ``fit``'s
  :class:`~pipeline.training.fit.AdversarialStep`), and the switch loss
  (:func:`switch_loss`) decodes ``z_i`` with another speaker's ``z_e`` and asks both
  encoders to read their own latents back from the result;
- the two stages alternate for ``rounds`` rounds (4.1.3), all in one run of the shared
  :func:`~pipeline.training.fit.fit` loop: :class:`StageSchedule` sets each epoch's stage,
  which encoder trains, and the learning rate (``lr`` times ``lr_decay`` per epoch of the
  stage, 002 section 5.1). Its position is a function of the epoch alone, so a killed run
  resumes exactly.

**Loss scale: how 002's alpha_1 = 1e5 and alpha_2 = 0.01 map to ``kl_weight``.** Our terms
are those of the project's VAE (:func:`pipeline.models.vae.vae_loss`): the reconstruction is
the squared error *summed over a face's pixels* in [0, 1] (a unit-variance Gaussian
log-likelihood up to constants) and the KL is summed over the latent's dimensions, both
averaged over the batch, so ``kl_weight = 1`` is the plain VAE at any image size. 002 prints
alpha_1 (KL) = 1e5 against alpha_2 (likelihood) = 0.01, a ratio of 1e7: on these per-face
terms that puts 1e7 times the plain VAE's price on the KL, the posterior collapses and the
latents carry nothing, so the printed pair cannot be per-face sums. It balances when their
likelihood term is about 1e7 times ours: a squared error on 8-bit pixels (255^2 = 65025),
over 3 colour channels, summed over a batch of ~64 faces (65025 x 3 x 64 = 1.25e7); there
alpha_1 / alpha_2 = 1e7 is a KL weight of ~0.8 per face, the plain VAE. The preset therefore
maps the pair to ``kl_weight = 1``. On that reading beta = 1 and gamma = 10 would be ~1e-6
of the loss and could not have moved 002's Table 3 as they did, so we read them on our
per-face scale instead: ``adversarial_weight = 1`` against a reconstruction sum of ~20 (64
px) and ``switch_weight = 10`` on a latent MSE of ~0.1-1, each a few to tens of percent of
the loss. Both readings are ours; 002 does not give its batch size or pixel scale.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from pipeline.config import TrainDisentangledParams, to_dict
from pipeline.images import psnr
from pipeline.loaders import SplitTensors, frame_shards, load_frames, load_split, read_meta
from pipeline.models.disentangled import (
    MODEL_KIND,
    DisentangledConfig,
    DisentangledVAE,
    expression_means,
    save_model,
)
from pipeline.models.inference import batched
from pipeline.models.registry import face_model_entry
from pipeline.runtime import atomic_path
from pipeline.training.fit import (
    RESUME_IGNORED,
    AdversarialStep,
    Callback,
    DvcLiveCallback,
    FitSettings,
    FitState,
    evaluate,
    fit,
)
from pipeline.training.vae import dataset_fingerprint

log = logging.getLogger(__name__)

IDENTITY, EXPRESSION = "identity", "expression"
MODEL_FILE = "model.pt"
ROUNDS_DIR = "rounds"
RESUME_IGNORED_HERE = (*RESUME_IGNORED, "threads", "baseline_epochs")
"""Params a checkpoint may differ in: none of them changes the weights of its epochs."""


def round_file(round_number: int) -> str:
    """Return the file name of the model as it was after round ``round_number`` (1-based)."""
    return f"round_{round_number}.pt"


# --- data ----------------------------------------------------------------------------------


class SpeakerFaces(Dataset):
    """Faces with their speaker, and a random other face of the same speaker (002 eq. 1).

    Sample ``i``: ``{"face": (1, S, S), "other": (1, S, S), "speaker": ()}``, where
    ``other`` is drawn uniformly, at every access, among the *other* faces of the speaker
    (the face itself only when it is the speaker's only one). The draws come from torch's
    global generator, which the stage seeds and ``fit`` checkpoints.
    """

    def __init__(self, faces: torch.Tensor, speaker_ids: Sequence[str]) -> None:
        if len(faces) != len(speaker_ids) or len(faces) == 0:
            raise ValueError(f"{len(faces)} faces and {len(speaker_ids)} speaker ids")
        self.faces = faces
        names = sorted(set(speaker_ids))
        self.speakers = tuple(names)
        self.speaker = torch.tensor([names.index(s) for s in speaker_ids])
        self.members = [torch.nonzero(self.speaker == k).flatten() for k in range(len(names))]

    def __len__(self) -> int:
        return len(self.faces)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"face": self.faces[i], "other": self.faces[self.other_index(i)],
                "speaker": self.speaker[i]}

    def other_index(self, i: int) -> int:
        """Return a random index of another face of face ``i``'s speaker (``i`` if none)."""
        members = self.members[int(self.speaker[i])]
        if len(members) == 1:
            return i
        pick = int(torch.randint(len(members) - 1, ()))
        others = members[members != i]
        return int(others[pick])


# --- losses ----------------------------------------------------------------------------------


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Return KL(N(mu, sigma^2) || N(0, I)) summed over dimensions, averaged over the batch."""
    return (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(dim=1)).mean()


def reconstruction(decoded: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Return the squared error summed over each face's pixels, averaged over the batch."""
    return (decoded - target).pow(2).flatten(1).sum(dim=1).mean()


def swap_partners(speaker: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Return, per face, a random face of *another* speaker in the batch, and where one exists.

    ``(partner (B,), valid (B,) bool)``: ``partner[i]`` is uniform among the batch's faces
    whose speaker differs from face ``i``'s (drawn from torch's generator).
    """
    different = speaker[None, :] != speaker[:, None]
    scores = torch.rand(different.shape, device=speaker.device) * different
    return scores.argmax(dim=1), different.any(dim=1)


Encode = Callable[[torch.Tensor], torch.Tensor]
Decode = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def switch_loss(
    z_i: torch.Tensor,
    z_e: torch.Tensor,
    partner: torch.Tensor,
    decode: Decode,
    encode_identity: Encode,
    encode_expression: Encode,
) -> torch.Tensor:
    """Return 002 eq. (4): ``MSE(z_i, z_i') + MSE(z_e^d, z_e^d')`` for swapped expressions.

    Face ``k`` is decoded with its own ``z_i`` and the expression ``z_e^d = z_e[partner[k]]``
    of another speaker's face; ``z_i'`` and ``z_e^d'`` are what the encoders read back from
    that image. The latents read back are compared with the (detached) latents put in, so
    the gradient asks the decoder to render, and the encoders to read, a swapped expression
    faithfully rather than moving the targets.
    """
    expression = z_e[partner]
    swapped = decode(z_i, expression)
    return (F.mse_loss(encode_identity(swapped), z_i.detach())
            + F.mse_loss(encode_expression(swapped), expression.detach()))


def discriminator_loss(
    discriminator: nn.Module, real: torch.Tensor, decoded: torch.Tensor, prior: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Return 002 eq. (3) for D: ``-log D(x) - log(1 - D(x')) - log(1 - D(x_p))``, batch means.

    Terms: ``loss``, and ``real`` / ``decoded`` / ``prior`` (each one cross-entropy).
    """
    terms = {
        "real": _cross_entropy(discriminator(real), 1.0),
        "decoded": _cross_entropy(discriminator(decoded.detach()), 0.0),
        "prior": _cross_entropy(discriminator(prior.detach()), 0.0),
    }
    return {"loss": sum(terms.values()), **terms}


def generator_adversarial_loss(
    discriminator: nn.Module, decoded: torch.Tensor, prior: torch.Tensor
) -> torch.Tensor:
    """Return 002 eq. (3) for G, non-saturating: ``-log D(x') - log D(x_p)``, batch means."""
    return _cross_entropy(discriminator(decoded), 1.0) + _cross_entropy(discriminator(prior), 1.0)


def _cross_entropy(logits: torch.Tensor, target: float) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


@dataclass(frozen=True)
class LossWeights:
    """Weights of 002 eq. (1) and (5) on our per-face scale (see the module docstring)."""

    kl: float = 1.0
    """KL terms (alpha_1 / alpha_2)."""
    adversarial: float = 1.0
    """beta: the adversarial loss in the expression stage (0: off)."""
    switch: float = 10.0
    """gamma: the switch loss in the expression stage (0: off)."""


@dataclass
class DisentangleObjective:
    """The generator's objective of the current stage, and the discriminator's (``fit``'s).

    :class:`StageSchedule` sets :attr:`stage` before every epoch.
    """

    weights: LossWeights
    stage: str = IDENTITY
    """``identity`` (002 eq. 1) or ``expression`` (002 eq. 5)."""

    def __call__(self, model: nn.Module, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """Return the stage's terms: loss, recon, kl, mse (and gan, switch when weighted)."""
        if self.stage == IDENTITY:
            return identity_stage_loss(model, batch["face"], batch["other"], self.weights)
        return expression_stage_loss(model, batch["face"], batch["speaker"], self.weights)

    def discriminator(
        self, model: nn.Module, batch: Mapping[str, Any]
    ) -> dict[str, torch.Tensor] | None:
        """Return the discriminator's terms; None (no step) outside adversarial training."""
        if self.stage != EXPRESSION or self.weights.adversarial == 0:
            return None
        faces = batch["face"]
        with torch.no_grad():
            decoded = model.decode(model.identity(faces)[0], model.expression(faces)[0])
            prior = _prior_faces(model, len(faces), faces.device)
        return discriminator_loss(model.discriminator, faces, decoded, prior)


def identity_stage_loss(
    model: DisentangledVAE, faces: torch.Tensor, others: torch.Tensor, weights: LossWeights
) -> dict[str, torch.Tensor]:
    """Return 002 eq. (1): rebuild ``others`` (same speakers) from ``z_i`` of ``faces``, z_e = 0.

    Terms: ``loss = recon + kl_weight * kl``; ``mse`` is the per-pixel mean (not optimised).
    """
    mu, logvar = model.identity(faces)
    z_i = model.reparameterise(mu, logvar) if model.training else mu
    decoded = model.decode(z_i, torch.zeros_like(z_i))
    recon, kl = reconstruction(decoded, others), kl_divergence(mu, logvar)
    return {"loss": recon + weights.kl * kl, "recon": recon, "kl": kl,
            "mse": (decoded - others).pow(2).mean().detach()}


def expression_stage_loss(
    model: DisentangledVAE, faces: torch.Tensor, speaker: torch.Tensor, weights: LossWeights
) -> dict[str, torch.Tensor]:
    """Return 002 eq. (5) = eq. (2) + beta eq. (3) + gamma eq. (4) of ``faces`` ``(B, 1, S, S)``.

    The IdentityEncoder is frozen by :class:`StageSchedule`; ``z_i`` is its ``mu``. Terms:
    ``loss``, ``recon``, ``kl`` (of ``z_e``), ``mse`` and, when weighted, ``gan`` and ``switch``.
    """
    z_i = model.identity(faces)[0].detach()
    mu, logvar = model.expression(faces)
    z_e = model.reparameterise(mu, logvar) if model.training else mu
    decoded = model.decode(z_i, z_e)
    recon, kl = reconstruction(decoded, faces), kl_divergence(mu, logvar)
    terms = {"recon": recon, "kl": kl, "mse": (decoded - faces).pow(2).mean().detach()}
    loss = recon + weights.kl * kl
    if weights.adversarial > 0:
        prior = _prior_faces(model, len(faces), faces.device)
        terms["gan"] = generator_adversarial_loss(model.discriminator, decoded, prior)
        loss = loss + weights.adversarial * terms["gan"]
    if weights.switch > 0:
        partner, valid = swap_partners(speaker)
        terms["switch"] = switch_loss(
            z_i[valid], mu, partner[valid], model.decode,
            lambda x: model.identity(x)[0], lambda x: model.expression(x)[0],
        ) if valid.any() else torch.zeros((), device=faces.device)
        loss = loss + weights.switch * terms["switch"]
    return {"loss": loss, **terms}


def _prior_faces(model: DisentangledVAE, n: int, device: torch.device) -> torch.Tensor:
    """Return faces decoded from ``z_i, z_e ~ N(0, I)`` (002's x_p)."""
    dim = model.config.latent_dim
    return model.decode(torch.randn(n, dim, device=device), torch.randn(n, dim, device=device))


# --- the schedule --------------------------------------------------------------------------


@dataclass(frozen=True)
class StagePlan:
    """Which stage each epoch trains (002 section 4.1.3) and at what learning rate (5.1)."""

    rounds: int
    identity_epochs: int
    expression_epochs: int
    lr: float
    lr_decay: float = 1.0

    @property
    def epochs_per_round(self) -> int:
        """Return the epochs of one identity stage plus one expression stage."""
        return self.identity_epochs + self.expression_epochs

    @property
    def epochs(self) -> int:
        """Return the epochs of the whole run."""
        return self.rounds * self.epochs_per_round

    def stage_at(self, epoch: int) -> tuple[str, int]:
        """Return ``(stage, epochs of that stage done before)`` of 0-based ``epoch``."""
        within = epoch % self.epochs_per_round
        if within < self.identity_epochs:
            return IDENTITY, within
        return EXPRESSION, within - self.identity_epochs

    def lr_at(self, epoch: int) -> float:
        """Return the learning rate of ``epoch``: ``lr * lr_decay ** (epoch within its stage)``."""
        return self.lr * self.lr_decay ** self.stage_at(epoch)[1]

    def round_ends(self, epochs_done: int) -> int | None:
        """Return the round (1-based) that ``epochs_done`` completes, or None mid-round."""
        done, rest = divmod(epochs_done, self.epochs_per_round)
        return done if rest == 0 and done > 0 else None


class StageSchedule(Callback):
    """Before each epoch: the objective's stage, the encoder that trains, the learning rate.

    The identity stage trains the IdentityEncoder and the Decoder (the ExpressionEncoder is
    unused); the expression stage freezes the IdentityEncoder (002 section 3) and trains the
    ExpressionEncoder, the Decoder and the Discriminator.
    """

    def __init__(self, plan: StagePlan, objective: DisentangleObjective) -> None:
        self.plan = plan
        self.objective = objective

    def on_epoch_start(self, state: FitState) -> None:
        """Set the stage, the trainable encoder and the learning rate of epoch ``state.epoch``."""
        stage, _ = self.plan.stage_at(state.epoch)
        self.objective.stage = stage
        state.model.identity.requires_grad_(stage == IDENTITY)
        state.model.expression.requires_grad_(stage == EXPRESSION)
        lr = self.plan.lr_at(state.epoch)
        for optimizer in (state.optimizer, state.adversary_optimizer):
            for group in optimizer.param_groups if optimizer is not None else ():
                group["lr"] = lr


class RoundSnapshots(Callback):
    """Save the model after each round (002 Fig. 3: accuracy against rounds) to a directory.

    Written to the checkpoint directory, beside ``last.pt``, so that a resumed run still has
    the rounds its killed part finished; the stage copies them to its output at the end.
    """

    def __init__(
        self, plan: StagePlan, directory: Path, save: Callable[[DisentangledVAE, int, Path], None]
    ) -> None:
        self.plan = plan
        self.directory = directory
        self.save = save

    def on_epoch_end(self, state: FitState, record: Mapping[str, float]) -> None:
        """Save the model when ``state.epoch`` completes a round."""
        round_number = self.plan.round_ends(state.epoch)
        if round_number is not None:
            self.save(state.model, state.epoch, self.directory / round_file(round_number))
            state.model.train()


# --- the stage -----------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainingData:
    """The faces a 002 model trains and is checked on, with what the model file records."""

    train: SplitTensors
    """Training faces: the clips' equally spaced frames when the dataset has them (002
    section 5.1), else each clip's chosen frame."""
    val: SplitTensors
    """Validation faces, of the same kind."""
    chosen: SplitTensors
    """The training clips' chosen frames (where the labelled expression shows): the mean
    expression of each emotion is taken over these."""
    emotions: tuple[str, ...]
    """The dataset's emotion names (empty without labels)."""
    face_size: int
    fingerprint: str
    """:func:`~pipeline.training.vae.dataset_fingerprint` of the dataset."""


def read_training_data(dataset_dir: str | Path) -> TrainingData:
    """Return the train and val faces of the dataset stage's output (no audio)."""
    meta = read_meta(dataset_dir)
    chosen = load_split(dataset_dir, "train", with_audio=False)
    if frame_shards(dataset_dir, "train"):
        train, val = load_frames(dataset_dir, "train"), load_frames(dataset_dir, "val")
        log.info("training on %d equally spaced frames of %d clips", len(train), len(chosen))
    else:
        train, val = chosen, load_split(dataset_dir, "val", with_audio=False)
    return TrainingData(train, val, chosen, tuple(meta["emotions"]), int(meta["face_size"]),
                        dataset_fingerprint(dataset_dir))


def model_config(params: TrainDisentangledParams, face_size: int) -> DisentangledConfig:
    """Return the architecture of ``params`` for faces of ``face_size`` pixels."""
    try:
        return DisentangledConfig(image_size=face_size, latent_dim=params.latent_dim,
                                  channels=params.channels)
    except ValueError as error:
        raise ValueError(f"train_disentangled.channels / faces.crop_size: {error}") from None


def loss_weights(params: TrainDisentangledParams) -> LossWeights:
    """Return the loss weights of ``params``."""
    return LossWeights(params.kl_weight, params.adversarial_weight, params.switch_weight)


def stage_plan(params: TrainDisentangledParams) -> StagePlan:
    """Return the stage plan of ``params``."""
    return StagePlan(params.rounds, params.identity_epochs, params.expression_epochs,
                     params.lr, params.lr_decay)


@dataclass
class Run:
    """One training of a 002 model: its settings, and where its checkpoints and logs go."""

    params: TrainDisentangledParams
    weights: LossWeights
    plan: StagePlan
    checkpoint_dir: Path | None
    callbacks: list[Callback] = field(default_factory=list)


def train_model(run: Run, data: TrainingData) -> tuple[DisentangledVAE, FitState]:
    """Return a 002 model trained on ``data`` by ``run``'s plan, and the final fit state.

    The caller seeds the RNGs (initialisation draws from torch's generator).
    """
    model = DisentangledVAE(model_config(run.params, data.face_size))
    objective = DisentangleObjective(run.weights)
    settings = fit_settings(run.params, run.plan.epochs)
    adversary = AdversarialStep(lambda m: list(m.discriminator.parameters()),
                                objective.discriminator)
    identity = {"data": data.fingerprint, "model": model.config.to_dict(),
                "weights": vars(run.weights).copy(), "plan": vars(run.plan).copy()}
    state = fit(
        model, objective, SpeakerFaces(data.train.face, data.train.speaker_id),
        SpeakerFaces(data.val.face, data.val.speaker_id), settings,
        params=to_dict(run.params), checkpoint_dir=run.checkpoint_dir, identity=identity,
        callbacks=[StageSchedule(run.plan, objective), *run.callbacks],
        resume_ignored=RESUME_IGNORED_HERE, adversary=adversary,
    )
    return model.cpu().eval(), state


def fit_settings(params: Any, epochs: int, **overrides: Any) -> FitSettings:
    """Return ``fit``'s settings from ``params`` for a run of ``epochs`` epochs."""
    names = FitSettings.__dataclass_fields__
    values = {n: getattr(params, n) for n in names if hasattr(params, n)}
    return FitSettings(**{**values, "epochs": epochs, **overrides})


def expression_latents(model: DisentangledVAE, faces: torch.Tensor) -> torch.Tensor:
    """Return ``z_e`` (mu) ``(N, latent_dim)`` on the CPU of faces ``(N, 1, S, S)``."""
    return _latents(model.expression, model, faces)


def identity_latents(model: DisentangledVAE, faces: torch.Tensor) -> torch.Tensor:
    """Return ``z_i`` (mu) ``(N, latent_dim)`` on the CPU of faces ``(N, 1, S, S)``."""
    return _latents(model.identity, model, faces)


def _latents(encoder: nn.Module, model: nn.Module, faces: torch.Tensor) -> torch.Tensor:
    model.eval()
    device = next(model.parameters()).device
    return batched(lambda x: encoder(x.to(device))[0].cpu(), faces)


def model_provenance(
    model: DisentangledVAE, data: TrainingData, params: TrainDisentangledParams, epoch: int
) -> dict[str, Any]:
    """Return what a model file records: params, data, emotions and their mean ``z_e``.

    The mean expression latent of each emotion over the training faces is what voice ->
    face decodes a wanted emotion with (:class:`DisentangledFaceModel`); the labels are read
    here, after training, never during it.
    """
    means: list[list[float]] = []
    if data.emotions:
        z_e = expression_latents(model, data.chosen.face)
        means = expression_means(z_e, data.chosen.emotion, len(data.emotions)).tolist()
    return {"params": to_dict(params), "emotions": list(data.emotions),
            "expression_means": means, "epoch": epoch, "data": data.fingerprint}


def train_disentangled(
    params: TrainDisentangledParams,
    dataset_dir: str | Path,
    out_dir: str | Path,
    checkpoint_dir: str | Path,
    live_dir: str | Path,
) -> dict[str, float]:
    """Return the final metrics after training and saving the 002 model and its rounds.

    Writes ``<out>/model.pt`` and ``<out>/rounds/round_<r>.pt`` (the model after each round).
    The caller seeds the RNGs.
    """
    if face_model_entry(params.model, "train_disentangled.model").kind != MODEL_KIND:
        raise ValueError(f"train_disentangled.model: {params.model!r} is not trained by this "
                         "stage (it trains 002's disentangled model)")
    out_dir, checkpoint_dir = Path(out_dir), Path(checkpoint_dir)
    data = read_training_data(dataset_dir)
    plan = stage_plan(params)
    live = DvcLiveCallback(live_dir)

    def save_round(model: DisentangledVAE, epoch: int, path: Path) -> None:
        save_model(path, model, model_provenance(model, data, params, epoch))

    snapshots = RoundSnapshots(plan, checkpoint_dir / ROUNDS_DIR, save_round)
    run = Run(params, loss_weights(params), plan, checkpoint_dir, [snapshots, live])
    log.info("train_disentangled: %d train / %d val faces, %d rounds of %d + %d epochs",
             len(data.train), len(data.val), plan.rounds, plan.identity_epochs,
             plan.expression_epochs)
    model, state = train_model(run, data)
    metrics = final_metrics(model, data, run)
    live.finish({f"final/{k}": v for k, v in metrics.items()})
    save_model(out_dir / MODEL_FILE, model, model_provenance(model, data, params, state.epoch))
    _copy_rounds(checkpoint_dir / ROUNDS_DIR, out_dir / ROUNDS_DIR, plan.rounds)
    log.info("final metrics: %s", {k: round(v, 5) for k, v in metrics.items()})
    return metrics


def _copy_rounds(source: Path, target: Path, rounds: int) -> None:
    for r in range(1, rounds + 1):
        path = source / round_file(r)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: the snapshot of round {r} is missing")
        with atomic_path(target / round_file(r)) as tmp:
            tmp.write_bytes(path.read_bytes())


def final_metrics(model: DisentangledVAE, data: TrainingData, run: Run) -> dict[str, float]:
    """Return validation reconstruction (both stages' objectives, z = mu) and PSNR."""
    settings = fit_settings(run.params, 1, device="cpu")
    val = SpeakerFaces(data.val.face, data.val.speaker_id)
    metrics: dict[str, float] = {}
    for stage in (IDENTITY, EXPRESSION):
        objective = DisentangleObjective(run.weights, stage)
        terms = evaluate(model, objective, val, settings)
        metrics |= {f"{stage}_{k}": v for k, v in terms.items() if k != "loss"}
    metrics["val_psnr_db"] = psnr(metrics["expression_mse"])
    metrics["identity_psnr_db"] = psnr(metrics["identity_mse"])
    metrics["mean_face_mse"] = float((data.val.face - data.train.face.mean(dim=0)).pow(2).mean())
    return metrics

