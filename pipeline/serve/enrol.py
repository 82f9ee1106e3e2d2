"""A person's face crop from a photo or a video, through the faces stage's own code.

The faces stage's two passes run on the one file as on a catalogue clip
(:func:`~pipeline.faces.stage.track_clip`, the stage's reference,
:func:`~pipeline.faces.stage.select_clip`), the clip taken as neutral so that the most
frontal, least expressive frame is chosen. PyAV opens a photo as a one-frame video; clips
shorter than the stage's smoothing window (a photo) take their most frontal landmarked
frame, refitted (:func:`~pipeline.faces.landmarks.fill_landmarks`) and cropped
(:func:`~pipeline.faces.crop.crop_face`) as the stage does.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from pipeline.config import FacesParams
from pipeline.faces.crop import crop_face
from pipeline.faces.landmarks import FaceTrack, fill_landmarks
from pipeline.faces.selection import SMOOTHING_FRAMES, pose_scores
from pipeline.faces.stage import NEUTRAL, ClipJob, _references, select_clip, track_clip

ENROLMENT = "enrolment"


def enrolment_face(path: str | Path, params: FacesParams, workdir: str | Path) -> np.ndarray:
    """Return the ``(crop_size, crop_size)`` uint8 face crop of a photo or a video.

    ``workdir`` holds the stage's spilled track (an empty scratch directory). Raises
    :class:`~pipeline.runtime.QuarantineError`: ``no_face``, ``face_too_small``,
    ``multiple_faces`` (when ``faces.multiple_faces`` says so), ``decode_error``,
    ``no_video`` (an audio file), ``no_frames``.
    """
    upright_photo(path)
    job = ClipJob(ENROLMENT, ENROLMENT, NEUTRAL, str(path), str(Path(workdir) / "track.pickle"))
    summary = track_clip(job, params)
    if summary.n_frames < max(SMOOTHING_FRAMES, 2 * params.landmark_every + 1):
        return _short_clip_face(job, params)
    reference = _references([job], {ENROLMENT: summary}, params)[ENROLMENT]
    row = select_clip(job, reference, summary.n_faces, params).row
    return np.frombuffer(row["face"], np.uint8).reshape(row["size"], row["size"])


def _short_clip_face(job: ClipJob, params: FacesParams) -> np.ndarray:
    """Return the crop of the most frontal landmarked frame of a clip of a few frames."""
    with open(job.track_file, "rb") as spill:
        track: FaceTrack = pickle.load(spill)  # written by track_clip just before
    index = int(np.nanargmax(pose_scores(track.landmarks)["frontality"]))
    wanted = np.arange(track.n_frames) == index
    landmarks, frames, _ = fill_landmarks(job.video, track.landmarks, track.boxes, wanted,
                                          unrefined=track.unrefined)
    return crop_face(frames[index], landmarks[index], params.crop_size, params.margin)


def upright_photo(path: str | Path) -> None:
    """Rotate a photo in place as its EXIF orientation says (phones store it sideways).

    FFmpeg decodes the pixels as stored; files that are not photos, or are upright, are
    left alone.
    """
    try:
        with Image.open(path) as image:
            orientation = image.getexif().get(ImageOps.ExifTags.Base.Orientation, 1)
            if orientation == 1:
                return
            upright = ImageOps.exif_transpose(image)
    except (UnidentifiedImageError, OSError):
        return
    upright.save(path, format="PNG")
