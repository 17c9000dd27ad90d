"""Additive synthesis of note events with an instrument :class:`~contavsep.data.synthetic.instruments.Timbre`.

Four engines, each a caricature of how its family makes sound:

- ``sustained`` (winds, bowed strings, brass, free reeds): each voice is one continuous pitch
  track (glides between notes, vibrato that fades in), harmonics shaped by spectral tilt,
  odd/even balance, formants and loudness-dependent brightness, an attack/release envelope per
  note, band-limited breath/bow/bellows noise following the envelope, onset transients, and an
  optional second detuned voice (accordion beating). Harmonics are summed with the Chebyshev
  recurrence ``sin((k+1)p) = 2 cos(p) sin(kp) - sin((k-1)p)``: one ``sin``/``cos`` per sample
  instead of one per harmonic.
- ``plucked`` (struck/plucked strings and bars): per note, partials at stiff-string
  (inharmonic) or explicit mode ratios, an excitation-point comb, exponential decays that get
  faster with partial number and pitch, damping at note off, optional press-bends.
- ``drums`` (kit pieces) and ``congas`` (membrane modes, slaps, mutes, bass tones).

All output is float64 at an arbitrary level; ``recording.py`` sets the final level.
"""

from __future__ import annotations

import functools

import numpy as np

from contavsep.data.synthetic.instruments import Timbre
from contavsep.data.synthetic.score import (
    CONGA_STROKES,
    CRASH,
    HAT_CLOSED,
    HAT_OPEN,
    KICK,
    RIDE,
    SNARE,
    TOM_HIGH,
    TOM_LOW,
    TOM_MID,
    NoteEvent,
)

# Highest partial frequency kept, as a fraction of the sample rate (below Nyquist: no aliasing).
PARTIAL_LIMIT = 0.47


def midi_to_hz(pitch: np.ndarray | float) -> np.ndarray:
    return 440.0 * 2.0 ** ((np.asarray(pitch, dtype=np.float64) - 69.0) / 12.0)


def band_noise(n: int, sample_rate: int, band: tuple[float, float], rng: np.random.Generator) -> np.ndarray:
    """Unit-variance noise with a 4th-order-like high-pass at ``band[0]`` and low-pass at ``band[1]``
    (Hz), shaped in the frequency domain (random complex spectrum -> one inverse FFT).

    Shape: :math:`(n,)` float64.
    """
    n_fft = 1 << max(int(n - 1).bit_length(), 1)
    gain = _band_gain(n_fft, sample_rate, float(band[0]), float(band[1]))
    spec = (rng.standard_normal(gain.shape[0]) + 1j * rng.standard_normal(gain.shape[0])) * gain
    x = np.fft.irfft(spec, n_fft)[:n]
    return x / (x.std() + 1e-12)


@functools.lru_cache(maxsize=32)
def _band_gain(n_fft: int, sample_rate: int, lo: float, hi: float) -> np.ndarray:
    f = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    gain = 1.0 / (1.0 + (lo / np.maximum(f, 1e-3)) ** 4) / (1.0 + (f / hi) ** 4)
    gain.setflags(write=False)
    return gain


def smooth_steps(target: np.ndarray, time_constant: float, sample_rate: int) -> np.ndarray:
    """A piecewise-constant ``target`` followed by a one-pole lag of ``time_constant`` seconds
    (portamento): after each step the output approaches the new value exponentially.

    Shape: :math:`(S,)` -> :math:`(S,)` float64.
    """
    n = target.shape[0]
    starts = np.concatenate([[0], np.flatnonzero(np.diff(target)) + 1])
    ends = np.concatenate([starts[1:], [n]])
    out = np.empty(n)
    decay = 1.0 / max(time_constant * sample_rate, 1e-6)
    value = float(target[0])
    for s, e in zip(starts, ends):
        goal = float(target[s])
        out[s:e] = goal + (value - goal) * np.exp(-decay * np.arange(1, e - s + 1))
        value = float(out[e - 1])
    return out


def formant_db(freqs: np.ndarray, formants: tuple[tuple[float, float, float], ...]) -> np.ndarray:
    """Level (dB) added by resonances ``(centre, bandwidth, gain)`` at ``freqs`` (any shape)."""
    out = np.zeros_like(freqs, dtype=np.float64)
    for fc, bw, gain in formants:
        out += gain / (1.0 + ((freqs - fc) / (bw / 2.0)) ** 2)
    return out


def _onset_bursts(
    onsets: np.ndarray, velocities: np.ndarray, n: int, sample_rate: int, decay_s: float = 0.008
) -> np.ndarray:
    env = np.zeros(n)
    length = int(0.04 * sample_rate)
    shape = np.exp(-np.arange(length) / (decay_s * sample_rate))
    for s, v in zip(onsets, velocities):
        if s < n:
            m = min(length, n - s)
            env[s : s + m] += v * shape[:m]
    return env


def _transients(
    onsets: np.ndarray, velocities: np.ndarray, t: Timbre, n: int, sr: int, rng: np.random.Generator
) -> np.ndarray:
    if t.transient_db <= -59 or len(onsets) == 0:
        return np.zeros(n)
    return (
        band_noise(n, sr, t.transient_band, rng)
        * _onset_bursts(onsets, velocities, n, sr)
        * 10 ** (t.transient_db / 20)
        * 2.0
    )


# ----------------------------------------------------------------------------------------------
# sustained


def _sustained_voice(notes: list[NoteEvent], t: Timbre, n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    onsets = np.array([min(int(e.onset * sr), n - 1) for e in notes])
    ends = np.array([min(n, int((e.onset + e.duration) * sr)) for e in notes])
    ends[:-1] = np.minimum(ends[:-1], np.maximum(onsets[1:], onsets[:-1] + 1))  # monophonic line
    pitch = np.array([e.pitch for e in notes]) + rng.normal(0.0, 0.04, len(notes))  # intonation
    vel = np.array([e.velocity for e in notes])

    idx = np.full(n, -1, dtype=np.int64)
    for i in range(len(notes)):
        idx[onsets[i] : ends[i]] = i
    pos = np.where(idx >= 0, np.arange(n), -1)
    np.maximum.accumulate(pos, out=pos)
    held = np.where(pos >= 0, idx[np.maximum(pos, 0)], 0)  # the note sounding or last sounded

    track = smooth_steps(pitch[held], max(t.glide_s, 1e-4), sr)

    time = np.arange(n) / sr
    max_cents = 0.0
    if t.vibrato_cents > 0:
        since = np.maximum(time - onsets[held] / sr, 0.0)
        ramp = np.clip(since / t.vibrato_delay_s, 0.0, 1.0) if t.vibrato_delay_s > 0 else 1.0
        rate = t.vibrato_hz * (1.0 + 0.06 * np.sin(2 * np.pi * 0.23 * time + rng.uniform(0, 2 * np.pi)))
        cents = t.vibrato_cents * ramp * np.sin(2 * np.pi * np.cumsum(rate) / sr + rng.uniform(0, 2 * np.pi))
        track = track + cents / 100.0
        max_cents = t.vibrato_cents
    f0 = midi_to_hz(track)

    # per-note harmonic amplitudes (K, notes), normalised to unit power
    k = np.arange(1, t.harmonics + 1, dtype=np.float64)[:, None]
    f0_notes = midi_to_hz(pitch)[None, :]
    level = (t.slope_db + t.brightness_db * (vel[None, :] - 0.7)) * np.log2(k) + t.even_db * (k % 2 == 0)
    level = level + formant_db(k * f0_notes, t.formants)
    amp = 10.0 ** (level / 20.0) * (k * f0_notes * 2 ** ((max_cents + 50) / 1200) < PARTIAL_LIMIT * sr)
    amp /= np.sqrt((amp**2).sum(axis=0, keepdims=True)) + 1e-12
    k_max = int(np.flatnonzero(amp.any(axis=1)).max()) + 1 if amp.any() else 1

    amp32 = amp[:k_max].astype(np.float32)

    def harmonic_sum(phase: np.ndarray) -> np.ndarray:
        # float32 is accurate enough here (error ~ k_max**2 * 1e-7) and halves the memory traffic
        s_prev, s_cur = np.zeros(n, np.float32), np.sin(phase).astype(np.float32)
        c2 = (2.0 * np.cos(phase)).astype(np.float32)
        out = amp32[0][held] * s_cur
        tmp = np.empty(n, np.float32)
        for h in range(1, k_max):
            np.multiply(c2, s_cur, out=tmp)
            tmp -= s_prev
            s_prev, s_cur, tmp = s_cur, tmp, s_prev
            out += amp32[h][held] * s_cur
        return out.astype(np.float64)

    phase = 2 * np.pi * np.cumsum(f0) / sr + rng.uniform(0, 2 * np.pi)
    tone = harmonic_sum(phase)
    if t.detune_cents > 0:
        detuned = phase * 2 ** (t.detune_cents / 1200) + rng.uniform(0, 2 * np.pi)
        tone = 0.5 * (tone + harmonic_sum(detuned))

    env = np.zeros(n)
    rel_len = int(4 * t.release_s * sr) + 1
    for i in range(len(notes)):
        s = onsets[i]
        dur = (ends[i] - s) / sr
        length = min(n - s, ends[i] - s + rel_len)
        tl = np.arange(length) / sr
        attack = 1.0 - np.exp(-tl / max(t.attack_s / 3.0, 1e-4))
        swell = 1.0 + 0.08 * np.sin(np.pi * np.clip(tl / max(dur, 1e-3), 0.0, 1.0))
        release = np.where(tl < dur, 1.0, np.exp(-(tl - dur) / max(t.release_s, 1e-3)))
        np.maximum(env[s : s + length], vel[i] * attack * swell * release, out=env[s : s + length])

    out = env * tone
    if t.noise_db > -59:
        out += band_noise(n, sr, t.noise_band, rng) * env * 10 ** (t.noise_db / 20) * 0.7
    out += _transients(onsets, vel, t, n, sr, rng)
    return out


def _sustained(events: list[NoteEvent], t: Timbre, n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    out = np.zeros(n)
    for voice in sorted({e.voice for e in events}):
        notes = [e for e in events if e.voice == voice]
        out += _sustained_voice(notes, t, n, sr, rng)
    return out


# ----------------------------------------------------------------------------------------------
# plucked / struck


def decaying_partials(
    length: int, omegas: np.ndarray, decays: np.ndarray, amps: np.ndarray, thetas: np.ndarray, block: int = 256
) -> np.ndarray:
    """Sum of ``amps[j] * exp(-decays[j] n) * sin(omegas[j] n + thetas[j])`` for ``n < length``.

    Block trick: with ``c[j, n] = amps[j] e^{i thetas[j]} z_j^n`` for one block of ``n`` and
    ``W[j, k] = z_j^(block k)``, block k of the sum is ``Im(c)^T Re(W) + Re(c)^T Im(W)``: two
    small matrix products instead of one ``exp`` and one ``sin`` per partial and sample.

    Shape: ``omegas``, ``decays``, ``amps``, ``thetas``: :math:`(J,)` (rad/sample, 1/sample) ->
    :math:`(length,)` float64.
    """
    log_z = -np.asarray(decays, dtype=np.float64) + 1j * np.asarray(omegas, dtype=np.float64)
    n = np.arange(block)
    c = np.asarray(amps)[:, None] * np.exp(1j * np.asarray(thetas)[:, None] + log_z[:, None] * n[None, :])
    n_blocks = -(-length // block)
    w = np.exp(log_z[:, None] * (block * np.arange(n_blocks))[None, :])
    blocks = c.imag.T @ w.real + c.real.T @ w.imag  # (block, n_blocks)
    return blocks.T.reshape(-1)[:length]


def _plucked(events: list[NoteEvent], t: Timbre, n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    out = np.zeros(n)
    if t.modes:
        ratios_all = np.asarray(t.modes, dtype=np.float64)
        base_level = np.asarray(t.mode_db, dtype=np.float64)
        index = np.arange(1, len(ratios_all) + 1, dtype=np.float64)
    else:
        index = np.arange(1, t.harmonics + 1, dtype=np.float64)
        ratios_all = index * np.sqrt(1.0 + t.inharmonicity * index**2)
        base_level = t.slope_db * np.log2(index) + t.even_db * (index % 2 == 0)
        if t.pluck_position > 0:
            base_level = base_level + 20 * np.log10(np.abs(np.sin(np.pi * index * t.pluck_position)) + 0.05)
    attack = max(int(0.002 * sr), 1)
    onsets, vels = [], []
    for e in events:
        s = int(e.onset * sr)
        if s >= n:
            continue
        onsets.append(s)
        vels.append(e.velocity)
        f0 = float(midi_to_hz(e.pitch + rng.normal(0.0, 0.03)))
        tau = max(t.decay_s, 0.05) * 2.0 ** (-(e.pitch - 60.0) / 24.0)
        bend = t.bend_semitones if t.bend_semitones > 0 and rng.random() < 0.3 else 0.0
        level = base_level + formant_db(ratios_all * f0, t.formants) + 4.0 * (e.velocity - 0.7) * np.log2(index)
        keep = ratios_all * f0 * 2 ** (bend / 12) < PARTIAL_LIMIT * sr
        if not keep.any():
            continue
        amp = 10.0 ** (level[keep] / 20.0)
        amp /= np.sqrt((amp**2).sum())
        ratios = ratios_all[keep]
        taus = tau / (1.0 + t.partial_decay * (index[keep] - 1.0))
        length = min(n - s, int(sr * min(e.duration + 4 * t.release_s, 6 * tau)) + attack)
        tl = np.arange(length) / sr
        if bend:
            curve = bend * np.clip((tl - 0.12) / 0.2, 0.0, 1.0) ** 2
            base_phase = 2 * np.pi * np.cumsum(f0 * 2 ** (curve / 12)) / sr
        phases = rng.uniform(0, 2 * np.pi, len(amp))
        if bend:  # a time-varying pitch: partial by partial
            note = np.zeros(length)
            for a_j, r_j, tau_j, theta in zip(amp, ratios, taus, phases):
                m = min(length, int(6 * tau_j * sr) + 1)
                note[:m] += a_j * np.exp(-tl[:m] / tau_j) * np.sin(r_j * base_phase[:m] + theta)
        else:
            note = decaying_partials(length, 2 * np.pi * ratios * f0 / sr, 1.0 / (taus * sr), amp, phases)
        ramp = min(attack, length)
        note[:ramp] *= np.linspace(0.0, 1.0, attack, endpoint=False)[:ramp]
        damp = np.where(tl < e.duration, 1.0, np.exp(-(tl - e.duration) / max(t.release_s, 1e-3)))
        out[s : s + length] += e.velocity * note * damp
    out += _transients(np.array(onsets, dtype=np.int64), np.array(vels), t, n, sr, rng)
    return out


# ----------------------------------------------------------------------------------------------
# percussion


def _decaying_tone(
    length: int, sr: int, freq: float, decay_s: float, drop: float = 0.0, drop_s: float = 0.03
) -> np.ndarray:
    tl = np.arange(length) / sr
    f = freq * (1.0 + drop * np.exp(-tl / drop_s))
    return np.sin(2 * np.pi * np.cumsum(f) / sr) * np.exp(-tl / decay_s)


def _drums(events: list[NoteEvent], t: Timbre, n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    tune = float(np.exp(rng.normal(0.0, 0.08)))  # every kit is tuned a little differently
    snare_noise = band_noise(n, sr, (1000.0, 5000.0), rng)
    hat_noise = band_noise(n, sr, (3500.0, 5400.0), rng)
    crash_noise = band_noise(n, sr, (1800.0, 5400.0), rng)
    click_noise = band_noise(n, sr, (1500.0, 5000.0), rng)
    ride_partials = np.array([3100.0, 3470.0, 4020.0, 4410.0, 4930.0]) * tune
    toms = {TOM_LOW: 100.0, TOM_MID: 130.0, TOM_HIGH: 170.0}
    out = np.zeros(n)
    for e in events:
        s = int(e.onset * sr)
        if s >= n:
            continue
        piece = int(round(e.pitch))
        length = min(n - s, int(1.2 * sr))
        tl = np.arange(length) / sr
        seg = slice(s, s + length)
        if piece == KICK:
            hit = _decaying_tone(length, sr, 50.0 * tune, 0.25, drop=2.0, drop_s=0.03)
            hit += 0.3 * click_noise[seg] * np.exp(-tl / 0.005)
        elif piece == SNARE:
            hit = 0.5 * (
                _decaying_tone(length, sr, 185.0 * tune, 0.08) + 0.5 * _decaying_tone(length, sr, 330.0 * tune, 0.06)
            )
            hit += 0.8 * snare_noise[seg] * np.exp(-tl / 0.15)
        elif piece in (HAT_CLOSED, HAT_OPEN):
            hit = 0.5 * hat_noise[seg] * np.exp(-tl / (0.035 if piece == HAT_CLOSED else 0.25))
        elif piece == RIDE:
            hit = sum(np.sign(np.sin(2 * np.pi * f * tl + rng.uniform(0, 6.3))) for f in ride_partials) * 0.04
            hit = hit * np.exp(-tl / 0.9) + 0.15 * hat_noise[seg] * np.exp(-tl / 0.3)
        elif piece == CRASH:
            hit = 0.6 * crash_noise[seg] * np.exp(-tl / 1.0)
        elif piece in toms:
            hit = _decaying_tone(length, sr, toms[piece] * tune, 0.3, drop=0.3, drop_s=0.05)
            hit += 0.2 * snare_noise[seg] * np.exp(-tl / 0.05)
        else:
            raise ValueError(f"drum engine: unknown General-MIDI percussion key {piece}")
        out[seg] += e.velocity * hit
    return out


def _congas(events: list[NoteEvent], t: Timbre, n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    low_f0 = float(midi_to_hz(t.register[0] + rng.normal(0.0, 0.8)))
    high_f0 = float(midi_to_hz(t.register[1] + rng.normal(0.0, 0.8)))
    ratios = np.array([1.0, 1.59, 2.14, 2.65, 3.16])
    levels = 10 ** (np.array([0.0, -6.0, -10.0, -14.0, -18.0]) / 20)
    decays = np.array([0.3, 0.15, 0.1, 0.07, 0.05])
    slap_noise = band_noise(n, sr, (800.0, 4000.0), rng)
    strokes = {v: k for k, v in CONGA_STROKES.items()}
    out = np.zeros(n)
    for e in events:
        s = int(e.onset * sr)
        if s >= n:
            continue
        stroke = strokes.get(int(round(e.pitch)))
        if stroke is None:
            raise ValueError(f"congas engine: unknown stroke code {e.pitch}")
        length = min(n - s, int(0.6 * sr))
        tl = np.arange(length) / sr
        seg = slice(s, s + length)
        if stroke in ("open_high", "open_low"):
            f0 = high_f0 if stroke == "open_high" else low_f0
            hit = sum(
                level * _decaying_tone(length, sr, f0 * r, d, drop=0.06, drop_s=0.02)
                for r, level, d in zip(ratios, levels, decays)
            )
            hit += 0.15 * slap_noise[seg] * np.exp(-tl / 0.01)
        elif stroke == "slap":
            hit = sum(
                level * _decaying_tone(length, sr, high_f0 * r * 1.4, d * 0.25)
                for r, level, d in zip(ratios, levels, decays)
            )
            hit += 0.9 * slap_noise[seg] * np.exp(-tl / 0.03)
        elif stroke == "mute":
            hit = 0.7 * _decaying_tone(length, sr, high_f0, 0.04) + 0.2 * slap_noise[seg] * np.exp(-tl / 0.01)
        else:  # bass: the heel of the hand in the middle of the skin
            hit = _decaying_tone(length, sr, low_f0 * 0.45, 0.08, drop=0.2)
        out[seg] += e.velocity * hit
    return out


_ENGINES = {"sustained": _sustained, "plucked": _plucked, "drums": _drums, "congas": _congas}


def render_additive(
    events: list[NoteEvent], timbre: Timbre, num_samples: int, sample_rate: int, rng: np.random.Generator
) -> np.ndarray:
    """Synthesise ``events`` with ``timbre``. Shape: :math:`(S,)` float64, ``S = num_samples``."""
    if timbre.engine not in _ENGINES:
        raise ValueError(f"unknown synthesis engine {timbre.engine!r}; known: {', '.join(_ENGINES)}")
    if not events:
        return np.zeros(num_samples)
    return _ENGINES[timbre.engine](events, timbre, num_samples, sample_rate, rng)
