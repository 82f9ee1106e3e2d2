"""The results table (rows = model, baselines, chance), its JSON, plot data and report.md.

:func:`evaluation_report` writes the ``evaluate`` stage's report.md: the notes of
:func:`report_notes` (data, rows, chance levels, verdict, where dlib works), the table, the
grids, the training-speaker diagnostic, the rank histogram and the emotion confusions.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from pipeline.evaluation.baselines import MEAN_FACE, MODEL, ORACLE
from pipeline.evaluation.scoring import DescriptorCheck, RowResult

CHANCE_ROW = "chance"
CONFUSION_ROWS = (MODEL, ORACLE)
"""Rows whose emotion confusion (probe reading vs label) is plotted and reported."""


def results_table(rows: Sequence[RowResult]) -> pd.DataFrame:
    """Return one table: a row per prediction plus a ``chance`` row, a column per metric.

    Columns keep the order in which metrics first appear. The chance row holds each metric's
    chance level (the same for every row, as it depends only on the test labels; NaN where a
    metric has none, e.g. MSE). Rows must have distinct names.
    """
    names = [row.name for row in rows]
    if len(set(names)) != len(names) or CHANCE_ROW in names:
        raise ValueError(f"row names must be distinct and not {CHANCE_ROW!r}: {names}")
    columns = list(dict.fromkeys(key for row in rows for key in row.metrics))
    chance: dict[str, float] = {}
    for row in rows:
        chance |= row.chance
    table = pd.DataFrame([row.metrics for row in rows], index=names, columns=columns)
    table.loc[CHANCE_ROW] = [chance.get(c, np.nan) for c in columns]
    table.index.name = "row"
    return table


def results_json(table: pd.DataFrame) -> dict[str, dict[str, float | None]]:
    """Return ``{row: {metric: value}}`` for ``metrics.json``; NaN and inf become ``None``."""
    return {
        str(name): {str(column): _finite(value) for column, value in row.items()}
        for name, row in table.iterrows()
    }


def per_clip_table(rows: Sequence[RowResult]) -> pd.DataFrame:
    """Return every row's per-clip results stacked (column ``row`` names the prediction)."""
    return pd.concat([row.per_clip for row in rows], ignore_index=True)


def rank_histogram(ranks: np.ndarray, n_gallery: int) -> list[dict[str, int]]:
    """Return ``[{"rank": r, "count": c}]`` for r = 1..n_gallery (for ``dvc plots``).

    Fractional ranks (expected ranks of ties) are binned down: 2.5 counts as 2.
    """
    bins = np.clip(np.floor(np.asarray(ranks, dtype=np.float64)), 1, n_gallery).astype(int)
    counts = np.bincount(bins, minlength=n_gallery + 1)[1:]
    return [{"rank": r + 1, "count": int(c)} for r, c in enumerate(counts)]


def confusion_rows(true: Sequence[object], predicted: Sequence[object]) -> list[dict[str, str]]:
    """Return one ``{"actual", "predicted"}`` row per clip, for dvc's confusion template.

    Clips without a label or a prediction are left out.
    """
    return [
        {"actual": str(t), "predicted": str(p)}
        for t, p in zip(true, predicted, strict=True)
        if _present(t) and _present(p)
    ]


def render_report(
    table: pd.DataFrame,
    images: Mapping[str, str],
    notes: str | Sequence[str] = (),
    title: str = "Voice -> face evaluation",
) -> str:
    """Return a Markdown report: notes, the results table (metrics as rows), then images.

    Args:
        table: from :func:`results_table`.
        images: caption -> path relative to the report (grids, plots).
        notes: a paragraph, or bullet points (dataset, split, seeds ...).
        title: first heading.
    """
    lines = [f"# {title}", ""]
    if isinstance(notes, str):
        lines += [notes, ""] if notes else []
    elif notes:
        lines += [f"- {note}" for note in notes] + [""]
    metrics_by_row = table.T
    metrics_by_row.index.name = "metric"
    lines += ["## Results", "", markdown_table(metrics_by_row), ""]
    if images:
        lines += ["## Figures", ""]
        for caption, path in images.items():
            lines += [f"### {caption}", "", f"![{caption}]({path})", ""]
    return "\n".join(lines)


def report_notes(
    meta: Mapping[str, Any],
    train_labels: pd.DataFrame,
    test_labels: pd.DataFrame,
    table: pd.DataFrame,
    provenance: Mapping[str, Mapping[str, Any]],
    check: DescriptorCheck | None,
    beats_mean_face: bool,
) -> list[str]:
    """Return the report's bullet points: data, rows, chance levels, verdict, dlib's reach.

    ``provenance``: ``{"face": ..., "voice": ...}`` as recorded in the two model files.
    """
    n_speakers = test_labels["speaker_id"].nunique()
    chance = table.loc[CHANCE_ROW]
    shared = set(test_labels["speaker_id"]) & set(train_labels["speaker_id"])
    disjoint = ("speakers disjoint from training" if not shared
                else f"{len(shared)} of them also in training")
    notes = [
        f"Test split ({meta.get('split_mode', '?')} split): {len(test_labels)} clips of "
        f"{n_speakers} speakers, {disjoint}; probes and baselines fitted on the train split "
        f"({len(train_labels)} clips of {train_labels['speaker_id'].nunique()} speakers).",
        "Rows: `model` = voice -> encoder features -> VAE posterior with the clip's labelled "
        "emotion code -> mu -> decoder (003 section 3.3); `oracle` = the VAE's own latents of "
        "the real test faces (its image.* are the VAE's reconstruction MSE / PSNR / SSIM, its "
        "attr.* the probes' ceiling); `mean_face`, `random_speaker`, `sex_mean_face` = "
        "baselines from the training latents; every row is decoded with the clip's emotion "
        "code when the VAE's decoder takes it.",
        f"Retrieval ranks each generated face against a gallery of {n_speakers} test speakers "
        "(one mean real-face embedding each): chance R@k = k / N "
        f"(R@1 = {chance['latent.r@1']:.4g}), mean rank (N + 1) / 2 = "
        f"{chance['latent.mean_rank']:.4g}; 1:2 matching chance 0.5; attribute chance = "
        "majority share (sex, emotion) and MAE of the training median age; clustering "
        f"(k-means++, mean of seeded runs) chance {chance.get('cluster.accuracy', np.nan):.4g}.",
        "Latent space: the VAE's mu. With a conditional VAE, `model` and `oracle` latents "
        "carry the labelled emotion code, so their emotion agreement and clustering can "
        "reflect the code alone; identity and sex do not come from it.",
        _verdict(table, beats_mean_face),
    ]
    notes += _descriptor_notes(table, check)
    face, voice = provenance["face"], provenance["voice"]
    notes.append(f"Models: VAE epoch {face.get('epoch', '?')}, voice encoder epoch "
                 f"{voice.get('epoch', '?')}; dvc.lock pins the code and data that made them.")
    return notes


def _verdict(table: pd.DataFrame, beats_mean_face: bool) -> str:
    model, mean = table.loc[MODEL, "latent.r@1"], table.loc[MEAN_FACE, "latent.r@1"]
    if beats_mean_face:
        return f"The model beats the mean-face baseline on R@1 ({model:.4g} vs {mean:.4g})."
    return (f"**WARNING: the model does not beat the mean-face baseline on R@1** ({model:.4g} "
            f"vs {mean:.4g}): its faces carry no more identity than the average face.")


def _descriptor_notes(table: pd.DataFrame, check: DescriptorCheck | None) -> list[str]:
    """Return notes on whether dlib's descriptor is usable on these crops."""
    if check is None:
        return ["dlib face-descriptor space: off (`evaluate.face_embedding: false`)."]
    shares = ", ".join(f"{name} {ok.mean():.0%}" for name, ok in check.predicted.items())
    oracle, chance = table.loc[ORACLE, "face.r@1"], table.loc[CHANCE_ROW, "face.r@1"]
    works = "works" if oracle > chance else "does NOT work"
    return [
        f"dlib descriptors (128-d ResNet on crops upscaled to 150x150): 5-point landmarks "
        f"plausible on {check.real.mean():.0%} of real test crops; on decoded faces: {shares} "
        "(elsewhere a fixed template aligned the crop; see face.landmarks_ok per clip).",
        f"Face-space retrieval {works} on these sizes: the oracle's VAE reconstructions reach "
        f"face R@1 {oracle:.4g} against chance {chance:.4g}. Use face.* only for ranking "
        "(distances between small grayscale crops are compressed).",
    ]


def evaluation_report(
    table: pd.DataFrame,
    rows: Sequence[RowResult],
    per_clip: pd.DataFrame,
    notes: list[str],
    fit: pd.DataFrame,
    images: Mapping[str, str],
) -> str:
    """Return report.md: notes, table, grids, the training-speaker fit, ranks, confusions.

    ``images``: caption -> file of each grid, relative to the report.
    """
    parts = [render_report(table, images, notes)]
    parts += ["## Fit on the training speakers (diagnostic)", "",
              "The same scores against a gallery of the training speakers (chance row: their "
              "number sets it). Near the sex-mean face's, the encoder has not learned identity "
              "(underfitting); far above the test table's, it overfits its training speakers.",
              "",
              markdown_table(fit), ""]
    rank = np.floor(per_clip["latent.rank"]).astype(int).rename("rank (latent)")
    ranks = per_clip.groupby([rank, per_clip["row"]], sort=True).size().unstack(fill_value=0)
    ranks = ranks[[row.name for row in rows]]
    parts += ["## Rank of the true speaker (latent space, clips per rank)", "",
              markdown_table(ranks), ""]
    for row in rows:
        if row.name in CONFUSION_ROWS and len(row.emotions):
            confusion = pd.DataFrame(row.confusion, index=list(row.emotions),
                                     columns=list(row.emotions))
            confusion.index.name = "true \\ read"
            parts += [f"## Emotion confusion ({row.name}: probe reading vs label)", "",
                      markdown_table(confusion), ""]
    return "\n".join(parts)


def markdown_table(table: pd.DataFrame, digits: int = 4) -> str:
    """Return ``table`` as a GitHub Markdown table; missing values shown as an em dash."""
    header = [str(table.index.name or ""), *map(str, table.columns)]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for name, row in table.iterrows():
        cells = [_format(v, digits) for v in row]
        lines.append("| " + " | ".join([str(name), *cells]) + " |")
    return "\n".join(lines)


def _format(value: Any, digits: int) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, float | np.floating):
        return f"{value:.{digits}g}"
    return str(value)


def _finite(value: Any) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def _present(value: object) -> bool:
    return value is not None and value == value  # value == value: not NaN
