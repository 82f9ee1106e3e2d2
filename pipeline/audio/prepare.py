"""Voice preprocessing (003 section 4.1.2): decode, resample, remove long silences, tile.

One public entry point turns any media file into the model's input, so that training data
and a user's own recording at generation time go through exactly the same code:

    prepared = prepare_audio("clip.wav", AudioParams())
    prepared.pcm        # int16, exactly params.n_samples samples at params.sample_rate

Steps: decode the first audio stream in-process with PyAV (a WAV, an MP3, or a video's
track), mix to mono and resample with libswresample's band-limited resampler, decoding at
most ``max_input_s``; remove every silent interval of ``min_silence_s`` or longer (silence is
judged per 10 ms frame against the clip's own loud level, then its edges are refined to the
sample), keep shorter pauses; repeat the speech to the fixed length or cut it.

:func:`pipeline.audio.stage.process_catalogue` runs this over a stage's catalogue in
parallel and writes the ``AUDIO`` shards plus the stage report.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from pipeline.config import AudioParams
from pipeline.runtime import QuarantineError

log = logging.getLogger(__name__)

FRAME_S = 0.010
"""Length of the analysis frames that silence is judged on (10 ms)."""
LOUD_PERCENTILE = 99.0
"""The clip's level: this percentile of its frame levels (robust to a few clicks)."""
ROW_GROUP_ROWS = 256


@dataclass(frozen=True)
class PreparedAudio:
    """A clip ready for the voice encoder: fixed-length mono PCM plus what was done to it."""

    pcm: np.ndarray
    """int16 mono PCM, shape ``(params.n_samples,)``."""
    sample_rate: int
    """Sample rate of ``pcm`` in Hz."""
    original_duration_s: float
    """Duration of the decoded input (at most ``max_input_s``)."""
    speech_duration_s: float
    """Duration left after removing the long silences."""
    silences: tuple[tuple[float, float], ...]
    """Removed silent intervals ``(start_s, end_s)`` in the decoded input's time."""
    truncated: bool
    """True when the input was longer than ``max_input_s`` and decoding stopped there."""

    @property
    def silences_removed(self) -> int:
        """Return the number of silent intervals removed."""
        return len(self.silences)

    def waveform(self) -> np.ndarray:
        """Return ``pcm`` as float32 in [-1, 1), shape ``(n_samples,)``."""
        return pcm_to_float(self.pcm)


def pcm_to_float(pcm: np.ndarray) -> np.ndarray:
    """Return int16 PCM as float32 in [-1, 1) (divided by 32768)."""
    return pcm.astype(np.float32) / 32768.0


def float_to_pcm(wave: np.ndarray) -> np.ndarray:
    """Return a float waveform in [-1, 1] as int16 PCM (clipped, rounded)."""
    return np.clip(np.round(wave * 32767.0), -32768, 32767).astype(np.int16)


def prepare_audio(path: str | Path, params: AudioParams) -> PreparedAudio:
    """Return the model-ready fixed-length waveform of any media file's audio.

    Raises:
        QuarantineError: ``no_audio`` (no audio track), ``decode_error`` (missing or
            undecodable file), ``all_silent``, ``too_little_speech``.
    """
    wave, original_s, truncated = decode_audio(path, params.sample_rate, params.max_input_s)
    return prepare_waveform(wave, params, source=path, original_duration_s=original_s,
                            truncated=truncated)


def prepare_waveform(
    wave: np.ndarray,
    params: AudioParams,
    source: str | Path = "",
    original_duration_s: float | None = None,
    truncated: bool = False,
) -> PreparedAudio:
    """Return the fixed-length clip made from a mono float waveform at ``params.sample_rate``.

    Raises:
        QuarantineError: ``all_silent`` or ``too_little_speech``.
    """
    rate = params.sample_rate
    speech, silences = remove_long_silences(wave, rate, params, source=source)
    fixed = fit_length(speech, params.n_samples, params.crop)
    return PreparedAudio(
        pcm=float_to_pcm(fixed),
        sample_rate=rate,
        original_duration_s=len(wave) / rate if original_duration_s is None
        else original_duration_s,
        speech_duration_s=len(speech) / rate,
        silences=tuple((a / rate, b / rate) for a, b in silences),
        truncated=truncated,
    )


def remove_long_silences(
    wave: np.ndarray, sample_rate: int, params: AudioParams, source: str | Path = ""
) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Return ``(speech, removed silences)``: ``wave`` without its silences of ``min_silence_s``.

    ``sample_rate`` is the waveform's own (the audio stage's ``params.sample_rate``, or a
    pretrained encoder's rate), so every consumer removes silences with the same rule.

    Raises:
        QuarantineError: ``all_silent``, or ``too_little_speech`` when less than
            ``min_speech_s`` is left.
    """
    silences = find_long_silences(wave, sample_rate, params, source=source)
    speech = remove_intervals(wave, silences)
    if len(speech) < max(1, math.ceil(params.min_speech_s * sample_rate)):
        raise QuarantineError(
            "too_little_speech",
            f"{len(speech) / sample_rate:.2f} s of speech after removing silences, "
            f"need {params.min_speech_s} s",
            source,
        )
    return speech, silences


def decode_audio(
    path: str | Path, sample_rate: int, max_input_s: float
) -> tuple[np.ndarray, float, bool]:
    """Return ``(mono float32 waveform at sample_rate, its duration in s, truncated)``.

    Decodes the first audio stream of ``path`` with PyAV and resamples it with
    libswresample; stops after ``max_input_s`` seconds of input.

    Raises:
        QuarantineError: ``no_audio`` or ``decode_error``.
    """
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError) as error:
        raise QuarantineError("decode_error", f"cannot open: {error}", path) from error
    with container:
        if not container.streams.audio:
            raise QuarantineError("no_audio", "the file has no audio track", path)
        try:
            chunks, truncated = _decode_stream(container, sample_rate, max_input_s)
        except (av.FFmpegError, ValueError) as error:
            raise QuarantineError("decode_error", f"cannot decode audio: {error}", path) from error
    wave = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    if truncated:
        wave = wave[: round(max_input_s * sample_rate)]
    if len(wave) == 0:
        raise QuarantineError("no_audio", "the audio track holds no samples", path)
    return wave, len(wave) / sample_rate, truncated


def _decode_stream(
    container: av.container.InputContainer, sample_rate: int, max_input_s: float
) -> tuple[list[np.ndarray], bool]:
    """Return ``(resampled mono chunks, truncated)``: at most ``max_input_s`` of input.

    Decoded frames are gathered and resampled in one call per run of frames with the same
    format, layout and rate: one large frame costs half the CPU of a hundred small ones,
    and a mid-stream format change (rare, but legal) gets a fresh resampler.
    """
    stream = container.streams.audio[0]
    runs: list[tuple[tuple, list[np.ndarray]]] = []
    input_s = 0.0
    truncated = False
    for packet in container.demux(stream):
        for frame in packet.decode():
            input_s += frame.samples / frame.sample_rate
            key = (frame.format.name, frame.layout.name, frame.sample_rate)
            if not runs or runs[-1][0] != key:
                runs.append((key, []))
            runs[-1][1].append(frame.to_ndarray())
        if input_s >= max_input_s:
            truncated = input_s > max_input_s
            break
    return [_resample(np.concatenate(arrays, axis=1), *key, sample_rate)
            for key, arrays in runs], truncated


def resample(wave: np.ndarray, rate: int, target: int) -> np.ndarray:
    """Return a mono waveform resampled from ``rate`` to ``target`` Hz, as decoding does."""
    if rate == target:
        return wave.astype(np.float32, copy=False)
    return _resample(wave.astype(np.float32)[None, :], "flt", "mono", rate, target)


def _resample(samples: np.ndarray, fmt: str, layout: str, rate: int, target: int) -> np.ndarray:
    """Return decoded ``samples`` mixed to mono float32 and resampled to ``target`` Hz."""
    frame = av.AudioFrame.from_ndarray(samples, format=fmt, layout=layout)
    frame.sample_rate = rate
    resampler = av.AudioResampler(format="flt", layout="mono", rate=target)
    out = [*resampler.resample(frame), *resampler.resample(None)]
    return np.concatenate([o.to_ndarray()[0] for o in out]) if out else np.zeros(0, np.float32)


def frame_levels_db(wave: np.ndarray, sample_rate: int) -> tuple[np.ndarray, int]:
    """Return ``(RMS level in dBFS of each 10 ms frame, hop in samples)``; the last may be short."""
    hop = max(1, round(sample_rate * FRAME_S))
    starts = np.arange(0, len(wave), hop)
    energy = np.add.reduceat(wave.astype(np.float64) ** 2, starts)
    counts = np.diff(np.append(starts, len(wave)))
    return 10.0 * np.log10(energy / counts + 1e-20), hop


def find_long_silences(
    wave: np.ndarray, sample_rate: int, params: AudioParams, source: str | Path = ""
) -> list[tuple[int, int]]:
    """Return the silent intervals ``[start, end)`` (samples) at least ``min_silence_s`` long.

    A 10 ms frame is silent when its RMS is ``silence_threshold_db`` below the clip's level
    (the 99th percentile of frame levels); the edges of each silent run are then moved to the
    first / last sample that reaches the threshold, so intervals are accurate to the sample
    rather than the frame.

    Raises:
        QuarantineError: ``all_silent`` when even the loudest frames are below
            ``silence_floor_db`` dBFS (or the waveform is empty).
    """
    if len(wave) == 0:
        raise QuarantineError("all_silent", "empty waveform", source)
    levels, hop = frame_levels_db(wave, sample_rate)
    if levels.max() < params.silence_floor_db:
        raise QuarantineError(
            "all_silent",
            f"loudest 10 ms frame is {levels.max():.1f} dBFS < {params.silence_floor_db}",
            source,
        )
    threshold_db = np.percentile(levels, LOUD_PERCENTILE) + params.silence_threshold_db
    threshold_amp = 10.0 ** (threshold_db / 20.0)
    min_len = params.min_silence_s * sample_rate
    silences = []
    for first, last in _runs(levels < threshold_db):
        start = _refine_start(wave, first * hop, hop, threshold_amp)
        end = _refine_end(wave, min(last * hop, len(wave)), hop, threshold_amp)
        if end - start >= min_len - 0.5:
            silences.append((start, end))
    return silences


def _runs(mask: np.ndarray) -> Iterator[tuple[int, int]]:
    """Yield ``[first, last)`` index ranges where ``mask`` is True."""
    edges = np.flatnonzero(np.diff(np.concatenate(([0], mask.astype(np.int8), [0]))))
    yield from zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True)


def _refine_start(wave: np.ndarray, start: int, hop: int, threshold: float) -> int:
    """Move a silence's start back into the previous frame, up to its last loud sample."""
    before = np.abs(wave[max(0, start - hop):start])
    loud = np.flatnonzero(before >= threshold)
    return start - len(before) + (int(loud[-1]) + 1 if len(loud) else 0)


def _refine_end(wave: np.ndarray, end: int, hop: int, threshold: float) -> int:
    """Move a silence's end forward into the next frame, up to its first loud sample."""
    after = np.abs(wave[end:end + hop])
    loud = np.flatnonzero(after >= threshold)
    return end + (int(loud[0]) if len(loud) else len(after))


def remove_intervals(wave: np.ndarray, intervals: list[tuple[int, int]]) -> np.ndarray:
    """Return ``wave`` without the sample ranges ``intervals`` (sorted, disjoint)."""
    if not intervals:
        return wave
    keep = np.ones(len(wave), dtype=bool)
    for start, end in intervals:
        keep[start:end] = False
    return wave[keep]


def fit_length(speech: np.ndarray, n_samples: int, crop: str) -> np.ndarray:
    """Return ``speech`` repeated (tiled) or cut to exactly ``n_samples`` samples.

    ``crop`` chooses which part of longer speech is kept: ``start`` or ``centre``.
    """
    if len(speech) == 0:
        raise ValueError("cannot fit empty speech to a length")
    if len(speech) < n_samples:
        return np.tile(speech, math.ceil(n_samples / len(speech)))[:n_samples]
    offset = (len(speech) - n_samples) // 2 if crop == "centre" else 0
    return speech[offset:offset + n_samples]
