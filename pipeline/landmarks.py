"""Face tracks: dlib HOG detection on a few downscaled frames, 68 landmarks on every frame.

The HOG detector costs ~19 ms on a 480x360 frame, the 68-point shape predictor ~1 ms, so
the detector runs only every ``detect_every``-th frame (downscaled by ``detect_scale``) and
the box is carried between detections by the previous frame's landmarks. Until a face has
been found, each detection frame also tries larger scales up to ``max_detect_scale``, so
small faces are found (and can be reported as too small) instead of passing as no face.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path

import dlib
import numpy as np
from PIL import Image

from pipeline.config import FacesParams
from pipeline.dlib_models import model_path
from pipeline.video import iter_gray_frames

log = logging.getLogger(__name__)

N_LANDMARKS = 68
TRACK_CONFIRM_IOU = 0.4
"""A detection overlapping the tracked box this much confirms the track (boxes from
downscaled detections are coarse, so the bar is lower than for matching boxes)."""


@dataclass(frozen=True)
class FaceTrack:
    """Per-frame landmarks of the tracked (largest) face of one clip."""

    landmarks: np.ndarray
    """``(n_frames, 68, 2)`` float32 landmark x, y in source pixels; NaN where no face."""
    boxes: np.ndarray
    """``(n_frames, 4)`` int32 face box left, top, right, bottom; -1 where no face."""
    n_faces: int
    """Most faces the detector found in one frame."""
    max_face_width: int
    """Width in source pixels of the widest detected face, from its landmarks (0: none)."""
    detect_scale: float
    """Scale at which the face was found (0 when none was found)."""
    n_detections: int
    """Detector runs (each a call at one scale)."""

    @property
    def n_frames(self) -> int:
        """Return the number of decoded frames."""
        return len(self.landmarks)


@functools.lru_cache(maxsize=1)
def dlib_models() -> tuple[dlib.fhog_object_detector, dlib.shape_predictor]:
    """Return the HOG face detector and the 68-point shape predictor (loaded once per process)."""
    predictor = dlib.shape_predictor(str(model_path("landmarks_68")))
    return dlib.get_frontal_face_detector(), predictor


def _rescale(frame: np.ndarray, scale: float) -> np.ndarray:
    if scale == 1.0:
        return frame
    image = Image.fromarray(frame)
    factor = 1.0 / scale
    if scale < 1.0 and factor.is_integer():
        return np.asarray(image.reduce(int(factor)))  # box filter: fastest downscale
    size = (max(1, round(frame.shape[1] * scale)), max(1, round(frame.shape[0] * scale)))
    return np.asarray(image.resize(size, Image.BILINEAR))


def detect_faces(frame: np.ndarray, scale: float) -> list[tuple[int, int, int, int]]:
    """Return face boxes (left, top, right, bottom) in ``frame`` pixels, largest first.

    The detector sees ``frame`` resized by ``scale``; boxes are mapped back to the frame.
    """
    detector, _ = dlib_models()
    found = detector(_rescale(frame, scale), 0)
    boxes = [
        (round(r.left() / scale), round(r.top() / scale),
         round(r.right() / scale), round(r.bottom() / scale))
        for r in found
    ]
    return sorted(boxes, key=lambda b: (-(b[2] - b[0]) * (b[3] - b[1]), b))


def predict_landmarks(frame: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """Return the ``(68, 2)`` float32 landmarks of the face in ``box`` of ``frame``."""
    _, predictor = dlib_models()
    left, top, right, bottom = box
    pad = (right - left) // 4  # the predictor reads pixels a little outside its box
    x0, y0 = max(0, left - pad), max(0, top - pad)
    # dlib converts the whole image it is given: hand it only the face's neighbourhood.
    region = np.ascontiguousarray(frame[y0:bottom + pad, x0:right + pad])
    shape = predictor(region, dlib.rectangle(left - x0, top - y0, right - x0, bottom - y0))
    points = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32)
    points += (x0, y0)
    return points


# A dlib HOG box relative to the 68 landmarks it yields: centred on their centroid (0.05 RMS
# radii higher), side 2.89 RMS radii (medians over 114 full-resolution detections on GRID and
# MEAD frames). Boxes from downscaled detections are coarse; this one is not.
_BOX_SIDE_PER_RADIUS = 2.89
_BOX_RISE_PER_RADIUS = 0.05


def box_from_landmarks(landmarks: np.ndarray) -> tuple[int, int, int, int]:
    """Return the detector-style box (left, top, right, bottom) that fits ``landmarks``."""
    centroid = landmarks.mean(axis=0)
    radius = float(np.sqrt(((landmarks - centroid) ** 2).sum(axis=1).mean()))
    cx, cy = centroid[0], centroid[1] - _BOX_RISE_PER_RADIUS * radius
    half = _BOX_SIDE_PER_RADIUS * radius / 2
    return (round(cx - half), round(cy - half), round(cx + half), round(cy + half))


def _scale_ladder(params: FacesParams) -> list[float]:
    scales = [params.detect_scale]
    scale = params.detect_scale
    while scale * 2 <= params.max_detect_scale + 1e-9:
        scale *= 2
        scales.append(scale)
    return scales


class _Tracker:
    """Carries one face box from frame to frame; detects on schedule or when lost."""

    def __init__(self, params: FacesParams) -> None:
        self.params = params
        self.ladder = _scale_ladder(params)
        self.scale = 0.0  # locked once a face is found
        self.box: tuple[int, int, int, int] | None = None
        self.n_faces = 0
        self.max_width = 0
        self.n_detections = 0

    def detect_if_due(self, index: int, frame: np.ndarray) -> bool:
        """Run the detector when scheduled (or when lost); return whether the box is new."""
        if index % self.params.detect_every == 0:
            return self._detect(frame, self.ladder if not self.scale else [self.scale])
        if self.box is None and self.scale:
            return self._detect(frame, [self.scale])  # lost: re-acquire at the locked scale
        return False

    def _detect(self, frame: np.ndarray, scales: list[float]) -> bool:
        """Detect; return True when the box was replaced by a (coarse) detector box."""
        for scale in scales:
            self.n_detections += 1
            boxes = detect_faces(frame, scale)
            if boxes:
                self.scale = scale
                self.n_faces = max(self.n_faces, len(boxes))
                if self.box is not None and _overlap(self.box, boxes[0]) >= TRACK_CONFIRM_IOU:
                    return False  # the track is on the face: keep its landmark-fitted box
                self.box = boxes[0]
                return True
        self.box = None
        return False


def _overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    """Return the intersection over union of two boxes."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(0, w) * max(0, h)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def track_face(path: str | Path, params: FacesParams) -> FaceTrack:
    """Return the :class:`FaceTrack` of the largest face in the video at ``path``.

    Streams the video (only the current frame is held). Raises
    :class:`~pipeline.runtime.QuarantineError` for files :mod:`pipeline.video` cannot decode.
    """
    tracker = _Tracker(params)
    landmarks: list[np.ndarray] = []
    boxes: list[tuple[int, int, int, int]] = []
    missing = np.full((N_LANDMARKS, 2), np.nan, np.float32)
    for index, frame in enumerate(iter_gray_frames(path, params.max_frames)):
        fresh = tracker.detect_if_due(index, frame)
        if tracker.box is None:
            landmarks.append(missing)
            boxes.append((-1, -1, -1, -1))
            continue
        points = predict_landmarks(frame, tracker.box)
        if fresh:  # a detector box is coarse: refit it to the landmarks once
            points = predict_landmarks(frame, box_from_landmarks(points))
        landmarks.append(points)
        boxes.append(tracker.box)
        tracker.box = box_from_landmarks(points)
        if index % params.detect_every == 0 or fresh:
            tracker.max_width = max(tracker.max_width, tracker.box[2] - tracker.box[0])
    return FaceTrack(
        landmarks=np.stack(landmarks).astype(np.float32),
        boxes=np.array(boxes, dtype=np.int32).reshape(-1, 4),
        n_faces=tracker.n_faces,
        max_face_width=tracker.max_width,
        detect_scale=tracker.scale,
        n_detections=tracker.n_detections,
    )
