import csv
import hashlib
import json
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml

from pipeline import schemas
from pipeline.config import CremaDParams, DownloadParams, to_dict
from pipeline.download.catalogue import prepare_dataset
from pipeline.download.crema_d import (
    KNOWN_BAD,
    clips_from_names,
    join_demographics,
    read_clip_names,
    read_demographics,
    read_rated_names,
)
from pipeline.runtime import EmptyOutputError, StageReport
from stages.download import main as download_main
from tests.conftest import REPO
from tests.http_server import FaultServer, lfs_pointer, lfs_pointer_for


def _media_bytes(path: str) -> bytes:
    """Small fabricated stand-in for a media file, different per path."""
    seed = hashlib.sha256(path.encode()).digest()
    return seed * (40 + seed[0] % 30)


class CremaDRepo:
    """A loopback server laid out like the GitHub repository (raw base + LFS media base).

    Pointers of every media file come from the real manifest; files in ``fabricated`` get
    a pointer matching their small fabricated bytes, which the media base serves.
    """

    def __init__(self, server: FaultServer, shared: Path) -> None:
        self.server = server
        with open(shared / "media_manifest.csv") as f:
            self.manifest = {row["path"]: (int(row["size_bytes"]), row["sha256"])
                             for row in csv.DictReader(f)}
        server.files["/raw/VideoDemographics.csv"] = (shared / "VideoDemographics.csv").read_bytes()
        server.files["/raw/SentenceFilenames.csv"] = (shared / "SentenceFilenames.csv").read_bytes()
        server.files["/raw/processedResults/summaryTable.csv"] = (
            shared / "summaryTable.csv").read_bytes()
        server.resolve = self._resolve

    def _resolve(self, path: str) -> bytes | None:
        if path.startswith("/raw/"):
            repo_path = path[len("/raw/"):]
            if repo_path in self.manifest:
                return lfs_pointer_for(*reversed(self.manifest[repo_path]))
        if path.startswith("/media/") and path[len("/media/"):] in self.manifest:
            return _media_bytes(path[len("/media/"):])
        return None

    def fabricate(self, repo_paths) -> None:
        """Make the pointers of ``repo_paths`` match the bytes the media base serves."""
        for p in repo_paths:
            self.manifest[p] = (len(_media_bytes(p)), hashlib.sha256(_media_bytes(p)).hexdigest())

    def params(self, workers: int = 4, retries: int = 2, **crema_d) -> DownloadParams:
        return DownloadParams(
            dataset="crema-d", workers=workers, retries=retries, timeout_s=2.0, backoff_s=0.01,
            crema_d=CremaDParams(raw_base_url=f"{self.server.url}/raw",
                                 media_base_url=f"{self.server.url}/media", **crema_d),
        )

    def media_requests(self) -> list:
        return [r for r in self.server.requests if r.path.startswith("/media/")]


@pytest.fixture
def repo(crema_d_dir):
    with FaultServer() as server:
        yield CremaDRepo(server, crema_d_dir)


def _names(crema_d_dir: Path) -> list[str]:
    with open(crema_d_dir / "SentenceFilenames.csv") as f:
        return [row["Filename"] for row in csv.DictReader(f)]


def _expected(crema_d_dir, actors=(), emotions=()) -> set[str]:
    return {n for n in _names(crema_d_dir)
            if (not actors or n[:4] in actors) and (not emotions or n.split("_")[2] in emotions)}


def _paths(stems, media=("VideoFlash/{}.flv", "AudioWAV/{}.wav")):
    return [pattern.format(s) for s in stems for pattern in media]


def _last_run(cache: Path) -> dict[str, int]:
    """Return this run's fetch counts (kept out of the hashed output)."""
    return json.loads((cache / "crema-d" / "last-run.json").read_text())["counts"]


def _media_files(out: Path) -> set[str]:
    return {p.relative_to(out).as_posix() for p in (out / "media").rglob("*") if p.is_file()}


# ------------------------------------------------------------------ real metadata


def test_real_metadata_parses_to_the_published_counts(crema_d_dir):
    report = StageReport("download")
    names = read_clip_names((crema_d_dir / "SentenceFilenames.csv").read_bytes())
    clips = clips_from_names(names, report)
    demographics = read_demographics((crema_d_dir / "VideoDemographics.csv").read_bytes())
    joined = join_demographics(clips, demographics, report)

    assert len(clips) == 7442 and report.n_rejected == 0
    assert clips["clip_id"].is_unique
    assert clips["speaker_id"].nunique() == 91
    assert Counter(clips["emotion"]) == {"ANG": 1271, "DIS": 1271, "FEA": 1271, "HAP": 1271,
                                         "SAD": 1271, "NEU": 1087}
    assert joined[["sex", "age", "race", "ethnicity"]].notna().all().all()
    assert set(joined["sex"]) == {"Male", "Female"}
    per_actor = joined.drop_duplicates("speaker_id")["sex"].value_counts()
    assert per_actor.to_dict() == {"Male": 48, "Female": 43}
    assert joined["age"].between(20, 74).all()
    rated = read_rated_names((crema_d_dir / "summaryTable.csv").read_bytes())
    assert rated == set(names)
    with open(crema_d_dir / "media_manifest.csv") as f:
        manifest = {row["path"] for row in csv.DictReader(f)}
    assert manifest == set(_paths(clips["clip_id"]))  # 7,442 clips x 2 files
    assert set(KNOWN_BAD) <= set(names)


# ---------------------------------------------------------------- stage over HTTP


def test_subset_is_fetched_verified_and_catalogued(repo, crema_d_dir, tmp_path):
    actors, emotions = ("1001", "1076"), ("NEU", "SAD")
    wanted = _expected(crema_d_dir, actors, emotions)
    kept = sorted(wanted - set(KNOWN_BAD))
    repo.fabricate(_paths(kept))
    resumed = f"VideoFlash/{kept[0]}.flv"
    repo.server.fail(f"/media/{resumed}", "drop")  # this run's history, not the output's
    total_bytes = sum(len(_media_bytes(p)) for p in _paths(kept))
    total_bytes -= len(_media_bytes(resumed)) // 2
    out = tmp_path / "out"
    report = prepare_dataset(repo.params(actors=actors, emotions=emotions), out,
                             tmp_path / "cache", progress=False)

    table = pq.read_table(out / "catalogue.parquet")
    assert table.schema.equals(schemas.CATALOGUE, check_metadata=True)
    catalogue = table.to_pandas()
    assert sorted(catalogue["clip_id"]) == kept
    with open(crema_d_dir / "VideoDemographics.csv") as f:
        sex = {row["ActorID"]: row["Sex"] for row in csv.DictReader(f)}
    assert sex["1001"] != sex["1076"]
    assert (catalogue["sex"] == catalogue["speaker_id"].map(sex)).all()
    assert catalogue["age"].notna().all()
    assert (catalogue["dataset"] == "crema-d").all()
    for row in catalogue.itertuples():
        for role, ext in (("video", "flv"), ("audio", "wav")):
            repo_path = f"{'VideoFlash' if role == 'video' else 'AudioWAV'}/{row.clip_id}.{ext}"
            path = getattr(row, f"{role}_path")
            assert path == f"media/{repo_path}"
            assert (out / path).read_bytes() == _media_bytes(repo_path)
            digest = hashlib.sha256(_media_bytes(repo_path)).hexdigest()
            assert getattr(row, f"{role}_sha256") == digest

    excluded = wanted & set(KNOWN_BAD)
    assert excluded == {"1076_MTI_NEU_XX", "1076_MTI_SAD_XX"}
    quarantine = pd.read_parquet(out / "quarantine.parquet")
    assert set(quarantine["item"]) == excluded
    assert set(quarantine["reason"]) == {"known_bad"}
    assert report.info["missing_required"] == 0
    assert report.counts["files_verified"] == 2 * len(kept)
    assert _last_run(tmp_path / "cache") == {"files_fetched": 2 * len(kept), "files_resumed": 1,
                                             "bytes_fetched": total_bytes}
    assert report.info["clips_listed"] == 7442
    assert (report.info["clips_not_selected"] + report.n_rejected + len(catalogue)
            == report.info["clips_listed"])
    fetched = {r.path for r in repo.media_requests()}
    assert fetched == {f"/media/{p}" for p in _paths(kept)}  # nothing outside the subset
    assert _media_files(out) == {f"media/{p}" for p in _paths(kept)}

    # A re-run with everything present, and other fetch settings, fetches nothing (no
    # pointers, no media) and writes the same bytes: the stages downstream stay up to date.
    n_requests = len(repo.server.requests)
    again_out = tmp_path / "again"
    prepare_dataset(repo.params(workers=1, retries=0, actors=actors, emotions=emotions),
                    again_out, tmp_path / "cache", progress=False)
    assert len(repo.server.requests) == n_requests
    assert _last_run(tmp_path / "cache") == {"files_already_verified": 2 * len(kept)}
    for name in ("report.json", "catalogue.parquet", "quarantine.parquet"):
        assert (again_out / name).read_bytes() == (out / name).read_bytes()
    written = json.loads((out / "report.json").read_text())
    assert written["info"]["params"] == {"actors": list(actors), "emotions": list(emotions),
                                         "known_bad": "exclude", "max_clips": 0, "media": "both"}


def test_known_bad_clips_can_be_kept_with_a_flag(repo, crema_d_dir, tmp_path):
    actors, emotions = ("1064", "1076"), ("SAD", "NEU", "DIS")
    repo.fabricate(_paths(_expected(crema_d_dir, actors, emotions), ["VideoFlash/{}.flv"]))
    params = repo.params(actors=actors, emotions=emotions, media="video", known_bad="flag")
    report = prepare_dataset(params, tmp_path / "out", tmp_path / "cache", progress=False)
    catalogue = pd.read_parquet(tmp_path / "out" / "catalogue.parquet").set_index("clip_id")
    flagged = catalogue["flag"].dropna().to_dict()
    assert flagged == KNOWN_BAD
    assert catalogue["audio_path"].isna().all()
    assert not any(r.path.endswith(".wav") for r in repo.server.requests)
    assert report.n_rejected == 0


def repo_csv_dir() -> Path:
    return REPO.parent / "shared" / "datasets" / "crema-d"


def test_max_clips_spans_the_dataset(repo, tmp_path):
    names = _names(repo_csv_dir())
    repo.fabricate(_paths(names, ["AudioWAV/{}.wav"]))
    prepare_dataset(repo.params(max_clips=12, media="audio"), tmp_path / "out",
                    tmp_path / "cache", progress=False)
    catalogue = pd.read_parquet(tmp_path / "out" / "catalogue.parquet")
    assert len(catalogue) == 12
    assert catalogue["speaker_id"].nunique() >= 10
    assert catalogue["video_path"].isna().all()
    assert all(p.startswith("media/AudioWAV/") for p in catalogue["audio_path"])


def test_failures_are_reported_with_url_and_the_stage_exits_non_zero(repo, tmp_path):
    kept = sorted(_expected(repo_csv_dir(), ("1002",), ("ANG",)))
    repo.fabricate(_paths(kept))
    lost, pointer_only = f"VideoFlash/{kept[0]}.flv", f"AudioWAV/{kept[1]}.wav"
    repo.server.always[f"/media/{lost}"] = "404"
    repo.server.files[f"/media/{pointer_only}"] = lfs_pointer(_media_bytes(pointer_only))
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump({"download": to_dict(
        repo.params(actors=("1002",), emotions=("ANG",)))}))
    out = tmp_path / "out"

    code = download_main(["--params", str(params_file), "--out", str(out),
                          "--cache", str(tmp_path / "cache"), "--no-progress"])

    assert code == 1
    quarantine = pd.read_parquet(out / "quarantine.parquet").set_index("source")
    assert quarantine.loc[f"{repo.server.url}/media/{lost}", "reason"] == "http_404"
    assert quarantine.loc[f"{repo.server.url}/media/{pointer_only}", "reason"] == "lfs_pointer"
    assert "git lfs pull" in quarantine.loc[f"{repo.server.url}/media/{pointer_only}", "detail"]
    catalogue = pd.read_parquet(out / "catalogue.parquet")
    assert sorted(catalogue["clip_id"]) == kept[2:]
    # media holds exactly the kept clips: not the verified sibling files of the two lost ones
    assert _media_files(out) == set(catalogue["video_path"]) | set(catalogue["audio_path"])
    assert len(_media_files(out)) == 2 * (len(kept) - 2)
    report = yaml.safe_load((out / "report.json").read_text())
    assert report["info"]["missing_required"] == 2
    assert report["counts"]["files_failed"] == 2
    assert report["counts"]["files_verified"] == 2 * len(kept) - 2
    assert report["rejected"] == 2 and len(catalogue) + report["rejected"] == len(kept)


def test_a_selection_without_clips_fails_naming_the_counts(repo, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(EmptyOutputError) as error:
        prepare_dataset(repo.params(actors=("9999",)), out, tmp_path / "cache", progress=False)
    assert str(error.value) == (
        "download: no clip kept from CREMA-D: 7442 listed, 7442 not selected by "
        f"download.crema_d; quarantined by reason: none; see {out / 'report.json'} and "
        "quarantine.parquet")
    assert json.loads((out / "report.json").read_text())["info"]["clips_not_selected"] == 7442


def test_local_clone_is_read_without_http_and_pointers_are_refused(tmp_path, crema_d_dir):
    clone = tmp_path / "clone"
    (clone / "processedResults").mkdir(parents=True)
    for name in ("VideoDemographics.csv", "SentenceFilenames.csv"):
        (clone / name).write_bytes((crema_d_dir / name).read_bytes())
    (clone / "processedResults/summaryTable.csv").write_bytes(
        (crema_d_dir / "summaryTable.csv").read_bytes())
    kept = sorted(_expected(crema_d_dir, ("1003",), ("HAP",)))
    for path in _paths(kept, ["VideoFlash/{}.flv"]):
        (clone / path).parent.mkdir(exist_ok=True)
        (clone / path).write_bytes(_media_bytes(path))
    not_pulled = clone / f"VideoFlash/{kept[0]}.flv"
    not_pulled.write_bytes(lfs_pointer(_media_bytes("x")))  # a clone without `git lfs pull`
    params = DownloadParams(dataset="crema-d", crema_d=CremaDParams(
        local_dir=str(clone), actors=("1003",), emotions=("HAP",), media="video"))

    report = prepare_dataset(params, tmp_path / "out", tmp_path / "cache", progress=False)

    catalogue = pd.read_parquet(tmp_path / "out" / "catalogue.parquet")
    assert sorted(catalogue["clip_id"]) == kept[1:]
    (rejection,) = report.rejections
    assert rejection.reason == "lfs_pointer" and "git lfs pull" in rejection.detail
    assert rejection.source == not_pulled.as_uri()
    for row in catalogue.itertuples():
        data = (tmp_path / "out" / row.video_path).read_bytes()
        assert hashlib.sha256(data).hexdigest() == row.video_sha256


@pytest.mark.slow
def test_sigkill_mid_download_then_rerun_resumes_the_partial_files(repo, tmp_path):
    kept = sorted(_expected(repo_csv_dir(), ("1005",), ("ANG", "HAP")))
    repo.fabricate(_paths(kept))
    repo.server.throttle_bps = 5_000  # each 1-2 KB media file takes ~0.3 s
    repo.server.throttle_prefix = "/media/"
    params_file = tmp_path / "params.yaml"
    params = repo.params(actors=("1005",), emotions=("ANG", "HAP"))
    params_file.write_text(yaml.safe_dump({"download": to_dict(params)}))
    command = [sys.executable, "-m", "stages.download", "--params", str(params_file),
               "--out", str(tmp_path / "out"), "--cache", str(tmp_path / "cache"),
               "--no-progress"]
    files = tmp_path / "cache" / "crema-d" / "files"

    stage = subprocess.Popen(command, cwd=REPO, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not any(p.stat().st_size > 0 for p in files.rglob("*.part")):
            assert stage.poll() is None, "the stage ended before any partial file appeared"
            assert time.monotonic() < deadline, "no partial file appeared"
            time.sleep(0.02)
    finally:
        stage.send_signal(signal.SIGKILL)
        stage.wait()
    partial = {p.relative_to(files).as_posix()[:-len(".part")]: p.stat().st_size
               for p in files.rglob("*.part")}
    assert partial and not (tmp_path / "out").exists()

    repo.server.throttle_bps = 0
    rerun = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    ranges = {r.path[len("/media/"):]: r.range for r in repo.media_requests() if r.range}
    for path, size in partial.items():
        if 0 < size < len(_media_bytes(path)):  # a .part already complete needs no request
            assert ranges[path] == f"bytes={size}-"
    assert ranges, "no Range request was made"
    catalogue = pd.read_parquet(tmp_path / "out" / "catalogue.parquet")
    assert sorted(catalogue["clip_id"]) == kept
    for path in _paths(kept):
        assert (tmp_path / "out" / "media" / path).read_bytes() == _media_bytes(path)
    assert not list(files.rglob("*.part"))
