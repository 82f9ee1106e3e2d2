"""The embedded demo corpus: determinism, CREMA-D layout, real dlib on its faces, audio timing."""

from __future__ import annotations

import csv
import hashlib
import json
import re
from pathlib import Path

import av
import dlib
import numpy as np
import pandas as pd
import pytest

from pipeline.config import DemoCorpusParams, load_params
from pipeline.dlib_models import model_path
from pipeline.download.demo.corpus import plan_clips, plan_speakers, write_corpus
from tests.conftest import REPO

SMALL = DemoCorpusParams(
    seed=7, n_speakers=2, emotions=("ANG", "HAP", "NEU", "SAD"), sentences=("IEO",),
    long_pause_fraction=0.5,
)
NAME = re.compile(r"^(\d{4})_([A-Z]{3})_(ANG|DIS|FEA|HAP|NEU|SAD)_(LO|MD|HI|XX)\.flv$")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    out = tmp_path_factory.mktemp("demo")
    return out, write_corpus(out, SMALL, workers=2)


@pytest.fixture(scope="module")
def detector():
    return dlib.get_frontal_face_detector(), dlib.shape_predictor(str(model_path("landmarks_68")))


def digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def decode_frames(path: Path, indices: set[int]) -> dict[int, np.ndarray]:
    with av.open(str(path)) as container:
        return {i: frame.to_ndarray(format="rgb24")
                for i, frame in enumerate(container.decode(video=0)) if i in indices}


def decode_audio(path: Path) -> tuple[np.ndarray, int]:
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        chunks = [f.to_ndarray().reshape(-1) for f in container.decode(stream)]
        return np.concatenate(chunks).astype(np.float32) / 32768.0, stream.rate


def landmarks(models, image: np.ndarray) -> np.ndarray:
    detector, predictor = models
    faces = detector(image, 0)
    assert len(faces) == 1, f"expected one face, dlib found {len(faces)}"
    return np.array([(p.x, p.y) for p in predictor(image, faces[0]).parts()], dtype=float)


def expression_features(lms: np.ndarray) -> dict[str, float]:
    """Scale-free expression measures (y grows downwards)."""
    d = np.linalg.norm(lms[42:48].mean(0) - lms[36:42].mean(0))
    return {
        # mouth corners above the upper lip's centre: larger = smiling
        "corner_lift": (lms[51, 1] - lms[[48, 54], 1].mean()) / d,
        # brows above the eyes: smaller = lowered brows
        "brow_height": (lms[36:48, 1].mean() - lms[17:27, 1].mean()) / d,
        # inner brow ends apart: smaller = drawn together
        "inner_brow_gap": (lms[22, 0] - lms[21, 0]) / d,
    }


def test_layout_follows_crema_d(corpus) -> None:
    out, truth = corpus
    names = sorted(p.name for p in (out / "VideoFlash").iterdir())
    assert len(names) == 2 * 4 * 1 == len(truth)
    assert all(NAME.match(n) for n in names), names
    assert {int(NAME.match(n).group(1)) for n in names} == {1001, 1002}
    assert sorted(truth["clip_id"] + ".flv") == names
    assert not list(out.rglob("*.tmp"))
    assert (out / "contact_sheet.png").stat().st_size > 10_000
    assert (truth.loc[truth.emotion == "NEU", "level"] == "XX").all()
    with av.open(str(out / "VideoFlash" / names[0])) as container:
        assert container.format.name == "flv"
        video, audio = container.streams.video[0], container.streams.audio[0]
        assert (video.codec_context.width, video.codec_context.height) == (480, 360)
        assert video.average_rate == 30
        assert audio.rate == SMALL.audio_rate and audio.channels == 1
        n = sum(1 for _ in container.decode(video=0))
    row = truth.set_index("clip_id").loc[names[0][:-4]]
    assert n == row.n_frames
    assert 2.0 <= row.n_frames / 30 <= 4.0


def test_demographics_match_crema_d_format(corpus, crema_d_dir: Path) -> None:
    out, truth = corpus
    real = (crema_d_dir / "VideoDemographics.csv").read_text().splitlines()
    ours = (out / "VideoDemographics.csv").read_text().splitlines()
    assert ours[0] == real[0]
    line = re.compile(r'^\d{4},\d+,"[^"]+","[^"]+","[^"]+"$')
    assert all(line.match(x) for x in real[1:]) and all(line.match(x) for x in ours[1:])
    vocab = list(csv.DictReader(real))
    rows = list(csv.DictReader(ours))
    for column in ("Sex", "Race", "Ethnicity"):
        assert {r[column] for r in rows} <= {r[column] for r in vocab}, column
    assert sorted(r["Sex"] for r in rows) == ["Female", "Male"]
    by_id = {int(r["ActorID"]): r for r in rows}
    for _, clip in truth.iterrows():
        assert by_id[clip.speaker_id]["Sex"] == clip.sex
        assert int(by_id[clip.speaker_id]["Age"]) == clip.age


def test_same_seed_is_byte_identical_across_worker_counts(corpus, tmp_path: Path) -> None:
    out, _ = corpus
    write_corpus(tmp_path, SMALL, workers=1)
    assert digests(tmp_path) == digests(out)


def test_different_seed_gives_a_different_corpus(corpus, tmp_path: Path) -> None:
    out, truth = corpus
    stale = tmp_path / "VideoFlash" / "9999_IEO_NEU_XX.flv"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"left over from another plan")
    params = DemoCorpusParams(seed=8, n_speakers=2, emotions=("NEU",), sentences=("IEO",))
    other = write_corpus(tmp_path, params, workers=1)
    assert not stale.exists()
    assert sorted(p.name for p in (tmp_path / "VideoFlash").iterdir()) == sorted(
        other.clip_id + ".flv")
    mine = truth.set_index("clip_id").loc["1001_IEO_NEU_XX"]
    theirs = other.set_index("clip_id").loc["1001_IEO_NEU_XX"]
    assert mine.face_jaw_width != theirs.face_jaw_width
    a = (out / "VideoFlash" / "1001_IEO_NEU_XX.flv").read_bytes()
    b = (tmp_path / "VideoFlash" / "1001_IEO_NEU_XX.flv").read_bytes()
    assert a != b


def test_dlib_finds_exactly_one_face_in_almost_every_frame(corpus, detector) -> None:
    out, truth = corpus
    hog = detector[0]
    found, total = [], 0
    for clip in truth.itertuples():
        frames = decode_frames(out / clip.video_path, set(range(0, clip.n_frames, 3)))
        for i, frame in frames.items():
            total += 1
            if len(hog(frame, 0)) == 1:
                found.append(i)
    assert total > 100
    assert len(found) / total >= 0.98, f"{len(found)}/{total} frames with exactly one face"


def test_peak_expression_moves_landmarks_the_expected_way(corpus, detector) -> None:
    out, truth = corpus
    for speaker, clips in truth.groupby("speaker_id"):
        clips = clips.set_index("emotion")
        neutral_clip = clips.loc["NEU"]
        rest = neutral_clip.frontal_frame
        neutral_frame = decode_frames(out / neutral_clip.video_path, {rest})[rest]
        neutral = expression_features(landmarks(detector, neutral_frame))
        peak = {}
        for emotion in ("ANG", "HAP", "SAD"):
            clip = clips.loc[emotion]
            frame = decode_frames(out / clip.video_path, {clip.peak_frame})[clip.peak_frame]
            peak[emotion] = expression_features(landmarks(detector, frame))
        assert peak["HAP"]["corner_lift"] > neutral["corner_lift"] + 0.03, speaker
        assert peak["SAD"]["corner_lift"] < neutral["corner_lift"] - 0.03, speaker
        assert peak["ANG"]["brow_height"] < neutral["brow_height"] - 0.015, speaker
        assert peak["ANG"]["inner_brow_gap"] < neutral["inner_brow_gap"] - 0.015, speaker


def test_frontal_and_peak_frames_are_distinct_and_frontal_is_frontal(corpus, detector) -> None:
    out, truth = corpus
    assert (truth.peak_frame != truth.frontal_frame).all()
    for clip in truth.itertuples():
        # |yaw| grows away from the frontal frame, so the farther end is the most turned
        last = clip.n_frames - 1
        turned = 0 if clip.frontal_frame > last - clip.frontal_frame else last
        frames = decode_frames(out / clip.video_path, {clip.frontal_frame, turned})

        def nose_offset(i: int, frames=frames) -> float:
            lms = landmarks(detector, frames[i])
            # nose tip relative to the midpoint of the face contour, in face widths
            return (lms[30, 0] - lms[[0, 16], 0].mean()) / (lms[16, 0] - lms[0, 0])

        assert abs(nose_offset(clip.frontal_frame)) + 0.04 < abs(nose_offset(turned)), clip.clip_id


def speech_runs(x: np.ndarray, rate: int, floor_db: float = -40.0,
                bridge_s: float = 0.4) -> list[tuple[float, float]]:
    """Return speech intervals: 10 ms frames above floor_db re. the loudest, short gaps bridged."""
    hop = rate // 100
    n = len(x) // hop
    rms = np.sqrt(np.mean(x[: n * hop].reshape(n, hop) ** 2, axis=1) + 1e-12)
    active = np.flatnonzero(20 * np.log10(rms / rms.max()) > floor_db)
    runs = [[active[0], active[0]]]
    for i in active[1:]:
        if (i - runs[-1][1]) * hop / rate <= bridge_s:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    return [(a * hop / rate, (b + 1) * hop / rate) for a, b in runs]


def test_audio_has_the_planned_speech_intervals(corpus) -> None:
    out, truth = corpus
    assert truth.long_pause.sum() == 4
    for clip in truth.itertuples():
        samples, rate = decode_audio(out / clip.video_path)
        assert abs(len(samples) / rate - clip.n_frames / clip.fps) < 0.05
        planned = json.loads(clip.speech_intervals)
        measured = speech_runs(samples, rate)
        assert len(measured) == len(planned), (clip.clip_id, measured, planned)
        for (a, b), (c, e) in zip(planned, measured, strict=True):
            assert abs(a - c) <= 0.05 and abs(b - e) <= 0.05, (clip.clip_id, measured, planned)
        if clip.long_pause:
            assert planned[1][0] - planned[0][1] > 1.0


def test_voices_follow_sex_and_face_geometry() -> None:
    speakers = plan_speakers(DemoCorpusParams(n_speakers=24))
    assert [s.actor_id for s in speakers] == list(range(1001, 1025))
    assert sum(s.sex == "Male" for s in speakers) == 12
    for sex in ("Male", "Female"):
        group = [s for s in speakers if s.sex == sex]
        breadth = [0.6 * s.geometry.jaw_width + 0.4 * s.geometry.face_width for s in group]
        pitch = [s.voice.pitch for s in group]
        assert np.corrcoef(breadth, pitch)[0, 1] < -0.9
        chin = [s.geometry.chin_length for s in group]
        assert np.corrcoef(chin, [s.voice.tract_scale for s in group])[0, 1] < -0.9
    male = [s.voice.pitch for s in speakers if s.sex == "Male"]
    female = [s.voice.pitch for s in speakers if s.sex == "Female"]
    assert np.mean(male) + 15 < np.mean(female)
    male_jaw = np.mean([s.geometry.jaw_width for s in speakers if s.sex == "Male"])
    female_jaw = np.mean([s.geometry.jaw_width for s in speakers if s.sex == "Female"])
    assert male_jaw > female_jaw


def test_flv_audio_rate_is_validated() -> None:
    with pytest.raises(ValueError, match=r"audio_rate"):
        DemoCorpusParams(audio_rate=16000)


def test_default_and_demo_corpus_plans_are_complete() -> None:
    # Plans, not renders (rendering 192-320 clips took 77 s of the suite; every render path
    # is exercised on the small corpus above and `make demo` renders the real one).
    default = DemoCorpusParams(n_speakers=24)  # another size than params.yaml's (the default)
    plans = plan_clips(default, plan_speakers(default))
    assert len(plans) == 192 == len({p.clip_id for p in plans})
    speakers = {p.speaker.actor_id: p.speaker.sex for p in plans}
    assert len(speakers) == 24
    assert list(speakers.values()).count("Male") == 12
    assert sum(p.long_pause for p in plans) == round(0.25 * 192)
    demo = load_params(REPO / "params.yaml", "download").demo
    plans = plan_clips(demo, plan_speakers(demo))
    per_speaker = len(demo.emotions) * len(demo.sentences)
    assert len({p.clip_id for p in plans}) == demo.n_speakers * per_speaker
    assert [p.speaker.sex for p in plans].count("Male") == demo.n_speakers // 2 * per_speaker
