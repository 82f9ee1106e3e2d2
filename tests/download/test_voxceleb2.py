"""The ``voxceleb2`` dataset kind: a VoxCeleb2 tree catalogued without a labels CSV."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml

from pipeline import schemas
from pipeline.config import DownloadParams, VoxCeleb2Params, parse_params, to_dict
from pipeline.download.catalogue import prepare_dataset
from pipeline.download.sources import fingerprint_sources
from pipeline.download.voxceleb2 import read_meta, spread_over_videos
from pipeline.runtime import EmptyOutputError
from stages.download import main as download_main
from tests.factories import write_vox2_meta

TREE = {  # speaker -> video -> utterances
    "id00012": {"21Uxsk56VDQ": ["00001", "00002", "00003"], "2DLq_Kkc1r8": ["00001"]},
    "id00015": {"0fijmz4vTVU": ["00001", "00002"]},
    "id00016": {"ZZxQKxoo0rE": ["00001"]},   # gender 'x' in the meta file
    "id00019": {"AAaaBBbbCCc": ["00001"]},   # not in the meta file
}
SEXES = {"id00012": "m", "id00015": "f", "id00016": "x", "id00017": "f"}


def make_tree(root: Path) -> tuple[Path, Path]:
    """Return ``(mp4 root, meta csv)`` of a small VoxCeleb2 tree with a few bad entries."""
    mp4 = root / "mp4"
    for speaker, videos in TREE.items():
        for video, utterances in videos.items():
            (mp4 / speaker / video).mkdir(parents=True)
            for utt in utterances:
                (mp4 / speaker / video / f"{utt}.mp4").write_bytes(
                    f"{speaker}/{video}/{utt}".encode() * 50)
    (mp4 / "id00012" / "stray.mp4").write_bytes(b"x" * 100)          # outside the layout
    (mp4 / "id00012" / "21Uxsk56VDQ" / "notes.txt").write_text("n")  # not a video
    return mp4, write_vox2_meta(root / "vox2_meta.csv", SEXES)


def vox_params(mp4: Path, meta: Path, **selection) -> DownloadParams:
    return DownloadParams(dataset="voxceleb2", voxceleb2=VoxCeleb2Params(
        root=str(mp4), meta_csv=str(meta), **selection))


def test_tree_is_catalogued_with_voxceleb_ids_as_speakers(tmp_path):
    mp4, meta = make_tree(tmp_path)
    out = tmp_path / "out"
    report = prepare_dataset(vox_params(mp4, meta), out, tmp_path / "cache", progress=False)

    table = pq.read_table(out / "catalogue.parquet")
    assert table.schema.equals(schemas.CATALOGUE, check_metadata=True)
    catalogue = table.to_pandas().set_index("clip_id")
    assert list(catalogue.index) == ["id00012/21Uxsk56VDQ/00001", "id00012/21Uxsk56VDQ/00002",
                                     "id00012/21Uxsk56VDQ/00003", "id00012/2DLq_Kkc1r8/00001",
                                     "id00015/0fijmz4vTVU/00001", "id00015/0fijmz4vTVU/00002"]
    assert catalogue["speaker_id"].tolist() == ["id00012"] * 4 + ["id00015"] * 2
    assert catalogue["sex"].tolist() == ["Male"] * 4 + ["Female"] * 2
    assert catalogue[["emotion", "level", "sentence", "age"]].isna().all().all()
    assert set(catalogue["dataset"]) == {"voxceleb2"} and catalogue["audio_path"].isna().all()
    for clip_id, row in catalogue.iterrows():
        data = (mp4 / f"{clip_id}.mp4").read_bytes()
        assert row["video_path"] == f"media/{clip_id}.mp4"
        assert (out / row["video_path"]).read_bytes() == data
        assert row["video_sha256"] == hashlib.sha256(data).hexdigest()

    rejected = {r.item: r.reason for r in report.rejections}
    assert rejected == {"id00012/stray.mp4": "bad_path",
                        "id00016/ZZxQKxoo0rE/00001.mp4": "bad_label",
                        "id00019/AAaaBBbbCCc/00001.mp4": "not_in_meta"}
    by_item = {r.item: r.detail for r in report.rejections}
    assert f"is not in {meta}" in by_item["id00019/AAaaBBbbCCc/00001.mp4"]
    assert "gender 'x', not m/f" in by_item["id00016/ZZxQKxoo0rE/00001.mp4"]
    # counts add up: 8 utterances in the layout = 6 kept + 2 quarantined; 1 stray, 1 text file
    assert report.info["clips_listed"] == 8 and report.counts["clips_catalogued"] == 6
    assert report.info["files_ignored"] == 1 and report.n_rejected == 3
    quarantine = pd.read_parquet(out / "quarantine.parquet")
    assert sorted(quarantine["item"]) == sorted(rejected)


def test_a_subset_spreads_over_each_speakers_videos(tmp_path):
    mp4, meta = make_tree(tmp_path)
    params = vox_params(mp4, meta, speakers=("id00012",), max_clips_per_speaker=2)
    out = tmp_path / "out"
    report = prepare_dataset(params, out, tmp_path / "cache", progress=False)
    catalogue = pd.read_parquet(out / "catalogue.parquet")
    # one utterance from each of the speaker's two videos, not the first two of one video
    assert catalogue["clip_id"].tolist() == ["id00012/21Uxsk56VDQ/00001",
                                             "id00012/2DLq_Kkc1r8/00001"]
    assert report.info["clips_not_selected"] == 6 and report.info["speakers"] == 1
    assert sorted((out / "media").rglob("*.mp4")) == [out / "media" / f"{c}.mp4"
                                                      for c in catalogue["clip_id"]]


def test_spread_over_videos_takes_each_video_in_turn():
    utterances = ["a/v1/1", "a/v1/2", "a/v1/3", "a/v2/1", "a/v3/1", "a/v3/2"]
    assert spread_over_videos(utterances, 0) == utterances
    assert spread_over_videos(utterances, 4) == ["a/v1/1", "a/v1/2", "a/v2/1", "a/v3/1"]
    assert spread_over_videos(utterances, 100) == utterances


def test_meta_file_is_read_in_voxceleb2s_own_format(tmp_path):
    meta = write_vox2_meta(tmp_path / "vox2_meta.csv", {"id00012": "m", "id00015": "f"})
    assert meta.read_bytes().startswith(b"\xef\xbb\xbfVoxCeleb2 ID ,")
    assert read_meta(meta) == {"id00012": "m", "id00015": "f"}
    bad = tmp_path / "vox1_meta.csv"
    bad.write_text("VoxCeleb1 ID\tVGGFace1 ID\tGender\nid10001\tA.J._Buckley\tm\n")
    with pytest.raises(ValueError, match=r"vox1_meta.csv: not a vox2_meta.csv: lacks column"):
        read_meta(bad)


def test_a_tree_with_no_usable_clip_fails_the_stage_saying_why(tmp_path):
    mp4, _ = make_tree(tmp_path)
    meta = write_vox2_meta(tmp_path / "other_meta.csv", {"id99999": "m"})
    with pytest.raises(EmptyOutputError, match=r"no clip kept from VoxCeleb2 tree .*: 8 listed, "
                       r"9 quarantined; quarantined by reason: bad_path 1, not_in_meta 8"):
        prepare_dataset(vox_params(mp4, meta), tmp_path / "out", tmp_path / "cache",
                        progress=False)


def test_root_and_meta_are_required_and_the_stage_runs_from_params(tmp_path):
    with pytest.raises(ValueError, match=re.escape("download.voxceleb2: root and meta_csv "
                                                   "required when dataset is voxceleb2")):
        parse_params("download", {**to_dict(DownloadParams()), "dataset": "voxceleb2"})
    mp4, meta = make_tree(tmp_path)
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump({"download": to_dict(vox_params(mp4, meta))}))
    code = download_main(["--params", str(params_file), "--out", str(tmp_path / "out"),
                          "--cache", str(tmp_path / "cache"), "--no-progress"])
    assert code == 0
    report = yaml.safe_load((tmp_path / "out" / "report.json").read_text())
    # where the tree lies is not part of the data: it stays out of the hashed output
    assert report["info"]["params"] == {"speakers": [], "max_clips_per_speaker": 0}


def test_a_new_utterance_or_meta_row_changes_the_sources_fingerprint(tmp_path):
    mp4, meta = make_tree(tmp_path)
    params = vox_params(mp4, meta)
    before = fingerprint_sources(params)
    assert set(before["sources"]) == {"download.voxceleb2.root", "download.voxceleb2.meta_csv"}
    assert "id00015/0fijmz4vTVU/00002.mp4" in before["sources"]["download.voxceleb2.root"]
    (mp4 / "id00015" / "0fijmz4vTVU" / "00003.mp4").write_bytes(b"new" * 10)
    added = fingerprint_sources(params)
    assert added != before
    write_vox2_meta(meta, {**SEXES, "id00019": "m"})
    assert fingerprint_sources(params) != added
