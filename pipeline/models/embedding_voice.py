"""Voice models from the pretrained speaker embedding (004: voice -> embedding -> MLP -> face).

004's route: a speaker embedding trained on thousands of speakers (the ``embed`` stage's,
:mod:`pipeline.embed.encoder`), then a small model to the face side. Here that model maps
the clip's 256-d embedding to the face model's *voice target* (the VAE's conv features),
exactly the target the DeepTalk-style encoder is trained on, so both plug into the same
voice -> face path and the same results table:

- ``embedding_mlp`` (004's MLP): ``Linear -> ReLU -> Dropout`` per hidden layer, then a
  linear output; trained with MSE by the shared ``fit`` loop.
- ``ridge``: the same module with no hidden layer, solved in closed form (scikit-learn's
  ``Ridge``): the simplest baseline from the embedding.

They read the embedding, not the waveform: :attr:`EmbeddingRegressor.uses_embedding`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pipeline.config import TrainVoiceParams

MLP_KIND = "EmbeddingMLP"
RIDGE_KIND = "EmbeddingRidge"


@dataclass(frozen=True)
class EmbeddingRegressorConfig:
    """Shape of an :class:`EmbeddingRegressor`; saved with the weights."""

    in_dim: int = 256
    """Width of the speaker embedding."""
    out_dim: int = 256
    """Width of the face model's voice target."""
    hidden: tuple[int, ...] = ()
    """Widths of the hidden layers (empty: a linear map, the ridge)."""
    dropout: float = 0.0
    """Dropout after each hidden layer while training."""

    def to_dict(self) -> dict[str, Any]:
        """Return the config as plain data."""
        return {**dataclasses.asdict(self), "hidden": list(self.hidden)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EmbeddingRegressorConfig:
        """Return the config saved by :meth:`to_dict`."""
        return cls(**{**data, "hidden": tuple(data["hidden"])})


class EmbeddingRegressor(nn.Module):
    """Speaker embedding ``(B, in_dim)`` -> voice target ``(B, out_dim)``: MLP or linear map."""

    def __init__(self, config: EmbeddingRegressorConfig) -> None:
        super().__init__()
        self.config = config
        layers: list[nn.Module] = []
        width = config.in_dim
        for hidden in config.hidden:  # 004: embedding -> MLP
            layers += [nn.Linear(width, hidden), nn.ReLU(), nn.Dropout(config.dropout)]
            width = hidden
        self.hidden = nn.Sequential(*layers)
        self.output = nn.Linear(width, config.out_dim)

    @property
    def target_dim(self) -> int:
        """Return the width of the voice target it predicts."""
        return self.config.out_dim

    @property
    def uses_embedding(self) -> bool:
        """Return True: it reads the speaker embedding, not the waveform."""
        return True

    @property
    def output_projection(self) -> nn.Linear:
        """Return the last affine layer (its rows scale and shift the output)."""
        return self.output

    def voice_target(
        self, waves: torch.Tensor | None, embeddings: torch.Tensor | None
    ) -> torch.Tensor:
        """Return predicted voice targets ``(B, out_dim)`` of embeddings ``(B, in_dim)``."""
        if embeddings is None:
            raise ValueError("this voice model reads the speaker embedding (embed stage); "
                             "none was given")
        return self(embeddings)

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Return ``(B, out_dim)`` of embeddings ``(B, in_dim)``."""
        return self.output(self.hidden(embeddings))


def build_embedding_mlp(params: TrainVoiceParams, target_dim: int) -> EmbeddingRegressor:
    """Return a new ``embedding_mlp`` with ``params.embedding_mlp``'s hidden widths."""
    mlp = params.embedding_mlp
    return EmbeddingRegressor(EmbeddingRegressorConfig(
        out_dim=target_dim, hidden=mlp.hidden, dropout=mlp.dropout))


def build_ridge(params: TrainVoiceParams, target_dim: int) -> EmbeddingRegressor:
    """Return a new linear map (the ridge), to be solved by :func:`solve_ridge`."""
    return EmbeddingRegressor(EmbeddingRegressorConfig(out_dim=target_dim))


@torch.no_grad()
def solve_ridge(
    model: EmbeddingRegressor, embeddings: torch.Tensor, targets: torch.Tensor, alpha: float
) -> EmbeddingRegressor:
    """Return ``model`` (linear) set in place to the ridge solution of ``targets ~ embeddings``.

    scikit-learn's ``Ridge`` (L2 weight ``alpha``, unpenalised intercept).
    """
    from sklearn.linear_model import Ridge

    if model.config.hidden:
        raise ValueError("a ridge is solved into a model without hidden layers")
    fitted = Ridge(alpha=alpha).fit(embeddings.double().numpy(), targets.double().numpy())
    model.output.weight.copy_(torch.from_numpy(fitted.coef_))
    model.output.bias.copy_(torch.from_numpy(fitted.intercept_))
    return model


def regressor_from_payload(
    payload: Mapping[str, Any], path: str | Path, map_location: str | torch.device = "cpu"
) -> EmbeddingRegressor:
    """Return the :class:`EmbeddingRegressor` of a model file's payload, in eval mode."""
    model = EmbeddingRegressor(EmbeddingRegressorConfig.from_dict(payload["config"]))
    model.load_state_dict(payload["state_dict"])
    return model.to(map_location).eval()
