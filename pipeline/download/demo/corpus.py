"""The embedded synthetic CREMA-D-like corpus, written deterministically from a seed.

``write_corpus(out_dir, params)`` writes, like CREMA-D::

    out_dir/VideoFlash/<ActorID>_<Sentence>_<EMO>_<Level>.flv   480x360, 30 fps, FLV + audio
    out_dir/VideoDemographics.csv                              ActorID,Age,Sex,Race,Ethnicity

plus what CREMA-D lacks and tests need: ``ground_truth.csv`` (per clip: the speaker's face
geometry and voice, the peak-expression and the most frontal frame, the exact speech
intervals) and ``contact_sheet.png`` (one peak frame per speaker x emotion).

Faces come from :mod:`pipeline.download.demo.faces`, voices from
:mod:`pipeline.download.demo.voices`. Every random choice is drawn from generators seeded by
``(seed, speaker)`` or ``(seed, clip)``, so
the output does not depend on the number of worker processes. Audio is stored as 16-bit PCM
in the FLV: unlike MP3 or AAC it has no encoder delay, so the planned speech intervals are
exact in the decoded track.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import logging
import subprocess
import tempfile
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from pipeline.config import DemoCorpusParams
from pipeline.download.demo.faces import (
    SHAPE_FIELDS,
    FaceAnimator,
    FaceGeometry,
    SpeakerFace,
    base_face,
    render_speaker,
    sample_factors,
    sample_geometry,
)
from pipeline.download.demo.voices import (
    LEVEL_INTENSITY,
    Voice,
    prosody_for,
    render_segment,
    split_sentence,
    voice_for_face,
)
from pipeline.images import image_grid, save_png
from pipeline.runtime import atomic_path, atomic_write_text, default_workers

log = logging.getLogger(__name__)

SENTENCES = {
    "IEO": "It's eleven o'clock",
    "TIE": "That is exactly what happened",
    "IOM": "I'm on my way to the meeting",
    "IWW": "I wonder what this is about",
    "TAI": "The airplane is almost full",
    "MTI": "Maybe tomorrow it will be cold",
    "IWL": "I would like a new alarm clock",
    "ITH": "I think I have a doctor's appointment",
    "DFA": "Don't forget a jacket",
    "ITS": "I think I've seen this before",
    "TSI": "The surface is slick",
    "WSI": "We'll stop in a couple of minutes",
}
"""CREMA-D's twelve sentences by code."""
FIRST_ACTOR_ID = 1001
VIDEO_DIR = "VideoFlash"
DEMOGRAPHICS_CSV = "VideoDemographics.csv"
GROUND_TRUTH_CSV = "ground_truth.csv"
CONTACT_SHEET_PNG = "contact_sheet.png"
DEMOGRAPHICS_COLUMNS = ("ActorID", "Age", "Sex", "Race", "Ethnicity")

# CREMA-D's vocabulary and roughly its proportions (91 actors).
_RACES = (("Caucasian", 0.67), ("African American", 0.23), ("Asian", 0.08), ("Unknown", 0.02))
_SKIN_TONE = {"Caucasian": (0.96, 1.1), "African American": (0.62, 0.78),
              "Asian": (0.9, 1.0), "Unknown": (0.8, 1.0)}
_TILE = 200  # frame pixels around the face shown per contact-sheet tile (halved)


@dataclass(frozen=True)
class Speaker:
    """A synthetic actor: demographics, face and voice."""

    actor_id: int
    sex: str
    age: int
    race: str
    ethnicity: str
    geometry: FaceGeometry
    voice: Voice
    shift: tuple[float, float]
    """Offset (x, y) of the face in the frame, in photo pixels."""


@dataclass(frozen=True)
class ClipPlan:
    """Everything that defines one clip before it is rendered."""

    clip_id: str
    speaker: Speaker
    sentence: str
    emotion: str
    level: str
    long_pause: bool
    seed: tuple[int, ...]


def plan_speakers(params: DemoCorpusParams) -> list[Speaker]:
    """Return the corpus's speakers, half male, half female, in ActorID order."""
    order = np.random.default_rng([params.seed, 0]).permutation(params.n_speakers)
    speakers = []
    for index in range(params.n_speakers):
        rng = np.random.default_rng([params.seed, 1, index])
        male = bool(order[index] % 2 == 0)
        race = str(rng.choice([r for r, _ in _RACES], p=[p for _, p in _RACES]))
        factors = sample_factors(rng)
        geometry = sample_geometry(rng, male, float(rng.uniform(*_SKIN_TONE[race])), factors)
        speakers.append(Speaker(
            actor_id=FIRST_ACTOR_ID + index,
            sex="Male" if male else "Female",
            age=int(rng.integers(20, 75)),
            race=race,
            ethnicity="Hispanic" if rng.random() < 0.12 else "Not Hispanic",
            geometry=geometry,
            voice=voice_for_face(geometry, male),
            shift=(float(rng.uniform(-8, 8)), float(rng.uniform(-5, 5))),
        ))
    return speakers


def plan_clips(params: DemoCorpusParams, speakers: list[Speaker]) -> list[ClipPlan]:
    """Return one plan per speaker x sentence x emotion; exactly a share get a long pause."""
    rng = np.random.default_rng([params.seed, 2])
    combos = [(s, sent, emo) for s in speakers for sent in params.sentences
              for emo in params.emotions]
    n_pause = round(params.long_pause_fraction * len(combos))
    paused = set(rng.permutation(len(combos))[:n_pause].tolist())
    levels = ("LO", "MD", "HI", "XX")
    plans = []
    for i, (speaker, sentence, emotion) in enumerate(combos):
        level = "XX" if emotion == "NEU" else levels[int(rng.integers(len(levels)))]
        plans.append(ClipPlan(
            clip_id=f"{speaker.actor_id}_{sentence}_{emotion}_{level}",
            speaker=speaker, sentence=sentence, emotion=emotion, level=level,
            long_pause=i in paused, seed=(params.seed, 3, i),
        ))
    return plans


@dataclass(frozen=True)
class ClipAudio:
    """A clip's soundtrack and where its speech is."""

    samples: np.ndarray
    intervals: list[tuple[float, float]]


def render_audio(plan: ClipPlan, rng: np.random.Generator, rate: int, fps: int) -> ClipAudio:
    """Return the clip's audio (a whole number of video frames long) and speech intervals."""
    voice = plan.speaker.voice
    prosody = prosody_for(voice, plan.emotion, plan.level)
    text = SENTENCES[plan.sentence]
    parts = split_sentence(text) if plan.long_pause else (text,)
    segments = [render_segment(part, voice, prosody, rate) for part in parts]
    pieces = [np.zeros(int(rng.uniform(0.25, 0.45) * rate), np.float32)]
    intervals = []
    for k, segment in enumerate(segments):
        if k:
            pieces.append(np.zeros(int(rng.uniform(1.15, 1.45) * rate), np.float32))
        start = sum(len(p) for p in pieces)
        pieces.append(segment)
        intervals.append((start / rate, (start + len(segment)) / rate))
    speech_end = sum(len(p) for p in pieces)
    total = max(speech_end + int(rng.uniform(0.25, 0.45) * rate), int(2.0 * rate))
    n_frames = -(-total * fps // rate)
    samples = np.zeros(n_frames * rate // fps, np.float32)
    samples[:speech_end] = np.concatenate(pieces)
    return ClipAudio(samples, intervals)


TURN_FRAMES = 4.0
"""Time constant (frames) of the head turn: yaw = A tanh((frame - frontal) / TURN_FRAMES)."""
APEX_SHARPNESS = 0.1
"""Expression decay constant as a share of the clip: intensity = a exp(-|frame - peak| / (s n))."""


@dataclass(frozen=True)
class Motion:
    """Per-frame expression intensity, mouth opening and yaw, with the key frames."""

    intensity: np.ndarray
    mouth: np.ndarray
    yaw_deg: np.ndarray
    peak_frame: int
    frontal_frame: int


def plan_motion(n_frames: int, amplitude: float, mouth: np.ndarray,
                rng: np.random.Generator) -> Motion:
    """Return the clip's motion: the expression rises to one peak, the head sweeps once.

    The yaw passes through 0 exactly once (the most frontal frame) and its magnitude grows
    away from it; the peak frame is at least a quarter of the clip away, so frame-selection
    modes ("frontal" vs "peak emotion") pick different frames.
    """
    frames = np.arange(n_frames)
    peak = int(rng.integers(round(0.35 * n_frames), round(0.65 * n_frames) + 1))
    gap = max(4, n_frames // 4)
    candidates = [f for f in range(round(0.1 * n_frames), round(0.9 * n_frames) + 1)
                  if abs(f - peak) >= gap]
    frontal = int(rng.choice(candidates))
    amplitude_deg = float(rng.uniform(10, 16)) * (1 if rng.random() < 0.5 else -1)
    # A quick head turn through frontal (~3 deg a frame at the crossing) and an expression
    # with a sharp apex (~25% weaker 2 frames away): the ground truth frames stand out from
    # their neighbours by more than landmark jitter, so "within 2 frames" is measurable. A
    # slow sweep or a broad Gaussian makes frames +-2 away differ by < 1 degree or < 2%.
    yaw = amplitude_deg * np.tanh((frames - frontal) / TURN_FRAMES)
    intensity = amplitude * np.exp(-np.abs(frames - peak) / (APEX_SHARPNESS * n_frames))
    return Motion(intensity, mouth, yaw, peak, frontal)


def mouth_opening(samples: np.ndarray, rate: int, fps: int) -> np.ndarray:
    """Return the per-frame mouth opening in [0, 1] from the speech envelope."""
    n_frames = len(samples) * fps // rate
    edges = np.arange(n_frames + 1) * rate // fps
    energy = np.add.reduceat(samples[: edges[-1]] ** 2, edges[:-1])
    rms = np.sqrt(energy / np.diff(edges))
    opening = np.clip(rms / max(np.percentile(rms, 95), 1e-6), 0, 1)
    smooth = np.convolve(opening, [0.25, 0.5, 0.25], mode="same")
    return 0.7 * smooth


@functools.lru_cache(maxsize=2)
def _speaker_face(speaker: Speaker, width: int, height: int) -> SpeakerFace:
    return render_speaker(speaker.geometry, (width, height), speaker.shift)


def render_frames(plan: ClipPlan, motion: Motion, params: DemoCorpusParams) -> Iterator[np.ndarray]:
    """Yield the clip's (H, W, 3) uint8 frames."""
    face = _speaker_face(plan.speaker, params.width, params.height)
    animator = FaceAnimator(face, plan.emotion)
    for a, m, yaw in zip(motion.intensity, motion.mouth, motion.yaw_deg, strict=True):
        yield animator.frame(float(a), float(m), float(yaw))


def encode_flv(frames: Iterator[np.ndarray], samples: np.ndarray, params: DemoCorpusParams,
               path: Path) -> None:
    """Write frames + mono audio to ``path`` as FLV (flv1 video, PCM audio), bit-exactly."""
    with tempfile.TemporaryDirectory(prefix="demo-clip-") as tmp:
        audio_path, log_path = Path(tmp) / "audio.s16le", Path(tmp) / "ffmpeg.log"
        audio_path.write_bytes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
        cmd = [
            "ffmpeg", "-hide_banner", "-loglevel", "error", "-threads", "1",
            "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{params.width}x{params.height}",
            "-r", str(params.fps), "-i", "pipe:0",
            "-f", "s16le", "-ar", str(params.audio_rate), "-ac", "1", "-i", str(audio_path),
            "-map", "0:v", "-map", "1:a", "-c:v", "flv", "-q:v", "3", "-pix_fmt", "yuv420p",
            "-c:a", "pcm_s16le", "-map_metadata", "-1", "-fflags", "+bitexact",
            "-flags:v", "+bitexact", "-flags:a", "+bitexact", "-f", "flv", "-y", str(path),
        ]
        with open(log_path, "wb") as log_file:
            # Frames go straight into ffmpeg's stdin (stderr to a file, so nothing can fill a
            # pipe and deadlock): no 40 MB buffer per clip, no polling loop.
            proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=log_file)
            try:
                with proc.stdin:
                    for frame in frames:
                        proc.stdin.write(frame.tobytes())
            except BrokenPipeError:
                pass  # ffmpeg died; its exit status and log say why
            finally:
                returncode = proc.wait(timeout=300)
        if returncode:
            error = log_path.read_text(errors="replace")[-500:]
            raise RuntimeError(f"ffmpeg failed writing {path}: {error}")


def render_clip(plan: ClipPlan, params: DemoCorpusParams, out_dir: Path) -> tuple[dict, np.ndarray]:
    """Write one clip's FLV atomically; return its ground-truth row and a contact tile."""
    rng = np.random.default_rng(list(plan.seed))
    audio = render_audio(plan, rng, params.audio_rate, params.fps)
    n_frames = len(audio.samples) * params.fps // params.audio_rate
    amplitude = 0.0 if plan.emotion == "NEU" else 0.6 + 0.4 * LEVEL_INTENSITY[plan.level]
    mouth = mouth_opening(audio.samples, params.audio_rate, params.fps)
    motion = plan_motion(n_frames, amplitude, mouth, rng)
    tile: list[np.ndarray] = []

    def frames_keeping_peak() -> Iterator[np.ndarray]:
        for i, frame in enumerate(render_frames(plan, motion, params)):
            if i == motion.peak_frame:
                tile.append(_contact_tile(frame, plan, params))
            yield frame

    path = out_dir / VIDEO_DIR / f"{plan.clip_id}.flv"
    with atomic_path(path) as tmp:
        encode_flv(frames_keeping_peak(), audio.samples, params, tmp)
    return _ground_truth_row(plan, params, audio, motion, amplitude), tile[0]


def _contact_tile(frame: np.ndarray, plan: ClipPlan, params: DemoCorpusParams) -> np.ndarray:
    face = _speaker_face(plan.speaker, params.width, params.height)
    cx, cy = face.landmarks.mean(0).astype(int)
    half = _TILE // 2
    x0 = int(np.clip(cx - half, 0, params.width - _TILE))
    y0 = int(np.clip(cy - half, 0, params.height - _TILE))
    crop = frame[y0 : y0 + _TILE, x0 : x0 + _TILE].astype(np.float32)
    gray = crop @ np.array([0.299, 0.587, 0.114], np.float32)
    return gray.reshape(half, 2, half, 2).mean((1, 3)).astype(np.uint8)


def _ground_truth_row(plan: ClipPlan, params: DemoCorpusParams, audio: ClipAudio,
                      motion: Motion, amplitude: float) -> dict:
    s = plan.speaker
    row = {
        "clip_id": plan.clip_id, "speaker_id": s.actor_id, "sex": s.sex, "age": s.age,
        "emotion": plan.emotion, "level": plan.level, "sentence": plan.sentence,
        "text": SENTENCES[plan.sentence], "video_path": f"{VIDEO_DIR}/{plan.clip_id}.flv",
        "n_frames": len(motion.yaw_deg), "fps": params.fps,
        "duration_s": round(len(audio.samples) / params.audio_rate, 6),
        "peak_frame": motion.peak_frame, "frontal_frame": motion.frontal_frame,
        "expression_amplitude": round(amplitude, 4),
        "peak_yaw_deg": round(float(motion.yaw_deg[motion.peak_frame]), 3),
        "max_abs_yaw_deg": round(float(np.abs(motion.yaw_deg).max()), 3),
        "speech_intervals": json.dumps([[round(a, 4), round(b, 4)] for a, b in audio.intervals]),
        "long_pause": plan.long_pause,
    }
    row.update({f"face_{k}": round(v, 5) for k, v in asdict(s.geometry).items()})
    row.update({f"voice_{k}": round(v, 5) if isinstance(v, float) else v
                for k, v in asdict(s.voice).items()})
    prosody = prosody_for(s.voice, plan.emotion, plan.level)
    row.update({f"clip_{k}": round(v, 5) for k, v in asdict(prosody).items()})
    return row


def _render_task(task: tuple[ClipPlan, DemoCorpusParams, Path]) -> tuple[dict, np.ndarray]:
    return render_clip(*task)


def write_demographics(path: Path, speakers: list[Speaker]) -> None:
    """Write ``VideoDemographics.csv`` exactly in CREMA-D's format (strings quoted)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, quoting=csv.QUOTE_NONNUMERIC, lineterminator="\n")
    writer.writerow(DEMOGRAPHICS_COLUMNS)
    for s in speakers:
        writer.writerow([s.actor_id, s.age, s.sex, s.race, s.ethnicity])
    atomic_write_text(path, buffer.getvalue())


def write_corpus(out_dir: Path, params: DemoCorpusParams, workers: int = 0) -> pd.DataFrame:
    """Write the demo corpus into ``out_dir``; return its ground-truth table (one row a clip).

    Files are written atomically; FLVs of an earlier run that the plan no longer contains
    are removed from ``out_dir/VideoFlash`` so the folder always equals the plan.
    """
    out_dir = Path(out_dir)
    speakers = plan_speakers(params)
    plans = plan_clips(params, speakers)
    _remove_stale_videos(out_dir / VIDEO_DIR, {p.clip_id for p in plans})
    base_face()  # run dlib on the photo once, before forking, so workers inherit it
    tasks = [(plan, params, out_dir) for plan in plans]
    n_workers = min(default_workers(workers), len(tasks))
    log.info("writing %d demo clips of %d speakers with %d workers", len(plans),
             len(speakers), n_workers)
    per_speaker = len(params.emotions) * len(params.sentences)
    progress = functools.partial(tqdm, total=len(tasks), desc="demo corpus", unit="clip")
    if n_workers <= 1:
        results = list(progress(map(_render_task, tasks)))
    else:
        with ProcessPoolExecutor(n_workers) as pool:
            results = list(progress(pool.map(_render_task, tasks, chunksize=per_speaker)))
    rows = [row for row, _ in results]
    write_demographics(out_dir / DEMOGRAPHICS_CSV, speakers)
    truth = pd.DataFrame(rows).sort_values("clip_id", ignore_index=True)
    with atomic_path(out_dir / GROUND_TRUTH_CSV) as tmp:
        truth.to_csv(tmp, index=False, lineterminator="\n")
    _write_contact_sheet(out_dir / CONTACT_SHEET_PNG, plans, results, params)
    return truth


def _write_contact_sheet(path: Path, plans: list[ClipPlan], results: list, params) -> None:
    """Save one peak frame per speaker x emotion (first sentence), four speakers per row."""
    tiles, labels = [], []
    for plan, (_, tile) in zip(plans, results, strict=True):
        if plan.sentence == params.sentences[0]:
            tiles.append(tile)
            labels.append(f"{plan.speaker.actor_id}{plan.speaker.sex[0]} {plan.emotion}")
    ncols = len(params.emotions) * min(4, params.n_speakers)
    save_png(image_grid(tiles, ncols=ncols, labels=labels), path)


def _remove_stale_videos(video_dir: Path, keep: set[str]) -> None:
    if not video_dir.is_dir():
        return
    for stale in sorted(p for p in video_dir.glob("*.flv") if p.stem not in keep):
        log.info("removing %s: not in the demo corpus plan", stale)
        stale.unlink()


__all__ = ["SENTENCES", "SHAPE_FIELDS", "ClipPlan", "Speaker", "plan_clips", "plan_speakers",
           "write_corpus"]
