"""Voice -> face with a conditional and an unconditional VAE: which emotions each takes."""

import pytest
import torch

from pipeline.loaders import NO_EMOTION
from pipeline.models.emotion_code import code_string, emotion_codes
from pipeline.models.vae import FaceVAE, VaeConfig, save_model
from pipeline.models.voice_encoder import VoiceEncoder, VoiceEncoderConfig
from pipeline.models.voice_to_face import GenerationError, VoiceToFace, vae_emotion_codes


def make_model(emotions, conditional):
    torch.manual_seed(0)
    vae = FaceVAE(VaeConfig(image_size=16, feature_dim=8, latent_dim=4, channels=(4,),
                            code_dim=2 * len(emotions) if conditional else 0,
                            conditional=conditional)).eval()
    encoder = VoiceEncoder(VoiceEncoderConfig(frames=16, reference_channels=(4,) * 6,
                                              gru_hidden=8, out_dim=8, heads=2)).eval()
    codes = emotion_codes(emotions, 2) if conditional else torch.zeros(len(emotions), 0)
    return VoiceToFace(vae, encoder, tuple(emotions), codes)


def test_an_unconditional_vae_generates_without_an_emotion_and_refuses_one():
    model = make_model((), conditional=False)  # trained on data without emotion labels
    assert model.default_emotion is None and model.emotion_index(None) == NO_EMOTION
    faces = model.faces(torch.randn(2, 800), torch.full((2,), NO_EMOTION))
    assert faces.shape == (2, 1, 16, 16) and torch.isfinite(faces).all()
    with pytest.raises(GenerationError, match=r"emotion 'HAP' given, but the VAE is "
                                              r"unconditional \(trained on data without "
                                              r"emotion labels\): it takes no emotion"):
        model.emotion_index("HAP")
    labelled = make_model(("HAP", "SAD"), conditional=False)  # conditional: false
    with pytest.raises(GenerationError, match=r"train_vae\.conditional false"):
        labelled.emotion_index("SAD")


def test_a_conditional_vae_defaults_to_its_first_emotion_without_neu():
    model = make_model(("HAP", "SAD"), conditional=True)
    assert model.default_emotion == "HAP" and model.emotion_index("sad") == 1
    hap, sad = (model.faces(torch.ones(1, 800), torch.tensor([i])) for i in (0, 1))
    assert not torch.equal(hap, sad)


def test_the_codes_of_an_unconditional_vae_file_are_empty(tmp_path):
    vae = FaceVAE(VaeConfig(image_size=16, feature_dim=8, latent_dim=4, channels=(4,),
                            code_dim=0, conditional=False))
    path = save_model(tmp_path / "vae.pt", vae, {"emotions": [], "codes": []})
    emotions, codes = vae_emotion_codes(path)
    assert emotions == () and codes.shape == (0, 0)
    conditional = save_model(tmp_path / "cvae.pt", FaceVAE(VaeConfig(
        image_size=16, feature_dim=8, latent_dim=4, channels=(4,), code_dim=4)), {
        "emotions": ["HAP", "SAD"], "codes": [code_string(c) for c in emotion_codes(
            ["HAP", "SAD"], 2)]})
    assert vae_emotion_codes(conditional)[1].shape == (2, 4)
