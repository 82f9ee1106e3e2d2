"""Aligned crops of equally spaced frames of a clip, beside the chosen one (002 section 5.1).

002 trains its face model on images sampled at equal intervals through each sequence, so
that the in-between expressions are seen, and evaluates on the frames where the labelled
expression shows (here: the frame the faces stage chooses). With ``faces.sequence_frames``
K > 1 the stage also crops K equally spaced frames of every clip it keeps, with the same
landmark alignment, contour mask and size as the chosen frame
(:func:`~pipeline.faces.crop.crop_face`); frames where no face is tracked are skipped and
counted. With K = 1 nothing is added: the chosen frame is the clip's only crop.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from pipeline.config import FacesParams
from pipeline.faces.crop import crop_face
from pipeline.faces.landmarks import fill_landmarks
from pipeline.schemas import SEQUENCE, conform


def sequence_positions(n_frames: int, k: int) -> np.ndarray:
    """Return ``k`` equally spaced frame indices from the first to the last (fewer if short)."""
    return np.unique(np.linspace(0, n_frames - 1, k).round().astype(np.int64))


def sequence_crops(
    clip_id: str,
    video: str | Path,
    landmarks: np.ndarray,
    boxes: np.ndarray,
    seek: tuple[np.ndarray, np.ndarray],
    unrefined: np.ndarray,
    params: FacesParams,
) -> tuple[pa.Table, int, int]:
    """Return a clip's :data:`~pipeline.schemas.SEQUENCE` rows, predictor calls, frames missed.

    ``landmarks`` ``(n_frames, 68, 2)`` are the clip's measured so far (NaN elsewhere),
    ``boxes`` and ``seek`` its face track's, ``unrefined`` the frames whose landmarks still
    need a refit. The equally spaced frames are decoded (one pass over their span) and
    landmarked where they are not yet.
    """
    wanted = np.zeros(len(landmarks), dtype=bool)
    wanted[sequence_positions(len(landmarks), params.sequence_frames)] = True
    filled, frames, calls = fill_landmarks(video, landmarks, boxes, wanted, seek, unrefined)
    rows = []
    for index in np.flatnonzero(wanted):
        points = filled[index]
        if index not in frames or np.isnan(points[0, 0]):
            continue  # no face tracked on this frame
        face = crop_face(frames[index], points, params.crop_size, params.margin)
        rows.append({"clip_id": clip_id, "frame_index": int(index), "face": face.tobytes(),
                     "size": params.crop_size})
    table = pa.Table.from_pylist(rows, schema=SEQUENCE)
    return conform(table, SEQUENCE), calls, int(wanted.sum()) - len(rows)
