import json

import numpy as np
import pandas as pd
import pytest
import yaml

from pipeline.config import EvaluateExpressionParams
from pipeline.evaluation.attributes import cluster_accuracy
from pipeline.evaluation.expression import ROWS, LabelledFaces, expression_table
from pipeline.evaluation.expression_stage import targets, voice_to_face_table
from stages import evaluate_expression, train_disentangled, train_expression_baselines
from tests.factories import make_dataset_dir

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_perfect_clusters_score_one_with_k_9():
    # 9 far-apart blobs of 3 points; 3 labels, each owning 3 blobs
    centres = np.arange(9)[:, None] * 100.0 * np.eye(9)[0]
    points = np.repeat(centres, 3, axis=0) + np.tile([[0.0], [0.1], [0.2]], (9, 9))
    labels = np.repeat(["ANG", "HAP", "SAD"], 9)
    result = cluster_accuracy(points, labels, k=9, runs=5, seed=0)
    assert result.mean == 1.0 and result.std == 0.0


def test_one_cluster_scores_the_share_of_the_label_nearest_its_centre():
    # four HAP near 0 and one SAD far off: the centroid (2.0) is nearest a HAP point,
    # so every point is called HAP, right for the majority share 4/5
    points = np.array([[0.0], [1.0], [1.5], [2.5], [5.0]])
    labels = ["HAP", "HAP", "HAP", "HAP", "SAD"]
    assert cluster_accuracy(points, labels, k=1, runs=3).mean == pytest.approx(0.8)


def faces(labels, speakers):
    return LabelledFaces(None, np.array(labels, dtype=object), np.array(speakers, dtype=object))


def test_table_scores_each_group_and_leaves_missing_groups_empty():
    groups = {"train": faces(["a", "a", "b", "b"], ["s", "t", "s", "t"]),
              "test": faces(["a", "b"], ["u", "u"])}
    apart = np.array([[0.0], [0.1], [10.0], [10.1]])
    rows = {"perfect": {"train": apart, "test": np.array([[0.0], [9.0]])},
            "train only": {"train": apart}}
    table = expression_table(rows, groups, EvaluateExpressionParams(clusters=2,
                                                                    clustering_runs=3))
    assert table.loc["perfect", "train"] == 1.0 and table.loc["perfect", "test"] == 1.0
    assert table.loc["train only", "train"] == 1.0 and np.isnan(table.loc["train only", "test"])
    # chance with k = 2 of n = 4 balanced points: (2 + 2 * 0.5) / 4
    assert table.loc["chance", "train"] == pytest.approx(0.75)


def test_targets_are_points_of_accuracy():
    table3 = pd.DataFrame({"train": [0.6, 0.5, 0.55], "test": [0.7, 0.5, np.nan]},
                          index=["iterated", "vae", "vae_minus_speaker_mean"])
    leakage = pd.DataFrame({"accuracy": [0.1], "chance": [0.04]}, index=["speaker from z_e"])
    checks = targets({"table3": table3, "leakage": leakage})
    assert checks == pytest.approx({"test_points_over_vae": 20.0,
                                    "train_points_over_vae_minus_mean": 5.0,
                                    "speaker_probe_points_over_chance": 6.0})


def test_both_face_models_share_one_voice_to_face_table(tmp_path):
    row = {"latent.r@1": 0.5, "latent.mean_rank": 2.0, "latent.match_same_sex_all": 0.6,
           "attr.sex_agreement": 0.9, "attr.emotion_agreement": 0.4, "image.mse": 0.02}
    paths = {}
    for name, r1 in (("vae", 0.5), ("disentangled", 0.25)):
        metrics = {r: {**row, "latent.r@1": r1} for r in ("model", "oracle", "mean_face")}
        metrics["chance"] = {**row, "latent.r@1": 0.125, "image.mse": None}
        paths[name] = tmp_path / f"{name}.json"
        paths[name].write_text(json.dumps(metrics))
    table = voice_to_face_table(paths)
    assert list(table.index) == ["vae: model", "vae: oracle", "vae: mean_face",
                                 "disentangled: model", "disentangled: oracle",
                                 "disentangled: mean_face", "chance"]
    assert table.loc["disentangled: model", "R@1"] == 0.25
    assert table.loc["chance", "R@1"] == 0.125 and np.isnan(table.loc["chance", "image MSE"])


def test_the_stages_run_from_the_command_line(tmp_path, repo_root):
    dataset = make_dataset_dir(tmp_path / "dataset", {"train": 18, "val": 6, "test": 6},
                               face_size=16)
    document = yaml.safe_load((repo_root / "params.yaml").read_text())
    document["train_disentangled"].update(
        rounds=2, identity_epochs=1, expression_epochs=1, batch_size=6, latent_dim=3,
        channels=[4], device="cpu", baseline_epochs=1, threads=1)
    document["evaluate_expression"].update(clustering_runs=2, probe_folds=2, swap_faces=2,
                                           interpolation_steps=3, clusters=3)
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(document))
    models, baselines, out = tmp_path / "model", tmp_path / "baselines", tmp_path / "out"
    assert train_disentangled.main(["--params", str(params), "--dataset", str(dataset),
                                    "--out", str(models), "--checkpoints", str(models / "ck"),
                                    "--live", str(tmp_path / "live")]) == 0
    assert train_expression_baselines.main(["--params", str(params), "--dataset", str(dataset),
                                            "--out", str(baselines),
                                            "--checkpoints", str(baselines / "ck")]) == 0
    assert sorted(p.name for p in baselines.glob("*.pt")) == [
        "adversarial.pt", "conventional.pt", "cvae.pt", "vae.pt"]
    voice = tmp_path / "voice.json"
    voice.write_text(json.dumps({"model": {"latent.r@1": 0.5}, "chance": {"latent.r@1": 0.5}}))
    assert evaluate_expression.main([
        "--params", str(params), "--dataset", str(dataset), "--model", str(models),
        "--baselines", str(baselines), "--voice-to-face", f"vae={voice}",
        f"disentangled={voice}", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["table3"]) == {*ROWS, "chance"}
    assert metrics["table3"]["cvae"]["test"] is None  # needs the speaker: no test column
    assert 0 <= metrics["table3"]["iterated"]["test"] <= 1
    assert set(metrics["rounds"]) == {"round_1", "round_2", "chance"}
    assert set(metrics["leakage"]) == {"speaker from z_e", "speaker from z_i",
                                       "emotion from z_i", "emotion from z_e"}
    assert metrics["voice_to_face"]["disentangled: model"]["R@1"] == 0.5
    report = (out / "report.md").read_text()
    assert "Table 3" in report and "![swap](swap.png)" in report
    assert (out / "swap.png").stat().st_size > 0 and (out / "interpolation.png").is_file()
