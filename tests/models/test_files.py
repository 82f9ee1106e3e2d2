"""Model files: identical weights give identical bytes; files that cannot be loaded are refused
with one error naming the file and why."""

import fractions
import traceback
import zipfile

import numpy as np
import pytest
import torch

from pipeline.models.files import ModelFileError, load_model_payload, save_model_file
from pipeline.models.vae import FaceVAE, VaeConfig
from tests.factories import write_wav

NOT_AN_ARCHIVE = "not a model file (not a PyTorch archive written by torch.save)"


def _text(path):
    path.write_text("hello, not a model\n" * 10)  # torch.load alone: KeyError: 101


def _empty(path):
    path.write_bytes(b"")


def _wav(path):
    write_wav(path.with_suffix(".wav"), np.zeros(800, np.float32), 8000).rename(path)


def _zip(path):
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("notes.txt", "a zip, but not torch's layout")


@pytest.mark.parametrize("write", [_text, _empty, _wav, _zip])
def test_a_file_that_is_no_torch_archive_is_not_a_model_file(tmp_path, write):
    path = tmp_path / "model.pt"
    write(path)
    with pytest.raises(ModelFileError) as error:
        load_model_payload(path, "FaceVAE")
    assert str(error.value) == f"{path}: {NOT_AN_ARCHIVE}"


def test_an_unsafe_pickle_is_refused_without_advice_to_switch_the_safety_off(tmp_path):
    path = tmp_path / "model.pt"
    torch.save({"kind": "FaceVAE", "extra": fractions.Fraction(1, 3)}, path)
    with pytest.raises(ModelFileError) as error:
        load_model_payload(path, "FaceVAE")
    assert str(error.value) == (
        f"{path}: refused: it holds a pickled fractions.Fraction, not only tensors and plain "
        "data; model files hold nothing else, so that loading one cannot run code")
    # torch's own message (which suggests weights_only=False) is not chained into the report
    shown = "".join(traceback.format_exception(error.value))
    assert "weights_only" not in shown and "UnpicklingError" not in shown


@pytest.mark.parametrize("payload, holding", [
    ([1, 2], "a list without a model kind"),
    ({"config": {}}, "a dict without a model kind"),
])
def test_a_torch_archive_without_a_kind_is_not_a_model_file(tmp_path, payload, holding):
    path = tmp_path / "model.pt"
    torch.save(payload, path)
    with pytest.raises(ModelFileError) as error:
        load_model_payload(path, "FaceVAE")
    assert str(error.value) == f"{path}: not a model file (a PyTorch archive holding {holding})"


def test_a_model_of_another_kind_is_named(tmp_path):
    path = tmp_path / "model.pt"
    torch.save({"kind": "VoiceEncoder"}, path)
    with pytest.raises(ModelFileError) as error:
        load_model_payload(path, ("FaceVAE", "Other"))
    assert str(error.value) == (f"{path}: not a FaceVAE or Other model file (its kind is "
                                "'VoiceEncoder')")
    assert load_model_payload(path, "VoiceEncoder") == {"kind": "VoiceEncoder"}


def test_a_missing_file_stays_a_file_not_found_error(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no\.pt"):
        load_model_payload(tmp_path / "no.pt", "FaceVAE")


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
