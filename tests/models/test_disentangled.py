import pytest
import torch

from pipeline.models.disentangled import (
    BaselineVAE,
    DisentangledConfig,
    DisentangledVAE,
    expression_means,
    load_disentangled,
    save_model,
)
from pipeline.models.files import ModelFileError
from pipeline.models.registry import load_face_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# 002 Table 1 (grayscale): output of every conv, then the pooling and fc mu / sigma.
ENCODER_64 = [(32, 32, 32), (32, 32, 32), (64, 16, 16), (64, 16, 16), (128, 8, 8), (128, 8, 8),
              (256, 4, 4), (256, 4, 4)]
ENCODER_128 = [(32, 64, 64), (32, 64, 64), (64, 32, 32), (64, 32, 32), (128, 16, 16),
               (128, 16, 16), (256, 8, 8), (256, 8, 8), (256, 4, 4), (256, 4, 4)]
# 002 Table 2: fc1 4096 = 256 x 4 x 4, then each (de)conv's output, conv6 last.
DECODER_64 = [(128, 8, 8), (128, 8, 8), (64, 16, 16), (64, 16, 16), (32, 32, 32), (32, 32, 32),
              (16, 64, 64), (16, 64, 64), (1, 64, 64)]
DECODER_128 = [(128, 8, 8), (128, 8, 8), (64, 16, 16), (64, 16, 16), (32, 32, 32), (32, 32, 32),
               (16, 64, 64), (16, 64, 64), (8, 128, 128), (8, 128, 128), (1, 128, 128)]


def conv_outputs(layers, x):
    shapes = []
    for layer in layers:
        x = layer(x)
        if isinstance(layer, torch.nn.Conv2d | torch.nn.ConvTranspose2d):
            shapes.append(tuple(x.shape[1:]))
    return shapes, x


@pytest.mark.parametrize(("size", "encoder", "decoder"),
                         [(64, ENCODER_64, DECODER_64), (128, ENCODER_128, DECODER_128)])
def test_every_layer_has_the_shape_of_tables_1_and_2(size, encoder, decoder):
    torch.manual_seed(0)
    model = DisentangledVAE(DisentangledConfig(image_size=size)).eval()  # 002's widths
    x = torch.rand(2, 1, size, size)
    for net in (model.identity, model.expression, model.discriminator):
        shapes, h = conv_outputs(net.body.convs, x)
        assert shapes == encoder
        assert tuple(net.body.pool(h).shape[1:]) == (256, 1, 1)  # average pooling
    mu, logvar = model.identity(x)
    assert mu.shape == logvar.shape == model.expression(x)[0].shape == (2, 64)  # fc mu / sigma
    assert model.discriminator(x).shape == (2,)
    z = torch.cat([mu, mu], dim=1)
    assert z.shape == (2, 128)  # Table 2's latent variable: z_i + z_e
    assert model.decoder.fc(z).shape == (2, 4096)  # fc1, reshaped to 256 x 4 x 4
    shapes, _ = conv_outputs(model.decoder.layers, model.decoder.fc(z).view(2, 256, 4, 4))
    assert shapes == decoder
    with torch.no_grad():
        faces = model.decode(mu, mu)
    assert faces.shape == (2, 1, size, size) and faces.min() >= 0 and faces.max() <= 1


def test_widths_follow_the_config_not_constants():
    config = DisentangledConfig(image_size=32, latent_dim=5, channels=(4, 6))
    assert config.encoder_widths == (4, 6, 6)  # pairs at the last width until 4 x 4
    assert config.decoder_widths == (3, 1, 1)  # halving from 6, at least 1
    model = DisentangledVAE(config)
    assert model.decode(torch.zeros(3, 5), torch.zeros(3, 5)).shape == (3, 1, 32, 32)
    assert model.identity(torch.rand(3, 1, 32, 32))[0].shape == (3, 5)


@pytest.mark.parametrize("size", [48, 150, 8])
def test_sizes_the_tables_cannot_make_are_refused(size):
    with pytest.raises(ValueError, match="bottom_size 4 times 2"):
        DisentangledConfig(image_size=size, channels=(4, 8))


def test_baseline_vaes_share_the_layers_and_take_a_code():
    config = DisentangledConfig(image_size=16, latent_dim=3, channels=(4, 8))
    vae, cvae = BaselineVAE(config), BaselineVAE(config, code_dim=5)
    x = torch.rand(2, 1, 16, 16)
    assert vae.encode(x)[0].shape == (2, 6)  # as wide as z_i + z_e
    code = torch.eye(5)[:2]
    mu, _ = cvae.encode(x, code)
    assert cvae.decode(mu, code).shape == (2, 1, 16, 16)
    assert not torch.equal(cvae.decode(mu, code), cvae.decode(mu, torch.eye(5)[2:4]))


def test_expression_means_are_per_label_means_and_need_every_label():
    z_e = torch.tensor([[1.0, 0.0], [3.0, 2.0], [5.0, 5.0]])
    means = expression_means(z_e, torch.tensor([0, 0, 1]), 2)
    assert torch.equal(means, torch.tensor([[2.0, 1.0], [5.0, 5.0]]))
    with pytest.raises(ValueError, match=r"label\(s\) \[2\]"):
        expression_means(z_e, torch.tensor([0, 0, 1]), 3)


def saved(tmp_path, emotions, means, size=16):
    torch.manual_seed(0)
    model = DisentangledVAE(DisentangledConfig(image_size=size, latent_dim=3, channels=(4,)))
    path = save_model(tmp_path / "model.pt", model,
                      {"emotions": emotions, "expression_means": means})
    return model, path


def test_the_face_model_decodes_z_i_with_the_emotions_mean_z_e(tmp_path):
    means = [[1.0, 2.0, 3.0], [-1.0, 0.0, 0.5]]
    model, path = saved(tmp_path, ["HAP", "SAD"], means)
    face = load_face_model(path).model  # found by its kind through the registry
    assert face.emotions == ("HAP", "SAD") and face.target_dim == 3 and face.image_size == 16
    faces = torch.rand(4, 1, 16, 16)
    z_i = face.voice_target(faces)
    assert torch.allclose(z_i, model.identity(faces)[0])  # the identity latent, mu
    latents = face.latents(z_i, torch.tensor([0, 1, 1, 0]))
    assert torch.equal(latents[:, :3], z_i)
    assert torch.equal(latents[1, 3:], torch.tensor(means[1]))
    assert torch.allclose(face.decode(latents, None), model.decode(latents[:, :3], latents[:, 3:]))
    with pytest.raises(ValueError, match="needs an emotion"):
        face.latents(z_i, None)


def test_a_model_without_emotions_uses_the_prior_mean_expression(tmp_path):
    _, path = saved(tmp_path, [], [])
    face = load_face_model(path).model
    latents = face.latents(torch.ones(2, 3), None)
    assert torch.equal(latents[:, 3:], torch.zeros(2, 3))
    with pytest.raises(ValueError, match="without emotion labels"):
        face.latents(torch.ones(2, 3), torch.tensor([0, 0]))
    assert isinstance(load_disentangled(path), DisentangledVAE)


def test_expression_means_that_do_not_fit_the_emotions_name_the_file(tmp_path):
    _, path = saved(tmp_path, ["HAP", "SAD"], [[1.0, 2.0, 3.0]])
    with pytest.raises(ModelFileError, match=f"{path}: expression_means"):
        load_face_model(path)
