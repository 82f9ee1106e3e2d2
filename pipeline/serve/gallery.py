"""The enrolled people in an embedded SQLite database beside the models (004: "the collected").

A person has a unique name (compared without case), one or more face crops (uint8,
grayscale, as the faces stage makes them) and optionally voice clips (int16 PCM, as the
audio stage makes them). Crops and clips are stored, not model outputs, so one gallery
serves every model and survives a retraining; :mod:`pipeline.serve.ranking` turns them into
vectors per model.

The gallery starts with the dataset's speakers (:meth:`Gallery.sync_dataset`, a few clips
each); when the dataset changes they are replaced and enrolled people are kept. Every
operation opens its own connection, so threads may share one :class:`Gallery`.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import sqlite3
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.loaders import META_JSON, SPLITS, split_shards

log = logging.getLogger(__name__)

ENROLLED = "enrolled"
"""Origin of a person enrolled through the app (dataset speakers: ``dataset:<split>``)."""
MAX_NAME_CHARS = 64

_SCHEMA = """
CREATE TABLE IF NOT EXISTS person (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE COLLATE NOCASE,
    origin TEXT NOT NULL,
    created TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP
);
CREATE TABLE IF NOT EXISTS face (
    id INTEGER PRIMARY KEY,
    person_id INTEGER NOT NULL REFERENCES person(id) ON DELETE CASCADE,
    size INTEGER NOT NULL,
    emotion TEXT,
    pixels BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS voice (
    id INTEGER PRIMARY KEY,
    person_id INTEGER NOT NULL REFERENCES person(id) ON DELETE CASCADE,
    sample_rate INTEGER NOT NULL,
    pcm BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS face_person ON face(person_id);
CREATE INDEX IF NOT EXISTS voice_person ON voice(person_id);
CREATE TABLE IF NOT EXISTS setting (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class DuplicateNameError(ValueError):
    """A person of that name (compared without case) is enrolled already."""


class UnknownPersonError(KeyError):
    """No person has that id."""


@dataclass(frozen=True)
class Face:
    """One face crop of a person."""

    pixels: np.ndarray
    """``(S, S)`` uint8 grayscale crop."""
    emotion: str | None = None
    """The emotion label of the clip it comes from, when known."""


@dataclass(frozen=True)
class Voice:
    """One prepared voice clip of a person."""

    pcm: np.ndarray
    """``(L,)`` int16 mono PCM."""
    sample_rate: int


@dataclass(frozen=True)
class Person:
    """A person of the gallery, without their samples."""

    id: int
    name: str
    origin: str
    """``enrolled`` or ``dataset:<split>``."""
    n_faces: int
    n_voices: int


@dataclass(frozen=True)
class Samples:
    """A person with their face crops and voice clips."""

    person: Person
    faces: tuple[Face, ...]
    voices: tuple[Voice, ...]


def clean_name(name: str) -> str:
    """Return ``name`` stripped and NFC-normalised; ``ValueError`` when empty, too long or odd."""
    cleaned = unicodedata.normalize("NFC", name).strip()
    if not cleaned:
        raise ValueError("the name is empty")
    if len(cleaned) > MAX_NAME_CHARS:
        raise ValueError(f"the name has {len(cleaned)} characters, at most {MAX_NAME_CHARS}")
    if any(unicodedata.category(c).startswith("C") for c in cleaned):
        raise ValueError("the name holds control characters")
    return cleaned


class Gallery:
    """The people of one SQLite file (created with its tables when absent)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.executescript(_SCHEMA)
        with contextlib.closing(sqlite3.connect(self.path)) as db:
            db.execute("PRAGMA journal_mode = WAL")  # readers never wait for a writer

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """Yield a connection inside one transaction (committed on success), then close it."""
        db = sqlite3.connect(self.path, timeout=30.0)
        try:
            db.execute("PRAGMA foreign_keys = ON")
            with db:
                yield db
        finally:
            db.close()

    def people(self) -> list[Person]:
        """Return everyone, enrolled people first, then by name."""
        with self._connect() as db:
            rows = db.execute(_PEOPLE + " GROUP BY p.id ORDER BY p.origin != ?, p.name",
                              (ENROLLED,)).fetchall()
        return [Person(*row) for row in rows]

    def person(self, person_id: int) -> Person:
        """Return the person of ``person_id``; :class:`UnknownPersonError` if none."""
        with self._connect() as db:
            row = db.execute(_PEOPLE + " WHERE p.id = ? GROUP BY p.id", (person_id,)).fetchone()
        if row is None:
            raise UnknownPersonError(f"no person with id {person_id}")
        return Person(*row)

    def add(self, name: str, faces: Sequence[Face], voices: Sequence[Voice] = (),
            origin: str = ENROLLED) -> Person:
        """Return the new person after storing them with their samples in one transaction.

        Raises :class:`DuplicateNameError` when the name is taken, ``ValueError`` for a bad
        name or no face.
        """
        name = clean_name(name)
        if not faces:
            raise ValueError(f"{name}: a person needs at least one face")
        with self._connect() as db:
            person_id = self._insert(db, name, faces, voices, origin)
        return self.person(person_id)

    def remove(self, person_id: int) -> Person:
        """Return the removed person; :class:`UnknownPersonError` if none has that id."""
        person = self.person(person_id)
        with self._connect() as db:
            db.execute("DELETE FROM person WHERE id = ?", (person_id,))
        return person

    def samples(self, person_id: int) -> Samples:
        """Return the person of ``person_id`` with their faces and voices."""
        person = self.person(person_id)
        with self._connect() as db:
            faces = db.execute("SELECT size, emotion, pixels FROM face WHERE person_id = ? "
                               "ORDER BY id", (person_id,)).fetchall()
            voices = db.execute("SELECT sample_rate, pcm FROM voice WHERE person_id = ? "
                                "ORDER BY id", (person_id,)).fetchall()
        return Samples(
            person,
            tuple(Face(np.frombuffer(pixels, np.uint8).reshape(size, size), emotion)
                  for size, emotion, pixels in faces),
            tuple(Voice(np.frombuffer(pcm, "<i2"), rate) for rate, pcm in voices),
        )

    def face(self, person_id: int) -> Face:
        """Return the first face of the person of ``person_id`` (their picture)."""
        with self._connect() as db:
            row = db.execute("SELECT size, emotion, pixels FROM face WHERE person_id = ? "
                             "ORDER BY id LIMIT 1", (person_id,)).fetchone()
        if row is None:
            raise UnknownPersonError(f"no person with id {person_id}")
        size, emotion, pixels = row
        return Face(np.frombuffer(pixels, np.uint8).reshape(size, size), emotion)

    def all_samples(self) -> Iterator[Samples]:
        """Yield every person's :class:`Samples` in :meth:`people` order."""
        for person in self.people():
            yield self.samples(person.id)

    def sync_dataset(self, dataset_dir: str | Path, clips_per_speaker: int) -> int:
        """Replace the dataset's speakers when the dataset changed; return how many were added.

        Each speaker brings up to ``clips_per_speaker`` clips (face and voice) spread over
        their clips in clip-id order. Enrolled people are kept; one whose name is a speaker
        id of the new dataset is a :class:`DuplicateNameError`, and nothing changes.
        """
        fingerprint = dataset_fingerprint(dataset_dir)
        with self._connect() as db:
            known = db.execute("SELECT value FROM setting WHERE key = 'dataset'").fetchone()
            if known is not None and known[0] == fingerprint:
                return 0
            db.execute("DELETE FROM person WHERE origin != ?", (ENROLLED,))
            speakers = read_dataset_speakers(dataset_dir, clips_per_speaker)
            for (speaker, split), samples in sorted(speakers.items()):
                self._insert(db, speaker, samples[0], samples[1], f"dataset:{split}")
            db.execute("INSERT OR REPLACE INTO setting VALUES ('dataset', ?)", (fingerprint,))
        log.info("gallery %s: %d dataset speakers from %s", self.path, len(speakers), dataset_dir)
        return len(speakers)

    @staticmethod
    def _insert(db: sqlite3.Connection, name: str, faces: Sequence[Face],
                voices: Sequence[Voice], origin: str) -> int:
        try:
            person_id = db.execute("INSERT INTO person (name, origin) VALUES (?, ?)",
                                   (name, origin)).lastrowid
        except sqlite3.IntegrityError:
            raise DuplicateNameError(f"{name!r} is enrolled already") from None
        db.executemany("INSERT INTO face (person_id, size, emotion, pixels) VALUES (?, ?, ?, ?)",
                       [(person_id, f.pixels.shape[0], f.emotion,
                         np.ascontiguousarray(f.pixels, np.uint8).tobytes()) for f in faces])
        db.executemany("INSERT INTO voice (person_id, sample_rate, pcm) VALUES (?, ?, ?)",
                       [(person_id, v.sample_rate, v.pcm.astype("<i2").tobytes())
                        for v in voices])
        return int(person_id)


_PEOPLE = """SELECT p.id, p.name, p.origin,
    (SELECT COUNT(*) FROM face f WHERE f.person_id = p.id),
    (SELECT COUNT(*) FROM voice v WHERE v.person_id = p.id)
    FROM person p"""


def dataset_fingerprint(dataset_dir: str | Path) -> str:
    """Return the SHA-256 over the dataset's ``meta.json`` and shards (names and bytes)."""
    digest = hashlib.sha256()
    paths = [Path(dataset_dir) / META_JSON] + [p for s in SPLITS
                                                for p in split_shards(dataset_dir, s)]
    for path in paths:
        digest.update(str(path.relative_to(dataset_dir)).encode())
        with open(path, "rb") as data:
            digest.update(hashlib.file_digest(data, "sha256").digest())
    return digest.hexdigest()


def read_dataset_speakers(dataset_dir: str | Path, clips_per_speaker: int
                          ) -> dict[tuple[str, str], tuple[list[Face], list[Voice]]]:
    """Return ``{(speaker, splits): (faces, voices)}`` of up to ``clips_per_speaker`` clips each.

    ``splits`` names the splits the speaker's clips are in (``test``; ``train,val`` ...).
    """
    if clips_per_speaker < 1:
        raise ValueError(f"clips_per_speaker must be >= 1, got {clips_per_speaker}")
    paths = [p for split in SPLITS for p in split_shards(dataset_dir, split)]
    if not paths:
        raise FileNotFoundError(f"{dataset_dir}: no dataset shards to start the gallery with")
    table = pa.concat_tables(pq.read_table(p, columns=_DATASET_COLUMNS) for p in paths)
    table = table.sort_by([("speaker_id", "ascending"), ("clip_id", "ascending")])
    speaker_ids = np.asarray(table.column("speaker_id").to_pylist(), dtype=object)
    splits = np.asarray(table.column("split").to_pylist(), dtype=object)
    starts = np.flatnonzero(np.r_[True, speaker_ids[1:] != speaker_ids[:-1]])
    speakers = {}
    for start, end in zip(starts, np.r_[starts[1:], len(table)], strict=True):
        picks = np.unique(np.linspace(start, end - 1, min(clips_per_speaker, end - start))
                          .round().astype(int))
        rows = table.take(picks).to_pylist()
        own_splits = ",".join(s for s in SPLITS if s in set(splits[start:end]))
        speakers[(speaker_ids[start], own_splits)] = (
            [Face(np.frombuffer(r["face"], np.uint8).reshape(r["face_size"], r["face_size"]),
                  r["emotion"]) for r in rows],
            [Voice(np.frombuffer(r["audio"], "<i2"), r["sample_rate"]) for r in rows],
        )
    return speakers


_DATASET_COLUMNS = ["clip_id", "speaker_id", "split", "emotion", "face", "face_size", "audio",
                    "sample_rate"]
