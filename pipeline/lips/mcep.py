"""Mel-cepstra of speech, one vector per video frame (001 section 4.1: 32 dimensions, 12 kHz).

The mel-cepstrum ``c~(0..M)`` of a frame is the cosine series of its log amplitude spectrum
on the frequency axis warped by the first-order all-pass ``(z^-1 - a) / (1 - a z^-1)``
(SPTK's definition; Tokuda et al. 1994):

    ln |X(e^{jw})| = c~(0) + sum_{m >= 1} c~(m) cos(m w~),
    w~ = w + 2 arctan(a sin w / (1 - a cos w)).

It is computed directly: the log spectrum is resampled on a uniform grid of warped
frequencies and projected on the cosines (one fixed matrix per setting, so a whole clip is
one matrix product). This is the exact warping of the frame's log periodogram, the
quantity SPTK's ``freqt`` computes from a linear cepstrum (the tests check the two agree
on filters whose cepstrum is known in closed form); SPTK's ``mcep`` instead estimates the
envelope iteratively (UELS), which smooths the harmonics' valleys a little more. ``pysptk``
has no wheel for Python 3.11, hence numpy.

Framing: video frame ``i`` of a clip at ``fps`` is shown over ``[i, i + 1) / fps``; its
audio vector is taken from a window of ``window_s`` centred on ``(i + 0.5) / fps``
(rounded to the nearest sample), so there is exactly one vector per video frame whatever
the audio's length. Samples before the audio's start or after its end count as silence
(zeros), so the first and last windows are zero-padded; a clip whose audio and video
lengths differ by more than a tolerance is rejected before this (:mod:`pipeline.lips.stage`).
"""

from __future__ import annotations

import functools
import zlib

import numpy as np
from scipy.signal import get_window

SPTK_ALPHAS = {8000: 0.31, 10000: 0.35, 16000: 0.42}
"""All-pass constants that SPTK's manual gives per sample rate (Hz); for 12 kHz,
:func:`mel_alpha` gives 0.37 (0.369)."""


def warp_frequency(omega: np.ndarray, alpha: float) -> np.ndarray:
    """Return the all-pass phase response ``w~(w)`` for ``omega`` in [0, pi] (inverse: -alpha)."""
    omega = np.asarray(omega, dtype=np.float64)
    return omega + 2.0 * np.arctan(alpha * np.sin(omega) / (1.0 - alpha * np.cos(omega)))


def mel_alpha(sample_rate: float, n_points: int = 1000) -> float:
    """Return the all-pass constant whose warping best fits the mel scale at ``sample_rate``.

    The least-squares fit over ``n_points`` frequencies of the normalised warped axis to the
    normalised mel scale ``ln(1 + f / 1000)`` (the search SPTK users run, e.g.
    ``pysptk.util.mcepalpha``), on a 0.001 grid: 0.31 at 8 kHz, 0.37 at 12 kHz, 0.41 at 16
    kHz (SPTK's manual: 0.42).
    """
    frequency = (sample_rate / 2.0) / n_points * np.arange(1, n_points + 1)
    mel = np.log1p(frequency / 1000.0)
    mel /= mel[-1]
    omega = np.pi * np.arange(1, n_points + 1) / n_points
    alphas = np.round(np.arange(0.0, 1.0, 0.001), 3)
    errors = [np.mean((warp_frequency(omega, a) / np.pi - mel) ** 2) for a in alphas]
    return float(alphas[int(np.argmin(errors))])


@functools.lru_cache(maxsize=8)
def _projection(n_bins: int, order: int, alpha: float) -> np.ndarray:
    """Return the ``(n_bins, order + 1)`` matrix: log spectrum on ``n_bins`` -> mel-cepstrum.

    The log spectrum, sampled at ``w_k = pi k / (n_bins - 1)``, is linearly interpolated at
    the frequencies ``w(w~_j)`` of a uniform warped grid ``w~_j`` (``n_bins`` points), then
    integrated against ``cos(m w~)`` by the trapezoid rule (exact for the even, periodic
    integrand's trigonometric polynomials of degree below ``2 (n_bins - 1)``).
    """
    warped = np.linspace(0.0, np.pi, n_bins)
    source = warp_frequency(warped, -alpha) * (n_bins - 1) / np.pi  # fractional bin index
    low = np.clip(np.floor(source).astype(int), 0, n_bins - 2)
    fraction = source - low
    interpolate = np.zeros((n_bins, n_bins))
    columns = np.arange(n_bins)
    interpolate[low, columns] += 1.0 - fraction
    interpolate[low + 1, columns] += fraction
    weights = np.full(n_bins, 1.0 / (n_bins - 1))
    weights[[0, -1]] /= 2.0  # trapezoid: (1 / pi) * integral over [0, pi]
    cosines = np.cos(np.outer(warped, np.arange(order + 1))) * weights[:, None]
    cosines[:, 1:] *= 2.0  # c~(m) for m >= 1 carries both e^{+-jm w~}
    return interpolate @ cosines


def mel_cepstrum(log_amplitude: np.ndarray, order: int, alpha: float) -> np.ndarray:
    """Return the ``(..., order + 1)`` mel-cepstra of log amplitude spectra ``(..., n_bins)``.

    ``log_amplitude`` holds ``ln |X|`` at ``n_bins`` evenly spaced frequencies from 0 to the
    Nyquist frequency (an ``rfft``'s bins).
    """
    log_amplitude = np.asarray(log_amplitude, dtype=np.float64)
    return log_amplitude @ _projection(log_amplitude.shape[-1], order, float(alpha))


def log_amplitude_spectrum(mcep: np.ndarray, alpha: float, n_bins: int) -> np.ndarray:
    """Return ``ln |X|`` at ``n_bins`` frequencies 0..Nyquist from mel-cepstra ``(..., M + 1)``.

    The inverse of :func:`mel_cepstrum` (up to the truncation of the series): the spectra of
    001 Fig. 2 are drawn from it.
    """
    mcep = np.asarray(mcep, dtype=np.float64)
    warped = warp_frequency(np.linspace(0.0, np.pi, n_bins), alpha)
    return mcep @ np.cos(np.outer(np.arange(mcep.shape[-1]), warped))


def frame_centres(n_frames: int, fps: float, sample_rate: int) -> np.ndarray:
    """Return the sample at the middle of each video frame, ``round((i + 0.5) rate / fps)``."""
    return np.round((np.arange(n_frames) + 0.5) * sample_rate / fps).astype(np.int64)


def frame_mel_cepstra(wave: np.ndarray, sample_rate: int, fps: float, n_frames: int,
                      order: int, alpha: float, window_s: float,
                      floor_db: float) -> np.ndarray:
    """Return the ``(n_frames, order + 1)`` float32 mel-cepstra of ``wave``, one per video frame.

    Each frame's window (Blackman, ``window_s`` long) is centred on the middle of the video
    frame (:func:`frame_centres`); samples outside ``wave`` are zeros. The power spectrum
    is normalised by the window's energy (white noise of variance ``v`` gives ``v`` in every
    bin) and floored at ``floor_db`` dB before the log, so digital silence is finite.
    """
    length = max(2, round(window_s * sample_rate))
    window = get_window("blackman", length, fftbins=False)
    n_fft = 1 << int(np.ceil(np.log2(length)))
    starts = frame_centres(n_frames, fps, sample_rate) - length // 2
    padded = np.zeros(len(wave) + 2 * length, dtype=np.float64)
    padded[length:length + len(wave)] = wave
    starts = np.clip(starts + length, 0, len(padded) - length)  # beyond the pad is silence too
    frames = padded[starts[:, None] + np.arange(length)] * window
    power = np.abs(np.fft.rfft(frames, n=n_fft, axis=1)) ** 2 / np.sum(window ** 2)
    floor = 10.0 ** (floor_db / 10.0)
    log_amplitude = 0.5 * np.log(np.maximum(power, floor))
    return mel_cepstrum(log_amplitude, order, alpha).astype(np.float32)


def dither(wave: np.ndarray, level_db: float, key: str) -> np.ndarray:
    """Return ``wave`` plus white noise of RMS ``level_db`` dBFS, seeded by ``key``.

    Digital silence (the demo corpus's pauses are exact zeros) makes every silent frame's
    mel-cepstrum the same vector: a point mass that a Gaussian density model fits by
    shrinking its variances towards zero (maximum likelihood is unbounded there). A faint
    noise floor, as every real recording has, removes it; the seed (``key``, e.g. the clip
    id) keeps the output reproducible.
    """
    rng = np.random.default_rng(zlib.crc32(key.encode("utf-8")))
    noise = rng.standard_normal(len(wave)) * 10.0 ** (level_db / 20.0)
    return (np.asarray(wave, np.float64) + noise).astype(np.float32)


def mel_cepstral_distortion(reference: np.ndarray, estimate: np.ndarray) -> np.ndarray:
    """Return the per-frame mel-cepstral distortion in dB, ``(n,)``, over coefficients 1..M.

    ``(10 / ln 10) sqrt(2 sum_{m >= 1} (c(m) - c^(m))^2)``: the usual definition (Kubichek
    1993), which leaves out the energy ``c(0)``.
    """
    difference = np.asarray(reference, np.float64)[:, 1:] - np.asarray(estimate, np.float64)[:, 1:]
    return 10.0 / np.log(10.0) * np.sqrt(2.0 * np.sum(difference ** 2, axis=1))
