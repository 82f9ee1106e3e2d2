"""Synthetic voices for the demo corpus: espeak-ng, tied to the speaker's face and the emotion.

A speaker's voice is a smooth, deterministic function of their face geometry, so that
voice -> face is learnable and generalises to unseen speakers:

- base pitch: sex-typed, lower for a broader jaw and face;
- vocal-tract length: a longer chin scales all formants down (resampling, like a longer tube);
- speaking rate: faster for a wider mouth;
- espeak-ng voice variant (its formant set): picked by eye spacing within the sex's variants.

An emotion shifts pitch, rate and loudness (scaled by the clip's level).
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass

import numpy as np

from pipeline.download.demo.faces import FaceGeometry, sex_typed_mean

ESPEAK_RATE = 22050
"""Sample rate of espeak-ng's output."""
MALE_VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7")
FEMALE_VARIANTS = ("f1", "f2", "f3", "f4", "f5")

EMOTION_PROSODY: dict[str, tuple[float, float, float]] = {
    # emotion: (pitch shift in espeak units, rate factor, loudness factor)
    # Pitch shifts are kept below the spread of speakers' pitches within a sex, so that an
    # emotion does not make one speaker sound like another.
    "NEU": (0.0, 1.0, 1.0),
    "HAP": (6.0, 1.10, 1.25),
    "ANG": (3.0, 1.15, 1.8),
    "SAD": (-5.0, 0.80, 0.6),
    "FEA": (8.0, 1.20, 0.9),
    "DIS": (-3.0, 0.90, 0.95),
}
LEVEL_INTENSITY = {"LO": 0.5, "MD": 0.75, "HI": 1.0, "XX": 0.75}
"""How much of an emotion's prosody (and facial expression) a level shows."""


@dataclass(frozen=True)
class Voice:
    """A speaker's voice: espeak-ng settings plus a vocal-tract scale."""

    variant: str
    """espeak-ng voice variant (``en-us+<variant>``)."""
    pitch: float
    """espeak-ng base pitch, 0-99."""
    speed_wpm: float
    """Speaking rate in words per minute."""
    tract_scale: float
    """Formant (and pitch) scale applied by resampling; < 1 = longer vocal tract."""


def voice_for_face(g: FaceGeometry, male: bool) -> Voice:
    """Return the voice of a speaker with face ``g``: a smooth function of the geometry."""
    variants = MALE_VARIANTS if male else FEMALE_VARIANTS
    spacing = (g.eye_distance + 1) / 2
    variant = variants[min(len(variants) - 1, int(spacing * len(variants)))]
    # Deviations from the sex's mean face: the sex sets the register, the face moves within it.
    breadth = (0.6 * (g.jaw_width - sex_typed_mean("jaw_width", male))
               + 0.4 * (g.face_width - sex_typed_mean("face_width", male)))
    length = g.chin_length - sex_typed_mean("chin_length", male)
    return Voice(
        variant=variant,
        pitch=float(np.clip((25.0 if male else 65.0) - 24.0 * breadth, 2, 97)),
        speed_wpm=float(160.0 + 30.0 * g.mouth_width),
        tract_scale=float(1.0 - 0.08 * length),
    )


@dataclass(frozen=True)
class Prosody:
    """The clip-level delivery: the speaker's voice shifted by the emotion."""

    pitch: float
    speed_wpm: float
    loudness: float


def prosody_for(voice: Voice, emotion: str, level: str) -> Prosody:
    """Return the clip's pitch, rate and loudness for ``emotion`` at ``level``."""
    shift, rate, loud = EMOTION_PROSODY[emotion]
    k = LEVEL_INTENSITY[level]
    return Prosody(
        pitch=float(np.clip(voice.pitch + k * shift, 0, 99)),
        speed_wpm=float(voice.speed_wpm * (1 + k * (rate - 1))),
        loudness=float(1 + k * (loud - 1)),
    )


def espeak(text: str, variant: str, pitch: float, speed_wpm: float) -> np.ndarray:
    """Return espeak-ng's rendering of ``text`` as float32 samples at :data:`ESPEAK_RATE`."""
    cmd = [
        "espeak-ng", "--stdout", "-v", f"en-us+{variant}",
        "-p", str(round(pitch)), "-s", str(round(speed_wpm)), text,
    ]
    wav = subprocess.run(cmd, capture_output=True, check=True, timeout=60).stdout
    if wav[:4] != b"RIFF" or int.from_bytes(wav[24:28], "little") != ESPEAK_RATE:
        raise RuntimeError(f"espeak-ng returned no {ESPEAK_RATE} Hz WAV for {text!r}")
    # Streamed WAVs carry a placeholder length; the samples are everything after "data".
    start = wav.index(b"data") + 8
    pcm = np.frombuffer(wav[start : start + (len(wav) - start) // 2 * 2], "<i2")
    return pcm.astype(np.float32) / 32768.0


def speech_bounds(x: np.ndarray, rate: int, floor_db: float = -35.0) -> tuple[int, int]:
    """Return (first, last + 1) sample of speech: 5 ms frames above ``floor_db`` re. the peak."""
    hop = max(1, rate // 200)
    n = len(x) // hop
    rms = np.sqrt(np.mean(x[: n * hop].reshape(n, hop) ** 2, axis=1) + 1e-12)
    active = np.flatnonzero(rms > rms.max() * 10 ** (floor_db / 20))
    if active.size == 0:
        raise RuntimeError("synthesised segment is silent")
    return int(active[0] * hop), int(min(len(x), (active[-1] + 1) * hop))


def render_segment(text: str, voice: Voice, prosody: Prosody, rate: int) -> np.ndarray:
    """Return ``text`` spoken in ``voice``/``prosody``, trimmed, at ``rate`` Hz, RMS-scaled.

    The speech is cut where its 5 ms energy first and last comes within 35 dB of its peak.
    """
    raw = espeak(text, voice.variant, prosody.pitch, prosody.speed_wpm)
    first, last = speech_bounds(raw, ESPEAK_RATE)
    raw = raw[first:last]
    # y(t) = x(s t): all frequencies (formants, pitch) scale by s, like a shorter vocal tract.
    n_out = int(len(raw) / voice.tract_scale * rate / ESPEAK_RATE)
    source_pos = np.arange(n_out) * (voice.tract_scale * ESPEAK_RATE / rate)
    y = np.interp(source_pos, np.arange(len(raw)), raw).astype(np.float32)
    rms = float(np.sqrt(np.mean(y**2)))
    y = np.clip(y * (0.08 * prosody.loudness / max(rms, 1e-6)), -0.98, 0.98)
    # 10 ms fades: the recorded interval ends where the speech does, with digital silence
    # outside it, so any energy detector finds the same edges.
    fade = np.linspace(0.0, 1.0, min(len(y) // 4, rate // 100), dtype=np.float32)
    y[: len(fade)] *= fade
    y[len(y) - len(fade) :] *= fade[::-1]
    return y


def split_sentence(text: str) -> tuple[str, str]:
    """Return ``text`` split at the word boundary nearest its middle (for a long pause)."""
    words = text.split()
    if len(words) < 2:
        raise ValueError(f"cannot split a one-word sentence {text!r}")
    cut = max(1, min(len(words) - 1, round(len(words) / 2)))
    return " ".join(words[:cut]), " ".join(words[cut:])
