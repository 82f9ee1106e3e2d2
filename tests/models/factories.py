"""Tiny untrained face and voice models, saved as model files the way the stages save them."""

from __future__ import annotations

from pathlib import Path

import torch

from pipeline.models.emotion_code import code_string, emotion_codes
from pipeline.models.vae import FaceVAE, VaeConfig, save_model
from pipeline.models.voice_encoder import VoiceEncoder, VoiceEncoderConfig, save_voice_encoder

EMOTIONS = ("ANG", "HAP", "NEU", "SAD")
FACE = 16
FEATURES = 16
VOICE = VoiceEncoderConfig(frames=16, reference_channels=(4,) * 6, gru_hidden=8,
                           out_dim=FEATURES, heads=2)


def tiny_vae(conditional: bool = True) -> FaceVAE:
    """Return a 16 px VAE with 16 features, 6 latents and an 8-bit code (eval mode)."""
    return FaceVAE(VaeConfig(image_size=FACE, feature_dim=FEATURES, latent_dim=6, code_dim=8,
                             conditional=conditional, channels=(4, 8))).eval()


def save_vae(path: Path, vae: FaceVAE, emotions: tuple[str, ...] = EMOTIONS) -> Path:
    """Return ``path`` after saving ``vae`` with its emotions and codes, as train_vae does."""
    codes = [code_string(c) for c in emotion_codes(emotions, 8 // len(emotions))]
    return save_model(path, vae, {"emotions": list(emotions), "codes": codes, "epoch": 1})


def save_voice(path: Path, out_dim: int = FEATURES, **provenance: object) -> Path:
    """Return ``path`` after saving a tiny voice encoder with ``provenance``."""
    config = VoiceEncoderConfig(**{**VOICE.to_dict(), "out_dim": out_dim})
    return save_voice_encoder(path, VoiceEncoder(config).eval(), {"epoch": 1, **provenance})


def waves(n: int) -> torch.Tensor:
    """Return ``n`` random waveforms as long as the tiny encoder's window."""
    return torch.randn(n, VOICE.n_samples)
