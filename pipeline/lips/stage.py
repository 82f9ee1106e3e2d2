"""The ``lips`` stage: per video frame, a mouth crop and a mel-cepstrum (001 section 4.1).

For every clip of the chosen speaker, in parallel over clips:

1. the face is tracked with the ``faces`` stage's own code
   (:func:`~pipeline.faces.landmarks.track_face`, its detector settings, landmarks on every
   frame), and frames whose landmarks came from a coarse detector box are refitted
   (:func:`~pipeline.faces.landmarks.fill_landmarks`);
2. the clip is decoded again and each landmarked frame's mouth is cropped
   (:mod:`pipeline.lips.crop`);
3. the speech is decoded at ``sample_rate`` (:func:`~pipeline.audio.prepare.decode_audio`)
   and cut into one mel-cepstrum per video frame (:mod:`pipeline.lips.mcep`).

Then the clips are split into train / test utterances (seeded), the DCT + PCA image coder
is fitted on the training crops only (:mod:`pipeline.lips.features`), and every frame is
written with its features. Frames without landmarks get no row (counted in the report);
clips are quarantined for no face, a face too small, too few landmarked frames, or audio
and video lengths that disagree.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.audio.prepare import decode_audio
from pipeline.audio.stage import media_path
from pipeline.config import FacesParams, LipsParams, to_dict
from pipeline.faces.landmarks import FaceTrack, fill_landmarks, track_face
from pipeline.faces.video import iter_gray_frames, probe
from pipeline.images import image_grid, save_png
from pipeline.lips.crop import crop_mouth, mouth_geometry
from pipeline.lips.features import ImageCoder
from pipeline.lips.mcep import dither, frame_mel_cepstra
from pipeline.runtime import (
    EmptyOutputError,
    QuarantineError,
    StageReport,
    atomic_directory,
    atomic_write_json,
    default_workers,
    map_items,
)
from pipeline.schemas import LIPS
from pipeline.shards import ShardWriter

log = logging.getLogger(__name__)

ROW_GROUP_ROWS = 1024
IMAGE_CODER = "image_coder.parquet"
META_JSON = "meta.json"
MOUTH_SHEET = "mouths.png"
SHEET_COLUMNS = 12


@dataclass(frozen=True)
class LipsJob:
    """One clip to process."""

    clip_id: str
    speaker_id: str
    video: str
    """Absolute path of the video."""
    audio: str
    """Absolute path of the speech: the catalogue's separate audio file, else the video."""


@dataclass(frozen=True)
class ClipFrames:
    """What a worker returns for one clip: its landmarked frames' crops and mel-cepstra."""

    clip_id: str
    speaker_id: str
    frame_index: np.ndarray
    """``(n,)`` int32 indices of the frames that have landmarks."""
    time_s: np.ndarray
    """``(n,)`` float32 middles of those frames."""
    crops: np.ndarray
    """``(n, S, S)`` uint8 mouth crops."""
    mcep: np.ndarray
    """``(n, M + 1)`` float32 mel-cepstra."""
    n_frames: int
    """Frames decoded from the video (with or without landmarks)."""
    fps: float
    audio_s: float
    """Duration of the decoded speech."""
    counts: dict[str, int]
    """Detector runs and landmark calls."""


def detection_params(faces: FacesParams) -> FacesParams:
    """Return the ``faces`` settings the lips tracker runs with: landmarks on every frame."""
    return dataclasses.replace(faces, landmark_every=1)


def _checked_track(job: LipsJob, faces: FacesParams) -> tuple[FaceTrack, np.ndarray, int]:
    """Return the clip's track, its landmarks (detector-box frames refitted) and the refits."""
    track = track_face(job.video, faces)
    if track.max_face_width == 0:
        raise QuarantineError("no_face", f"no face in {track.n_frames} frames", job.video)
    if track.max_face_width < faces.min_face_px:
        raise QuarantineError("face_too_small", f"widest face {track.max_face_width} px < "
                              f"faces.min_face_px={faces.min_face_px}", job.video)
    if track.n_faces > 1 and faces.multiple_faces == "quarantine":
        raise QuarantineError("multiple_faces", f"{track.n_faces} faces in a frame", job.video)
    if not track.unrefined.any():
        return track, track.landmarks, 0
    landmarks, _, refits = fill_landmarks(job.video, track.landmarks, track.boxes,
                                          track.unrefined, (track.pts, track.seek_pos),
                                          track.unrefined)
    return track, landmarks, refits


def _speech(job: LipsJob, n_frames: int, fps: float, params: LipsParams,
            faces: FacesParams) -> tuple[np.ndarray, float]:
    """Return the clip's speech at ``params.sample_rate`` and its duration; check its length."""
    video_s = n_frames / fps
    limit_s = video_s + params.max_length_mismatch_s + params.window_s
    wave, audio_s, truncated = decode_audio(job.audio, params.sample_rate, limit_s)
    capped = n_frames >= faces.max_frames  # the video was cut at max_frames: so is the audio
    if not (truncated and capped) and abs(audio_s - video_s) > params.max_length_mismatch_s:
        raise QuarantineError(
            "av_length_mismatch", f"audio {audio_s:.3f} s vs video {video_s:.3f} s ({n_frames} "
            f"frames at {fps:g} fps): more than lips.max_length_mismatch_s="
            f"{params.max_length_mismatch_s}", job.audio)
    return wave, audio_s


def extract_clip(job: LipsJob, params: LipsParams, faces: FacesParams) -> ClipFrames:
    """Return the :class:`ClipFrames` of ``job``.

    Raises :class:`QuarantineError` for ``no_face``, ``face_too_small``, ``multiple_faces``,
    ``low_landmark_yield``, ``no_frame_rate``, ``av_length_mismatch`` and the decoding
    reasons of the video and audio readers.
    """
    fps = probe(job.video).fps
    if fps <= 0:
        raise QuarantineError("no_frame_rate", "the video stream has no frame rate", job.video)
    track, landmarks, refits = _checked_track(job, faces)
    measured = ~np.isnan(landmarks[:, 0, 0])
    share = float(measured.mean())
    if share < params.min_landmark_yield:
        raise QuarantineError("low_landmark_yield", f"landmarks on {measured.sum()} of "
                              f"{track.n_frames} frames ({share:.2f} < lips.min_landmark_yield="
                              f"{params.min_landmark_yield})", job.video)
    wave, audio_s = _speech(job, track.n_frames, fps, params, faces)
    wave = dither(wave, params.dither_db, job.clip_id)
    mcep = frame_mel_cepstra(wave, params.sample_rate, fps, track.n_frames, params.mcep_order,
                             params.mcep_alpha, params.window_s, params.floor_db)
    geometry = mouth_geometry(landmarks, params.mouth_span, params.geometry_smoothing)
    crops = [crop_mouth(frame, (geometry.centre_x[i], geometry.centre_y[i]),
                        geometry.side[i], geometry.angle[i], params.crop_px)
             for i, frame in enumerate(iter_gray_frames(job.video, track.n_frames))
             if measured[i]]
    index = np.flatnonzero(measured).astype(np.int32)
    if len(crops) != len(index):
        raise QuarantineError("decode_error", f"a second decode gave {len(crops)} of the "
                              f"{len(index)} landmarked frames", job.video)
    return ClipFrames(
        clip_id=job.clip_id, speaker_id=job.speaker_id, frame_index=index,
        time_s=((index + 0.5) / fps).astype(np.float32),
        crops=np.stack(crops), mcep=mcep[measured], n_frames=track.n_frames, fps=fps,
        audio_s=audio_s,
        counts={"detections": track.n_detections,
                "landmark_calls": track.n_predictions + refits},
    )


def chosen_speakers(rows: list[dict[str, Any]], speaker: str) -> set[str]:
    """Return the speaker ids whose clips the stage reads, for ``lips.speaker``.

    Raises ``ValueError`` when a named speaker has no clip with a video.
    """
    with_video = Counter(r["speaker_id"] for r in rows if r["video_path"] is not None)
    if speaker == "all":
        return set(with_video)
    if speaker == "auto":
        if not with_video:
            raise ValueError("no clip of the catalogue has a video")
        most = max(with_video.values())
        return {min(s for s, n in with_video.items() if n == most)}
    if speaker not in with_video:
        raise ValueError(f"lips.speaker {speaker!r} has no clip with a video in the catalogue "
                         f"(speakers: {sorted(with_video)[:20]} ...)")
    return {speaker}


def read_jobs(catalogue: str | Path, speaker: str, report: StageReport) -> list[LipsJob]:
    """Return the chosen speaker's clips, sorted by clip id; quarantine those without video."""
    catalogue = Path(catalogue)
    columns = ["clip_id", "speaker_id", "video_path", "audio_path"]
    rows = sorted(pq.read_table(catalogue, columns=columns).to_pylist(),
                  key=lambda r: r["clip_id"])
    speakers = chosen_speakers(rows, speaker)
    jobs = []
    for row in rows:
        if row["speaker_id"] not in speakers:
            continue
        if row["video_path"] is None:
            report.reject(row["clip_id"], "no_video", "audio-only clip (no video_path)")
            continue
        jobs.append(LipsJob(row["clip_id"], row["speaker_id"],
                            str(catalogue.parent / row["video_path"]),
                            str(media_path(row, catalogue.parent))))
    return jobs


def split_utterances(clip_ids: Sequence[str], test_fraction: float, seed: int) -> dict[str, str]:
    """Return ``{clip_id: "train" | "test"}``: a seeded share of the clips (at least one) is test.

    Raises ``ValueError`` when no clip would be left for training.
    """
    ordered = sorted(clip_ids)
    n_test = max(1, round(test_fraction * len(ordered))) if test_fraction > 0 else 0
    if len(ordered) - n_test < 1:
        raise ValueError(f"{len(ordered)} usable clip(s): none left for training after "
                         f"holding out {n_test} for testing (lips.test_fraction={test_fraction})")
    test = set(np.random.default_rng(seed).permutation(len(ordered))[:n_test].tolist())
    return {clip: "test" if i in test else "train" for i, clip in enumerate(ordered)}


def run_lips(catalogue: str | Path, out_dir: str | Path, params: LipsParams,
             faces: FacesParams) -> StageReport:
    """Run the lips stage; return its :class:`StageReport` (also written to ``out_dir``).

    Writes ``lips-NNNNN.parquet`` (:data:`~pipeline.schemas.LIPS`), ``image_coder.parquet``
    (:class:`~pipeline.lips.features.ImageCoder`), ``meta.json``, ``mouths.png`` (test crops
    over their reconstructions from the features), ``report.json`` and
    ``quarantine.parquet`` into ``out_dir``, which is replaced atomically. Raises
    :class:`~pipeline.runtime.EmptyOutputError` (after writing the report and quarantine
    table alone) when no clip is left, or too few to hold one out for testing.
    """
    report = StageReport("lips")
    jobs = read_jobs(catalogue, params.speaker, report)
    report.count("clips", len(jobs) + report.n_rejected)
    extract = partial(extract_clip, params=params, faces=detection_params(faces))
    clips = []
    workers = min(default_workers(params.workers), max(1, len(jobs)))
    for job, result in map_items(extract, jobs, workers, "lips", max_chunk=1):
        if isinstance(result, QuarantineError):
            report.reject(job.clip_id, result.reason, result.detail, result.source or job.video)
            continue
        clips.append(result)
        _count_clip(report, result)
    try:
        if not clips:
            raise ValueError(f"no usable clip among {len(jobs)}")
        split = split_utterances([c.clip_id for c in clips], params.test_fraction, params.seed)
    except ValueError as error:  # too little to train and test on: the report says why
        with atomic_directory(out_dir) as tmp:
            report.write(tmp)
        raise EmptyOutputError(str(error), report, out_dir) from None
    coder = ImageCoder.fit(np.concatenate([c.crops for c in clips if split[c.clip_id] == "train"]),
                           params.dct_block, params.pca_variance)
    with atomic_directory(out_dir) as tmp:
        with ShardWriter(tmp, "lips", LIPS, params.shard_mb * 2**20, ROW_GROUP_ROWS) as writer:
            for clip in clips:
                writer.write(_clip_table(clip, split[clip.clip_id], coder))
        coder.save(tmp / IMAGE_CODER)
        atomic_write_json(tmp / META_JSON, _meta(clips, split, coder, params))
        _mouth_sheet(clips, split, coder, tmp / MOUTH_SHEET)
        report.info.update({"params": to_dict(params), "shards": len(writer.paths),
                            "landmark_yield": _yields(clips)})
        report.write(tmp)
    return report


def _count_clip(report: StageReport, clip: ClipFrames) -> None:
    report.count("clips_written")
    report.count("frames", clip.n_frames)
    report.count("frames_written", len(clip.frame_index))
    report.count("frames_without_landmarks", clip.n_frames - len(clip.frame_index))
    for name, value in clip.counts.items():
        report.count(name, value)


def _clip_table(clip: ClipFrames, split: str, coder: ImageCoder) -> pa.Table:
    n = len(clip.frame_index)
    features = coder.encode(clip.crops)
    return pa.table({
        "clip_id": [clip.clip_id] * n, "speaker_id": [clip.speaker_id] * n,
        "split": [split] * n, "frame_index": clip.frame_index, "time_s": clip.time_s,
        "mouth": [c.tobytes() for c in clip.crops],
        "image_features": _list_column(features), "mcep": _list_column(clip.mcep),
    })


def _list_column(matrix: np.ndarray) -> pa.ListArray:
    """Return the rows of a 2-D float32 array as an Arrow list column (no Python objects)."""
    rows, width = matrix.shape
    offsets = pa.array(np.arange(rows + 1, dtype=np.int32) * width)
    return pa.ListArray.from_arrays(offsets, pa.array(matrix.astype(np.float32).reshape(-1)))


def _yields(clips: list[ClipFrames]) -> dict[str, float]:
    """Return the share of frames with landmarks: per clip and over all written clips."""
    per_clip = {c.clip_id: round(len(c.frame_index) / c.n_frames, 4) for c in clips}
    total = sum(len(c.frame_index) for c in clips) / sum(c.n_frames for c in clips)
    return {"all": round(total, 4), **per_clip}


def _meta(clips: list[ClipFrames], split: dict[str, str], coder: ImageCoder,
          params: LipsParams) -> dict[str, Any]:
    return {
        "speakers": sorted({c.speaker_id for c in clips}),
        "clips": {part: sorted(c for c, s in split.items() if s == part)
                  for part in ("train", "test")},
        "frames": {part: int(sum(len(c.frame_index) for c in clips if split[c.clip_id] == part))
                   for part in ("train", "test")},
        "fps": {c.clip_id: c.fps for c in clips},
        "crop_px": params.crop_px,
        "n_features": coder.n_components,
        "n_mcep": params.mcep_order + 1,
        "variance_kept": {"dct_block": round(coder.block_share, 6),
                          "pca_of_block": round(coder.pca_share, 6),
                          "total": round(coder.total_share, 6)},
        "speech": {
            "sample_rate": params.sample_rate, "mcep_order": params.mcep_order,
            "alpha": params.mcep_alpha, "window": "blackman", "window_s": params.window_s,
            "shift": "one video frame (1 / fps)", "floor_db": params.floor_db,
            "dither_db": params.dither_db,
            "alignment": "window centred on the frame's middle, (i + 0.5) / fps; samples "
                         "outside the audio are zeros",
        },
    }


def _mouth_sheet(clips: list[ClipFrames], split: dict[str, str], coder: ImageCoder,
                 path: Path) -> None:
    """Save test crops (else training crops), evenly spread, above their reconstructions."""
    pool = [c for c in clips if split[c.clip_id] == "test"] or clips
    crops = np.concatenate([c.crops for c in pool])
    picks = np.linspace(0, len(crops) - 1, min(SHEET_COLUMNS, len(crops))).round().astype(int)
    real = crops[picks]
    decoded = coder.decode(coder.encode(real))
    save_png(image_grid([*real, *decoded], ncols=len(picks), scale=2), path)
