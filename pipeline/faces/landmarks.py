"""Face tracks: dlib HOG detection on a few downscaled frames, 68 landmarks on every k-th.

The HOG detector costs ~19 ms on a 480x360 frame and the 68-point shape predictor ~2 ms
(measured with dlib-bin here; it is most of the stage's time), so both run on a schedule
(coarse to fine):

- the detector runs every ``detect_every``-th frame (downscaled by ``detect_scale``), and
  on every landmark frame while no face is tracked (none seen yet, or a lost track: the
  landmark-fitted box has mostly left the picture, or its size jumped); until a face has
  been found it also tries larger scales up to ``max_detect_scale`` on its scheduled
  frames, so small faces are found (and can be reported as too small) instead of passing
  as no face. The detector interval also bounds how long a track stays on a spot a face
  left faster than the stale-box landmarks follow (box geometry does not reveal that);
- the 68 landmarks run every ``landmark_every``-th frame (and on a frame where a detection
  replaced the track), from the box fitted to the last landmarked frame; frames in between
  keep that box but no landmarks (NaN): nothing is interpolated. The predictor is robust to
  the stale box: at ``landmark_every`` 3-5, landmarks on GRID, MEAD and demo clips differ
  from a dense track's by 0.7-1.1% of the inter-ocular distance (mean), as much as the
  dense track's own box-dependent jitter; extrapolating the box with the face's velocity
  did not bring them closer, and no track was lost. A (downscaled) detector box is
  coarser: its landmarks differ from those of the box refitted to them by 1.0-2.3% of
  the inter-ocular distance, twice a refit's own jitter. They place the tracked box and
  count as that frame's coarse landmarks (:attr:`FaceTrack.unrefined`), and are refitted
  only where pass 2 wants the frame: refitting each in pass 1 cost one call per clip;
- :func:`fill_landmarks` later measures every frame of a few short windows (around the
  coarse choice, :func:`pipeline.faces.selection.refine_windows`), chaining the box frame to
  frame as a dense track.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dlib
import numpy as np
from PIL import Image

from pipeline.config import FacesParams
from pipeline.dlib_models import face_detector, load_model
from pipeline.faces.video import iter_gray_frames, iter_gray_frames_between, iter_timed_frames

log = logging.getLogger(__name__)

N_LANDMARKS = 68
TRACK_CONFIRM_IOU = 0.4
"""A detection overlapping the tracked box this much confirms the track (boxes from
downscaled detections are coarse, so the bar is lower than for matching boxes)."""
MIN_INSIDE_SHARE = 0.5
"""A landmark-fitted box with less of its area than this inside the frame is a lost track
(the face left the picture, or the landmarks slid off it): the detector runs again."""
MAX_SIZE_CHANGE = 1.5
"""Landmarks whose fitted box is this many times wider or narrower than the box they were
predicted from did not fit a face: a lost track. (On 83 GRID, MEAD and demo clips the
ratio stays within 0.83-1.28, coarse detector boxes included.)"""

SMALL_FACE_PROBES = 3
"""Frames :func:`find_small_face` searches (at ~0.3 s each on a 480x360 frame at 4x)."""


@dataclass(frozen=True)
class FaceTrack:
    """Per-frame landmarks of the tracked (largest) face of one clip."""

    landmarks: np.ndarray
    """``(n_frames, 68, 2)`` float32 landmark x, y in source pixels; NaN where not measured
    (no face, or a frame between landmarked ones)."""
    boxes: np.ndarray
    """``(n_frames, 4)`` int32 tracked face box left, top, right, bottom (the box the
    landmarks were, or would have been, predicted from); -1 where no face."""
    n_faces: int
    """Most faces the detector found in one frame."""
    max_face_width: int
    """Width in source pixels of the widest detected face, from its landmarks (0: none)."""
    detect_scale: float
    """Scale at which the face was found (0 when none was found)."""
    n_detections: int
    """Detector runs (each a call at one scale)."""
    n_predictions: int
    """Shape-predictor calls (one per landmarked frame)."""
    pts: np.ndarray
    """``(n_frames,)`` int64 frame timestamps (:class:`~pipeline.faces.video.TimedFrame`)."""
    seek_pos: np.ndarray
    """``(n_frames,)`` int64 byte offsets of the keyframes decoding can restart from (-1:
    not one): :func:`fill_landmarks` decodes its windows from there."""
    unrefined: np.ndarray
    """``(n_frames,)`` bool: landmarks predicted from a fresh (coarse) detector box, not yet
    refitted; :func:`fill_landmarks` refits those its windows contain."""

    @property
    def measured(self) -> np.ndarray:
        """Return the ``(n_frames,)`` mask of frames that have landmarks."""
        return ~np.isnan(self.landmarks[:, 0, 0])

    @property
    def n_frames(self) -> int:
        """Return the number of decoded frames."""
        return len(self.landmarks)


def _rescale(frame: np.ndarray, scale: float) -> np.ndarray:
    if scale == 1.0:
        return np.ascontiguousarray(frame)  # decoded frames may be strided views
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
    found = face_detector()(_rescale(frame, scale), 0)
    boxes = [
        (round(r.left() / scale), round(r.top() / scale),
         round(r.right() / scale), round(r.bottom() / scale))
        for r in found
    ]
    return sorted(boxes, key=lambda b: (-(b[2] - b[0]) * (b[3] - b[1]), b))


def predict_landmarks(frame: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """Return the ``(68, 2)`` float32 landmarks of the face in ``box`` of ``frame``."""
    predictor = load_model("landmarks_68")
    left, top, right, bottom = box
    pad = (right - left) // 4  # the predictor reads pixels a little outside its box
    x0, y0 = max(0, left - pad), max(0, top - pad)
    # dlib converts the whole image it is given: hand it only the face's neighbourhood.
    region = np.ascontiguousarray(frame[y0:bottom + pad, x0:right + pad])
    shape = predictor(region, dlib.rectangle(left - x0, top - y0, right - x0, bottom - y0))
    return points_array(shape.parts()) + np.array((x0, y0), np.float32)


_PARENTHESES = str.maketrans("", "", "()")


def points_array(points: dlib.points) -> np.ndarray:
    """Return dlib ``points`` as an ``(n, 2)`` float32 array of x, y.

    Parses their text form, ``points[(x, y), ...]``, which dlib writes in one C++ call:
    reading the points one by one makes three Python objects per point and cost ~150 us
    per face (~7% of a predictor call), the text ~45-70 us. Raises ValueError when the
    text has another form.
    """
    text = str(points)
    if not (text.startswith("points[") and text.endswith("]")):
        raise ValueError(f"unexpected text form of dlib points: {text[:40]!r}")
    values = np.fromstring(text[7:-1].translate(_PARENTHESES), dtype=np.float32, sep=",")
    return values.reshape(-1, 2)


# A dlib HOG box relative to the 68 landmarks it yields: centred on their centroid (0.05 RMS
# radii higher), side 2.89 RMS radii (medians over 114 full-resolution detections on GRID and
# MEAD frames). Boxes from downscaled detections are coarse; this one is not.
_BOX_SIDE_PER_RADIUS = 2.89
_BOX_RISE_PER_RADIUS = 0.05


def box_from_landmarks(landmarks: np.ndarray,
                       shift: tuple[float, float] = (0.0, 0.0)) -> tuple[int, int, int, int]:
    """Return the detector-style box (left, top, right, bottom) that fits ``landmarks``.

    ``shift`` moves the box (pixels): where the face will be on a later frame.
    """
    centroid = landmarks.mean(axis=0, dtype=np.float64)
    radius = float(np.sqrt(((landmarks - centroid) ** 2).sum(axis=1).mean()))
    cx = centroid[0] + shift[0]
    cy = centroid[1] - _BOX_RISE_PER_RADIUS * radius + shift[1]
    half = _BOX_SIDE_PER_RADIUS * radius / 2
    return (round(cx - half), round(cy - half), round(cx + half), round(cy + half))


def _scale_ladder(params: FacesParams) -> list[float]:
    scales = [params.detect_scale]
    scale = params.detect_scale
    while scale * 2 <= params.max_detect_scale + 1e-9:
        scale *= 2
        scales.append(scale)
    return scales


Box = tuple[int, int, int, int]


class _Tracker:
    """Carries one face box from frame to frame; detects on schedule or when lost."""

    def __init__(self, params: FacesParams) -> None:
        self.params = params
        self.ladder = _scale_ladder(params)
        self.scale = 0.0  # locked once a face is found
        self.box: Box | None = None
        self.n_faces = 0
        self.max_width = 0
        self.n_detections = 0
        self.confirmed = False  # the detector saw the face since the last landmarks

    def fit(self, points: np.ndarray, frame_shape: tuple[int, ...]) -> None:
        """Carry the box fitted to ``points`` (the last landmarks) to the next frames.

        A box that has mostly left the frame, or whose size jumped from the box the
        landmarks were predicted from, is lost: the next landmark frame re-detects.
        """
        box = box_from_landmarks(points)
        jump = (self.box is not None
                and not 1 / MAX_SIZE_CHANGE <= _width(box) / _width(self.box) <= MAX_SIZE_CHANGE)
        if jump or _inside_share(box, frame_shape) < MIN_INSIDE_SHARE:
            self.box, self.confirmed = None, False
            return
        self.box = box
        if self.confirmed:  # face widths count only where the detector saw the face
            self.max_width = max(self.max_width, self.box[2] - self.box[0])
            self.confirmed = False

    def detect_if_due(self, index: int, frame: np.ndarray) -> bool:
        """Run the detector when scheduled (or when lost); return whether the box is new.

        Without a box (no face yet, or a lost track) the detector also runs on every
        landmark frame, at the locked scale (the first one before any face was found).
        """
        if index % self.params.detect_every == 0:
            return self._detect(frame, self.ladder if not self.scale else [self.scale])
        if self.box is None and index % self.params.landmark_every == 0:
            return self._detect(frame, [self.scale or self.ladder[0]])
        return False

    def _detect(self, frame: np.ndarray, scales: list[float]) -> bool:
        """Detect; return True when the box was replaced by a (coarse) detector box."""
        for scale in scales:
            self.n_detections += 1
            boxes = detect_faces(frame, scale)
            if boxes:
                self.scale = scale
                self.n_faces = max(self.n_faces, len(boxes))
                self.confirmed = True
                if self.box is not None and _overlap(self.box, boxes[0]) >= TRACK_CONFIRM_IOU:
                    return False  # the track is on the face: keep its landmark-fitted box
                self.box = boxes[0]
                return True
        self.box, self.confirmed = None, False
        return False


def _width(box: Box) -> int:
    return max(1, box[2] - box[0])


def _area(box: Box) -> int:
    return (box[2] - box[0]) * (box[3] - box[1])


def _intersection(a: Box, b: Box) -> int:
    """Return the area two boxes share."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    return max(0, w) * max(0, h)


def _inside_share(box: Box, frame_shape: tuple[int, ...]) -> float:
    """Return the share of ``box``'s area inside a frame of ``frame_shape`` (rows, columns)."""
    area = _area(box)
    frame = (0, 0, frame_shape[1], frame_shape[0])
    return _intersection(box, frame) / area if area > 0 else 0.0


def _overlap(a: Box, b: Box) -> float:
    """Return the intersection over union of two boxes."""
    inter = _intersection(a, b)
    union = _area(a) + _area(b) - inter
    return inter / union if union > 0 else 0.0


def track_face(path: str | Path, params: FacesParams) -> FaceTrack:
    """Return the :class:`FaceTrack` of the largest face in the video at ``path``.

    Landmarks are predicted on every ``params.landmark_every``-th frame (and where a fresh
    detection replaced the box: those are ``unrefined``); the other frames keep their
    tracked box and NaN landmarks.
    Streams the video (only the current frame is held). Raises
    :class:`~pipeline.runtime.QuarantineError` for files :mod:`pipeline.faces.video` cannot decode.
    """
    tracker = _Tracker(params)
    landmarks: list[np.ndarray] = []
    boxes: list[Box] = []
    timeline: list[tuple[int, int]] = []
    missing = np.full((N_LANDMARKS, 2), np.nan, np.float32)
    unrefined: list[int] = []
    n_predictions = 0
    for index, (frame, pts, seek_pos) in enumerate(iter_timed_frames(path, params.max_frames)):
        timeline.append((pts, seek_pos))
        fresh = tracker.detect_if_due(index, frame)
        if tracker.box is None:
            landmarks.append(missing)
            boxes.append((-1, -1, -1, -1))
            continue
        boxes.append(tracker.box)
        if index % params.landmark_every and not fresh:
            landmarks.append(missing)
            continue
        points = predict_landmarks(frame, tracker.box)
        n_predictions += 1
        if fresh:  # from a coarse detector box: fill_landmarks refits it where wanted
            unrefined.append(index)
        landmarks.append(points)
        tracker.fit(points, frame.shape)
    return FaceTrack(
        landmarks=np.stack(landmarks).astype(np.float32),
        boxes=np.array(boxes, dtype=np.int32).reshape(-1, 4),
        n_faces=tracker.n_faces,
        max_face_width=tracker.max_width,
        detect_scale=tracker.scale,
        n_detections=tracker.n_detections,
        n_predictions=n_predictions,
        pts=np.array([t[0] for t in timeline], dtype=np.int64),
        seek_pos=np.array([t[1] for t in timeline], dtype=np.int64),
        unrefined=np.isin(np.arange(len(landmarks)), unrefined),
    )


def find_small_face(path: str | Path, n_frames: int, params: FacesParams) -> int:
    """Return the width (source pixels) of the widest face a finer detector scale finds.

    For a clip where :func:`track_face` found no face: the detector runs once more at twice
    ``max_detect_scale`` on :data:`SMALL_FACE_PROBES` frames spread over the clip (0: none
    there either). It tells a face too small for the stage's scales (a 24 px face, 48 px at
    2x, is below the HOG detector's ~80 px window) from no face at all. The width is
    measured as the tracker's: the box fitted to the face's landmarks.
    """
    if n_frames == 0:
        return 0
    scale = 2.0 * params.max_detect_scale
    probes = set(np.linspace(0, n_frames - 1, min(SMALL_FACE_PROBES, n_frames)).round()
                 .astype(int).tolist())
    widest = 0
    for index, frame in enumerate(iter_gray_frames(path, max(probes) + 1)):
        boxes = detect_faces(frame, scale) if index in probes else []
        if boxes:
            left, _, right, _ = box_from_landmarks(predict_landmarks(frame, boxes[0]))
            widest = max(widest, right - left)
    return widest


def fill_landmarks(path: str | Path, landmarks: np.ndarray, boxes: np.ndarray,
                   wanted: np.ndarray, seek: tuple[np.ndarray, np.ndarray] | None = None,
                   unrefined: np.ndarray | None = None,
                   ) -> tuple[np.ndarray, dict[int, np.ndarray], int]:
    """Return ``landmarks`` measured on every ``wanted`` frame, those frames, and the calls.

    ``landmarks``, ``boxes`` and ``unrefined`` (optional) are a :class:`FaceTrack`'s;
    ``wanted`` a ``(n_frames,)`` mask. Decodes up to the last wanted frame: from the start,
    or with ``seek`` (the track's ``pts`` and ``seek_pos``) from the last keyframe before
    the first wanted frame (:func:`~pipeline.faces.video.iter_gray_frames_between`). A wanted
    frame without landmarks is predicted from the box fitted to the previous frame's
    landmarks when that frame has them (a dense track, as with ``landmark_every`` 1), else
    from its tracked box; a wanted frame with ``unrefined`` landmarks from the box fitted
    to them (the refit a fresh detection needs); frames without a tracked face stay NaN.
    Returns a copy of ``landmarks``, the wanted frames' images (bounded by the windows'
    size, not the clip's length) and the predictor calls.
    """
    filled = landmarks.copy()
    frames: dict[int, np.ndarray] = {}
    calls = 0
    for index, frame in _frames_spanning(path, wanted, seek):
        if not wanted[index]:
            continue
        frames[index] = frame
        if unrefined is not None and unrefined[index]:
            filled[index] = predict_landmarks(frame, box_from_landmarks(filled[index]))
            calls += 1
            continue
        if not np.isnan(filled[index, 0, 0]) or boxes[index, 2] <= boxes[index, 0]:
            continue  # measured already, or no face tracked
        previous = filled[index - 1] if index > 0 else filled[index]
        box = (box_from_landmarks(previous) if not np.isnan(previous[0, 0])
               else tuple(int(v) for v in boxes[index]))
        filled[index] = predict_landmarks(frame, box)
        calls += 1
    return filled, frames, calls


def _frames_spanning(path: str | Path, wanted: np.ndarray, seek: tuple[np.ndarray, np.ndarray]
                     | None) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(index, frame)`` over the span of the ``wanted`` frames (from 0 without seek)."""
    indices = np.flatnonzero(wanted)
    if indices.size == 0:
        return
    if seek is None:
        yield from enumerate(iter_gray_frames(path, int(indices[-1]) + 1))
    else:
        yield from iter_gray_frames_between(path, int(indices[0]), int(indices[-1]), *seek)
