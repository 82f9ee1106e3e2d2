"""Face crops: eyes levelled, masked to the face contour, grayscale, resized, normalised.

003 section 4.1.1 crops "so that only the face area is within the contour". The contour is
the convex hull of the jaw line and the brows (landmarks 0-26). The crop is a square around
that hull's box (after levelling the eyes) plus ``margin``, rendered supersampled and
reduced with a box filter, so no aliasing from faces several times the output size.
Pixels outside the hull are 0; inside, a contrast stretch maps the face's 1st..99th
percentile to 0..255, so crops from dark and bright videos share one range.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw
from scipy.spatial import ConvexHull

from pipeline.dlib_models import BROWS, JAW, LEFT_EYE, RIGHT_EYE

MAX_SUPERSAMPLE = 4
STRETCH_PERCENTILES = (1.0, 99.0)


def _levelled_box(landmarks: np.ndarray, margin: float) -> tuple[np.ndarray, float, float]:
    """Return (centre in source pixels, side, eye angle) of the levelled crop square."""
    right, left = landmarks[RIGHT_EYE].mean(axis=0), landmarks[LEFT_EYE].mean(axis=0)
    angle = math.atan2(left[1] - right[1], left[0] - right[0])
    cos, sin = math.cos(angle), math.sin(angle)
    contour = landmarks[np.r_[JAW, BROWS]].astype(np.float64)
    levelled = contour @ np.array([[cos, -sin], [sin, cos]])  # rotate by -angle
    low, high = levelled.min(axis=0), levelled.max(axis=0)
    side = float((high - low).max()) * (1.0 + 2.0 * margin)
    centre_levelled = (low + high) / 2
    centre = np.array([[cos, -sin], [sin, cos]]) @ centre_levelled  # rotate back by +angle
    return centre, side, angle


def crop_face(frame: np.ndarray, landmarks: np.ndarray, size: int, margin: float) -> np.ndarray:
    """Return the ``(size, size)`` uint8 face crop of ``frame`` described by ``landmarks``.

    ``frame`` is a 2-D uint8 grayscale image, ``landmarks`` its ``(68, 2)`` dlib points.
    """
    centre, side, angle = _levelled_box(landmarks, margin)
    supersample = int(min(MAX_SUPERSAMPLE, max(1, math.ceil(side / size))))
    big = size * supersample
    step = side / big  # source pixels per rendered pixel
    cos, sin = math.cos(angle), math.sin(angle)
    # Rendered pixel (u, v) -> source: centre + R(angle) @ step * (u - big/2, v - big/2).
    a, b, d, e = step * cos, -step * sin, step * sin, step * cos
    c0 = centre[0] - (a + b) * big / 2
    f0 = centre[1] - (d + e) * big / 2
    warped = Image.fromarray(frame).transform(
        (big, big), Image.AFFINE, (a, b, c0, d, e, f0), resample=Image.BILINEAR, fillcolor=0
    )
    mask = Image.new("L", (big, big), 0)
    ImageDraw.Draw(mask).polygon(_hull_in_crop(landmarks, (a, b, c0, d, e, f0)), fill=255)
    face = np.asarray(warped.reduce(supersample), dtype=np.float64)
    weight = np.asarray(mask.reduce(supersample), dtype=np.float64) / 255.0
    return _stretch(face, weight)


def _hull_in_crop(landmarks: np.ndarray, affine: tuple[float, ...]) -> list[tuple[float, float]]:
    a, b, c0, d, e, f0 = affine
    forward = np.array([[a, b], [d, e]])
    contour = landmarks[np.r_[JAW, BROWS]].astype(np.float64)
    rendered = np.linalg.solve(forward, (contour - [c0, f0]).T).T
    hull = ConvexHull(rendered)
    return [tuple(p) for p in rendered[hull.vertices]]


def _stretch(face: np.ndarray, weight: np.ndarray) -> np.ndarray:
    inside = face[weight > 0.5]
    if inside.size == 0:
        return np.zeros(face.shape, np.uint8)
    low, high = np.percentile(inside, STRETCH_PERCENTILES)
    scaled = np.clip((face - low) / max(high - low, 1.0), 0.0, 1.0) * 255.0 * weight
    return np.round(scaled).astype(np.uint8)
