"""DDP for the training stages: 2 CPU processes under torchrun (gloo) against 1 process."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch.utils.data import BatchSampler, RandomSampler

from pipeline.models.files import load_model_payload
from pipeline.models.voice_encoder import load_voice_encoder
from pipeline.training.distributed import RankBatches
from tests.conftest import REPO
from tests.factories import make_dataset_dir
from tests.training.test_voice import CLIP, TINY_VAE, write_params

# No augmentation (its draws are per process) and the last epoch's weights: with the same
# seed and global batch, 2 processes must then follow 1 process's curve. (At lr 1e-3 on 16
# clips, Adam turns the rounding of near-zero gradients into full steps: the curves part by
# 2e-3 within 3 epochs, 1 process against itself on other hardware would too.)
VOICE = {"epochs": 3, "batch_size": 8, "checkpoint_every": 1, "device": "cpu", "grid_clips": 3,
         "time_shift": False, "select_best": False, "threads": 1, "lr": 0.0003}


def test_rank_batches_split_every_global_batch_of_one_process():
    one = list(BatchSampler(RandomSampler(range(21), generator=torch.Generator().manual_seed(3)),
                            8, drop_last=False))
    shares = [list(RankBatches(21, 8, True, torch.Generator().manual_seed(3), rank, 2))
              for rank in (0, 1)]
    assert len(shares[0]) == len(shares[1]) == 3
    for batch, first, second in zip(one, *shares, strict=True):
        assert first == batch[0::2] and second == batch[1::2]
    # a last batch of 1 sample cannot be split over 2 processes: skipped on both
    assert [len(b) for b in RankBatches(17, 8, False, None, 1, 2)] == [4, 4]


def stage(module: str, argv: list[str]) -> None:
    """Run a stage's CLI as DVC does (it starts torchrun itself when params ask for it)."""
    done = subprocess.run([sys.executable, "-m", module, *argv], cwd=REPO, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]


def voice_argv(tmp_path, name: str, params, dataset, vae) -> list[str]:
    out = tmp_path / name
    return ["--params", str(params), "--dataset", str(dataset), "--vae", str(vae),
            "--out", str(out / "model"), "--checkpoints", str(out / "ckpt"),
            "--live", str(out / "live")]


def loss_curve(live_dir, split: str) -> list[float]:
    rows = (live_dir / "plots" / "metrics" / split / "loss.tsv").read_text().split("\n")[1:]
    return [float(row.split("\t")[1]) for row in rows if row]


@pytest.mark.slow
def test_two_processes_follow_one_and_resume(tmp_path, repo_root):
    dataset = make_dataset_dir(tmp_path / "dataset", {"train": 16, "val": 6, "test": 3},
                               face_size=16, audio_samples=CLIP)
    # the VAE in 2 processes too (its sampling noise is per process: no curve to compare)
    vae = tmp_path / "vae"
    params_one = write_params(repo_root, tmp_path / "one.yaml", VOICE,
                              {**TINY_VAE, "epochs": 2, "processes": 2, "checkpoint_every": 1})
    stage("stages.train_vae", ["--params", str(params_one), "--dataset", str(dataset), "--out",
                               str(vae), "--checkpoints", str(vae / "ckpt"),
                               "--live", str(tmp_path / "live_vae")])
    assert load_model_payload(vae / "model.pt", "FaceVAE")["provenance"]["epoch"] == 2
    assert torch.load(vae / "ckpt" / "last.pt", weights_only=True)["epoch"] == 2
    vae_model = vae / "model.pt"
    stage("stages.train_voice", voice_argv(tmp_path, "one", params_one, dataset, vae_model))
    # 2 processes: 2 epochs, then raised to 3 (a resume from the epoch-2 checkpoint)
    two = voice_argv(tmp_path, "two", write_params(
        repo_root, tmp_path / "two.yaml", {**VOICE, "epochs": 2, "processes": 2}), dataset,
        vae_model)
    stage("stages.train_voice", two)
    resumed = write_params(repo_root, tmp_path / "two.yaml", {**VOICE, "processes": 2})
    stage("stages.train_voice", voice_argv(tmp_path, "two", resumed, dataset, vae_model))

    for split in ("train", "val"):
        one, two = (loss_curve(tmp_path / name / "live", split) for name in ("one", "two"))
        print(f"{split} loss, 1 process: {one}\n{split} loss, 2 processes: {two}")
        assert len(one) == len(two) == 3
        assert two == pytest.approx(one, rel=1e-4)
    # The same function (weights such as a conv bias before BatchNorm have no gradient but
    # rounding, which Adam turns into steps: compare what the encoders compute)
    encoders = [load_voice_encoder(tmp_path / name / "model" / "model.pt")
                for name in ("one", "two")]
    with torch.no_grad():
        waves = torch.randn(4, CLIP, generator=torch.Generator().manual_seed(0))
        torch.testing.assert_close(encoders[1](waves), encoders[0](waves), rtol=1e-3, atol=1e-4)
    checkpoint = torch.load(tmp_path / "two" / "ckpt" / "last.pt", weights_only=True)
    assert checkpoint["epoch"] == 3 and not any(k.startswith("module.")
                                                for k in checkpoint["model"])
