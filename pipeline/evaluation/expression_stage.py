"""The ``evaluate_expression`` stage: 002 section 5.2 and both face models' voice -> face rows.

:func:`evaluate_expression` reads the dataset's training and test faces, the 002 model, its
round snapshots and the Table 3 comparison models, and writes into ``out_dir``:

- ``metrics.json``: ``table3`` (row -> train / test accuracy mean and std, and ``chance``),
  ``rounds`` (the same per round, 002 Fig. 3), ``leakage`` (probe -> accuracy, chance),
  ``voice_to_face`` (both face models' rows of the ``evaluate`` stage's results, side by
  side) and ``targets`` (the issue's three checks as numbers);
- ``swap.png`` (002 Fig. 4), ``interpolation.png`` (002 Fig. 5);
- ``report.md``: the tables, the figures and notes.

Without emotion labels there is no Table 3 and no emotion probe; the report says so.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from pipeline.config import EvaluateExpressionParams
from pipeline.evaluation.expression import (
    ROWS,
    TEST,
    TRAIN,
    LabelledFaces,
    expression_table,
    interpolation_figure,
    leakage_probes,
    model_rows,
    swap_figure,
    vae_rows,
)
from pipeline.evaluation.report import markdown_table
from pipeline.images import save_png
from pipeline.loaders import has_emotion_labels, load_split, read_meta
from pipeline.models.disentangled import DisentangledVAE, load_disentangled
from pipeline.models.inference import batched
from pipeline.runtime import atomic_write_json, atomic_write_text
from pipeline.training.disentangle import ROUNDS_DIR, round_file
from pipeline.training.expression_baselines import (
    ADVERSARIAL,
    CONVENTIONAL,
    CVAE,
    VAE,
    BaselineObjective,
    baseline_file,
    load_baseline_vae,
)

log = logging.getLogger(__name__)

METRICS_JSON = "metrics.json"
REPORT_MD = "report.md"
SWAP_PNG = "swap.png"
INTERPOLATION_PNG = "interpolation.png"
VOICE_TO_FACE_COLUMNS = {
    "latent.r@1": "R@1", "latent.mean_rank": "mean rank",
    "latent.match_same_sex_all": "same-sex 1:2", "attr.sex_agreement": "sex agreement",
    "attr.emotion_agreement": "emotion agreement", "image.mse": "image MSE",
}
"""The ``evaluate`` stage's metrics shown side by side: key -> column title."""
VOICE_TO_FACE_ROWS = ("model", "oracle", "mean_face", "random_speaker", "sex_mean_face",
                      "chance")


def evaluate_expression(
    dataset_dir: str | Path,
    model_dir: str | Path,
    baselines_dir: str | Path,
    voice_to_face: Mapping[str, str | Path],
    params: EvaluateExpressionParams,
    out_dir: str | Path,
) -> dict[str, Any]:
    """Return the metrics written to ``metrics.json`` after writing every output.

    Args:
        dataset_dir: the dataset stage's output.
        model_dir: the ``train_disentangled`` stage's output (``model.pt``, ``rounds/``).
        baselines_dir: the ``train_expression_baselines`` stage's output.
        voice_to_face: face model name -> the ``evaluate`` stage's ``metrics.json`` for it.
        params: the ``evaluate_expression`` section.
        out_dir: where the outputs go.
    """
    meta = read_meta(dataset_dir)
    emotions = list(meta["emotions"])
    groups = {g: LabelledFaces.of(load_split(dataset_dir, g, with_audio=False), emotions)
              for g in (TRAIN, TEST)}
    model_dir, baselines_dir, out_dir = Path(model_dir), Path(baselines_dir), Path(out_dir)
    model = load_disentangled(model_dir / "model.pt")
    rounds = _round_models(model_dir / ROUNDS_DIR)
    metrics: dict[str, Any] = {}
    tables: dict[str, pd.DataFrame] = {}
    if has_emotion_labels(meta):
        tables = _expression_tables(model, rounds, baselines_dir, groups, params)
        metrics |= {"table3": _json(tables["table3"]), "rounds": _json(tables["rounds"])}
    tables["leakage"] = leakage_probes(model, groups, params, with_emotion=bool(emotions))
    tables["voice_to_face"] = voice_to_face_table(voice_to_face)
    metrics |= {"leakage": _json(tables["leakage"][["accuracy", "chance"]]),
                "voice_to_face": _json(tables["voice_to_face"])}
    metrics["targets"] = targets(tables)
    save_png(swap_figure(model, groups[TEST], params.swap_faces), out_dir / SWAP_PNG)
    figure_models = {"1 conventional": load_disentangled(baselines_dir / baseline_file(
        CONVENTIONAL)), "3 round 1": rounds[0], "4 iterated": model}
    save_png(interpolation_figure(figure_models, groups[TEST], params.interpolation_steps),
             out_dir / INTERPOLATION_PNG)
    atomic_write_text(out_dir / REPORT_MD, expression_report(tables, metrics["targets"], meta,
                                                             groups, params))
    atomic_write_json(out_dir / METRICS_JSON, metrics)
    return metrics


def _round_models(directory: Path) -> list[DisentangledVAE]:
    """Return the round snapshots ``round_1.pt``, ``round_2.pt`` ... in order."""
    models = []
    while (directory / round_file(len(models) + 1)).is_file():
        models.append(load_disentangled(directory / round_file(len(models) + 1)))
    if not models:
        raise FileNotFoundError(f"{directory}: no {round_file(1)} (train_disentangled writes "
                                "one per round)")
    return models


def _expression_tables(
    model: DisentangledVAE,
    rounds: list[DisentangledVAE],
    baselines_dir: Path,
    groups: Mapping[str, LabelledFaces],
    params: EvaluateExpressionParams,
) -> dict[str, pd.DataFrame]:
    """Return Table 3 and the accuracy per round."""
    models = {CONVENTIONAL: load_disentangled(baselines_dir / baseline_file(CONVENTIONAL)),
              ADVERSARIAL: load_disentangled(baselines_dir / baseline_file(ADVERSARIAL)),
              "adversarial_switch": rounds[0], "iterated": model}
    vae, _ = load_baseline_vae(baselines_dir / baseline_file(VAE))
    cvae, speakers = load_baseline_vae(baselines_dir / baseline_file(CVAE))
    coder = BaselineObjective(0.0, len(speakers))

    def cvae_latents(faces: Any, speaker_ids: list[str]) -> Any:
        index = _speaker_index(speakers, speaker_ids)
        return batched(lambda x, s: cvae.encode(x, coder.code(s))[0], faces, index)

    rows = model_rows(models, groups) | vae_rows(
        lambda faces: batched(lambda x: vae.encode(x)[0], faces), cvae_latents, groups)
    log.info("Table 3: %d rows x %d runs of k-means++ (k=%d)", len(rows),
             params.clustering_runs, params.clusters)
    per_round = model_rows({f"round_{r + 1}": m for r, m in enumerate(rounds)}, groups)
    return {"table3": expression_table({k: rows[k] for k in ROWS}, groups, params),
            "rounds": expression_table(per_round, groups, params)}


def _speaker_index(speakers: tuple[str, ...], speaker_ids: list[str]) -> torch.Tensor:
    unknown = sorted(set(speaker_ids) - set(speakers))
    if unknown:
        raise ValueError(f"the C-VAE knows no speaker {unknown[:3]}: it codes training "
                         "speakers only")
    return torch.tensor([speakers.index(s) for s in speaker_ids])


def voice_to_face_table(metrics_files: Mapping[str, str | Path]) -> pd.DataFrame:
    """Return both face models' rows of the ``evaluate`` stage's results, side by side.

    One row ``<face model>: <row>`` per face model and row of :data:`VOICE_TO_FACE_ROWS`,
    then ``chance`` (the test labels', from the first file that has it); the columns of
    :data:`VOICE_TO_FACE_COLUMNS`.
    """
    records, chance = {}, None
    for name, path in metrics_files.items():
        results = json.loads(Path(path).read_text())
        for row in VOICE_TO_FACE_ROWS:
            if row not in results:
                continue
            values = {title: results[row].get(key) for key, title in VOICE_TO_FACE_COLUMNS.items()}
            if row != "chance":
                records[f"{name}: {row}"] = values
            elif chance is None:
                chance = values
    if chance is not None:
        records["chance"] = chance
    table = pd.DataFrame.from_dict(records, orient="index").astype(float)
    table.index.name = "row"
    return table


def targets(tables: Mapping[str, pd.DataFrame]) -> dict[str, float | None]:
    """Return the issue's checks as numbers (points are accuracy differences x 100).

    ``test_points_over_vae``: iterated z_e vs the VAE's latent on test speakers (target
    >= 15); ``train_points_over_vae_minus_mean``: iterated z_e vs the VAE minus the speaker
    mean on training speakers (target > 0); ``speaker_probe_points_over_chance``: the
    speaker probe on z_e above its chance level (target <= 10).
    """
    out: dict[str, float | None] = {}
    if "table3" in tables:
        t3 = tables["table3"]
        out["test_points_over_vae"] = 100 * (t3.loc["iterated", TEST] - t3.loc["vae", TEST])
        out["train_points_over_vae_minus_mean"] = 100 * (
            t3.loc["iterated", TRAIN] - t3.loc["vae_minus_speaker_mean", TRAIN])
    probe = tables["leakage"].loc["speaker from z_e"]
    out["speaker_probe_points_over_chance"] = 100 * (probe["accuracy"] - probe["chance"])
    return {k: _finite(v) for k, v in out.items()}


def _json(table: pd.DataFrame) -> dict[str, dict[str, float | None]]:
    return {str(row): {str(k): _finite(v) for k, v in values.items()}
            for row, values in table.iterrows()}


def _finite(value: Any) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


# --- report ----------------------------------------------------------------------------------


def expression_report(
    tables: Mapping[str, pd.DataFrame],
    checks: Mapping[str, float | None],
    meta: Mapping[str, Any],
    groups: Mapping[str, LabelledFaces],
    params: EvaluateExpressionParams,
) -> str:
    """Return report.md: Table 3, accuracy per round, leakage, voice -> face, figures."""
    lines = ["# 002: identity and expression latents (Kanou & Nagao)", ""]
    lines += [f"- {note}" for note in _notes(meta, groups, params)] + [""]
    if "table3" in tables:
        lines += ["## Expression recognition (002 Table 3)", "",
                  "k-means++ on each row's latents of the chosen frames; mean ± std of the "
                  "accuracy over the seeded runs. Rows ⑦ and ⑧ need the speaker of every "
                  "face, so they have no test column (as in 002).", "",
                  _accuracy_table(tables["table3"], ROWS), "",
                  "## Accuracy after each round (002 Fig. 3)", "",
                  _accuracy_table(tables["rounds"], {}), ""]
    else:
        lines += ["No expression recognition: the dataset has no emotion labels.", ""]
    lines += ["## Leakage (linear probes)", "",
              "Near chance is good for `speaker from z_e` and `emotion from z_i`; the other "
              "two show what each latent is for.", "", markdown_table(tables["leakage"]), ""]
    lines += ["## Voice -> face, both face models (the evaluate stage's results)", "",
              "`vae` = 003's emotion-conditioned VAE, `disentangled` = this model (voice -> "
              "z_i, the emotion's mean z_e); each system's rows are scored in its own latent "
              "space by the same code.", "", markdown_table(tables["voice_to_face"]), ""]
    lines += ["## Checks", "", *[f"- `{k}`: {_points(v)}" for k, v in checks.items()], ""]
    lines += ["## Figures", "", "### Expression swap across test speakers (002 Fig. 4)", "",
              f"![swap]({SWAP_PNG})", "", "### Interpolation between two expressions "
              "(002 Fig. 5)", "", f"![interpolation]({INTERPOLATION_PNG})", ""]
    return "\n".join(lines)


def _notes(
    meta: Mapping[str, Any], groups: Mapping[str, LabelledFaces],
    params: EvaluateExpressionParams,
) -> list[str]:
    counts = {g: (len(f.speaker), len(set(f.speaker.tolist()))) for g, f in groups.items()}
    return [
        f"Faces: the frame the faces stage chose per clip ({meta.get('face_size')} px, "
        f"grayscale); training speakers {counts[TRAIN][0]} faces of {counts[TRAIN][1]}, test "
        f"speakers {counts[TEST][0]} faces of {counts[TEST][1]}; emotions "
        f"{', '.join(meta['emotions']) or 'none'}.",
        f"k-means++ with k = {params.clusters}, {params.clustering_runs} seeded runs; chance = "
        "the expected accuracy of labels independent of the latents (k nearest points are "
        "free hits, so it is above the majority share on small sets).",
        "Rows ① and ② train one round of the model's settings; ③ is the model after its "
        "first round (same seed and settings); ⑥ and ⑧ train `baseline_epochs` epochs. 002 "
        "gives its one-round rows 100 + 100 epochs and its iterated row 50 + 50 per round.",
    ]


def _accuracy_table(table: pd.DataFrame, names: Mapping[str, str]) -> str:
    groups = [c for c in table.columns if not c.endswith("_std")]
    shown = pd.DataFrame(
        {g: [_percent(table.loc[r, g], table.loc[r].get(f"{g}_std")) for r in table.index]
         for g in groups}, index=[names.get(r, r) for r in table.index])
    shown.index.name = "row"
    return markdown_table(shown)


def _percent(mean: float, std: float | None) -> str:
    if mean is None or not np.isfinite(mean):
        return "—"
    if std is None or not np.isfinite(std):
        return f"{100 * mean:.2f}%"
    return f"{100 * mean:.2f} ± {100 * std:.2f}%"


def _points(value: float | None) -> str:
    return "—" if value is None else f"{value:+.1f} points"

