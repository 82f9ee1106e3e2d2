"""Mel-cepstra against SPTK's frequency transform on filters with a closed-form cepstrum."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.signal import freqz, lfilter

from pipeline.lips.mcep import (
    dither,
    frame_centres,
    frame_mel_cepstra,
    log_amplitude_spectrum,
    mel_alpha,
    mel_cepstral_distortion,
    mel_cepstrum,
)

ORDER = 31
ALPHA = 0.37
POLES = np.array([0.9 * np.exp(0.3j), 0.8 * np.exp(1.2j), 0.7 * np.exp(2.2j)])
GAIN = 0.5


def freqt(cepstrum: np.ndarray, order: int, alpha: float) -> np.ndarray:
    """SPTK's ``freqt``: the recursion that warps a linear cepstrum into a mel-cepstrum."""
    warped = np.zeros(order + 1)
    for value in cepstrum[::-1]:
        previous = warped.copy()
        warped[0] = value + alpha * previous[0]
        warped[1] = (1 - alpha * alpha) * previous[0] + alpha * previous[1]
        for m in range(2, order + 1):
            warped[m] = previous[m - 1] + alpha * (previous[m] - warped[m - 1])
    return warped


def all_pole_reference() -> tuple[np.ndarray, np.ndarray]:
    """Return (A(z) coefficients, reference mel-cepstrum) of ``GAIN / A(z)``.

    The cepstrum of a minimum-phase all-pole filter is ``c(0) = ln g``, ``c(n) = sum_k p_k^n / n``.
    """
    poles = np.concatenate([POLES, POLES.conj()])
    n = np.arange(1, 3000)
    cepstrum = np.concatenate([[np.log(GAIN)], (poles[None, :] ** n[:, None]).sum(1).real / n])
    return np.poly(poles).real, freqt(cepstrum, ORDER, ALPHA)


def test_mel_cepstrum_of_an_exact_envelope_is_sptks():
    denominator, reference = all_pole_reference()
    _, response = freqz([GAIN], denominator, worN=np.linspace(0, np.pi, 513))
    got = mel_cepstrum(np.log(np.abs(response)), ORDER, ALPHA)
    assert np.abs(got - reference).max() < 2e-4
    assert abs(reference[1]) > 0.5  # a non-trivial envelope


def test_mel_cepstrum_of_a_signal_is_sptks():
    """The periodogram of the filter's (decayed) impulse response is its envelope."""
    denominator, reference = all_pole_reference()
    impulse = np.zeros(1024)
    impulse[0] = 1.0
    response = lfilter([GAIN], denominator, impulse)
    got = mel_cepstrum(np.log(np.abs(np.fft.rfft(response))), ORDER, ALPHA)
    assert np.abs(got - reference).max() < 2e-4


def test_spectrum_from_mel_cepstrum_inverts_it():
    denominator, reference = all_pole_reference()
    _, response = freqz([GAIN], denominator, worN=np.linspace(0, np.pi, 257))
    assert np.abs(log_amplitude_spectrum(reference, ALPHA, 257)
                  - np.log(np.abs(response))).max() < 1e-3


def test_alpha_fits_the_mel_scale_like_sptks_table():
    assert mel_alpha(8000) == pytest.approx(0.31, abs=0.005)
    assert mel_alpha(10000) == pytest.approx(0.35, abs=0.01)
    assert mel_alpha(16000) == pytest.approx(0.42, abs=0.015)
    assert mel_alpha(12000) == pytest.approx(0.37, abs=0.005)


@pytest.mark.parametrize("fps", [25, 30])
@pytest.mark.parametrize("audio_frames", [-1, 0, 1])
def test_one_vector_per_video_frame_whatever_the_audio_length(fps, audio_frames):
    """A click in the middle of video frame k shows in frame k's vector, at 25 and 30 fps,
    for audio a frame shorter than, as long as, or a frame longer than the video."""
    rate, n_frames = 12000, 40
    wave = np.zeros((n_frames + audio_frames) * rate // fps, np.float32)
    for k in (0, 17, n_frames - 2):
        wave[frame_centres(n_frames, fps, rate)[k]] = 1.0
    mcep = frame_mel_cepstra(wave, rate, fps, n_frames, ORDER, ALPHA, window_s=0.02,
                             floor_db=-100.0)
    assert mcep.shape == (n_frames, ORDER + 1)
    energy = mcep[:, 0]
    assert set(np.flatnonzero(energy > energy.min() + 5)) == {0, 17, n_frames - 2}
    # The last frame: silence (zero-padded past the audio's end, or genuine silence).
    assert energy[-1] == pytest.approx(energy.min())


def test_frame_centres_are_the_middle_of_each_frame():
    assert frame_centres(3, 25, 12000).tolist() == [240, 720, 1200]
    assert frame_centres(2, 30000 / 1001, 12000).tolist() == [200, 601]  # 29.97 fps, rounded


def test_dither_is_reproducible_and_removes_the_silence_point():
    silence = np.zeros(24000, np.float32)
    once, again = dither(silence, -60.0, "clip"), dither(silence, -60.0, "clip")
    assert np.array_equal(once, again)
    assert not np.array_equal(once, dither(silence, -60.0, "other"))
    assert 20 * np.log10(once.std()) == pytest.approx(-60.0, abs=0.2)
    mcep = frame_mel_cepstra(once, 12000, 30, 50, ORDER, ALPHA, 0.05, -100.0)
    assert len(np.unique(mcep.round(4), axis=0)) == 50


def test_mcd_is_zero_for_equal_cepstra_and_ignores_energy():
    a = np.random.default_rng(0).normal(size=(4, 32))
    b = a.copy()
    b[:, 0] += 3.0
    assert mel_cepstral_distortion(a, b) == pytest.approx(np.zeros(4))
    b[:, 1] += 0.1
    assert mel_cepstral_distortion(a, b) == pytest.approx(10 / np.log(10) * np.sqrt(2 * 0.01))
