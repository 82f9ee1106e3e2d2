import json
import logging

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from pipeline.images import image_grid
from pipeline.models.registry import load_face_model
from pipeline.models.vae import load_vae
from pipeline.models.voice_encoder import VoiceEncoder, VoiceEncoderConfig, load_voice_encoder
from pipeline.training.fit import FitState
from pipeline.training.voice import (
    BestWeights,
    TargetScaler,
    VoiceTargets,
    circular_shift,
    face_features,
    fold_output_affine,
    speaker_mean_targets,
    speaker_variance_ratio,
    voice_loss,
)
from stages.train_vae import main as train_vae_main
from stages.train_voice import main as train_voice_main
from tests.factories import make_dataset_dir

CLIP = 29_360  # 3.67 s at 8 kHz


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_voice_loss_is_mse_and_reports_feature_units():
    predicted, target = torch.zeros(4, 3), torch.ones(4, 3)
    terms = voice_loss(predicted, target, torch.full((3,), 2.0))
    assert set(terms) == {"loss", "feature_mse"}
    assert terms["loss"].item() == pytest.approx(1.0)
    assert terms["feature_mse"].item() == pytest.approx(4.0)  # error 1 x scale 2, squared


def test_target_scaler_standardises_and_floors_constant_features():
    targets = torch.randn(50, 4) * torch.tensor([1.0, 10.0, 0.1, 0.0]) + 3.0
    scaler = TargetScaler.fit(targets)
    standardised = scaler.transform(targets)
    assert torch.allclose(standardised.mean(0), torch.zeros(4), atol=1e-5)
    assert torch.allclose(standardised[:, :3].std(0, unbiased=False), torch.ones(3), atol=1e-4)
    assert scaler.scale[3] > 0  # a constant feature is not divided by zero
    assert torch.allclose(scaler.inverse(standardised), targets, atol=1e-4)
    identity = TargetScaler.fit(targets, standardize=False)
    assert torch.equal(identity.transform(targets), targets)


def test_folding_the_scaler_into_the_encoder_is_exact(deterministic_rng):
    for pooling in ("temporal", "style_tokens"):
        encoder = VoiceEncoder(VoiceEncoderConfig(out_dim=16, heads=4, pooling=pooling)).eval()
        waves = torch.randn(3, CLIP)
        scaler = TargetScaler(shift=torch.randn(16), scale=torch.rand(16) + 0.5)
        with torch.no_grad():
            expected = scaler.inverse(encoder(waves))
            folded = fold_output_affine(encoder, scaler)(waves)
        assert torch.allclose(folded, expected, atol=1e-5), pooling


def test_encoder_output_shape_matches_the_vae_feature_width():
    encoder = VoiceEncoder(VoiceEncoderConfig(out_dim=16, heads=4))
    assert encoder(torch.randn(2, CLIP)).shape == (2, 16)


def test_loss_decreases_on_a_fixed_batch(deterministic_rng):
    # Table 1's layers on a 40-frame (0.8 s) window instead of 200, to keep the test fast
    config = VoiceEncoderConfig(out_dim=16, heads=4, frames=40)
    encoder = VoiceEncoder(config)
    waves, targets = torch.randn(4, config.n_samples), torch.randn(4, 16)
    optimizer = torch.optim.Adam(encoder.parameters(), lr=1e-3)
    scale = torch.ones(16)
    losses = []
    for _ in range(8):
        loss = voice_loss(encoder(waves), targets, scale)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


def test_speaker_variance_ratio_measures_collapse(deterministic_rng):
    speakers = ["a", "a", "b", "b", "c", "c"]
    true = deterministic_rng.normal(size=(6, 5))
    assert speaker_variance_ratio(true, true, speakers) == pytest.approx(1.0)
    assert speaker_variance_ratio(0.5 * true + 3.0, true, speakers) == pytest.approx(0.25)
    collapsed = np.tile(deterministic_rng.normal(size=(1, 5)), (6, 1))
    assert speaker_variance_ratio(collapsed, true, speakers) == pytest.approx(0.0, abs=1e-12)
    # within-speaker variation alone is not spread across speakers
    within = np.array([[1.0], [-1.0]] * 3) * np.ones((1, 5))
    assert speaker_variance_ratio(within, true, speakers) == pytest.approx(0.0, abs=1e-12)


def test_speaker_mean_targets_average_each_speakers_rows():
    targets = torch.tensor([[1.0, 0.0], [3.0, 2.0], [10.0, 10.0], [5.0, 4.0]])
    means = speaker_mean_targets(targets, ["a", "a", "b", "a"])
    assert means.tolist() == [[3.0, 2.0], [3.0, 2.0], [10.0, 10.0], [3.0, 2.0]]


def test_circular_shift_rotates_without_losing_samples():
    wave = torch.arange(10.0)
    shifted = circular_shift(wave, 3)
    assert shifted.shape == wave.shape
    assert shifted.tolist() == [3, 4, 5, 6, 7, 8, 9, 0, 1, 2]
    assert torch.equal(circular_shift(wave, 0), wave)
    assert torch.equal(circular_shift(wave, 10), wave)


def test_time_shift_draws_are_seeded_and_only_rotate(deterministic_rng):
    audio, target = torch.randn(3, 500), torch.randn(3, 4)
    data = VoiceTargets(audio, target, time_shift=True)

    def draws(seed):
        torch.manual_seed(seed)
        return [data[i]["audio"] for i in (0, 1, 2, 0)]

    first, again, other = draws(1), draws(1), draws(2)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(first, other, strict=True))
    for sample, i in zip(first, (0, 1, 2, 0), strict=True):
        assert sample.shape == audio[i].shape
        shifts = [k for k in range(500) if torch.equal(circular_shift(audio[i], k), sample)]
        assert len(shifts) == 1  # a pure rotation of the clip's own samples
    assert not torch.equal(first[0], first[3])  # a new shift at every draw
    assert torch.equal(data[1]["target"], target[1])
    assert torch.equal(VoiceTargets(audio, target)[2]["audio"], audio[2])  # off: unchanged


def test_best_weights_keeps_and_restores_the_lowest_val_loss_epoch(tmp_path):
    model = torch.nn.Linear(2, 1)
    state = FitState(model, torch.optim.SGD(model.parameters(), lr=0.1), torch.device("cpu"))
    best = BestWeights(tmp_path)
    best.on_fit_start(state)
    weights = {}
    for epoch, loss in enumerate([0.9, 0.5, 0.7, 0.6], start=1):
        with torch.no_grad():
            model.weight.fill_(float(epoch))
        state.epoch = epoch
        record = {"epoch": float(epoch), "val/loss": loss}
        state.history.append(record)
        best.on_epoch_end(state, record)
        weights[epoch] = model.weight.clone()
    assert best.restore(model) == 2
    assert torch.equal(model.weight, weights[2])

    # a resumed run (history restored from a checkpoint) picks the best epoch up from best.pt
    resumed = BestWeights(tmp_path)
    resumed.on_fit_start(state)
    fresh = torch.nn.Linear(2, 1)
    assert resumed.restore(fresh) == 2 and torch.equal(fresh.weight, weights[2])
    # ... but not one that does not match this run's history
    state.history[1] = {"epoch": 2.0, "val/loss": 0.55}
    stale = BestWeights(tmp_path)
    stale.on_fit_start(state)
    assert stale.restore(torch.nn.Linear(2, 1)) == 0


# --- the stage end to end ------------------------------------------------------------------


def write_params(repo_root, path, train_voice, train_vae=None):
    document = yaml.safe_load((repo_root / "params.yaml").read_text())
    document["train_vae"].update(train_vae or TINY_VAE)
    document["train_voice"].update(train_voice)
    path.write_text(yaml.safe_dump(document))
    return path


TINY_VAE = {"epochs": 1, "batch_size": 8, "feature_dim": 16, "latent_dim": 8,
            "channels": [4, 8], "device": "cpu", "grid_faces": 2}
TINY_VOICE = {"epochs": 2, "batch_size": 8, "checkpoint_every": 1, "device": "cpu",
              "grid_clips": 3, "collapse_warning": 0.5, "select_best": True}


def train_tiny_models(tmp_path, repo_root, voice=TINY_VOICE):
    """Run train_vae then train_voice on a tiny synthetic dataset; return the paths."""
    dataset = make_dataset_dir(tmp_path / "dataset", {"train": 18, "val": 9, "test": 3},
                               face_size=16, audio_samples=CLIP)
    params = write_params(repo_root, tmp_path / "params.yaml", voice)
    vae = tmp_path / "models" / "vae"
    assert train_vae_main(["--params", str(params), "--dataset", str(dataset), "--out", str(vae),
                           "--checkpoints", str(vae / "ckpt"),
                           "--live", str(tmp_path / "live_vae")]) == 0
    out = run_voice_stage(tmp_path, params, dataset, vae / "model.pt")
    return {"dataset": dataset, "params": params, "vae": vae / "model.pt", "out": out}


def run_voice_stage(tmp_path, params, dataset, vae):
    out = tmp_path / "models" / "voice"
    argv = ["--params", str(params), "--dataset", str(dataset), "--vae", str(vae),
            "--out", str(out), "--checkpoints", str(out / "checkpoints"),
            "--live", str(tmp_path / "live_voice")]
    assert train_voice_main(argv) == 0
    return out


def best_val_epoch(live_dir):
    """Return the epoch (dvclive step) of the lowest val loss in a dvclive directory."""
    rows = (live_dir / "plots" / "metrics" / "val" / "loss.tsv").read_text().split("\n")[1:]
    steps_losses = [tuple(float(x) for x in row.split("\t")[:2]) for row in rows if row]
    return int(min(steps_losses, key=lambda sl: sl[1])[0])


def test_stage_trains_saves_grid_metrics_guards_collapse_and_resumes(
    tmp_path, repo_root, caplog
):
    with caplog.at_level(logging.WARNING, logger="pipeline.training.voice"):
        run = train_tiny_models(tmp_path, repo_root)
    out, dataset = run["out"], run["dataset"]
    meta = json.loads((dataset / "meta.json").read_text())
    val_speakers = meta["splits"]["val"]["speakers"]

    encoder = load_voice_encoder(out / "model.pt")
    assert encoder.config.out_dim == load_vae(run["vae"]).config.feature_dim == 16
    provenance = torch.load(out / "model.pt", weights_only=True)["provenance"]
    assert provenance["epochs_trained"] == 2 and provenance["emotions"] == meta["emotions"]
    assert provenance["epoch"] == best_val_epoch(tmp_path / "live_voice")
    assert provenance["sample_rate"] == 8000 and provenance["audio_samples"] == CLIP

    metrics = json.loads((tmp_path / "live_voice" / "metrics.json").read_text())["final"]
    assert metrics["r1_chance"] == pytest.approx(1 / len(val_speakers))
    assert metrics["val_speakers"] == len(val_speakers)
    assert 0.0 <= metrics["r1"] <= 1.0
    # the factory's voices are silent but for their first sample: after the encoder's
    # per-clip standardisation they are the same waveform, so every voice gives one face
    assert metrics["collapse_ratio"] < 1e-3
    assert "collapse guard" in caplog.text
    assert np.isfinite(metrics["val_mse"]) and np.isfinite(metrics["val_feature_mse"])
    assert (tmp_path / "live_voice" / "plots" / "metrics" / "val" / "loss.tsv").exists()

    # the saved (folded) encoder predicts raw VAE features: its error against the frozen
    # VAE's features of the val faces is the reported val_feature_mse
    from pipeline.loaders import load_split
    val = load_split(dataset, "val")
    with torch.no_grad():
        predicted = encoder(val.audio)
    true = face_features(load_face_model(run["vae"]).model, val.face)
    assert float((predicted - true).pow(2).mean()) == pytest.approx(
        metrics["val_feature_mse"], rel=1e-4)

    grid = Image.open(out / "voice_to_face.png")
    # one row per val speaker (3), each true | VAE | voice, tiles of 16 px at scale 2
    layout = image_grid([np.zeros((16, 16))] * 9, ncols=3, labels=["x"] * 9, scale=2)
    assert grid.size == layout.size

    other = make_dataset_dir(tmp_path / "other", {"train": 6, "val": 3, "test": 3},
                             face_size=16, emotions=("HAP", "SAD"))
    with pytest.raises(ValueError, match="emotions"):
        run_voice_stage(tmp_path / "other_run", run["params"], other, run["vae"])

    # re-run with more epochs, keeping the last one: resumes from the checkpoint at epoch 2,
    # trains one more and saves epoch 3's weights whatever its val loss
    params = write_params(repo_root, run["params"],
                          {**TINY_VOICE, "epochs": 3, "select_best": False})
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="pipeline.training.fit"):
        run_voice_stage(tmp_path, params, dataset, run["vae"])
    assert "resumed from" in caplog.text and "at epoch 2" in caplog.text
    provenance = torch.load(out / "model.pt", weights_only=True)["provenance"]
    assert provenance["epochs_trained"] == 3 and provenance["epoch"] == 3
