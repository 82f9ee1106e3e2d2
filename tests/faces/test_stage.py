import json
import math
import re
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import dlib
import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from PIL import Image

from pipeline.config import ClusterParams, DemoCorpusParams, FacesParams, to_dict
from pipeline.dlib_models import load_model
from pipeline.download.demo.corpus import write_corpus
from pipeline.faces.crop import crop_face
from pipeline.faces.landmarks import (
    _Tracker,
    box_from_landmarks,
    detect_faces,
    fill_landmarks,
    points_array,
    predict_landmarks,
    track_face,
)
from pipeline.faces.scores import (
    canonical_shapes,
    expression_scores,
    head_pose,
    model_points_3d,
)
from pipeline.faces.selection import REFINE_MARGIN
from pipeline.faces.stage import run_faces
from pipeline.faces.video import read_gray_frame
from tests.conftest import REPO, shared_dataset
from tests.factories import make_catalogue

LOCAL = to_dict(ClusterParams())  # the stage CLIs read the cluster section too
MEAD_EMOTIONS = {"angry": "ANG", "disgusted": "DIS", "fear": "FEA", "happy": "HAP",
                 "neutral": "NEU", "sad": "SAD"}  # contempt, surprised: no CREMA-D code


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-y", *args], check=True)


def mead_row(path: Path) -> dict:
    speaker, _, emotion, _, _ = path.stem.split("_")
    return {"clip_id": path.stem, "speaker_id": speaker, "emotion": MEAD_EMOTIONS.get(emotion),
            "video_path": str(path)}


# --- scores ---------------------------------------------------------------------------------


def rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    y, p, r = np.radians([yaw, pitch, roll])
    ry = np.array([[math.cos(y), 0, math.sin(y)], [0, 1, 0], [-math.sin(y), 0, math.cos(y)]])
    rx = np.array([[1, 0, 0], [0, math.cos(p), -math.sin(p)], [0, math.sin(p), math.cos(p)]])
    rz = np.array([[math.cos(r), -math.sin(r), 0], [math.sin(r), math.cos(r), 0], [0, 0, 1]])
    return rz @ ry @ rx


def projected_face(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """68 landmarks (NaN except the pose points) of the generic face seen orthographically."""
    indices, points = model_points_3d()
    landmarks = np.full((68, 2), np.nan)
    landmarks[indices] = 1.7 * (points @ rotation(yaw, pitch, roll).T)[:, :2] + [240, 180]
    return landmarks


@pytest.mark.parametrize(("yaw", "pitch", "roll"),
                         [(0, 0, 0), (25, 0, 0), (-40, 0, 0), (0, 15, 0), (0, -20, 0),
                          (0, 0, 12), (20, 10, 0), (-15, -10, 8)])
def test_head_pose_recovers_known_rotations(yaw, pitch, roll):
    pose = head_pose(projected_face(yaw, pitch, roll)[None])
    assert pose["yaw"][0] == pytest.approx(yaw, abs=0.5)
    assert pose["pitch"][0] == pytest.approx(pitch, abs=0.5)
    assert pose["roll"][0] == pytest.approx(roll, abs=0.5)
    expected = math.cos(math.radians(yaw)) * math.cos(math.radians(pitch))
    assert pose["frontality"][0] == pytest.approx(expected, abs=0.01)


def test_frames_without_landmarks_score_nan():
    landmarks = np.stack([projected_face(0, 0, 0), np.full((68, 2), np.nan)])
    pose = head_pose(landmarks)
    assert not np.isnan(pose["yaw"][0]) and np.isnan(pose["yaw"][1])


@pytest.fixture(scope="module")
def grid_track():
    path = shared_dataset("grid-samples") / "bbaf2n.mpg"
    return path, track_face(path, FacesParams(landmark_every=1))


def similarity(landmarks: np.ndarray, angle_deg: float, scale: float, shift) -> np.ndarray:
    a = math.radians(angle_deg)
    m = scale * np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    return landmarks @ m.T + shift


def test_expression_ignores_pose_in_the_image_plane_but_sees_the_mouth(grid_track):
    _, track = grid_track
    face = track.landmarks[0].astype(np.float64)
    reference = canonical_shapes(face[None])[0]
    moved = similarity(face, 17.0, 1.6, [30, -12])
    smiling = face.copy()
    smiling[[48, 54]] += [[-4, -3], [4, -3]]  # mouth corners out and up
    scores = expression_scores(canonical_shapes(np.stack([face, moved, smiling])), reference)
    assert scores[0] == pytest.approx(0.0, abs=1e-9)
    assert scores[1] == pytest.approx(0.0, abs=1e-9)
    assert scores[2] > 0.01


def test_track_has_landmarks_on_every_grid_frame(grid_track):
    _, track = grid_track
    assert track.n_frames == 75
    assert not np.isnan(track.landmarks).any()
    assert track.n_detections < 75 / 5  # the detector did not run on every frame
    assert track.max_face_width > 80


def inter_ocular(landmarks: np.ndarray) -> np.ndarray:
    return np.linalg.norm(landmarks[:, 36:42].mean(axis=1) - landmarks[:, 42:48].mean(axis=1),
                          axis=-1)


def test_sparse_track_measures_every_third_frame_and_stays_on_the_face(grid_track):
    path, dense = grid_track
    sparse = track_face(path, FacesParams(landmark_every=3))
    assert sparse.n_frames == 75
    # Widths are read on the first landmarked frame after each detection: others than dense.
    assert sparse.max_face_width == pytest.approx(dense.max_face_width, rel=0.05)
    assert np.array_equal(np.flatnonzero(sparse.measured), np.arange(0, 75, 3))  # 0 is fresh
    assert sparse.n_predictions == 25  # the first detection's box is not refitted here
    assert np.array_equal(np.flatnonzero(sparse.unrefined), [0])
    assert (sparse.boxes[:, 2] > sparse.boxes[:, 0]).all()  # a tracked box on every frame
    assert np.isnan(sparse.landmarks[~sparse.measured]).all()  # nothing interpolated
    error = np.linalg.norm(sparse.landmarks - dense.landmarks, axis=-1).mean(axis=-1)
    assert np.nanmax(error / inter_ocular(dense.landmarks)) < 0.05


def test_a_face_that_appears_late_is_found_on_the_next_landmark_frame(tmp_path):
    late = tmp_path / "late.mp4"  # frames 0-11 black, then the GRID face where it was
    ffmpeg("-i", str(shared_dataset("grid-samples") / "bbaf2n.mpg"), "-an", "-vf",
           "drawbox=enable='lt(n,12)':color=black:t=fill", "-c:v", "libx264", "-preset",
           "ultrafast", str(late))
    params = FacesParams(landmark_every=5, detect_every=60)
    track = track_face(late, params)
    # Not only at the next scheduled detection (60): every landmark frame searches.
    assert np.array_equal(np.flatnonzero(track.measured), np.arange(15, 75, 5))
    assert (track.boxes[:15] == -1).all() and (track.boxes[15:, 2] > 0).all()
    ladder = 3  # frame 0 tries 0.5x, 1x, 2x while no face has been found
    assert track.n_detections == ladder + 3 + 1  # frames 5, 10 and 15 at 0.5x; then 60


def test_tracker_drops_a_box_that_left_the_frame_or_whose_size_jumped(grid_track):
    _, dense = grid_track
    points = dense.landmarks[0]
    shape = (288, 360)
    tracker = _Tracker(FacesParams())
    tracker.fit(points, shape)
    assert tracker.box == box_from_landmarks(points)
    tracker.fit(points - [250.0, 0.0], shape)  # mostly left of the picture
    assert tracker.box is None
    tracker.fit(points, shape)  # no box to compare with: taken
    centre = points.mean(axis=0)
    tracker.fit(centre + 1.8 * (points - centre), shape)  # landmarks 1.8x the box
    assert tracker.box is None
    tracker.fit(points, shape)
    tracker.fit(centre + 1.2 * (points - centre), shape)  # within a coarse box's error
    assert tracker.box == box_from_landmarks(centre + 1.2 * (points - centre))


def test_fill_landmarks_measures_the_wanted_frames_and_returns_them(grid_track):
    path, dense = grid_track
    sparse = track_face(path, FacesParams(landmark_every=3))
    wanted = np.zeros(75, bool)
    wanted[[*range(10, 21), 40]] = True
    filled, frames, calls = fill_landmarks(path, sparse.landmarks, sparse.boxes, wanted)
    assert calls == (wanted & ~sparse.measured).sum() == 8 + 1  # 12, 15, 18 were measured
    assert sorted(frames) == np.flatnonzero(wanted).tolist()
    assert np.array_equal(frames[40], read_gray_frame(path, 40))
    measured = ~np.isnan(filled[:, 0, 0])
    assert np.array_equal(measured, sparse.measured | wanted)
    assert np.array_equal(filled[sparse.measured], sparse.landmarks[sparse.measured])
    error = np.linalg.norm(filled[wanted] - dense.landmarks[wanted], axis=-1).mean(axis=-1)
    assert (error / inter_ocular(dense.landmarks[wanted]) < 0.05).all()


def test_fill_landmarks_refits_landmarks_predicted_from_a_detector_box(grid_track):
    path, _ = grid_track
    sparse = track_face(path, FacesParams(landmark_every=5))
    assert sparse.unrefined[0] and sparse.unrefined.sum() == 1
    wanted = np.zeros(75, bool)
    wanted[:3] = True
    filled, frames, calls = fill_landmarks(path, sparse.landmarks, sparse.boxes, wanted,
                                           unrefined=sparse.unrefined)
    assert calls == 3  # the refit of frame 0, then frames 1 and 2
    refit = predict_landmarks(frames[0], box_from_landmarks(sparse.landmarks[0]))
    assert np.array_equal(filled[0], refit)
    assert not np.array_equal(filled[0], sparse.landmarks[0])
    assert np.array_equal(filled[5], sparse.landmarks[5])
    # Without the mask, frame 0 counts as measured and is left as it is.
    kept, _, calls = fill_landmarks(path, sparse.landmarks, sparse.boxes, wanted)
    assert calls == 2 and np.array_equal(kept[0], sparse.landmarks[0])


def test_points_array_reads_dlib_points_exactly(grid_track):
    path, dense = grid_track
    frame = read_gray_frame(path, 20)
    predictor = load_model("landmarks_68")
    left, top, right, bottom = box_from_landmarks(dense.landmarks[20])
    shape = predictor(np.ascontiguousarray(frame), dlib.rectangle(left, top, right, bottom))
    expected = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32)
    assert np.array_equal(points_array(shape.parts()), expected)
    off_picture = dlib.points([dlib.point(-3, 5), dlib.point(7, -11)])
    assert np.array_equal(points_array(off_picture), [[-3, 5], [7, -11]])


# --- crops ----------------------------------------------------------------------------------


def test_crop_levels_the_eyes_and_masks_outside_the_contour(grid_track):
    path, track = grid_track
    frame, landmarks = read_gray_frame(path, 30), track.landmarks[30].astype(np.float64)
    crop = crop_face(frame, landmarks, 64, 0.05)
    assert crop.shape == (64, 64) and crop.dtype == np.uint8
    assert crop[0, 0] == crop[0, -1] == crop[-1, 0] == crop[-1, -1] == 0  # outside the face
    assert crop[32, 32] > 0 and crop.max() == 255  # stretched face pixels
    # Rotating the picture (and its landmarks) by 20 degrees gives the same crop.
    centre = np.array([frame.shape[1] / 2, frame.shape[0] / 2])
    rotated = np.asarray(Image.fromarray(frame).rotate(-20, resample=Image.BICUBIC))
    turned = similarity(landmarks - centre, 20, 1.0, centre)
    again = crop_face(rotated, turned, 64, 0.05)
    inside = (crop > 0) & (again > 0)
    assert inside.mean() > 0.5
    assert np.abs(crop.astype(int) - again.astype(int))[inside].mean() < 12
    unaligned = np.asarray(Image.fromarray(rotated).crop((100, 100, 260, 260)).resize((64, 64)))
    assert np.abs(crop.astype(int) - unaligned.astype(int))[inside].mean() > 20


# --- the stage on real faces and bad inputs -------------------------------------------------


def bad_inputs(tmp: Path, grid: Path) -> dict[str, tuple[dict, str]]:
    """Rows of broken clips and the quarantine reason each must get."""
    tmp.mkdir(parents=True, exist_ok=True)
    source = grid / "lbax4n.mpg"
    whole = tmp / "whole.mp4"
    ffmpeg("-i", str(source), "-an", "-c:v", "libx264", "-preset", "ultrafast", str(whole))
    truncated = tmp / "truncated.mp4"
    truncated.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    empty = tmp / "empty.flv"
    empty.touch()
    pattern = tmp / "testsrc.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=480x360:rate=30", "-t", "1", "-c:v", "libx264",
           "-preset", "ultrafast", str(pattern))
    small = tmp / "small.mp4"  # face ~60 px wide in a 640x480 frame
    ffmpeg("-i", str(source), "-an", "-vf", "scale=180:144,pad=640:480:230:160", "-c:v",
           "libx264", "-preset", "ultrafast", str(small))
    voice = tmp / "voice.wav"
    ffmpeg("-i", str(source), "-vn", str(voice))
    rows = {"bad_truncated": (truncated, "decode_error"), "bad_empty": (empty, "decode_error"),
            "bad_testsrc": (pattern, "no_face"), "bad_small": (small, "face_too_small"),
            "bad_audio_file": (voice, "no_video"), "bad_audio_only": (None, "no_video")}
    return {clip: ({"clip_id": clip, "video_path": str(p) if p else None,
                    "audio_path": str(voice)}, reason)
            for clip, (p, reason) in rows.items()}


def test_a_face_too_small_to_detect_is_too_small_not_absent(tmp_path, grid_dir):
    tiny = tmp_path / "tiny.mp4"  # face ~24 px wide: 48 px at the 2x scale, below HOG's window
    ffmpeg("-i", str(grid_dir / "lbax4n.mpg"), "-an", "-vf", "scale=60:48,pad=640:480:290:216",
           "-c:v", "libx264", "-preset", "ultrafast", str(tiny))
    pattern = tmp_path / "testsrc.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=480x360:rate=30", "-t", "1", "-c:v", "libx264",
           "-preset", "ultrafast", str(pattern))
    catalogue = make_catalogue(tmp_path, [
        {"clip_id": "good", "video_path": str(grid_dir / "lbax4n.mpg")},
        {"clip_id": "pattern", "video_path": str(pattern)},
        {"clip_id": "tiny", "video_path": str(tiny)}])
    params = FacesParams(workers=1)
    report = run_faces(catalogue, tmp_path / "out", params)
    assert report.counts["selected"] == 1
    rejected = {r.item: r for r in report.rejections}
    assert rejected["pattern"].reason == "no_face"
    assert rejected["tiny"].reason == "face_too_small"
    match = re.fullmatch(r"widest face (\d+) px \(faces.min_face_px=40\) found only at detector "
                         r"scale 4, above faces.max_detect_scale=2", rejected["tiny"].detail)
    assert match and 18 <= int(match[1]) <= 30, rejected["tiny"].detail


REAL_PARAMS = FacesParams(min_face_px=80, workers=2, sheet_samples=48)


@pytest.fixture(scope="module")
def real_run(tmp_path_factory):
    grid, mead = shared_dataset("grid-samples"), shared_dataset("mead-emotion-clips")
    tmp = tmp_path_factory.mktemp("faces_real")
    bad = bad_inputs(tmp / "bad", grid)
    rows = [{"clip_id": p.stem, "speaker_id": p.stem, "video_path": str(p)}
            for p in sorted(grid.glob("*.mpg"))]
    rows += [mead_row(p) for p in sorted(mead.glob("*.mp4"))]
    rows += [row for row, _ in bad.values()]
    catalogue = make_catalogue(tmp, rows)
    report = run_faces(catalogue, tmp / "out", REAL_PARAMS)
    faces = pq.read_table(tmp / "out" / "faces-00000.parquet").to_pandas()
    curves = pq.read_table(tmp / "out" / "frame_scores-00000.parquet").to_pandas()
    return {"report": report, "faces": faces, "curves": curves, "out": tmp / "out",
            "bad": {clip: reason for clip, (_, reason) in bad.items()}, "grid": grid,
            "mead": mead}


@pytest.mark.slow
def test_every_grid_clip_yields_a_face(real_run):
    faces = real_run["faces"].set_index("clip_id")
    grid_ids = sorted(p.stem for p in real_run["grid"].glob("*.mpg"))
    assert len(grid_ids) == 11
    assert set(grid_ids) <= set(faces.index)
    for clip in grid_ids:
        row = faces.loc[clip]
        assert len(row["face"]) == REAL_PARAMS.crop_size**2
        assert 0 <= row["frame_index"] < row["n_frames"] == 75
        assert abs(row["yaw"]) <= REAL_PARAMS.max_yaw_deg
        assert row["reference"] == "clip_least_expressive"  # no NEU clips for GRID speakers


@pytest.mark.slow
def test_mead_peak_frames_are_more_expressive_than_the_median_frame(real_run):
    faces, curves = real_run["faces"].set_index("clip_id"), real_run["curves"]
    mead_ids = sorted(p.stem for p in real_run["mead"].glob("*.mp4"))
    assert len(mead_ids) == 24
    for clip in mead_ids:
        frames = curves[curves.clip_id == clip]
        chosen = frames[frames.chosen]
        assert len(chosen) == 1 and chosen.frame_index.iloc[0] == faces.loc[clip, "frame_index"]
        assert chosen.measured.iloc[0]
        assert frames.expression[~frames.measured].isna().all()  # nothing interpolated
        # Coarse to fine: the chosen frame lies in a refined window, a run of at least
        # landmark_every + REFINE_MARGIN + 1 measured frames (fewer only at the clip's first
        # or last frame).
        measured = frames.sort_values("frame_index").measured.to_numpy()
        at = int(chosen.frame_index.iloc[0])
        first = at + 1 - np.argmin(np.r_[measured[at::-1], False])
        last = at - 1 + np.argmin(np.r_[measured[at:], False])
        assert (last - first >= REAL_PARAMS.landmark_every + REFINE_MARGIN
                or first == 0 or last == len(measured) - 1), clip
        assert frames.refined.any()
        assert frames.measured.mean() < 0.7  # not every frame (coarse to fine)
        assert faces.loc[clip, "reference"] == "speaker_neutral"
        if "neutral" in clip:
            continue
        assert chosen.expression.iloc[0] > np.nanmedian(frames.expression), clip
        assert chosen.expression.iloc[0] == pytest.approx(faces.loc[clip, "expression"])


@pytest.mark.slow
def test_neutral_mead_frames_are_less_expressive_than_emotional_peaks(real_run):
    faces = real_run["faces"].set_index("clip_id")
    for speaker in ("M030", "W009", "W011"):
        neutral = faces.loc[f"{speaker}_front_neutral_level1_001", "expression"]
        peaks = faces[faces.index.str.startswith(speaker) & ~faces.index.str.contains("neutral")]
        assert (peaks.expression > neutral).all(), speaker


@pytest.mark.slow
def test_bad_inputs_get_exactly_their_reasons_and_counts_add_up(real_run):
    report, faces = real_run["report"], real_run["faces"]
    quarantined = {r.item: r.reason for r in report.rejections}
    assert quarantined == real_run["bad"]
    counts = report.counts
    assert counts["selected"] == len(faces) == 35
    assert counts["clips"] == counts["selected"] + report.n_rejected == 41
    saved = json.loads((real_run["out"] / "report.json").read_text())
    assert saved["rejected_by_reason"] == {"decode_error": 2, "face_too_small": 1, "no_face": 1,
                                           "no_video": 2}
    table = pq.read_table(real_run["out"] / "quarantine.parquet").to_pydict()
    assert dict(zip(table["item"], table["reason"], strict=True)) == real_run["bad"]


@pytest.mark.slow
def test_shards_are_sorted_and_the_contact_sheet_shows_the_faces(real_run):
    shard = pq.read_table(real_run["out"] / "faces-00000.parquet")
    from pipeline.schemas import FACES

    assert shard.schema.equals(FACES, check_metadata=False)
    ids = shard.column("clip_id").to_pylist()
    assert ids == sorted(ids)
    sheet = Image.open(real_run["out"] / "contact_sheet.png")
    assert sheet.mode == "L" and sheet.width >= 8 * REAL_PARAMS.crop_size
    assert not (real_run["out"] / ".tracks").exists()


def test_output_is_identical_whatever_the_worker_count(tmp_path, grid_dir, mead_dir):
    rows = [{"clip_id": p.stem, "video_path": str(p)}
            for p in sorted(grid_dir.glob("*.mpg"))[:2]]
    rows += [mead_row(mead_dir / f"W009_front_{e}_level{lvl}_001.mp4")
             for e, lvl in (("neutral", 1), ("happy", 3))]
    rows.append({"clip_id": "zero", "video_path": str(tmp_path / "zero.flv")})
    (tmp_path / "zero.flv").touch()
    catalogue = make_catalogue(tmp_path, rows)
    params = FacesParams(workers=1, mode="combined")
    run_faces(catalogue, tmp_path / "one", params)
    # The CLI, as DVC runs it, with two workers.
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump({"faces": to_dict(replace(params, workers=2)),
                                         "cluster": LOCAL}))
    subprocess.run([sys.executable, "-m", "stages.faces", "--params", str(params_file),
                    "--catalogue", str(catalogue), "--out", str(tmp_path / "two")],
                   check=True, cwd=REPO)
    for name in ("faces-00000.parquet", "frame_scores-00000.parquet", "quarantine.parquet",
                 "contact_sheet.png"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()
    faces = pq.read_table(tmp_path / "one" / "faces-00000.parquet").to_pydict()
    assert faces["clip_id"] == sorted(r["clip_id"] for r in rows if r["clip_id"] != "zero")


@pytest.mark.parametrize(("clips", "expected"), [
    (("bad_empty", "bad_audio_only"), "no face kept of 2 clips; quarantined by reason: "
                                      "decode_error 1, no_video 1"),
    ((), "no face kept of 0 clips; quarantined by reason: none"),  # a header-only catalogue
])
def test_stage_cli_fails_when_no_clip_yields_a_face_after_writing_the_report(tmp_path, clips,
                                                                            expected):
    (tmp_path / "empty.flv").touch()
    rows = {"bad_empty": {"clip_id": "bad_empty", "video_path": str(tmp_path / "empty.flv")},
            "bad_audio_only": {"clip_id": "bad_audio_only", "video_path": None}}
    catalogue = make_catalogue(tmp_path, [rows[clip] for clip in clips])
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump({"faces": to_dict(FacesParams(workers=2)),
                                         "cluster": LOCAL}))
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "stages.faces", "--params", str(params_file),
                           "--catalogue", str(catalogue), "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 1, done.stderr
    assert (f"faces: {expected}; see {out / 'report.json'} and quarantine.parquet"
            in done.stderr)
    assert "Traceback" not in done.stderr
    assert sorted(p.name for p in out.iterdir()) == ["quarantine.parquet", "report.json"]
    quarantined = pq.read_table(out / "quarantine.parquet").column("item").to_pylist()
    assert quarantined == sorted(clips)


def test_a_killed_run_leaves_a_temporary_that_the_next_run_removes(tmp_path, grid_dir):
    rows = [{"clip_id": p.stem, "video_path": str(p)} for p in sorted(grid_dir.glob("*.mpg"))[:5]]
    catalogue = make_catalogue(tmp_path / "download", rows)
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump({"faces": to_dict(FacesParams(workers=1)),
                                         "cluster": LOCAL}))
    command = [sys.executable, "-m", "stages.faces", "--params", str(params_file),
               "--catalogue", str(catalogue), "--out", str(tmp_path / "faces")]
    run = subprocess.Popen(command, cwd=REPO, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(".faces.*.tmp/.tracks/*.pickle")):  # pass 1 under way
        assert run.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    run.kill()
    run.wait()
    (stale,) = tmp_path.glob(".faces.*.tmp")
    assert not (tmp_path / "faces").exists()
    subprocess.run(command, cwd=REPO, check=True, capture_output=True)
    assert not stale.exists() and list(tmp_path.glob(".faces.*")) == []
    faces = pq.read_table(tmp_path / "faces" / "faces-00000.parquet").column("clip_id")
    assert faces.to_pylist() == [row["clip_id"] for row in rows]


# --- ground truth: the embedded demo corpus ------------------------------------------------

DEMO = DemoCorpusParams(n_speakers=4, sentences=("IEO",))  # 16 clips, 12 non-neutral


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """The demo corpus, and the frame each selection mode chose per clip, with the truth."""
    tmp = tmp_path_factory.mktemp("faces_demo")
    truth = write_corpus(tmp / "demo", DEMO, workers=2)
    rows = [{"clip_id": r.clip_id, "speaker_id": str(r.speaker_id), "emotion": r.emotion,
             "video_path": str(tmp / "demo" / r.video_path)} for r in truth.itertuples()]
    catalogue = make_catalogue(tmp, rows)
    chosen = {}
    for mode in ("peak_emotion", "frontal"):
        report = run_faces(catalogue, tmp / mode, FacesParams(mode=mode, workers=2))
        assert report.counts["selected"] == len(truth) and report.n_rejected == 0
        faces = pq.read_table(tmp / mode / "faces-00000.parquet",
                              columns=["clip_id", "frame_index"]).to_pandas()
        chosen[mode] = truth.merge(faces, on="clip_id", validate="one_to_one")
    # the peak_emotion run again with equally spaced crops (002 section 5.1)
    run_faces(catalogue, tmp / "sequence", FacesParams(workers=2, sequence_frames=3))
    chosen["dirs"] = {"peak_emotion": tmp / "peak_emotion", "sequence": tmp / "sequence"}
    chosen["videos"] = {r["clip_id"]: r["video_path"] for r in rows}
    return chosen


@pytest.mark.slow
def test_peak_emotion_finds_the_true_peak_frame(demo_run):
    clips = demo_run["peak_emotion"]
    emotional = clips[clips.expression_amplitude > 0]
    assert len(emotional) == 12
    within = (emotional.frame_index - emotional.peak_frame).abs() <= 2
    assert within.mean() >= 0.9, emotional[["clip_id", "peak_frame", "frame_index"]]


@pytest.mark.slow
def test_frontal_finds_the_true_most_frontal_frame(demo_run):
    clips = demo_run["frontal"]
    assert len(clips) == 16
    within = (clips.frame_index - clips.frontal_frame).abs() <= 2
    assert within.mean() >= 0.9, clips[["clip_id", "frontal_frame", "frame_index"]]


@pytest.mark.slow
def test_sequence_crops_are_equally_spaced_and_leave_the_choice_alone(demo_run):
    from pipeline.faces.sequence import sequence_positions

    plain, with_sequence = demo_run["dirs"]["peak_emotion"], demo_run["dirs"]["sequence"]
    for name in ("faces-00000.parquet", "frame_scores-00000.parquet", "contact_sheet.png"):
        assert (plain / name).read_bytes() == (with_sequence / name).read_bytes(), name
    assert not list(plain.glob("sequence-*.parquet"))  # K = 1 writes no sequence shards
    crops = pq.read_table(with_sequence / "sequence-00000.parquet").to_pandas()
    faces = pq.read_table(plain / "faces-00000.parquet").to_pandas().set_index("clip_id")
    assert sorted(set(crops.clip_id)) == sorted(faces.index)
    for clip, rows in crops.groupby("clip_id"):
        expected = sequence_positions(int(faces.loc[clip, "n_frames"]), 3).tolist()
        assert rows.frame_index.tolist() == expected
    # each crop is the chosen frame's kind of crop (alignment, contour mask, size) of its
    # frame: landmarks measured afresh on that frame give (nearly) the same crop
    video = demo_run["videos"][crops.clip_id.iloc[4]]
    for index, face in zip(crops.frame_index.iloc[3:6], crops.face.iloc[3:6], strict=True):
        frame = read_gray_frame(video, int(index))
        points = predict_landmarks(frame, detect_faces(frame, 1.0)[0])
        again = crop_face(frame, points, 64, FacesParams().margin).astype(float)
        crop = np.frombuffer(face, np.uint8).reshape(64, 64)
        assert crop.shape == again.shape and crop[0, 0] == crop[-1, -1] == 0
        assert np.abs(crop - again).mean() < 6, index
    report = json.loads((with_sequence / "report.json").read_text())
    assert report["counts"]["sequence_crops"] == len(crops) == 3 * len(faces)
