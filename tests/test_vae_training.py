import json
import logging

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from pipeline.models.vae import FaceVAE, VaeConfig, load_vae
from pipeline.vae_training import (
    dataset_fingerprint,
    label_swap_grid,
    model_emotion_codes,
    mouth_swap_ratio,
    psnr,
)
from stages.train_vae import main
from tests.factories import make_dataset_dir


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def write_params(repo_root, path, **train_vae):
    document = yaml.safe_load((repo_root / "params.yaml").read_text())
    document["train_vae"].update(train_vae)
    path.write_text(yaml.safe_dump(document))
    return path


TINY = {"epochs": 3, "batch_size": 8, "feature_dim": 16, "latent_dim": 8,
        "channels": [4, 8], "checkpoint_every": 2, "device": "cpu", "grid_faces": 4}


def run_stage(tmp_path, params, dataset):
    out = tmp_path / "models" / "vae"
    argv = ["--params", str(params), "--dataset", str(dataset), "--out", str(out),
            "--checkpoints", str(tmp_path / "ckpt"), "--live", str(tmp_path / "live")]
    assert main(argv) == 0
    return out


def test_stage_trains_saves_grids_and_reports_metrics(tmp_path, repo_root, caplog):
    dataset = make_dataset_dir(tmp_path / "dataset", {"train": 21, "val": 6, "test": 3},
                               face_size=16)
    params = write_params(repo_root, tmp_path / "params.yaml", **TINY)
    out = run_stage(tmp_path, params, dataset)

    model = load_vae(out / "model.pt")
    assert model.config.image_size == 16 and model.config.code_dim == 8
    provenance = torch.load(out / "model.pt", weights_only=True)["provenance"]
    assert provenance["codes"] == ["00000011", "00110000", "11000000", "00001100"]
    assert provenance["epoch"] == 3 and provenance["data"] == dataset_fingerprint(dataset)
    emotions, codes = model_emotion_codes(out / "model.pt")
    assert emotions == ["ANG", "HAP", "NEU", "SAD"] and codes.shape == (4, 8)

    metrics = json.loads((tmp_path / "live" / "metrics.json").read_text())["final"]
    for key in ("val_mse", "val_kl", "val_psnr_db", "mean_face_mse", "swap_mouth_ratio"):
        assert np.isfinite(metrics[key]), key
    assert metrics["val_psnr_db"] == pytest.approx(psnr(metrics["val_mse"]))
    # the factory's val faces are flat grey levels 21..26: the mean train face (level 10)
    assert metrics["mean_face_mse"] == pytest.approx(
        np.mean([((k - 10) / 255) ** 2 for k in range(21, 27)]), rel=1e-4)
    assert (tmp_path / "live" / "plots" / "metrics" / "val" / "loss.tsv").exists()

    recon = Image.open(out / "reconstructions.png")
    swap = Image.open(out / "label_swap.png")
    assert swap.height > 2 * recon.height  # 1 + 4 emotion rows vs 2 rows
    assert recon.width == swap.width

    # a re-run with the same data and training params (grids may differ) resumes the
    # finished run: identical model
    before = torch.load(out / "model.pt", weights_only=True)["state_dict"]
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="pipeline.training"):
        run_stage(tmp_path, write_params(repo_root, params, **{**TINY, "grid_faces": 3}),
                  dataset)
    assert "resumed from" in caplog.text and "epoch 1/3" not in caplog.text
    after = torch.load(out / "model.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_fingerprint_changes_with_the_data(tmp_path):
    a = make_dataset_dir(tmp_path / "a", {"train": 4, "val": 2, "test": 2})
    b = make_dataset_dir(tmp_path / "b", {"train": 4, "val": 2, "test": 2})
    assert dataset_fingerprint(a) == dataset_fingerprint(b)
    meta = json.loads((b / "meta.json").read_text())
    meta["emotions"] = ["SAD", "NEU", "HAP", "ANG"]
    (b / "meta.json").write_text(json.dumps(meta))
    assert dataset_fingerprint(a) != dataset_fingerprint(b)


def test_mouth_swap_ratio_sees_where_the_codes_differ():
    # A VAE whose code only changes the decoded mouth band scores > 1; upper band < 1.
    torch.manual_seed(0)
    model = FaceVAE(VaeConfig(image_size=16, feature_dim=4, latent_dim=2, code_dim=2,
                              channels=(2,))).eval()
    mouth = torch.zeros(1, 1, 16, 16)
    mouth[..., 11:15, 3:13] = 1.0
    upper = torch.zeros(1, 1, 16, 16)
    upper[..., 2:8, 3:13] = 1.0

    def decoder_for(region):
        def decode(mu):
            return region * mu[:, :1, None, None]
        return decode

    faces = torch.rand(3, 1, 16, 16)
    with torch.no_grad():
        model.to_mu.weight.zero_()
        model.to_mu.bias.zero_()
        model.to_mu.weight[0, 4] = 1.0  # mu[0] = first code bit
    hap, sad = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 0.0])
    model.decode = decoder_for(mouth)
    assert mouth_swap_ratio(model, faces, hap, sad) > 10
    model.decode = decoder_for(upper)
    assert mouth_swap_ratio(model, faces, hap, sad) < 0.1
    grid = label_swap_grid(model, faces, torch.tensor([0, 1, 0]), torch.stack([hap, sad]),
                           ["HAP", "SAD"])
    assert grid.size[0] > 3 * 16


@pytest.mark.slow
@pytest.mark.xfail(strict=False, reason=(
    "target not met yet: with 003's encoder-only code, demo params (100 epochs) give "
    "swap_mouth_ratio 0.55 (8 bits/class: 0.66) and mean |HAP-SAD| 0.012 on the demo corpus"))
def test_trained_demo_vae_moves_the_mouth_for_hap_vs_sad(repo_root):
    """003 Fig. 7 on the embedded corpus, after `make demo` has trained models/vae/model.pt.

    The HAP and SAD decodes of the same validation faces must differ more around the mouth
    than over the eyes and forehead, and the mouth corners must differ more than the face
    as a whole.
    """
    model_path, dataset = repo_root / "models/vae/model.pt", repo_root / "data/dataset"
    if not model_path.exists() or not (dataset / "meta.json").exists():
        pytest.skip("needs `make demo` (dvc repro) to have trained models/vae/model.pt")
    from pipeline.data import load_split
    from pipeline.vae_training import swap_decode

    model = load_vae(model_path)
    emotions, codes = model_emotion_codes(model_path)
    faces = load_split(dataset, "val").face
    hap, sad = codes[emotions.index("HAP")], codes[emotions.index("SAD")]
    assert mouth_swap_ratio(model, faces, hap, sad) > 1.0
    diff = (swap_decode(model, faces, hap) - swap_decode(model, faces, sad)).abs().mean(0)[0]
    s = faces.shape[-1]
    rows = slice(int(0.68 * s), int(0.85 * s))
    corners = torch.cat([diff[rows, int(0.22 * s):int(0.38 * s)],
                         diff[rows, int(0.62 * s):int(0.78 * s)]], dim=1)
    assert corners.mean() > diff.mean()

