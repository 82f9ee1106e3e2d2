"""Training the GGDRM (pre-training, then maximum-likelihood fine-tuning) and its baselines.

Every model is trained by the shared loop :func:`pipeline.training.fit.fit`. A Boltzmann
machine's log-likelihood has no computable value to back-propagate, but its gradient is
``<-dE/dtheta>_data - <-dE/dtheta>_model``, so each objective here returns the *surrogate*
``E(data, hidden posterior) - E(model samples)`` with every state held fixed: Adam on its
gradient is the contrastive-divergence (pre-training) or persistent-contrastive-divergence
(fine-tuning, Tieleman 2008, as for DBMs) update. Its value is not a loss to watch; the
evaluation measures the predictions.

- Pre-training (:func:`pretrain`): the layer pairs of :mod:`pipeline.ggdrm.rbm`, composed.
- Fine-tuning (:func:`finetune`): the whole model; positive phase by mean-field with both
  visible layers clamped, negative phase from persistent Gibbs chains.
- Baselines: a feed-forward net of the GGDRM's shape from random initialisation trained by
  backprop on MSE, one per direction (:func:`train_dnn`; 001 Fig. 1 (b)); a ridge map.

All models see standardised features (:class:`Standardizer`, fitted on the training frames).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from sklearn.linear_model import Ridge
from torch import nn
from torch.nn import functional as F
from torch.utils.data import TensorDataset

from pipeline.config import TrainGgdrmParams, to_dict
from pipeline.ggdrm.model import GGDRM, Units
from pipeline.ggdrm.rbm import LayerPair, contrastive_divergence
from pipeline.training.fit import Callback, FitSettings, FitState, fit

log = logging.getLogger(__name__)

PHASE_SEEDS = {"pretrain": 1, "finetune": 2, "dnn_speech_to_lips": 3, "dnn_lips_to_speech": 4}
"""Each phase seeds torch from ``(seed, phase)``: changing one phase's epochs leaves the
others' initialisation and data order alone."""


@dataclass(frozen=True)
class Standardizer:
    """Per-dimension mean and standard deviation of the training frames."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, data: np.ndarray) -> Standardizer:
        """Return the standardiser of ``(n, d)`` training data (constant dims get std 1)."""
        std = data.std(axis=0)
        return cls(data.mean(axis=0), np.where(std > 0, std, 1.0))

    def forward(self, data: np.ndarray) -> torch.Tensor:
        """Return ``(data - mean) / std`` as a float32 tensor."""
        return torch.as_tensor((data - self.mean) / self.std, dtype=torch.float32)

    def inverse(self, standard: torch.Tensor | np.ndarray) -> np.ndarray:
        """Return standardised values mapped back to feature units (float64)."""
        values = standard.detach().cpu().numpy() if isinstance(standard, torch.Tensor) else standard
        return np.asarray(values, np.float64) * self.std + self.mean


def _seed(params: TrainGgdrmParams, phase: str) -> None:
    torch.manual_seed(int(np.random.SeedSequence([params.seed, PHASE_SEEDS[phase]])
                          .generate_state(1)[0]))


class LinearDecay(Callback):
    """Lower the learning rate linearly to 0 over the run, once per epoch.

    Stochastic-approximation (PCD) estimates do not settle under a constant step: on the
    demo corpus the mean-field predictions of a model trained at a constant rate swing
    from epoch to epoch (test MSE 0.9 - 1.8 in standardised units), a decaying rate ends
    them at the low end (Robbins-Monro; Tieleman 2008 decays it too).
    """

    def __init__(self, lr: float, epochs: int) -> None:
        self.lr = lr
        self.epochs = epochs

    def on_fit_start(self, state: FitState) -> None:
        """Set the rate of the first epoch to run (a resumed run continues the schedule)."""
        self._set(state)

    def on_epoch_end(self, state: FitState, record: Any) -> None:
        """Set the next epoch's rate."""
        self._set(state)

    def _set(self, state: FitState) -> None:
        for group in state.optimizer.param_groups:
            group["lr"] = self.lr * (1.0 - state.epoch / self.epochs)


def _train(model: nn.Module, objective: Callable, tensors: Sequence[torch.Tensor], epochs: int,
           lr: float, params: TrainGgdrmParams, phase: str,
           callbacks: Sequence[Callback] = ()) -> list[dict[str, float]]:
    """Run :func:`fit` for ``epochs``; return its per-epoch history."""
    if epochs == 0:
        return []
    settings = FitSettings(epochs=epochs, batch_size=params.batch_size, lr=lr,
                           seed=params.seed, checkpoint_every=epochs, device=params.device)
    state = fit(model, objective, TensorDataset(*tensors), None, settings,
                params={"phase": phase, **to_dict(params)}, callbacks=callbacks)
    log.info("%s: %d epochs, last surrogate/loss %.4g", phase, epochs,
             state.history[-1]["train/loss"])
    return state.history


def _fit_pair(pair: LayerPair, lower: torch.Tensor | None, upper: torch.Tensor | None,
              params: TrainGgdrmParams, phase: str) -> LayerPair:
    observed = [t for t in (lower, upper) if t is not None]

    def objective(model: nn.Module, batch: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        if lower is not None and upper is not None:
            return contrastive_divergence(model, batch[0], batch[1])
        return (contrastive_divergence(model, batch[0], None) if lower is not None
                else contrastive_divergence(model, None, batch[0]))

    _train(pair, objective, observed, params.pretrain_epochs, params.pretrain_lr, params, phase)
    return pair.cpu()


def pretrain(x: torch.Tensor, y: torch.Tensor, params: TrainGgdrmParams) -> GGDRM:
    """Return the GGDRM composed of greedily pre-trained layer pairs (:mod:`~pipeline.ggdrm.rbm`).

    ``x`` ``(n, X)`` and ``y`` ``(n, Y)`` are standardised training frames, row-aligned.
    With one hidden layer the model is itself an RBM and is trained by CD-1 whole.
    """
    _seed(params, "pretrain")
    hidden = params.hidden
    model = GGDRM(x.shape[1], y.shape[1], hidden)
    if len(hidden) == 1:
        cd = PersistentContrast(None, 1, params.mean_field_steps)
        _train(model, cd, [x, y], params.pretrain_epochs, params.pretrain_lr, params, "pretrain")
        return model.cpu()
    image_side = _fit_pair(LayerPair(x.shape[1], hidden[0], True, False), x, None, params,
                           "pretrain x-h1")
    stack = [image_side]
    below = image_side.mean(1, x).detach()
    for layer in range(1, len(hidden) - 1):
        pair = _fit_pair(LayerPair(hidden[layer - 1], hidden[layer], False, False), below, None,
                         params, f"pretrain h{layer}-h{layer + 1}")
        stack.append(pair)
        below = pair.mean(1, below).detach()
    speech_side = _fit_pair(LayerPair(hidden[-1], y.shape[1], False, True), None, y, params,
                            f"pretrain h{len(hidden)}-y")
    above = speech_side.mean(0, y).detach()
    junction = _fit_pair(LayerPair(hidden[-2], hidden[-1], False, False), below, above, params,
                         "pretrain junction")
    _compose(model, stack, junction, speech_side)
    return model


@torch.no_grad()
def _compose(model: GGDRM, stack: list[LayerPair], junction: LayerPair,
             speech_side: LayerPair) -> None:
    """Copy the pre-trained pairs' parameters into ``model``."""
    image_side = stack[0]
    model.x_bias.copy_(image_side.biases[0])
    model.x_log_var.copy_(image_side.log_vars[0])
    for layer, pair in enumerate(stack):
        model.weights[layer].copy_(pair.weight)
        model.hidden_bias[layer].copy_(pair.biases[1])
    model.weights[-2].copy_(junction.weight)
    model.weights[-1].copy_(speech_side.weight)
    model.hidden_bias[-1].copy_(speech_side.biases[0])
    # Product of the experts: the junction's biases add to the layers' own.
    model.hidden_bias[-2].add_(junction.biases[0])
    model.hidden_bias[-1].add_(junction.biases[1])
    model.y_bias.copy_(speech_side.biases[1])
    model.y_log_var.copy_(speech_side.log_vars[1])


class PersistentContrast:
    """The (persistent) contrastive-divergence objective of a whole GGDRM.

    Positive phase: mean-field posterior with ``x`` and ``y`` clamped. Negative phase:
    ``chains`` (``[x, h_1 .. h_L, y]`` states) advanced by ``gibbs_steps`` block-Gibbs sweeps
    per call and kept between calls (PCD); with ``chains`` None they restart from the batch's
    positive phase every call (CD).
    """

    def __init__(self, chains: Units | None, gibbs_steps: int, mean_field_steps: int) -> None:
        self.chains = chains
        self.persistent = chains is not None
        self.gibbs_steps = gibbs_steps
        self.mean_field_steps = mean_field_steps

    def __call__(self, model: nn.Module, batch: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        """Return ``{"loss": E(data, q) - E(chains)}`` (batch means) and advance the chains."""
        x, y = batch
        positive = model.mean_field(x, y, self.mean_field_steps)
        if self.persistent:
            chains = [state.to(x.device) for state in self.chains]
        else:
            chains = [positive[0], *(torch.bernoulli(h) for h in positive[1:-1]), positive[-1]]
        for _ in range(self.gibbs_steps):
            chains = model.gibbs_sweep(chains)
        self.chains = chains if self.persistent else None
        return {"loss": model.energy(positive).mean() - model.energy(chains).mean()}


def finetune(model: GGDRM, x: torch.Tensor, y: torch.Tensor, params: TrainGgdrmParams) -> GGDRM:
    """Return ``model`` fine-tuned by maximum likelihood (PCD) on the standardised frames.

    The persistent chains start from ``params.chains`` random training frames with their
    hidden layers sampled from the mean-field posterior.
    """
    _seed(params, "finetune")
    start = torch.randint(len(x), (params.chains,))
    positive = model.mean_field(x[start], y[start], params.mean_field_steps)
    chains = [positive[0], *(torch.bernoulli(h) for h in positive[1:-1]), positive[-1]]
    objective = PersistentContrast(chains, params.gibbs_steps, params.mean_field_steps)
    _train(model, objective, [x, y], params.finetune_epochs, params.finetune_lr, params,
           "finetune", [LinearDecay(params.finetune_lr, params.finetune_epochs)])
    return model.cpu()


def feedforward(in_dim: int, out_dim: int, hidden: Sequence[int]) -> nn.Sequential:
    """Return the DNN baseline: the GGDRM's layer widths, sigmoid hidden units, linear output."""
    layers: list[nn.Module] = []
    width = in_dim
    for units in hidden:
        layers += [nn.Linear(width, units), nn.Sigmoid()]
        width = units
    return nn.Sequential(*layers, nn.Linear(width, out_dim))


def _mse(model: nn.Module, batch: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    return {"loss": F.mse_loss(model(batch[0]), batch[1])}


def train_dnn(inputs: torch.Tensor, targets: torch.Tensor, params: TrainGgdrmParams,
              phase: str) -> nn.Sequential:
    """Return a feed-forward baseline trained from random initialisation (MSE, backprop).

    ``phase`` is ``dnn_speech_to_lips`` or ``dnn_lips_to_speech`` (it seeds the run).
    """
    _seed(params, phase)
    hidden = params.hidden if phase == "dnn_lips_to_speech" else tuple(reversed(params.hidden))
    model = feedforward(inputs.shape[1], targets.shape[1], hidden)
    _train(model, _mse, [inputs, targets], params.dnn_epochs, params.dnn_lr, params, phase)
    return model.cpu().eval()


def fit_ridge(inputs: torch.Tensor, targets: torch.Tensor, alpha: float) -> Ridge:
    """Return the linear baseline: ridge regression between standardised features."""
    return Ridge(alpha=alpha).fit(inputs.numpy(), targets.numpy())
