"""VoxCeleb2 as researchers have it on disk: ``<root>/<id>/<video_id>/<utt>.mp4``.

000 trains on VoxCeleb2 (Chung, Nagrani and Zisserman 2018): 6,000+ speakers, over a million
utterance videos, no emotion labels. The catalogue is built from the tree itself, with no
hand-written labels CSV: the speaker is the VoxCeleb id (``id00012``), the clip id the
utterance's path without extension (``id00012/21Uxsk56VDQ/00001``), and the sex comes from the
dataset's ``vox2_meta.csv``::

    VoxCeleb2 ID ,VGGFace2 ID ,Gender ,Set
    id00012 ,n000012 ,m ,dev

(a space before each comma, sometimes a byte-order mark: both are tolerated). The mp4 files
carry the audio track, which the audio stage reads. Sentence, emotion, level and age are
unknown (null): the VAE then trains unconditionally (``train_vae.conditional: auto``), as in
000.

Bad input is quarantined, never guessed: an ``.mp4`` outside the ``<id>/<video_id>/`` layout
(``bad_path``), a speaker that ``vox2_meta.csv`` does not list (``not_in_meta``: most often
the wrong meta file, e.g. VoxCeleb1's) or lists with a gender other than m/f (``bad_label``).
Other files (VoxCeleb2 ships only mp4 under ``mp4/``) are counted in the report and logged.
"""

from __future__ import annotations

import logging
import os
import re
from collections import defaultdict
from itertools import zip_longest
from pathlib import Path, PurePosixPath

import pandas as pd

from pipeline.config import VoxCeleb2Params
from pipeline.runtime import QuarantineError, StageReport

log = logging.getLogger(__name__)

VIDEO_EXT = ".mp4"
SPEAKER_ID = re.compile(r"^id\d{5}$")
SEX = {"m": "Male", "f": "Female"}
META_ID, META_GENDER = "voxceleb2 id", "gender"


def read_meta(path: Path) -> dict[str, str]:
    """Return ``{VoxCeleb id: gender as written}`` from ``vox2_meta.csv``.

    Raises ``ValueError`` naming the file when it lacks the id or gender column.
    """
    table = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    table.columns = [c.strip().lower() for c in table.columns]
    missing = [c for c in (META_ID, META_GENDER) if c not in table.columns]
    if missing:
        raise ValueError(f"{path}: not a vox2_meta.csv: lacks column(s) {missing} "
                         f"(has {list(table.columns)})")
    return {row[META_ID].strip(): row[META_GENDER].strip().lower()
            for _, row in table.iterrows()}


def list_utterances(root: Path, report: StageReport) -> list[str]:
    """Return every ``<id>/<video_id>/<utt>.mp4`` under ``root``, relative, sorted.

    ``.mp4`` files at another depth are quarantined (``bad_path``); other files are counted
    (``info["files_ignored"]``).
    """
    if not root.is_dir():
        raise FileNotFoundError(f"download.voxceleb2.root {root} is not a directory")
    found, ignored = [], 0
    for directory, subdirs, files in os.walk(root):
        subdirs.sort()
        for name in sorted(files):
            relative = PurePosixPath(Path(directory, name).relative_to(root).as_posix())
            if relative.suffix != VIDEO_EXT:
                ignored += 1
            elif len(relative.parts) != 3 or not SPEAKER_ID.match(relative.parts[0]):
                report.reject(relative.as_posix(), "bad_path",
                              f"not in the <id>/<video_id>/<utt>{VIDEO_EXT} layout (speaker "
                              f"ids look like id00012)", root / relative)
            else:
                found.append(relative.as_posix())
    if ignored:
        log.warning("%d file(s) under %s are not %s videos: ignored", ignored, root, VIDEO_EXT)
    report.info["files_ignored"] = ignored
    return sorted(found)


def spread_over_videos(utterances: list[str], limit: int) -> list[str]:
    """Return at most ``limit`` of one speaker's utterances, taking each video's in turn.

    The first utterance of every video, then the second ..., so a small sample still spans
    the speaker's videos (sessions, rooms, years); ``limit`` 0 keeps all. Sorted.
    """
    if not limit:
        return utterances
    by_video: dict[str, list[str]] = defaultdict(list)
    for utterance in utterances:
        by_video[utterance.rsplit("/", 1)[0]].append(utterance)
    in_turn = [u for round_ in zip_longest(*by_video.values()) for u in round_ if u]
    return sorted(in_turn[:limit])


def clip_row(utterance: str, root: Path, meta: dict[str, str], meta_path: Path) -> dict:
    """Return the planned catalogue row of one utterance; :class:`QuarantineError` if unusable."""
    speaker = utterance.split("/", 1)[0]
    if speaker not in meta:
        raise QuarantineError("not_in_meta", f"speaker {speaker} is not in {meta_path}",
                              root / utterance)
    if meta[speaker] not in SEX:
        raise QuarantineError("bad_label", f"{meta_path} gives speaker {speaker} gender "
                              f"{meta[speaker]!r}, not m/f", root / utterance)
    return {
        "clip_id": str(PurePosixPath(utterance).with_suffix("")), "speaker_id": speaker,
        "sentence": None, "emotion": None, "level": None, "sex": SEX[meta[speaker]],
        "age": None, "race": None, "ethnicity": None, "dataset": "voxceleb2", "flag": None,
        "video_path": utterance, "video_src": (root / utterance).absolute().as_uri(),
        "video_size": None, "video_sha256": None,  # taken from the file when fetched
        "audio_path": None, "audio_src": None, "audio_size": None, "audio_sha256": None,
    }


def catalogue_voxceleb2(params: VoxCeleb2Params, report: StageReport) -> pd.DataFrame:
    """Return the planned clips of a VoxCeleb2 tree (files are verified when fetched)."""
    root, meta_path = Path(params.root), Path(params.meta_csv)
    meta = read_meta(meta_path)
    utterances = list_utterances(root, report)
    by_speaker: dict[str, list[str]] = defaultdict(list)
    for utterance in utterances:
        by_speaker[utterance.split("/", 1)[0]].append(utterance)
    wanted = set(params.speakers) or set(by_speaker)
    absent = sorted(wanted - set(by_speaker))
    if absent:
        log.warning("download.voxceleb2.speakers not under %s: %s", root, absent)
    rows, selected = [], 0
    for speaker in sorted(wanted & set(by_speaker)):
        chosen = spread_over_videos(by_speaker[speaker], params.max_clips_per_speaker)
        selected += len(chosen)
        for utterance in chosen:
            try:
                rows.append(clip_row(utterance, root, meta, meta_path))
            except QuarantineError as error:
                report.reject_error(utterance, error)
    report.info.update(clips_listed=len(utterances), clips_not_selected=len(utterances) - selected,
                       speakers=len(wanted & set(by_speaker)))
    return pd.DataFrame(rows)
