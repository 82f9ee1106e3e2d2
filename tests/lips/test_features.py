"""DCT + PCA image features of mouth crops: round trip within the kept variance."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter

from pipeline.lips.features import ImageCoder

SIZE = 55


def mouth_crops(n: int, seed: int) -> np.ndarray:
    """Return ``n`` synthetic mouths: lips around a dark opening of varying height, noise."""
    rng = np.random.default_rng(seed)
    crops = []
    for opening in rng.uniform(0.0, 1.0, n):
        image = Image.new("L", (SIZE, SIZE), 170)
        draw = ImageDraw.Draw(image)
        half = 3 + 9 * opening
        draw.ellipse((8, 27 - half - 5, 47, 27 + half + 5), fill=110)  # lips
        draw.ellipse((13, 27 - half, 42, 27 + half), fill=35)  # opening
        soft = image.filter(ImageFilter.GaussianBlur(1.5))  # a camera's blur
        noisy = np.asarray(soft, np.float64) + rng.normal(0, 1.5, (SIZE, SIZE))
        crops.append(np.clip(noisy, 0, 255).astype(np.uint8))
    return np.stack(crops)


@pytest.mark.parametrize("dct_block", [0, 16])
def test_round_trip_loses_exactly_the_variance_not_kept(dct_block):
    crops = mouth_crops(100, seed=0)
    coder = ImageCoder.fit(crops, dct_block=dct_block, pca_variance=0.9)
    assert 0 < coder.n_components < 20
    assert coder.pca_share >= 0.9
    pixels = crops / 255.0
    restored = coder.decode(coder.encode(crops), clip=False)
    lost = ((pixels - restored) ** 2).sum() / ((pixels - pixels.mean(0)) ** 2).sum()
    assert lost == pytest.approx(1.0 - coder.total_share, rel=1e-6, abs=1e-9)
    if dct_block == 0:
        assert coder.block_share == pytest.approx(1.0)
    else:
        assert 0.8 < coder.block_share < 1.0


def test_unseen_crops_come_back_close_and_clipping_only_helps():
    coder = ImageCoder.fit(mouth_crops(120, seed=0), dct_block=24, pca_variance=0.95)
    held_out = mouth_crops(20, seed=1)
    pixels = held_out / 255.0
    features = coder.encode(held_out)
    clipped, raw = coder.decode(features), coder.decode(features, clip=False)
    assert clipped.min() >= 0.0 and clipped.max() <= 1.0
    assert ((clipped - pixels) ** 2).sum() <= ((raw - pixels) ** 2).sum()
    spread = ((pixels - pixels.mean(0)) ** 2).mean()
    assert ((clipped - pixels) ** 2).mean() < 1.5 * (1.0 - coder.total_share) * spread


def test_saved_coder_loads_the_same(tmp_path):
    crops = mouth_crops(50, seed=2)
    coder = ImageCoder.fit(crops, dct_block=20, pca_variance=0.8)
    coder.save(tmp_path / "coder.parquet")
    loaded = ImageCoder.load(tmp_path / "coder.parquet")
    assert np.array_equal(loaded.encode(crops), coder.encode(crops))
    assert (loaded.block_share, loaded.pca_share) == (coder.block_share, coder.pca_share)


def test_too_few_crops_is_an_error():
    with pytest.raises(ValueError, match="at least 2"):
        ImageCoder.fit(mouth_crops(1, seed=0), dct_block=0, pca_variance=0.9)
