"""A team's own recordings: a directory of videos plus a labels CSV.

The CSV needs the columns ``file`` (video path relative to the directory) and ``speaker``;
``emotion``, ``level``, ``sex``, ``age`` and ``audio`` (a separate audio file) are optional and
other columns are ignored. Emotion words are mapped to CREMA-D codes (``happy`` -> ``HAP``),
sex to ``Male`` / ``Female``. A row with an unusable label is quarantined, not guessed.
A clip's id is its video's path relative to the directory, without the extension (with it
where two files differ only by extension). Paths may be absolute if they lie inside the
directory.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from pathlib import Path, PurePosixPath

import pandas as pd

from pipeline.config import FolderParams
from pipeline.runtime import QuarantineError, StageReport

log = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("file", "speaker")
OPTIONAL_COLUMNS = ("emotion", "level", "sex", "age", "audio")
EMOTION_WORDS = {
    "angry": "ANG", "anger": "ANG", "disgust": "DIS", "disgusted": "DIS", "fear": "FEA",
    "fearful": "FEA", "happy": "HAP", "happiness": "HAP", "neutral": "NEU", "sad": "SAD",
    "sadness": "SAD",
}
SEX_WORDS = {"male": "Male", "m": "Male", "man": "Male", "female": "Female", "f": "Female",
             "woman": "Female"}


def read_labels(path: Path) -> pd.DataFrame:
    """Return the labels CSV with its required columns checked; all values as strings."""
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError as error:
        raise ValueError(f"{path}: labels CSV is empty; it needs a header row with "
                         f"{list(REQUIRED_COLUMNS)} and optionally "
                         f"{list(OPTIONAL_COLUMNS)}") from error
    table.columns = [c.strip().lower() for c in table.columns]
    missing = [c for c in REQUIRED_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"{path}: labels CSV lacks column(s) {missing}; needs "
                         f"{list(REQUIRED_COLUMNS)} and optionally {list(OPTIONAL_COLUMNS)}")
    for column in OPTIONAL_COLUMNS:
        if column not in table.columns:
            table[column] = ""
    return table.apply(lambda col: col.str.strip())


def path_in_folder(name: str, videos_dir: Path) -> str:
    """Return ``name`` as a POSIX path relative to ``videos_dir``.

    ``name`` may be relative to the directory or absolute; ``..`` is resolved lexically.
    :class:`QuarantineError` (``bad_path``) when it lies outside the directory.
    """
    for root in dict.fromkeys((os.path.abspath(videos_dir), os.path.realpath(videos_dir))):
        full = os.path.normpath(os.path.join(root, name))
        if full.startswith(root + os.sep):
            return PurePosixPath(Path(os.path.relpath(full, root))).as_posix()
    raise QuarantineError("bad_path", f"{name!r} is outside download.folder.videos_dir "
                          f"({videos_dir})", name)


def clip_row(row: pd.Series, videos_dir: Path) -> dict:
    """Return one planned clip from a labels row; :class:`QuarantineError` on a bad label."""
    file = row["file"]
    if not file or not row["speaker"]:
        raise QuarantineError("bad_label", "file and speaker must not be empty", file)
    emotion = row["emotion"]
    emotion = EMOTION_WORDS.get(emotion.lower(), emotion.upper()) or None
    sex = SEX_WORDS.get(row["sex"].lower()) if row["sex"] else None
    if row["sex"] and sex is None:
        raise QuarantineError("bad_label", f"sex {row['sex']!r} is not male/female", file)
    if row["age"] and not row["age"].isdigit():
        raise QuarantineError("bad_label", f"age {row['age']!r} is not a whole number", file)
    video = path_in_folder(file, videos_dir)
    planned = {
        "clip_id": PurePosixPath(video).with_suffix("").as_posix(),
        "speaker_id": row["speaker"], "sentence": None, "emotion": emotion,
        "level": row["level"].upper() or None, "sex": sex,
        "age": int(row["age"]) if row["age"] else None, "race": None, "ethnicity": None,
        "dataset": "folder", "flag": None,
    }
    audio = path_in_folder(row["audio"], videos_dir) if row["audio"] else None
    for role, name in (("video", video), ("audio", audio)):
        planned[f"{role}_path"] = name
        planned[f"{role}_src"] = (videos_dir / name).absolute().as_uri() if name else None
        planned[f"{role}_size"] = planned[f"{role}_sha256"] = None  # taken from the file
    return planned


def catalogue_folder(params: FolderParams, report: StageReport) -> pd.DataFrame:
    """Return the planned clips of a folder dataset (files are verified when fetched).

    A file listed twice is quarantined on its second row (``duplicate``): its clip would be
    catalogued twice. Different files are different clips, also when only their extensions
    differ (``good.mp4``, ``good.mkv``): see :func:`unique_clip_ids`.
    """
    videos_dir = Path(params.videos_dir)
    if not videos_dir.is_dir():
        raise FileNotFoundError(f"download.folder.videos_dir {videos_dir} is not a directory")
    labels = read_labels(Path(params.labels_csv))
    rows, first_listed = [], {}
    for number, (_, row) in enumerate(labels.iterrows(), start=1):
        try:
            planned = clip_row(row, videos_dir)
            video = planned["video_path"]
            if video in first_listed:
                raise QuarantineError("duplicate", f"{video} is listed twice in the labels CSV "
                                      f"(rows {first_listed[video]} and {number})", row["file"])
        except QuarantineError as error:
            report.reject(row["file"] or "<empty>", error.reason, error.detail,
                          str(videos_dir / row["file"]))
            continue
        first_listed[video] = number
        rows.append(planned)
    unique_clip_ids(rows)
    report.info["clips_listed"] = len(labels)
    return pd.DataFrame(rows)


def unique_clip_ids(rows: list[dict]) -> None:
    """Make the clip ids of ``rows`` unique, in place.

    A clip whose id (its path without extension) another clip shares takes its file's path,
    extension included, as id (``good.mp4``, ``good.mkv``).
    """
    while True:
        counts = Counter(row["clip_id"] for row in rows)
        clashing = [row for row in rows
                    if counts[row["clip_id"]] > 1 and row["clip_id"] != row["video_path"]]
        if not clashing:  # paths are unique, so this ends
            return
        for row in clashing:
            log.warning("clip %s shares its name with another file: its id keeps the "
                        "extension", row["video_path"])
            row["clip_id"] = row["video_path"]
