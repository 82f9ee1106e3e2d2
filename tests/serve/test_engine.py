from dataclasses import replace

import numpy as np
import pytest
import torch

from pipeline.audio.prepare import prepare_audio
from pipeline.config import AudioParams, load_params
from pipeline.models.vae import save_model
from pipeline.models.voice_to_face import (
    GenerationError,
    UnknownEmotionError,
    generate_face,
    load_voice_to_face,
)
from pipeline.serve.engine import ModelFiles, load_served_models
from tests.factories import speech_like, write_wav
from tests.models.factories import VOICE, save_voice, tiny_vae


def test_each_emotions_face_is_what_generate_makes_of_the_file(tiny_models, tmp_path):
    audio = load_params(tiny_models["params"], "audio")
    voice = tiny_models["out"] / "model.pt"
    served = load_served_models([ModelFiles("m", tiny_models["vae"], voice)], audio)["m"]
    wav = write_wav(tmp_path / "v.wav", speech_like(np.random.default_rng(3), 2.0, 16000), 16000)
    result = served.generate(prepare_audio(wav, audio).waveform(), "sad")
    assert result.emotions == ("ANG", "HAP", "NEU", "SAD") and result.shown == 3
    model = load_voice_to_face(tiny_models["vae"], voice)
    for name, face in zip(result.emotions, result.faces, strict=True):
        assert np.allclose(face, generate_face(wav, model, name, audio), atol=1e-6), name
    assert result.latent.shape == (8,) and result.voice.shape == (16,)
    with pytest.raises(UnknownEmotionError, match="valid: ANG, HAP, NEU, SAD"):
        served.generate(prepare_audio(wav, audio).waveform(), "XYZ")


def test_a_face_model_without_emotions_gives_one_face(tmp_path):
    face = save_model(tmp_path / "vae.pt", tiny_vae(conditional=False),
                      {"emotions": [], "codes": [], "epoch": 1})
    voice = save_voice(tmp_path / "voice.pt")
    served = load_served_models([ModelFiles("plain", face, voice)], AudioParams())["plain"]
    assert served.emotions == () and served.default_emotion is None
    result = served.generate(torch.randn(VOICE.n_samples).numpy(), None)
    assert result.faces.shape == (1, 16, 16) and result.emotions == () and result.shown == 0
    latents = served.face_latents(np.zeros((2, 24, 24), np.uint8), ["HAP", None])
    assert latents.shape == (2, 6)
    with pytest.raises(UnknownEmotionError, match="takes no emotion"):
        served.generate(torch.randn(VOICE.n_samples).numpy(), "HAP")


def test_models_unlike_the_audio_params_or_named_twice_are_refused(tiny_models):
    audio = load_params(tiny_models["params"], "audio")
    files = ModelFiles("m", tiny_models["vae"], tiny_models["out"] / "model.pt")
    with pytest.raises(GenerationError, match="n_samples=29360"):
        load_served_models([files], replace(audio, length_s=2.0))
    with pytest.raises(ValueError, match="given twice"):
        load_served_models([files, files], audio)

