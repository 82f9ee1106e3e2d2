"""What the voice alone gives: the emotion it carries, and who among enrolled people it is.

- :func:`emotion_recognition`: the emotion read from each test clip's voice
  (:mod:`pipeline.models.emotion_classifier`) against its label: accuracy, per-class recall,
  confusion, with chance (the majority class's share, the convention of the attribute
  probes).
- :func:`enrolled_identification` (004: "within our 48 people it could identify the person"):
  each test clip ranks every enrolled speaker of the dataset (train, val and test) by the
  cosine of its query to the speaker's mean enrolment vector; top-k accuracy with chance
  k / speakers. Two queries: the clip's pretrained speaker embedding against the speakers'
  mean embeddings, leaving the query clip out of its own speaker's mean (else the clip would
  find itself); and the face generated from the voice against the speakers' mean real-face
  latents.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from pipeline.evaluation.metrics import (
    RetrievalResult,
    SpeakerScores,
    retrieval_metrics,
    speaker_gallery,
)


@dataclass(frozen=True)
class EmotionRecognition:
    """Emotion read from the voice vs the label, on the clips that have a label."""

    emotions: tuple[str, ...]
    accuracy: float
    chance: float
    """Share of the most common labelled emotion (always guessing it)."""
    recall: dict[str, float]
    """Per labelled class: share of its clips read as it (NaN-free: absent classes left out)."""
    confusion: np.ndarray
    """``(E, E)`` counts, rows = label, columns = emotion read."""
    clips: int

    def to_json(self) -> dict[str, Any]:
        """Return the summary as ``metrics.json`` data."""
        return {"accuracy": self.accuracy, "chance": self.chance, "clips": self.clips,
                **{f"recall.{e}": r for e, r in self.recall.items()}}


def emotion_recognition(
    true: Sequence[object], predicted: Sequence[object], emotions: Sequence[str]
) -> EmotionRecognition:
    """Return accuracy, per-class recall and confusion of emotion names read vs labelled.

    Clips without a label (None / NaN) are left out. Raises ``ValueError`` when no clip has
    one, or a name is not in ``emotions``.
    """
    pairs = [(t, p) for t, p in zip(true, predicted, strict=True) if t is not None and t == t]
    if not pairs:
        raise ValueError("no test clip has an emotion label: emotion recognition is undefined")
    index = {e: i for i, e in enumerate(emotions)}
    unknown = sorted({str(x) for pair in pairs for x in pair if x not in index})
    if unknown:
        raise ValueError(f"emotion(s) {unknown} are not among {list(emotions)}")
    confusion = np.zeros((len(emotions), len(emotions)), dtype=np.int64)
    for t, p in pairs:
        confusion[index[t], index[p]] += 1
    per_class = confusion.sum(axis=1)
    recall = {e: float(confusion[i, i] / per_class[i])
              for i, e in enumerate(emotions) if per_class[i]}
    return EmotionRecognition(tuple(emotions), float(np.trace(confusion) / len(pairs)),
                              float(per_class.max() / len(pairs)), recall, confusion, len(pairs))


def enrolled_identification(
    queries: np.ndarray,
    query_speakers: Sequence[str],
    enrolled: np.ndarray,
    enrolled_speakers: Sequence[str],
    ks: Sequence[int] = (1, 5),
    left_out: Sequence[int] | None = None,
) -> RetrievalResult:
    """Return the rank of each query's speaker among all enrolled speakers (cosine).

    Args:
        queries: ``(N, D)``, one per test clip.
        query_speakers: the speaker of each query (must be enrolled).
        enrolled: ``(M, D)`` enrolment vectors, several per speaker (averaged per speaker).
        enrolled_speakers: the speaker of each enrolment vector.
        ks: the top-k cut-offs.
        left_out: per query, the row of ``enrolled`` left out of its speaker's mean (the
            query's own clip), or None to leave nothing out.
    """
    enrolled = np.asarray(enrolled, dtype=np.float64)
    gallery = speaker_gallery(enrolled, list(enrolled_speakers))
    true_index = gallery.index_of(query_speakers)
    means = np.repeat(gallery.vectors[None], len(queries), axis=0)  # (N, S, D)
    if left_out is not None:
        counts = np.bincount(gallery.index_of(enrolled_speakers), minlength=len(gallery.speakers))
        rows = np.arange(len(queries))
        own = counts[true_index]
        if np.any(own < 2):
            raise ValueError("a query's speaker has no other enrolled clip to be found by")
        means[rows, true_index] = ((means[rows, true_index] * own[:, None]
                                    - enrolled[np.asarray(left_out)]) / (own[:, None] - 1))
    unit_q = _unit(np.asarray(queries, dtype=np.float64))
    similarity = np.einsum("nd,nsd->ns", unit_q, _unit(means))
    return retrieval_metrics(SpeakerScores(similarity, true_index, gallery), ks)


def identification_json(result: RetrievalResult) -> dict[str, float]:
    """Return top-k accuracy and its chance k / speakers as ``metrics.json`` data."""
    out: dict[str, float] = {"speakers": float(result.n_gallery)}
    for k, value in result.recall.items():
        out[f"top{k}"] = value
        out[f"top{k}_chance"] = result.chance_recall[k]
    return out


def _unit(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return np.divide(x, norm, out=np.zeros_like(x), where=norm > 0)


def voice_alone_report(
    recognition: EmotionRecognition | None,
    identification: Mapping[str, RetrievalResult],
    emotion_model: object = None,
) -> str:
    """Return report.md's sections on the emotion read from the voice and on identification."""
    from pipeline.evaluation.report import markdown_table

    parts = ["", "## Emotion read from the voice (test clips)", ""]
    if recognition is None:
        why = ("the dataset has no emotion labels" if emotion_model is not None
               else "no emotion classifier was given")
        parts += [f"Not evaluated: {why}.", ""]
    else:
        recall = ", ".join(f"{e} {r:.3g}" for e, r in recognition.recall.items())
        confusion = pd.DataFrame(recognition.confusion, index=list(recognition.emotions),
                                 columns=list(recognition.emotions))
        confusion.index.name = "label \\ read"
        parts += [f"Accuracy {recognition.accuracy:.3g} on {recognition.clips} clips (chance "
                  f"{recognition.chance:.3g}, the majority class); recall per class: {recall}. "
                  "The `model_voice_emotion` row renders each face with this emotion instead "
                  "of the label.", "", markdown_table(confusion), ""]
    parts += ["## Identification among the enrolled speakers (004)", "",
              "Each test voice ranks every dataset speaker (train, val and test): "
              "`voice_embedding` by the cosine of its speaker embedding to each speaker's mean "
              "embedding (its own clip left out), `generated_face.<row>` by the cosine of the "
              "face latent generated from it to each speaker's mean real-face latent.", ""]
    table = pd.DataFrame({name: identification_json(r) for name, r in identification.items()}).T
    table.index.name = "query"
    parts += [markdown_table(table), ""]
    return "\n".join(parts)
