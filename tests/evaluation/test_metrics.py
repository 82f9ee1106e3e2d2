import math

import numpy as np
import pytest

from pipeline.evaluation.metrics import (
    image_metrics,
    latent_metrics,
    matching_1of2,
    retrieval_metrics,
    score_speakers,
    similarity_matrix,
    speaker_gallery,
)


def _scores(queries, real, speakers, similarity="cosine"):
    gallery = speaker_gallery(real, speakers)
    return score_speakers(queries, gallery, speakers, similarity)


def _balanced(rng, n_speakers=8, clips=3, dim=6):
    identity = rng.normal(size=(n_speakers, dim))
    speakers = [f"s{i}" for i in range(n_speakers) for _ in range(clips)]
    real = np.repeat(identity, clips, axis=0) + 0.05 * rng.normal(size=(n_speakers * clips, dim))
    return real, speakers


def test_identical_images_have_zero_mse_infinite_psnr_and_unit_ssim(deterministic_rng):
    faces = deterministic_rng.random((3, 16, 16))
    result = image_metrics(faces, faces.copy())
    assert np.all(result.mse == 0)
    assert np.all(np.isinf(result.psnr))
    np.testing.assert_allclose(result.ssim, 1.0)


def test_image_metrics_of_a_constant_offset_match_hand_values():
    real = np.zeros((2, 16, 16))
    generated = np.full((2, 16, 16), 0.5)
    result = image_metrics(real, generated)
    np.testing.assert_allclose(result.mse, 0.25)
    np.testing.assert_allclose(result.psnr, 10 * math.log10(1 / 0.25))
    assert np.all(result.ssim < 0.01)  # structure-free images that differ in mean


def test_psnr_is_scikit_images_to_the_bit_and_the_one_train_vae_reports(deterministic_rng):
    from skimage.metrics import peak_signal_noise_ratio

    from pipeline.images import psnr
    from pipeline.training import vae

    real = deterministic_rng.random((50, 16, 16))  # float64, as image_metrics compares
    generated = np.clip(real + 0.1 * deterministic_rng.normal(size=real.shape), 0, 1)
    expected = [peak_signal_noise_ratio(r, g, data_range=1.0)
                for r, g in zip(real, generated, strict=True)]
    assert image_metrics(real, generated).psnr.tolist() == expected
    assert vae.psnr is psnr and psnr(0.0) == math.inf


def test_image_metrics_reject_mismatched_shapes():
    with pytest.raises(ValueError, match="shape"):
        image_metrics(np.zeros((2, 8, 8)), np.zeros((2, 8, 9)))


def test_latent_metrics_hand_values():
    true = np.array([[1.0, 0.0], [1.0, 2.0], [3.0, 4.0]])
    predicted = np.array([[0.0, 1.0], [2.0, 4.0], [0.0, 0.0]])
    result = latent_metrics(true, predicted)
    np.testing.assert_allclose(result.mse, [1.0, (1 + 4) / 2, (9 + 16) / 2])
    np.testing.assert_allclose(result.cosine, [0.0, 1.0, 0.0])  # zero vector: cosine 0


def test_gallery_is_the_mean_of_each_speakers_embeddings_in_sorted_order():
    embeddings = np.array([[1.0, 0.0], [3.0, 2.0], [0.0, 5.0]])
    gallery = speaker_gallery(embeddings, ["b", "b", "a"])
    assert gallery.speakers == ("a", "b")
    np.testing.assert_allclose(gallery.vectors, [[0.0, 5.0], [2.0, 1.0]])
    with pytest.raises(KeyError, match="zz"):
        gallery.index_of(["a", "zz"])


def test_neg_l2_similarity_is_minus_the_distance():
    sim = similarity_matrix(np.array([[0.0, 0.0]]), np.array([[3.0, 4.0], [0.0, 1.0]]), "neg_l2")
    np.testing.assert_allclose(sim, [[-5.0, -1.0]])


@pytest.mark.parametrize("similarity", ["cosine", "neg_l2"])
def test_perfect_predictor_ranks_every_true_speaker_first(deterministic_rng, similarity):
    real, speakers = _balanced(deterministic_rng)
    result = retrieval_metrics(_scores(real, real, speakers, similarity), ks=(1, 5))
    assert result.recall[1] == 1.0
    assert result.mean_rank == 1.0
    assert result.n_gallery == 8
    assert result.chance_recall == {1: 1 / 8, 5: 5 / 8}
    assert result.chance_mean_rank == 4.5


def test_zero_query_ties_everything_and_lands_exactly_at_chance(deterministic_rng):
    real, speakers = _balanced(deterministic_rng, n_speakers=10)
    scores = _scores(np.zeros_like(real), real, speakers, "cosine")
    expected = retrieval_metrics(scores, ks=(1, 5), ties="expected")
    assert expected.recall[1] == pytest.approx(1 / 10)
    assert expected.recall[5] == pytest.approx(5 / 10)
    assert expected.mean_rank == pytest.approx(11 / 2)
    pessimistic = retrieval_metrics(scores, ks=(1,), ties="pessimistic")
    assert pessimistic.recall[1] == 0.0
    assert pessimistic.mean_rank == 10.0


@pytest.mark.parametrize("similarity", ["cosine", "neg_l2"])
def test_constant_predictor_is_at_chance_on_balanced_speakers(deterministic_rng, similarity):
    # One fixed ranking of speakers for every clip: each speaker is first for its own clips
    # only, so with equal clips per speaker R@1 = 1/N and mean rank = (N+1)/2 exactly.
    real, speakers = _balanced(deterministic_rng, n_speakers=7, clips=4)
    constant = np.repeat(deterministic_rng.normal(size=(1, real.shape[1])), len(real), axis=0)
    result = retrieval_metrics(_scores(constant, real, speakers, similarity), ks=(1, 3))
    assert result.recall[1] == pytest.approx(1 / 7)
    assert result.recall[3] == pytest.approx(3 / 7)
    assert result.mean_rank == pytest.approx(4.0)


def test_hand_made_three_speakers_have_known_ranks():
    # Gallery: a=(1,0), b=(0,1), c=(-1,0) (two clips each, averaged).
    real = np.array([[1, 0.1], [1, -0.1], [0.1, 1], [-0.1, 1], [-1, 0.1], [-1, -0.1]])
    speakers = ["a", "a", "b", "b", "c", "c"]
    queries = np.array(
        [
            [1.0, 0.1],   # a: closest to a            -> rank 1
            [0.2, 1.0],   # a: b first, then a         -> rank 2
            [0.0, 1.0],   # b: b                       -> rank 1
            [0.0, -1.0],  # b: a and c tie (cos 0), b last (cos -1) -> rank 3
            [1.0, 0.0],   # c: a, b, then c            -> rank 3
            [-1.0, 0.5],  # c: c, then b               -> rank 1
        ]
    )
    result = retrieval_metrics(_scores(queries, real, speakers), ks=(1, 2))
    np.testing.assert_allclose(result.rank, [1, 2, 1, 3, 3, 1])
    assert result.recall[1] == pytest.approx(3 / 6)
    assert result.recall[2] == pytest.approx(4 / 6)
    assert result.mean_rank == pytest.approx(11 / 6)
    np.testing.assert_allclose(result.similarity_to_true[2], 1.0)


def test_expected_ties_split_recall_between_the_tied_positions():
    real = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    speakers = ["a", "b", "c"]
    # Query of b is (1, 0): a first (cos 1), b and c tie at cos 0 -> rank 2.5, R@2 = 0.5.
    scores = score_speakers(np.array([[1.0, 0.0]]), speaker_gallery(real, speakers), ["b"])
    result = retrieval_metrics(scores, ks=(1, 2, 3))
    np.testing.assert_allclose(result.rank, [2.5])
    assert result.recall == {1: 0.0, 2: 0.5, 3: 1.0}


def test_matching_with_two_speakers_has_a_forced_impostor_and_exact_accuracy():
    real = np.array([[1.0, 0.0], [0.0, 1.0]])
    speakers = ["a", "b"]
    # a's three clips: right, right, wrong; b's two clips: right, tie (equidistant).
    queries = np.array([[1.0, 0.1], [0.9, 0.0], [0.0, 1.0], [0.1, 1.0], [1.0, 1.0]])
    query_speakers = ["a", "a", "a", "b", "b"]
    scores = score_speakers(queries, speaker_gallery(real, speakers), query_speakers)
    result = matching_1of2(scores, seed=3)
    np.testing.assert_array_equal(result.impostor, [1, 1, 1, 0, 0])
    np.testing.assert_allclose(result.outcome, [1, 1, 0, 1, 0.5])
    assert result.accuracy == pytest.approx(3.5 / 5)
    assert result.expected_accuracy == pytest.approx(3.5 / 5)
    assert result.chance == 0.5


def test_matching_outcomes_follow_the_drawn_impostor_and_average_to_the_ranks():
    # Four speakers on a line under neg_l2; query of each speaker has a known order.
    real = np.array([[0.0], [1.0], [2.0], [3.0]])
    speakers = ["a", "b", "c", "d"]
    queries = np.array([[0.0], [0.0], [3.0], [0.0]] * 25)
    query_speakers = ["a", "b", "c", "d"] * 25
    scores = score_speakers(queries, speaker_gallery(real, speakers), query_speakers, "neg_l2")
    result = matching_1of2(scores, seed=0)
    # Over all impostors, a query at rank r among N wins (N - r) / (N - 1) of its trials.
    ranks = np.array([1, 2, 2, 4] * 25)
    assert result.expected_accuracy == pytest.approx(np.mean((4 - ranks) / 3))
    closer = np.abs(queries[:, 0] - real[result.impostor, 0]) < np.abs(
        queries[:, 0] - real[scores.true_index, 0]
    )
    np.testing.assert_array_equal(result.outcome, np.where(closer, 0.0, 1.0))
    assert np.all(result.impostor != scores.true_index)
    assert matching_1of2(scores, seed=0).impostor.tolist() == result.impostor.tolist()
    assert matching_1of2(scores, seed=1).impostor.tolist() != result.impostor.tolist()


def test_same_sex_matching_draws_only_same_sex_impostors_and_skips_lonely_speakers():
    real = np.eye(4)
    speakers = ["a", "b", "c", "d"]
    sex = ["F", "F", "M", None]
    queries = np.tile(np.eye(4), (10, 1))
    scores = score_speakers(queries, speaker_gallery(real, speakers), speakers * 10)
    result = matching_1of2(scores, seed=0, speaker_sex=sex)
    true = scores.true_index
    np.testing.assert_array_equal(result.impostor[true == 0], 1)
    np.testing.assert_array_equal(result.impostor[true == 1], 0)
    assert np.all(result.impostor[true >= 2] == -1)  # c: no other male; d: sex unknown
    assert np.all(np.isnan(result.outcome[true >= 2]))
    assert result.n_trials == 20
    assert result.accuracy == 1.0
