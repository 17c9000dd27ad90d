"""Recording conditions of a synthetic clip: room, microphone colour, noise floor, level, int16.

Real MUSIC-21 videos are filmed in different rooms with different microphones and levels; these
random per-clip conditions give the synthetic clips the same kind of nuisance variation, so a
separator cannot key on one fixed spectrum per class.
"""

from __future__ import annotations

import numpy as np

from contavsep.data.synthetic.additive import band_noise


def _one_pole_response(freqs: np.ndarray, cutoff_hz: float, sample_rate: int) -> np.ndarray:
    """Frequency response of the one-pole low-pass ``y[n] = a x[n] + (1 - a) y[n-1]``."""
    a = 1.0 - np.exp(-2 * np.pi * cutoff_hz / sample_rate)
    return a / (1.0 - (1.0 - a) * np.exp(-2j * np.pi * freqs / sample_rate))


def record(signal: np.ndarray, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """Put ``signal`` in a random room, through a random microphone, at a random level.

    Room and microphone are applied as one filter in the frequency domain: a reverb (an
    exponentially decaying, darkened noise impulse response) mixed in at a random level, then a
    blend towards (darker) or away from (brighter) a first-order low-pass.

    Shape: :math:`(S,)` float -> :math:`(S,)` int16 (peak between -10 and -1 dBFS).
    """
    n = signal.shape[0]
    peak = np.abs(signal).max()
    if not np.isfinite(peak) or peak < 1e-9:
        raise ValueError("cannot record a silent or non-finite signal")
    x = signal / peak

    rt60 = rng.uniform(0.15, 0.6)
    ir_len = int(rt60 * sample_rate)
    ir = rng.standard_normal(ir_len) * np.exp(-6.9 * np.arange(ir_len) / ir_len)
    n_fft = 1 << int(n + ir_len - 1).bit_length()  # linear, not circular, convolution
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    room = np.fft.rfft(ir, n_fft) * _one_pole_response(freqs, 1300.0, sample_rate)
    room /= np.sqrt(np.mean(np.abs(room) ** 2)) + 1e-12  # unit-energy reverb
    mic = 1.0 + rng.uniform(-0.25, 0.35) * (_one_pole_response(freqs, rng.uniform(800.0, 2500.0), sample_rate) - 1.0)
    y = np.fft.irfft(np.fft.rfft(x, n_fft) * (1.0 + rng.uniform(0.05, 0.3) * room) * mic, n_fft)[:n]

    y *= 10 ** (rng.uniform(-10.0, -1.0) / 20) / (np.abs(y).max() + 1e-12)
    y += band_noise(n, sample_rate, (60.0, 5000.0), rng) * 10 ** (rng.uniform(-55.0, -45.0) / 20)
    return np.round(np.clip(y, -1.0, 1.0) * 32767.0).astype(np.int16)
