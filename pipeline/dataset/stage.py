"""The ``dataset`` stage: join catalogue + faces + audio, split, and shard for training.

Each catalogue clip ends in exactly one place: a split of the dataset, or the report's
quarantine table with the reason it fell out (``emotion_not_kept``, ``missing_face[:why]``,
``missing_audio[:why]``, ``no_emotion_label``; the ``why`` is the faces / audio stage's own
quarantine reason), so the counts add up to the catalogue.

Emotion labels (:func:`catalogue_has_emotions`):

- A catalogue with no emotion label at all (a folder dataset without an ``emotion`` column,
  000's VoxCeleb2-like data) is an *unlabelled* dataset: every clip with a face and audio is
  kept, ``emotion`` and ``emotion_index`` are null, and ``meta.json``'s ``emotions`` is
  ``[]``, which tells train_vae (unconditional VAE), evaluate (no emotion metrics) and
  generate (no ``--emotion``) that the data has none. ``dataset.emotions`` then selects
  nothing.
- In a labelled catalogue, a clip whose emotion is not in ``dataset.emotions`` is left out
  by choice (``emotion_not_kept``, checked first: such clips are out of scope); a clip
  with *no* label is quarantined as ``no_emotion_label`` after the face and audio checks,
  so a media fault still shows as such. Keeping it would hand the conditional VAE a clip
  without a code, and guessing a label would be worse: label it, or drop the labels to
  train on every clip unconditionally.

Splitting never needs emotion labels: the speaker split is stratified by sex only.

Splits (``dataset.split_mode``):

- ``speaker`` (default): speaker-disjoint train / val / test, stratified by sex: each sex's
  speakers are shuffled with the seed and dealt by the fractions, at least one per split
  where a sex has three or more speakers, so every split holds both sexes when possible.
- ``clip``: a seeded random split of the clips (003's 8:2 has no val split, which training
  needs: ``test_fraction: 0.2`` and a small ``val_fraction``); speakers then appear in
  several splits.

Output: ``<out>/{train,val,test}/part-NNNNN.parquet`` (:data:`pipeline.schemas.DATASET`, rows
in a seeded shuffled order so a streaming shuffle buffer mixes speakers well),
``meta.json``, ``schema.md`` and the stage report. Same inputs and params give the same bytes.

When the faces stage made equally spaced crops (``faces.sequence_frames`` > 1: its
``sequence-*.parquet``), each kept clip's crops follow it into its split as
``<split>/frames-NNNNN.parquet`` (:data:`pipeline.schemas.DATASET_FRAMES`: clip id, speaker,
emotion label, frame index, face), ordered by clip id and frame; without them nothing
changes.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.config import DatasetParams
from pipeline.loaders import META_JSON, SHARD_PREFIX, SPLITS
from pipeline.runtime import (
    QUARANTINE_PARQUET,
    EmptyOutputError,
    Rejection,
    StageReport,
    atomic_directory,
    atomic_write_json,
    atomic_write_text,
)
from pipeline.schemas import DATASET, DATASET_FRAMES, DATASET_META_KEYS, describe
from pipeline.shards import ShardWriter, list_shards

log = logging.getLogger(__name__)

FACE_COLUMNS = ["clip_id", "face", "size", "frame_index"]
AUDIO_COLUMNS = ["clip_id", "pcm", "sample_rate", "n_samples"]
SEQUENCE_PREFIX = "sequence"
"""The faces stage's equally spaced crops (``faces.sequence_frames`` > 1)."""
FRAMES_PREFIX = "frames"
"""Their shards in each split directory, beside the clips' ``part-*``."""
LABEL_COLUMNS = ["clip_id", "speaker_id", "sentence", "emotion", "level", "sex", "age", "race",
                 "ethnicity"]


def build_dataset(
    catalogue: str | Path,
    faces_dir: str | Path,
    audio_dir: str | Path,
    out_dir: str | Path,
    params: DatasetParams,
) -> StageReport:
    """Return the report of joining, splitting and sharding the clips into ``out_dir``.

    Raises :class:`~pipeline.runtime.EmptyOutputError` (after writing the output and its
    report) when a split would be empty.
    """
    clips = _read_catalogue(catalogue)
    faces = _read_stage(faces_dir, "faces", FACE_COLUMNS)
    audio = _read_stage(audio_dir, "audio", AUDIO_COLUMNS)
    report = StageReport("dataset")
    labelled = catalogue_has_emotions(clips)
    if not labelled:
        log.info("dataset: the catalogue has no emotion labels: clips are kept without one "
                 "(meta.json emotions [], the VAE trains unconditionally)")
    kept = _join(clips, faces, audio, params, report, labelled)
    split_of = assign_splits(kept, params)
    with atomic_directory(out_dir) as tmp:
        table = _dataset_table(kept, faces, audio, split_of, params)
        meta = _meta(table, params, labelled)
        frames = _frames_table(table, faces_dir)
        for index, split in enumerate(SPLITS):
            rows = table.filter(pc.equal(table.column("split"), split))
            _write_split(rows, tmp / split, params, seed=[params.seed, index])
            if frames is not None:
                _write_frames(frames.filter(pc.equal(frames.column("split"), split)),
                              tmp / split, params)
        atomic_write_json(tmp / META_JSON, meta)
        atomic_write_text(tmp / "schema.md", _schema_markdown(frames is not None))
        if frames is not None:
            report.count("frames", frames.num_rows)
        report.count("kept", table.num_rows)
        report.info.update(catalogue_clips=clips.num_rows, kept=table.num_rows,
                           split_mode=params.split_mode, emotion_labels=labelled,
                           splits={s: _split_summary(table, s) for s in SPLITS})
        report.write(tmp)
    if report.counts["kept"] + report.n_rejected != clips.num_rows:
        raise AssertionError("dataset counts do not add up to the catalogue")
    log.info("dataset: %d clips kept of %d; %s", table.num_rows, clips.num_rows,
             {s: meta["splits"][s]["clips"] for s in SPLITS})
    _check_every_split_filled(meta, report, out_dir)
    return report


def catalogue_has_emotions(clips: pa.Table) -> bool:
    """Return whether any catalogue clip has an emotion label (else the data has none)."""
    return clips.column("emotion").null_count < clips.num_rows


def _check_every_split_filled(meta: dict, report: StageReport, out_dir: str | Path) -> None:
    """Raise :class:`EmptyOutputError` when a split has no clips (so no speakers).

    ``train_vae`` and ``train_voice`` read train and val, ``evaluate`` reads test.
    """
    splits = meta["splits"]
    empty = [split for split in SPLITS if not splits[split]["clips"]]
    if empty:
        sizes = ", ".join(f"{split} {splits[split]['clips']} clips of "
                          f"{len(splits[split]['speakers'])} speakers" for split in SPLITS)
        raise EmptyOutputError(
            f"no clips in split(s) {', '.join(empty)} ({sizes}; {report.counts['kept']} kept "
            f"of {report.info['catalogue_clips']}), but the training and evaluation stages "
            "need every split: add speakers or raise dataset.val_fraction / test_fraction",
            report, out_dir)


def _read_catalogue(path: str | Path) -> pa.Table:
    table = pq.read_table(path).sort_by("clip_id")
    _check_unique(table, f"catalogue {path}")
    return table


def _check_unique(table: pa.Table, what: str) -> None:
    ids = table.column("clip_id").to_pylist()
    duplicates = sorted(c for c, n in Counter(ids).items() if n > 1)
    if duplicates:
        raise ValueError(f"{what} repeats clip id(s) {duplicates[:5]}")


class _StageOutput:
    """An upstream stage's rows by clip id plus its quarantine reasons."""

    def __init__(self, table: pa.Table, reasons: dict[str, str]) -> None:
        self.table = table
        self.index = {c: i for i, c in enumerate(table.column("clip_id").to_pylist())}
        self.reasons = reasons


def _read_stage(directory: str | Path, prefix: str, columns: list[str]) -> _StageOutput:
    """Return the ``<prefix>-*.parquet`` rows of a stage's output and its quarantine reasons."""
    directory = Path(directory)
    paths = list_shards(directory, prefix)
    if paths:
        table = pa.concat_tables(pq.read_table(p, columns=columns) for p in paths)
    else:
        log.warning("no %s shards in %s", prefix, directory)
        table = pa.table({c: pa.array([], pa.string()) for c in columns})
    _check_unique(table, f"{prefix} shards in {directory}")
    reasons: dict[str, str] = {}
    if (directory / QUARANTINE_PARQUET).exists():
        for row in pq.read_table(directory / QUARANTINE_PARQUET,
                                 columns=["item", "reason"]).to_pylist():
            reasons.setdefault(row["item"], row["reason"])
    return _StageOutput(table, reasons)


def _join(
    clips: pa.Table,
    faces: _StageOutput,
    audio: _StageOutput,
    params: DatasetParams,
    report: StageReport,
    labelled: bool,
) -> pa.Table:
    """Return the catalogue rows that have a face, audio and (when ``labelled``) a kept emotion.

    Reports the rest with their reason (see the module docstring for the order).
    """
    keep = []
    for i, row in enumerate(clips.select(["clip_id", "emotion", "video_path",
                                          "audio_path"]).to_pylist()):
        clip, source = row["clip_id"], row["video_path"] or row["audio_path"] or ""
        emotion = row["emotion"]
        if emotion is not None and emotion not in params.emotions:  # a choice: no warning each
            report.rejections.append(Rejection(
                clip, "emotion_not_kept",
                f"emotion {emotion!r} not in {list(params.emotions)}", source))
            report.count("rejected:emotion_not_kept")
        elif clip not in faces.index:
            why = faces.reasons.get(clip)
            report.reject(clip, f"missing_face:{why}" if why else "missing_face",
                          f"faces stage: {why or 'no row and no quarantine entry'}", source)
        elif clip not in audio.index:
            why = audio.reasons.get(clip)
            report.reject(clip, f"missing_audio:{why}" if why else "missing_audio",
                          f"audio stage: {why or 'no row and no quarantine entry'}", source)
        elif labelled and emotion is None:
            report.reject(clip, "no_emotion_label",
                          "no emotion label, while other clips of the catalogue have one "
                          "(a labelled dataset needs every clip labelled)", source)
        else:
            keep.append(i)
    log.info("dataset: dropped %s", dict(sorted(report.reasons().items())))
    return clips.take(pa.array(keep, pa.int64()))


def assign_splits(clips: pa.Table, params: DatasetParams) -> dict[str, str]:
    """Return ``{clip_id: split}`` for catalogue rows, by ``params.split_mode``, seeded."""
    ids = clips.column("clip_id").to_pylist()
    if params.split_mode == "clip":
        return _deal(sorted(ids), params, np.random.default_rng(params.seed))
    speakers = clips.column("speaker_id").to_pylist()
    speaker_split = split_speakers(_speaker_sex(speakers, clips.column("sex").to_pylist()),
                                   params)
    return {clip: speaker_split[speaker] for clip, speaker in zip(ids, speakers, strict=True)}


def split_speakers(sex_of: dict[str, str], params: DatasetParams) -> dict[str, str]:
    """Return ``{speaker: split}``: speaker-disjoint, each sex dealt by the fractions."""
    strata: dict[str, list[str]] = defaultdict(list)
    for speaker, sex in sex_of.items():
        strata[sex].append(speaker)
    rng = np.random.default_rng(params.seed)
    split_of: dict[str, str] = {}
    for sex in sorted(strata):
        split_of.update(_deal(sorted(strata[sex]), params, rng, at_least_one=True))
    return split_of


def _speaker_sex(speakers: list[str], sexes: list[str | None]) -> dict[str, str]:
    """Return each speaker's most common sex label (``unknown`` when none is given)."""
    votes: dict[str, Counter[str]] = defaultdict(Counter)
    for speaker, sex in zip(speakers, sexes, strict=True):
        votes[speaker][sex or "unknown"] += 1
    return {s: min(c.items(), key=lambda kv: (-kv[1], kv[0]))[0] for s, c in votes.items()}


def _deal(
    items: list[str], params: DatasetParams, rng: np.random.Generator, at_least_one: bool = False
) -> dict[str, str]:
    """Return ``{item: split}`` for ``items`` shuffled with ``rng`` and cut by the fractions."""
    n = len(items)
    n_val, n_test = round(n * params.val_fraction), round(n * params.test_fraction)
    if at_least_one and n >= 3:
        n_val = max(n_val, int(params.val_fraction > 0))
        n_test = max(n_test, int(params.test_fraction > 0))
    while n_val + n_test > max(n - 1, 0):  # train keeps at least one
        if n_val >= n_test:
            n_val -= 1
        else:
            n_test -= 1
    order = [items[i] for i in rng.permutation(n)]
    return ({c: "test" for c in order[:n_test]}
            | {c: "val" for c in order[n_test:n_test + n_val]}
            | {c: "train" for c in order[n_test + n_val:]})


def _dataset_table(
    kept: pa.Table,
    faces: _StageOutput,
    audio: _StageOutput,
    split_of: dict[str, str],
    params: DatasetParams,
) -> pa.Table:
    """Return the joined rows as a :data:`DATASET` table (catalogue order)."""
    ids = kept.column("clip_id").to_pylist()
    face_rows = faces.table.take(pa.array([faces.index[c] for c in ids], pa.int64()))
    audio_rows = audio.table.take(pa.array([audio.index[c] for c in ids], pa.int64()))
    _check_constant(face_rows, "size", "face crop size")
    _check_constant(audio_rows, "sample_rate", "audio sample rate")
    _check_constant(audio_rows, "n_samples", "audio length")
    columns = {name: kept.column(name) for name in LABEL_COLUMNS}
    sources = [v or a for v, a in zip(kept.column("video_path").to_pylist(),
                                      kept.column("audio_path").to_pylist(), strict=True)]
    columns |= {
        "emotion_index": pa.array([None if e is None else params.emotions.index(e)
                                   for e in kept.column("emotion").to_pylist()], pa.int32()),
        "split": pa.array([split_of[c] for c in ids], pa.string()),
        "face": face_rows.column("face"),
        "face_size": face_rows.column("size"),
        "frame_index": face_rows.column("frame_index"),
        "audio": audio_rows.column("pcm"),
        "sample_rate": audio_rows.column("sample_rate"),
        "source": pa.array(sources, pa.string()),
    }
    return pa.table({f.name: columns[f.name] for f in DATASET})


def _check_constant(table: pa.Table, column: str, what: str) -> None:
    values = set(table.column(column).to_pylist())
    if len(values) > 1:
        raise ValueError(f"{what} differs between clips: {sorted(values)}")


def _write_split(rows: pa.Table, directory: Path, params: DatasetParams, seed: list[int]) -> None:
    """Write ``rows`` in a seeded shuffled order as ``part-NNNNN.parquet`` shards."""
    directory.mkdir(parents=True, exist_ok=True)
    order = np.random.default_rng(seed).permutation(rows.num_rows)
    with ShardWriter(directory, SHARD_PREFIX, DATASET, params.shard_mb * 2**20,
                     params.row_group_rows) as writer:
        writer.write(rows.take(pa.array(order, pa.int64())))


def _frames_table(clips: pa.Table, faces_dir: str | Path) -> pa.Table | None:
    """Return the kept clips' equally spaced crops as :data:`DATASET_FRAMES`; None if none."""
    paths = list_shards(Path(faces_dir), SEQUENCE_PREFIX)
    if not paths:
        return None
    crops = pa.concat_tables(pq.read_table(p) for p in paths).sort_by(
        [("clip_id", "ascending"), ("frame_index", "ascending")])
    index = {c: i for i, c in enumerate(clips.column("clip_id").to_pylist())}
    keep = [i for i, c in enumerate(crops.column("clip_id").to_pylist()) if c in index]
    crops = crops.take(pa.array(keep, pa.int64()))
    rows = clips.take(pa.array([index[c] for c in crops.column("clip_id").to_pylist()],
                               pa.int64()))
    sizes = set(crops.column("size").to_pylist()) | set(clips.column("face_size").to_pylist())
    if len(sizes) > 1:
        raise ValueError(f"face crop size differs between chosen and sequence frames: "
                         f"{sorted(sizes)}")
    columns = {name: rows.column(name) for name in ("speaker_id", "emotion", "emotion_index",
                                                      "split")}
    columns |= {"clip_id": crops.column("clip_id"), "frame_index": crops.column("frame_index"),
                "face": crops.column("face"), "face_size": crops.column("size")}
    return pa.table({f.name: columns[f.name] for f in DATASET_FRAMES})


def _write_frames(rows: pa.Table, directory: Path, params: DatasetParams) -> None:
    """Write a split's sequence crops as ``frames-NNNNN.parquet`` (clip, then frame order)."""
    with ShardWriter(directory, FRAMES_PREFIX, DATASET_FRAMES, params.shard_mb * 2**20,
                     params.row_group_rows) as writer:
        writer.write(rows)


def _split_summary(table: pa.Table, split: str) -> dict:
    rows = table.filter(pc.equal(table.column("split"), split))
    return {
        "clips": rows.num_rows,
        "speakers": sorted(set(rows.column("speaker_id").to_pylist())),
        "sex": dict(sorted(Counter(s or "unknown"
                                   for s in rows.column("sex").to_pylist()).items())),
        "emotions": dict(sorted(Counter(e or "none"
                                        for e in rows.column("emotion").to_pylist()).items())),
    }


def _meta(table: pa.Table, params: DatasetParams, labelled: bool) -> dict:
    """Return ``meta.json``'s content (exactly :data:`DATASET_META_KEYS`).

    ``emotions`` is ``[]`` when the data has no emotion labels (``labelled`` false).
    """
    def first(column: str, default: int) -> int:
        return int(table.column(column)[0].as_py()) if table.num_rows else default

    audio_samples = (len(table.column("audio")[0].as_py()) // 2) if table.num_rows else 0
    meta = {
        "emotions": list(params.emotions) if labelled else [],
        "face_size": first("face_size", 0),
        "sample_rate": first("sample_rate", 0),
        "audio_samples": audio_samples,
        "splits": {s: {k: v for k, v in _split_summary(table, s).items()
                       if k in ("clips", "speakers")} for s in SPLITS},
        "split_mode": params.split_mode,
    }
    if tuple(meta) != DATASET_META_KEYS:  # a code error: the keys drifted from the schema
        raise RuntimeError(f"meta.json keys {tuple(meta)} differ from {DATASET_META_KEYS}")
    return meta


def _schema_markdown(with_frames: bool = False) -> str:
    text = (
        "# Dataset shards\n\n"
        "`{train,val,test}/part-NNNNN.parquet`, one row per clip. `meta.json` holds the label "
        "order (`emotions`; `[]` when the data has no emotion labels, and then `emotion` and "
        "`emotion_index` are null), `face_size`, `sample_rate`, `audio_samples`, the speakers and "
        "clip counts of each split, and `split_mode`. Read them with `pipeline.loaders`.\n\n"
        f"{describe(DATASET)}\n"
    )
    if with_frames:
        text += ("\n## Sequence frames\n\n`{train,val,test}/frames-NNNNN.parquet`, one row per "
                 "equally spaced frame of each clip (`faces.sequence_frames`).\n\n"
                 f"{describe(DATASET_FRAMES)}\n")
    return text
