"""Models of the pipeline: the face VAE and its emotion code (and later the voice encoder)."""

from pipeline.models.emotion_code import code_string, code_width, emotion_codes
from pipeline.models.vae import FaceVAE, VaeConfig, load_vae, save_model, vae_loss

__all__ = [
    "FaceVAE",
    "VaeConfig",
    "code_string",
    "code_width",
    "emotion_codes",
    "load_vae",
    "save_model",
    "vae_loss",
]
