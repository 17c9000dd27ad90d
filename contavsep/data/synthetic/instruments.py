"""The instruments of the synthetic benchmark: MUSIC-21 names, each with a distinct timbre.

The class order is the paper's MUSIC-21 order (the ContAV-Sep release's split lists; the same as
``music21_contavsep_splits.json``), then ``congas``, the 21st MUSIC-21 instrument the paper lists
but does not use. Each :class:`Timbre` is a small physical caricature of its instrument:
harmonic roll-off and formants (body/bore resonances), inharmonicity and per-partial decay
(struck and plucked strings, bars), attack/release, vibrato and glides, breath/bow/bellows
noise, onset transients, and the kind of music it plays (``style``, see ``score.py``) in its
own register. Per-clip jitter of these numbers (``synth.py``) makes clips of one class differ
the way different players, instruments and rooms do.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

# The paper's class order (ContAV-Sep release, MUSIC-21 subset of 20 classes: 4 steps x 5).
MUSIC21_CLASS_ORDER: tuple[str, ...] = (
    "accordion",
    "bagpipe",
    "bassoon",
    "clarinet",
    "drum",
    "flute",
    "piano",
    "saxophone",
    "tuba",
    "violin",
    "xylophone",
    "acoustic_guitar",
    "banjo",
    "cello",
    "electric_bass",
    "erhu",
    "guzheng",
    "pipa",
    "trumpet",
    "ukulele",
)
# MUSIC-21 has one more instrument, listed by the paper but unused: the 21st synthetic class.
SYNTH_CLASS_ORDER: tuple[str, ...] = MUSIC21_CLASS_ORDER + ("congas",)


@dataclass(frozen=True)
class Timbre:
    """Synthesis parameters of one instrument (levels in dB, times in seconds, pitches in MIDI)."""

    name: str
    engine: str  # sustained (continuous pitch track) | plucked (decaying partials) | drums | congas
    style: str  # what it plays: see score.STYLES
    register: tuple[int, int]  # lowest and highest MIDI pitch of its melodies
    tempo_bpm: tuple[float, float] = (70.0, 130.0)
    scales: tuple[str, ...] = ("major", "minor")
    slope_db: float = -6.0  # harmonic level per octave of harmonic number (spectral tilt)
    even_db: float = 0.0  # extra level of even harmonics (clarinet bore: strongly negative)
    formants: tuple[tuple[float, float, float], ...] = ()  # resonances: (centre Hz, bandwidth Hz, gain dB)
    harmonics: int = 24  # partials synthesised (those above 0.47 x sample rate are dropped)
    inharmonicity: float = 0.0  # B of f_k = k f0 sqrt(1 + B k^2) (stiff strings)
    modes: tuple[float, ...] = ()  # explicit partial ratios (bars); overrides harmonics
    mode_db: tuple[float, ...] = ()  # levels of the explicit modes
    attack_s: float = 0.03
    release_s: float = 0.08
    decay_s: float = 0.0  # plucked: decay time constant of the fundamental at middle C
    partial_decay: float = 0.0  # plucked: partial k decays (1 + partial_decay (k - 1)) times faster
    pluck_position: float = 0.0  # plucked: relative excitation point (comb notches in the spectrum)
    vibrato_hz: float = 0.0
    vibrato_cents: float = 0.0
    vibrato_delay_s: float = 0.0  # vibrato fades in over this time after each onset
    glide_s: float = 0.008  # portamento time constant between notes (sustained)
    bend_semitones: float = 0.0  # plucked: press-bend after some onsets (guzheng)
    detune_cents: float = 0.0  # a second, detuned reed/string voice (accordion musette beating)
    noise_db: float = -60.0  # breath / bow / bellows noise, relative to the tone, following its envelope
    noise_band: tuple[float, float] = (500.0, 4000.0)
    transient_db: float = -60.0  # onset noise burst: tongue, chiff, hammer, pick, bow bite
    transient_band: tuple[float, float] = (300.0, 5000.0)
    brightness_db: float = 0.0  # extra dB/octave per unit of loudness (brass brightens when loud)
    drone: tuple[int, ...] = ()  # drone pitches relative to the tonic (bagpipe)
    polyphony: int = 1  # notes per chord (strums, accompaniment)


TIMBRES: dict[str, Timbre] = {
    t.name: t
    for t in (
        Timbre(
            "accordion",
            "sustained",
            "accompanied",
            (55, 84),
            (80, 130),
            ("major", "minor"),
            slope_db=-3.0,
            formants=((700, 300, 8), (2400, 600, 8)),
            harmonics=30,
            attack_s=0.04,
            release_s=0.06,
            detune_cents=14.0,
            noise_db=-36,
            noise_band=(2000, 5000),
            polyphony=3,
        ),
        Timbre(
            "bagpipe",
            "sustained",
            "ornamented",
            (67, 81),
            (70, 110),
            ("mixolydian",),
            slope_db=-1.5,
            even_db=-2.0,
            formants=((1400, 300, 10), (3300, 500, 8)),
            harmonics=32,
            attack_s=0.01,
            release_s=0.05,
            glide_s=0.004,
            noise_db=-40,
            noise_band=(1500, 5000),
            drone=(-12, -24),
        ),
        Timbre(
            "bassoon",
            "sustained",
            "melody",
            (34, 67),
            (60, 110),
            ("major", "minor"),
            slope_db=-7.0,
            formants=((480, 150, 12), (1150, 300, 8)),
            harmonics=28,
            attack_s=0.05,
            release_s=0.08,
            vibrato_hz=5.0,
            vibrato_cents=12,
            noise_db=-42,
            noise_band=(300, 2500),
            transient_db=-30,
        ),
        Timbre(
            "clarinet",
            "sustained",
            "melody",
            (50, 86),
            (70, 140),
            ("major", "minor"),
            slope_db=-5.0,
            even_db=-24.0,
            formants=((1500, 400, 8), (4500, 2500, -14)),
            harmonics=24,
            attack_s=0.03,
            release_s=0.07,
            noise_db=-45,
            noise_band=(1000, 4000),
            transient_db=-32,
        ),
        Timbre("drum", "drums", "kit", (36, 51), (80, 150)),
        Timbre(
            "flute",
            "sustained",
            "melody",
            (65, 96),
            (70, 140),
            ("major", "minor"),
            slope_db=-14.0,
            even_db=-2.0,
            harmonics=10,
            attack_s=0.07,
            release_s=0.1,
            vibrato_hz=5.0,
            vibrato_cents=22,
            vibrato_delay_s=0.2,
            noise_db=-22,
            noise_band=(1500, 5000),
            transient_db=-22,
            transient_band=(1000, 5000),
        ),
        Timbre(
            "piano",
            "plucked",
            "piano",
            (36, 96),
            (60, 130),
            ("major", "minor"),
            slope_db=-5.0,
            harmonics=24,
            inharmonicity=4e-4,
            decay_s=1.2,
            partial_decay=0.25,
            pluck_position=1 / 7,
            release_s=0.15,
            transient_db=-24,
            transient_band=(80, 2000),
            polyphony=3,
        ),
        Timbre(
            "saxophone",
            "sustained",
            "melody",
            (49, 81),
            (70, 140),
            ("minor", "major"),
            slope_db=-4.0,
            formants=((600, 250, 10), (1900, 500, 10)),
            harmonics=28,
            attack_s=0.035,
            release_s=0.08,
            vibrato_hz=5.5,
            vibrato_cents=25,
            vibrato_delay_s=0.15,
            glide_s=0.03,
            noise_db=-35,
            noise_band=(1500, 4500),
            transient_db=-30,
            brightness_db=3.0,
        ),
        Timbre(
            "tuba",
            "sustained",
            "bass_line",
            (28, 58),
            (70, 120),
            ("major",),
            slope_db=-11.0,
            formants=((250, 150, 8),),
            harmonics=20,
            attack_s=0.07,
            release_s=0.1,
            vibrato_hz=4.5,
            vibrato_cents=8,
            noise_db=-50,
            transient_db=-34,
            brightness_db=4.0,
        ),
        Timbre(
            "violin",
            "sustained",
            "melody",
            (55, 96),
            (70, 150),
            ("major", "minor"),
            slope_db=-4.0,
            formants=((280, 100, 8), (480, 150, 5), (2800, 900, 10)),
            harmonics=32,
            attack_s=0.08,
            release_s=0.12,
            vibrato_hz=6.0,
            vibrato_cents=30,
            vibrato_delay_s=0.15,
            glide_s=0.04,
            noise_db=-34,
            noise_band=(2000, 5000),
            transient_db=-30,
        ),
        Timbre(
            "xylophone",
            "plucked",
            "rolls",
            (65, 100),
            (90, 150),
            ("major",),
            modes=(1.0, 3.0, 6.1, 9.8),
            mode_db=(0.0, -8.0, -18.0, -28.0),
            decay_s=0.35,
            partial_decay=1.5,
            release_s=0.3,
            transient_db=-18,
            transient_band=(2000, 5500),
        ),
        Timbre(
            "acoustic_guitar",
            "plucked",
            "strum",
            (40, 76),
            (70, 130),
            ("major", "minor"),
            slope_db=-5.0,
            formants=((110, 40, 8), (220, 80, 5)),
            harmonics=24,
            inharmonicity=3e-5,
            decay_s=0.9,
            partial_decay=0.35,
            pluck_position=0.18,
            release_s=0.1,
            transient_db=-28,
            polyphony=5,
        ),
        Timbre(
            "banjo",
            "plucked",
            "roll",
            (55, 86),
            (100, 150),
            ("major",),
            slope_db=-3.0,
            formants=((3000, 1500, 8), (1000, 500, 4)),
            harmonics=30,
            decay_s=0.28,
            partial_decay=0.15,
            pluck_position=0.08,
            release_s=0.05,
            transient_db=-22,
            transient_band=(1500, 5500),
            polyphony=3,
        ),
        Timbre(
            "cello",
            "sustained",
            "melody",
            (36, 76),
            (60, 120),
            ("minor", "major"),
            slope_db=-6.0,
            formants=((200, 80, 8), (600, 200, 8), (1700, 500, 6)),
            harmonics=32,
            attack_s=0.1,
            release_s=0.15,
            vibrato_hz=5.0,
            vibrato_cents=25,
            vibrato_delay_s=0.2,
            glide_s=0.05,
            noise_db=-36,
            noise_band=(800, 3500),
            transient_db=-30,
        ),
        Timbre(
            "electric_bass",
            "plucked",
            "bass_line",
            (28, 55),
            (80, 130),
            ("minor", "major"),
            slope_db=-7.0,
            formants=((120, 80, 4), (800, 500, 7)),
            harmonics=20,
            inharmonicity=1e-4,
            decay_s=1.1,
            partial_decay=0.4,
            pluck_position=0.12,
            release_s=0.08,
            transient_db=-30,
        ),
        Timbre(
            "erhu",
            "sustained",
            "melody",
            (62, 93),
            (60, 110),
            ("pentatonic",),
            slope_db=-4.0,
            formants=((1000, 350, 12), (3000, 800, 4), (250, 200, -10)),
            harmonics=28,
            attack_s=0.06,
            release_s=0.12,
            vibrato_hz=6.5,
            vibrato_cents=50,
            vibrato_delay_s=0.1,
            glide_s=0.09,
            noise_db=-30,
            noise_band=(1500, 5000),
            transient_db=-28,
        ),
        Timbre(
            "guzheng",
            "plucked",
            "glissando",
            (43, 91),
            (60, 110),
            ("pentatonic",),
            slope_db=-4.0,
            formants=((700, 300, 8), (4000, 1000, 6)),
            harmonics=28,
            inharmonicity=6e-5,
            decay_s=1.6,
            partial_decay=0.2,
            pluck_position=0.1,
            release_s=0.3,
            bend_semitones=1.5,
            transient_db=-26,
        ),
        Timbre(
            "pipa",
            "plucked",
            "tremolo",
            (45, 84),
            (70, 120),
            ("pentatonic",),
            slope_db=-3.5,
            formants=((2000, 600, 8), (450, 200, -6)),
            harmonics=26,
            decay_s=0.45,
            partial_decay=0.3,
            pluck_position=0.12,
            release_s=0.1,
            transient_db=-24,
            transient_band=(1500, 5500),
        ),
        Timbre(
            "trumpet",
            "sustained",
            "fanfare",
            (54, 84),
            (90, 140),
            ("major",),
            slope_db=-2.5,
            formants=((1100, 400, 10), (2500, 800, 6)),
            harmonics=30,
            attack_s=0.025,
            release_s=0.06,
            vibrato_hz=5.0,
            vibrato_cents=10,
            noise_db=-45,
            transient_db=-26,
            brightness_db=6.0,
        ),
        Timbre(
            "ukulele",
            "plucked",
            "strum",
            (60, 81),
            (90, 150),
            ("major",),
            slope_db=-7.0,
            formants=((400, 200, 8), (1800, 800, -6)),
            harmonics=18,
            decay_s=0.45,
            partial_decay=0.5,
            pluck_position=0.2,
            release_s=0.08,
            transient_db=-30,
            polyphony=4,
        ),
        Timbre("congas", "congas", "hand_drum", (55, 62), (90, 130)),
    )
}


def synthetic_classes(n: int) -> list[str]:
    """The first ``n`` class names of the synthetic benchmark (MUSIC-21 paper order, then congas)."""
    if not 1 <= n <= len(SYNTH_CLASS_ORDER):
        raise ValueError(
            f"the synthetic benchmark has {len(SYNTH_CLASS_ORDER)} instruments (the MUSIC-21 set:"
            f" {', '.join(SYNTH_CLASS_ORDER)}); {n} classes were requested: ask for 1 to {len(SYNTH_CLASS_ORDER)}"
        )
    return list(SYNTH_CLASS_ORDER[:n])


def vary(timbre: Timbre, rng: np.random.Generator) -> Timbre:
    """The same instrument as another player, instrument maker and microphone would give it:
    small random changes of tilt, resonances, vibrato, noise, attack and decay."""

    def scaled(x: float, sigma: float) -> float:
        return float(x * np.exp(rng.normal(0.0, sigma)))

    return replace(
        timbre,
        slope_db=timbre.slope_db + float(rng.normal(0.0, 0.6)),
        formants=tuple(
            (scaled(fc, 0.05), scaled(bw, 0.1), g + float(rng.normal(0.0, 1.0))) for fc, bw, g in timbre.formants
        ),
        inharmonicity=scaled(timbre.inharmonicity, 0.2),
        attack_s=scaled(timbre.attack_s, 0.2),
        release_s=scaled(timbre.release_s, 0.2),
        decay_s=scaled(timbre.decay_s, 0.15),
        pluck_position=float(np.clip(scaled(timbre.pluck_position, 0.15), 0.0, 0.45)),
        vibrato_hz=scaled(timbre.vibrato_hz, 0.1),
        vibrato_cents=scaled(timbre.vibrato_cents, 0.25),
        detune_cents=scaled(timbre.detune_cents, 0.2),
        noise_db=timbre.noise_db + float(rng.normal(0.0, 3.0)),
        transient_db=timbre.transient_db + float(rng.normal(0.0, 3.0)),
    )
