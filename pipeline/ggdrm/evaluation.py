"""Scoring the two directions on held-out utterances, and 001's figures.

- speech -> lips: MSE of the image features, and in pixels after decoding them (inverse
  PCA + inverse DCT, :class:`~pipeline.lips.features.ImageCoder`) against the real crop,
  with PSNR and SSIM (scikit-image, data range 1);
- lips -> speech: mel-cepstral distortion (dB, coefficients 1..M) and MSE of the cepstra;
- both: the temporal variation ratio, the standard deviation over time of the generated
  features over that of the real ones, summed over dimensions and test clips (001 saw its
  generated spectra averaged over frames: a ratio well below 1).

Figures: real lips against each system's, one row per frame (001 Fig. 1), and the
spectrograms of a test clip drawn from the real and generated mel-cepstra (001 Fig. 2).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from pipeline.images import image_grid
from pipeline.lips.features import ImageCoder
from pipeline.lips.mcep import log_amplitude_spectrum, mel_cepstral_distortion

SPECTROGRAM_BINS = 128
SPECTROGRAM_RANGE_DB = 60.0
"""Dynamic range shown in the spectrograms, below the real spectrogram's peak."""


@dataclass(frozen=True)
class HeldOut:
    """The test frames: identities, real features and real crops, row-aligned."""

    clip_ids: np.ndarray
    """``(n,)`` clip id of each frame."""
    frame_index: np.ndarray
    image_features: np.ndarray
    """``(n, k)`` real image features."""
    mcep: np.ndarray
    """``(n, M + 1)`` real mel-cepstra."""
    crops: np.ndarray
    """``(n, S, S)`` uint8 real mouth crops."""


def temporal_variation_ratio(real: np.ndarray, generated: np.ndarray, clip_ids: np.ndarray,
                             dims: slice = slice(None)) -> float:
    """Return ``sum std_t(generated) / sum std_t(real)`` over clips and dimensions ``dims``."""
    real_sum = generated_sum = 0.0
    for clip in np.unique(clip_ids):
        rows = clip_ids == clip
        real_sum += float(real[rows][:, dims].std(axis=0).sum())
        generated_sum += float(generated[rows][:, dims].std(axis=0).sum())
    return generated_sum / real_sum if real_sum > 0 else float("nan")


def lips_metrics(held_out: HeldOut, features: np.ndarray, coder: ImageCoder) -> dict[str, float]:
    """Return the speech -> lips scores of predicted image ``features`` ``(n, k)``."""
    real = held_out.crops.astype(np.float64) / 255.0
    generated = coder.decode(features)
    pixel_mse = ((generated - real) ** 2).mean(axis=(1, 2))
    psnr = [peak_signal_noise_ratio(r, g, data_range=1.0) for r, g in zip(real, generated,
                                                                          strict=True)]
    ssim = [structural_similarity(r, g, data_range=1.0) for r, g in zip(real, generated,
                                                                        strict=True)]
    return {
        "feature_mse": float(((features - held_out.image_features) ** 2).mean()),
        "pixel_mse": float(pixel_mse.mean()),
        "psnr_db": float(np.mean(psnr)),
        "ssim": float(np.mean(ssim)),
        "tv_ratio": temporal_variation_ratio(held_out.image_features, features,
                                             held_out.clip_ids),
    }


def speech_metrics(held_out: HeldOut, mcep: np.ndarray) -> dict[str, float]:
    """Return the lips -> speech scores of predicted mel-cepstra ``(n, M + 1)``."""
    return {
        "mcd_db": float(mel_cepstral_distortion(held_out.mcep, mcep).mean()),
        "feature_mse": float(((mcep - held_out.mcep) ** 2).mean()),
        "tv_ratio": temporal_variation_ratio(held_out.mcep, mcep, held_out.clip_ids,
                                             slice(1, None)),
    }


def figure_window(held_out: HeldOut, n_frames: int) -> np.ndarray:
    """Return the rows of ``n_frames`` consecutive test frames where the mouth moves most.

    The clip with the most frames; within it, the window whose real image features vary
    most (sum of per-dimension variances).
    """
    clips, counts = np.unique(held_out.clip_ids, return_counts=True)
    rows = np.flatnonzero(held_out.clip_ids == clips[int(np.argmax(counts))])
    n = min(n_frames, len(rows))
    spread = [held_out.image_features[rows[i:i + n]].var(axis=0).sum()
              for i in range(len(rows) - n + 1)]
    start = int(np.argmax(spread))
    return rows[start:start + n]


def lips_figure(held_out: HeldOut, predictions: Mapping[str, np.ndarray], coder: ImageCoder,
                rows: np.ndarray, scale: int = 3) -> Image.Image:
    """Return 001 Fig. 1: the real crop, then each system's, one row per frame ``rows``."""
    columns = {"real": held_out.crops[rows].astype(np.float64) / 255.0}
    columns.update({name: coder.decode(features[rows]) for name, features in predictions.items()})
    tiles, labels = [], []
    for r in range(len(rows)):
        for name, images in columns.items():
            tiles.append(images[r])
            labels.append(name if r == 0 else f"#{held_out.frame_index[rows[r]]}"
                          if name == "real" else "")
    return image_grid(tiles, ncols=len(columns), labels=labels, scale=scale)


def spectrogram(mcep: np.ndarray, alpha: float, top_db: float) -> np.ndarray:
    """Return a ``(bins, frames)`` image in [0, 1]: low frequencies at the bottom."""
    log_amplitude = log_amplitude_spectrum(mcep, alpha, SPECTROGRAM_BINS)  # (frames, bins)
    decibels = 20.0 / np.log(10.0) * log_amplitude
    scaled = (decibels - (top_db - SPECTROGRAM_RANGE_DB)) / SPECTROGRAM_RANGE_DB
    return np.clip(scaled, 0.0, 1.0).T[::-1]


def spectrogram_figure(held_out: HeldOut, predictions: Mapping[str, np.ndarray], alpha: float,
                       clip_id: str, scale: int = 2) -> Image.Image:
    """Return 001 Fig. 2: spectrograms of ``clip_id`` from the real and generated mel-cepstra."""
    rows = held_out.clip_ids == clip_id
    panels = {"real": held_out.mcep[rows], **{k: v[rows] for k, v in predictions.items()}}
    real_db = 20.0 / np.log(10.0) * log_amplitude_spectrum(panels["real"], alpha,
                                                           SPECTROGRAM_BINS)
    top_db = float(real_db.max())
    tiles = [spectrogram(mcep, alpha, top_db) for mcep in panels.values()]
    return image_grid(tiles, ncols=len(tiles), labels=list(panels), scale=scale)


def results_table(rows: Mapping[str, Mapping[str, float]], columns: Sequence[str]) -> str:
    """Return a Markdown table of ``rows`` (system -> metrics) with the given metric columns."""
    lines = ["| system | " + " | ".join(columns) + " |",
             "| --- |" + " --- |" * len(columns)]
    for name, values in rows.items():
        cells = [_format(values[c]) if c in values else "" for c in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _format(value: float) -> str:
    return f"{value:.5f}" if abs(value) < 0.01 else f"{value:.3f}"
