"""The results table (rows = model, baselines, chance), its JSON, plot data and report.md."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from pipeline.evaluation.scoring import RowResult

CHANCE_ROW = "chance"


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
