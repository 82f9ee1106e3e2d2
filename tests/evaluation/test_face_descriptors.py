"""dlib descriptors on real 64x64 masked grayscale crops built from GRID frames."""

import csv

import av
import dlib
import numpy as np
import pytest
from PIL import Image, ImageDraw

from pipeline.dlib_models import model_path
from pipeline.evaluation.face_descriptors import face_descriptors
from tests.conftest import shared_dataset

FRAMES = (5, 70)  # two frames ~2 s apart in each 3 s clip


def _contour_crop(gray, detector, predictor, size=64):
    """Crop like the faces stage: square box around the 68-landmark face contour, masked."""
    boxes = detector(gray, 1)
    if not boxes:
        return None
    shape = predictor(gray, max(boxes, key=lambda r: r.area()))
    points = np.array([(p.x, p.y) for p in shape.parts()], dtype=float)
    contour = np.concatenate([points[0:17], points[26:16:-1]])  # jaw, then brows back
    (x0, y0), (x1, y1) = contour.min(0), contour.max(0)
    half = max(x1 - x0, y1 - y0) / 2
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    box = tuple(round(v) for v in (cx - half, cy - half, cx + half, cy + half))
    mask = Image.new("L", gray.shape[::-1], 0)
    ImageDraw.Draw(mask).polygon([tuple(p) for p in contour], fill=255)
    face = np.asarray(Image.fromarray(gray).crop(box).resize((size, size), Image.BILINEAR))
    keep = np.asarray(mask.crop(box).resize((size, size), Image.BILINEAR)) > 127
    return (face * keep).astype(np.uint8)


@pytest.fixture(scope="module")
def grid_crops():
    grid = shared_dataset("grid-samples")
    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(model_path("landmarks_68")))
    crops, speakers = [], []
    with open(grid / "labels.csv", newline="") as f:
        for row in csv.DictReader(f):
            with av.open(str(grid / row["file"])) as container:
                for i, frame in enumerate(container.decode(video=0)):
                    if i in FRAMES:
                        gray = np.ascontiguousarray(frame.to_ndarray(format="gray"))  # padded rows
                        crop = _contour_crop(gray, detector, predictor)
                        if crop is not None:
                            crops.append(crop)
                            speakers.append(row["speaker"])
                    if i >= max(FRAMES):
                        break
    assert len(crops) >= 16, "dlib should find faces in most GRID frames"
    return np.stack(crops), np.array(speakers)


@pytest.fixture(scope="module")
def descriptors(grid_crops):
    return face_descriptors(grid_crops[0])


def _pair_auc(vectors, speakers):
    distance = np.linalg.norm(vectors[:, None] - vectors[None], axis=-1)
    upper = np.triu(np.ones_like(distance, dtype=bool), k=1)
    same = speakers[:, None] == speakers[None]
    same_d, diff_d = distance[upper & same], distance[upper & ~same]
    return float(np.mean(same_d[:, None] < diff_d[None])), distance


def test_same_speaker_crops_are_closer_than_different_speakers(grid_crops, descriptors):
    crops, speakers = grid_crops
    assert descriptors.descriptors.shape == (len(crops), 128)
    assert descriptors.landmarks_ok.all(), descriptors.landmark_error
    auc, distance = _pair_auc(descriptors.descriptors, speakers)
    assert auc >= 0.95
    # Speaker s2 has two different GRID clips: identity, not just a repeated clip.
    s2 = np.flatnonzero(speakers == "grid_s2")
    other = np.flatnonzero(speakers != "grid_s2")
    across = [distance[i, j] for i in s2 for j in s2 if i < j]
    assert max(across) < np.median(distance[np.ix_(s2, other)])
    np.fill_diagonal(distance, np.inf)
    assert np.mean(speakers[distance.argmin(axis=1)] == speakers) >= 0.9


def test_descriptors_beat_raw_pixels_at_identity(grid_crops, descriptors):
    crops, speakers = grid_crops
    pixel_auc, _ = _pair_auc(crops.reshape(len(crops), -1) / 255.0, speakers)
    descriptor_auc, _ = _pair_auc(descriptors.descriptors, speakers)
    assert descriptor_auc > pixel_auc


def test_upside_down_crops_are_flagged_and_still_get_a_descriptor(grid_crops):
    crops = grid_crops[0][:4]
    result = face_descriptors(crops[:, ::-1, :])
    assert not result.landmarks_ok.any()
    assert np.all(result.landmark_error > 0.12)
    assert np.isfinite(result.descriptors).all()


def test_float_crops_in_unit_range_give_the_uint8_descriptors(grid_crops, descriptors):
    crops = grid_crops[0][:2]
    result = face_descriptors(crops.astype(np.float64) / 255.0)
    np.testing.assert_allclose(result.descriptors, descriptors.descriptors[:2], atol=1e-6)


def test_rejects_a_single_image():
    with pytest.raises(ValueError, match="N, S, S"):
        face_descriptors(np.zeros((64, 64), dtype=np.uint8))
