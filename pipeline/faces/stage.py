"""The ``faces`` stage: per clip, choose one frame with dlib and write its face crop.

Two passes over the clips, each parallel over clips, keep memory flat in the number and the
length of clips:

1. :func:`pipeline.faces.landmarks.track_face` streams each video once and yields 68 landmarks on
   every ``landmark_every``-th frame (the coarse track); the track is spilled to a small
   pickle file and only a per-clip sum of canonical shapes comes back, from which the main
   process forms the neutral references (the speaker's NEU clips' mean shape; a global
   mean shape).
2. Each clip's landmarked frames are scored (:mod:`pipeline.faces.selection`) against its
   reference and the best coarse candidates for the mode are found, each with a short
   window reaching towards the peak its coarse neighbours point to
   (:func:`~pipeline.faces.selection.refine_windows`).
   The clip is re-decoded over them, from the keyframe before (as the crop needs anyway;
   :func:`~pipeline.faces.video.iter_gray_frames_between`), landmarks are predicted on every
   frame of the windows (and refitted on frames measured from a detector box;
   :func:`~pipeline.faces.landmarks.fill_landmarks`), all measured frames are re-scored with the
   same functions, and the best frame of the windows
   (:func:`~pipeline.faces.selection.select_frame`; coarse frames inside them included) is
   cropped (:mod:`pipeline.faces.crop`). Frames never landmarked score NaN and are never chosen:
   nothing is interpolated. With ``landmark_every`` 1 every frame is measured in pass 1.

With ``faces.sequence_frames`` K > 1, pass 2 also crops K equally spaced frames of each clip
(:mod:`pipeline.faces.sequence`) into ``sequence-NNNNN.parquet``, after the choice, which
they do not change; with K = 1 the stage writes exactly what it wrote before the option.

Rows come back in catalogue order sorted by clip id, so the shards are the same bytes
whatever the worker count.
"""

from __future__ import annotations

import logging
import pickle
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.cluster import map_clips, session
from pipeline.config import ClusterParams, FacesParams, to_dict
from pipeline.faces.crop import crop_face
from pipeline.faces.landmarks import FaceTrack, fill_landmarks, find_small_face, track_face
from pipeline.faces.scores import canonical_shapes, contour_yaw, fit_pose_model, pose_design
from pipeline.faces.selection import (
    SMOOTHING_FRAMES,
    Reference,
    frame_scores,
    refine_windows,
    select_frame,
)
from pipeline.faces.sequence import sequence_crops
from pipeline.faces.video import read_gray_frame
from pipeline.images import image_grid, save_png
from pipeline.runtime import (
    EmptyOutputError,
    QuarantineError,
    StageReport,
    atomic_directory,
    default_workers,
    remove_stale_temporaries,
)
from pipeline.schemas import FACES, SEQUENCE, conform
from pipeline.shards import ShardWriter

log = logging.getLogger(__name__)

NEUTRAL = "NEU"
ROW_GROUP_ROWS = 256
CONTACT_SHEET = "contact_sheet.png"
SHEET_TILE_PX = 192  # captions need ~32 characters of width


FRAME_SCORES = pa.schema(
    [
        pa.field("clip_id", pa.string(), nullable=False),
        pa.field("frame_index", pa.int32(), nullable=False),
        *(pa.field(name, pa.float32()) for name in
          ("yaw", "pitch", "roll", "frontality", "expression", "eye_openness")),
        pa.field("measured", pa.bool_(), nullable=False),
        pa.field("refined", pa.bool_(), nullable=False),
        pa.field("chosen", pa.bool_(), nullable=False),
    ],
    metadata={"doc": "Every frame's scores as frame selection saw them. measured: the frame "
                     "has landmarks (coarse pass 1 or refined in pass 2); refined: measured "
                     "in a pass-2 window; scores are NaN where not measured."},
)
"""Side output ``frame_scores-NNNNN.parquet``: traces each choice back to the frame curves."""


@dataclass(frozen=True)
class ClipJob:
    """One clip to process: identity, labels the selection needs, and its video file."""

    clip_id: str
    speaker_id: str
    emotion: str | None
    video: str
    """Absolute path of the video."""
    track_file: str
    """Where pass 1 spills the clip's :class:`~pipeline.faces.landmarks.FaceTrack` (a pickle: ~0.5
    ms to write and read back, ``np.savez``'s zip archive took ~2 ms)."""

    @property
    def neutral(self) -> bool:
        """Return whether the clip is labelled neutral."""
        return self.emotion == NEUTRAL


@dataclass(frozen=True)
class TrackSummary:
    """What pass 1 returns per clip: enough to form references, nothing per frame."""

    clip_id: str
    n_frames: int
    n_faces: int
    n_predictions: int
    """Shape-predictor calls of pass 1."""
    gram: np.ndarray
    """``(3, 3)`` sum of ``X^T X`` (:func:`~pipeline.faces.scores.pose_design`) over the
    clip's frontal-enough frames."""
    moments: np.ndarray
    """``(3, 68)`` complex sum of ``X^T shapes`` (canonical shapes) over the same frames."""
    n_shapes: int


def track_clip(job: ClipJob, params: FacesParams) -> TrackSummary:
    """Return pass 1's :class:`TrackSummary` of ``job``; spill its track to ``job.track_file``.

    Raises :class:`QuarantineError` for ``no_face``, ``face_too_small``, ``multiple_faces``
    (when ``faces.multiple_faces`` is ``quarantine``) and the decoding reasons.
    """
    track = track_face(job.video, params)
    if track.max_face_width == 0:
        _raise_small_or_no_face(job, track.n_frames, params)
    if track.max_face_width < params.min_face_px:
        raise QuarantineError(
            "face_too_small",
            f"widest face {track.max_face_width} px < faces.min_face_px={params.min_face_px}",
            job.video,
        )
    if track.n_faces > 1 and params.multiple_faces == "quarantine":
        raise QuarantineError("multiple_faces", f"{track.n_faces} faces in a frame", job.video)
    with open(job.track_file, "wb") as spill:
        pickle.dump(track, spill, protocol=pickle.HIGHEST_PROTOCOL)
    yaw = contour_yaw(track.landmarks)
    frontal = ~np.isnan(yaw) & (np.abs(yaw) <= params.max_yaw_deg)
    shapes = canonical_shapes(track.landmarks[frontal])
    design = pose_design(yaw[frontal], params.max_yaw_deg)
    return TrackSummary(job.clip_id, track.n_frames, track.n_faces, track.n_predictions,
                        design.T @ design, design.T @ shapes, int(frontal.sum()))


def _raise_small_or_no_face(job: ClipJob, n_frames: int, params: FacesParams) -> None:
    """Raise ``face_too_small`` where a finer detector scale finds a face, else ``no_face``."""
    width = find_small_face(job.video, n_frames, params)
    if width == 0:
        raise QuarantineError("no_face", f"no face in {n_frames} frames", job.video)
    raise QuarantineError(
        "face_too_small",
        f"widest face {width} px (faces.min_face_px={params.min_face_px}) found only at "
        f"detector scale {2 * params.max_detect_scale:g}, above faces.max_detect_scale="
        f"{params.max_detect_scale:g}",
        job.video,
    )


@dataclass(frozen=True)
class Selection:
    """What pass 2 returns per clip."""

    row: dict[str, Any]
    """The clip's :data:`~pipeline.schemas.FACES` row."""
    scores: pa.Table
    """Every frame's scores (:data:`FRAME_SCORES`)."""
    calls: int
    """Shape-predictor calls of pass 2."""
    sequence: pa.Table | None = None
    """The equally spaced crops (:data:`~pipeline.schemas.SEQUENCE`) when
    ``faces.sequence_frames`` > 1."""
    sequence_missed: int = 0
    """Equally spaced frames without a tracked face (not cropped)."""


def select_clip(job: ClipJob, reference: Reference, n_faces: int,
                params: FacesParams) -> Selection:
    """Return ``job``'s :data:`~pipeline.schemas.FACES` row, frame scores and pass-2 calls.

    Coarse to fine: the windows around the coarse track's best candidates are measured
    densely, all measured frames are re-scored and the frame is chosen in the windows. The
    scores table (:data:`FRAME_SCORES`) holds every frame's scores as that choice saw them.
    With ``faces.sequence_frames`` > 1, the equally spaced crops are made after the choice.
    """
    with open(job.track_file, "rb") as spill:
        track: FaceTrack = pickle.load(spill)  # written by track_clip in this run
    # Kept until the stage ends (rmtree of the spill folder): a retried task (a Ray worker
    # killed mid-clip) reads it again; pass 1 already had every track on disk at once.
    coarse, boxes, unrefined = track.landmarks, track.boxes, track.unrefined
    seek = (track.pts, track.seek_pos)
    # Coarse scores are smoothed over >= 3 landmarked frames, as noise-robust as dense ones.
    coarse_window = max(SMOOTHING_FRAMES, 2 * params.landmark_every + 1)
    windows = refine_windows(frame_scores(coarse, reference, params.max_yaw_deg, coarse_window),
                             params.mode, job.neutral, params)
    landmarks, frames, n_refined = fill_landmarks(job.video, coarse, boxes, windows, seek,
                                                  unrefined)
    scores = frame_scores(landmarks, reference, params.max_yaw_deg)
    index = select_frame(scores, params.mode, job.neutral, params, among=windows)
    frame = frames[index] if index in frames else read_gray_frame(job.video, index)
    points = landmarks[index]
    face = crop_face(frame, points, params.crop_size, params.margin)
    low, high = points.min(axis=0), points.max(axis=0)
    n = len(landmarks)
    measured = ~np.isnan(landmarks[:, 0, 0])
    curves = pa.table(
        {"clip_id": [job.clip_id] * n, "frame_index": np.arange(n),
         **{name: scores[name] for name in FRAME_SCORES.names[2:8]},
         "measured": measured,
         "refined": measured & (np.isnan(coarse[:, 0, 0]) | (unrefined & windows)),
         "chosen": np.arange(n) == index},
    )
    row = {
        "clip_id": job.clip_id,
        "frame_index": index,
        "n_frames": n,
        "face": face.tobytes(),
        "size": params.crop_size,
        "landmarks": points.reshape(-1).tolist(),
        "bbox": [int(np.floor(low[0])), int(np.floor(low[1])),
                 int(np.ceil(high[0])), int(np.ceil(high[1]))],
        **{k: float(scores[k][index]) for k in ("yaw", "pitch", "roll", "frontality",
                                                  "expression")},
        "reference": reference.kind,
        "n_faces": n_faces,
    }
    selection = Selection(row, conform(curves, FRAME_SCORES), n_refined)
    if params.sequence_frames == 1:
        return selection
    sequence, calls, missed = sequence_crops(job.clip_id, job.video, landmarks, boxes, seek,
                                             unrefined & ~windows, params)
    return Selection(row, selection.scores, n_refined + calls, sequence, missed)


def _select_task(task: tuple[ClipJob, Reference, int], params: FacesParams) -> Selection:
    job, reference, n_faces = task
    return select_clip(job, reference, n_faces, params)


def read_jobs(catalogue: str | Path, spill_dir: Path,
              report: StageReport) -> list[ClipJob]:
    """Return the catalogue's clips with a video, sorted by clip id; quarantine the rest."""
    catalogue = Path(catalogue)
    table = pq.read_table(catalogue, columns=["clip_id", "speaker_id", "emotion", "video_path"])
    jobs = []
    for i, row in enumerate(sorted(table.to_pylist(), key=lambda r: r["clip_id"])):
        if row["video_path"] is None:
            report.reject(row["clip_id"], "no_video", "audio-only clip (no video_path)")
            continue
        jobs.append(ClipJob(row["clip_id"], row["speaker_id"], row["emotion"],
                            str(catalogue.parent / row["video_path"]),
                            str(spill_dir / f"{i:07d}.pickle")))
    return jobs


def _references(jobs: list[ClipJob], summaries: dict[str, TrackSummary],
                params: FacesParams) -> dict[str, Reference]:
    """Return each tracked clip's :class:`Reference` (sums in catalogue order: deterministic)."""
    empty = (np.zeros((3, 3)), np.zeros((3, 68), complex))
    speaker_sum: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    total = empty
    for job in jobs:
        summary = summaries.get(job.clip_id)
        if summary is None or summary.n_shapes == 0:
            continue
        total = (total[0] + summary.gram, total[1] + summary.moments)
        if job.neutral:
            gram, moments = speaker_sum.get(job.speaker_id, empty)
            speaker_sum[job.speaker_id] = (gram + summary.gram, moments + summary.moments)
    global_mean = fit_pose_model(*total) if total[0][0, 0] > 0 else np.zeros((3, 68), complex)
    references = {}
    for job in jobs:
        if job.clip_id not in summaries:
            continue
        if params.reference == "auto" and job.speaker_id in speaker_sum:
            references[job.clip_id] = Reference("speaker_neutral",
                                                fit_pose_model(*speaker_sum[job.speaker_id]))
        elif params.reference == "global_mean":
            references[job.clip_id] = Reference("global_mean", global_mean)
        else:
            references[job.clip_id] = Reference("clip_least_expressive", global_mean)
    return references


def _contact_sheet(rows: list[dict[str, Any]], size: int, path: Path) -> None:
    if not rows:
        return
    tiles = [np.frombuffer(r["face"], np.uint8).reshape(size, size) for r in rows]
    labels = [f"#{r['frame_index']} e{r['expression']:.2f} f{r['frontality']:.2f} "
              f"{r['clip_id']}" for r in rows]
    scale = max(1, round(SHEET_TILE_PX / size))
    ncols = min(8, len(tiles))
    save_png(image_grid(tiles, ncols=ncols, labels=labels, scale=scale), path)


def run_faces(catalogue: str | Path, out_dir: str | Path, params: FacesParams,
              cluster: ClusterParams | None = None) -> StageReport:
    """Run the faces stage; return its :class:`StageReport` (also written to ``out_dir``).

    Writes ``faces-NNNNN.parquet`` (:data:`~pipeline.schemas.FACES`, sorted by clip id),
    ``contact_sheet.png``, ``report.json`` and ``quarantine.parquet`` into ``out_dir``,
    which is replaced atomically (what a killed run left beside it is removed first).
    Both passes run where ``cluster`` says (:func:`~pipeline.cluster.map_clips`; default:
    the local pool): the same bytes either way. Raises
    :class:`~pipeline.runtime.EmptyOutputError` (after writing them) when no clip yields a
    face.
    """
    report = StageReport("faces")
    cluster = cluster or ClusterParams()
    run = _Run(params, cluster, default_workers(params.workers), report)
    remove_stale_temporaries(out_dir)  # a killed run's spill files can be large
    with atomic_directory(out_dir) as tmp, session(cluster):
        spill = tmp / ".tracks"
        spill.mkdir()
        run.scratch = tmp
        jobs = read_jobs(catalogue, spill, report)
        report.count("clips", len(jobs) + report.n_rejected)
        summaries = _track_all(jobs, run)
        references = _references(jobs, summaries, params)
        tasks = [(j, references[j.clip_id], summaries[j.clip_id].n_faces)
                 for j in jobs if j.clip_id in references]
        target = params.shard_mb * 2**20
        with (ShardWriter(tmp, "faces", FACES, target, ROW_GROUP_ROWS) as writer,
              ShardWriter(tmp, "frame_scores", FRAME_SCORES, target, 64 * ROW_GROUP_ROWS)
              as curves,
              ShardWriter(tmp, "sequence", SEQUENCE, target, ROW_GROUP_ROWS) as sequence):
            # the sequence writer makes no file unless it gets rows (sequence_frames > 1)
            sheet_rows = _select_all(tasks, run, (writer, curves, sequence))
        shutil.rmtree(spill)
        _contact_sheet(sheet_rows, params.crop_size, tmp / CONTACT_SHEET)
        # Nothing run- or machine-specific (worker count, executor, code revision): the output
        # must be byte-identical whatever the machine; dvc.lock pins the code.
        report.info.update({"params": to_dict(params), "shards": len(writer.paths)})
        report.write(tmp)
    if not report.counts["selected"]:
        raise EmptyOutputError(f"no face kept of {report.counts['clips']} clips", report, out_dir)
    return report


@dataclass
class _Run:
    """One run's settings and where its per-clip passes go."""

    params: FacesParams
    cluster: ClusterParams
    workers: int
    report: StageReport
    scratch: Path = Path()
    """Where Ray tasks write their parts: inside the output's temporary directory."""

    def map(self, function: Callable, items: list, desc: str) -> Iterator:
        """Yield ``(item, result)`` of ``function`` over ``items`` (long items: one at a time)."""
        return map_clips(function, items, self.cluster, self.scratch, self.workers, desc,
                         max_chunk=1)


def _track_all(jobs: list[ClipJob], run: _Run) -> dict[str, TrackSummary]:
    """Run pass 1; return the summaries of the clips that have a usable face track."""
    summaries: dict[str, TrackSummary] = {}
    report = run.report
    for job, result in run.map(partial(track_clip, params=run.params), jobs, "landmarks"):
        if isinstance(result, QuarantineError):
            _reject(report, job, result)
        else:
            summaries[result.clip_id] = result
            report.count("frames", result.n_frames)
            report.count("landmark_calls_track", result.n_predictions)
    return summaries


def _select_all(tasks: list[tuple[ClipJob, Reference, int]], run: _Run,
                writers: tuple[ShardWriter, ShardWriter, ShardWriter]) -> list[dict[str, Any]]:
    """Run pass 2, writing rows in task order; return the rows sampled for the contact sheet."""
    writer, curves, sequence = writers
    params, report = run.params, run.report
    n_sample = min(params.sheet_samples, len(tasks))
    sample = set(np.linspace(0, len(tasks) - 1, n_sample).round().astype(int).tolist())
    sheet_rows, batch = [], []
    results = run.map(partial(_select_task, params=params), tasks, "faces")
    for i, ((job, _, _), result) in enumerate(results):
        if isinstance(result, QuarantineError):
            _reject(report, job, result)
            continue
        curves.write(result.scores)
        report.count("landmark_calls_refine", result.calls)
        if result.sequence is not None:
            sequence.write(result.sequence)
            report.count("sequence_crops", result.sequence.num_rows)
            if result.sequence_missed:
                report.count("sequence_frames_without_face", result.sequence_missed)
        result = result.row
        report.count("selected")
        report.count(f"reference:{result['reference']}")
        if result["n_faces"] > 1:
            report.count("multiple_faces_kept")
        batch.append(result)
        if len(batch) == ROW_GROUP_ROWS:
            writer.write(pa.Table.from_pylist(batch, schema=FACES))
            batch = []
        if i in sample:
            sheet_rows.append(result)
    if batch:
        writer.write(pa.Table.from_pylist(batch, schema=FACES))
    return sheet_rows


def _reject(report: StageReport, job: ClipJob, error: QuarantineError) -> None:
    report.reject(job.clip_id, error.reason, error.detail, error.source or job.video)
