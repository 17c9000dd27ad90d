"""Recording conditions of a synthetic clip: room, microphone colour, noise floor, level, int16.

Real MUSIC-21 videos are filmed in different rooms with different microphones and levels; these
random per-clip conditions give the synthetic clips the same kind of nuisance variation, so a
separator cannot key on one fixed spectrum per class.
"""

from __future__ import annotations

import numpy as np
from scipy.signal import fftconvolve, lfilter

from contavsep.data.additive import band_noise


def record(signal: np.ndarray, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """Put ``signal`` in a random room, through a random microphone, at a random level.

    Shape: :math:`(S,)` float -> :math:`(S,)` int16 (peak between -10 and -1 dBFS).
    """
    n = signal.shape[0]
    peak = np.abs(signal).max()
    if not np.isfinite(peak) or peak < 1e-9:
        raise ValueError("cannot record a silent or non-finite signal")
    x = signal / peak

    # room: exponentially decaying, darkened noise as impulse response
    rt60 = rng.uniform(0.15, 0.6)
    ir_len = int(rt60 * sample_rate)
    ir = rng.standard_normal(ir_len) * np.exp(-6.9 * np.arange(ir_len) / ir_len)
    ir = lfilter([0.35], [1.0, -0.65], ir)
    ir /= np.sqrt((ir**2).sum())
    wet = rng.uniform(0.05, 0.3)
    y = x + wet * fftconvolve(x, ir)[:n]

    # microphone colour: blend towards a first-order low-pass (darker) or away from it (brighter)
    a = 1.0 - np.exp(-2 * np.pi * rng.uniform(800.0, 2500.0) / sample_rate)
    low = lfilter([a], [1.0, a - 1.0], y)
    y = y + rng.uniform(-0.25, 0.35) * (low - y)

    y *= 10 ** (rng.uniform(-10.0, -1.0) / 20) / (np.abs(y).max() + 1e-12)
    y += band_noise(n, sample_rate, (60.0, 5000.0), rng) * 10 ** (rng.uniform(-55.0, -45.0) / 20)
    return np.round(np.clip(y, -1.0, 1.0) * 32767.0).astype(np.int16)
