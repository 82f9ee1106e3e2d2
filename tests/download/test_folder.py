import csv
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml

from pipeline import schemas
from pipeline.config import DemoCorpusParams, DownloadParams, FolderParams, to_dict
from pipeline.download.catalogue import prepare_dataset
from pipeline.download.demo.catalogue import catalogue_generated
from pipeline.runtime import EmptyOutputError, StageReport
from stages.download import main as download_main
from tests.conftest import REPO


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
    for name in ("s1/a.mp4", "s1/a.wav", "b.mp4", "c.mp4", "d.mp4", "g.mp4"):
        (videos / name).write_bytes(name.encode() * 10)
    (videos / "e.mp4").write_bytes(b"")
    labels = tmp_path / "labels.csv"
    labels.write_text(
        "file,speaker,emotion,level,sex,age,audio,comment\n"
        "s1/a.mp4,alice,happy,hi,F,31,s1/a.wav,x\n"
        "b.mp4,bob,SAD,,male,,,\n"
        "c.mp4,carol,,,robot,,,\n"          # bad sex
        "b.mp4,bob,ANG,,male,,,\n"          # duplicate
        "missing.mp4,dave,,,,,,\n"          # listed, not there
        "../escape.mp4,eve,,,,,,\n"         # outside the folder
        "e.mp4,erin,,,,,,\n"                # zero bytes
        "g.mp4,gus,,,,,nope.wav,\n"         # its audio is missing
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
    quarantine = pd.read_parquet(out / "quarantine.parquet").set_index("item")
    assert quarantine["reason"].to_dict() == {
        "c.mp4": "bad_label", "b.mp4": "duplicate", "missing": "missing_file",
        "../escape.mp4": "bad_path", "e": "empty_file", "g": "missing_file"}
    assert quarantine.loc["b.mp4", "detail"] == ("b.mp4 is listed twice in the labels CSV "
                                                 "(rows 2 and 4)")
    assert quarantine.loc["../escape.mp4", "detail"] == (
        f"'../escape.mp4' is outside download.folder.videos_dir ({videos})")
    assert quarantine.loc["e", "detail"] == "e.mp4 is empty (0 bytes)"
    assert quarantine.loc["e", "source"] == (videos / "e.mp4").as_uri()
    assert quarantine.loc["g", "source"] == (videos / "nope.wav").as_uri()
    report = yaml.safe_load((out / "report.json").read_text())
    assert report["info"]["missing_required"] == 2
    assert report["info"]["clips_listed"] == 8 == len(catalogue) + report["rejected"]
    assert not (tmp_path / "escape.mp4").exists()
    media = {p.relative_to(out / "media").as_posix() for p in (out / "media").rglob("*.*")}
    assert media == {"s1/a.mp4", "s1/a.wav", "b.mp4"}  # exactly the kept clips' files


def _folder(tmp_path: Path, files: dict[str, bytes], rows: list[str]) -> tuple[Path, Path]:
    videos = tmp_path / "videos"
    for name, data in files.items():
        (videos / name).parent.mkdir(parents=True, exist_ok=True)
        (videos / name).write_bytes(data)
    videos.mkdir(exist_ok=True)
    labels = tmp_path / "labels.csv"
    labels.write_text("".join(f"{row}\n" for row in ["file,speaker", *rows]))
    return videos, labels


def _prepare(videos: Path, labels: Path, out: Path, **download) -> StageReport:
    params = DownloadParams(dataset="folder", folder=FolderParams(str(videos), str(labels)),
                            **download)
    return prepare_dataset(params, out, out.parent / "cache", progress=False)


def test_files_differing_only_by_extension_are_two_clips(tmp_path):
    videos, labels = _folder(tmp_path, {"good.mp4": b"mp4" * 9, "good.mkv": b"mkv" * 9,
                                        "other.mp4": b"other"},
                             ["good.mp4,ann", "good.mkv,ann", "other.mp4,bo"])
    report = _prepare(videos, labels, tmp_path / "out")
    catalogue = pd.read_parquet(tmp_path / "out" / "catalogue.parquet").set_index("clip_id")
    assert report.n_rejected == 0
    assert catalogue["video_path"].to_dict() == {
        "good.mkv": "media/good.mkv", "good.mp4": "media/good.mp4", "other": "media/other.mp4"}


def test_absolute_paths_are_accepted_inside_the_folder_only(tmp_path):
    outside = tmp_path / "outside.mp4"
    outside.write_bytes(b"elsewhere")
    videos, labels = _folder(tmp_path, {"s2/in.mp4": b"inside"}, [])
    labels.write_text(f"file,speaker\n{videos / 's2/in.mp4'},ann\n{outside},bo\n")
    report = _prepare(videos, labels, tmp_path / "out")
    catalogue = pd.read_parquet(tmp_path / "out" / "catalogue.parquet")
    assert catalogue[["clip_id", "video_path"]].values.tolist() == [["s2/in", "media/s2/in.mp4"]]
    assert (tmp_path / "out" / "media/s2/in.mp4").read_bytes() == b"inside"
    (rejection,) = report.rejections
    assert (rejection.item, rejection.reason) == (str(outside), "bad_path")
    assert rejection.detail == f"{str(outside)!r} is outside download.folder.videos_dir ({videos})"


def test_an_lfs_pointer_in_a_folder_gets_git_lfs_pull_advice(tmp_path):
    pointer = b"version https://git-lfs.github.com/spec/v1\noid sha256:ab\nsize 9\n"
    videos, labels = _folder(tmp_path, {"real.mp4": b"media" * 50, "ptr.mp4": pointer},
                             ["real.mp4,ann", "ptr.mp4,bo"])
    report = _prepare(videos, labels, tmp_path / "out")
    (rejection,) = report.rejections
    assert (rejection.item, rejection.reason) == ("ptr", "lfs_pointer")
    assert rejection.detail == (
        "got a Git LFS pointer file instead of the media: the file was never pulled from Git "
        "LFS. Run `git lfs install && git lfs pull` in the repository that holds it")
    assert "media_base_url" not in rejection.detail


def test_a_header_only_labels_csv_fails_the_stage_naming_the_counts(tmp_path):
    videos, labels = _folder(tmp_path, {"a.mp4": b"a"}, [])
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump({"download": to_dict(_folder_params(videos, labels))}))
    out = tmp_path / "out"
    stage = subprocess.run(
        [sys.executable, "-m", "stages.download", "--params", str(params_file), "--out",
         str(out), "--cache", str(tmp_path / "cache"), "--no-progress"],
        cwd=REPO, capture_output=True, text=True, timeout=120)
    assert stage.returncode == 1
    assert stage.stderr.rstrip().endswith(
        f"download: no clip kept from labels CSV {labels}: 0 listed; quarantined by reason: "
        f"none; see {out / 'report.json'} and quarantine.parquet")
    assert "Traceback" not in stage.stderr
    report = json.loads((out / "report.json").read_text())  # written before failing
    assert (report["counts"], report["rejected"]) == ({"clips_catalogued": 0}, 0)


def test_every_row_quarantined_fails_naming_the_reason_counts(tmp_path):
    videos, labels = _folder(tmp_path, {"e.mp4": b""}, ["e.mp4,ann", "gone.mp4,bo", ",cy"])
    out = tmp_path / "out"
    with pytest.raises(EmptyOutputError) as error:
        _prepare(videos, labels, out)
    assert str(error.value) == (
        f"download: no clip kept from labels CSV {labels}: 3 listed, 3 quarantined; "
        f"quarantined by reason: bad_label 1, empty_file 1, missing_file 1; see "
        f"{out / 'report.json'} and quarantine.parquet")
    assert len(pd.read_parquet(out / "quarantine.parquet")) == 3
    assert len(pd.read_parquet(out / "catalogue.parquet")) == 0


def test_an_empty_labels_csv_is_an_error_naming_the_file(tmp_path):
    videos, labels = _folder(tmp_path, {"a.mp4": b"a"}, [])
    labels.write_bytes(b"")
    with pytest.raises(ValueError) as error:
        _prepare(videos, labels, tmp_path / "out")
    assert str(error.value).startswith(f"{labels}: labels CSV is empty; it needs a "
                                       "header row with ['file', 'speaker']")


def test_output_bytes_do_not_depend_on_fetch_settings_or_a_warm_cache(tmp_path):
    files = {f"v{i}.mp4": bytes([i]) * (100 + i) for i in range(6)}
    videos, labels = _folder(tmp_path, files, [*(f"v{i}.mp4,s{i % 2}" for i in range(6)),
                                               "lost.mp4,s0"])
    _prepare(videos, labels, tmp_path / "a", workers=1, retries=4, timeout_s=30.0)
    _prepare(videos, labels, tmp_path / "b", workers=4, retries=0, timeout_s=5.0)
    for name in ("report.json", "catalogue.parquet", "quarantine.parquet"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    report = json.loads((tmp_path / "b" / "report.json").read_text())
    assert report["info"]["params"] == {}  # the folder's paths are where, not what
    assert report["counts"] == {"clips_catalogued": 6, "files_failed": 1, "files_verified": 6,
                                "rejected:missing_file": 1}
    last_run = json.loads((tmp_path / "cache" / "folder" / "last-run.json").read_text())
    assert last_run["counts"] == {"files_already_verified": 6, "files_failed": 1}
    assert last_run["options"]["workers"] == 4


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
