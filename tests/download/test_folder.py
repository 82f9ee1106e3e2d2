import csv
import hashlib
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml

from pipeline import schemas
from pipeline.config import DemoCorpusParams, DownloadParams, FolderParams, to_dict
from pipeline.download.catalogue import prepare_dataset
from pipeline.download.demo.catalogue import catalogue_generated
from pipeline.runtime import StageReport
from stages.download import main as download_main


def _folder_params(videos: Path, labels: Path) -> DownloadParams:
    return DownloadParams(dataset="folder", folder=FolderParams(str(videos), str(labels)))


def test_grid_samples_folder_is_catalogued(grid_dir, tmp_path):
    with open(grid_dir / "labels.csv") as f:
        labels = list(csv.DictReader(f))
    out = tmp_path / "out"
    report = prepare_dataset(_folder_params(grid_dir, grid_dir / "labels.csv"), out,
                             tmp_path / "cache", progress=False)

    table = pq.read_table(out / "catalogue.parquet")
    assert table.schema.equals(schemas.CATALOGUE, check_metadata=True)
    catalogue = table.to_pandas().set_index("clip_id")
    assert len(catalogue) == len(labels) == 11 and report.n_rejected == 0
    for row in labels:
        clip = catalogue.loc[Path(row["file"]).stem]
        assert clip["speaker_id"] == row["speaker"]
        assert clip["sex"] == row["sex"].capitalize()
        assert clip["video_path"] == f"media/{row['file']}"
        data = (grid_dir / row["file"]).read_bytes()
        assert (out / clip["video_path"]).read_bytes() == data
        assert clip["video_sha256"] == hashlib.sha256(data).hexdigest()
        assert clip["video_size"] == len(data)
    assert set(catalogue["dataset"]) == {"folder"}
    assert catalogue["audio_path"].isna().all()


def test_labels_are_normalised_and_bad_rows_quarantined(tmp_path):
    videos = tmp_path / "videos"
    (videos / "s1").mkdir(parents=True)
    for name in ("s1/a.mp4", "s1/a.wav", "b.mp4", "c.mp4", "d.mp4"):
        (videos / name).write_bytes(name.encode() * 10)
    labels = tmp_path / "labels.csv"
    labels.write_text(
        "file,speaker,emotion,level,sex,age,audio,comment\n"
        "s1/a.mp4,alice,happy,hi,F,31,s1/a.wav,x\n"
        "b.mp4,bob,SAD,,male,,,\n"
        "c.mp4,carol,,,robot,,,\n"          # bad sex
        "b.mp4,bob,ANG,,male,,,\n"          # duplicate
        "missing.mp4,dave,,,,,,\n"          # listed, not there
        "../escape.mp4,eve,,,,,,\n"         # outside the folder
    )
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump({"download": to_dict(_folder_params(videos, labels))}))
    out = tmp_path / "out"

    code = download_main(["--params", str(params_file), "--out", str(out),
                          "--cache", str(tmp_path / "cache"), "--no-progress"])

    assert code == 1  # required files are missing
    catalogue = pd.read_parquet(out / "catalogue.parquet").set_index("clip_id")
    assert sorted(catalogue.index) == ["b", "s1/a"]
    alice = catalogue.loc["s1/a"]
    assert (alice["emotion"], alice["level"], alice["sex"], alice["age"]) == ("HAP", "HI",
                                                                            "Female", 31)
    assert alice["audio_path"] == "media/s1/a.wav"
    assert (out / "media/s1/a.wav").read_bytes() == (videos / "s1/a.wav").read_bytes()
    assert catalogue.loc["b", "emotion"] == "SAD" and catalogue.loc["b", "sex"] == "Male"
    quarantine = pd.read_parquet(out / "quarantine.parquet")
    reasons = dict(zip(quarantine["item"], quarantine["reason"], strict=True))
    assert reasons == {"c.mp4": "bad_label", "b.mp4": "duplicate", "missing": "missing_file",
                       "../escape": "bad_path"}
    report = yaml.safe_load((out / "report.json").read_text())
    assert report["info"]["missing_required"] == 2
    assert report["info"]["clips_listed"] == 6 == len(catalogue) + report["rejected"]
    assert not (tmp_path / "escape.mp4").exists()
    assert "d.mp4" not in {p.name for p in (out / "media").rglob("*")}  # not listed: not copied


def test_a_missing_labels_column_is_a_clear_error(tmp_path):
    (tmp_path / "v").mkdir()
    labels = tmp_path / "labels.csv"
    labels.write_text("path,who\na.mp4,x\n")
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['file', 'speaker'\]"):
        prepare_dataset(_folder_params(tmp_path / "v", labels), tmp_path / "out",
                        tmp_path / "cache", progress=False)


def test_generated_crema_d_like_files_are_catalogued(tmp_path):
    media = tmp_path / "media"
    (media / "VideoFlash").mkdir(parents=True)
    names = ["1001_IEO_ANG_XX", "1001_TIE_HAP_XX", "1002_IEO_SAD_XX", "1003_IEO_NEU_XX"]
    for name in names:
        (media / "VideoFlash" / f"{name}.flv").write_bytes(name.encode())
    (media / "VideoFlash" / "notes_about_it.flv").write_bytes(b"?")
    (media / "VideoDemographics.csv").write_text(
        '"ActorID","Age","Sex","Race","Ethnicity"\n'
        '1001,30,"Male","Asian","Not Hispanic"\n1002,41,"Female","Caucasian","Hispanic"\n'
    )
    report = StageReport("download")
    clips = catalogue_generated(media, report).set_index("clip_id")

    assert sorted(clips.index) == names
    assert clips.loc["1002_IEO_SAD_XX", ["speaker_id", "sentence", "emotion", "level", "sex",
                                         "age", "ethnicity"]].tolist() == [
        "1002", "IEO", "SAD", "XX", "Female", 41, "Hispanic"]
    assert pd.isna(clips.loc["1003_IEO_NEU_XX", "sex"])  # no demographics row
    assert report.info["clips_without_demographics"] == 1
    assert [r.reason for r in report.rejections] == ["bad_name"]
    assert clips.loc["1001_IEO_ANG_XX", "video_path"] == "media/VideoFlash/1001_IEO_ANG_XX.flv"
    assert clips.loc["1001_IEO_ANG_XX", "video_sha256"] == hashlib.sha256(
        b"1001_IEO_ANG_XX").hexdigest()


@pytest.mark.slow
def test_demo_dataset_is_generated_and_catalogued(tmp_path):
    demo = DemoCorpusParams(n_speakers=2, emotions=("ANG", "HAP"), sentences=("IEO",))
    out = tmp_path / "out"
    report = prepare_dataset(DownloadParams(dataset="demo", demo=demo), out,
                             tmp_path / "cache", progress=False)
    catalogue = pd.read_parquet(out / "catalogue.parquet")
    assert len(catalogue) == 2 * 2 * 1 and report.n_rejected == 0
    assert set(catalogue["sex"]) == {"Male", "Female"}
    assert set(catalogue["emotion"]) == {"ANG", "HAP"}
    for name in ("VideoDemographics.csv", "ground_truth.csv", "contact_sheet.png"):
        assert (out / "media" / name).is_file()
    for row in catalogue.itertuples():
        data = (out / row.video_path).read_bytes()
        assert hashlib.sha256(data).hexdigest() == row.video_sha256
        assert row.video_path.startswith("media/VideoFlash/")
    assert not (tmp_path / "cache").exists()  # generated, not downloaded
