"""The ``train_ggdrm`` stage: the GGDRM and its baselines on one speaker, scored both ways.

Reads the ``lips`` stage's frames (its utterance split and image coder), standardises both
feature sets on the training frames, trains

- the GGDRM (:mod:`pipeline.ggdrm.model`): pre-training, then maximum-likelihood
  fine-tuning; both the pre-trained and the fine-tuned model are scored (001 Fig. 1 (c), (d)),
- a feed-forward DNN of the same shape from random initialisation per direction (b),
- a ridge map per direction, and the training mean (mean lips, mean speech),

predicts the held-out frames in both directions (the GGDRM by mean-field with one visible
layer clamped) and writes ``metrics.json``, ``report.md``, ``lips.png`` (001 Fig. 1),
``spectrograms.png`` (001 Fig. 2) and the trained models.
"""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from pipeline.config import TrainGgdrmParams, to_dict
from pipeline.ggdrm.evaluation import (
    HeldOut,
    figure_window,
    lips_figure,
    lips_metrics,
    results_table,
    spectrogram_figure,
    speech_metrics,
)
from pipeline.ggdrm.model import GGDRM
from pipeline.ggdrm.training import (
    Standardizer,
    finetune,
    fit_ridge,
    pretrain,
    train_dnn,
)
from pipeline.images import save_png
from pipeline.lips.features import ImageCoder
from pipeline.runtime import atomic_path, atomic_write_json, atomic_write_text
from pipeline.shards import list_shards, read_shards

log = logging.getLogger(__name__)

MODEL_FORMAT = 1
LIPS_COLUMNS = ("clip_id", "split", "frame_index", "mouth", "image_features", "mcep")


def _matrix(column: pa.ChunkedArray) -> np.ndarray:
    """Return a list column whose rows have one length as an ``(n, d)`` float64 array."""
    array = column.combine_chunks()
    return np.asarray(array.flatten(), np.float64).reshape(len(array), -1)


def read_frames(lips_dir: str | Path) -> dict[str, Any]:
    """Return the lips stage's frames as arrays, split into ``train`` and ``test``.

    Raises ``ValueError`` when either split has no frame.
    """
    table = read_shards(list_shards(lips_dir, "lips"), LIPS_COLUMNS)
    split = np.asarray(table.column("split").to_pylist())
    frames = {
        "clip_id": np.asarray(table.column("clip_id").to_pylist()),
        "frame_index": table.column("frame_index").to_numpy(),
        "x": _matrix(table.column("image_features")),
        "y": _matrix(table.column("mcep")),
        "mouth": table.column("mouth").to_pylist(),
    }
    parts = {}
    for name in ("train", "test"):
        rows = np.flatnonzero(split == name)
        if rows.size == 0:
            raise ValueError(f"{lips_dir}: no {name} frame (lips.test_fraction must hold out "
                             "at least one utterance and leave one for training)")
        parts[name] = {k: ([v[i] for i in rows] if isinstance(v, list) else v[rows])
                       for k, v in frames.items()}
    return parts


def _held_out(test: dict[str, Any], crop_px: int) -> HeldOut:
    crops = np.stack([np.frombuffer(b, np.uint8).reshape(crop_px, crop_px)
                      for b in test["mouth"]])
    return HeldOut(test["clip_id"], test["frame_index"], test["x"], test["y"], crops)


def train_systems(train: dict[str, Any], test: dict[str, Any],
                  params: TrainGgdrmParams) -> tuple[dict[str, dict[str, np.ndarray]], dict]:
    """Return every system's test predictions ``{system: {"lips", "speech"}}`` and the models.

    Predictions are in feature units (image features, mel-cepstra).
    """
    scale_x, scale_y = Standardizer.fit(train["x"]), Standardizer.fit(train["y"])
    x, y = scale_x.forward(train["x"]), scale_y.forward(train["y"])
    test_x, test_y = scale_x.forward(test["x"]), scale_y.forward(test["y"])
    n = len(test_x)
    predictions = {"mean": {"lips": np.repeat(train["x"].mean(0, keepdims=True), n, 0),
                            "speech": np.repeat(train["y"].mean(0, keepdims=True), n, 0)}}
    to_lips, to_speech = fit_ridge(y, x, params.ridge_alpha), fit_ridge(x, y, params.ridge_alpha)
    predictions["ridge"] = {"lips": scale_x.inverse(to_lips.predict(test_y.numpy())),
                            "speech": scale_y.inverse(to_speech.predict(test_x.numpy()))}
    dnn_lips = train_dnn(y, x, params, "dnn_speech_to_lips")
    dnn_speech = train_dnn(x, y, params, "dnn_lips_to_speech")
    with torch.no_grad():
        predictions["dnn"] = {"lips": scale_x.inverse(dnn_lips(test_y)),
                              "speech": scale_y.inverse(dnn_speech(test_x))}
    model = pretrain(x, y, params)
    pretrained = {k: v.clone() for k, v in model.state_dict().items()}
    predictions["ggdrm_pretrained"] = _ggdrm_predictions(model, test_x, test_y, scale_x,
                                                         scale_y, params)
    model = finetune(model, x, y, params)
    predictions["ggdrm"] = _ggdrm_predictions(model, test_x, test_y, scale_x, scale_y, params)
    models = {"ggdrm": model.state_dict(), "ggdrm_pretrained": pretrained,
              "dnn_speech_to_lips": dnn_lips.state_dict(),
              "dnn_lips_to_speech": dnn_speech.state_dict(),
              "sizes": model.sizes,
              "scales": {"x_mean": scale_x.mean, "x_std": scale_x.std,
                         "y_mean": scale_y.mean, "y_std": scale_y.std}}
    return predictions, models


def _ggdrm_predictions(model: GGDRM, test_x: torch.Tensor, test_y: torch.Tensor,
                       scale_x: Standardizer, scale_y: Standardizer,
                       params: TrainGgdrmParams) -> dict[str, np.ndarray]:
    model.eval()
    return {"lips": scale_x.inverse(model.predict_x(test_y, params.inference_steps)),
            "speech": scale_y.inverse(model.predict_y(test_x, params.inference_steps))}


def score(held_out: HeldOut, predictions: dict[str, dict[str, np.ndarray]],
          coder: ImageCoder) -> dict[str, Any]:
    """Return the metrics of every system in both directions, plus the coder's ceiling."""
    lips = {name: lips_metrics(held_out, p["lips"], coder) for name, p in predictions.items()}
    lips["pca_ceiling"] = lips_metrics(held_out, held_out.image_features, coder)
    speech = {name: speech_metrics(held_out, p["speech"]) for name, p in predictions.items()}
    mean_mse = lips["mean"]["pixel_mse"]
    tie = {"ridge_pixel_gain": 1.0 - lips["ridge"]["pixel_mse"] / mean_mse,
           "ceiling_pixel_gain": 1.0 - lips["pca_ceiling"]["pixel_mse"] / mean_mse,
           "ridge_mcd_gain_db": speech["mean"]["mcd_db"] - speech["ridge"]["mcd_db"]}
    return {"speech_to_lips": lips, "lips_to_speech": speech, "tie": tie}


def run_train_ggdrm(lips_dir: str | Path, model_path: str | Path, out_dir: str | Path,
                    params: TrainGgdrmParams) -> dict[str, Any]:
    """Train and score everything; write the outputs; return ``metrics.json``'s content."""
    lips_dir, out_dir = Path(lips_dir), Path(out_dir)
    meta = json.loads((lips_dir / "meta.json").read_text())
    coder = ImageCoder.load(lips_dir / "image_coder.parquet")
    parts = read_frames(lips_dir)
    held_out = _held_out(parts["test"], coder.crop_px)
    predictions, models = train_systems(parts["train"], parts["test"], params)
    metrics = score(held_out, predictions, coder)
    metrics["data"] = {"speakers": meta["speakers"], "train_frames": len(parts["train"]["x"]),
                       "test_frames": len(held_out.clip_ids),
                       "test_clips": len(np.unique(held_out.clip_ids)),
                       "image_features": coder.n_components,
                       "variance_kept": meta["variance_kept"]["total"]}
    out_dir.mkdir(parents=True, exist_ok=True)
    _save_models(model_path, models, params, meta)
    _save_figures(out_dir, held_out, predictions, coder, meta, params)
    atomic_write_json(out_dir / "metrics.json", metrics)
    atomic_write_text(out_dir / "report.md", report(metrics, meta, params))
    return metrics


def _save_models(path: str | Path, models: dict, params: TrainGgdrmParams, meta: dict) -> None:
    payload = {"format": MODEL_FORMAT, **models, "params": to_dict(params),
               "data": {"speakers": meta["speakers"], "clips": meta["clips"]}}
    payload["scales"] = {k: torch.as_tensor(v) for k, v in payload["scales"].items()}
    buffer = io.BytesIO()  # a file name would become the archive's folder name: random bytes
    torch.save(payload, buffer)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getvalue())


SHOWN = ("dnn", "ggdrm_pretrained", "ggdrm", "ridge")
"""Systems in the figures, after the real one (001 Figs. 1-2: DNN, before and after
fine-tuning; the ridge map added)."""


def _save_figures(out_dir: Path, held_out: HeldOut, predictions: dict, coder: ImageCoder,
                  meta: dict, params: TrainGgdrmParams) -> None:
    rows = figure_window(held_out, params.figure_frames)
    lips = {name: predictions[name]["lips"] for name in SHOWN}
    save_png(lips_figure(held_out, lips, coder, rows), out_dir / "lips.png")
    speech = {name: predictions[name]["speech"] for name in SHOWN}
    clip = str(held_out.clip_ids[rows[0]])
    save_png(spectrogram_figure(held_out, speech, meta["speech"]["alpha"], clip),
             out_dir / "spectrograms.png")


def report(metrics: dict[str, Any], meta: dict, params: TrainGgdrmParams) -> str:
    """Return ``report.md``: the data, both directions' tables and the figures."""
    data, tie = metrics["data"], metrics["tie"]
    return "\n".join([
        "# GGDRM: lips <-> speech (paper 001)", "",
        f"Speaker(s) {', '.join(data['speakers'])}: {data['train_frames']} training frames, "
        f"{data['test_frames']} test frames of {data['test_clips']} held-out utterance(s). "
        f"Image features: {data['image_features']} PCA components of the DCT block "
        f"({data['variance_kept']:.1%} of the crops' variance). GGDRM hidden layers "
        f"{list(params.hidden)}; mean-field inference with {params.inference_steps} sweeps.",
        "", "## Speech -> lips", "",
        results_table(metrics["speech_to_lips"],
                      ("pixel_mse", "psnr_db", "ssim", "feature_mse", "tv_ratio")),
        "", "## Lips -> speech", "",
        results_table(metrics["lips_to_speech"], ("mcd_db", "feature_mse", "tv_ratio")),
        "", "## How strongly the speech ties the lips", "",
        f"Ridge (speech -> lips) lowers the pixel MSE of the mean lips by "
        f"{tie['ridge_pixel_gain']:.1%}; the image coder's own reconstruction would by "
        f"{tie['ceiling_pixel_gain']:.1%} (the ceiling). Ridge (lips -> speech) lowers the "
        f"mean speech's MCD by {tie['ridge_mcd_gain_db']:.2f} dB.",
        "", "![lips](lips.png)", "", "![spectrograms](spectrograms.png)", "",
    ])
