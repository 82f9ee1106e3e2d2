import numpy as np
import pandas as pd
import pytest

from pipeline.evaluation.attributes import (
    attribute_chance,
    attribute_metrics,
    cluster_accuracy,
    confusion_counts,
    fit_attribute_probes,
    subtract_group_mean,
)
from tests.evaluation.factories import EMOTIONS, labelled_latents


@pytest.fixture
def probes_and_test(deterministic_rng):
    train, train_labels = labelled_latents(deterministic_rng, n_speakers=30, prefix="tr")
    test, test_labels = labelled_latents(deterministic_rng, n_speakers=4, prefix="te")
    return fit_attribute_probes(train, train_labels, emotions=EMOTIONS), test, test_labels


def test_probes_read_separable_attributes_perfectly(probes_and_test):
    probes, test, labels = probes_and_test
    result = attribute_metrics(probes, test, labels)
    assert result.sex_agreement == 1.0
    assert result.emotion_agreement == 1.0
    assert result.emotion_per_class == dict.fromkeys(EMOTIONS, 1.0)
    np.testing.assert_array_equal(result.confusion, np.diag([8, 8, 8, 8]))
    assert result.age_mae < 1.0  # age is linear in dim 1; chance is ~ 5+ years
    assert list(result.predicted_sex) == labels["sex"].tolist()


def test_swapped_sex_and_emotion_are_read_as_swapped(probes_and_test):
    probes, test, labels = probes_and_test
    generated = test.copy()
    generated[:, 0] *= -1  # every face now shows the other sex
    hap, ang = 2 + EMOTIONS.index("HAP"), 2 + EMOTIONS.index("ANG")
    is_hap = labels["emotion"].to_numpy() == "HAP"
    generated[is_hap, hap], generated[is_hap, ang] = 0.0, 3.0  # HAP faces look angry
    result = attribute_metrics(probes, generated, labels)
    assert result.sex_agreement == 0.0
    assert result.emotion_agreement == pytest.approx(24 / 32)
    assert result.emotion_per_class["HAP"] == 0.0
    assert result.emotion_per_class["SAD"] == 1.0
    assert result.confusion[EMOTIONS.index("HAP"), EMOTIONS.index("ANG")] == 8


def test_constant_latents_score_at_most_the_majority_share(probes_and_test):
    probes, test, labels = probes_and_test
    labels = labels.iloc[:24].reset_index(drop=True)  # speakers te0 (F), te1 (M), te2 (F)
    constant = np.repeat(test[:1], 24, axis=0)
    result = attribute_metrics(probes, constant, labels)
    chance = attribute_chance(probes, labels)
    assert chance.sex_agreement == pytest.approx(16 / 24)
    assert chance.emotion_agreement == pytest.approx(6 / 24)
    assert result.sex_agreement in (pytest.approx(16 / 24), pytest.approx(8 / 24))
    assert result.sex_agreement <= chance.sex_agreement + 1e-12
    # Median training age: ages 20, 25 .. 65 (three times each) -> 42.5; test ages 20, 25, 30.
    assert chance.age_mae == pytest.approx(np.mean([22.5, 17.5, 12.5]))


def test_missing_labels_are_skipped_not_counted_wrong(probes_and_test):
    probes, test, labels = probes_and_test
    labels = labels.copy()
    labels.loc[:7, "sex"] = None
    labels.loc[:7, "emotion"] = None
    labels["age"] = labels["age"].astype("float").where(labels.index >= 8)
    result = attribute_metrics(probes, test, labels)
    assert result.sex_agreement == 1.0
    assert result.confusion.sum() == len(labels) - 8
    assert not np.isnan(result.age_mae)


def test_confusion_counts_hand_case():
    counts = confusion_counts(["a", "a", "b", None], ["a", "b", "b", "a"], ["a", "b"])
    np.testing.assert_array_equal(counts, [[1, 1], [0, 1]])


def test_clustering_well_separated_blobs_is_perfect_in_every_run(deterministic_rng):
    centres = np.eye(4) * 20
    labels = np.repeat(list("wxyz"), 30)
    latents = np.repeat(centres, 30, axis=0) + deterministic_rng.normal(size=(120, 4))
    result = cluster_accuracy(latents, labels, k=4, runs=10, seed=0)
    # k-means++ seeds far apart points; with blobs this separated every run finds them.
    assert result.mean == 1.0
    assert result.std == 0.0
    assert result.accuracies.shape == (10,)


def test_clustering_with_labels_independent_of_data_matches_the_derived_chance():
    # Labels drawn independently of the latents: each cluster's nearest point matches itself,
    # any other point matches with probability sum p_c^2 -> (k + (n - k) sum p_c^2) / n.
    rng = np.random.default_rng(7)
    n, k = 1200, 4
    latents = rng.normal(size=(n, 5))
    labels = rng.choice(list("abcd"), size=n)
    result = cluster_accuracy(latents, labels, k=k, runs=20, seed=0)
    shares = pd.Series(labels).value_counts(normalize=True).to_numpy()
    assert result.chance == pytest.approx((k + (n - k) * np.sum(shares**2)) / n)
    assert result.chance == pytest.approx(0.25 + 0.75 * k / n, abs=0.01)
    # Binomial sd of one run's accuracy ~ sqrt(0.25 * 0.75 / n) = 0.0125.
    assert result.mean == pytest.approx(result.chance, abs=0.03)


def test_clustering_of_identical_points_scores_the_tie_expectation():
    labels = ["a"] * 6 + ["b"] * 3 + ["c"] * 3
    result = cluster_accuracy(np.ones((12, 3)), labels, k=3, runs=3, seed=0)
    assert result.mean == pytest.approx(0.5**2 + 0.25**2 + 0.25**2)


def test_clustering_rejects_bad_k():
    with pytest.raises(ValueError, match="k must be"):
        cluster_accuracy(np.zeros((3, 2)), ["a", "b", "c"], k=4, runs=1)


def test_subtracting_speaker_means_centres_every_speaker():
    latents = np.array([[1.0, 2.0], [3.0, 4.0], [10.0, 0.0]])
    out = subtract_group_mean(latents, ["a", "a", "b"])
    np.testing.assert_allclose(out, [[-1.0, -1.0], [1.0, 1.0], [0.0, 0.0]])
