"""Who is nearest: per model, each person's face and voice vectors and the closest to a query.

004's "the closest among these is ...": a person's face vector is the mean VAE latent of
their face crops (the evaluate stage's speaker template,
:func:`~pipeline.evaluation.metrics.speaker_gallery`), compared by cosine with the latent of
the generated face; their voice vector is the mean voice-encoder output of their clips,
compared with the query voice's. The vectors are computed once per person and model, when
the app starts or the person is enrolled.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from pipeline.evaluation.metrics import similarity_matrix
from pipeline.serve.engine import ServedModel
from pipeline.serve.gallery import Person, Samples

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Match:
    """A person and their cosine similarity to the query."""

    person: Person
    similarity: float


@dataclass(frozen=True)
class _Vectors:
    person: Person
    face: np.ndarray
    voice: np.ndarray | None


class PeopleIndex:
    """The people's vectors under one model; thread-safe."""

    def __init__(self, model: ServedModel, voice_samples: int, sample_rate: int) -> None:
        self.model = model
        self.voice_samples = voice_samples
        """Length of the clips the voice encoder reads; other clips are left out."""
        self.sample_rate = sample_rate
        """Rate of the clips the voice encoder reads; clips at another rate are left out."""
        self._vectors: dict[int, _Vectors] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._vectors)

    def add(self, people: Iterable[Samples]) -> None:
        """Compute and keep the vectors of ``people``."""
        for samples in people:
            faces = np.stack([f.pixels for f in samples.faces])
            latents = self.model.face_latents(faces, [f.emotion for f in samples.faces])
            clips = [v.pcm for v in samples.voices if len(v.pcm) == self.voice_samples
                     and v.sample_rate == self.sample_rate]
            if len(clips) < len(samples.voices):
                log.warning("%s: %d voice clips not of %d samples at %d Hz left out",
                            samples.person.name, len(samples.voices) - len(clips),
                            self.voice_samples, self.sample_rate)
            voice = (self.model.voice_vectors(np.stack(clips), self.sample_rate).mean(axis=0)
                     if clips else None)
            with self._lock:
                self._vectors[samples.person.id] = _Vectors(samples.person,
                                                            latents.mean(axis=0), voice)

    def remove(self, person_id: int) -> None:
        """Forget a person (no error when unknown)."""
        with self._lock:
            self._vectors.pop(person_id, None)

    def nearest_faces(self, latent: np.ndarray, k: int) -> list[Match]:
        """Return the ``k`` people whose real faces are nearest to a face ``latent``."""
        with self._lock:
            entries = list(self._vectors.values())
        return _nearest([(e.person, e.face) for e in entries], latent, k)

    def nearest_voices(self, voice: np.ndarray, k: int) -> list[Match]:
        """Return the ``k`` people with a voice nearest to the query ``voice`` vector."""
        with self._lock:
            entries = list(self._vectors.values())
        return _nearest([(e.person, e.voice) for e in entries if e.voice is not None], voice, k)


def _nearest(entries: list[tuple[Person, np.ndarray]], query: np.ndarray, k: int) -> list[Match]:
    """Return the ``k`` most similar entries, most similar first (ties: lower person id)."""
    if not entries:
        return []
    similarity = similarity_matrix(query[None, :], np.stack([v for _, v in entries]))[0]
    order = sorted(range(len(entries)), key=lambda i: (-similarity[i], entries[i][0].id))
    return [Match(entries[i][0], float(similarity[i])) for i in order[:k]]

