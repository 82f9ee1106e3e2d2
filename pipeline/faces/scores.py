"""Per-frame scores from 68 dlib landmarks: head pose, frontality and expression intensity.

- Pose: a scaled-orthographic (affine) camera fitted to nine rigid landmarks (nose, eye
  corners) of a generic 3-D face; the rotation gives yaw, pitch and roll, and frontality is
  the cosine of the angle between the face's normal and the camera axis (roll excluded: the
  crop removes it). All frames of a clip are solved at once (one pseudo-inverse).
- Yaw for frontality: :func:`contour_yaw`, the nose's offset to the face contour's midline
  (left-right symmetry), which needs no generic depths and so no per-person bias.
- Expression: shapes are put in a canonical frame (eye centres at (0, 0) and (1, 0)), then
  each frame is similarity-aligned to the speaker's neutral shape *at that frame's yaw* (a
  neutral pose model, :func:`fit_pose_model`: turning the head changes the 2-D shape as much
  as a mild expression does), and the score is the RMS distance of the expressive points
  (brows, eyelids, mouth) in units of the inter-ocular distance.
"""

from __future__ import annotations

import numpy as np

from pipeline.dlib_models import LEFT_EYE, RIGHT_EYE

RIGID = np.array([27, 28, 29, 30, 31, 33, 35, 36, 39, 42, 45])
"""Landmarks that expressions barely move: nose bridge and base, eye corners."""
EXPRESSIVE = np.r_[17:27, 36:48, 48:55, 60:65]
"""Landmarks that expressions move: brows, eyelids, mouth corners and upper lip. The lower
lip and chin are left out: speech moves them more than emotion does."""

# A generic face in millimetres (x right, y down in the image, z towards the camera; origin
# at the nose tip). x, y: the mean dlib landmarks of frontal faces (MEAD front-camera neutral
# and sad clips, eye centres 62 mm apart, left/right symmetrised); z: average adult
# anthropometry (nasion ~18 mm, alar base ~13 mm, eye corners 22-27 mm behind the tip).
_FACE_3D = {
    27: (0.0, -32.6, -18.0),
    28: (0.0, -21.8, -13.0),
    29: (0.0, -11.1, -6.0),
    30: (0.0, 0.0, 0.0),
    31: (-13.0, 12.8, -14.0),
    33: (0.0, 15.3, -10.0),
    35: (13.0, 12.8, -14.0),
    36: (-43.2, -27.7, -27.0),
    39: (-18.3, -26.8, -22.0),
    42: (18.3, -26.8, -22.0),
    45: (43.2, -27.7, -27.0),
}
_POSE_POINTS = np.array(sorted(_FACE_3D))
_MODEL = np.array([[*_FACE_3D[i], 1.0] for i in _POSE_POINTS])
_MODEL_PINV = np.linalg.pinv(_MODEL)  # (4, k): affine camera = pinv @ image points


def model_points_3d() -> tuple[np.ndarray, np.ndarray]:
    """Return the landmark indices and ``(k, 3)`` coordinates of the generic 3-D face."""
    return _POSE_POINTS.copy(), _MODEL[:, :3].copy()


def head_pose(landmarks: np.ndarray) -> dict[str, np.ndarray]:
    """Return per-frame ``yaw``, ``pitch``, ``roll`` (degrees) and ``frontality`` (0..1).

    ``landmarks`` is ``(n, 68, 2)``; frames with NaN landmarks get NaN scores. Positive yaw:
    the face turns towards image right; positive pitch: it tilts up; roll: in-plane angle.
    """
    points = landmarks[:, _POSE_POINTS, :].astype(np.float64)
    valid = ~np.isnan(points).any(axis=(1, 2))
    camera = np.einsum("km,nmc->nkc", _MODEL_PINV, np.where(valid[:, None, None], points, 0.0))
    projection = camera[:, :3, :].transpose(0, 2, 1)  # (n, 2, 3): scaled rotation rows
    u, _, vt = np.linalg.svd(projection, full_matrices=False)
    rows = u @ vt  # nearest orthonormal rows
    rotation = np.concatenate([rows, np.cross(rows[:, 0], rows[:, 1])[:, None]], axis=1)
    # rotation = Rz(roll) @ Ry(yaw) @ Rx(pitch): roll from the face's x axis, then yaw and
    # pitch from its forward (+z) axis with the roll undone.
    roll = np.arctan2(rotation[:, 1, 0], rotation[:, 0, 0])
    nx, ny, nz = rotation[:, 0, 2], rotation[:, 1, 2], rotation[:, 2, 2]
    nx, ny = np.cos(roll) * nx + np.sin(roll) * ny, -np.sin(roll) * nx + np.cos(roll) * ny
    scores = {
        "yaw": np.degrees(np.arctan2(nx, nz)),
        "pitch": np.degrees(np.arctan2(-ny, np.hypot(nx, nz))),
        "roll": np.degrees(roll),
        "frontality": np.clip(nz, 0.0, 1.0),
    }
    return {k: np.where(valid, v, np.nan) for k, v in scores.items()}


def eye_openness(landmarks: np.ndarray) -> np.ndarray:
    """Return the ``(n,)`` eye aspect ratio (lid gap / eye width, both eyes averaged).

    Blinks drop it to a fraction of the clip's usual value.
    """
    def ratio(eye: np.ndarray) -> np.ndarray:
        p = landmarks[:, eye, :].astype(np.float64)
        gap = np.linalg.norm(p[:, 1] - p[:, 5], axis=-1) + np.linalg.norm(p[:, 2] - p[:, 4],
                                                                          axis=-1)
        return gap / (2.0 * np.linalg.norm(p[:, 0] - p[:, 3], axis=-1))

    return (ratio(RIGHT_EYE) + ratio(LEFT_EYE)) / 2.0


def _complex(landmarks: np.ndarray) -> np.ndarray:
    return landmarks[..., 0].astype(np.float64) + 1j * landmarks[..., 1].astype(np.float64)


def canonical_shapes(landmarks: np.ndarray) -> np.ndarray:
    """Return ``(n, 68)`` complex shapes with eye centres moved to 0 and 1 (a similarity).

    Eye centres are the means of each eye's six points; the result is invariant to the
    face's position, in-plane rotation and size.
    """
    z = _complex(landmarks)
    right = z[:, RIGHT_EYE].mean(axis=1, keepdims=True)
    left = z[:, LEFT_EYE].mean(axis=1, keepdims=True)
    return (z - right) / (left - right)


def expression_scores(shapes: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Return each frame's expression intensity relative to the neutral ``reference``.

    ``shapes`` are ``(n, 68)`` canonical complex shapes, ``reference`` one ``(68,)`` shape or
    one per frame, ``(n, 68)``. Each frame is similarity-aligned to its reference on
    :data:`RIGID` (least squares), then scored by the RMS distance of :data:`EXPRESSIVE`
    points (inter-ocular units).
    """
    reference = np.broadcast_to(reference, shapes.shape)
    z, w = shapes[:, RIGID], reference[:, RIGID]
    z_mean, w_mean = z.mean(axis=1, keepdims=True), w.mean(axis=1, keepdims=True)
    zc, wc = z - z_mean, w - w_mean
    scale_rotation = (np.conj(zc) * wc).sum(axis=1, keepdims=True) / (
        np.abs(zc) ** 2
    ).sum(axis=1, keepdims=True)
    aligned = scale_rotation * (shapes - z_mean) + w_mean
    residual = aligned[:, EXPRESSIVE] - reference[:, EXPRESSIVE]
    return np.sqrt((np.abs(residual) ** 2).mean(axis=1))


def contour_yaw(landmarks: np.ndarray) -> np.ndarray:
    """Return the ``(n,)`` yaw in degrees from the nose's offset to the face contour's midline.

    Turning the head moves the nose (in front) sideways against the cheek contour (far
    behind it), so the face is frontal where the nose line sits on the midline of the
    contour's left-right pairs. Unlike :func:`head_pose`'s fit to a generic 3-D face, this
    needs no per-person depths: on the demo corpus it is unbiased to < 1 degree where the
    generic fit is off by 2-6 degrees per speaker. Positive: the face turns to image right.
    """
    with np.errstate(invalid="ignore"):  # frames without landmarks stay NaN
        z = canonical_shapes(landmarks)  # eye-levelled, inter-ocular units
    offset = (z[:, NOSE_LINE].mean(axis=1) - z[:, CONTOUR_SIDES].mean(axis=1)).real
    return np.degrees(np.arcsin(np.clip(offset / CONTOUR_LEVER, -1.0, 1.0)))


NOSE_LINE = np.array([27, 28, 29, 30, 33])
CONTOUR_SIDES = np.array([0, 1, 2, 14, 15, 16])
"""Upper jaw-contour points, left-right pairs (cheeks at the ears' height)."""
CONTOUR_LEVER = 0.9
"""Sideways nose-to-contour shift per unit sin(yaw), in inter-ocular distances (fitted on
the demo faces: 1.0 against the renderer's yaw, 0.84 against the generic 3-D fit's)."""


def pose_design(yaw_deg: np.ndarray, max_yaw_deg: float) -> np.ndarray:
    """Return the ``(n, 3)`` regressors ``[1, s, s^2]`` of a neutral pose model, s = sin(yaw).

    ``yaw_deg`` is clipped to ``+-max_yaw_deg`` so a model never extrapolates far.
    """
    s = np.sin(np.radians(np.clip(yaw_deg, -max_yaw_deg, max_yaw_deg)))
    return np.stack([np.ones_like(s), s, s * s], axis=1)


POSE_RIDGE = 0.05
"""Ridge on the pose terms (in sum of sin(yaw)^2): a speaker whose neutral frames barely
turn gets a flat model (their mean shape) instead of a noisy slope."""


def fit_pose_model(gram: np.ndarray, moments: np.ndarray) -> np.ndarray:
    """Return the ``(3, 68)`` complex neutral pose model from sufficient statistics.

    ``gram`` is the ``(3, 3)`` sum of ``X^T X`` and ``moments`` the ``(3, 68)`` sum of
    ``X^T shapes`` over neutral frames (``X`` from :func:`pose_design`). The model predicts
    the neutral canonical shape at any yaw: ``pose_design(yaw) @ model``; least squares with
    a small ridge on the pose terms.
    """
    return np.linalg.solve(gram + np.diag([0.0, POSE_RIDGE, POSE_RIDGE]), moments)


def least_expressive_reference(shapes: np.ndarray, design: np.ndarray, prior: np.ndarray,
                               share: float) -> np.ndarray:
    """Return ``prior`` (a pose model) with its base moved to the clip's calmest frames.

    The ``share`` of ``shapes`` closest to the prior (a neutral guess) at their pose are
    averaged with the prior's pose terms removed; the pose terms are kept.
    """
    pose_part = design[:, 1:] @ prior[1:]
    scores = expression_scores(shapes, prior[0] + pose_part)
    keep = max(1, round(share * len(shapes)))
    nearest = np.argsort(scores, kind="stable")[:keep]
    return np.vstack([(shapes[nearest] - pose_part[nearest]).mean(axis=0), prior[1:]])
