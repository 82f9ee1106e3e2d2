"""Frame selection: per-frame pose and expression scores, smoothing, and the chosen frame.

Pure functions over a clip's ``(n_frames, 68, 2)`` landmarks (NaN where not measured), used
by both passes of the faces stage (:mod:`pipeline.faces.stage`):

- :func:`frame_scores` scores every landmarked frame against the clip's neutral
  :class:`Reference` (:mod:`pipeline.faces.scores`) and smooths the curves in time;
- :func:`refine_windows` picks, from the coarse track's scores, the short windows pass 2
  measures densely (:func:`coarse_peak` estimates on which side of a coarse candidate the
  scores peak);
- :func:`select_frame` chooses the frame for ``faces.mode`` among those windows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.config import FacesParams
from pipeline.faces.scores import (
    canonical_shapes,
    contour_yaw,
    expression_scores,
    eye_openness,
    head_pose,
    least_expressive_reference,
    pose_design,
)
from pipeline.runtime import QuarantineError

LEAST_EXPRESSIVE_SHARE = 0.2
"""Share of a clip's frames (closest to the global mean shape) that form its own reference."""
SMOOTHING_FRAMES = 5
"""Per-frame scores are averaged over this many frames (centred; measured frames only)."""
REFINE_CANDIDATES = 1
"""Coarse candidates (best first, each outside the windows of the better ones) around which
pass 2 measures every frame. On the 21 emotional MEAD clips at ``landmark_every`` 5 with
+-5 windows, the chosen peak frame's expression in a dense track, as a share of the dense
track's best minus the clip median, is 0.93 on average (worst clip 0.70) with one window;
a second window costs ~9 more calls per clip for 0.97 (0.72). On 64 demo clips one window
finds every true peak and frontal frame within 2."""
REFINE_MARGIN = 2
"""Frames a window reaches from its candidate away from the estimated peak
(:func:`refine_windows`). Against +-``landmark_every`` windows at ``landmark_every`` 5: 2
fewer predictor calls where a peak is estimated (GRID, where about half the clips have an
estimate: 7.6 -> 6.5 per clip), the same hits on 64 demo clips, MEAD share 0.92 (worst
clip 0.69) instead of 0.93 (0.70). A margin of 1: MEAD 0.90 (0.51); a +-3 window centred
on the vertex: 0.87 (0.51), as the coarse vertex tells the side of the peak better than
its place."""
BLINK_RATIO = 0.6
"""Frames whose eye openness is below this share of the clip's median are blinks: skipped."""


@dataclass(frozen=True)
class Reference:
    """The neutral shape a clip's expression is measured against."""

    kind: str
    """``speaker_neutral``, ``clip_least_expressive`` or ``global_mean``."""
    model: np.ndarray
    """``(3, 68)`` complex neutral pose model (:func:`~pipeline.faces.scores.fit_pose_model`;
    for ``clip_least_expressive``: the prior)."""


def pose_scores(landmarks: np.ndarray) -> dict[str, np.ndarray]:
    """Return per-frame ``yaw``, ``pitch``, ``roll`` (degrees) and ``frontality`` (0..1).

    Yaw is :func:`~pipeline.faces.scores.contour_yaw` (left-right symmetry, no per-person
    bias); pitch and roll come from :func:`~pipeline.faces.scores.head_pose`. Frontality is
    ``cos(yaw) cos(pitch - clip median pitch)``: a generic 3-D face gives every person a
    constant pitch bias (about -20 degrees on the demo faces), so nodding is measured
    from the clip's usual head level.
    """
    scores = head_pose(landmarks)
    scores["yaw"] = contour_yaw(landmarks)
    pitch = scores["pitch"]
    level = np.nanmedian(pitch) if (~np.isnan(pitch)).any() else 0.0
    scores["frontality"] = np.cos(np.radians(scores["yaw"])) * np.cos(np.radians(pitch - level))
    return scores


def frame_scores(landmarks: np.ndarray, reference: Reference, max_yaw_deg: float,
                 window: int = SMOOTHING_FRAMES) -> dict:
    """Return per-frame ``yaw``/``pitch``/``roll``/``frontality``/``expression`` arrays.

    Expression is measured against the reference's neutral shape at each frame's own yaw.
    Also returns the resolved ``reference_model``. Frames without landmarks score NaN.
    """
    scores = pose_scores(landmarks)
    scores["eye_openness"] = eye_openness(landmarks)
    valid = ~np.isnan(scores["frontality"])
    shapes = canonical_shapes(landmarks[valid])
    design = pose_design(scores["yaw"][valid], max_yaw_deg)
    model = reference.model
    if reference.kind == "clip_least_expressive":
        pool = np.abs(scores["yaw"][valid]) <= max_yaw_deg
        pool = pool if pool.any() else np.ones_like(pool)
        model = least_expressive_reference(shapes[pool], design[pool], model,
                                           LEAST_EXPRESSIVE_SHARE)
    scores["expression"] = np.full(len(landmarks), np.nan)
    scores["expression"][valid] = expression_scores(shapes, design @ model)
    for name in ("yaw", "pitch", "roll", "frontality", "expression"):
        scores[name] = smooth_in_time(scores[name], window)
    scores["reference_model"] = model
    return scores


def smooth_in_time(values: np.ndarray, window: int) -> np.ndarray:
    """Return the centred moving average of ``values`` over ``window`` frames, ignoring NaN.

    Landmarks jitter independently from frame to frame while heads and expressions move
    smoothly, so averaging a few frames makes the per-frame scores more accurate. Frames
    without landmarks stay NaN.
    """
    known = ~np.isnan(values)
    kernel = np.ones(window)
    total = np.convolve(np.where(known, values, 0.0), kernel, mode="same")
    count = np.convolve(known.astype(float), kernel, mode="same")
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(known, total / count, np.nan)


def _normalised(values: np.ndarray) -> np.ndarray:
    low, high = np.nanmin(values), np.nanmax(values)
    return (values - low) / (high - low) if high > low else np.zeros_like(values)


def selection_scores(scores: dict, mode: str, neutral: bool, params: FacesParams) -> np.ndarray:
    """Return each frame's selection score for ``mode`` (-inf: not a candidate).

    ``scores`` is :func:`frame_scores` output. ``frontal`` (000): frontality.
    ``peak_emotion`` (003): among frames turned less than ``max_yaw_deg`` (all measured
    frames when none is), expression; for a neutral clip frontality minus expression (both
    min-max scaled). ``combined``: ``w * expression + (1 - w) * frontality`` (scaled;
    expression negated for neutral clips) over the same candidates. Blinks are never
    candidates (unless every frame is one). Raises :class:`QuarantineError` (``no_face``)
    when no frame has landmarks.
    """
    frontality, expression = scores["frontality"], scores["expression"]
    valid = ~np.isnan(frontality)
    if not valid.any():
        raise QuarantineError("no_face", "no frame with landmarks")
    openness = scores["eye_openness"]
    eyes_open = valid & (openness >= BLINK_RATIO * np.nanmedian(openness[valid]))
    valid = eyes_open if eyes_open.any() else valid
    if mode == "frontal":
        return np.where(valid, frontality, -np.inf)
    candidates = valid & (np.abs(scores["yaw"]) <= params.max_yaw_deg)
    candidates = candidates if candidates.any() else valid
    front = _normalised(np.where(candidates, frontality, np.nan))
    expr = _normalised(np.where(candidates, expression, np.nan))
    if mode == "peak_emotion":
        score = front - expr if neutral else expr
    else:
        weight, sign = params.expression_weight, -1.0 if neutral else 1.0
        score = weight * sign * expr + (1.0 - weight) * front
    return np.where(candidates, score, -np.inf)


def select_frame(scores: dict, mode: str, neutral: bool, params: FacesParams,
                 among: np.ndarray | None = None) -> int:
    """Return the index of the chosen frame: the best :func:`selection_scores` (earliest tie).

    ``among`` (a mask) restricts the choice to pass 2's dense windows, where it has a
    candidate: frames outside them are smoothed over fewer landmarked frames, and the
    maximum of noisier scores is biased upwards.
    """
    ranking = selection_scores(scores, mode, neutral, params)
    if among is not None and np.isfinite(ranking[among]).any():
        ranking = np.where(among, ranking, -np.inf)
    return int(np.argmax(ranking))


def refine_windows(scores: dict, mode: str, neutral: bool, params: FacesParams) -> np.ndarray:
    """Return the ``(n,)`` mask of the frames the final choice is made among.

    One window around each of the best :data:`REFINE_CANDIDATES` coarse candidates
    (``scores`` of the coarse track), taken best first, skipping frames inside a better
    one's window. With ``k = landmark_every``, a window spans the candidate, its coarse
    neighbour ``k`` frames away on the side of the peak :func:`coarse_peak` estimates,
    and :data:`REFINE_MARGIN` frames on the other side; +-``k`` frames where it estimates
    none (a candidate at the clip's edge, next to a blink or a turned head, or at a flat
    top). Pass 2 measures every frame in them. The frames at a window's edge average fewer
    measured frames when smoothed (3 of 5 at the outer edge); measuring the 2 frames beyond
    each edge of a +-``k`` window as well cost 4 more predictor calls per clip (+13%),
    changed no choice on 64 demo clips and moved 6 of 21 MEAD choices by 1-2 frames
    (dense-track expression share 0.94 instead of 0.93).
    """
    ranking = selection_scores(scores, mode, neutral, params)
    step = params.landmark_every
    margin = min(REFINE_MARGIN, step)
    wanted = np.zeros(len(ranking), bool)
    taken = 0
    for index in np.argsort(-ranking, kind="stable"):
        if taken == REFINE_CANDIDATES or not np.isfinite(ranking[index]):
            break
        if wanted[index]:
            continue
        peak = coarse_peak(ranking, int(index), step)
        before = margin if peak is not None and peak > index else step
        after = margin if peak is not None and peak < index else step
        wanted[max(0, index - before):index + after + 1] = True
        taken += 1
    return wanted


def coarse_peak(ranking: np.ndarray, index: int, step: int) -> float | None:
    """Return the vertex of the parabola through ``ranking`` at ``index`` and ``index +- step``.

    ``ranking`` holds selection scores of the coarse track (landmarks every ``step``-th
    frame); the vertex estimates where between the coarse frames the scores peak, within
    ``step / 2`` of ``index``. Returns None where the estimate is degenerate: a neighbour
    outside the clip or without a finite score, ``index`` not a local maximum, or the
    three scores not strictly concave (a flat top).
    """
    if step < 1 or index - step < 0 or index + step >= len(ranking):
        return None
    before, peak, after = (float(ranking[i]) for i in (index - step, index, index + step))
    if not np.isfinite((before, peak, after)).all() or peak < max(before, after):
        return None
    curvature = before - 2.0 * peak + after
    if curvature >= 0.0:
        return None
    return index + step * (before - after) / (2.0 * curvature)
