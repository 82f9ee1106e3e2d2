"""The evaluate stage end to end: a fabricated dataset, tiny untrained models, the real CLI."""

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from PIL import Image

from pipeline.models.emotion_code import code_string, emotion_codes
from pipeline.models.vae import FaceVAE, VaeConfig, save_model
from pipeline.models.voice_encoder import VoiceEncoder, VoiceEncoderConfig, save_voice_encoder
from pipeline.schemas import DATASET, conform

EMOTIONS = ("ANG", "HAP", "NEU", "SAD")
FACE = 16
AUDIO_SAMPLES = 800
FEATURES = 16
# split -> [(speaker, sex, age)]; every speaker says one clip per emotion.
SPEAKERS = {
    "train": [("t1", "Female", 20), ("t2", "Male", 30), ("t3", "Female", 40),
              ("t4", "Male", 50), ("t5", "Female", 60), ("t6", "Male", 70)],
    "val": [("v1", "Female", 33), ("v2", "Male", 44)],
    "test": [("x1", "Female", 25), ("x2", "Male", 35), ("x3", "Female", 45),
             ("x4", "Male", 55)],
}
N_TEST_SPEAKERS = 4
N_TRAIN_SPEAKERS = 6
N_TEST_CLIPS = 16
ROWS = ("model", "oracle", "mean_face", "random_speaker", "sex_mean_face")


def make_dataset(root, rng, labelled=True):
    """Write DATASET shards + meta.json; faces are noise around a per-speaker pattern.

    ``labelled=False``: the same clips without emotion labels (``meta.json`` emotions []).
    """
    splits = {}
    for split, speakers in SPEAKERS.items():
        rows = []
        for speaker, sex, age in speakers:
            pattern = rng.uniform(0, 255, FACE * FACE)
            for index, emotion in enumerate(EMOTIONS):
                face = np.clip(pattern + rng.normal(0, 20, FACE * FACE), 0, 255).astype(np.uint8)
                audio = (rng.normal(0, 3000, AUDIO_SAMPLES)).astype("<i2")
                rows.append({
                    "clip_id": f"{speaker}_{emotion}", "speaker_id": speaker, "sentence": "IEO",
                    "emotion": emotion if labelled else None, "level": "XX", "sex": sex,
                    "age": age, "race": None, "ethnicity": None,
                    "emotion_index": index if labelled else None, "split": split,
                    "face": face.tobytes(), "face_size": FACE, "frame_index": 0,
                    "audio": audio.tobytes(), "sample_rate": 8000,
                    "source": f"media/{speaker}_{emotion}.flv",
                })
        (root / split).mkdir(parents=True)
        pq.write_table(conform(pa.Table.from_pylist(rows), DATASET),
                       root / split / "part-00000.parquet")
        splits[split] = {"clips": len(rows), "speakers": [s for s, _, _ in speakers]}
    meta = {"emotions": list(EMOTIONS) if labelled else [], "face_size": FACE, "sample_rate": 8000,
            "audio_samples": AUDIO_SAMPLES, "splits": splits, "split_mode": "speaker"}
    (root / "meta.json").write_text(json.dumps(meta))
    return root


def make_models(root, conditional=True, constant_voice=False, emotions=EMOTIONS):
    torch.manual_seed(0)
    vae = FaceVAE(VaeConfig(image_size=FACE, feature_dim=FEATURES, latent_dim=6,
                            code_dim=8, conditional=conditional, channels=(4, 8))).eval()
    voice = VoiceEncoder(VoiceEncoderConfig(
        frames=16, reference_channels=(4,) * 6, gru_hidden=8, out_dim=FEATURES, heads=2,
    )).eval()
    if constant_voice:  # attention weights sum to 1: the output is the value bias
        with torch.no_grad():
            voice.attention.value.weight.zero_()
            voice.attention.value.bias.uniform_(-1, 1)
    codes = [code_string(c) for c in emotion_codes(emotions, 2)] if conditional else []
    provenance = {"emotions": list(emotions), "codes": codes, "epoch": 0, "git_revision": "test"}
    vae_path = save_model(root / "vae.pt", vae, provenance)
    voice_path = save_voice_encoder(root / "voice.pt", voice, {"epoch": 0})
    return vae_path, voice_path


def write_params(repo_root, path, **evaluate):
    document = yaml.safe_load((repo_root / "params.yaml").read_text())
    document["evaluate"].update({"clustering_runs": 3, "face_embedding": False,
                                 "grid_clips": 3, "emotion_grid_clips": 2, **evaluate})
    path.write_text(yaml.safe_dump(document))
    return path


def run_cli(repo_root, tmp_path, vae, voice, **evaluate):
    out = tmp_path / "evaluate"
    params = write_params(repo_root, tmp_path / "params.yaml", **evaluate)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "stages.evaluate", "--params", str(params),
         "--dataset", str(tmp_path / "dataset"), "--vae", str(vae), "--voice", str(voice),
         "--out", str(out)],
        cwd=repo_root, env=env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return out, result.stderr


@pytest.fixture
def inputs(tmp_path, deterministic_rng):
    make_dataset(tmp_path / "dataset", deterministic_rng)
    return tmp_path


def grid_size(ncols, nrows, scale=2, pad=2, caption=12):
    """Side lengths image_grid gives captioned FACE x FACE tiles (hand-derived layout)."""
    tile = FACE * scale
    return ncols * (tile + pad) + pad, nrows * (tile + caption + pad) + pad


def test_stage_writes_every_output_with_chance_levels_of_the_test_split(repo_root, inputs):
    vae_path, voice_path = make_models(inputs)
    out, stderr = run_cli(repo_root, inputs, vae_path, voice_path)

    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == {*ROWS, "chance", "train_speakers"}
    expected = {"latent.mse", "latent.cosine", "image.mse", "image.psnr", "image.ssim",
                "latent.r@1", "latent.r@5", "latent.mean_rank", "latent.match",
                "latent.match_same_sex", "attr.sex_agreement", "attr.age_mae",
                "attr.emotion_agreement", "cluster.accuracy",
                *(f"attr.emotion.{e}" for e in EMOTIONS)}
    for row in ROWS:
        assert expected <= set(metrics[row]), f"{row} lacks {expected - set(metrics[row])}"
        assert not any(k.startswith("face.") for k in metrics[row])
    chance = metrics["chance"]
    assert chance["latent.r@1"] == pytest.approx(1 / N_TEST_SPEAKERS)
    assert chance["latent.r@5"] == pytest.approx(1.0)  # only 4 speakers: top 5 holds them all
    assert chance["latent.mean_rank"] == pytest.approx((N_TEST_SPEAKERS + 1) / 2)
    assert chance["latent.match"] == chance["latent.match_same_sex"] == 0.5
    assert chance["attr.sex_agreement"] == pytest.approx(0.5)  # 2 F + 2 M speakers
    assert chance["attr.emotion_agreement"] == pytest.approx(0.25)
    # training median age 45; test ages 25, 35, 45, 55 -> |errors| 20, 10, 0, 10
    assert chance["attr.age_mae"] == pytest.approx(10.0)
    # k = 4 balanced classes over 16 clips: (k + (n - k) * sum p^2) / n = (4 + 12/4) / 16
    assert chance["cluster.accuracy"] == pytest.approx(7 / 16)
    assert chance["latent.mse"] is None
    # a constant prediction carries no identity: exactly chance with expected tie ranks
    assert metrics["mean_face"]["latent.r@1"] == pytest.approx(1 / N_TEST_SPEAKERS)

    _check_against_the_models(metrics, inputs / "dataset", vae_path, voice_path)
    _check_per_clip_and_plots(out)
    fit = metrics["train_speakers"]  # the diagnostic: the same scores on the training speakers
    assert set(fit) == {"model", "sex_mean_face", "chance"}
    assert fit["chance"]["latent.r@1"] == pytest.approx(1 / N_TRAIN_SPEAKERS)
    assert fit["chance"]["latent.mean_rank"] == pytest.approx((N_TRAIN_SPEAKERS + 1) / 2)

    speakers = Image.open(out / "speakers.png")  # 4 speakers x (real + 3 of their 4 clips)
    assert speakers.size == grid_size(ncols=4, nrows=N_TEST_SPEAKERS)
    emotions = Image.open(out / "emotions.png")  # 2 clips x (real + one row per emotion)
    assert emotions.size == grid_size(ncols=2, nrows=1 + len(EMOTIONS))

    report = (out / "report.md").read_text()
    assert "| latent.r@1 |" in report and "speakers.png" in report and "emotions.png" in report
    assert "## Fit on the training speakers (diagnostic)" in report
    assert f"{N_TEST_CLIPS} clips of {N_TEST_SPEAKERS} speakers, speakers disjoint" in report
    assert "face_embedding: false" in report
    beaten = metrics["model"]["latent.r@1"] > metrics["mean_face"]["latent.r@1"]
    assert ("does not beat the mean-face baseline" in report) is not beaten
    assert ("WARNING" in stderr) is not beaten


def _check_against_the_models(metrics, dataset, vae_path, voice_path):
    """Recompute the oracle's reconstruction MSE and the model's latent MSE via forward()."""
    from pipeline.loaders import load_split
    from pipeline.models.vae import load_vae
    from pipeline.models.voice_encoder import load_voice_encoder

    test = load_split(dataset, "test")
    vae, voice = load_vae(vae_path), load_voice_encoder(voice_path)
    codes = emotion_codes(EMOTIONS, 2)[test.emotion]
    with torch.no_grad():
        out = vae(test.face, codes)
        predicted_mu = vae.posterior(voice(test.audio), codes)[0]
    recon_mse = (out["recon"] - test.face).pow(2).mean().item()
    latent_mse = (predicted_mu - out["mu"]).pow(2).mean().item()
    assert metrics["oracle"]["image.mse"] == pytest.approx(recon_mse, rel=1e-4)
    assert metrics["oracle"]["latent.mse"] == pytest.approx(0.0, abs=1e-12)
    assert metrics["model"]["latent.mse"] == pytest.approx(latent_mse, rel=1e-4)


def _check_per_clip_and_plots(out):
    per_clip = pd.read_parquet(out / "per_clip.parquet")
    test_clips = sorted(f"x{s}_{e}" for s in range(1, 5) for e in EMOTIONS)
    assert len(per_clip) == len(ROWS) * N_TEST_CLIPS
    for row in ROWS:
        clips = per_clip[per_clip["row"] == row]
        assert clips["clip_id"].tolist() == test_clips
        assert clips["speaker_id"].tolist() == [c.split("_")[0] for c in test_clips]
        assert clips["latent.rank"].between(1, N_TEST_SPEAKERS).all()
    histogram = json.loads((out / "rank_histogram.json").read_text())
    assert [h["rank"] for h in histogram] == [1, 2, 3, 4]
    assert sum(h["count"] for h in histogram) == N_TEST_CLIPS
    for row in ("model", "oracle"):
        confusion = json.loads((out / f"confusion_{row}.json").read_text())
        assert [c["actual"] for c in confusion] == [c.split("_")[1] for c in test_clips]
        assert {c["predicted"] for c in confusion} <= set(EMOTIONS)


def test_constant_voice_warns_that_the_mean_face_is_not_beaten(repo_root, inputs):
    # Unconditional VAE + constant voice features: one latent for every clip, i.e. another
    # constant face, which ranks each speaker first for exactly their 4 of 16 clips.
    vae_path, voice_path = make_models(inputs, conditional=False, constant_voice=True)
    out, stderr = run_cli(repo_root, inputs, vae_path, voice_path)

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["model"]["latent.r@1"] == pytest.approx(1 / N_TEST_SPEAKERS)
    # nor on its training speakers: one face for all, exactly chance among 6 there too
    assert metrics["train_speakers"]["model"]["latent.r@1"] == pytest.approx(1 / N_TRAIN_SPEAKERS)
    assert "WARNING" in stderr and "mean-face baseline" in stderr
    assert "**WARNING: the model does not beat the mean-face baseline" in (
        out / "report.md").read_text()
    emotions = Image.open(out / "emotions.png")  # unconditional: real + one generated row
    assert emotions.size == grid_size(ncols=2, nrows=2)


def test_data_without_emotion_labels_leaves_the_emotion_metrics_out_and_says_so(
    repo_root, tmp_path, deterministic_rng
):
    make_dataset(tmp_path / "dataset", deterministic_rng, labelled=False)
    vae_path, voice_path = make_models(tmp_path, conditional=False, emotions=())
    out, _ = run_cli(repo_root, tmp_path, vae_path, voice_path)

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["emotion"] == "not evaluated: the dataset has no emotion labels"
    for row in (*ROWS, "chance"):
        assert {"latent.r@1", "attr.sex_agreement", "attr.age_mae"} <= set(metrics[row])
        assert not [k for k in metrics[row] if "emotion" in k or k.startswith("cluster.")]
    assert metrics["chance"]["latent.r@1"] == pytest.approx(1 / N_TEST_SPEAKERS)
    for row in ("model", "oracle"):  # dvc.yaml's plots: present, and without rows
        assert json.loads((out / f"confusion_{row}.json").read_text()) == []
    emotions = Image.open(out / "emotions.png")  # a placeholder saying why, not a grid
    assert emotions.size != grid_size(ncols=2, nrows=2)
    report = (out / "report.md").read_text()
    assert "Emotion not evaluated: the dataset has no emotion labels" in report
    assert "Emotion confusion" not in report and "| attr.emotion" not in report
    per_clip = pd.read_parquet(out / "per_clip.parquet")
    assert per_clip["emotion"].isna().all() and len(per_clip) == len(ROWS) * N_TEST_CLIPS


@pytest.mark.slow  # ~60 dlib descriptors at ~100 ms each
def test_dlib_face_space_is_scored_and_reported(repo_root, inputs):
    vae_path, voice_path = make_models(inputs)
    out, _ = run_cli(repo_root, inputs, vae_path, voice_path, face_embedding=True)

    metrics = json.loads((out / "metrics.json").read_text())
    for row in ROWS:
        assert {"face.r@1", "face.r@5", "face.mean_rank", "face.match"} <= set(metrics[row])
    assert metrics["chance"]["face.r@1"] == pytest.approx(1 / N_TEST_SPEAKERS)
    assert metrics["mean_face"]["face.r@1"] == pytest.approx(1 / N_TEST_SPEAKERS)
    per_clip = pd.read_parquet(out / "per_clip.parquet")
    assert per_clip["face.rank"].between(1, N_TEST_SPEAKERS).all()
    assert per_clip["face.landmarks_ok"].dtype == bool
    report = (out / "report.md").read_text()
    assert "5-point landmarks plausible on" in report
    assert "Face-space retrieval" in report


def test_mismatched_models_are_refused_naming_the_file(tmp_path):
    from pipeline.evaluation.encode import load_models

    meta = {"emotions": list(EMOTIONS), "face_size": FACE}
    vae = FaceVAE(VaeConfig(image_size=FACE, feature_dim=FEATURES, latent_dim=6, code_dim=8,
                            channels=(4, 8)))
    vae_path = save_model(tmp_path / "vae.pt", vae, {"emotions": list(EMOTIONS)})
    paths = {}
    for width in (8, FEATURES):
        voice = VoiceEncoder(VoiceEncoderConfig(frames=16, reference_channels=(4,) * 6,
                                                gru_hidden=8, out_dim=width, heads=2))
        paths[width] = save_voice_encoder(tmp_path / f"voice{width}.pt", voice, {})
    with pytest.raises(ValueError, match=r"voice8\.pt: voice model outputs 8 features, the "
                                         r"face model .*vae\.pt expects 16"):
        load_models(vae_path, paths[8], meta)
    with pytest.raises(ValueError, match=r"vae\.pt was trained with emotions \['ANG', 'HAP', "
                                         r"'NEU', 'SAD'\], the dataset has \['ANG', 'HAP', "
                                         r"'SAD', 'NEU'\]"):
        load_models(vae_path, paths[FEATURES], {**meta, "emotions": ["ANG", "HAP", "SAD", "NEU"]})
    with pytest.raises(ValueError, match=r"vae\.pt takes 16px faces, the dataset has 64px"):
        load_models(vae_path, paths[FEATURES], {**meta, "face_size": 64})
    # codes not recorded: derived from the emotions and the code width, as train_vae makes them
    face = load_models(vae_path, paths[FEATURES], meta).face
    assert torch.equal(face.codes, emotion_codes(EMOTIONS, 2))
    wrong = save_model(tmp_path / "wrong.pt", vae, {"emotions": list(EMOTIONS),
                                                    "codes": ["00000011"] * 4})
    with pytest.raises(ValueError, match="VAE trained with emotion codes"):
        load_models(wrong, paths[FEATURES], meta)
