"""The lips and train_ggdrm stages end to end on a tiny demo corpus, and the lips stage on GRID."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from PIL import Image

from pipeline.config import (
    DemoCorpusParams,
    FacesParams,
    LipsParams,
    TrainGgdrmParams,
    to_dict,
)
from pipeline.download.demo.corpus import write_corpus
from pipeline.lips.stage import LipsJob, detection_params, extract_clip
from pipeline.schemas import LIPS
from tests.conftest import REPO
from tests.factories import make_catalogue

CORPUS = DemoCorpusParams(seed=5, n_speakers=2, emotions=("HAP", "NEU"), sentences=("IEO",))
TINY_GGDRM = TrainGgdrmParams(hidden=(8, 8), pretrain_epochs=2, finetune_epochs=2, chains=10,
                              dnn_epochs=2, inference_steps=5, figure_frames=4)


def remux_audio(source: Path, target: Path, seconds: float) -> Path:
    """Copy ``source``'s video into ``target`` with its audio cut to ``seconds``."""
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-i", str(source),
                    "-map", "0:v", "-c:v", "copy", "-map", "0:a", "-af",
                    f"atrim=end={seconds:.6f}", "-c:a", "pcm_s16le", "-f", "flv", "-y",
                    str(target)], check=True)
    return target


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Speaker 1001's two clips, the first again with audio one frame short and half long,
    a zero-byte clip, and speaker 1002's clips (not chosen)."""
    tmp = tmp_path_factory.mktemp("lips")
    truth = write_corpus(tmp / "demo", CORPUS, workers=2)
    rows = [{"clip_id": r.clip_id, "speaker_id": str(r.speaker_id),
             "video_path": str(tmp / "demo" / r.video_path)} for r in truth.itertuples()]
    first = truth.iloc[0]
    video = tmp / "demo" / first.video_path
    short = first.duration_s - 1.0 / CORPUS.fps
    for name, seconds in (("short_audio", short), ("half_audio", first.duration_s / 2)):
        rows.append({"clip_id": f"1001_{name}", "speaker_id": "1001",
                     "video_path": str(remux_audio(video, tmp / f"{name}.flv", seconds))})
    (tmp / "empty.flv").touch()
    rows.append({"clip_id": "1001_empty", "speaker_id": "1001",
                 "video_path": str(tmp / "empty.flv")})
    return tmp, make_catalogue(tmp, rows), truth


def write_params(path: Path, **sections) -> Path:
    path.write_text(yaml.safe_dump({name: to_dict(p) for name, p in sections.items()}))
    return path


def run(*args: str) -> None:
    subprocess.run([sys.executable, "-m", *args], check=True, cwd=REPO)


def test_lips_and_train_ggdrm_clis(corpus):
    tmp, catalogue, _ = corpus
    params = write_params(tmp / "params.yaml", lips=LipsParams(workers=2), faces=FacesParams(),
                          train_ggdrm=TINY_GGDRM)
    run("stages.lips", "--params", str(params), "--catalogue", str(catalogue),
        "--out", str(tmp / "lips"))
    report = json.loads((tmp / "lips" / "report.json").read_text())
    assert report["rejected_by_reason"] == {"av_length_mismatch": 1, "decode_error": 1}
    counts = report["counts"]
    assert counts["clips"] == 5 == counts["clips_written"] + report["rejected"]
    assert counts["frames"] == counts["frames_written"] + counts["frames_without_landmarks"]
    table = pq.read_table(tmp / "lips" / "lips-00000.parquet")
    assert table.schema.equals(LIPS, check_metadata=False)
    assert table.num_rows == counts["frames_written"]
    frames = table.select(["clip_id", "frame_index"]).to_pylist()
    assert frames == sorted(frames, key=lambda r: (r["clip_id"], r["frame_index"]))
    meta = json.loads((tmp / "lips" / "meta.json").read_text())
    assert meta["speakers"] == ["1001"]
    assert len(meta["clips"]["test"]) == 1 and len(meta["clips"]["train"]) == 2
    assert {len(v) for v in table.column("mcep").to_pylist()} == {32}
    assert {len(v) for v in table.column("image_features").to_pylist()} == {meta["n_features"]}
    assert 0.5 < meta["variance_kept"]["total"] < 1.0
    assert Image.open(tmp / "lips" / "mouths.png").mode == "L"

    run("stages.train_ggdrm", "--params", str(params), "--lips", str(tmp / "lips"),
        "--model", str(tmp / "ggdrm" / "model.pt"), "--out", str(tmp / "ggdrm"))
    metrics = json.loads((tmp / "ggdrm" / "metrics.json").read_text())
    systems = {"mean", "ridge", "dnn", "ggdrm_pretrained", "ggdrm"}
    assert set(metrics["speech_to_lips"]) == systems | {"pca_ceiling"}
    assert set(metrics["lips_to_speech"]) == systems
    assert metrics["lips_to_speech"]["mean"]["tv_ratio"] == pytest.approx(0.0, abs=1e-9)
    assert metrics["speech_to_lips"]["pca_ceiling"]["pixel_mse"] < metrics["speech_to_lips"][
        "mean"]["pixel_mse"]
    assert metrics["data"]["test_frames"] + metrics["data"]["train_frames"] == table.num_rows
    for figure in ("lips.png", "spectrograms.png"):
        assert Image.open(tmp / "ggdrm" / figure).size[0] > 100
    assert "## Lips -> speech" in (tmp / "ggdrm" / "report.md").read_text()


def test_too_few_clips_exit_1_with_the_report_and_no_traceback(corpus, tmp_path):
    tmp, _, truth = corpus
    first = truth.iloc[0]
    catalogue = make_catalogue(tmp_path, [
        {"clip_id": first.clip_id, "speaker_id": "1001",
         "video_path": str(tmp / "demo" / first.video_path)},
        {"clip_id": "1001_empty", "speaker_id": "1001", "video_path": str(tmp / "empty.flv")}])
    params = write_params(tmp_path / "params.yaml", lips=LipsParams(workers=1),
                          faces=FacesParams())
    result = subprocess.run([sys.executable, "-m", "stages.lips", "--params", str(params),
                             "--catalogue", str(catalogue), "--out", str(tmp_path / "lips")],
                            cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 1
    assert "1 usable clip(s): none left for training" in result.stderr
    assert "Traceback" not in result.stderr
    report = json.loads((tmp_path / "lips" / "report.json").read_text())
    assert report["counts"]["clips"] == 2 and report["rejected"] == 1
    assert not list((tmp_path / "lips").glob("lips-*.parquet"))


def test_audio_a_frame_short_still_gives_one_vector_per_frame(corpus):
    tmp, _, truth = corpus
    first = truth.iloc[0]
    job = LipsJob("1001_short_audio", "1001", str(tmp / "short_audio.flv"),
                  str(tmp / "short_audio.flv"))
    clip = extract_clip(job, LipsParams(), detection_params(FacesParams()))
    assert clip.n_frames == first.n_frames
    assert clip.audio_s == pytest.approx(first.duration_s - 1 / CORPUS.fps, abs=1e-3)
    assert len(clip.mcep) == len(clip.frame_index) == len(clip.crops)
    assert clip.frame_index.tolist() == list(range(first.n_frames))  # the demo face: every frame


def test_grid_clip_real_face_and_speech(grid_dir):
    """A real GRID clip: 25 fps, its MP2 speech under a frame shorter than its 3 s of video."""
    video = str(grid_dir / "bbaf2n.mpg")
    params = replace(LipsParams(), geometry_smoothing=1)
    clip = extract_clip(LipsJob("bbaf2n", "grid_a", video, video), params,
                        detection_params(FacesParams()))
    assert clip.fps == 25.0 and clip.n_frames == 75
    assert 3.0 - 1 / 25 < clip.audio_s < 3.0
    assert len(clip.frame_index) >= 0.9 * clip.n_frames
    assert clip.mcep.shape == (len(clip.frame_index), 32)
    # Speech is louder than the pauses around it: c0 spans more than 2 nepers.
    assert np.ptp(clip.mcep[:, 0]) > 2.0
