"""A team's own recordings: a directory of videos plus a labels CSV.

The CSV needs the columns ``file`` (video path relative to the directory) and ``speaker``;
``emotion``, ``level``, ``sex``, ``age`` and ``audio`` (a separate audio file) are optional and
other columns are ignored. Emotion words are mapped to CREMA-D codes (``happy`` -> ``HAP``),
sex to ``Male`` / ``Female``. A row with an unusable label is quarantined, not guessed.
"""

from __future__ import annotations

import logging
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
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    table.columns = [c.strip().lower() for c in table.columns]
    missing = [c for c in REQUIRED_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"{path}: labels CSV lacks column(s) {missing}; needs "
                         f"{list(REQUIRED_COLUMNS)} and optionally {list(OPTIONAL_COLUMNS)}")
    for column in OPTIONAL_COLUMNS:
        if column not in table.columns:
            table[column] = ""
    return table.apply(lambda col: col.str.strip())


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
    planned = {
        "clip_id": PurePosixPath(file).with_suffix("").as_posix(),
        "speaker_id": row["speaker"], "sentence": None, "emotion": emotion,
        "level": row["level"].upper() or None, "sex": sex,
        "age": int(row["age"]) if row["age"] else None, "race": None, "ethnicity": None,
        "dataset": "folder", "flag": None,
    }
    for role, name in (("video", file), ("audio", row["audio"])):
        planned[f"{role}_path"] = name or None
        planned[f"{role}_src"] = (videos_dir / name).absolute().as_uri() if name else None
        planned[f"{role}_size"] = planned[f"{role}_sha256"] = None  # taken from the file
    return planned


def catalogue_folder(params: FolderParams, report: StageReport) -> pd.DataFrame:
    """Return the planned clips of a folder dataset (files are verified when fetched)."""
    videos_dir = Path(params.videos_dir)
    if not videos_dir.is_dir():
        raise FileNotFoundError(f"download.folder.videos_dir {videos_dir} is not a directory")
    labels = read_labels(Path(params.labels_csv))
    rows, seen = [], set()
    for _, row in labels.iterrows():
        try:
            planned = clip_row(row, videos_dir)
            if planned["clip_id"] in seen:
                raise QuarantineError("duplicate", "listed twice in the labels CSV", row["file"])
        except QuarantineError as error:
            report.reject(row["file"] or "<empty>", error.reason, error.detail,
                          str(videos_dir / row["file"]))
            continue
        seen.add(planned["clip_id"])
        rows.append(planned)
    report.info["clips_listed"] = len(labels)
    return pd.DataFrame(rows)
