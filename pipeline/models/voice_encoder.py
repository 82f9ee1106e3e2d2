"""DeepTalk-style voice encoder (003 section 3.3, Table 1): 8 kHz waveform -> VAE feature space.

Layer by layer, as in 003 Table 1 (which follows DeepTalk, Chowdhury et al. 2021):

1. **Framing** (:func:`frame_waveform`): the waveform is cut into ``frames`` (200) frames of
   ``frame_len`` (160) samples, frame t in column t: ``(B, 1, 160, 200)``, 20 ms frames, 4.0 s.
   Our clips are 3.67 s (29,360 samples at 8 kHz), 2,640 samples short: the clip is *repeated
   from its start* to fill the window (and a longer input is cut at its start). The audio stage
   already builds each clip by tiling its speech to 3.67 s, so repeating it once more only
   continues that tiling: every frame holds speech, with one more seam of the kind the clip
   already has. Zero-padding would put 0.33 s of digital silence (8 % of the frames) into every
   clip - a signal that never occurs in real speech once silences are removed - and cropping to
   183 frames would break the Table 1 shapes.
2. **Learned filterbank**: six Conv2d ``(k x 1)`` with dilation ``(d x 1)`` + SELU, each
   filtering inside a frame only, collapse the 160 samples of a frame to 1 with 40 channels
   (DeepTalk's "DeepVOX" filterbank, a learned analogue of 40 mel bands); a ZeroPad2d before
   the last conv makes its receptive field (51 samples) fit exactly.
3. **Re-arrangement**: ``(B, 40, 1, 200) -> (B, 1, 200, 40)``, a one-channel "spectrogram"
   with time on the height axis and the 40 filters on the width axis. That is the only
   arrangement that gives Table 1's ``100 x 20`` after the first stride-2 conv
   (``(B, 1, 40, 200)`` would give ``20 x 100``), and it is DeepTalk's: its filterbank output
   feeds a Global-Style-Token reference encoder that takes ``(B, 1, T, n_mels)``.
4. **Reference encoder** (GST, Wang et al. 2018): six Conv2d 3x3 stride 2 padding 1 +
   BatchNorm2d (32, 32, 64, 64, 128, 128): ``200 x 40 -> 100x20 -> 50x10 -> 25x5 -> 13x3 ->
   7x2 -> 4x1``, each followed by a ReLU. Table 1 lists modules only; GST applies the ReLU
   functionally, which is why it has no row there - without it the six convs would collapse to
   one linear map.
5. **GRU** over the 4 remaining time steps (input 128 x 1 features, hidden 200):
   ``(B, 4, 200)``.
6. **MultiHeadAttention** to ``(B, 1, out_dim)``: the GRU's last state is the query. With
   ``pooling="temporal"`` (default) the keys / values are the GRU's 4 outputs; with
   ``pooling="style_tokens"`` they are GST's learned style tokens, as in DeepTalk. The
   default is temporal because a style-token output is a convex mix of a few fixed token
   values per head, a bottleneck that makes the 000 failure (every voice mapped to nearly the
   same face, 000 section 4.2) easier to fall into; either way ``out_dim`` is reached by the
   attention's own projections, with no wide fully-connected reshaping layer (000's suspect).

Numerical health: each clip is standardised (zero mean, unit variance over its samples) before
the filterbank. SELU is self-normalising only for unit-variance inputs and LeCun-normal
weights (both set here), and it makes the encoder blind to recording gain, which says nothing
about a face; the loudness *contour* within the clip is kept.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.config import TrainVoiceParams
from pipeline.models.files import load_model_payload, save_model_file

MODEL_KIND = "VoiceEncoder"
_REF_KERNEL, _REF_STRIDE, _REF_PAD = 3, 2, 1  # 003 Table 1: reference convs 3x3, s2, p1
_EPS = 1e-5


@dataclass(frozen=True)
class VoiceEncoderConfig:
    """Architecture of a :class:`VoiceEncoder` (defaults: 003 Table 1); saved with the weights."""

    frame_len: int = 160
    """Samples per frame (160 = 20 ms at 8 kHz); the input's height."""
    frames: int = 200
    """Frames per clip (200 x 160 = 32,000 samples = 4.0 s at 8 kHz); the input's width."""
    filterbank_kernels: tuple[int, ...] = (5, 5, 7, 9, 11, 11)
    """Kernel heights of the dilated (k x 1) filterbank convs."""
    filterbank_dilations: tuple[int, ...] = (2, 2, 3, 4, 5, 5)
    """Dilations of the filterbank convs."""
    filterbank_channels: tuple[int, ...] = (2, 4, 8, 16, 32, 40)
    """Output channels of the filterbank convs; the last is the number of learned filters."""
    reference_channels: tuple[int, ...] = (32, 32, 64, 64, 128, 128)
    """Output channels of the 3x3 stride-2 reference-encoder convs."""
    gru_hidden: int = 200
    """Hidden size of the GRU."""
    out_dim: int = 256
    """Output width: must equal the face VAE's ``feature_dim``."""
    heads: int = 8
    """Attention heads (GST: 8); must divide ``out_dim``."""
    pooling: Literal["temporal", "style_tokens"] = "temporal"
    """Keys / values of the attention: the GRU's outputs, or GST's learned style tokens."""
    style_tokens: int = 10
    """Number of style tokens (GST: 10); used with ``pooling="style_tokens"`` only."""
    standardize: bool = True
    """Standardise each clip to zero mean, unit variance before the filterbank."""

    def __post_init__(self) -> None:
        n_layers = len(self.filterbank_kernels)
        if n_layers < 1 or {len(self.filterbank_dilations), len(self.filterbank_channels)} != {
            n_layers
        }:
            raise ValueError("filterbank_kernels, _dilations and _channels need equal lengths >= 1")
        if not self.reference_channels:
            raise ValueError("reference_channels must not be empty")
        for name in ("frame_len", "frames", "gru_hidden", "out_dim", "heads", "style_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.out_dim % self.heads:
            raise ValueError(f"out_dim {self.out_dim} must be divisible by heads {self.heads}")
        if self.pooling not in ("temporal", "style_tokens"):
            raise ValueError(f"pooling must be temporal or style_tokens, got {self.pooling!r}")
        self._filterbank_padding()  # raises unless the filterbank collapses frames to 1 row
        if min(self.reference_sizes[-1]) < 1:
            raise ValueError(f"{self.frames} frames are too few for the reference convs")

    @property
    def n_samples(self) -> int:
        """Samples in the framed window: ``frames * frame_len``."""
        return self.frames * self.frame_len

    @property
    def filterbank_padding(self) -> tuple[int, int]:
        """Return the ZeroPad2d (top, bottom) rows that make the last conv collapse to 1."""
        return self._filterbank_padding()

    def _filterbank_padding(self) -> tuple[int, int]:
        height = self.frame_len
        for k, d in zip(self.filterbank_kernels[:-1], self.filterbank_dilations[:-1], strict=True):
            height -= _receptive(k, d) - 1
            if height < 1:
                raise ValueError(f"frame_len {self.frame_len} is too short for the filterbank")
        missing = _receptive(self.filterbank_kernels[-1], self.filterbank_dilations[-1]) - height
        if missing < 0:
            raise ValueError(
                f"frame_len {self.frame_len} is too long: the last filterbank conv would leave "
                f"{1 - missing} rows instead of 1"
            )
        return missing // 2, missing - missing // 2

    @property
    def reference_sizes(self) -> list[tuple[int, int]]:
        """Return (time, filters) before and after each reference conv: [(200, 40), ..., (4, 1)]."""
        sizes = [(self.frames, self.filterbank_channels[-1])]
        for _ in self.reference_channels:
            time, filters = sizes[-1]
            sizes.append((_strided(time), _strided(filters)))
        return sizes

    def to_dict(self) -> dict[str, Any]:
        """Return the config as plain data (loadable with ``weights_only=True``)."""
        data = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in data.items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> VoiceEncoderConfig:
        """Return the config saved by :meth:`to_dict`."""
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


def _receptive(kernel: int, dilation: int) -> int:
    return 1 + (kernel - 1) * dilation


def _strided(n: int) -> int:
    return (n + 2 * _REF_PAD - _REF_KERNEL) // _REF_STRIDE + 1


def frame_waveform(
    wave: torch.Tensor, config: VoiceEncoderConfig = VoiceEncoderConfig()
) -> torch.Tensor:
    """Return waveforms ``(B, N)`` cut into frames ``(B, 1, frame_len, frames)``.

    Column t holds samples ``[t * frame_len, (t + 1) * frame_len)``. A clip shorter than
    ``config.n_samples`` is repeated from its start to fill the window (it is already a tiling
    of its speech; see the module docstring); a longer one is cut at its start.
    """
    if wave.ndim != 2 or wave.shape[1] == 0:
        raise ValueError(f"expected waveforms (B, N) with N > 0, got shape {tuple(wave.shape)}")
    needed = config.n_samples
    if wave.shape[1] < needed:
        wave = wave.repeat(1, math.ceil(needed / wave.shape[1]))
    frames = wave[:, :needed].reshape(wave.shape[0], config.frames, config.frame_len)
    return frames.transpose(1, 2).unsqueeze(1)


class MultiHeadAttention(nn.Module):
    """GST's multi-head attention: query / key / value projections, no output projection."""

    def __init__(self, query_dim: int, key_dim: int, out_dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.query = nn.Linear(query_dim, out_dim)
        self.key = nn.Linear(key_dim, out_dim)
        self.value = nn.Linear(key_dim, out_dim)

    def forward(self, query: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        """Return ``(B, Lq, out_dim)``: ``query`` ``(B, Lq, Dq)`` attending to ``(B, Lk, Dk)``."""
        q, k, v = (self._split(layer(x)) for layer, x in
                   ((self.query, query), (self.key, memory), (self.value, memory)))
        return F.scaled_dot_product_attention(q, k, v).transpose(1, 2).flatten(2)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.heads, -1)).transpose(1, 2)  # (B, heads, L, d)


class _ReferenceBlock(nn.Module):
    """Conv2d 3x3 stride 2 + BatchNorm2d (+ GST's functional ReLU): one Table 1 row pair."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, _REF_KERNEL, _REF_STRIDE, _REF_PAD)  # 003 Table 1
        self.bn = nn.BatchNorm2d(c_out)  # 003 Table 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


class VoiceEncoder(nn.Module):
    """The 003 Table 1 voice encoder: waveform -> ``(B, out_dim)`` in the VAE's feature space."""

    def __init__(self, config: VoiceEncoderConfig = VoiceEncoderConfig()) -> None:
        super().__init__()
        self.config = config
        self.filterbank = _filterbank(config)
        widths = (1, *config.reference_channels)
        self.reference = nn.Sequential(
            *(_ReferenceBlock(c_in, c_out) for c_in, c_out in itertools.pairwise(widths))
        )
        gru_in = config.reference_channels[-1] * config.reference_sizes[-1][1]
        self.gru = nn.GRU(gru_in, config.gru_hidden, batch_first=True)  # 003 Table 1
        token_dim = config.out_dim // config.heads
        self.tokens = (
            nn.Parameter(torch.randn(config.style_tokens, token_dim) * 0.5)  # GST token init
            if config.pooling == "style_tokens" else None
        )
        key_dim = token_dim if self.tokens is not None else config.gru_hidden
        self.attention = MultiHeadAttention(  # 003 Table 1
            config.gru_hidden, key_dim, config.out_dim, config.heads
        )

    @property
    def target_dim(self) -> int:
        """Return the width of the voice target it predicts (:attr:`VoiceEncoderConfig.out_dim`)."""
        return self.config.out_dim

    @property
    def uses_embedding(self) -> bool:
        """Return False: it reads the waveform only."""
        return False

    @property
    def output_projection(self) -> nn.Linear:
        """Return the attention's value projection, whose rows scale and shift the output.

        The output is a mix of its outputs with weights summing to 1 per head.
        """
        return self.attention.value

    def voice_target(
        self, waves: torch.Tensor, embeddings: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Return the predicted voice targets ``(B, out_dim)`` of waveforms ``(B, N)``.

        ``embeddings`` (a pretrained speaker embedding) are not read by this model.
        """
        return self(waves)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return features ``(B, out_dim)`` of waveforms ``(B, N)`` or frames ``(B, 1, L, T)``.

        Frames must be ``(B, 1, frame_len, frames)`` as made by :func:`frame_waveform`.
        """
        frames = frame_waveform(x, self.config) if x.ndim == 2 else x
        expected = (1, self.config.frame_len, self.config.frames)
        if frames.ndim != 4 or tuple(frames.shape[1:]) != expected:
            raise ValueError(f"expected (B, N) or (B, *{expected}), got {tuple(x.shape)}")
        if self.config.standardize:
            frames = _standardize(frames)
        h = self.filterbank(frames)  # (B, 40, 1, T)
        h = h.squeeze(2).transpose(1, 2).unsqueeze(1)  # (B, 1, T, 40): time x filters
        h = self.reference(h)  # (B, 128, T', F')
        sequence, last = self.gru(h.permute(0, 2, 1, 3).flatten(2))  # (B, T', 128 * F')
        memory = sequence if self.tokens is None else torch.tanh(self.tokens).expand(
            h.shape[0], -1, -1
        )
        return self.attention(last[-1].unsqueeze(1), memory).squeeze(1)


class Filterbank(nn.Sequential):
    """The dilated ``(k x 1)`` Conv2d + SELU stack, run in channels-last memory order.

    The same layers and weights as a plain ``nn.Sequential`` (same ``state_dict``), the same
    function within float rounding: only the memory order and SELU's buffer differ. oneDNN's
    backward of these thin-channel, tall ``(k x 1)`` dilated convs is slow in NCHW (one
    8 -> 16 conv: 2 s backward against 0.2 s forward, batch 32, 2 cores) and fast
    channels-last; SELU works in place on the conv's output, which no backward needs, saving
    a fresh multi-MB buffer (page faults) per layer. Together: train step 2.4x the clips/s
    of the plain stack (``benchmarks/train_voice.py``).
    """

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """Return ``(B, filters, 1, frames)`` (channels-last strides) of ``(B, 1, L, T)``."""
        return super().forward(frames.contiguous(memory_format=torch.channels_last))


def _filterbank(config: VoiceEncoderConfig) -> Filterbank:
    """Return the dilated (k x 1) Conv2d + SELU stack, ZeroPad2d before its last conv."""
    layers: list[nn.Module] = []
    widths = (1, *config.filterbank_channels)
    specs = zip(widths[:-1], widths[1:], config.filterbank_kernels, config.filterbank_dilations,
                strict=True)
    for i, (c_in, c_out, k, d) in enumerate(specs):
        if i == len(config.filterbank_kernels) - 1:
            top, bottom = config.filterbank_padding
            layers.append(nn.ZeroPad2d((0, 0, top, bottom)))  # 003 Table 1: 44 -> 51
        conv = nn.Conv2d(c_in, c_out, kernel_size=(k, 1), dilation=(d, 1))  # 003 Table 1
        # LeCun normal: the weight scale under which SELU keeps activations at mean 0, var 1
        nn.init.kaiming_normal_(conv.weight, mode="fan_in", nonlinearity="linear")
        nn.init.zeros_(conv.bias)
        layers += [conv, nn.SELU(inplace=True)]
    return Filterbank(*layers)


def _standardize(frames: torch.Tensor) -> torch.Tensor:
    """Return each clip scaled to zero mean, unit variance (a silent clip stays zero)."""
    mean = frames.mean(dim=(1, 2, 3), keepdim=True)
    std = frames.std(dim=(1, 2, 3), keepdim=True)
    return (frames - mean) / (std + _EPS)


def save_voice_encoder(
    path: str | Path, model: VoiceEncoder, provenance: Mapping[str, Any]
) -> Path:
    """Return ``path`` after writing the model's config, weights and provenance atomically.

    ``provenance`` (resolved params, step, code version...) must be plain data (dicts, lists,
    str, numbers, bools, None), so the file loads with ``torch.load(weights_only=True)``.
    """
    return save_model_file(path, MODEL_KIND, model, provenance)


def load_voice_encoder_file(
    path: str | Path, map_location: str | torch.device = "cpu"
) -> dict[str, Any]:
    """Return the raw payload of a voice-encoder file: kind, config, state_dict, provenance."""
    return load_model_payload(path, MODEL_KIND, map_location)


def load_voice_encoder(
    path: str | Path, map_location: str | torch.device = "cpu"
) -> VoiceEncoder:
    """Return the :class:`VoiceEncoder` saved by :func:`save_voice_encoder`, in eval mode."""
    return voice_encoder_from_payload(load_voice_encoder_file(path, map_location), path,
                                      map_location)


def voice_encoder_from_payload(
    payload: Mapping[str, Any], path: str | Path, map_location: str | torch.device = "cpu"
) -> VoiceEncoder:
    """Return the :class:`VoiceEncoder` of a model file's payload, in eval mode."""
    model = VoiceEncoder(VoiceEncoderConfig.from_dict(payload["config"]))
    model.load_state_dict(payload["state_dict"])
    return model.to(map_location).eval()


def build_voice_encoder(params: TrainVoiceParams, target_dim: int) -> VoiceEncoder:
    """Return a new 003 Table 1 encoder with the face model's target width and ``pooling``."""
    return VoiceEncoder(VoiceEncoderConfig(out_dim=target_dim, pooling=params.pooling))
