"""Paper 002's face model: identity and expression latents from two encoders, one decoder.

Kanou & Nagao (002 sections 3-4): an **IdentityEncoder** ``q(z_i | x)`` and an
**ExpressionEncoder** ``q(z_e | x)`` share one **Decoder** ``p(x | z_i ⊕ z_e)``; a
**Discriminator** judges real faces against decoded ones (the adversarial loss, 4.1.1). The
training (:mod:`pipeline.training.disentangle`) uses only speaker ids, never emotion labels.

Layers follow 002 Tables 1 and 2 with grayscale faces (1 channel instead of 3):

- an encoder is pairs of 3x3 convs, the first of each pair stride 2 (halving the side), the
  second stride 1, at ``channels`` (002: 32-64-128-256), plus pairs at the last width until
  the side is ``bottom_size`` (002: 4; at 128 px that is Table 1's extra conv5 pair); then
  average pooling to ``(B, C, 1, 1)``, and fully connected ``mu`` and ``logvar`` of
  ``latent_dim`` each (002: 64);
- the decoder maps ``z_i ⊕ z_e`` through a fully connected layer to ``(C, 4, 4)`` and
  doubles the side with one upsampling pair per encoder pair: a transposed conv (4x4 for the
  first two pairs, 3x3 after, Table 2) then a 3x3 conv, halving the width each time
  (002: 128-64-32-16, plus 8 at 128 px), and a last 3x3 conv to the image, sigmoid to [0, 1];
- the discriminator is the encoder's body with one output (002 section 5.1).

Table 1 prints the pooling as "4x4, stride 1, pad 1", which would leave 3x3, not its listed
256x1x1 output: we pool globally, which gives the listed output. The tables name no
activations: LeakyReLU(0.2) after every conv and the decoder's first layer; He
initialisation as 5.1 says.

:class:`DisentangledFaceModel` is the model as the stages use it (a
:class:`~pipeline.models.registry.FaceModel`): its voice target is the identity latent's
``mu`` (``z_i``), and its latent is ``z_i ⊕ z_e`` with ``z_e`` the training faces' mean
expression latent of the wanted emotion (zero, the prior's mean, when it takes no emotion).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pipeline.models.files import ModelFileError, load_model_payload, save_model_file

MODEL_KIND = "DisentangledFace"
_SLOPE = 0.2


@dataclass(frozen=True)
class DisentangledConfig:
    """Architecture of a :class:`DisentangledVAE`; saved with the weights."""

    image_size: int = 64
    """Side S of the square grayscale faces (002: 64 or 128)."""
    latent_dim: int = 64
    """Size of each of ``z_i`` and ``z_e`` (002: 64); the decoder takes twice this."""
    channels: tuple[int, ...] = (32, 64, 128, 256)
    """Widths of the encoder's conv pairs (002 Table 1); more pairs at the last width follow
    until the side is ``bottom_size``."""
    bottom_size: int = 4
    """Side of the encoder's last feature map and the decoder's first (002: 4)."""

    def __post_init__(self) -> None:
        if not self.channels or min(self.channels) < 1:
            raise ValueError(f"channels must be positive widths, got {self.channels}")
        pairs = math.log2(self.image_size / self.bottom_size)
        if pairs != int(pairs) or pairs < len(self.channels):
            raise ValueError(
                f"image_size {self.image_size} must be bottom_size {self.bottom_size} times 2^n "
                f"with n >= {len(self.channels)} conv pairs (002 Tables 1-2: 64 or 128 px)")

    @property
    def encoder_widths(self) -> tuple[int, ...]:
        """Return the width of every stride-2 conv pair (the last one repeated, Table 1 conv5)."""
        pairs = int(math.log2(self.image_size / self.bottom_size))
        return (*self.channels, *[self.channels[-1]] * (pairs - len(self.channels)))

    @property
    def decoder_widths(self) -> tuple[int, ...]:
        """Return the width of every upsampling pair: halving from the encoder's top width."""
        top = self.encoder_widths[-1]
        return tuple(max(1, top >> (i + 1)) for i in range(len(self.encoder_widths)))

    def to_dict(self) -> dict[str, Any]:
        """Return the config as plain data (loadable with ``weights_only=True``)."""
        return {**dataclasses.asdict(self), "channels": list(self.channels)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DisentangledConfig:
        """Return the config saved by :meth:`to_dict`."""
        return cls(**{**data, "channels": tuple(data["channels"])})


def _conv(c_in: int, c_out: int, stride: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, stride, 1), nn.LeakyReLU(_SLOPE)]


class EncoderBody(nn.Module):
    """002 Table 1 up to the pooling: ``(B, 1, S, S) -> (B, C)``."""

    def __init__(self, config: DisentangledConfig) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for c_in, c_out in itertools.pairwise((1, *config.encoder_widths)):
            layers += _conv(c_in, c_out, 2) + _conv(c_out, c_out, 1)  # convN.1, convN.2
        self.convs = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)  # Table 1 "average pooling": (C, 4, 4) -> (C, 1, 1)
        self.width = config.encoder_widths[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return pooled features ``(B, C)`` of faces ``(B, 1, S, S)``."""
        return self.pool(self.convs(x)).flatten(1)


class GaussianEncoder(nn.Module):
    """An encoder of 002 Table 1: the body, then fc ``mu`` and fc ``sigma`` (as a log-variance)."""

    def __init__(self, config: DisentangledConfig) -> None:
        super().__init__()
        self.body = EncoderBody(config)
        self.to_mu = nn.Linear(self.body.width, config.latent_dim)
        self.to_logvar = nn.Linear(self.body.width, config.latent_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(mu, logvar)``, each ``(B, latent_dim)``, of faces ``(B, 1, S, S)``."""
        h = self.body(x)
        return self.to_mu(h), self.to_logvar(h)


class IdentityEncoder(GaussianEncoder):
    """``q(z_i | x; phi_i)``: what stays the same across a speaker's faces (002 section 3)."""


class ExpressionEncoder(GaussianEncoder):
    """``q(z_e | x; phi_e)``: what ``z_i`` lacks to rebuild a face, its expression (002 sec. 3)."""


class Decoder(nn.Module):
    """002 Table 2: ``z_i ⊕ z_e (B, 2 latent_dim) -> (B, 1, S, S)`` in [0, 1].

    ``code_dim`` more inputs take a condition appended to the latent (the C-VAE baseline).
    """

    def __init__(self, config: DisentangledConfig, code_dim: int = 0) -> None:
        super().__init__()
        top = config.encoder_widths[-1]
        self._bottom = (top, config.bottom_size, config.bottom_size)
        self.fc = nn.Linear(2 * config.latent_dim + code_dim,
                            top * config.bottom_size**2)  # fc1, then reshape
        layers: list[nn.Module] = []
        for i, (c_in, c_out) in enumerate(itertools.pairwise((top, *config.decoder_widths))):
            # deconvN.1 doubles the side: 4x4 pad 1 (N = 1, 2), 3x3 pad 1 + output_padding 1
            kernel, extra = (4, 0) if i < 2 else (3, 1)
            layers += [nn.ConvTranspose2d(c_in, c_out, kernel, 2, 1, extra), nn.LeakyReLU(_SLOPE)]
            layers += _conv(c_out, c_out, 1)  # convN.2
        layers.append(nn.Conv2d(config.decoder_widths[-1], 1, 3, 1, 1))  # conv6
        self.layers = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Return faces ``(B, 1, S, S)`` in [0, 1] of latents ``z_i ⊕ z_e`` ``(B, 2D + code)``."""
        h = nn.functional.leaky_relu(self.fc(z), _SLOPE).view(len(z), *self._bottom)
        return torch.sigmoid(self.layers(h))


class Discriminator(nn.Module):
    """002 section 5.1: the encoder's structure with a single output, a real-vs-decoded logit."""

    def __init__(self, config: DisentangledConfig) -> None:
        super().__init__()
        self.body = EncoderBody(config)
        self.out = nn.Linear(self.body.width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return logits ``(B,)`` that faces ``(B, 1, S, S)`` are real."""
        return self.out(self.body(x)).squeeze(1)


class DisentangledVAE(nn.Module):
    """The four networks of 002 Fig. 2 (a) in one module (one state dict, one file)."""

    def __init__(self, config: DisentangledConfig) -> None:
        super().__init__()
        self.config = config
        self.identity = IdentityEncoder(config)
        self.expression = ExpressionEncoder(config)
        self.decoder = Decoder(config)
        self.discriminator = Discriminator(config)
        self.apply(_he_init)

    def decode(self, z_i: torch.Tensor, z_e: torch.Tensor) -> torch.Tensor:
        """Return faces ``(B, 1, S, S)`` of identity and expression latents, each ``(B, D)``."""
        return self.decoder(torch.cat([z_i, z_e], dim=1))

    def generator_parameters(self) -> list[nn.Parameter]:
        """Return the parameters of the encoders and the decoder (002's generator G)."""
        return [p for name, p in self.named_parameters() if not name.startswith("discriminator.")]

    @staticmethod
    def reparameterise(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        """Return a sample ``z = mu + eps * sigma``, ``eps ~ N(0, I)``."""
        return reparameterise(mu, logvar)


def reparameterise(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Return a sample ``z = mu + eps * sigma``, ``eps ~ N(0, I)`` (the reparameterisation)."""
    return mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)


class BaselineVAE(nn.Module):
    """002 Table 3's comparison VAEs on the same layers: one encoder, one ``z`` of 2 latent_dim.

    With ``code_dim`` > 0 it is the C-VAE (Kingma et al. 2014, 002 [26]): the condition (a
    speaker's one-hot) is appended to the pooled features before ``mu`` / ``sigma`` and to
    ``z`` at the decoder's input; with 0, the original (unconditional) VAE.
    """

    def __init__(self, config: DisentangledConfig, code_dim: int = 0) -> None:
        super().__init__()
        self.config = BaselineConfig(config, code_dim)
        self.body = EncoderBody(config)
        self.to_mu = nn.Linear(self.body.width + code_dim, 2 * config.latent_dim)
        self.to_logvar = nn.Linear(self.body.width + code_dim, 2 * config.latent_dim)
        self.decoder = Decoder(config, code_dim)
        self.apply(_he_init)

    def encode(
        self, x: torch.Tensor, code: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(mu, logvar)`` ``(B, 2 latent_dim)`` of faces and their codes ``(B, code)``."""
        h = self.body(x)
        if code is not None:
            h = torch.cat([h, code.to(h.dtype)], dim=1)
        return self.to_mu(h), self.to_logvar(h)

    def decode(self, z: torch.Tensor, code: torch.Tensor | None = None) -> torch.Tensor:
        """Return faces ``(B, 1, S, S)`` of ``z`` and the codes ``(B, code)``."""
        return self.decoder(z if code is None else torch.cat([z, code.to(z.dtype)], dim=1))

    @staticmethod
    def reparameterise(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        """Return a sample ``z = mu + eps * sigma``, ``eps ~ N(0, I)``."""
        return reparameterise(mu, logvar)


@dataclass(frozen=True)
class BaselineConfig:
    """Architecture of a :class:`BaselineVAE`: the shared layers and the condition's width."""

    layers: DisentangledConfig
    """The encoder / decoder layers (those of the model it is compared with)."""
    code_dim: int = 0
    """Width of the condition (0: the unconditional VAE)."""

    def to_dict(self) -> dict[str, Any]:
        """Return the config as plain data."""
        return {"layers": self.layers.to_dict(), "code_dim": self.code_dim}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BaselineConfig:
        """Return the config saved by :meth:`to_dict`."""
        return cls(DisentangledConfig.from_dict(data["layers"]), int(data["code_dim"]))


def _he_init(module: nn.Module) -> None:
    """He initialisation (002 section 5.1, [23]) of convs and linear layers, zero biases."""
    if isinstance(module, nn.Conv2d | nn.ConvTranspose2d | nn.Linear):
        nn.init.kaiming_normal_(module.weight, a=_SLOPE, nonlinearity="leaky_relu")
        nn.init.zeros_(module.bias)


def save_model(
    path: str | Path, model: DisentangledVAE, provenance: Mapping[str, Any]
) -> Path:
    """Return ``path`` after writing the model with ``provenance`` (plain data) atomically.

    ``provenance["emotions"]`` and ``provenance["expression_means"]`` (one ``latent_dim``
    list per emotion) give :class:`DisentangledFaceModel` its emotions.
    """
    return save_model_file(path, MODEL_KIND, model, provenance)


@dataclass(frozen=True)
class DisentangledFaceModel:
    """The 002 model as a :class:`~pipeline.models.registry.FaceModel` (frozen, no gradients).

    Voice target: ``mu`` of ``q(z_i | x)``, identity alone (the voice predicts who speaks).
    Latent: ``z_i ⊕ z_e`` where ``z_e`` is :attr:`expression_means` row of the emotion, or
    zero (the prior's mean: 002's "most average expression") without emotion labels.
    """

    model: DisentangledVAE
    """The trained networks (eval mode)."""
    emotions: tuple[str, ...]
    """Emotion names in label order (the dataset's); empty without emotion labels."""
    expression_means: torch.Tensor
    """``(len(emotions), latent_dim)``: the mean ``z_e`` (mu) of the training faces of each."""

    @property
    def image_size(self) -> int:
        """Return the side S of the square grayscale faces the model takes and makes."""
        return self.model.config.image_size

    @property
    def target_dim(self) -> int:
        """Return the width of the voice target, ``z_i``."""
        return self.model.config.latent_dim

    @torch.no_grad()
    def voice_target(self, faces: torch.Tensor) -> torch.Tensor:
        """Return ``z_i`` (mu) ``(B, latent_dim)`` of faces ``(B, 1, S, S)``."""
        return self.model.identity(faces)[0]

    @torch.no_grad()
    def latents(self, targets: torch.Tensor, emotion: torch.Tensor | None) -> torch.Tensor:
        """Return ``z_i ⊕ z_e`` ``(B, 2 latent_dim)`` of ``z_i`` ``(B, D)`` and labels ``(B,)``."""
        return torch.cat([targets, self.expression(emotion, len(targets))], dim=1)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, emotion: torch.Tensor | None) -> torch.Tensor:
        """Return faces ``(B, 1, S, S)`` of latents ``z_i ⊕ z_e`` (the emotion is in ``z_e``)."""
        return self.model.decoder(latents)

    def expression(self, emotion: torch.Tensor | None, n: int) -> torch.Tensor:
        """Return ``z_e`` ``(n, latent_dim)``: each label's mean, or zeros without emotions."""
        if not self.emotions:
            if emotion is not None:
                raise ValueError("this model was trained without emotion labels: it takes none")
            return torch.zeros(n, self.target_dim)
        if emotion is None:
            raise ValueError(f"this model needs an emotion (one of {', '.join(self.emotions)})")
        return self.expression_means.to(emotion.device)[emotion]


def face_model_from_payload(
    payload: Mapping[str, Any], path: str | Path, map_location: str | torch.device = "cpu"
) -> DisentangledFaceModel:
    """Return the :class:`DisentangledFaceModel` of a model file's payload.

    Raises:
        ModelFileError: naming ``path`` when its emotions and expression means do not match.
    """
    config = DisentangledConfig.from_dict(payload["config"])
    model = DisentangledVAE(config)
    model.load_state_dict(payload["state_dict"])
    provenance = payload.get("provenance", {})
    emotions = tuple(provenance.get("emotions", ()))
    means = torch.tensor(provenance.get("expression_means", []), dtype=torch.float32)
    if means.numel() != len(emotions) * config.latent_dim:
        raise ModelFileError(f"{path}: expression_means {list(means.shape)} do not match "
                             f"{len(emotions)} emotions x latent_dim {config.latent_dim}")
    means = means.reshape(len(emotions), config.latent_dim)
    return DisentangledFaceModel(model.to(map_location).eval(), emotions,
                                 means.to(map_location))


def expression_means(
    z_e: torch.Tensor, emotion: torch.Tensor, n_emotions: int
) -> torch.Tensor:
    """Return ``(n_emotions, D)``: the mean of ``z_e`` ``(N, D)`` over each label of ``(N,)``.

    Raises ``ValueError`` naming an emotion no face carries (its mean would be undefined).
    """
    counts = torch.bincount(emotion, minlength=n_emotions)
    if (counts == 0).any():
        raise ValueError(f"no training face of emotion label(s) "
                         f"{torch.nonzero(counts == 0).flatten().tolist()}")
    sums = torch.zeros(n_emotions, z_e.shape[1], dtype=z_e.dtype).index_add_(0, emotion, z_e)
    return sums / counts[:, None].to(z_e.dtype)



def load_disentangled(
    path: str | Path, map_location: str | torch.device = "cpu"
) -> DisentangledVAE:
    """Return the networks of a 002 model file (eval mode)."""
    payload = load_model_payload(path, MODEL_KIND, map_location)
    return face_model_from_payload(payload, path, map_location).model
