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
from typing import NamedTuple

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


class TimedFrame(NamedTuple):
    """One decoded frame and where it sits in its file."""

    gray: np.ndarray
    """Read-only 2-D uint8 luma."""
    pts: int
    """Presentation timestamp in the stream's time base (-1: the container gives none)."""
    seek_pos: int
    """Byte offset of the frame's packet when it is a keyframe decoding can restart from
    (:func:`iter_gray_frames_between`); -1 otherwise."""


def _packet_frames(container: av.container.InputContainer,
                   stream: av.video.VideoStream) -> Iterator[tuple[av.VideoFrame, int]]:
    """Yield the stream's frames with the byte offset of their keyframe packet (-1: none)."""
    keyframes: dict[int, int] = {}  # pts -> offset; decoders may reorder frames
    for packet in container.demux(stream):
        if packet.is_keyframe and packet.pts is not None and packet.pos is not None:
            keyframes[packet.pts] = packet.pos
        for frame in packet.decode():
            offset = keyframes.pop(frame.pts, -1) if frame.key_frame else -1
            yield frame, offset


def iter_timed_frames(path: str | Path, max_frames: int | None = None) -> Iterator[TimedFrame]:
    """Yield the frames of ``path`` as :class:`TimedFrame`, in display order.

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
            for frame, offset in _packet_frames(container, stream):
                if n >= limit:
                    return
                pts = frame.pts if frame.pts is not None else -1
                yield TimedFrame(_gray(frame), pts, offset)
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


def iter_gray_frames(path: str | Path, max_frames: int | None = None) -> Iterator[np.ndarray]:
    """Yield the frames of ``path`` as read-only 2-D uint8 grayscale arrays, in display order.

    The streaming and the errors of :func:`iter_timed_frames`.
    """
    for frame in iter_timed_frames(path, max_frames):
        yield frame.gray


def iter_gray_frames_between(path: str | Path, first: int, last: int, pts: np.ndarray,
                             seek_pos: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(index, frame)`` for frames ``first`` to ``last`` (inclusive) of ``path``.

    ``pts`` and ``seek_pos`` are every frame's :class:`TimedFrame` fields from an earlier
    full pass. Decoding restarts at the last keyframe at or before ``first`` (a byte seek
    or a timestamp seek, :func:`_frames_after_seek`), and every frame's timestamp is checked
    against ``pts``; where the container cannot seek so, or a timestamp differs, it decodes
    from the start instead. Either way the frames are those of a decode from the start:
    decoding from a keyframe needs no earlier frame.
    """
    path = Path(path)
    starts = np.flatnonzero(seek_pos[: first + 1] >= 0)
    start = int(starts[-1]) if starts.size else 0
    wanted = first  # the next frame to yield
    if start > 0 and (pts[start:last + 1] >= 0).all():
        for index, frame in _frames_after_seek(path, start, last, pts, seek_pos):
            if index >= first:
                yield index, frame
                wanted = index + 1
        if wanted > last:
            return
        log.debug("%s: seeking fell short; decoding frames %d-%d from the start", path,
                  wanted, last)
    for index, frame in enumerate(iter_gray_frames(path, last + 1)):
        if index >= wanted:
            yield index, frame


def _frames_after_seek(path: Path, start: int, last: int, pts: np.ndarray,
                       seek_pos: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(index, frame)`` from a keyframe at or before ``start`` up to ``last``.

    Tries a byte seek (MPEG program streams, FLV), then a timestamp seek (MP4, which
    refuses byte seeks; Matroska, whose byte seeks land early); decoding must restart on
    a keyframe of ``pts`` no later than ``start``, and stops where a timestamp differs.
    """
    restarts = {int(pts[i]): int(i) for i in np.flatnonzero(seek_pos[: start + 1] >= 0)}
    with _open(path) as container:
        stream = _video_stream(container, path)
        for by_bytes in (True, False):
            yielded = False
            try:
                if by_bytes:
                    container.seek(int(seek_pos[start]), stream=stream,
                                   unsupported_byte_offset=True)
                else:
                    container.seek(int(pts[start]), stream=stream)
                frames = container.decode(stream)
                frame = next(frames, None)
                if frame is None or not frame.key_frame or frame.pts not in restarts:
                    continue
                index = restarts[frame.pts]
                while frame is not None and frame.pts == pts[index]:
                    yield index, _gray(frame)
                    yielded = True
                    if index == last:
                        return
                    index += 1
                    frame = next(frames, None)
                return
            except av.error.FFmpegError as error:  # the caller decodes from the start
                log.debug("%s: seek (bytes: %s) failed: %s", path, by_bytes, error)
                if yielded:
                    return


def read_gray_frame(path: str | Path, index: int) -> np.ndarray:
    """Return frame ``index`` (0-based, display order) of ``path`` as a 2-D uint8 array.

    Decodes from the start and stops at ``index``: exact for every codec (seeking by
    timestamp is not frame-accurate for all containers) and cheap at PyAV's decode rate.
    """
    for i, frame in enumerate(iter_gray_frames(path, max_frames=index + 1)):
        if i == index:
            return frame
    raise QuarantineError("decode_error", f"frame {index} is past the end", path)
