"""Random music for one synthetic clip: note events in an instrument's register and style.

Every clip gets its own tempo, key, scale, melody (a random walk over the scale) and rhythm,
drawn from the instrument's :class:`~contavsep.data.synthetic.instruments.Timbre` (register, tempo range,
scales, ``style``). The same events feed either renderer (additive synthesis or a General-MIDI
soundfont), so both play the same music.

Styles: ``melody``, ``fanfare``, ``bass_line``, ``ornamented`` (grace notes + drones),
``accompanied`` (melody + held chords), ``piano`` (melody + left hand), ``strum``, ``roll``
(banjo rolls), ``tremolo`` (pipa), ``rolls`` (xylophone), ``glissando`` (guzheng),
``kit`` (drum set; pitches are General-MIDI percussion keys) and ``hand_drum`` (congas; pitches
are the stroke codes of :data:`CONGA_STROKES`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from contavsep.data.synthetic.instruments import Timbre

SCALES: dict[str, tuple[int, ...]] = {
    "major": (0, 2, 4, 5, 7, 9, 11),
    "minor": (0, 2, 3, 5, 7, 8, 10),
    "pentatonic": (0, 2, 4, 7, 9),
    "mixolydian": (0, 2, 4, 5, 7, 9, 10),
}
# General-MIDI percussion keys used by the drum kit.
KICK, SNARE, HAT_CLOSED, HAT_OPEN, TOM_LOW, TOM_MID, TOM_HIGH, CRASH, RIDE = 36, 38, 42, 46, 45, 47, 50, 49, 51
# Conga strokes (codes in NoteEvent.pitch for the congas engine).
CONGA_STROKES: dict[str, int] = {"bass": 60, "mute": 61, "open_high": 62, "open_low": 63, "slap": 64}
STYLES = (
    "melody",
    "fanfare",
    "bass_line",
    "ornamented",
    "accompanied",
    "piano",
    "strum",
    "roll",
    "tremolo",
    "rolls",
    "glissando",
    "kit",
    "hand_drum",
)


@dataclass(frozen=True)
class NoteEvent:
    """One note: onset and sounding duration in seconds, MIDI pitch, velocity in [0, 1].

    ``voice`` numbers the monophonic lines of sustained instruments (melody 0, accompaniment
    and drones 1, 2, ...); plucked and percussive engines ignore it.
    """

    onset: float
    duration: float
    pitch: float
    velocity: float
    voice: int = 0


class _Composer:
    """Shared state of one clip's composition: tempo, key, scale pitches, velocity level."""

    def __init__(self, timbre: Timbre, seconds: float, rng: np.random.Generator):
        self.t = timbre
        self.seconds = seconds
        self.rng = rng
        self.beat = 60.0 / rng.uniform(*timbre.tempo_bpm)
        self.scale_name = str(rng.choice(timbre.scales))
        lo, hi = timbre.register
        self.tonic = int(rng.integers(0, 12))
        # Each clip plays in a window of at most ~14 semitones around the instrument's usual
        # tessitura (the middle of its register), shifted a little per clip.
        centre = (lo + hi) / 2.0 + rng.normal(0.0, 1.5)
        half = min((hi - lo) / 2.0, 7.0)
        self.pitches = self.scale_pitches(max(lo, int(round(centre - half))), min(hi, int(round(centre + half))))
        self.level = rng.uniform(0.6, 0.9)
        self.events: list[NoteEvent] = []

    def scale_pitches(self, lo: int, hi: int) -> np.ndarray:
        steps = SCALES[self.scale_name]
        return np.array([p for p in range(lo, hi + 1) if (p - self.tonic) % 12 in steps])

    def velocity(self, accent: bool = False) -> float:
        v = self.level + (0.12 if accent else 0.0) + self.rng.normal(0.0, 0.06)
        return float(np.clip(v, 0.15, 1.0))

    def add(self, onset: float, duration: float, pitch: float, velocity: float, voice: int = 0) -> None:
        if onset >= self.seconds or duration <= 0:
            return
        self.events.append(
            NoteEvent(float(onset), float(min(duration, self.seconds - onset)), float(pitch), velocity, voice)
        )

    def walk(self, index: int, leap_prob: float = 0.12) -> int:
        """Next scale index of a melodic random walk that stays inside the register."""
        if self.rng.random() < leap_prob:
            step = int(self.rng.choice([-5, -4, -3, 3, 4, 5]))
        else:
            step = int(self.rng.choice([-2, -1, -1, 0, 1, 1, 2]))
        nxt = index + step
        if nxt < 0 or nxt >= len(self.pitches):
            nxt = index - step
        return int(np.clip(nxt, 0, len(self.pitches) - 1))

    def start(self) -> float:
        return float(self.rng.uniform(0.0, 0.25))

    def chord(self, degree: int, lo: int, hi: int, size: int) -> list[int]:
        """``size`` pitches of the triad (plus octave doublings) on scale ``degree`` within [lo, hi]."""
        steps = SCALES[self.scale_name]
        tones = {(self.tonic + steps[(degree + d) % len(steps)]) % 12 for d in (0, 2, 4)}
        pool = [p for p in range(lo, hi + 1) if p % 12 in tones]
        if not pool:
            pool = [lo]
        return sorted(pool[: max(size, 1)])

    def progression(self, bars: int) -> list[int]:
        choices = [0, 3, 4, 5, 0, 4]
        return [0] + [int(self.rng.choice(choices)) for _ in range(bars)]


def _melody(c: _Composer, durations: list[float], articulation: float, rest_prob: float = 0.07, voice: int = 0) -> None:
    pitches = c.pitches
    t = c.start()
    idx = int(c.rng.integers(len(pitches) // 4, max(len(pitches) * 3 // 4, len(pitches) // 4 + 1)))
    fast = c.rng.random() < 0.35  # some clips are busier passages
    played = 0
    while t < c.seconds:
        d = float(c.rng.choice(durations)) * c.beat * (0.5 if fast else 1.0)
        if played >= 2 and c.rng.random() < rest_prob:  # a short breath, never at the start
            t += min(d, c.beat)
            played = 0
            continue
        played += 1
        c.add(t, d * articulation, pitches[idx], c.velocity(accent=(t / c.beat) % 4 < 0.1), voice)
        idx = c.walk(idx)
        t += d


def compose(timbre: Timbre, seconds: float, rng: np.random.Generator) -> list[NoteEvent]:
    """The note events of one clip of ``seconds`` for ``timbre`` (sorted by onset)."""
    c = _Composer(timbre, seconds, rng)
    style = timbre.style
    if style == "melody":
        articulation = float(rng.choice([0.98, 0.9, 0.75]))
        _melody(c, [0.5, 1, 1, 1.5, 2], articulation)
    elif style == "fanfare":
        _fanfare(c)
    elif style == "bass_line":
        _bass_line(c)
    elif style == "ornamented":
        _ornamented(c)
    elif style == "accompanied":
        _accompanied(c)
    elif style == "piano":
        _piano(c)
    elif style == "strum":
        _strum(c)
    elif style == "roll":
        _banjo_roll(c)
    elif style == "tremolo":
        _tremolo(c, rate_hz=rng.uniform(11.0, 16.0), long_prob=0.6, durations=[0.5, 1, 1, 2])
    elif style == "rolls":
        _tremolo(c, rate_hz=rng.uniform(13.0, 18.0), long_prob=0.45, durations=[0.25, 0.5, 0.5, 1, 1.5])
    elif style == "glissando":
        _glissando(c)
    elif style == "kit":
        _drum_kit(c)
    elif style == "hand_drum":
        _congas(c)
    else:
        raise ValueError(f"unknown score style {style!r}; known: {', '.join(STYLES)}")
    return sorted(c.events, key=lambda e: (e.onset, e.voice, e.pitch))


def _fanfare(c: _Composer) -> None:
    t = c.start()
    chord_tones = [p for p in c.pitches if (p - c.tonic) % 12 in (0, 4, 7, 3)]
    pool = np.array(chord_tones or list(c.pitches))
    idx = len(pool) // 2
    while t < c.seconds:
        d = float(c.rng.choice([0.5, 0.5, 1, 0.25, 0.25, 1.5])) * c.beat
        if t > c.beat and c.rng.random() < 0.08:
            t += min(d, c.beat)
            continue
        c.add(t, d * 0.7, pool[idx], c.velocity(accent=c.rng.random() < 0.3))
        if c.rng.random() < 0.7:
            idx = int(np.clip(idx + c.rng.choice([-1, 1, 1, 2, -2]), 0, len(pool) - 1))
        t += d


def _bass_line(c: _Composer) -> None:
    t = c.start()
    bars = int(c.seconds / (4 * c.beat)) + 2
    for degree in c.progression(bars):
        root_pool = [
            p for p in c.pitches if (p - c.tonic) % 12 == SCALES[c.scale_name][degree % len(SCALES[c.scale_name])]
        ]
        root = root_pool[0] if root_pool else c.pitches[0]
        fifth = root + 7 if root + 7 <= c.t.register[1] else root - 5
        beat_in_bar = 0.0
        while beat_in_bar < 4:
            d = float(c.rng.choice([1, 1, 0.5, 2]))
            d = min(d, 4 - beat_in_bar)
            pitch = (
                root
                if beat_in_bar == 0
                else float(c.rng.choice([root, fifth, root + 12 if root + 12 <= c.t.register[1] else root]))
            )
            c.add(t, d * c.beat * 0.8, pitch, c.velocity(accent=beat_in_bar == 0))
            t += d * c.beat
            beat_in_bar += d
        if t >= c.seconds:
            break


def _ornamented(c: _Composer) -> None:
    # Bagpipe: tonic near A; legato chanter melody with grace notes; two drones for the whole clip.
    c.tonic = 9 + int(c.rng.integers(-1, 2))
    c.pitches = c.scale_pitches(*c.t.register)
    t = c.start()
    idx = len(c.pitches) // 2
    high_g = c.pitches[-1]
    while t < c.seconds:
        d = float(c.rng.choice([0.5, 0.5, 1, 1.5])) * c.beat
        if c.rng.random() < 0.5 and d > 0.15:
            grace = 0.03
            c.add(
                t, grace, high_g if c.rng.random() < 0.6 else c.pitches[min(idx + 1, len(c.pitches) - 1)], c.velocity()
            )
            c.add(t + grace, d - grace, c.pitches[idx], c.velocity())
        else:
            c.add(t, d, c.pitches[idx], c.velocity())
        idx = c.walk(idx, leap_prob=0.08)
        t += d
    tonic_pitch = min(p for p in range(c.t.register[0], c.t.register[1] + 1) if p % 12 == c.tonic % 12)
    for voice, offset in enumerate(c.t.drone, start=1):
        c.add(0.0, c.seconds, tonic_pitch + offset, c.level * 0.7, voice)


def _accompanied(c: _Composer) -> None:
    _melody(c, [0.5, 1, 1, 2], articulation=0.95)
    lo, hi = c.t.register[0] - 12, c.t.register[0] + 7
    bar = 4 * c.beat
    t = 0.0
    for degree in c.progression(int(c.seconds / bar) + 2):
        for voice, pitch in enumerate(c.chord(degree, lo, hi, c.t.polyphony - 1), start=1):
            c.add(t, bar * 0.97, pitch, c.level * 0.55, voice)
        t += bar
        if t >= c.seconds:
            break


def _piano(c: _Composer) -> None:
    c.pitches = c.scale_pitches(max(c.t.register[0], 60), c.t.register[1])  # right hand
    _melody(c, [0.5, 0.5, 1, 1, 2], articulation=0.9)
    bar = 4 * c.beat
    t = 0.0
    alberti = c.rng.random() < 0.5
    for degree in c.progression(int(c.seconds / bar) + 2):
        chord = c.chord(degree, 43, 64, c.t.polyphony)
        bass = chord[0] - 12 if chord[0] - 12 >= c.t.register[0] else chord[0]
        c.add(t, bar * 0.95, bass, c.velocity(accent=True) * 0.8)
        if alberti:
            order = [0, 2, 1, 2] * 2
            for j, k in enumerate(order):
                c.add(t + j * c.beat / 2, c.beat / 2, chord[min(k, len(chord) - 1)], c.velocity() * 0.6)
        else:
            for beat in (1, 2, 3):
                for p in chord:
                    c.add(t + beat * c.beat, c.beat * 0.8, p, c.velocity() * 0.55)
        t += bar
        if t >= c.seconds:
            break


def _strum(c: _Composer) -> None:
    bar = 4 * c.beat
    lo, hi = c.t.register
    fingerpick = c.rng.random() < 0.3
    patterns: list[list[tuple[float, str]]] = [
        [(0, "d"), (1, "d"), (2, "d"), (3, "d")],
        [(0, "d"), (1, "d"), (1.5, "u"), (2.5, "u"), (3, "d"), (3.5, "u")],
        [(0, "d"), (0.5, "d"), (1, "u"), (2, "d"), (2.5, "u"), (3, "d"), (3.5, "u")],
    ]
    pattern = patterns[int(c.rng.integers(len(patterns)))]
    t0 = c.start()
    t = t0
    for degree in c.progression(int(c.seconds / bar) + 2):
        chord = c.chord(degree, lo, min(hi, lo + 19), c.t.polyphony)
        if fingerpick:
            order = [0, 2, 1, 3, 0, 2, 1, 3]
            for j, k in enumerate(order):
                c.add(t + j * c.beat / 2, c.beat * 1.5, chord[k % len(chord)], c.velocity() * 0.8)
        else:
            for i, (beat, direction) in enumerate(pattern):
                onset = t + beat * c.beat
                nxt = t + (pattern[i + 1][0] if i + 1 < len(pattern) else 4) * c.beat
                strings = chord if direction == "d" else chord[::-1][: max(2, len(chord) - 1)]
                gap = c.rng.uniform(0.008, 0.02)
                vel = c.velocity(accent=beat == 0) * (1.0 if direction == "d" else 0.75)
                for j, p in enumerate(strings):
                    c.add(onset + j * gap, nxt - onset, p, vel * c.rng.uniform(0.85, 1.0))
        t += bar
        if t >= c.seconds:
            break


def _banjo_roll(c: _Composer) -> None:
    bar = 4 * c.beat
    lo, hi = c.t.register
    drone = 67  # the short fifth string (G4)
    rolls = [[0, 1, 2, 0, 1, 2, 0, 1], [0, 1, 3, 0, 3, 1, 0, 3], [2, 1, 0, 3, 2, 1, 0, 3]]
    roll = rolls[int(c.rng.integers(len(rolls)))]
    t = c.start()
    for degree in c.progression(int(c.seconds / bar) + 2):
        chord = c.chord(degree, lo, hi, 3) + [drone]
        for j, k in enumerate(roll):
            c.add(t + j * c.beat / 2, c.beat, chord[k % len(chord)], c.velocity(accent=j == 0))
        t += bar
        if t >= c.seconds:
            break


def _tremolo(c: _Composer, rate_hz: float, long_prob: float, durations: list[float]) -> None:
    t = c.start()
    idx = len(c.pitches) // 2
    while t < c.seconds:
        d = float(c.rng.choice(durations)) * c.beat
        pitch = c.pitches[idx]
        if d >= c.beat and c.rng.random() < long_prob:
            hits = max(2, int(d * rate_hz))
            for h in range(hits):
                c.add(t + h / rate_hz, 1.5 / rate_hz, pitch, c.velocity() * (0.85 if h % 2 else 1.0))
        else:
            c.add(t, d, pitch, c.velocity(accent=c.rng.random() < 0.25))
            if c.t.style == "rolls" and c.rng.random() < 0.2:  # xylophone double stop
                c.add(t, d, c.pitches[max(idx - 2, 0)], c.velocity() * 0.8)
        idx = c.walk(idx)
        t += d


def _glissando(c: _Composer) -> None:
    t = c.start()
    idx = len(c.pitches) // 2
    bar_next = 0.0
    while t < c.seconds:
        if t >= bar_next:  # left-hand octave bass at each bar
            low = c.pitches[: max(len(c.pitches) // 4, 1)]
            c.add(t, 4 * c.beat, float(c.rng.choice(low)), c.velocity() * 0.7)
            bar_next = t + 4 * c.beat
        if c.rng.random() < 0.15:
            n = int(c.rng.integers(6, 13))
            step = 1 if c.rng.random() < 0.5 else -1
            spacing = c.rng.uniform(0.025, 0.04)
            for j in range(n):
                k = int(np.clip(idx + step * j, 0, len(c.pitches) - 1))
                c.add(t + j * spacing, 0.6, c.pitches[k], c.velocity() * 0.8)
            t += n * spacing + c.beat / 2
            continue
        d = float(c.rng.choice([0.5, 1, 1, 2])) * c.beat
        c.add(t, d, c.pitches[idx], c.velocity(accent=c.rng.random() < 0.3))
        idx = c.walk(idx)
        t += d


def _drum_kit(c: _Composer) -> None:
    sixteenth = c.beat / 4
    bar = 16
    ride = c.rng.random() < 0.35
    kick_pattern = [[0, 8], [0, 6, 8], [0, 7, 10], [0, 3, 8, 11]][int(c.rng.integers(4))]
    snare_pattern = [4, 12]
    steps = int(c.seconds / sixteenth) + 1
    t0 = c.start()
    if c.rng.random() < 0.5:
        c.add(t0, 1.0, CRASH, c.velocity(accent=True))
    for s in range(steps):
        pos = s % bar
        onset = t0 + s * sixteenth
        fill = (s // bar) % 4 == 3 and pos >= 12
        if fill:
            tom = [TOM_HIGH, TOM_HIGH, TOM_MID, TOM_LOW][pos - 12]
            c.add(onset, sixteenth, tom, c.velocity(accent=pos == 12))
            continue
        if pos in kick_pattern:
            c.add(onset, 0.3, KICK, c.velocity(accent=pos == 0))
        if pos in snare_pattern:
            c.add(onset, 0.2, SNARE, c.velocity(accent=True))
        elif pos % 2 == 1 and c.rng.random() < 0.08:  # ghost note
            c.add(onset, 0.1, SNARE, c.velocity() * 0.4)
        if pos % 2 == 0:
            cymbal = RIDE if ride else (HAT_OPEN if pos == 14 and c.rng.random() < 0.5 else HAT_CLOSED)
            c.add(onset, 0.1, cymbal, c.velocity(accent=pos % 4 == 0) * 0.7)


def _congas(c: _Composer) -> None:
    eighth = c.beat / 2
    s = CONGA_STROKES
    tumbao = [s["bass"], s["mute"], s["slap"], s["mute"], s["bass"], s["mute"], s["open_high"], s["open_high"]]
    variant = [s["bass"], s["mute"], s["slap"], s["open_low"], s["bass"], s["mute"], s["open_high"], s["open_low"]]
    t0 = c.start()
    steps = int(c.seconds / eighth) + 1
    for k in range(steps):
        pattern = tumbao if (k // 8) % 2 == 0 or c.rng.random() < 0.5 else variant
        stroke = pattern[k % 8]
        if c.rng.random() < 0.06:
            continue
        c.add(
            t0 + k * eighth + c.rng.normal(0, 0.006),
            0.4,
            stroke,
            c.velocity(accent=stroke in (s["slap"], s["open_high"])),
        )
        if c.rng.random() < 0.1:  # ghost stroke on the sixteenth
            c.add(t0 + k * eighth + eighth / 2, 0.2, s["mute"], c.velocity() * 0.4)
