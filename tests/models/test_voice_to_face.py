"""Voice -> face through the two model interfaces: emotions, defaults, mismatches."""

import pytest
import torch

from pipeline.models.registry import load_face_model, load_voice_model
from pipeline.models.vae import save_model
from pipeline.models.voice_to_face import (
    GenerationError,
    UnknownEmotionError,
    VoiceToFace,
    load_voice_to_face,
    pair_models,
)
from tests.models.factories import FACE, save_vae, save_voice, tiny_vae, waves


@pytest.fixture
def files(tmp_path, deterministic_rng):
    return save_vae(tmp_path / "vae.pt", tiny_vae()), save_voice(tmp_path / "voice.pt")


def test_emotions_default_to_neu_and_names_are_case_insensitive(files):
    model = load_voice_to_face(*files)
    assert model.default_emotion == "NEU" and model.emotion_index(None) == 2
    assert model.emotion_index("sad") == 3
    assert model.emotion_labels(None, 3).tolist() == [2, 2, 2]
    with pytest.raises(UnknownEmotionError) as error:
        model.emotion_index("XYZ")
    assert str(error.value) == "unknown emotion 'XYZ'; valid: ANG, HAP, NEU, SAD"
    x = waves(2)
    happy, sad = model.faces(x, model.emotion_labels("HAP", 2)), model.faces(
        x, model.emotion_labels("SAD", 2))
    assert happy.shape == (2, 1, FACE, FACE) and not torch.equal(happy, sad)


def test_without_neu_the_first_emotion_is_the_default(tmp_path, deterministic_rng):
    model = load_voice_to_face(save_vae(tmp_path / "vae.pt", tiny_vae(), ("HAP", "SAD")),
                               save_voice(tmp_path / "voice.pt"))
    assert model.default_emotion == "HAP" and model.emotion_index(None) == 0


def test_a_face_model_without_emotions_generates_with_none(tmp_path, deterministic_rng):
    face = save_model(tmp_path / "vae.pt", tiny_vae(conditional=False), {})
    model = load_voice_to_face(face, save_voice(tmp_path / "voice.pt"))
    assert model.default_emotion is None and model.emotion_labels(None, 2) is None
    assert model.clip_emotions(torch.tensor([0, 1])) is None
    assert model.faces(waves(2), None).shape == (2, 1, FACE, FACE)
    with pytest.raises(UnknownEmotionError) as error:
        model.emotion_index("HAP")
    assert str(error.value) == "unknown emotion 'HAP': the face model takes no emotion"


def test_models_not_trained_together_are_refused_naming_both_files(tmp_path, files):
    vae, _ = files
    narrow = save_voice(tmp_path / "narrow.pt", out_dim=8)
    with pytest.raises(GenerationError) as error:
        load_voice_to_face(vae, narrow)
    assert str(error.value) == (f"{narrow}: voice model outputs 8 features, the face model "
                                f"{vae} expects 16")
    other = save_voice(tmp_path / "other.pt", emotions=["HAP", "SAD"])
    with pytest.raises(GenerationError) as error:
        load_voice_to_face(vae, other)
    assert str(error.value) == (f"{other} was trained with emotions ['HAP', 'SAD'], {vae} has "
                                "['ANG', 'HAP', 'NEU', 'SAD']")
    with pytest.raises(GenerationError, match="voice model outputs 8 features"):
        VoiceToFace(load_face_model(vae).model, load_voice_model(narrow).model)
    assert pair_models(load_face_model(vae), load_voice_model(files[1])).sample_rate is None
