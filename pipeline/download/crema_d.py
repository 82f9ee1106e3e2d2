"""CREMA-D (Cao et al. 2014): the catalogue built from the dataset's own published files.

The clip list comes from ``SentenceFilenames.csv`` (cross-checked against
``processedResults/summaryTable.csv``), demographics from ``VideoDemographics.csv``, and each
media file's expected size and SHA-256 from its Git LFS pointer in the repository. The media
bytes then come from the LFS media URL (or a local clone) and are verified against the pointer.

The name parsing and demographics reading here are also used for the demo corpus, which
mimics CREMA-D's file names and CSV columns.
"""

from __future__ import annotations

import io
import json
import logging
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from pipeline.config import CREMA_D_EMOTIONS, CREMA_D_LEVELS, CremaDParams
from pipeline.download.fetch import (
    DownloadError,
    FetchOptions,
    HttpClient,
    fetch_bytes,
    is_lfs_pointer,
    lfs_pointer_error,
)
from pipeline.runtime import QuarantineError, StageReport, atomic_write_bytes, atomic_write_text

log = logging.getLogger(__name__)

DEMOGRAPHICS_CSV = "VideoDemographics.csv"
SENTENCES_CSV = "SentenceFilenames.csv"
SUMMARY_CSV = "processedResults/summaryTable.csv"
VIDEO_DIR, VIDEO_EXT = "VideoFlash", ".flv"
AUDIO_DIR, AUDIO_EXT = "AudioWAV", ".wav"

KNOWN_BAD: dict[str, str] = {
    # From the dataset's README and issue tracker; verified by the faces/audio stages' reports.
    "1076_MTI_NEU_XX": "short and silent: the clip has no usable audio",
    "1076_MTI_SAD_XX": "the video shows an error picture instead of the actor",
    "1064_TIE_SAD_XX": "the file has no duration (unreadable length)",
    "1064_IEO_DIS_MD": "one minute long and contains every emotion, not one",
}
"""CREMA-D clips known to be broken, with the reason; excluded or flagged per params."""

_STEM = re.compile(r"^(\d{4})_([A-Z]{3})_([A-Z]{3})_([A-Z]{2})$")
_POINTER_OID = re.compile(rb"^oid sha256:([0-9a-f]{64})$", re.MULTILINE)
_POINTER_SIZE = re.compile(rb"^size (\d+)$", re.MULTILINE)


@dataclass(frozen=True)
class ClipName:
    """The labels a CREMA-D file name carries: ``<ActorID>_<Sentence>_<Emotion>_<Level>``."""

    clip_id: str
    speaker_id: str
    sentence: str
    emotion: str
    level: str


def parse_clip_name(stem: str) -> ClipName:
    """Return the labels in a CREMA-D clip name; :class:`QuarantineError` if malformed."""
    match = _STEM.match(stem)
    if not match or match[3] not in CREMA_D_EMOTIONS or match[4] not in CREMA_D_LEVELS:
        raise QuarantineError(
            "bad_name", f"{stem!r} is not <ActorID>_<Sentence>_<{'|'.join(CREMA_D_EMOTIONS)}>"
            f"_<{'|'.join(CREMA_D_LEVELS)}>", stem,
        )
    return ClipName(stem, match[1], match[2], match[3], match[4])


def clips_from_names(stems: list[str], report: StageReport) -> pd.DataFrame:
    """Return one row of labels per well-formed clip name; malformed names are quarantined."""
    rows = []
    for stem in stems:
        try:
            rows.append(parse_clip_name(stem).__dict__)
        except QuarantineError as error:
            report.reject_error(stem, error)
    columns = ["clip_id", "speaker_id", "sentence", "emotion", "level"]
    return pd.DataFrame(rows, columns=columns)


def read_demographics(data: bytes | Path) -> pd.DataFrame:
    """Return ``VideoDemographics.csv`` as speaker_id, age, sex, race, ethnicity."""
    source = io.BytesIO(data) if isinstance(data, bytes) else data
    table = pd.read_csv(source, dtype={"ActorID": str, "Sex": str, "Race": str,
                                       "Ethnicity": str})
    missing = {"ActorID", "Age", "Sex", "Race", "Ethnicity"} - set(table.columns)
    if missing:
        raise ValueError(f"{DEMOGRAPHICS_CSV} lacks column(s) {sorted(missing)}")
    table = table.rename(columns={"ActorID": "speaker_id", "Age": "age", "Sex": "sex",
                                  "Race": "race", "Ethnicity": "ethnicity"})
    table["age"] = pd.to_numeric(table["age"], errors="coerce").astype("Int32")
    table["sex"] = table["sex"].str.strip().str.capitalize()
    return table[["speaker_id", "age", "sex", "race", "ethnicity"]]


def join_demographics(clips: pd.DataFrame, demographics: pd.DataFrame,
                      report: StageReport) -> pd.DataFrame:
    """Return ``clips`` with each speaker's demographics; counts clips without any."""
    joined = clips.merge(demographics, on="speaker_id", how="left", validate="many_to_one")
    unknown = sorted(set(joined.loc[joined["sex"].isna(), "speaker_id"]))
    if unknown:
        log.warning("no demographics for speaker(s) %s", unknown)
    report.info["clips_without_demographics"] = int(joined["sex"].isna().sum())
    return joined


def read_clip_names(sentences_csv: bytes) -> list[str]:
    """Return the clip names listed in ``SentenceFilenames.csv``."""
    table = pd.read_csv(io.BytesIO(sentences_csv), dtype=str)
    if "Filename" not in table.columns:
        raise ValueError(f"{SENTENCES_CSV} has no Filename column")
    return table["Filename"].str.strip().tolist()


def read_rated_names(summary_csv: bytes) -> set[str]:
    """Return the clip names that ``summaryTable.csv`` has crowd ratings for."""
    table = pd.read_csv(io.BytesIO(summary_csv), dtype=str)
    return set(table["FileName"].str.strip())


def parse_lfs_pointer(text: bytes, url: str) -> tuple[int, str]:
    """Return ``(size, sha256)`` from a Git LFS pointer; :class:`DownloadError` otherwise."""
    oid, size = _POINTER_OID.search(text), _POINTER_SIZE.search(text)
    if not is_lfs_pointer(text) or not oid or not size:
        raise DownloadError("bad_pointer", "expected a Git LFS pointer (version / oid sha256 / "
                            "size lines) at raw_base_url; got something else", url)
    return int(size[1]), oid[1].decode()


def media_paths(clip_id: str, media: str) -> dict[str, str]:
    """Return the repository paths of a clip's media files per role (video / audio)."""
    paths = {"video": f"{VIDEO_DIR}/{clip_id}{VIDEO_EXT}",
             "audio": f"{AUDIO_DIR}/{clip_id}{AUDIO_EXT}"}
    return {role: path for role, path in paths.items() if media in ("both", role)}


def select_clips(clips: pd.DataFrame, params: CremaDParams, report: StageReport) -> pd.DataFrame:
    """Return the subset of ``clips`` the params ask for, with known-bad ones handled.

    Order: actors, emotions, known-bad (excluded clips are quarantined as ``known_bad``), then
    ``max_clips`` evenly spaced over what is left, so a small run still spans actors.
    """
    selected = clips
    if params.actors:
        selected = selected[selected["speaker_id"].isin(params.actors)]
    if params.emotions:
        selected = selected[selected["emotion"].isin(params.emotions)]
    report.info["clips_listed"] = len(clips)
    report.info["clips_not_selected"] = len(clips) - len(selected)
    bad = selected["clip_id"].isin(KNOWN_BAD)
    selected = selected.assign(flag=selected["clip_id"].map(KNOWN_BAD))
    if params.known_bad == "exclude":
        for clip_id in selected.loc[bad, "clip_id"]:
            report.reject(clip_id, "known_bad", KNOWN_BAD[clip_id])
        selected = selected[~bad]
    if params.max_clips and len(selected) > params.max_clips:
        keep = np.unique(np.linspace(0, len(selected) - 1, params.max_clips).round().astype(int))
        report.info["clips_not_selected"] += len(selected) - len(keep)
        selected = selected.iloc[keep]
    return selected.reset_index(drop=True)


class CremaDSource:
    """Reads CREMA-D's metadata and pointers over HTTP (cached) or from a local clone."""

    def __init__(self, params: CremaDParams, cache_dir: Path, options: FetchOptions) -> None:
        self.params = params
        self.cache_dir = cache_dir
        self.options = options
        self.local = Path(params.local_dir) if params.local_dir else None
        self.http = HttpClient(options.workers)

    def metadata(self, path: str) -> bytes:
        """Return a metadata file of the repository (fetched once, then read from the cache)."""
        if self.local is not None:
            data = (self.local / path).read_bytes()
        else:
            cached = self.cache_dir / "meta" / path
            if cached.is_file():
                return cached.read_bytes()
            data = fetch_bytes(self.raw_url(path), self.options, self.http)
            if not is_lfs_pointer(data):
                atomic_write_bytes(cached, data)
        if is_lfs_pointer(data):
            raise lfs_pointer_error(str(self.local / path) if self.local else self.raw_url(path))
        return data

    def raw_url(self, path: str) -> str:
        """Return the URL of a plain repository file."""
        return f"{self.params.raw_base_url.rstrip('/')}/{path}"

    def media_url(self, path: str) -> str:
        """Return the URL of a media file's bytes."""
        if self.local is not None:
            return (self.local / path).absolute().as_uri()
        return f"{self.params.media_base_url.rstrip('/')}/{path}"

    def expectations(self, paths: list[str], report: StageReport) -> dict[str, tuple[int, str]]:
        """Return ``path -> (size, sha256)`` from the LFS pointers of ``paths``.

        Pointers are cached in ``<cache>/lfs-pointers.json`` by URL, so a re-run fetches
        none. A pointer that cannot be fetched or parsed is quarantined (item = the path).
        With a local clone, expectations are left to the source files (returns ``{}``).
        """
        if self.local is not None:
            return {}
        cache_file = self.cache_dir / "lfs-pointers.json"
        cache = json.loads(cache_file.read_text()) if cache_file.is_file() else {}
        missing = [p for p in paths if self.raw_url(p) not in cache]
        try:
            self._fetch_pointers(missing, cache, report)
        finally:
            if missing:
                atomic_write_text(cache_file, json.dumps(cache, separators=(",", ":")))
        return {p: tuple(cache[self.raw_url(p)]) for p in paths if self.raw_url(p) in cache}

    def _fetch_pointers(self, paths: list[str], cache: dict, report: StageReport) -> None:
        def fetch(path: str) -> tuple[str, tuple[int, str] | DownloadError]:
            url = self.raw_url(path)
            try:
                text = fetch_bytes(url, self.options, self.http)
                return path, parse_lfs_pointer(text, url)
            except DownloadError as error:
                return path, error

        with ThreadPoolExecutor(self.options.workers) as pool:
            for path, outcome in tqdm(pool.map(fetch, paths), total=len(paths),
                                      desc="LFS pointers", disable=not self.options.progress,
                                      leave=False):
                if isinstance(outcome, DownloadError):
                    report.reject(Path(path).stem, outcome.reason, outcome.detail, outcome.url)
                    report.count("files_failed")
                else:
                    cache[self.raw_url(path)] = list(outcome)


def catalogue_crema_d(params: CremaDParams, cache_dir: Path, options: FetchOptions,
                      report: StageReport) -> pd.DataFrame:
    """Return the planned clips: labels, demographics, flag and per-role url/size/sha256.

    Columns ``<role>_src`` (URL), ``<role>_path`` (path under media/), ``<role>_size`` and
    ``<role>_sha256`` (expected, None when taken from a local source) for role video, audio.
    Clips whose pointer could not be read are already quarantined and left out.
    """
    source = CremaDSource(params, cache_dir, options)
    names = read_clip_names(source.metadata(SENTENCES_CSV))
    rated = read_rated_names(source.metadata(SUMMARY_CSV))
    report.info["clips_without_ratings"] = len(set(names) - rated)
    clips = clips_from_names(names, report)
    clips = join_demographics(clips, read_demographics(source.metadata(DEMOGRAPHICS_CSV)), report)
    clips = select_clips(clips, params, report)
    roles = media_paths("x", params.media).keys()
    wanted = [media_paths(c, params.media)[r] for c in clips["clip_id"] for r in roles]
    expected = source.expectations(wanted, report)
    for role in ("video", "audio"):
        paths = [media_paths(c, params.media).get(role) for c in clips["clip_id"]]
        clips[f"{role}_path"] = paths
        clips[f"{role}_src"] = [source.media_url(p) if p else None for p in paths]
        clips[f"{role}_size"] = [expected.get(p, (None, None))[0] if p else None for p in paths]
        clips[f"{role}_sha256"] = [expected.get(p, (None, None))[1] if p else None for p in paths]
    if source.local is None:
        complete = np.ones(len(clips), dtype=bool)
        for role in roles:
            complete &= clips[f"{role}_sha256"].notna().to_numpy()
        report.info["clips_without_pointer"] = int((~complete).sum())
        clips = clips[complete].reset_index(drop=True)
    clips["dataset"] = "crema-d"
    return clips
