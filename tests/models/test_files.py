import zipfile

import torch

from pipeline.models.files import load_model_payload, save_model_file
from pipeline.models.vae import FaceVAE, VaeConfig


def tiny_vae(seed: int) -> FaceVAE:
    torch.manual_seed(seed)
    return FaceVAE(VaeConfig(image_size=16, feature_dim=8, latent_dim=4, code_dim=4,
                             channels=(4,)))


def test_identical_weights_give_identical_bytes_wherever_saved(tmp_path):
    provenance = {"params": {"beta": 1.0}, "epoch": 2}
    first = save_model_file(tmp_path / "a" / "model.pt", "FaceVAE", tiny_vae(0), provenance)
    second = save_model_file(tmp_path / "b" / "other.pt", "FaceVAE", tiny_vae(0), provenance)
    assert first.read_bytes() == second.read_bytes()
    # no trace of the (random) temporary name the file was written under
    assert {name.split("/")[0] for name in zipfile.ZipFile(first).namelist()} == {"archive"}
    assert not list(tmp_path.rglob("*.tmp"))
    payload = load_model_payload(second, "FaceVAE")
    assert payload["provenance"] == provenance


def test_other_weights_give_other_bytes(tmp_path):
    first = save_model_file(tmp_path / "a.pt", "FaceVAE", tiny_vae(0), {})
    second = save_model_file(tmp_path / "b.pt", "FaceVAE", tiny_vae(1), {})
    assert first.read_bytes() != second.read_bytes()
