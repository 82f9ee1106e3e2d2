"""Mouth crops (001 section 4.1): the lips' region from landmarks 48-67, levelled on the eyes.

Per frame, the square is centred on the midpoint of the mouth corners (landmarks 48 and 54),
turned so that the line through the eye centres is horizontal, and its side is
``mouth_span`` inter-ocular distances (a face-size unit that speech does not change, unlike
the mouth's own width). The corners barely move when the jaw drops, so an opening mouth
shows as its lower lip moving in a still frame; the centroid of all 20 mouth points would
follow the lower lip down and move the whole picture with it.
The geometry (centre, side, angle) is smoothed over a few frames: the landmarks jitter by
~1% of the inter-ocular distance from frame to frame, which would move the crop by as much
as a small mouth movement and is noise no speech feature can predict.

The square is rendered supersampled (scikit-image ``warp``, bilinear) and reduced by block
means, so a mouth several times the output size does not alias.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from skimage.transform import SimilarityTransform, downscale_local_mean, warp

from pipeline.faces.scores import LEFT_EYE, RIGHT_EYE
from pipeline.faces.selection import smooth_in_time

MOUTH = np.r_[48:68]
"""The 20 mouth landmarks of dlib's 68 (outer lips 48-59, inner lips 60-67)."""
MAX_SUPERSAMPLE = 4


@dataclass(frozen=True)
class MouthGeometry:
    """Per-frame crop squares, each ``(n_frames,)``; NaN where a frame has no landmarks."""

    centre_x: np.ndarray
    centre_y: np.ndarray
    side: np.ndarray
    """Side of the square in source pixels."""
    angle: np.ndarray
    """Eye-line angle in radians (image axes: x right, y down)."""


def mouth_geometry(landmarks: np.ndarray, mouth_span: float, smoothing: int) -> MouthGeometry:
    """Return the crop squares of ``(n_frames, 68, 2)`` landmarks, smoothed in time.

    Smoothing is a centred moving average over measured frames
    (:func:`~pipeline.faces.selection.smooth_in_time`); 1 leaves the geometry as measured.
    """
    right = landmarks[:, RIGHT_EYE].mean(axis=1, dtype=np.float64)
    left = landmarks[:, LEFT_EYE].mean(axis=1, dtype=np.float64)
    eye_line = left - right
    centre = landmarks[:, MOUTH].mean(axis=1, dtype=np.float64)
    values = {
        "centre_x": centre[:, 0],
        "centre_y": centre[:, 1],
        "side": mouth_span * np.hypot(eye_line[:, 0], eye_line[:, 1]),
        "angle": np.arctan2(eye_line[:, 1], eye_line[:, 0]),
    }
    if smoothing > 1:
        values = {name: smooth_in_time(v, smoothing) for name, v in values.items()}
    return MouthGeometry(**values)


def crop_mouth(frame: np.ndarray, centre: tuple[float, float], side: float, angle: float,
               size: int) -> np.ndarray:
    """Return the ``(size, size)`` uint8 crop of the levelled square in grayscale ``frame``.

    Pixels of the square outside the frame are black.
    """
    supersample = int(min(MAX_SUPERSAMPLE, max(1, math.ceil(side / size))))
    big = size * supersample
    step = side / big  # source pixels per rendered pixel
    half = (big - 1) / 2.0
    cos, sin = math.cos(angle), math.sin(angle)
    # Rendered pixel (u, v) -> source: centre + step R(angle) ((u, v) - half).
    to_source = SimilarityTransform(
        scale=step, rotation=angle,
        translation=(centre[0] - step * (cos * half - sin * half),
                     centre[1] - step * (sin * half + cos * half)),
    )
    rendered = warp(frame, to_source, output_shape=(big, big), order=1, mode="constant",
                    cval=0.0, preserve_range=True)
    reduced = downscale_local_mean(rendered, (supersample, supersample))
    return np.clip(np.round(reduced), 0, 255).astype(np.uint8)
