import json
import zipfile

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

from pipeline.models.vae import FaceVAE, VaeConfig, vae_loss
from pipeline.training.fit import (
    CHECKPOINT_NAME,
    Callback,
    DvcLiveCallback,
    FitSettings,
    epoch_seed,
    fit,
    load_checkpoint,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class FaceDicts(Dataset):
    """Dict items like pipeline/loaders.py's: face (1, S, S) in [0, 1] and an emotion label."""

    def __init__(self, n: int, size: int = 16, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.faces = torch.rand(n, 1, size, size, generator=g)
        self.emotions = torch.randint(0, 4, (n,), generator=g)

    def __len__(self) -> int:
        return len(self.faces)

    def __getitem__(self, i: int) -> dict:
        return {"face": self.faces[i], "emotion": self.emotions[i], "clip_id": f"clip{i}"}


def tiny_vae() -> FaceVAE:
    return FaceVAE(VaeConfig(image_size=16, feature_dim=16, latent_dim=8, code_dim=8,
                             channels=(4, 8)))


CODES = torch.eye(4).repeat_interleave(2, dim=1)  # any fixed 8-bit table will do here


def objective(model, batch):
    out = model(batch["face"], CODES[batch["emotion"]])
    return vae_loss(out, batch["face"], beta=1.0)


def settings(**overrides) -> FitSettings:
    values = {"epochs": 5, "batch_size": 8, "lr": 1e-3, "seed": 3, "checkpoint_every": 2,
              "device": "cpu"}
    return FitSettings(**{**values, **overrides})


PARAMS = {"seed": 3, "epochs": 5, "lr": 1e-3, "beta": 1.0, "channels": [4, 8]}  # as to_dict gives


class KillAfter(Callback):
    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_epoch_end(self, state, record):
        if state.epoch == self.epoch:
            raise KeyboardInterrupt(f"simulated kill after epoch {self.epoch}")


def train(ckpt_dir, callbacks=(), params=PARAMS, **overrides):
    torch.manual_seed(0)  # as the stage's seed_everything would
    model = tiny_vae()
    state = fit(model, objective, FaceDicts(37), FaceDicts(11, seed=1), settings(**overrides),
                params=params, checkpoint_dir=ckpt_dir, identity={"data": "abc"},
                callbacks=callbacks)
    return state


def test_resume_after_a_kill_reproduces_the_uninterrupted_weights(tmp_path):
    reference = train(tmp_path / "a")
    with pytest.raises(KeyboardInterrupt):
        train(tmp_path / "b", callbacks=[KillAfter(3)])
    # epoch 3 finished but its checkpoint is not due: the resumed run redoes it from epoch 2
    assert load_checkpoint(tmp_path / "b" / CHECKPOINT_NAME)["epoch"] == 2
    resumed = train(tmp_path / "b")
    assert resumed.resumed_from == 2
    assert resumed.global_step == reference.global_step
    for name, value in reference.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[name]), name
    assert resumed.history[-1]["train/loss"] == reference.history[-1]["train/loss"]
    assert [r["epoch"] for r in resumed.history] == [1, 2, 3, 4, 5]


def test_a_checkpoint_of_other_params_is_not_resumed(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        train(tmp_path, callbacks=[KillAfter(2)])
    state = train(tmp_path, params={**PARAMS, "lr": 5e-4})
    assert state.resumed_from is None
    assert len(state.history) == 5


def test_raising_epochs_continues_a_finished_run(tmp_path):
    train(tmp_path, epochs=2)
    state = train(tmp_path, epochs=4, params={**PARAMS, "epochs": 4})
    assert state.resumed_from == 2
    assert [r["epoch"] for r in state.history] == [1, 2, 3, 4]


def test_checkpoint_loads_weights_only_with_provenance(tmp_path):
    train(tmp_path, epochs=2)
    payload = torch.load(tmp_path / CHECKPOINT_NAME, weights_only=True)
    provenance = payload["provenance"]
    assert provenance["params"] == PARAMS
    assert provenance["identity"] == {"data": "abc"}
    assert provenance["git_revision"]
    assert payload["epoch"] == 2
    assert payload["global_step"] == 2 * 5  # ceil(37 / 8) steps per epoch
    assert "state" in payload["optimizer"] and payload["rng"]["torch"].dtype == torch.uint8
    assert not list(tmp_path.glob("*.tmp"))
    # the zip's folder is not the random temporary name the file was written under
    names = zipfile.ZipFile(tmp_path / CHECKPOINT_NAME).namelist()
    assert {name.split("/")[0] for name in names} == {"archive"}


def test_data_order_is_a_function_of_seed_and_epoch():
    assert epoch_seed(3, 1) == epoch_seed(3, 1)
    assert len({epoch_seed(3, e) for e in range(50)} | {epoch_seed(4, 0)}) == 51


def test_per_epoch_terms_are_logged_for_train_and_val(tmp_path):
    live = DvcLiveCallback(tmp_path / "dvclive")
    state = train(None, callbacks=[live], epochs=3)
    live.finish({"final/val_mse": 0.5})
    record = state.history[-1]
    for split in ("train", "val"):
        assert {f"{split}/{t}" for t in ("loss", "recon", "kl", "mse")} <= set(record)
    assert 0.0 <= record["time/data_wait_share"] <= 1.0
    metrics = json.loads((tmp_path / "dvclive" / "metrics.json").read_text())
    assert metrics["final"]["val_mse"] == 0.5
    assert metrics["val"]["loss"] == pytest.approx(record["val/loss"])
    rows = (tmp_path / "dvclive" / "plots" / "metrics" / "train" / "loss.tsv").read_text()
    assert len(rows.strip().splitlines()) == 1 + 3  # header + one row per epoch


def test_resumed_dvclive_plots_hold_each_epoch_once(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        train(tmp_path / "ckpt", callbacks=[DvcLiveCallback(tmp_path / "live"), KillAfter(3)])
    live = DvcLiveCallback(tmp_path / "live")
    train(tmp_path / "ckpt", callbacks=[live])
    live.finish({})
    rows = (tmp_path / "live" / "plots" / "metrics" / "val" / "loss.tsv").read_text()
    steps = [line.split("\t")[0] for line in rows.strip().splitlines()[1:]]
    assert steps == ["1", "2", "3", "4", "5"]


def test_a_non_finite_loss_stops_training():
    def broken(model, batch):
        return {"loss": model(batch["face"], CODES[batch["emotion"]])["mu"].sum() * float("nan")}

    with pytest.raises(FloatingPointError, match="epoch 1"):
        fit(tiny_vae(), broken, FaceDicts(8), None, settings(epochs=1), params={})


def test_objective_without_loss_is_rejected():
    with pytest.raises(KeyError, match="loss"):
        fit(nn.Linear(1, 1), lambda m, b: {"mse": m(b["x"]).sum()},
            [{"x": torch.ones(1)}], None, settings(epochs=1), params={})
