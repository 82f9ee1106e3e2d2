"""PyTorch datasets over the ``dataset`` stage's shards, ready for both models.

Every sample is a dict::

    "face"       float32 (1, S, S) in [0, 1]      the grayscale face crop
    "audio"      float32 (N,) in [-1, 1)          the fixed-length voice (int16 / 32768)
    "emotion"    int64 ()                         index into meta.json "emotions" (-1: none)
    "speaker_id" str,  "clip_id" str,  "sex" str  ("" when unknown)

Two ways to read a split:

- :class:`ShardDataset` streams it (an ``IterableDataset``): the unit of work is one Parquet
  row group; row groups are shuffled per epoch and dealt round-robin to DataLoader workers
  (and distributed ranks), rows pass through a seeded shuffle buffer. The same seed, epoch
  and worker count give the same order; every row is read exactly once per epoch.
- :func:`load_split` reads it whole into tensors (:class:`SplitTensors`, a map-style
  dataset) for small corpora, such as the embedded demo.

``ShardDataset(..., batch_size=B)`` yields ready batches instead (gathered and converted
straight into the batch tensors, several times cheaper than the DataLoader collating
samples); :func:`make_loader` builds a DataLoader that way. Call
``loader.dataset.set_epoch(epoch)`` before each epoch to reshuffle. ``with_audio=False``
skips the audio column (most of the bytes) for face-only models.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, get_worker_info

from pipeline.shards import fixed_size_blobs, list_shards

log = logging.getLogger(__name__)
T = TypeVar("T")

SPLITS = ("train", "val", "test")
META_JSON = "meta.json"
SHARD_PREFIX = "part"
COLUMNS = ("clip_id", "speaker_id", "sex", "emotion_index", "face", "face_size", "audio")


NO_EMOTION = -1
"""The ``emotion`` label of a clip without one (a dataset without emotion labels)."""


def read_meta(dataset_dir: str | Path) -> dict[str, Any]:
    """Return the dataset's ``meta.json`` (emotions, face_size, sample_rate, splits ...)."""
    with open(Path(dataset_dir) / META_JSON, encoding="utf-8") as f:
        return json.load(f)


def has_emotion_labels(meta: dict[str, Any]) -> bool:
    """Return whether the dataset of ``meta`` (:func:`read_meta`) has emotion labels.

    The dataset stage writes ``emotions: []`` when the data has none.
    """
    return bool(meta["emotions"])


def split_shards(dataset_dir: str | Path, split: str) -> list[Path]:
    """Return the Parquet shards of ``split`` in ``dataset_dir``, sorted by name."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    return list_shards(Path(dataset_dir) / split, SHARD_PREFIX)


@dataclass(frozen=True)
class RawRows:
    """Some rows' columns as stored (uint8 faces, int16 audio), converted on the way out."""

    face: np.ndarray
    """uint8 ``(B, 1, S, S)``."""
    pcm: np.ndarray | None
    """int16 ``(B, N)``, or None when audio was not read."""
    emotion: np.ndarray
    """int64 ``(B,)``."""
    speaker_id: list[str]
    """Speaker of each row."""
    clip_id: list[str]
    """Clip of each row."""
    sex: list[str]
    """Sex of each row (``""`` when unknown)."""

    def __len__(self) -> int:
        return len(self.clip_id)

    def sample(self, i: int) -> dict[str, Any]:
        """Return row ``i`` as a sample dict of float tensors."""
        sample = {"face": torch.from_numpy(_scale_faces(self.face[i].astype(np.float32)))}
        if self.pcm is not None:
            sample["audio"] = torch.from_numpy(_scale_audio(self.pcm[i].astype(np.float32)))
        return sample | {"emotion": torch.tensor(self.emotion[i]),
                         "speaker_id": self.speaker_id[i], "clip_id": self.clip_id[i],
                         "sex": self.sex[i]}


def _scale_faces(face: np.ndarray) -> np.ndarray:
    """Return float32 ``face`` (uint8 values) divided in place by 255, into [0, 1]."""
    # Casting first, then one float pass in place, costs less than casting inside the
    # arithmetic (numpy's buffered mixed-type loop), for the same values.
    return np.divide(face, np.float32(255.0), out=face)


def _scale_audio(audio: np.ndarray) -> np.ndarray:
    """Return float32 ``audio`` (int16 values) scaled in place by 1/32768, into [-1, 1)."""
    # 1/32768 is a power of two: the product is exact, the same as dividing.
    return np.multiply(audio, np.float32(1 / 32768), out=audio)


def collate_rows(rows: list[tuple[RawRows, int]]) -> dict[str, Any]:
    """Return a batch dict built from ``(rows, index)`` pairs in one pass per column.

    Gathers (casting to float32) straight into the batch arrays and scales them in one pass,
    which costs less than converting every sample and stacking them afterwards.
    """
    first = rows[0][0]
    face = np.empty((len(rows), *first.face.shape[1:]), np.float32)
    for k, (group, i) in enumerate(rows):
        face[k] = group.face[i]
    batch = {"face": torch.from_numpy(_scale_faces(face))}
    if first.pcm is not None:
        audio = np.empty((len(rows), first.pcm.shape[1]), np.float32)
        for k, (group, i) in enumerate(rows):
            audio[k] = group.pcm[i]
        batch["audio"] = torch.from_numpy(_scale_audio(audio))
    batch["emotion"] = torch.from_numpy(np.array([g.emotion[i] for g, i in rows], np.int64))
    for key in ("speaker_id", "clip_id", "sex"):
        batch[key] = [getattr(g, key)[i] for g, i in rows]
    return batch


def read_rows(table: pa.Table) -> RawRows:
    """Return :data:`pipeline.schemas.DATASET` rows as stored arrays (blobs are not copied)."""
    n = table.num_rows
    if n == 0:
        raise ValueError("no rows to decode")
    sizes = table.column("face_size").to_numpy()
    size = int(sizes[0])
    if (sizes != size).any():
        raise ValueError(f"face sizes differ within the rows: {sorted(set(sizes.tolist()))}")
    pcm = None
    if "audio" in table.column_names:
        pcm = fixed_size_blobs(table.column("audio"), np.dtype("<i2"))
    return RawRows(
        face=fixed_size_blobs(table.column("face"), np.uint8).reshape(n, 1, size, size),
        pcm=pcm,
        emotion=pc.fill_null(table.column("emotion_index"), NO_EMOTION).to_numpy()
        .astype(np.int64),
        speaker_id=table.column("speaker_id").to_pylist(),
        clip_id=table.column("clip_id").to_pylist(),
        sex=[s or "" for s in table.column("sex").to_pylist()],
    )


def _columns(with_audio: bool) -> list[str]:
    return [c for c in COLUMNS if with_audio or c != "audio"]


class ShardDataset(IterableDataset):
    """Streams one split's samples from its Parquet shards (see the module docstring).

    Args:
        dataset_dir: The ``dataset`` stage's output directory.
        split: ``train``, ``val`` or ``test``.
        shuffle: Shuffle row groups, rows within them, and through a buffer.
        seed: Seed of all shuffling; combined with the epoch (:meth:`set_epoch`).
        buffer_size: Rows held in the shuffle buffer (per worker).
        rank: This process's rank when training is distributed.
        world_size: Number of distributed processes (each reads a disjoint share).
        batch_size: Yield collated batches of this many rows instead of single samples
            (use with ``DataLoader(batch_size=None)``; faster than the DataLoader's
            collation). The last batch of each worker may be smaller.
        drop_last: With ``batch_size``, drop each worker's last batch when it is smaller.
        with_audio: Read and yield ``audio``; False skips most of the bytes (face models).
    """

    def __init__(
        self,
        dataset_dir: str | Path,
        split: str,
        *,
        shuffle: bool = True,
        seed: int = 0,
        buffer_size: int = 2048,
        rank: int = 0,
        world_size: int = 1,
        batch_size: int | None = None,
        drop_last: bool = False,
        with_audio: bool = True,
    ) -> None:
        super().__init__()
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world_size {world_size}")
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.split = split
        self.shuffle = shuffle
        self.seed = seed
        self.buffer_size = max(1, buffer_size)
        self.rank = rank
        self.world_size = world_size
        self.batch_size = batch_size
        self.drop_last = drop_last
        self.columns = _columns(with_audio)
        self.epoch = 0
        self.row_groups = _list_row_groups(split_shards(dataset_dir, split))
        self.num_rows = sum(rows for _, _, rows in self.row_groups)

    def set_epoch(self, epoch: int) -> None:
        """Use ``epoch``'s shuffle order on the next iteration (call before each epoch)."""
        self.epoch = epoch

    def __len__(self) -> int:
        """Return the number of rows in the split (all ranks together)."""
        return self.num_rows

    def __iter__(self) -> Iterator[dict[str, Any]]:
        """Yield this worker's share of the split for the current epoch (samples or batches)."""
        info = get_worker_info()
        worker, n_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        reader = self.rank * n_workers + worker
        n_readers = self.world_size * n_workers
        groups = self._epoch_order()[reader::n_readers]
        rng = np.random.default_rng([self.seed, self.epoch, reader, n_readers])
        refs = self._rows(groups, rng)
        if self.shuffle:
            refs = _buffer_shuffle(refs, self.buffer_size, rng)
        if self.batch_size is None:
            for rows, i in refs:
                yield rows.sample(i)
        else:
            for chunk in _chunks(refs, self.batch_size):
                if len(chunk) == self.batch_size or not self.drop_last:
                    yield collate_rows(chunk)

    def _epoch_order(self) -> list[tuple[str, int, int]]:
        if not self.shuffle:
            return list(self.row_groups)
        order = np.random.default_rng([self.seed, self.epoch]).permutation(len(self.row_groups))
        return [self.row_groups[i] for i in order]

    def _rows(
        self, groups: list[tuple[str, int, int]], rng: np.random.Generator
    ) -> Iterator[tuple[RawRows, int]]:
        for rows in _read_row_groups(groups, self.columns):
            order = rng.permutation(len(rows)) if self.shuffle else range(len(rows))
            for i in order:
                yield rows, int(i)


def _read_row_groups(groups: list[tuple[str, int, int]], columns: list[str]) -> Iterator[RawRows]:
    """Yield the rows of each ``(path, row group index, rows)`` of ``groups``, in order."""
    files: dict[str, pq.ParquetFile] = {}
    try:
        for path, index, _ in groups:
            if path not in files:
                # Mapping the file saves copying it through read(): row groups read ~1.5x faster.
                files[path] = pq.ParquetFile(path, memory_map=True)
            yield read_rows(files[path].read_row_group(index, columns=columns))
    finally:
        for parquet in files.values():
            parquet.close()


def _chunks(items: Iterator[T], size: int) -> Iterator[list[T]]:
    chunk: list[T] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _list_row_groups(paths: list[Path]) -> list[tuple[str, int, int]]:
    """Return ``(path, row group index, rows)`` for every row group of ``paths``."""
    groups = []
    for path in paths:
        metadata = pq.read_metadata(path)
        groups += [(str(path), i, metadata.row_group(i).num_rows)
                   for i in range(metadata.num_row_groups)]
    return groups


def _buffer_shuffle(items: Iterator[T], size: int, rng: np.random.Generator) -> Iterator[T]:
    """Yield ``items`` in an order shuffled through a buffer of ``size`` items."""
    buffer: list[T] = []
    for item in items:
        if len(buffer) < size:
            buffer.append(item)
            continue
        j = int(rng.integers(size))
        yield buffer[j]
        buffer[j] = item
    for j in rng.permutation(len(buffer)):
        yield buffer[int(j)]


@dataclass(frozen=True)
class SplitTensors(Dataset):
    """A whole split in memory, in clip-id order; indexing gives the same dicts as streaming.

    The tensors can also be used directly (``split.face``, ``split.audio``,
    ``split.emotion``), e.g. to move the whole split to the GPU once.
    """

    face: torch.Tensor
    """float32 ``(N, 1, S, S)`` in [0, 1]."""
    audio: torch.Tensor
    """float32 ``(N, L)`` in [-1, 1)."""
    emotion: torch.Tensor
    """int64 ``(N,)``."""
    speaker_id: list[str]
    """Speaker of each row."""
    clip_id: list[str]
    """Clip of each row."""
    sex: list[str]
    """Sex of each row (``""`` when unknown)."""

    def __len__(self) -> int:
        return len(self.clip_id)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {
            "face": self.face[i], "audio": self.audio[i], "emotion": self.emotion[i],
            "speaker_id": self.speaker_id[i], "clip_id": self.clip_id[i], "sex": self.sex[i],
        }


def load_split(dataset_dir: str | Path, split: str, *, with_audio: bool = True) -> SplitTensors:
    """Return a whole split read into memory tensors, rows sorted by clip id.

    Memory: ``4 * (S*S + N)`` bytes per row (64 x 64 faces and 3.67 s at 8 kHz: ~130 kB);
    ``with_audio=False`` leaves ``audio`` an empty ``(N, 0)`` tensor and skips reading it.
    """
    paths = split_shards(dataset_dir, split)
    if not paths:
        raise FileNotFoundError(f"no shards for split {split!r} in {dataset_dir}")
    groups = _read_row_groups(_list_row_groups(paths), _columns(with_audio))
    refs = [(rows, i) for rows in groups for i in range(len(rows))]
    if not refs:
        raise ValueError(f"split {split!r} in {dataset_dir} has no rows")
    # Gathering the rows in clip order straight into the float tensors copies the audio once;
    # sorting the Arrow table first copied it twice more.
    refs.sort(key=lambda ref: ref[0].clip_id[ref[1]])
    batch = collate_rows(refs)
    audio = batch.get("audio", torch.zeros((len(refs), 0)))
    return SplitTensors(batch["face"], audio, batch["emotion"], batch["speaker_id"],
                        batch["clip_id"], batch["sex"])


FRAMES_PREFIX = "frames"
"""Shards of equally spaced frames per clip (``faces.sequence_frames`` > 1) in a split."""


def frame_shards(dataset_dir: str | Path, split: str) -> list[Path]:
    """Return ``split``'s ``frames-*.parquet`` shards (none without sequence crops)."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    return list_shards(Path(dataset_dir) / split, FRAMES_PREFIX)


def load_frames(dataset_dir: str | Path, split: str) -> SplitTensors:
    """Return ``split``'s equally spaced frames in memory (by clip, then frame; no audio).

    Each row is one frame of a clip with the clip's speaker and emotion label; ``sex`` is
    empty (the frames table does not carry it). Raises ``FileNotFoundError`` when the
    dataset has no frames (``faces.sequence_frames`` 1).
    """
    paths = frame_shards(dataset_dir, split)
    if not paths:
        raise FileNotFoundError(f"no frames shards for split {split!r} in {dataset_dir} "
                                "(faces.sequence_frames is 1)")
    columns = ["clip_id", "frame_index", "speaker_id", "emotion_index", "face", "face_size"]
    table = pa.concat_tables(pq.read_table(p, columns=columns) for p in paths).sort_by(
        [("clip_id", "ascending"), ("frame_index", "ascending")])
    size = int(table.column("face_size")[0].as_py())
    faces = fixed_size_blobs(table.column("face"), np.uint8).reshape(-1, 1, size, size)
    emotion = pc.fill_null(table.column("emotion_index"), NO_EMOTION).to_numpy().astype(np.int64)
    n = table.num_rows
    return SplitTensors(torch.from_numpy(_scale_faces(faces.astype(np.float32))), torch.zeros(n, 0),
                        torch.from_numpy(emotion), table.column("speaker_id").to_pylist(),
                        table.column("clip_id").to_pylist(), [""] * n)


def make_loader(
    dataset_dir: str | Path,
    split: str,
    batch_size: int,
    *,
    shuffle: bool = True,
    seed: int = 0,
    num_workers: int = 0,
    buffer_size: int = 2048,
    drop_last: bool = False,
    pin_memory: bool = False,
    with_audio: bool = True,
) -> DataLoader:
    """Return a DataLoader of batch dicts streamed from ``split``'s shards.

    Batches are collated inside :class:`ShardDataset` (``batch_size`` rows each; the last
    batch of each worker may be smaller unless ``drop_last``). Reshuffle each epoch with
    ``loader.dataset.set_epoch(epoch)`` (workers are not persistent, so they see it).
    Batches hold ``face (B, 1, S, S)``, ``audio (B, N)``, ``emotion (B,)`` and lists of the
    string fields.
    """
    dataset = ShardDataset(dataset_dir, split, shuffle=shuffle, seed=seed,
                           buffer_size=buffer_size, batch_size=batch_size,
                           drop_last=drop_last, with_audio=with_audio)
    return DataLoader(dataset, batch_size=None, num_workers=num_workers,
                      collate_fn=_as_is, pin_memory=pin_memory, persistent_workers=False)


def _as_is(batch: dict[str, Any]) -> dict[str, Any]:
    """Return ``batch`` unchanged (the default would walk every string of it)."""
    return batch
