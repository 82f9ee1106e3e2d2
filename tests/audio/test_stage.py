import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

from pipeline.audio.prepare import fit_length, pcm_to_float, prepare_audio, prepare_waveform
from pipeline.config import AudioParams, to_dict
from pipeline.runtime import QuarantineError
from pipeline.schemas import AUDIO
from tests.conftest import REPO
from tests.factories import make_catalogue, speech_like, speech_with_pauses, write_media, write_wav

PARAMS = AudioParams()

# Pauses of 0.3, 0.6, 0.95 s stay; 1.05, 1.3, 2.0 and the trailing 1.1 s go. (At exactly
# 1.0 s the call is within the resampler's few-ms smear of the edges, so it is not tested.)
LAYOUT = [
    ("pause", 0.3), ("speech", 0.8), ("pause", 0.6), ("speech", 0.7), ("pause", 1.3),
    ("speech", 0.5), ("pause", 0.95), ("speech", 0.6), ("pause", 2.0), ("speech", 0.9),
    ("pause", 1.05), ("speech", 0.4), ("pause", 1.1),
]


def _expected_removed(pauses):
    return [(a, b) for a, b in pauses if b - a >= PARAMS.min_silence_s - 1e-9]


@pytest.mark.parametrize(("rate", "channels"), [(8000, 1), (16000, 1), (44100, 2), (48000, 2)])
def test_exactly_the_long_silences_are_removed(tmp_path, deterministic_rng, rate, channels):
    wave, pauses = speech_with_pauses(deterministic_rng, LAYOUT, rate)
    path = write_wav(tmp_path / f"clip_{rate}.wav", wave, rate, channels)
    prepared = prepare_audio(path, PARAMS)

    expected = _expected_removed(pauses)
    assert len(expected) == 4
    assert prepared.silences_removed == len(expected)
    for (start, end), (true_start, true_end) in zip(prepared.silences, expected, strict=True):
        assert start == pytest.approx(true_start, abs=0.020)
        assert end == pytest.approx(true_end, abs=0.020)
    total = sum(s for _, s in LAYOUT)
    removed = sum(b - a for a, b in expected)
    assert prepared.original_duration_s == pytest.approx(total, abs=0.01)
    assert prepared.speech_duration_s == pytest.approx(total - removed, abs=0.04)
    assert prepared.pcm.dtype == np.int16 and prepared.pcm.shape == (PARAMS.n_samples,)


def test_the_threshold_is_relative_to_the_clips_level(deterministic_rng):
    wave, pauses = speech_with_pauses(deterministic_rng, LAYOUT, PARAMS.sample_rate)
    quiet = prepare_waveform(wave * 0.01, PARAMS)  # 40 dB quieter, pauses included
    loud = prepare_waveform(wave, PARAMS)
    assert quiet.silences == loud.silences
    found = np.array(loud.silences).ravel()
    assert found == pytest.approx(np.array(_expected_removed(pauses)).ravel(), abs=0.002)


@pytest.mark.parametrize("speech_s", [0.6, 2.0, 3.67, 9.0])
def test_output_is_exactly_the_fixed_length(deterministic_rng, speech_s):
    wave = speech_like(deterministic_rng, speech_s, PARAMS.sample_rate)
    prepared = prepare_waveform(wave, PARAMS)
    assert prepared.pcm.shape == (29_360,)
    assert prepared.speech_duration_s == pytest.approx(speech_s, abs=1e-3)
    n = len(wave)
    if n < 29_360:  # tiled: the speech repeats verbatim
        repeat = prepared.pcm[n:2 * n]
        np.testing.assert_array_equal(repeat, prepared.pcm[:len(repeat)])
    np.testing.assert_allclose(pcm_to_float(prepared.pcm)[:100], wave[:100], atol=1 / 16000)


def test_fit_length_tiles_and_crops():
    speech = np.arange(10, dtype=np.float32)
    tiled = np.r_[speech, speech, speech[:5]]
    np.testing.assert_array_equal(fit_length(speech, 25, "start"), tiled)
    np.testing.assert_array_equal(fit_length(speech, 4, "start"), [0, 1, 2, 3])
    np.testing.assert_array_equal(fit_length(speech, 4, "centre"), [3, 4, 5, 6])


def test_media_formats_decode(tmp_path, deterministic_rng):
    wave = speech_like(deterministic_rng, 1.5, 44100)
    for path in (
        write_media(tmp_path / "a.mp3", wave, 44100, codec="libmp3lame"),
        write_media(tmp_path / "v.mpg", wave, 44100, codec="mp2", video=True),
    ):
        prepared = prepare_audio(path, PARAMS)
        assert prepared.pcm.shape == (PARAMS.n_samples,)
        assert prepared.original_duration_s == pytest.approx(1.5, abs=0.1), path
        assert np.abs(prepared.pcm).max() > 2000  # the voice survived decode and resampling


def test_resampling_is_band_limited(tmp_path):
    # A 6 kHz tone is above the 4 kHz Nyquist of 8 kHz output: it must vanish, not alias.
    rate = 48000
    t = np.arange(rate * 2) / rate
    tone = 0.5 * np.sin(2 * np.pi * 6000 * t) + 0.3 * np.sin(2 * np.pi * 440 * t)
    prepared = prepare_audio(write_wav(tmp_path / "tones.wav", tone, rate), PARAMS)
    spectrum = np.abs(np.fft.rfft(pcm_to_float(prepared.pcm)[:16000]))
    freqs = np.fft.rfftfreq(16000, 1 / 8000)
    alias = spectrum[np.abs(freqs - 2000) < 20].max()  # 6 kHz folds to 2 kHz
    wanted = spectrum[np.abs(freqs - 440) < 20].max()
    assert alias < wanted * 10 ** (-50 / 20)


@pytest.mark.parametrize(
    ("name", "reason"),
    [("silent.wav", "all_silent"), ("short.wav", "too_little_speech"),
     ("garbage.wav", "decode_error"), ("missing.wav", "decode_error"),
     ("video_only.mp4", "no_audio")],
)
def test_bad_inputs_are_quarantined_with_their_reason(tmp_path, deterministic_rng, name, reason):
    path = tmp_path / name
    if name == "silent.wav":
        write_wav(path, np.zeros(16000 * 3, np.float32), 16000)
    elif name == "short.wav":
        wave, _ = speech_with_pauses(deterministic_rng, [("speech", 0.3), ("pause", 3.0)], 16000)
        write_wav(path, wave, 16000)
    elif name == "garbage.wav":
        path.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" + bytes(range(256)) * 8)
    elif name == "video_only.mp4":
        write_media(path, None, 16000, video=True, seconds=0.5)
    with pytest.raises(QuarantineError) as caught:
        prepare_audio(path, PARAMS)
    assert caught.value.reason == reason
    assert str(path) in str(caught.value)


def test_long_inputs_are_capped(tmp_path, deterministic_rng):
    wave = speech_like(deterministic_rng, 12.0, 16000)
    params = dataclasses.replace(PARAMS, max_input_s=5.0)
    prepared = prepare_audio(write_wav(tmp_path / "long.wav", wave, 16000), params)
    assert prepared.truncated
    assert prepared.original_duration_s == pytest.approx(5.0, abs=0.05)
    assert prepared.speech_duration_s <= 5.0 + 1e-6


def test_real_grid_clips_process(grid_dir):
    clips = sorted(grid_dir.glob("*.mpg"))
    assert len(clips) >= 10
    for clip in clips:
        prepared = prepare_audio(clip, PARAMS)
        assert prepared.pcm.shape == (PARAMS.n_samples,)
        assert prepared.original_duration_s == pytest.approx(3.0, abs=0.1)
        assert 1.0 < prepared.speech_duration_s <= prepared.original_duration_s
        assert np.abs(prepared.pcm).max() > 1000


def test_real_mead_clips_have_no_audio(mead_dir):
    for clip in sorted(mead_dir.glob("*.mp4"))[:3]:
        with pytest.raises(QuarantineError) as caught:
            prepare_audio(clip, PARAMS)
        assert caught.value.reason == "no_audio"


def _run_stage(params_path: Path, catalogue: Path, out: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "stages.audio", "--params", str(params_path),
         "--catalogue", str(catalogue), "--out", str(out)],
        check=True, cwd=REPO, capture_output=True,
    )


def test_stage_cli_writes_sorted_shards_identical_for_any_worker_count(tmp_path, deterministic_rng):
    media = tmp_path / "media"
    media.mkdir()
    rows = []
    for i, rate in enumerate([16000, 44100, 48000, 22050, 8000]):
        wave, _ = speech_with_pauses(deterministic_rng,
                                     [("speech", 1.0), ("pause", 1.5), ("speech", 0.8)], rate)
        write_wav(media / f"c{i}.wav", wave, rate, channels=1 + i % 2)
        rows.append({"clip_id": f"clip{4 - i}", "speaker_id": "1001",
                     "audio_path": f"media/c{i}.wav", "video_path": "media/nothing.flv"})
    write_wav(media / "silent.wav", np.zeros(8000, np.float32), 8000)
    rows += [
        {"clip_id": "z_silent", "speaker_id": "1002", "audio_path": "media/silent.wav"},
        {"clip_id": "z_missing", "speaker_id": "1002", "video_path": "media/absent.flv"},
        {"clip_id": "z_none", "speaker_id": "1002"},
    ]
    catalogue = make_catalogue(tmp_path, rows)

    outputs = {}
    for workers in (1, 2):
        params_path = tmp_path / f"params{workers}.yaml"
        params = to_dict(dataclasses.replace(PARAMS, workers=workers))
        params_path.write_text(yaml.safe_dump({"audio": params}))
        _run_stage(params_path, catalogue, tmp_path / f"out{workers}")
        outputs[workers] = tmp_path / f"out{workers}"

    one, two = outputs[1], outputs[2]
    names = sorted(p.name for p in one.iterdir())
    assert names == ["audio-00000.parquet", "quarantine.parquet", "report.json"]
    for name in names:
        assert (one / name).read_bytes() == (two / name).read_bytes(), name
    table = pq.read_table(one / "audio-00000.parquet")
    assert table.schema.equals(AUDIO, check_metadata=True)
    assert table.column("clip_id").to_pylist() == [f"clip{i}" for i in range(5)]
    assert set(table.column("n_samples").to_pylist()) == {PARAMS.n_samples}
    assert set(table.column("silences_removed").to_pylist()) == {1}
    quarantine = pq.read_table(one / "quarantine.parquet").to_pylist()
    assert {(r["item"], r["reason"]) for r in quarantine} == {
        ("z_silent", "all_silent"), ("z_missing", "decode_error"), ("z_none", "no_audio")}
    assert table.num_rows + len(quarantine) == len(rows)


@pytest.mark.slow
def test_demo_corpus_speech_intervals_are_found(tmp_path):
    from pipeline.config import DemoCorpusParams
    from pipeline.download.demo import corpus as demo_corpus

    params = DemoCorpusParams(n_speakers=2, emotions=("ANG", "SAD"), sentences=("IEO",),
                              long_pause_fraction=1.0)
    truth = demo_corpus.write_corpus(tmp_path, params, workers=1)
    assert len(truth) == 4
    for _, row in truth.iterrows():
        speech = json.loads(row["speech_intervals"])
        edges = [0.0, *[t for interval in speech for t in interval], row["duration_s"]]
        gaps = [(a, b) for a, b in zip(edges[::2], edges[1::2], strict=True)
                if b - a >= PARAMS.min_silence_s]
        assert gaps, "the corpus was asked for a long pause in every clip"
        prepared = prepare_audio(tmp_path / row["video_path"], PARAMS)
        assert len(prepared.silences) == len(gaps), row["clip_id"]
        for (start, end), (gap_start, gap_end) in zip(prepared.silences, gaps, strict=True):
            # The synthetic voice fades out below the -35 dB threshold in its last ~20 ms,
            # so the detected silence may start that much before the planned interval ends.
            assert gap_start - 0.030 <= start <= gap_start + 0.005, row["clip_id"]
            assert end == pytest.approx(gap_end, abs=0.020), row["clip_id"]
        kept = row["duration_s"] - sum(b - a for a, b in gaps)
        assert prepared.speech_duration_s == pytest.approx(kept, abs=0.04)


@pytest.mark.parametrize("workers", [1, 2])
def test_stage_cli_fails_when_no_clip_is_kept_after_writing_the_report(tmp_path, workers):
    write_wav(tmp_path / "silent.wav", np.zeros(8000, np.float32), 8000)
    catalogue = make_catalogue(tmp_path, [
        {"clip_id": "a_silent", "audio_path": "silent.wav"}, {"clip_id": "b_none"}])
    params_path = tmp_path / "params.yaml"
    params_path.write_text(yaml.safe_dump(
        {"audio": to_dict(dataclasses.replace(PARAMS, workers=workers))}))
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "stages.audio", "--params", str(params_path),
         "--catalogue", str(catalogue), "--out", str(out)],
        cwd=REPO, capture_output=True, text=True,
    )
    assert done.returncode == 1, done.stderr
    assert (f"audio: no audio kept of 2 clips; quarantined by reason: all_silent 1, no_audio 1; "
            f"see {out / 'report.json'} and quarantine.parquet") in done.stderr
    assert "Traceback" not in done.stderr
    assert sorted(p.name for p in out.iterdir()) == ["quarantine.parquet", "report.json"]
    assert json.loads((out / "report.json").read_text())["rejected"] == 2
