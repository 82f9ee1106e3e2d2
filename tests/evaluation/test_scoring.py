"""The one code path behind every table row: model, oracle and baselines."""

import json

import numpy as np
import pytest

from pipeline.config import EvaluateParams
from pipeline.evaluation.attributes import fit_attribute_probes
from pipeline.evaluation.baselines import (
    MEAN_FACE,
    RANDOM_SPEAKER,
    SEX_MEAN_FACE,
    baseline_predictions,
    mean_face,
    random_speaker_face,
    sex_mean_face,
)
from pipeline.evaluation.report import (
    CHANCE_ROW,
    confusion_rows,
    per_clip_table,
    rank_histogram,
    render_report,
    results_json,
    results_table,
)
from pipeline.evaluation.scoring import HeldOut, Prediction, evaluate_prediction
from tests.evaluation.factories import EMOTIONS, labelled_latents

PARAMS = EvaluateParams(seed=0, clustering_runs=3)


@pytest.fixture(scope="module")
def split():
    rng = np.random.default_rng(0)
    train, train_labels = labelled_latents(rng, n_speakers=30, prefix="tr")
    test, test_labels = labelled_latents(rng, n_speakers=6, prefix="te")
    probes = fit_attribute_probes(train, train_labels, emotions=EMOTIONS)
    faces = np.clip(rng.random((len(test), 16, 16)), 0, 1)
    return train, train_labels, HeldOut(test_labels, test, faces=faces), probes


def test_mean_face_is_the_training_mean_for_every_clip():
    train = np.array([[0.0, 2.0], [2.0, 4.0]])
    np.testing.assert_allclose(mean_face(train, 3), [[1.0, 3.0]] * 3)


def test_sex_mean_face_uses_the_speakers_sex_and_falls_back_to_the_overall_mean():
    train = np.array([[0.0, 0.0], [2.0, 0.0], [10.0, 10.0]])
    out = sex_mean_face(train, ["F", "F", "M"], ["M", "F", None, "X"])
    overall = train.mean(axis=0)
    np.testing.assert_allclose(out, [[10.0, 10.0], [1.0, 0.0], overall, overall])


def test_random_speaker_face_is_a_seeded_draw_of_speaker_means():
    train = np.array([[0.0], [2.0], [10.0], [20.0]])
    speakers = ["a", "a", "b", "c"]
    out = random_speaker_face(train, speakers, 50, seed=1)
    assert set(out[:, 0]) == {1.0, 10.0, 20.0}  # every speaker drawn, as their mean face
    np.testing.assert_array_equal(out, random_speaker_face(train, speakers, 50, seed=1))
    assert not np.array_equal(out, random_speaker_face(train, speakers, 50, seed=2))


def _rows(split):
    train, train_labels, test, probes = split
    rng = np.random.default_rng(1)
    predictions = {"model": test.latents + 0.05 * rng.normal(size=test.latents.shape)}
    predictions |= baseline_predictions(train, train_labels, test.labels, seed=0)
    return [
        evaluate_prediction(Prediction(name, latents, faces=test.faces), test, probes, PARAMS)
        for name, latents in predictions.items()
    ]


@pytest.fixture(scope="module")
def rows(split):
    return _rows(split)


def test_every_row_is_scored_by_the_same_code_with_the_same_columns(rows):
    assert [r.name for r in rows] == ["model", MEAN_FACE, RANDOM_SPEAKER, SEX_MEAN_FACE]
    assert len({tuple(r.metrics) for r in rows}) == 1
    for key in ("latent.r@1", "latent.r@5", "latent.mean_rank", "latent.match",
                "latent.match_same_sex", "image.ssim", "attr.sex_agreement",
                "attr.emotion.HAP", "cluster.accuracy"):
        assert key in rows[0].metrics


def test_model_beats_the_mean_face_which_sits_exactly_at_chance(rows):
    model, mean, _, sex_mean = rows
    # The mean face is one constant query: balanced speakers -> exactly 1/6 and 3.5.
    assert mean.metrics["latent.r@1"] == pytest.approx(1 / 6)
    assert mean.metrics["latent.mean_rank"] == pytest.approx(3.5)
    assert mean.chance["latent.r@1"] == pytest.approx(1 / 6)
    assert model.metrics["latent.r@1"] == 1.0
    assert model.metrics["latent.match"] == 1.0
    assert mean.metrics["latent.match_all"] == pytest.approx(0.5)
    # The sex-mean face carries sex: perfect sex agreement, but no identity within a sex
    # (one constant query per sex over 3 balanced speakers -> same-sex 1:2 exactly 0.5).
    assert sex_mean.metrics["attr.sex_agreement"] == 1.0
    assert sex_mean.metrics["latent.match_same_sex_all"] == pytest.approx(0.5)
    assert sex_mean.metrics["latent.match_all"] > 0.5  # opposite-sex impostors are beaten
    assert mean.metrics["attr.sex_agreement"] == pytest.approx(0.5)
    assert model.metrics["attr.emotion_agreement"] > 0.9
    assert model.metrics["latent.cosine"] > mean.metrics["latent.cosine"]


def test_results_table_has_a_chance_row_and_json_is_strict(rows):
    table = results_table(rows)
    assert list(table.index) == ["model", MEAN_FACE, RANDOM_SPEAKER, SEX_MEAN_FACE, CHANCE_ROW]
    assert table.loc[CHANCE_ROW, "latent.r@5"] == pytest.approx(5 / 6)
    assert table.loc[CHANCE_ROW, "latent.mean_rank"] == pytest.approx(3.5)
    assert table.loc[CHANCE_ROW, "latent.match_same_sex"] == 0.5
    assert np.isnan(table.loc[CHANCE_ROW, "latent.mse"])
    document = results_json(table)
    assert document[CHANCE_ROW]["latent.mse"] is None
    assert document["model"]["latent.r@1"] == 1.0
    json.dumps(document, allow_nan=False)  # dvc metrics needs strict JSON
    with pytest.raises(ValueError, match="distinct"):
        results_table([rows[0], rows[0]])


def test_per_clip_table_traces_every_clip_of_every_row(rows, split):
    test = split[2]
    table = per_clip_table(rows)
    assert len(table) == 4 * len(test.labels)
    model = table[table["row"] == "model"]
    assert model["clip_id"].tolist() == test.labels["clip_id"].tolist()
    assert (model["latent.rank"] == 1).all()
    for column in ("latent.similarity_to_true", "latent.impostor", "latent.match_same_sex",
                   "latent.impostor_same_sex", "predicted_sex", "predicted_emotion"):
        assert column in table.columns
    sex_of = dict(zip(test.labels["speaker_id"], test.labels["sex"], strict=False))
    same = model["latent.impostor_same_sex"].map(sex_of)
    assert (same == model["sex"]).all()
    assert (model["latent.impostor"] != model["speaker_id"]).all()


def test_plot_data_helpers():
    assert rank_histogram(np.array([1, 1, 2.5, 4]), 4) == [
        {"rank": 1, "count": 2}, {"rank": 2, "count": 1},
        {"rank": 3, "count": 0}, {"rank": 4, "count": 1},
    ]
    assert confusion_rows(["HAP", None, "ANG"], ["HAP", "SAD", None]) == [
        {"actual": "HAP", "predicted": "HAP"}
    ]


def test_render_report_puts_table_notes_and_images_together(rows):
    text = render_report(results_table(rows), {"Rank histogram": "plots/ranks.png"},
                         ["speaker-disjoint test split", "seed 0"])
    assert text.startswith("# Voice -> face evaluation")
    assert "- speaker-disjoint test split" in text
    assert f"| metric | model | {MEAN_FACE} | {RANDOM_SPEAKER} | {SEX_MEAN_FACE} | chance |" in text
    assert "| latent.r@1 | 1 | 0.1667 |" in text
    assert "![Rank histogram](plots/ranks.png)" in text
    assert "—" in text  # NaN chance of MSE


def test_test_set_rejects_misaligned_arrays(split):
    _, _, test, _ = split
    with pytest.raises(ValueError, match="latents has"):
        HeldOut(test.labels, test.latents[:-1])
    with pytest.raises(ValueError, match="lack"):
        HeldOut(test.labels.drop(columns=["sex"]), test.latents)
