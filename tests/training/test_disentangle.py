import json

import pyarrow.parquet as pq
import pytest
import torch
import yaml

from pipeline.config import TrainDisentangledParams
from pipeline.models.disentangled import DisentangledConfig, DisentangledVAE, load_disentangled
from pipeline.models.registry import load_face_model
from pipeline.training.disentangle import (
    EXPRESSION,
    IDENTITY,
    DisentangleObjective,
    LossWeights,
    SpeakerFaces,
    StagePlan,
    identity_stage_loss,
    reconstruction,
    swap_partners,
    switch_loss,
)
from pipeline.training.fit import CHECKPOINT_NAME, Callback, load_checkpoint
from stages.train_disentangled import main
from tests.factories import make_dataset_dir

pytestmark = pytest.mark.usefixtures("one_torch_thread")

D = 3  # latent width of the hand-built pair


def pixels_decode(z_i, z_e):
    """A decoder that writes both latents into the image's first pixels (exactly invertible)."""
    image = torch.zeros(len(z_i), 1, 4, 4)
    image.view(len(z_i), -1)[:, :2 * D] = torch.cat([z_i, z_e], dim=1)
    return image


def read_identity(image):
    return image.flatten(1)[:, :D]


def read_expression(image):
    return image.flatten(1)[:, D:2 * D]


def test_switch_loss_is_zero_for_a_pair_that_round_trips_latents_exactly():
    z_i, z_e = torch.randn(5, D), torch.randn(5, D)
    partner = torch.tensor([1, 2, 3, 4, 0])
    loss = switch_loss(z_i, z_e, partner, pixels_decode, read_identity, read_expression)
    assert loss.item() == 0.0


def test_switch_loss_is_positive_when_the_decoder_drops_z_e():
    z_i, z_e = torch.randn(5, D), torch.randn(5, D)
    partner = torch.tensor([1, 2, 3, 4, 0])

    def drops_z_e(a, b):
        return pixels_decode(a, torch.zeros_like(b))

    loss = switch_loss(z_i, z_e, partner, drops_z_e, read_identity, read_expression)
    # what is read back is 0, so the loss is the partners' mean squared expression
    assert loss.item() == pytest.approx(z_e[partner].pow(2).mean().item())
    assert loss.item() > 0


def test_swap_partners_are_faces_of_other_speakers():
    torch.manual_seed(0)
    speaker = torch.tensor([0, 0, 1, 2, 2, 2])
    for _ in range(20):
        partner, valid = swap_partners(speaker)
        assert valid.all()
        assert (speaker[partner] != speaker).all()
    _, valid = swap_partners(torch.tensor([4, 4]))
    assert not valid.any()  # one speaker in the batch: nothing to swap with


def test_identity_pairs_are_other_faces_of_the_same_speaker():
    torch.manual_seed(0)
    faces = torch.arange(7.0).view(7, 1, 1, 1)  # face k is filled with k
    data = SpeakerFaces(faces, ["a", "b", "a", "a", "b", "c", "a"])
    drawn: dict[int, set[int]] = {}
    for _ in range(60):
        for i in range(len(data)):
            sample = data[i]
            other = int(sample["other"].item())
            drawn.setdefault(i, set()).add(other)
            assert data.speaker[other] == sample["speaker"] == data.speaker[i]
    assert drawn[0] == {2, 3, 6}  # every other face of speaker a, never itself
    assert drawn[1] == {4}
    assert drawn[5] == {5}  # speaker c has one face: it is its own target


def test_the_identity_stage_reconstructs_the_other_face():
    torch.manual_seed(0)
    model = DisentangledVAE(DisentangledConfig(image_size=16, latent_dim=3, channels=(4,))).eval()
    faces, others = torch.rand(4, 1, 16, 16), torch.rand(4, 1, 16, 16)
    terms = identity_stage_loss(model, faces, others, LossWeights(kl=0.0))
    with torch.no_grad():
        mu = model.identity(faces)[0]
        decoded = model.decode(mu, torch.zeros_like(mu))  # z_e = 0 (002 section 3)
    assert terms["recon"].item() == pytest.approx(reconstruction(decoded, others).item())
    assert terms["recon"].item() != pytest.approx(reconstruction(decoded, faces).item())


def test_stage_plan_alternates_stages_and_decays_the_lr_within_each():
    plan = StagePlan(rounds=2, identity_epochs=2, expression_epochs=3, lr=1.0, lr_decay=0.5)
    assert plan.epochs == 10
    stages = [plan.stage_at(e) for e in range(plan.epochs)]
    assert stages == [(IDENTITY, 0), (IDENTITY, 1), (EXPRESSION, 0), (EXPRESSION, 1),
                      (EXPRESSION, 2)] * 2
    assert [plan.lr_at(e) for e in range(5)] == [1.0, 0.5, 1.0, 0.5, 0.25]
    assert [plan.round_ends(e) for e in (0, 4, 5, 9, 10)] == [None, None, 1, None, 2]


def test_the_discriminator_steps_only_in_the_expression_stage():
    model = DisentangledVAE(DisentangledConfig(image_size=16, latent_dim=3, channels=(4,)))
    objective = DisentangleObjective(LossWeights(), IDENTITY)
    batch = {"face": torch.rand(2, 1, 16, 16), "speaker": torch.tensor([0, 1])}
    assert objective.discriminator(model, batch) is None
    objective.stage = EXPRESSION
    assert set(objective.discriminator(model, batch)) == {"loss", "real", "decoded", "prior"}
    assert set(objective(model, batch)) == {"loss", "recon", "kl", "mse", "gan", "switch"}
    objective.weights = LossWeights(adversarial=0.0, switch=0.0)
    assert objective.discriminator(model, batch) is None
    assert set(objective(model, batch)) == {"loss", "recon", "kl", "mse"}


# --- the stage ---------------------------------------------------------------------------------

TINY = {"rounds": 2, "identity_epochs": 1, "expression_epochs": 2, "batch_size": 4,
        "latent_dim": 3, "channels": [4], "checkpoint_every": 1, "device": "cpu",
        "baseline_epochs": 1, "threads": 1}


def write_params(repo_root, path, **overrides):
    document = yaml.safe_load((repo_root / "params.yaml").read_text())
    document["train_disentangled"].update(TINY, **overrides)
    path.write_text(yaml.safe_dump(document))
    return path


def run_stage(tmp_path, params, dataset, name="run"):
    out = tmp_path / name
    argv = ["--params", str(params), "--dataset", str(dataset), "--out", str(out),
            "--checkpoints", str(out / "ckpt"), "--live", str(out / "live")]
    assert main(argv) == 0
    return out


@pytest.fixture
def dataset(tmp_path):
    # 16 px: one conv pair down to 002's 4 x 4 bottom and back; 6 speakers x 3 faces train
    return make_dataset_dir(tmp_path / "dataset", {"train": 18, "val": 6, "test": 6},
                            face_size=16)


def test_stage_trains_saves_rounds_and_a_face_model(tmp_path, repo_root, dataset):
    params = write_params(repo_root, tmp_path / "params.yaml")
    out = run_stage(tmp_path, params, dataset)
    face = load_face_model(out / "model.pt").model
    assert face.emotions == ("ANG", "HAP", "NEU", "SAD")
    assert face.expression_means.shape == (4, 3)
    assert sorted(p.name for p in (out / "rounds").iterdir()) == ["round_1.pt", "round_2.pt"]
    round_2 = load_disentangled(out / "rounds" / "round_2.pt").state_dict()
    for name, value in face.model.state_dict().items():
        assert torch.equal(value, round_2[name]), name  # the last round is the final model
    history = json.loads((out / "live" / "metrics.json").read_text())
    assert "final" in history and history["final"]["expression_mse"] > 0
    provenance = torch.load(out / "model.pt", weights_only=True)["provenance"]
    assert provenance["epoch"] == 6 and provenance["params"]["rounds"] == 2


class KillAfter(Callback):
    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_epoch_end(self, state, record):
        if state.epoch == self.epoch:
            raise KeyboardInterrupt(f"simulated kill after epoch {self.epoch}")


def test_resume_after_a_kill_gives_the_uninterrupted_weights(tmp_path, repo_root, dataset,
                                                             monkeypatch):
    import pipeline.training.disentangle as module

    params = write_params(repo_root, tmp_path / "params.yaml")
    reference = run_stage(tmp_path, params, dataset, "reference")
    original = module.train_model

    def killed(run, data):
        run.callbacks.append(KillAfter(4))  # mid round 2, in its expression stage
        return original(run, data)

    monkeypatch.setattr(module, "train_model", killed)
    with pytest.raises(KeyboardInterrupt):
        run_stage(tmp_path, params, dataset, "resumed")
    assert load_checkpoint(tmp_path / "resumed" / "ckpt" / CHECKPOINT_NAME)["epoch"] == 4
    assert "adversary_optimizer" in load_checkpoint(
        tmp_path / "resumed" / "ckpt" / CHECKPOINT_NAME)
    monkeypatch.setattr(module, "train_model", original)
    resumed = run_stage(tmp_path, params, dataset, "resumed")
    a = torch.load(reference / "model.pt", weights_only=True)
    b = torch.load(resumed / "model.pt", weights_only=True)
    for name, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][name]), name
    assert a["provenance"]["expression_means"] == b["provenance"]["expression_means"]
    assert (reference / "rounds" / "round_1.pt").read_bytes() == (
        resumed / "rounds" / "round_1.pt").read_bytes()


def test_the_stage_refuses_a_model_it_does_not_train(tmp_path, repo_root, dataset):
    params = write_params(repo_root, tmp_path / "params.yaml", model="vae")
    with pytest.raises(ValueError, match=r"train_disentangled\.model: 'vae' is not trained"):
        run_stage(tmp_path, params, dataset)


def test_params_default_to_the_demo_section():
    assert TrainDisentangledParams().model == "disentangled"


def test_training_takes_the_equally_spaced_frames_when_the_dataset_has_them(dataset):
    import numpy as np
    import pyarrow as pa

    from pipeline.schemas import DATASET_FRAMES
    from pipeline.shards import ShardWriter
    from pipeline.training.disentangle import read_training_data

    chosen = read_training_data(dataset)
    assert chosen.train.clip_id == chosen.chosen.clip_id  # no frames: the chosen ones
    for split in ("train", "val"):
        clips = pq.read_table(next((dataset / split).glob("part-*.parquet"))).to_pylist()
        rows = [{**{k: c[k] for k in ("clip_id", "speaker_id", "emotion", "emotion_index",
                                        "split", "face_size")},
                 "frame_index": f, "face": np.full(256, f, np.uint8).tobytes()}
                for c in clips for f in (9, 3)]
        with ShardWriter(dataset / split, "frames", DATASET_FRAMES, 2**20, 8) as writer:
            writer.write(pa.Table.from_pylist(rows))
    data = read_training_data(dataset)
    assert len(data.train) == 2 * len(data.chosen) == 36 and len(data.val) == 12
    assert data.train.clip_id[:2] == [data.chosen.clip_id[0]] * 2  # by clip, then frame
    assert data.train.face[0].mean().item() == pytest.approx(3 / 255)
    assert data.fingerprint != chosen.fingerprint  # resuming cannot mix the two
