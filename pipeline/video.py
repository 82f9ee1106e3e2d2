"""Streaming grayscale video decoding with PyAV, with typed errors for bad files.

Frames are yielded one at a time (a one-minute clip never sits in memory), as 2-D uint8
arrays. Every expected problem with a file becomes a :class:`~pipeline.runtime.QuarantineError`
with a stable reason:

- ``decode_error``: missing, zero-byte, unreadable or truncated file;
- ``no_video``: the container has no video stream (an audio-only file);
- ``no_frames``: a video stream that yields no frame.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from pipeline.runtime import QuarantineError

log = logging.getLogger(__name__)

_PLANAR_YUV = frozenset({"yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p"})
TRUNCATION_TOLERANCE = 0.9
"""A stream that declares N frames but decodes fewer than this share of them is truncated."""


@dataclass(frozen=True)
class VideoInfo:
    """What the container says about its first video stream."""

    width: int
    """Frame width in pixels."""
    height: int
    """Frame height in pixels."""
    fps: float
    """Average frame rate (0 when unknown)."""
    declared_frames: int
    """Frame count stored in the container (0 when the format does not store it)."""


def _open(path: Path) -> av.container.InputContainer:
    if not path.is_file():
        raise QuarantineError("decode_error", "file not found", path)
    if path.stat().st_size == 0:
        raise QuarantineError("decode_error", "zero-byte file", path)
    try:
        return av.open(str(path))
    except (av.error.FFmpegError, UnicodeDecodeError) as error:
        raise QuarantineError("decode_error", f"cannot open: {error}", path) from error


def _video_stream(container: av.container.InputContainer, path: Path) -> av.video.VideoStream:
    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams}) or ["none"]
        raise QuarantineError("no_video", f"no video stream (streams: {kinds})", path)
    stream = container.streams.video[0]
    stream.codec_context.thread_count = 1  # parallelism is over clips, one process per core
    return stream


def _gray(frame: av.VideoFrame) -> np.ndarray:
    """Return the frame's luma: a read-only view of the Y plane for planar YUV (no copy).

    The view keeps the decoded frame's buffer alive; the decoder allocates a new one for
    each frame, so it stays valid after decoding moves on. Rows may be padded (strided).
    """
    if frame.format.name in _PLANAR_YUV:
        plane = frame.planes[0]
        rows = np.frombuffer(plane, np.uint8).reshape(frame.height, plane.line_size)
        luma = rows[:, : frame.width]
    else:
        luma = frame.to_ndarray(format="gray")
    luma.flags.writeable = False
    return luma


def probe(path: str | Path) -> VideoInfo:
    """Return the :class:`VideoInfo` of ``path``'s first video stream (no decoding)."""
    path = Path(path)
    with _open(path) as container:
        stream = _video_stream(container, path)
        rate = stream.average_rate
        return VideoInfo(
            width=stream.codec_context.width,
            height=stream.codec_context.height,
            fps=float(rate) if rate else 0.0,
            declared_frames=int(stream.frames or 0),
        )


def iter_gray_frames(path: str | Path, max_frames: int | None = None) -> Iterator[np.ndarray]:
    """Yield the frames of ``path`` as read-only 2-D uint8 grayscale arrays, in display order.

    Decoding streams: only the current frame is held. Stops after ``max_frames`` frames.
    Raises :class:`QuarantineError` (``decode_error``, ``no_video``, ``no_frames``) for files
    that cannot be opened, hold no video, yield nothing, break off in the middle of the
    stream, or end well before the frame count their container declares (truncated).
    """
    path = Path(path)
    limit = max_frames if max_frames is not None else np.iinfo(np.int64).max
    n = 0
    with _open(path) as container:
        stream = _video_stream(container, path)
        declared = int(stream.frames or 0)
        try:
            for frame in container.decode(stream):
                if n >= limit:
                    return
                yield _gray(frame)
                n += 1
        except av.error.FFmpegError as error:
            raise QuarantineError(
                "decode_error", f"decoding broke off after {n} frames: {error}", path
            ) from error
    if n == 0:
        raise QuarantineError("no_frames", "the video stream yielded no frame", path)
    if declared and n < limit and n < TRUNCATION_TOLERANCE * declared:
        raise QuarantineError(
            "decode_error", f"truncated: decoded {n} of {declared} declared frames", path
        )


def read_gray_frame(path: str | Path, index: int) -> np.ndarray:
    """Return frame ``index`` (0-based, display order) of ``path`` as a 2-D uint8 array.

    Decodes from the start and stops at ``index``: exact for every codec (seeking by
    timestamp is not frame-accurate for all containers) and cheap at PyAV's decode rate.
    """
    for i, frame in enumerate(iter_gray_frames(path, max_frames=index + 1)):
        if i == index:
            return frame
    raise QuarantineError("decode_error", f"frame {index} is past the end", path)
