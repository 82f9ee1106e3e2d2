"""Face and voice models by name and by file kind, through their interfaces."""

import pytest
import torch

from pipeline.config import TrainVaeParams, load_params
from pipeline.models.emotion_code import emotion_codes
from pipeline.models.files import ModelFileError
from pipeline.models.registry import (
    FACE_MODELS,
    VOICE_MODELS,
    FaceModelEntry,
    face_model_entry,
    load_face_model,
    load_voice_model,
    voice_model_entry,
)
from pipeline.models.vae import save_model
from pipeline.models.voice_encoder import VoiceEncoder, load_voice_encoder
from pipeline.training.vae import train_vae
from tests.conftest import REPO
from tests.models.factories import EMOTIONS, FACE, FEATURES, save_vae, save_voice, tiny_vae, waves


def test_a_vae_file_loads_as_a_face_model_computing_what_the_vae_computes(
    tmp_path, deterministic_rng
):
    vae = tiny_vae()
    loaded = load_face_model(save_vae(tmp_path / "vae.pt", vae))
    face = loaded.model
    assert (face.image_size, face.emotions, face.target_dim) == (FACE, EMOTIONS, FEATURES)
    assert loaded.provenance["epoch"] == 1 and loaded.path == tmp_path / "vae.pt"

    faces, labels = torch.rand(3, 1, FACE, FACE), torch.tensor([0, 2, 3])
    codes = emotion_codes(EMOTIONS, 2)[labels]
    with torch.no_grad():
        features = vae.features(faces)
        mu = vae.posterior(features, codes)[0]
        assert torch.equal(face.voice_target(faces), features)
        assert torch.equal(face.latents(features, labels), mu)
        assert torch.equal(face.decode(mu, labels), vae.decode(mu, codes))
    with pytest.raises(ValueError, match="this VAE needs an emotion"):
        face.latents(features, None)


def test_an_unconditional_vae_takes_no_emotion(tmp_path, deterministic_rng):
    vae = tiny_vae(conditional=False)
    face = load_face_model(save_model(tmp_path / "vae.pt", vae, {})).model
    assert face.emotions == () and face.codes is None
    z = torch.randn(2, 6)
    assert torch.equal(face.decode(z, None), vae.decode(z))
    with pytest.raises(ValueError, match="this VAE is unconditional: it takes no emotion"):
        face.decode(z, torch.tensor([0, 1]))


def test_a_conditional_vae_without_recorded_emotions_is_refused(tmp_path):
    path = save_model(tmp_path / "vae.pt", tiny_vae(), {"epoch": 3})
    with pytest.raises(ModelFileError) as error:
        load_face_model(path)
    assert str(error.value) == (f"{path}: the VAE's provenance lacks its emotions; save it "
                                "with the train_vae stage")


def test_a_voice_file_loads_as_a_voice_model(tmp_path, deterministic_rng):
    path = save_voice(tmp_path / "voice.pt", sample_rate=8000)
    loaded = load_voice_model(path)
    assert loaded.model.target_dim == FEATURES and loaded.provenance["sample_rate"] == 8000
    x = waves(2)
    with torch.no_grad():
        assert torch.equal(loaded.model.voice_target(x), load_voice_encoder(path)(x))


def test_loading_dispatches_on_the_kind_and_names_a_file_of_the_other_family(tmp_path):
    vae, voice = save_vae(tmp_path / "vae.pt", tiny_vae()), save_voice(tmp_path / "voice.pt")
    with pytest.raises(ModelFileError) as error:
        load_face_model(voice)
    assert str(error.value) == (f"{voice}: not a FaceVAE or DisentangledFace model file (its "
                                "kind is 'VoiceEncoder')")
    with pytest.raises(ModelFileError) as error:
        load_voice_model(vae)
    assert str(error.value) == (f"{vae}: not a VoiceEncoder or EmbeddingMLP or EmbeddingRidge "
                                "model file (its kind is 'FaceVAE')")


def test_unknown_names_are_refused_naming_the_key():
    with pytest.raises(ValueError) as error:
        face_model_entry("nope")
    assert str(error.value) == ("train_vae.model: unknown face model 'nope'; registered: vae, "
                                "disentangled")
    with pytest.raises(ValueError) as error:
        voice_model_entry("nope")
    assert str(error.value) == ("train_voice.models: unknown voice model 'nope'; registered: "
                                "deeptalk, embedding_mlp, ridge")


def test_params_yaml_names_registered_models_and_the_voice_model_builds():
    assert load_params(REPO / "params.yaml", "train_vae").model in FACE_MODELS
    params = load_params(REPO / "params.yaml", "train_voice")
    assert set(params.models) <= set(VOICE_MODELS)
    built = voice_model_entry("deeptalk").build(params, 32)
    assert isinstance(built, VoiceEncoder)
    assert built.target_dim == 32 and built.config.pooling == params.pooling
    mlp = voice_model_entry("embedding_mlp").build(params, 32)
    assert mlp.uses_embedding and mlp.config.hidden == params.embedding_mlp.hidden
    assert voice_model_entry("ridge").solve is not None


def test_train_vae_refuses_a_registered_face_model_it_does_not_train(tmp_path, monkeypatch):
    monkeypatch.setitem(FACE_MODELS, "other", FaceModelEntry("OtherFace", lambda *a: None))
    params = TrainVaeParams(model="other")
    with pytest.raises(ValueError) as error:  # before reading any data: there is none
        train_vae(params, tmp_path / "no-dataset", tmp_path, tmp_path, tmp_path)
    assert str(error.value) == ("train_vae.model: 'other' is not trained by this stage (it "
                                "trains the VAE)")
