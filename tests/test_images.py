import numpy as np
import pytest
from PIL import Image

from pipeline.images import image_grid, save_png, to_uint8


def test_to_uint8_scales_and_clips_floats():
    out = to_uint8(np.array([[0.0, 0.5, 1.0, 2.0]], np.float32))
    assert out.tolist() == [[0, 128, 255, 255]]
    assert to_uint8(np.zeros((1, 3, 3), np.uint8)).shape == (3, 3)


def test_grid_places_tiles_row_major(tmp_path):
    tiles = [np.full((4, 4), v, np.uint8) for v in (0, 50, 100)]
    grid = image_grid(tiles, ncols=2, pad=1)
    assert grid.size == (2 * 5 + 1, 2 * 5 + 1)
    pixels = np.asarray(grid)
    assert pixels[1, 1] == 0 and pixels[1, 6] == 50 and pixels[6, 1] == 100
    assert pixels[6, 6] == 255  # empty slot stays white
    path = save_png(grid, tmp_path / "g.png")
    assert np.array_equal(np.asarray(Image.open(path)), pixels)


def test_grid_rejects_mixed_shapes():
    with pytest.raises(ValueError, match="same shape"):
        image_grid([np.zeros((4, 4)), np.zeros((5, 5))], ncols=2)
