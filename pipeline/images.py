"""Image grids (contact sheets, reconstruction and label-swap grids) saved as PNG; PSNR."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from pipeline.runtime import atomic_path


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Return a 2-D uint8 image from uint8 data or floats in [0, 1] (clipped)."""
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[0] == 1:
        image = image[0]
    if image.ndim != 2:
        raise ValueError(f"expected a 2-D grayscale image, got shape {image.shape}")
    if image.dtype == np.uint8:
        return image
    return (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def psnr(mse: float, data_range: float = 1.0) -> float:
    """Return the PSNR in dB of a mean squared error of images spanning ``data_range``.

    ``10 log10(data_range^2 / mse)``, computed as scikit-image's ``peak_signal_noise_ratio``
    does (so per-image values equal its own); ``inf`` for ``mse == 0``.
    """
    if mse <= 0:
        return float("inf")
    return float(10 * np.log10((data_range**2) / mse))


def image_grid(
    tiles: Sequence[np.ndarray],
    ncols: int,
    labels: Sequence[str] | None = None,
    scale: int = 1,
    pad: int = 2,
    label_height: int = 12,
) -> Image.Image:
    """Return a grayscale grid of equally sized ``tiles``, each optionally captioned.

    ``tiles`` are 2-D uint8 arrays or floats in [0, 1]; row-major order, ``ncols`` per row.
    """
    if not tiles:
        raise ValueError("image_grid needs at least one tile")
    images = [to_uint8(t) for t in tiles]
    h, w = images[0].shape
    if any(i.shape != (h, w) for i in images):
        raise ValueError("all tiles of a grid must have the same shape")
    th, tw = h * scale, w * scale
    cap = label_height if labels else 0
    nrows = -(-len(images) // ncols)
    sheet = Image.new("L", (ncols * (tw + pad) + pad, nrows * (th + cap + pad) + pad), 255)
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    for i, image in enumerate(images):
        x = pad + (i % ncols) * (tw + pad)
        y = pad + (i // ncols) * (th + cap + pad)
        tile = Image.fromarray(image).resize((tw, th), Image.NEAREST)
        sheet.paste(tile, (x, y + cap))
        if labels:
            draw.text((x, y), labels[i][: max(1, tw // 6)], fill=0, font=font)
    return sheet


def placeholder_image(text: str, width: int = 360, line_chars: int = 56) -> Image.Image:
    """Return a white grayscale image holding ``text`` (wrapped): says why a figure is absent.

    DVC expects every declared output; where a figure cannot be drawn (e.g. emotion grids of
    data without emotion labels) the stage writes this in its place instead.
    """
    lines = textwrap.wrap(text, line_chars) or [""]
    image = Image.new("L", (width, 8 + 14 * len(lines)), 255)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    for i, line in enumerate(lines):
        draw.text((6, 4 + 14 * i), line, fill=0, font=font)
    return image


def save_png(image: Image.Image, path: str | Path) -> Path:
    """Write ``image`` to ``path`` as PNG atomically; return the path."""
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")
    return Path(path)
