"""Image, latent, identity-retrieval and 1:2 matching metrics: arrays in, numbers out.

Everything here is model-independent: the ``evaluate`` stage feeds it test-split arrays
(true latents, latents predicted from voice, real and generated faces, face descriptors)
and gets per-clip values plus their summaries back.

Identity retrieval follows Wen et al. 2019 / SF2F: each generated face (the *query*) is
compared with a *gallery* holding one representation per test speaker, built by
:func:`speaker_gallery` as the mean of that speaker's real-face embeddings over all their
test clips (a speaker-level template, as in face verification; it does not favour the
speaker's clip that happens to share the query's emotion). Similarity is ``cosine`` or
``neg_l2`` (negative Euclidean distance), so "larger is more similar" for both.

Ties are handled so that a prediction that carries no information lands exactly at chance,
never at R@1 = 1 through the order of the gallery: with ``ties="expected"`` (default) the
rank is the expectation under a uniformly random order of the tied speakers, with
``ties="pessimistic"`` every tie counts against the true speaker. Two similarities tie when
they are equal within ``rtol=1e-9`` (floating-point noise of the matrix product must not
decide a tie).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from skimage.metrics import mean_squared_error, structural_similarity

from pipeline.images import psnr

Similarity = Literal["cosine", "neg_l2"]
Ties = Literal["expected", "pessimistic"]

_TIE_RTOL = 1e-9
_TIE_ATOL = 1e-12


@dataclass(frozen=True)
class ImageMetrics:
    """Per-image MSE, PSNR (dB) and SSIM between real and generated faces, each ``(N,)``."""

    mse: np.ndarray
    psnr: np.ndarray
    ssim: np.ndarray


def image_metrics(real: np.ndarray, generated: np.ndarray) -> ImageMetrics:
    """Return per-image MSE, PSNR and SSIM of ``generated`` against ``real``.

    Args:
        real: ``(N, S, S)`` floats in [0, 1].
        generated: ``(N, S, S)`` floats in [0, 1], same shape.

    PSNR (:func:`pipeline.images.psnr`, shared with train_vae) is ``inf`` for identical
    images. SSIM is scikit-image's ``structural_similarity`` with ``data_range=1`` and its
    default 7x7 window.
    """
    real, generated = _check_pair(real, generated, ndim=3)
    n = len(real)
    mse, psnr_db, ssim = np.empty(n), np.empty(n), np.empty(n)
    for i in range(n):
        mse[i] = mean_squared_error(real[i], generated[i])
        psnr_db[i] = psnr(mse[i])
        ssim[i] = structural_similarity(real[i], generated[i], data_range=1.0)
    return ImageMetrics(mse=mse, psnr=psnr_db, ssim=ssim)


@dataclass(frozen=True)
class LatentMetrics:
    """Per-clip MSE (mean over dimensions) and cosine of predicted vs true latents, ``(N,)``."""

    mse: np.ndarray
    cosine: np.ndarray


def latent_metrics(true: np.ndarray, predicted: np.ndarray) -> LatentMetrics:
    """Return per-clip MSE and cosine similarity between ``predicted`` and ``true`` ``(N, D)``.

    The cosine with a zero vector is 0 (no direction, no agreement).
    """
    true, predicted = _check_pair(true, predicted, ndim=2)
    mse = np.mean((true - predicted) ** 2, axis=1)
    cosine = np.sum(_unit(true) * _unit(predicted), axis=1)
    return LatentMetrics(mse=mse, cosine=cosine)


@dataclass(frozen=True)
class Gallery:
    """One representation per speaker: ``speakers[j]`` owns row ``vectors[j]``."""

    speakers: tuple[str, ...]
    vectors: np.ndarray

    def index_of(self, speaker_ids: Sequence[str]) -> np.ndarray:
        """Return the gallery row of each speaker id; ``KeyError`` names an unknown one."""
        position = {s: j for j, s in enumerate(self.speakers)}
        try:
            return np.array([position[s] for s in speaker_ids], dtype=np.int64)
        except KeyError as error:
            raise KeyError(f"speaker {error.args[0]!r} is not in the gallery") from None


def speaker_gallery(embeddings: np.ndarray, speaker_ids: Sequence[str]) -> Gallery:
    """Return the gallery: per speaker (sorted ids), the mean of their clips' embeddings.

    Args:
        embeddings: ``(N, D)`` real-face embeddings (VAE latents, dlib descriptors ...).
        speaker_ids: ``N`` speaker ids, one per row.
    """
    embeddings = np.asarray(embeddings, dtype=np.float64)
    speaker_ids = np.asarray(speaker_ids, dtype=object)
    if embeddings.ndim != 2 or len(embeddings) != len(speaker_ids):
        raise ValueError(
            f"embeddings {embeddings.shape} and {len(speaker_ids)} speaker ids do not match"
        )
    speakers = tuple(sorted(set(speaker_ids.tolist())))
    vectors = np.stack([embeddings[speaker_ids == s].mean(axis=0) for s in speakers])
    return Gallery(speakers=speakers, vectors=vectors)


def similarity_matrix(
    queries: np.ndarray, gallery: np.ndarray, similarity: Similarity = "cosine"
) -> np.ndarray:
    """Return the ``(N, M)`` similarities of ``queries (N, D)`` to ``gallery (M, D)``.

    ``cosine``: zero vectors have similarity 0 to everything. ``neg_l2``: ``-||q - g||``.
    """
    queries = np.asarray(queries, dtype=np.float64)
    gallery = np.asarray(gallery, dtype=np.float64)
    if queries.ndim != 2 or gallery.ndim != 2 or queries.shape[1] != gallery.shape[1]:
        raise ValueError(f"queries {queries.shape} and gallery {gallery.shape} do not match")
    if similarity == "cosine":
        return _unit(queries) @ _unit(gallery).T
    if similarity == "neg_l2":
        squared = (
            np.sum(queries**2, axis=1)[:, None]
            + np.sum(gallery**2, axis=1)[None, :]
            - 2.0 * queries @ gallery.T
        )
        return -np.sqrt(np.maximum(squared, 0.0))
    raise ValueError(f"similarity must be 'cosine' or 'neg_l2', got {similarity!r}")


@dataclass(frozen=True)
class SpeakerScores:
    """Similarities of each query to every gallery speaker, and the true speaker's column."""

    similarity: np.ndarray
    """``(N, M)``: query i vs gallery speaker j."""
    true_index: np.ndarray
    """``(N,)``: column of query i's own speaker."""
    gallery: Gallery


def score_speakers(
    queries: np.ndarray,
    gallery: Gallery,
    query_speakers: Sequence[str],
    similarity: Similarity = "cosine",
) -> SpeakerScores:
    """Return the similarity of every query to every gallery speaker, with the true column."""
    sim = similarity_matrix(queries, gallery.vectors, similarity)
    true_index = gallery.index_of(query_speakers)
    if len(true_index) != len(sim):
        raise ValueError(f"{len(sim)} queries but {len(true_index)} query speakers")
    return SpeakerScores(similarity=sim, true_index=true_index, gallery=gallery)


def _greater_and_tied(scores: SpeakerScores) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return, per query, the true similarity, #speakers above it and #others tied with it."""
    sim = scores.similarity
    rows = np.arange(len(sim))
    true_sim = sim[rows, scores.true_index]
    tied = np.isclose(sim, true_sim[:, None], rtol=_TIE_RTOL, atol=_TIE_ATOL)
    greater = (sim > true_sim[:, None]) & ~tied
    return true_sim, greater.sum(axis=1), tied.sum(axis=1) - 1


@dataclass(frozen=True)
class RetrievalResult:
    """Identity retrieval among ``n_gallery`` speakers: per-clip ranks and summaries."""

    rank: np.ndarray
    """``(N,)`` rank of the true speaker (1 = best; may be fractional with expected ties)."""
    similarity_to_true: np.ndarray
    """``(N,)`` similarity of each query to its own speaker's gallery entry."""
    recall: dict[int, float]
    """R@k: share of queries whose true speaker is in the top k."""
    mean_rank: float
    n_gallery: int
    chance_recall: dict[int, float]
    """k / N_gallery: R@k of a predictor that carries no identity."""
    chance_mean_rank: float
    """(N_gallery + 1) / 2."""


def retrieval_metrics(
    scores: SpeakerScores, ks: Sequence[int] = (1, 5), ties: Ties = "expected"
) -> RetrievalResult:
    """Return per-clip ranks of the true speaker, R@k, mean rank and their chance levels."""
    if ties not in ("expected", "pessimistic"):
        raise ValueError(f"ties must be 'expected' or 'pessimistic', got {ties!r}")
    true_sim, greater, tied = _greater_and_tied(scores)
    n_gallery = scores.similarity.shape[1]
    if ties == "expected":
        # The true speaker is equally likely at each of the positions greater+1 .. greater+tied+1.
        rank = greater + 1 + tied / 2.0
        recall = {k: float(np.mean(np.clip((k - greater) / (tied + 1), 0.0, 1.0))) for k in ks}
    else:
        rank = (greater + tied + 1).astype(np.float64)
        recall = {k: float(np.mean(rank <= k)) for k in ks}
    return RetrievalResult(
        rank=rank,
        similarity_to_true=true_sim,
        recall=recall,
        mean_rank=float(np.mean(rank)),
        n_gallery=n_gallery,
        chance_recall={k: min(k, n_gallery) / n_gallery for k in ks},
        chance_mean_rank=(n_gallery + 1) / 2.0,
    )


@dataclass(frozen=True)
class MatchingResult:
    """1:2 matching (Wen et al. 2019): is the query closer to its speaker than to an impostor."""

    outcome: np.ndarray
    """``(N,)`` 1 correct, 0 wrong, 0.5 tie, NaN where no eligible impostor exists."""
    impostor: np.ndarray
    """``(N,)`` gallery column of the drawn impostor, -1 where none."""
    accuracy: float
    """Mean outcome over queries with an impostor (the seeded draw)."""
    expected_accuracy: float
    """Mean over queries of the outcome averaged over *every* eligible impostor (no draw)."""
    n_trials: int
    chance: float = 0.5


def matching_1of2(
    scores: SpeakerScores,
    seed: int,
    speaker_sex: Sequence[str | None] | None = None,
) -> MatchingResult:
    """Return 1:2 matching accuracy with one seeded impostor per query.

    Args:
        scores: similarities from :func:`score_speakers`.
        seed: seed of the impostor draws.
        speaker_sex: sex of each gallery speaker; when given, impostors are drawn among the
            *other speakers of the true speaker's sex* (the harder, same-sex protocol);
            queries whose speaker has no same-sex peer (or unknown sex) get no trial.
    """
    sim, true_index = scores.similarity, scores.true_index
    n, m = sim.shape
    eligible = ~np.eye(m, dtype=bool)[true_index]
    if speaker_sex is not None:
        sex = np.asarray(speaker_sex, dtype=object)
        if len(sex) != m:
            raise ValueError(f"{len(sex)} sexes for a gallery of {m} speakers")
        known = np.array([s is not None and s == s for s in sex])  # s == s: not NaN
        eligible &= (sex[None, :] == sex[true_index][:, None]) & known[None, :]
    true_sim = sim[np.arange(n), true_index][:, None]
    tied = np.isclose(sim, true_sim, rtol=_TIE_RTOL, atol=_TIE_ATOL)
    win = np.where(tied, 0.5, (true_sim > sim).astype(np.float64))
    rng = np.random.default_rng(seed)
    impostor = np.full(n, -1, dtype=np.int64)
    outcome = np.full(n, np.nan)
    expected = np.full(n, np.nan)
    for i in range(n):
        candidates = np.flatnonzero(eligible[i])
        if len(candidates):
            impostor[i] = rng.choice(candidates)
            outcome[i] = win[i, impostor[i]]
            expected[i] = win[i, candidates].mean()
    trials = ~np.isnan(outcome)
    return MatchingResult(
        outcome=outcome,
        impostor=impostor,
        accuracy=float(np.mean(outcome[trials])) if trials.any() else float("nan"),
        expected_accuracy=float(np.mean(expected[trials])) if trials.any() else float("nan"),
        n_trials=int(trials.sum()),
    )


def _unit(x: np.ndarray) -> np.ndarray:
    """Return rows of ``x`` scaled to unit length; zero rows stay zero."""
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return np.divide(x, norm, out=np.zeros_like(x, dtype=np.float64), where=norm > 0)


def _check_pair(a: np.ndarray, b: np.ndarray, ndim: int) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != ndim:
        raise ValueError(f"expected two {ndim}-D arrays of one shape, got {a.shape}, {b.shape}")
    return a, b
