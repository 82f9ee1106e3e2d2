import pytest
import torch

from pipeline.models.vae import (
    FaceVAE,
    VaeConfig,
    encoder_sizes,
    load_vae,
    save_model,
    vae_loss,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("size", [64, 150])
def test_layer_shapes_follow_the_config(size):
    torch.manual_seed(0)
    config = VaeConfig(image_size=size, feature_dim=32, latent_dim=12, code_dim=8,
                       channels=(8, 16, 32, 64))
    model = FaceVAE(config).eval()
    x = torch.rand(3, 1, size, size)
    code = torch.zeros(3, 8)
    h = model.features(x)
    assert h.shape == (3, 32)
    mu, logvar = model.posterior(h, code)
    assert mu.shape == logvar.shape == (3, 12)
    recon = model.decode(model.reparameterise(mu, logvar), code)
    assert recon.shape == (3, 1, size, size)
    assert recon.min() >= 0.0 and recon.max() <= 1.0
    out = model(x, code)
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "recon": (3, 1, size, size), "mu": (3, 12), "logvar": (3, 12), "z": (3, 12),
        "features": (3, 32),
    }
    # every transposed conv lands exactly on the encoder's size at that depth
    sizes = encoder_sizes(size, 4)
    bottom = model.from_latent(torch.cat([mu, code], dim=1))
    shapes, t = [], bottom.view(3, 64, sizes[-1], sizes[-1])
    for layer in model.decoder:
        t = layer(t)
        if isinstance(layer, torch.nn.ConvTranspose2d):
            shapes.append(t.shape[-1])
    assert shapes == sizes[-2::-1]


def test_150_setting_of_paper_000_downsamples_with_odd_sizes():
    assert encoder_sizes(150, 4) == [150, 75, 37, 18, 9]
    assert encoder_sizes(64, 4) == [64, 32, 16, 8, 4]
    with pytest.raises(ValueError, match="too small"):
        VaeConfig(image_size=16, channels=(4, 4, 4, 4, 4))


def test_emotion_code_enters_the_posterior_only_when_conditional():
    torch.manual_seed(0)
    conditional = FaceVAE(VaeConfig(image_size=16, feature_dim=8, latent_dim=4, code_dim=8,
                                    channels=(4,)))
    h = torch.rand(2, 8)
    a, _ = conditional.posterior(h, torch.zeros(2, 8))
    b, _ = conditional.posterior(h, torch.ones(2, 8))
    assert not torch.allclose(a, b)
    assert conditional.to_mu.in_features == 16
    with pytest.raises(ValueError, match="emotion code"):
        conditional.posterior(h, None)
    plain = FaceVAE(VaeConfig(image_size=16, feature_dim=8, latent_dim=4, conditional=False,
                              channels=(4,)))
    assert plain.to_mu.in_features == 8
    assert torch.equal(plain.posterior(h, None)[0], plain.posterior(h, torch.ones(2, 8))[0])


def test_without_emotion_labels_the_code_has_width_zero_and_a_conditional_vae_needs_one():
    plain = VaeConfig(image_size=16, feature_dim=8, latent_dim=4, code_dim=0,
                      conditional=False, channels=(4,))  # 000's setting
    assert (plain.posterior_in, plain.decoder_in) == (8, 4)
    assert FaceVAE(plain).to_mu.in_features == 8
    with pytest.raises(ValueError, match="code_dim 0: a conditional VAE needs an emotion code"):
        VaeConfig(image_size=16, code_dim=0, channels=(4,))


def test_the_decoder_takes_the_code_only_with_decoder_code():
    torch.manual_seed(0)
    z = torch.randn(2, 4)
    happy, sad = torch.eye(2)[[0, 0]], torch.eye(2)[[1, 1]]
    cvae = FaceVAE(VaeConfig(image_size=16, feature_dim=8, latent_dim=4, code_dim=2,
                             channels=(4,))).eval()
    assert cvae.config.decodes_code and cvae.from_latent.in_features == 4 + 2
    assert not torch.allclose(cvae.decode(z, happy), cvae.decode(z, sad))
    with pytest.raises(ValueError, match=r"decoder_code=True\): call decode\(z, code\)"):
        cvae.decode(z)
    for config in (VaeConfig(image_size=16, feature_dim=8, latent_dim=4, code_dim=2,
                             channels=(4,), decoder_code=False),  # 003: encoder only
                   VaeConfig(image_size=16, feature_dim=8, latent_dim=4, code_dim=2,
                             channels=(4,), conditional=False)):
        model = FaceVAE(config).eval()
        assert not config.decodes_code and model.from_latent.in_features == 4
        assert torch.equal(model.decode(z), model.decode(z, happy))


def test_reparameterisation_samples_mu_plus_sigma_eps():
    torch.manual_seed(0)
    mu = torch.full((20000, 2), 3.0)
    logvar = torch.log(torch.full((20000, 2), 0.25))
    z = FaceVAE.reparameterise(mu, logvar)
    assert z.mean().item() == pytest.approx(3.0, abs=0.02)
    assert z.std().item() == pytest.approx(0.5, abs=0.02)


def test_forward_samples_in_training_and_uses_mu_in_eval():
    torch.manual_seed(0)
    model = FaceVAE(VaeConfig(image_size=16, feature_dim=8, latent_dim=4, code_dim=2,
                              channels=(4,)))
    x, code = torch.rand(2, 1, 16, 16), torch.zeros(2, 2)
    assert not torch.equal(model.train()(x, code)["z"], model(x, code)["mu"])
    out = model.eval()(x, code)
    assert torch.equal(out["z"], out["mu"])


def test_loss_terms_are_mse_sum_and_kl_of_the_paper():
    x = torch.zeros(2, 1, 4, 4)
    out = {"recon": torch.full((2, 1, 4, 4), 0.5), "mu": torch.ones(2, 3),
           "logvar": torch.zeros(2, 3)}
    terms = vae_loss(out, x, beta=2.0)
    assert terms["recon"].item() == pytest.approx(16 * 0.25)  # summed over pixels
    assert terms["mse"].item() == pytest.approx(0.25)  # per pixel
    assert terms["kl"].item() == pytest.approx(3 * 0.5)  # 0.5 * mu^2 per dim
    assert terms["loss"].item() == pytest.approx(4.0 + 2.0 * 1.5)


def test_loss_decreases_on_a_fixed_batch_within_100_steps():
    torch.manual_seed(0)
    model = FaceVAE(VaeConfig(image_size=32, feature_dim=32, latent_dim=16, code_dim=8,
                              channels=(8, 16)))
    g = torch.Generator().manual_seed(1)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 32), torch.linspace(-1, 1, 32), indexing="ij")
    centres = torch.rand(8, 2, generator=g) - 0.5  # blobs: structure a VAE can learn
    faces = torch.exp(-((xx - centres[:, :1, None]) ** 2 + (yy - centres[:, 1:, None]) ** 2)
                      / 0.1).unsqueeze(1)
    codes = torch.eye(4).repeat_interleave(2, dim=1)[torch.arange(8) % 4]
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(100):
        terms = vae_loss(model(faces, codes), faces, beta=1.0)
        optimizer.zero_grad()
        terms["loss"].backward()
        optimizer.step()
        losses.append(terms["loss"].item())
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5


def test_saved_model_loads_weights_only_and_decodes_the_same(tmp_path):
    torch.manual_seed(0)
    model = FaceVAE(VaeConfig(image_size=24, feature_dim=8, latent_dim=4, code_dim=6,
                              channels=(4, 8))).eval()
    path = save_model(tmp_path / "model.pt", model, {"params": {"beta": 1.0}, "epoch": 3})
    payload = torch.load(path, weights_only=True)
    assert payload["provenance"] == {"params": {"beta": 1.0}, "epoch": 3}
    loaded = load_vae(path)
    assert loaded.config == model.config and not loaded.training
    z, code = torch.randn(2, 4), torch.eye(6)[:2]
    assert torch.equal(loaded.decode(z, code), model.decode(z, code))


def test_a_model_file_from_before_decoder_code_loads_encoder_only(tmp_path):
    torch.manual_seed(0)
    model = FaceVAE(VaeConfig(image_size=16, feature_dim=8, latent_dim=4, code_dim=2,
                              channels=(4,), decoder_code=False)).eval()
    path = save_model(tmp_path / "model.pt", model, {})
    payload = torch.load(path, weights_only=True)
    del payload["config"]["decoder_code"]
    torch.save(payload, path)
    loaded = load_vae(path)
    assert loaded.config == model.config
    z = torch.randn(2, 4)
    assert torch.equal(loaded.decode(z), model.decode(z))


def test_a_foreign_file_is_not_taken_for_a_model(tmp_path):
    torch.save({"kind": "VoiceEncoder"}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a FaceVAE"):
        load_vae(tmp_path / "other.pt")
