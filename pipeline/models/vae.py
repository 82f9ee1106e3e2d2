"""The face VAE, optionally conditioned on an emotion code (003 sections 2.2, 3.2, 3.4).

Encoder: strided convs ``(B, 1, S, S) -> (B, C, s, s)``, flattened, a linear layer to the
``feature_dim`` conv features (the voice encoder's regression target, 003 section 3.3).
Posterior: ``[features, emotion code] -> (mu, logvar)`` (003 section 3.4: the code is appended
to the conv features before mu / sigma). Decoder: ``[z, emotion code]`` (when ``decoder_code``)
-> linear to ``(B, C, s, s)`` and transposed convs mirroring the encoder back to
``(B, 1, S, S)``, sigmoid to [0, 1].

003 conditions only the encoder. Then the encoder can ignore the code (the image already
shows the expression) and re-encoding a face with another label changes little. The
standard CVAE (Sohn et al. 2015, p(x | z, y)) also feeds the label to the decoder; with the
KL term pricing expression information in z, the decoder takes the expression from the free
code, so swapping the label moves the mouth (003 Fig. 7).

Without emotion labels (000's setting, ``conditional=False``, code width 0) the posterior
sees the conv features alone and the decoder z alone.

:class:`VaeFaceModel` is the VAE as the stages use it, a
:class:`~pipeline.models.registry.FaceModel`: its voice target is the conv features, its
latent the posterior's ``mu`` with the emotion code.

Every shape comes from :class:`VaeConfig`: the encoder's spatial sizes are computed, and
the decoder's ``output_padding`` makes each transposed conv hit the encoder's size exactly,
so 64x64 (003) and 150x150 (000) inputs both work.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.models.emotion_code import code_string, emotion_codes
from pipeline.models.files import ModelFileError, load_model_payload, save_model_file

MODEL_KIND = "FaceVAE"

_KERNEL, _STRIDE, _PAD = 4, 2, 1


@dataclass(frozen=True)
class VaeConfig:
    """Architecture of a :class:`FaceVAE`; saved with the weights."""

    image_size: int = 64
    """Side S of the square grayscale input (003: 64; 000: 150)."""
    feature_dim: int = 256
    """Width of the encoder's conv features (003: 256, the voice encoder's output)."""
    latent_dim: int = 256
    """Size of z."""
    code_dim: int = 8
    """Width of the emotion code (003: 8); ignored when not conditional (0: no emotion code)."""
    conditional: bool = True
    """Append the emotion code to the features before mu / log-variance."""
    decoder_code: bool = True
    """Also append the code to z at the decoder's input (CVAE); ignored when not conditional."""
    channels: tuple[int, ...] = (32, 64, 128, 256)
    """Output channels of the strided encoder convs (the decoder mirrors them)."""

    def __post_init__(self) -> None:
        if not self.channels:
            raise ValueError("VaeConfig.channels must not be empty")
        if self.code_dim < 0 or (self.conditional and self.code_dim < 1):
            raise ValueError(f"VaeConfig.code_dim {self.code_dim}: a conditional VAE needs an "
                             "emotion code of width >= 1 (width 0: conditional=False)")
        if encoder_sizes(self.image_size, len(self.channels))[-1] < 1:
            raise ValueError(
                f"image_size {self.image_size} is too small for {len(self.channels)} "
                "stride-2 convs"
            )

    @property
    def posterior_in(self) -> int:
        """Width of the posterior's input: features plus code when conditional."""
        return self.feature_dim + (self.code_dim if self.conditional else 0)

    @property
    def decodes_code(self) -> bool:
        """Whether the decoder takes the emotion code (conditional and ``decoder_code``)."""
        return self.conditional and self.decoder_code

    @property
    def decoder_in(self) -> int:
        """Width of the decoder's input: z plus code when :attr:`decodes_code`."""
        return self.latent_dim + (self.code_dim if self.decodes_code else 0)

    def to_dict(self) -> dict[str, Any]:
        """Return the config as plain data (loadable with ``weights_only=True``)."""
        data = dataclasses.asdict(self)
        data["channels"] = list(self.channels)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> VaeConfig:
        """Return the config saved by :meth:`to_dict`.

        Files saved before ``decoder_code`` existed had an encoder-only code: they load with
        ``decoder_code=False``.
        """
        return cls(**{"decoder_code": False, **data, "channels": tuple(data["channels"])})


def encoder_sizes(image_size: int, n_layers: int) -> list[int]:
    """Return the spatial side after 0..n stride-2 convs, e.g. 150 -> [150, 75, 37, 18, 9]."""
    sizes = [image_size]
    for _ in range(n_layers):
        sizes.append((sizes[-1] + 2 * _PAD - _KERNEL) // _STRIDE + 1)
    return sizes


class FaceVAE(nn.Module):
    """Convolutional VAE for grayscale faces ``(B, 1, S, S)`` (003 section 3.2)."""

    def __init__(self, config: VaeConfig) -> None:
        super().__init__()
        self.config = config
        sizes = encoder_sizes(config.image_size, len(config.channels))
        widths = (1, *config.channels)
        self._bottom = (config.channels[-1], sizes[-1], sizes[-1])
        flat = config.channels[-1] * sizes[-1] ** 2

        convs: list[nn.Module] = []
        for c_in, c_out in itertools.pairwise(widths):
            convs += [nn.Conv2d(c_in, c_out, _KERNEL, _STRIDE, _PAD), nn.LeakyReLU(0.2)]
        self.encoder = nn.Sequential(*convs, nn.Flatten(), nn.Linear(flat, config.feature_dim),
                                     nn.LeakyReLU(0.2))
        # 003 section 3.4: mu and sigma are computed from [conv features, emotion code].
        self.to_mu = nn.Linear(config.posterior_in, config.latent_dim)
        self.to_logvar = nn.Linear(config.posterior_in, config.latent_dim)

        # CVAE decoder p(x | z, y) (Sohn et al. 2015): [z, code] when decodes_code.
        self.from_latent = nn.Linear(config.decoder_in, flat)
        deconvs: list[nn.Module] = []
        reversed_widths = widths[::-1]  # (C_last, ..., 32, 1)
        for i, (c_in, c_out) in enumerate(itertools.pairwise(reversed_widths)):
            n_in, target = sizes[-1 - i], sizes[-2 - i]
            # (n-1)*stride - 2*pad + kernel = 2n; output_padding adds the odd pixel back
            padding = target - ((n_in - 1) * _STRIDE - 2 * _PAD + _KERNEL)
            deconvs.append(nn.ConvTranspose2d(c_in, c_out, _KERNEL, _STRIDE, _PAD, padding))
            if c_out != 1:
                deconvs.append(nn.LeakyReLU(0.2))
        self.decoder = nn.Sequential(*deconvs)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Return the encoder's conv features ``(B, feature_dim)`` of faces ``(B, 1, S, S)``."""
        return self.encoder(x)

    def posterior(
        self, h: torch.Tensor, code: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(mu, logvar)``, each ``(B, latent_dim)``, of features ``h`` and ``code``.

        ``code`` ``(B, code_dim)`` is required when the model is conditional, else ignored.
        """
        if self.config.conditional:
            if code is None:
                raise ValueError("a conditional FaceVAE needs an emotion code")
            h = torch.cat([h, code.to(h.dtype)], dim=1)  # 003 section 3.4
        return self.to_mu(h), self.to_logvar(h)

    @staticmethod
    def reparameterise(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        """Return a sample ``z = mu + eps * sigma``, ``eps ~ N(0, I)`` (003 eq. 1-2)."""
        return mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)

    def decode(self, z: torch.Tensor, code: torch.Tensor | None = None) -> torch.Tensor:
        """Return faces ``(B, 1, S, S)`` in [0, 1] decoded from latents ``(B, latent_dim)``.

        ``code`` ``(B, code_dim)`` is required when the model's decoder takes the emotion code
        (``config.decodes_code``), else ignored.
        """
        if self.config.decodes_code:
            if code is None:
                raise ValueError("this FaceVAE decodes with the emotion code "
                                 "(decoder_code=True): call decode(z, code)")
            z = torch.cat([z, code.to(z.dtype)], dim=1)  # CVAE decoder input
        h = self.from_latent(z).view(z.shape[0], *self._bottom)
        return torch.sigmoid(self.decoder(F.leaky_relu(h, 0.2)))

    def forward(
        self, x: torch.Tensor, code: torch.Tensor | None = None, sample: bool | None = None
    ) -> dict[str, torch.Tensor]:
        """Return ``recon``, ``mu``, ``logvar``, ``z`` and ``features`` of faces ``x``.

        ``z`` is sampled when ``sample`` (default: in training mode) and is ``mu`` otherwise,
        so evaluation and image grids are deterministic.
        """
        h = self.features(x)
        mu, logvar = self.posterior(h, code)
        sample = self.training if sample is None else sample
        z = self.reparameterise(mu, logvar) if sample else mu
        return {"recon": self.decode(z, code), "mu": mu, "logvar": logvar, "z": z, "features": h}


def vae_loss(
    out: Mapping[str, torch.Tensor], x: torch.Tensor, beta: float
) -> dict[str, torch.Tensor]:
    """Return ``{"loss", "recon", "kl", "mse"}`` of a :meth:`FaceVAE.forward` output.

    003 eq. 3 with the log-likelihood replaced by the squared error (003 section 2.2):
    ``recon`` is the squared error *summed over pixels*, averaged over the batch (a Gaussian
    likelihood up to constants, so that ``beta = 1`` is the plain VAE whatever the image
    size); ``kl`` is KL(q(z|x) || N(0, I)) summed over latent dims, averaged over the batch;
    ``loss = recon + beta * kl`` (beta-VAE, 000 section 5). ``mse`` is the per-pixel mean
    squared error, reported for comparison with baselines (not optimised directly).
    """
    recon, mu, logvar = out["recon"], out["mu"], out["logvar"]
    squared = (recon - x).pow(2).flatten(1)
    kl = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(dim=1)
    recon_term = squared.sum(dim=1).mean()
    kl_term = kl.mean()
    return {
        "loss": recon_term + beta * kl_term,
        "recon": recon_term,
        "kl": kl_term,
        "mse": squared.mean().detach(),
    }


def save_model(path: str | Path, model: FaceVAE, provenance: Mapping[str, Any]) -> Path:
    """Return ``path`` after writing the model's config, weights and ``provenance`` atomically.

    ``provenance`` must be plain data (dicts, lists, str, numbers), so the file loads with
    ``torch.load(weights_only=True)``.
    """
    return save_model_file(path, MODEL_KIND, model, provenance)


def load_model_file(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Return the raw payload of a model file (config, state_dict, provenance)."""
    return load_model_payload(path, MODEL_KIND, map_location)


def load_vae(path: str | Path, map_location: str | torch.device = "cpu") -> FaceVAE:
    """Return the :class:`FaceVAE` saved by :func:`save_model`, in eval mode."""
    return vae_from_payload(load_model_file(path, map_location), map_location)


def vae_from_payload(
    payload: Mapping[str, Any], map_location: str | torch.device = "cpu"
) -> FaceVAE:
    """Return the :class:`FaceVAE` of a model file's payload, in eval mode."""
    model = FaceVAE(VaeConfig.from_dict(payload["config"]))
    model.load_state_dict(payload["state_dict"])
    return model.to(map_location).eval()


@dataclass(frozen=True)
class VaeFaceModel:
    """The face VAE as a :class:`~pipeline.models.registry.FaceModel` (frozen, no gradients).

    Voice target: the encoder's conv features (003 section 3.3), the input of the posterior;
    latent: the posterior's ``mu`` of a target with the emotion's code (003 section 3.4).
    """

    vae: FaceVAE
    """The trained VAE (eval mode)."""
    emotions: tuple[str, ...]
    """Emotion names in label order (the dataset's); empty when the VAE is unconditional."""
    codes: torch.Tensor | None
    """``(len(emotions), code_dim)``: row ``i`` codes ``emotions[i]``; None when unconditional."""

    @property
    def image_size(self) -> int:
        """Return the side S of the square grayscale faces the VAE takes and makes."""
        return self.vae.config.image_size

    @property
    def target_dim(self) -> int:
        """Return the width of the voice target: the conv features."""
        return self.vae.config.feature_dim

    @torch.no_grad()
    def voice_target(self, faces: torch.Tensor) -> torch.Tensor:
        """Return the conv features ``(B, feature_dim)`` of faces ``(B, 1, S, S)``."""
        return self.vae.features(faces)

    @torch.no_grad()
    def latents(self, targets: torch.Tensor, emotion: torch.Tensor | None) -> torch.Tensor:
        """Return ``mu (B, latent_dim)`` of features ``(B, feature_dim)`` and labels ``(B,)``."""
        return self.vae.posterior(targets, self._codes(emotion))[0]

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, emotion: torch.Tensor | None) -> torch.Tensor:
        """Return faces ``(B, 1, S, S)`` in [0, 1] of ``mu (B, latent_dim)`` and labels ``(B,)``."""
        return self.vae.decode(latents, self._codes(emotion))

    def _codes(self, emotion: torch.Tensor | None) -> torch.Tensor | None:
        if self.codes is None:
            if emotion is not None:
                raise ValueError("this VAE is unconditional: it takes no emotion")
            return None
        if emotion is None:
            raise ValueError(f"this VAE needs an emotion (one of {', '.join(self.emotions)})")
        return self.codes.to(emotion.device)[emotion]


def face_model_from_payload(
    payload: Mapping[str, Any], path: str | Path, map_location: str | torch.device = "cpu"
) -> VaeFaceModel:
    """Return the :class:`VaeFaceModel` of a VAE file's payload, with its emotion codes.

    A conditional VAE's provenance names its emotions (the train_vae stage records them with
    their codes). The codes follow from the emotions and the code width
    (:func:`~pipeline.models.emotion_code.emotion_codes`); recorded codes must equal them.

    Raises:
        ModelFileError: naming ``path``, when the emotions are missing or do not fit the code.
    """
    vae = vae_from_payload(payload, map_location)
    if not vae.config.conditional:
        return VaeFaceModel(vae, (), None)
    provenance = payload.get("provenance", {})
    if "emotions" not in provenance:
        raise ModelFileError(f"{path}: the VAE's provenance lacks its emotions; save it with "
                             "the train_vae stage")
    emotions = tuple(provenance["emotions"])
    bits, rest = divmod(vae.config.code_dim, max(len(emotions), 1))
    if rest or bits < 1:
        raise ModelFileError(f"{path}: code width {vae.config.code_dim} does not fit "
                             f"{len(emotions)} emotions")
    codes = emotion_codes(emotions, bits)
    recorded = provenance.get("codes")
    if recorded is not None and list(recorded) != [code_string(c) for c in codes]:
        raise ModelFileError(f"{path}: VAE trained with emotion codes {recorded}, not the codes "
                             f"of {list(emotions)} at {bits} bits per class")
    return VaeFaceModel(vae, emotions, codes.to(map_location))
