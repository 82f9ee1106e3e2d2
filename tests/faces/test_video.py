import itertools
import subprocess
from pathlib import Path

import av
import numpy as np
import pytest

from pipeline.faces.video import iter_gray_frames, probe, read_gray_frame
from pipeline.runtime import QuarantineError


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-y", *args], check=True)


@pytest.fixture
def grid_clip(grid_dir) -> Path:
    return grid_dir / "bbaf2n.mpg"


def reason_of(path, **kwargs) -> str:
    with pytest.raises(QuarantineError) as info:
        list(iter_gray_frames(path, **kwargs))
    assert str(path) in str(info.value)  # the message names the file
    return info.value.reason


def test_streams_every_frame_as_2d_uint8(grid_clip):
    frames = iter_gray_frames(grid_clip)
    first = next(frames)  # a generator: one frame decoded, not the clip
    assert first.shape == (288, 360) and first.dtype == np.uint8
    assert not first.flags.writeable  # a view of the decoder's frame: no copy per frame
    kept = first.copy()
    assert 1 + sum(1 for _ in frames) == 75  # 3 s at 25 fps
    assert np.array_equal(first, kept)  # a held frame outlives the decoding of the next ones
    info = probe(grid_clip)
    assert (info.width, info.height, info.fps) == (360, 288, 25.0)


def test_luma_matches_ffmpeg_gray_conversion(grid_clip):
    with av.open(str(grid_clip)) as container:
        reference = next(container.decode(video=0)).to_ndarray(format="gray").astype(int)
    ours = next(iter_gray_frames(grid_clip)).astype(int)
    # Same picture; ours is the raw luma (no limited->full range stretch).
    assert np.corrcoef(ours.ravel(), reference.ravel())[0, 1] > 0.999


def test_max_frames_and_random_access_agree(grid_clip):
    first_ten = list(iter_gray_frames(grid_clip, max_frames=10))
    assert len(first_ten) == 10
    assert np.array_equal(read_gray_frame(grid_clip, 7), first_ten[7])
    with pytest.raises(QuarantineError, match="past the end"):
        read_gray_frame(grid_clip, 75)


def test_zero_byte_and_missing_files_are_decode_errors(tmp_path):
    empty = tmp_path / "empty.mp4"
    empty.touch()
    assert reason_of(empty) == "decode_error"
    assert reason_of(tmp_path / "missing.mp4") == "decode_error"
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(np.random.default_rng(0).bytes(5000))
    assert reason_of(garbage) == "decode_error"


def test_audio_only_file_has_no_video(tmp_path, grid_clip):
    wav = tmp_path / "voice.wav"
    ffmpeg("-i", str(grid_clip), "-vn", str(wav))
    assert reason_of(wav) == "no_video"


def test_truncated_videos_are_decode_errors(tmp_path, grid_clip):
    # moov atom at the end: cutting the file loses the index -> cannot open.
    plain = tmp_path / "plain.mp4"
    ffmpeg("-i", str(grid_clip), "-an", "-c:v", "libx264", "-preset", "ultrafast", str(plain))
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(plain.read_bytes()[: plain.stat().st_size // 2])
    assert reason_of(cut) == "decode_error"
    # moov atom first: the index survives, the frames it lists do not.
    faststart = tmp_path / "faststart.mp4"
    ffmpeg("-i", str(plain), "-c", "copy", "-movflags", "+faststart", str(faststart))
    cut_fast = tmp_path / "cut_fast.mp4"
    cut_fast.write_bytes(faststart.read_bytes()[: faststart.stat().st_size // 2])
    with pytest.raises(QuarantineError, match="truncated") as info:
        list(iter_gray_frames(cut_fast))
    assert info.value.reason == "decode_error"
    assert len(list(iter_gray_frames(faststart))) == 75  # the intact file passes


def test_a_video_without_frames_is_quarantined(tmp_path):
    path = tmp_path / "no_frames.mkv"
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x64:rate=25", "-frames:v", "0", "-c:v", "mpeg4",
           str(path))
    assert path.stat().st_size > 0
    assert reason_of(path) == "decode_error"  # FFmpeg cannot even open a frameless stream


def test_a_long_clip_streams_in_constant_memory(tmp_path, grid_clip):
    import tracemalloc

    long_clip = tmp_path / "long.mp4"
    ffmpeg("-stream_loop", "7", "-i", str(grid_clip), "-an", "-c:v", "libx264", "-preset",
           "ultrafast", str(long_clip))  # 24 s, 600 frames
    tracemalloc.start()
    n = sum(1 for _ in itertools.islice(iter_gray_frames(long_clip), 600))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert n == 600
    assert peak < 20 * 288 * 360  # a handful of frames, not 600 of them (62 MB)


def keyframes_by_ffprobe(path: Path) -> list[int]:
    out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v", "-show_entries",
                          "frame=key_frame", "-of", "csv=p=0", str(path)], check=True,
                         capture_output=True, text=True).stdout.split()
    return [i for i, key in enumerate(out) if key.strip(",") == "1"]


@pytest.mark.parametrize("encoding", ["grid", "flv", "mp4_bframes", "mpeg2_bframes"])
def test_windows_decode_from_the_keyframe_before_them_to_the_same_frames(
        tmp_path, grid_clip, encoding, monkeypatch):
    import pipeline.faces.video as video

    path = grid_clip
    if encoding != "grid":  # one I frame every 12, as GRID and CREMA-D's FLV
        path = tmp_path / {"flv": "c.flv", "mp4_bframes": "c.mp4", "mpeg2_bframes": "c.mpg"}[
            encoding]
        codec = {"flv": ["flv"], "mp4_bframes": ["libx264", "-bf", "2"],
                 "mpeg2_bframes": ["mpeg2video", "-bf", "2"]}[encoding]
        ffmpeg("-i", str(grid_clip), "-an", "-g", "12", "-c:v", *codec, str(path))
    timed = list(video.iter_timed_frames(path))
    whole = [t.gray.copy() for t in timed]
    pts = np.array([t.pts for t in timed])
    seek_pos = np.array([t.seek_pos for t in timed])
    assert set(np.flatnonzero(seek_pos >= 0)) <= set(keyframes_by_ffprobe(path))
    from_start = []

    def decode_from_start(*args):
        from_start.append(args)
        return iter_gray_frames(*args)

    monkeypatch.setattr(video, "iter_gray_frames", decode_from_start)
    for first, last in ((40, 50), (3, 9), (24, 24), (70, 74)):
        got = list(video.iter_gray_frames_between(path, first, last, pts, seek_pos))
        assert [i for i, _ in got] == list(range(first, last + 1))
        assert all(np.array_equal(frame, whole[i]) for i, frame in got), (first, last)
    if encoding == "mpeg2_bframes":
        return  # open GOPs: no restart point the timestamps confirm -> from the start
    assert np.array_equal(np.flatnonzero(seek_pos >= 0), np.arange(0, 75, 12))
    assert len(from_start) == 1  # only (3, 9), before the second keyframe
