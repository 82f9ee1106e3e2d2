"""Data without emotion labels, end to end with the real `dvc repro` (issue 15 item 8).

A folder dataset whose labels CSV has no ``emotion`` column (most talking-face data, 000's
VoxCeleb2) runs download -> faces -> audio -> dataset -> train_vae -> train_voice ->
evaluate: every clip with a face and audio is kept, the VAE is unconditional (code width 0),
evaluate leaves the emotion metrics out and says so, and generate needs no emotion.
"""

from __future__ import annotations

import csv
import json
import logging
import re
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from pipeline.config import DemoCorpusParams, DownloadParams
from pipeline.download.catalogue import CATALOGUE_FILE, prepare_dataset
from pipeline.loaders import NO_EMOTION, load_split, read_meta
from pipeline.models.vae import load_vae
from stages.generate import main as generate_main
from stages.train_vae import main as train_vae_main
from tests.factories import speech_like, write_wav
from tests.workflow import (
    ALL_STAGES,
    TINY_PARAMS,
    changed_stages,
    dvc_json,
    make_project,
    repro_timed,
    set_params,
    stages_run,
)

pytestmark = pytest.mark.slow

BROKEN = "broken.flv"
"""A listed video that is not a video: its real reason must show, not an emotion one."""
TINY_MODELS = {"train_vae.feature_dim": 32, "train_vae.latent_dim": 16,
               "train_vae.channels": [8, 16, 32], "train_vae.threads": 1,
               "train_voice.epochs": 1, "train_voice.threads": 1}


def make_unlabelled_folder(root: Path) -> tuple[Path, Path]:
    """Return ``(videos_dir, labels_csv)``: 8 talking-face clips of 8 speakers, no emotions.

    The videos are the demo corpus's (faces dlib finds, voices with speech); the CSV has
    ``file``, ``speaker``, ``sex`` and ``age`` only, plus one row for a broken video.
    """
    demo = DemoCorpusParams(n_speakers=8, emotions=("NEU",), sentences=("IEO",))
    prepare_dataset(DownloadParams(dataset="demo", demo=demo), root / "demo", root / "cache",
                    progress=False)
    clips = pq.read_table(root / "demo" / CATALOGUE_FILE).to_pylist()
    videos = root / "videos"
    videos.mkdir()
    labels = root / "labels.csv"
    with open(labels, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file", "speaker", "sex", "age"])
        for clip in clips:
            name = Path(clip["video_path"]).name
            shutil.copy2(root / "demo" / clip["video_path"], videos / name)
            writer.writerow([name, clip["speaker_id"], clip["sex"], clip["age"]])
        (videos / BROKEN).write_bytes(b"not a video " * 100)
        writer.writerow([BROKEN, clips[0]["speaker_id"], clips[0]["sex"], clips[0]["age"]])
    return videos, labels


@pytest.fixture(scope="module")
def unlabelled(tmp_path_factory):
    """A tiny project over the unlabelled folder after a full `dvc repro`."""
    root = tmp_path_factory.mktemp("no_emotions")
    videos, labels = make_unlabelled_folder(root / "data")
    params = {**TINY_PARAMS, "download.dataset": "folder",
              "download.folder.videos_dir": str(videos),
              "download.folder.labels_csv": str(labels),
              # one clip per speaker: the lips stage (001, one speaker) pools them all
              "lips.speaker": "all", **TINY_MODELS}
    project = make_project(root / "project", params)
    run = repro_timed(project)
    assert stages_run(run.output) == ALL_STAGES
    return project, run


def test_every_clip_with_a_face_and_audio_is_kept_and_broken_ones_say_why(unlabelled):
    project, _ = unlabelled
    dataset = project / "data" / "dataset"
    report = json.loads((dataset / "report.json").read_text())
    assert report["counts"]["kept"] == 8 and report["info"]["catalogue_clips"] == 9
    assert report["info"]["emotion_labels"] is False
    (rejection,) = report["quarantine"]
    assert rejection["item"] == Path(BROKEN).stem
    assert rejection["reason"].startswith("missing_face:")  # the faces stage's own reason
    assert "emotion" not in rejection["reason"]

    meta = read_meta(dataset)
    assert meta["emotions"] == []
    train = load_split(dataset, "train")
    assert (train.emotion == NO_EMOTION).all()
    rows = pq.read_table(dataset / "train").to_pylist()
    assert {r["emotion"] for r in rows} == {None} and {r["emotion_index"] for r in rows} == {None}


def test_the_vae_is_unconditional_with_code_width_zero(unlabelled):
    project, _ = unlabelled
    path = project / "models" / "vae" / "model.pt"
    config = load_vae(path).config
    assert not config.conditional and config.code_dim == 0
    assert config.posterior_in == config.feature_dim and config.decoder_in == config.latent_dim
    provenance = torch.load(path, weights_only=True)["provenance"]
    assert provenance["emotions"] == [] and provenance["codes"] == []
    assert provenance["params"]["conditional"] == "auto"
    assert Image.open(project / "models" / "vae" / "label_swap.png").size[0] > 0


def test_evaluate_leaves_the_emotion_metrics_out_and_says_so(unlabelled):
    project, _ = unlabelled
    out = project / "data" / "evaluate"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["emotion"] == "not evaluated: the dataset has no emotion labels"
    for row in ("model", "oracle", "chance"):
        assert not [k for k in metrics[row] if "emotion" in k or k.startswith("cluster.")]
        assert metrics[row]["latent.r@1"] is not None
    assert metrics["model"]["attr.sex_agreement"] is not None
    report = (out / "report.md").read_text()
    assert "Emotion not evaluated: the dataset has no emotion labels" in report
    assert "Emotion confusion" not in report
    for name in ("confusion_model.json", "confusion_oracle.json", "confusion_voice.json"):
        assert json.loads((out / name).read_text()) == []
    assert "emotion_from_voice" not in metrics and "model_voice_emotion" not in metrics
    assert "Not evaluated: the dataset has no emotion labels." in report
    assert Image.open(out / "emotions.png").size[0] > 0
    # every output dvc.yaml declares is there, and dvc sees them all as up to date
    assert changed_stages(project) == set()
    shown = dvc_json(project, "plots", "show")
    assert shown["data"]["data/evaluate/confusion_model.json"] == []


def test_generate_needs_no_emotion_and_refuses_one(unlabelled, tmp_path, caplog):
    project, _ = unlabelled
    wav = write_wav(tmp_path / "speech.wav", speech_like(np.random.default_rng(0), 2.0, 16000),
                    16000)
    models = ["--params", str(project / "params.yaml"),
              "--vae", str(project / "models" / "vae" / "model.pt"),
              "--voice", str(project / "models" / "voice" / "deeptalk" / "model.pt")]
    assert generate_main([str(wav), "--out", str(tmp_path / "face.png"), *models]) == 0
    assert Image.open(tmp_path / "face.png").size == (64, 64)
    with caplog.at_level(logging.ERROR, logger="stages.generate"):
        code = generate_main([str(wav), "--out", str(tmp_path / "no.png"), "--emotion", "HAP",
                              *models])
    assert code == 2 and not (tmp_path / "no.png").exists()
    assert "unknown emotion 'HAP': the face model takes no emotion" in caplog.text


def test_a_conditional_vae_on_data_without_labels_fails_naming_setting_and_data(
    unlabelled, tmp_path
):
    project, _ = unlabelled
    params = Path(shutil.copy2(project / "params.yaml", tmp_path / "params.yaml"))
    set_params(tmp_path, {"train_vae.conditional": True})
    dataset = project / "data" / "dataset"
    argv = ["--params", str(params), "--dataset", str(dataset), "--out", str(tmp_path / "vae"),
            "--checkpoints", str(tmp_path / "ckpt"), "--live", str(tmp_path / "live")]
    message = (f"train_vae.conditional is true, but the dataset {dataset} has no emotion "
               "labels (meta.json emotions: []): set train_vae.conditional to auto or false")
    with pytest.raises(ValueError, match=re.escape(message)):
        train_vae_main(argv)
    assert not (tmp_path / "vae").exists() and not (tmp_path / "ckpt").exists()
