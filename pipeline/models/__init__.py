"""Models of the pipeline: face and voice models, their registry and model files.

:mod:`.registry` holds the interface of each kind (:class:`~.registry.FaceModel`,
:class:`~.registry.VoiceModel`) and the models by name; :mod:`.vae` (003's face VAE and its
emotion code, :mod:`.emotion_code`) and :mod:`.voice_encoder` (003 Table 1) are the first
entries; :mod:`.voice_to_face` joins a voice model to a face model; :mod:`.files` writes and
reads model files; :mod:`.inference` is the one batched inference loop.
"""

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
