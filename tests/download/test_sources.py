import json
import os
import shutil
from pathlib import Path

import pytest

from pipeline.config import CremaDParams, DownloadParams, FolderParams
from pipeline.download.sources import fingerprint_sources
from stages.sources import main as sources_main
from tests.conftest import REPO
from tests.workflow import set_params

LABELS = "file,speaker,emotion\na.mp4,alice,happy\nsub/b.mp4,bob,sad\n"


@pytest.fixture
def folder(tmp_path) -> DownloadParams:
    videos = tmp_path / "videos"
    (videos / "sub").mkdir(parents=True)
    (videos / "a.mp4").write_bytes(b"a" * 10)
    (videos / "sub" / "b.mp4").write_bytes(b"b" * 20)
    labels = tmp_path / "labels.csv"
    labels.write_text(LABELS)
    return DownloadParams(dataset="folder", folder=FolderParams(str(videos), str(labels)))


def _paths(params: DownloadParams) -> tuple[Path, Path]:
    return Path(params.folder.videos_dir), Path(params.folder.labels_csv)


def test_the_demo_fingerprint_is_a_constant():
    assert fingerprint_sources(DownloadParams()) == {"dataset": "demo", "sources": {}}
    http = DownloadParams(dataset="crema-d", crema_d=CremaDParams())
    assert fingerprint_sources(http) == {"dataset": "crema-d", "sources": {}}


def test_a_folder_is_listed_by_relative_path_size_and_mtime(folder):
    videos, _ = _paths(folder)
    sources = fingerprint_sources(folder)["sources"]
    assert set(sources) == {"download.folder.labels_csv", "download.folder.videos_dir"}
    assert list(sources["download.folder.labels_csv"]) == ["labels.csv"]
    assert sources["download.folder.labels_csv"]["labels.csv"].startswith("sha256 ")
    info = (videos / "sub" / "b.mp4").stat()
    assert sources["download.folder.videos_dir"] == {
        "a.mp4": f"size 10 mtime_ns {(videos / 'a.mp4').stat().st_mtime_ns}",
        "sub/b.mp4": f"size 20 mtime_ns {info.st_mtime_ns}",
    }


@pytest.mark.parametrize("change", ["labels row", "new video", "video rewritten", "video gone"])
def test_every_change_of_the_folder_changes_the_fingerprint(folder, change):
    videos, labels = _paths(folder)
    before = fingerprint_sources(folder)
    if change == "labels row":
        labels.write_text(LABELS + "c.mp4,carol,neutral\n")
    elif change == "new video":
        (videos / "c.mp4").write_bytes(b"c")
    elif change == "video rewritten":  # same size, later mtime
        os.utime(videos / "a.mp4", ns=(0, (videos / "a.mp4").stat().st_mtime_ns + 1))
    else:
        (videos / "sub" / "b.mp4").unlink()
    assert fingerprint_sources(folder) != before


def test_a_rewritten_unchanged_labels_csv_and_hidden_files_do_not_count(folder):
    videos, labels = _paths(folder)
    before = fingerprint_sources(folder)
    labels.write_text(LABELS)
    os.utime(labels, ns=(0, 10**18))
    (videos / ".DS_Store").write_bytes(b"x")
    (videos / ".cache").mkdir()
    (videos / ".cache" / "z.mp4").write_bytes(b"z")
    assert fingerprint_sources(folder) == before


def test_tables_inside_the_folder_are_hashed_by_content(tmp_path):
    clone = tmp_path / "CREMA-D"
    (clone / "VideoFlash").mkdir(parents=True)
    (clone / "VideoFlash" / "1001_DFA_ANG_XX.flv").write_bytes(b"flv")
    (clone / "VideoDemographics.csv").write_text("ActorID,Age\n1001,51\n")
    (clone / ".git" / "lfs").mkdir(parents=True)
    (clone / ".git" / "lfs" / "object").write_bytes(b"lfs")
    params = DownloadParams(dataset="crema-d", crema_d=CremaDParams(local_dir=str(clone)))
    listing = fingerprint_sources(params)["sources"]["download.crema_d.local_dir"]
    assert sorted(listing) == ["VideoDemographics.csv", "VideoFlash/1001_DFA_ANG_XX.flv"]
    assert listing["VideoDemographics.csv"].startswith("sha256 ")
    assert listing["VideoFlash/1001_DFA_ANG_XX.flv"].startswith("size 3 ")


def test_links_are_followed_once_and_a_broken_one_is_listed(folder):
    videos, _ = _paths(folder)
    (videos / "sub" / "loop").symlink_to(videos, target_is_directory=True)
    (videos / "gone.mp4").symlink_to(videos / "nowhere.mp4")
    listing = fingerprint_sources(folder)["sources"]["download.folder.videos_dir"]
    assert sorted(listing) == ["a.mp4", "gone.mp4", "sub/b.mp4"]
    assert listing["gone.mp4"] == "broken symlink"


def test_a_missing_folder_is_an_error_naming_the_key(folder, tmp_path):
    missing = DownloadParams(dataset="folder", folder=FolderParams(
        str(tmp_path / "nope"), folder.folder.labels_csv))
    with pytest.raises(FileNotFoundError, match=r"download\.folder\.videos_dir: .*nope"):
        fingerprint_sources(missing)


def test_the_stage_writes_the_fingerprint(folder, tmp_path):
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    set_params(tmp_path, {"download.dataset": "folder",
                          "download.folder.videos_dir": folder.folder.videos_dir,
                          "download.folder.labels_csv": folder.folder.labels_csv})
    out = tmp_path / "fingerprint" / "sources.json"
    assert sources_main(["--params", str(tmp_path / "params.yaml"), "--out", str(out)]) == 0
    assert json.loads(out.read_text()) == fingerprint_sources(folder)
