import dataclasses
import json
import subprocess
import sys
from collections import defaultdict

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

from pipeline.audio.stage import process_catalogue
from pipeline.config import (
    AudioParams,
    DatasetParams,
    DownloadParams,
    FacesParams,
    FolderParams,
    to_dict,
)
from pipeline.dataset.stage import build_dataset, split_speakers
from pipeline.download.catalogue import CATALOGUE_FILE, prepare_dataset
from pipeline.faces.stage import run_faces
from pipeline.loaders import NO_EMOTION, ShardDataset, load_split
from pipeline.runtime import EmptyOutputError
from pipeline.schemas import DATASET, DATASET_META_KEYS
from tests.conftest import REPO
from tests.factories import make_catalogue, write_audio_shard, write_faces_shard, write_quarantine

EMOTIONS = ("ANG", "HAP", "NEU", "SAD", "DIS")
N_SAMPLES = 29_360
PARAMS = DatasetParams(shard_mb=1, row_group_rows=8)


@pytest.fixture
def inputs(tmp_path, deterministic_rng):
    """12 male + 8 female speakers x 5 emotions; some faces / audio missing on purpose."""
    rng = deterministic_rng
    rows, faces, audio = [], {}, {}
    for s in range(20):
        speaker, sex = f"{1001 + s}", "Male" if s < 12 else "Female"
        for emotion in EMOTIONS:
            clip = f"{speaker}_IEO_{emotion}_XX"
            rows.append({"clip_id": clip, "speaker_id": speaker, "sex": sex, "age": 20 + s,
                         "emotion": emotion, "sentence": "IEO", "level": "XX",
                         "video_path": f"media/{clip}.flv", "dataset": "crema-d"})
            faces[clip] = rng.integers(0, 256, (64, 64), dtype=np.uint8)
            audio[clip] = rng.integers(-20000, 20000, N_SAMPLES).astype(np.int16)
    # Holes: two faces quarantined by the faces stage, one face silently absent, one audio
    # quarantined, and a DIS clip (not kept anyway) without audio.
    for clip in ("1001_IEO_ANG_XX", "1015_IEO_HAP_XX", "1003_IEO_SAD_XX"):
        del faces[clip]
    for clip in ("1004_IEO_NEU_XX", "1005_IEO_DIS_XX"):
        del audio[clip]
    root = tmp_path / "in"
    catalogue = make_catalogue(root / "download", rows)
    (root / "faces").mkdir()
    (root / "audio").mkdir()
    write_faces_shard(root / "faces" / "faces-00000.parquet", faces)
    write_quarantine(root / "faces" / "quarantine.parquet",
                     {"1001_IEO_ANG_XX": "no_face", "1015_IEO_HAP_XX": "face_too_small"})
    write_audio_shard(root / "audio" / "audio-00000.parquet", audio, 8000)
    write_quarantine(root / "audio" / "quarantine.parquet", {"1004_IEO_NEU_XX": "all_silent"})
    return {"catalogue": catalogue, "faces": root / "faces", "audio": root / "audio",
            "rows": rows, "face": faces, "pcm": audio}


def _build(inputs, out, params=PARAMS):
    return build_dataset(inputs["catalogue"], inputs["faces"], inputs["audio"], out, params)


def _read_all(out):
    return {split: [r for p in sorted((out / split).glob("part-*.parquet"))
                    for r in pq.read_table(p).to_pylist()]
            for split in ("train", "val", "test")}


def test_counts_add_up_and_say_why(inputs, tmp_path):
    report = _build(inputs, tmp_path / "out")
    reasons = dict(report.reasons())
    assert reasons == {
        "emotion_not_kept": 20,
        "missing_face:no_face": 1,
        "missing_face:face_too_small": 1,
        "missing_face": 1,
        "missing_audio:all_silent": 1,
    }
    assert report.counts["kept"] == 100 - 20 - 4
    assert report.counts["kept"] + report.n_rejected == len(inputs["rows"])
    written = json.loads((tmp_path / "out" / "report.json").read_text())
    assert written["rejected"] == 24 and written["counts"]["kept"] == 76


def test_speaker_split_invariants(inputs, tmp_path):
    out = tmp_path / "out"
    _build(inputs, out)
    splits = _read_all(out)
    speakers_in = defaultdict(set)
    clips = [r["clip_id"] for rows in splits.values() for r in rows]
    assert len(clips) == len(set(clips)) == 76
    for split, rows in splits.items():
        assert rows, f"{split} is empty"
        assert {r["split"] for r in rows} == {split}
        for r in rows:
            speakers_in[r["speaker_id"]].add(split)
        assert {r["sex"] for r in rows} == {"Male", "Female"}, f"{split} lacks a sex"
    assert all(len(s) == 1 for s in speakers_in.values()), "a speaker is in two splits"
    meta = json.loads((out / "meta.json").read_text())
    assert set(meta) == set(DATASET_META_KEYS)
    for split, rows in splits.items():
        assert meta["splits"][split]["clips"] == len(rows)
        assert meta["splits"][split]["speakers"] == sorted({r["speaker_id"] for r in rows})


def test_speaker_split_follows_the_fractions_per_sex():
    sex_of = {f"m{i}": "Male" for i in range(20)} | {f"f{i}": "Female" for i in range(20)}
    params = DatasetParams(val_fraction=0.1, test_fraction=0.2, seed=5)
    split_of = split_speakers(sex_of, params)
    for sex in ("m", "f"):
        counts = {s: sum(1 for k, v in split_of.items() if k[0] == sex and v == s)
                  for s in ("train", "val", "test")}
        assert counts == {"train": 14, "val": 2, "test": 4}
    assert split_speakers(sex_of, params) == split_of
    assert split_speakers(sex_of, dataclasses.replace(params, seed=6)) != split_of


def test_clip_split_puts_every_clip_in_one_split(inputs, tmp_path):
    params = dataclasses.replace(PARAMS, split_mode="clip", val_fraction=0.1, test_fraction=0.2)
    out = tmp_path / "out"
    _build(inputs, out, params)
    splits = _read_all(out)
    clips = [r["clip_id"] for rows in splits.values() for r in rows]
    assert len(clips) == len(set(clips)) == 76
    assert (len(splits["train"]), len(splits["val"]), len(splits["test"])) == (53, 8, 15)
    train_speakers = {r["speaker_id"] for r in splits["train"]}
    assert train_speakers & {r["speaker_id"] for r in splits["test"]}  # clip mode mixes them
    assert json.loads((out / "meta.json").read_text())["split_mode"] == "clip"


def test_shards_round_trip_the_inputs(inputs, tmp_path):
    out = tmp_path / "out"
    _build(inputs, out)
    meta = json.loads((out / "meta.json").read_text())
    assert (meta["face_size"], meta["sample_rate"], meta["audio_samples"]) == (64, 8000, N_SAMPLES)
    assert meta["emotions"] == list(PARAMS.emotions)
    shards = sorted(out.glob("*/part-*.parquet"))
    assert len(list((out / "train").glob("part-*.parquet"))) >= 2  # 1 MB shards roll over
    by_clip = {r["clip_id"]: r for r in inputs["rows"]}
    for path in shards:
        parquet = pq.ParquetFile(path)
        assert parquet.schema_arrow.equals(DATASET, check_metadata=True)
        assert all(parquet.metadata.row_group(i).num_rows <= 8
                   for i in range(parquet.metadata.num_row_groups))
        for row in parquet.read().to_pylist():
            clip = row["clip_id"]
            assert row["face"] == inputs["face"][clip].tobytes()
            assert row["audio"] == inputs["pcm"][clip].astype("<i2").tobytes()
            assert meta["emotions"][row["emotion_index"]] == row["emotion"] == by_clip[clip][
                "emotion"]
            assert (row["speaker_id"], row["sex"], row["age"]) == (
                by_clip[clip]["speaker_id"], by_clip[clip]["sex"], by_clip[clip]["age"])
            assert row["source"] == f"media/{clip}.flv"
    assert "| `face` |" in (out / "schema.md").read_text()


def test_loaders_read_the_built_dataset(inputs, tmp_path):
    out = tmp_path / "out"
    _build(inputs, out)
    split = load_split(out, "train")
    streamed = {s["clip_id"]: s for s in ShardDataset(out, "train", seed=1)}
    assert sorted(streamed) == split.clip_id
    clip = split.clip_id[0]
    expected_face = inputs["face"][clip].astype(np.float32) / 255
    np.testing.assert_allclose(streamed[clip]["face"][0].numpy(), expected_face)
    np.testing.assert_allclose(split.audio[0].numpy(),
                               inputs["pcm"][clip].astype(np.float32) / 32768)


def test_rerun_is_byte_identical(inputs, tmp_path):
    _build(inputs, tmp_path / "a")
    _build(inputs, tmp_path / "b")
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*")
                     if p.is_file())
    files_b = sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*")
                     if p.is_file())
    assert files_a == files_b and len(files_a) > 5
    for name in files_a:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_stage_cli(inputs, tmp_path):
    params_path = tmp_path / "params.yaml"
    params_path.write_text(yaml.safe_dump({"dataset": to_dict(PARAMS)}))
    out = tmp_path / "cli"
    subprocess.run(
        [sys.executable, "-m", "stages.dataset", "--params", str(params_path),
         "--catalogue", str(inputs["catalogue"]), "--faces", str(inputs["faces"]),
         "--audio", str(inputs["audio"]), "--out", str(out)],
        check=True, cwd=REPO, capture_output=True,
    )
    report = json.loads((out / "report.json").read_text())
    assert report["counts"]["kept"] + report["rejected"] == len(inputs["rows"])
    assert sum(json.loads((out / "meta.json").read_text())["splits"][s]["clips"]
               for s in ("train", "val", "test")) == report["counts"]["kept"]


# --- emotion labels (issue 15 item 8) ----------------------------------------------------


def _relabelled(inputs, root, emotion_of):
    """Return ``inputs`` with a new catalogue whose emotions are ``emotion_of(row)``."""
    rows = [{**row, "emotion": emotion_of(row)} for row in inputs["rows"]]
    return {**inputs, "catalogue": make_catalogue(root, rows), "rows": rows}


def test_data_without_emotion_labels_keeps_every_clip_with_a_face_and_audio(inputs, tmp_path):
    unlabelled = _relabelled(inputs, tmp_path / "download", lambda row: None)
    out = tmp_path / "out"
    report = _build(unlabelled, out)
    # every clip's own reason shows; the DIS clip without audio is now a missing-audio case
    assert dict(report.reasons()) == {
        "missing_face:no_face": 1,
        "missing_face:face_too_small": 1,
        "missing_face": 1,
        "missing_audio:all_silent": 1,
        "missing_audio": 1,
    }
    assert report.counts["kept"] == 100 - 5 and report.info["emotion_labels"] is False
    meta = json.loads((out / "meta.json").read_text())
    assert meta["emotions"] == [] and set(meta) == set(DATASET_META_KEYS)
    rows = [r for split in _read_all(out).values() for r in split]
    assert len(rows) == 95
    assert {(r["emotion"], r["emotion_index"]) for r in rows} == {(None, None)}
    assert (load_split(out, "train").emotion == NO_EMOTION).all()
    assert {s["emotion"].item() for s in ShardDataset(out, "val", seed=0)} == {NO_EMOTION}


def test_unlabelled_clips_of_labelled_data_are_quarantined_after_their_media_faults(
    inputs, tmp_path
):
    unlabelled = {"1001_IEO_ANG_XX", "1002_IEO_HAP_XX", "1006_IEO_SAD_XX"}  # 1001: no face
    mixed = _relabelled(inputs, tmp_path / "download",
                        lambda row: None if row["clip_id"] in unlabelled else row["emotion"])
    out = tmp_path / "out"
    report = _build(mixed, out)
    assert dict(report.reasons()) == {
        "emotion_not_kept": 20,  # DIS, left out by choice before anything else
        "missing_face:no_face": 1,  # unlabelled too, but the face fault is the reason
        "missing_face:face_too_small": 1,
        "missing_face": 1,
        "missing_audio:all_silent": 1,
        "no_emotion_label": 2,
    }
    assert report.counts["kept"] == 100 - 20 - 4 - 2
    assert report.counts["kept"] + report.n_rejected == 100
    quarantined = {r.item for r in report.rejections if r.reason == "no_emotion_label"}
    assert quarantined == unlabelled - {"1001_IEO_ANG_XX"}
    assert json.loads((out / "meta.json").read_text())["emotions"] == list(PARAMS.emotions)
    kept = [r for split in _read_all(out).values() for r in split]
    assert all(r["emotion"] in PARAMS.emotions for r in kept)


def test_real_grid_clips_without_emotion_labels_are_all_kept(grid_dir, tmp_path):
    """11 real GRID clips, a labels CSV without an emotion column: none is lost to emotion."""
    download = DownloadParams(dataset="folder", folder=FolderParams(
        str(grid_dir), str(grid_dir / "labels.csv")))
    prepare_dataset(download, tmp_path / "download", tmp_path / "cache", progress=False)
    catalogue = tmp_path / "download" / CATALOGUE_FILE
    run_faces(catalogue, tmp_path / "faces", FacesParams(workers=2))
    process_catalogue(catalogue, tmp_path / "audio", AudioParams(workers=2))
    report = build_dataset(catalogue, tmp_path / "faces", tmp_path / "audio",
                           tmp_path / "dataset", PARAMS)
    assert report.counts["kept"] == 11 and report.n_rejected == 0
    meta = json.loads((tmp_path / "dataset" / "meta.json").read_text())
    assert meta["emotions"] == [] and sum(s["clips"] for s in meta["splits"].values()) == 11


def test_an_empty_split_is_an_error_after_the_output_is_written(inputs, tmp_path):
    # 003's 8:2 clip split has no val split, which train_vae and train_voice read.
    params = dataclasses.replace(PARAMS, split_mode="clip", val_fraction=0.0, test_fraction=0.2)
    with pytest.raises(EmptyOutputError) as caught:
        _build(inputs, tmp_path / "out", params)
    message = str(caught.value)
    assert message.startswith("dataset: no clips in split(s) val (train 61 clips of 20 speakers, "
                              "val 0 clips of 0 speakers, test 15 clips of ")
    assert "; 76 kept of 100), but the training and evaluation stages need every split" in message
    assert ("quarantined by reason: emotion_not_kept 20, missing_audio:all_silent 1, "
            "missing_face 1, missing_face:face_too_small 1, missing_face:no_face 1") in message
    assert json.loads((tmp_path / "out" / "report.json").read_text())["counts"]["kept"] == 76


def test_stage_cli_fails_when_every_clip_was_quarantined_upstream(tmp_path):
    clips = [f"100{i}_IEO_ANG_XX" for i in range(1, 4)]
    catalogue = make_catalogue(tmp_path / "download", [
        {"clip_id": c, "speaker_id": c[:4], "emotion": "ANG", "video_path": f"media/{c}.flv"}
        for c in clips])
    (tmp_path / "faces").mkdir()
    (tmp_path / "audio").mkdir()
    write_quarantine(tmp_path / "faces" / "quarantine.parquet", dict.fromkeys(clips, "no_face"))
    write_audio_shard(tmp_path / "audio" / "audio-00000.parquet",
                      {c: np.zeros(N_SAMPLES, np.int16) for c in clips}, 8000)
    params_path = tmp_path / "params.yaml"
    params_path.write_text(yaml.safe_dump({"dataset": to_dict(PARAMS)}))
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "stages.dataset", "--params", str(params_path),
         "--catalogue", str(catalogue), "--faces", str(tmp_path / "faces"),
         "--audio", str(tmp_path / "audio"), "--out", str(out)],
        cwd=REPO, capture_output=True, text=True,
    )
    assert done.returncode == 1, done.stderr
    assert ("dataset: no clips in split(s) train, val, test (train 0 clips of 0 speakers, val 0 "
            "clips of 0 speakers, test 0 clips of 0 speakers; 0 kept of 3)") in done.stderr
    assert (f"quarantined by reason: missing_face:no_face 3; see {out / 'report.json'} and "
            "quarantine.parquet") in done.stderr
    assert "Traceback" not in done.stderr
    assert json.loads((out / "report.json").read_text())["rejected"] == 3


def test_sequence_crops_follow_their_clip_into_its_split(inputs, tmp_path):
    import pyarrow as pa

    from pipeline.schemas import SEQUENCE

    rows = [{"clip_id": clip, "frame_index": frame, "size": 64,
             "face": np.full(64 * 64, frame, np.uint8).tobytes()}
            for clip in sorted(c["clip_id"] for c in inputs["rows"]) for frame in (0, 7, 14)]
    pq.write_table(pa.Table.from_pylist(rows, schema=SEQUENCE),
                   inputs["faces"] / "sequence-00000.parquet")
    out = tmp_path / "out"
    report = _build(inputs, out)
    clips = {split: {r["clip_id"]: r for r in rs} for split, rs in _read_all(out).items()}
    n_frames = 0
    for split in ("train", "val", "test"):
        frames = pq.read_table(out / split / "frames-00000.parquet").to_pylist()
        assert sorted({f["clip_id"] for f in frames}) == sorted(clips[split])  # kept clips only
        for frame in frames:
            clip = clips[split][frame["clip_id"]]
            for key in ("speaker_id", "emotion", "emotion_index", "split"):
                assert frame[key] == clip[key], key
            assert frame["face"] == np.full(64 * 64, frame["frame_index"], np.uint8).tobytes()
        assert [f["frame_index"] for f in frames] == [0, 7, 14] * len(clips[split])
        n_frames += len(frames)
    assert report.counts["frames"] == n_frames == 3 * sum(len(c) for c in clips.values())
    assert "frames-NNNNN.parquet" in (out / "schema.md").read_text()
    # the clips' own shards are those of a run without sequence crops
    (inputs["faces"] / "sequence-00000.parquet").unlink()
    _build(inputs, tmp_path / "plain")
    for split in ("train", "val", "test"):
        assert ((out / split / "part-00000.parquet").read_bytes()
                == (tmp_path / "plain" / split / "part-00000.parquet").read_bytes())
        assert not list((tmp_path / "plain" / split).glob("frames-*"))
