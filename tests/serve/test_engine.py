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
    generate_from_voice,
    load_voice_to_face,
)
from pipeline.serve.engine import ModelFiles, load_served_models
from tests.factories import speech_like, write_wav
from tests.models.factories import FEATURES, VOICE, save_voice, tiny_vae


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



def test_without_an_emotion_the_face_shows_the_one_generate_reads_from_the_voice(tiny_models,
                                                                                 tmp_path):
    from pipeline.models.emotion_classifier import (
        feature_matrix,
        fit_emotion_classifier,
        save_emotion_classifier,
    )

    audio = load_params(tiny_models["params"], "audio")
    voice = tiny_models["out"] / "model.pt"
    rng = np.random.default_rng(5)
    wavs = [write_wav(tmp_path / f"v{i}.wav", speech_like(rng, 2.0, 16000), 16000)
            for i in range(8)]
    waves = np.stack([prepare_audio(w, audio).waveform() for w in wavs])
    classifier = fit_emotion_classifier(feature_matrix(waves, audio.sample_rate),
                                        np.arange(8) % 4, ("ANG", "HAP", "NEU", "SAD"),
                                        audio.sample_rate, 1.0)
    emotion_file = save_emotion_classifier(tmp_path / "emotion.pt", classifier, {})
    served = load_served_models([ModelFiles("m", tiny_models["vae"], voice)], audio,
                                emotion_file)["m"]
    assert served.reads_emotion
    model = load_voice_to_face(tiny_models["vae"], voice)
    shown = set()
    for wav, wave in zip(wavs, waves, strict=True):
        expected = generate_from_voice(wav, model, None, audio, classifier)
        result = served.generate(wave, None)
        assert result.voice_emotion[0] == expected.emotion == result.emotions[result.shown]
        assert result.voice_emotion[1] == pytest.approx(expected.probability, abs=1e-6)
        assert np.allclose(result.faces[result.shown], expected.face, atol=1e-6)
        shown.add(expected.emotion)
        given = served.generate(wave, "NEU")  # a given emotion is not overridden
        assert given.voice_emotion is None and given.emotions[given.shown] == "NEU"
    assert len(shown) > 1  # the reading depends on the voice


def test_a_model_reading_the_speaker_embedding_gets_it_from_the_file_and_the_clips(
        tiny_models, tmp_path):
    from pipeline.models.embedding_voice import (
        RIDGE_KIND,
        EmbeddingRegressor,
        EmbeddingRegressorConfig,
    )
    from pipeline.models.files import save_model_file

    audio = load_params(tiny_models["params"], "audio")
    torch.manual_seed(0)
    ridge = EmbeddingRegressor(EmbeddingRegressorConfig(out_dim=FEATURES)).eval()
    path = save_model_file(tmp_path / "ridge.pt", RIDGE_KIND, ridge, {"model": "ridge"})
    served = load_served_models([ModelFiles("r", tiny_models["vae"], path)], audio)["r"]
    assert served.uses_embedding
    rng = np.random.default_rng(7)
    wav = write_wav(tmp_path / "v.wav", speech_like(rng, 3.0, 16000), 16000)
    prepared = prepare_audio(wav, audio)
    with pytest.raises(GenerationError, match="reads the speaker embedding"):
        served.generate(prepared.waveform(), "HAP")
    embedding = served.embed(wav, audio)
    assert embedding.shape == (256,)
    assert np.allclose(embedding, served.embed(wav, audio))
    result = served.generate(prepared.waveform(), "HAP", embedding)
    model = load_voice_to_face(tiny_models["vae"], path)
    assert np.allclose(result.faces[result.shown], generate_face(wav, model, "HAP", audio),
                       atol=1e-5)
    # the gallery's 8 kHz clips: embedded at 16 kHz, nearer to the same voice than to another
    other = prepare_audio(write_wav(tmp_path / "o.wav", speech_like(np.random.default_rng(8),
                                                                    3.0, 16000) * 0.3, 16000),
                          audio)
    vectors = served.voice_vectors(np.stack([prepared.pcm, other.pcm]), audio.sample_rate)
    assert vectors.shape == (2, FEATURES)
    assert np.allclose(vectors[0], ridge(torch.from_numpy(embedding)[None]).detach()[0],
                       atol=0.05)
