"""The optional ``soundfont`` renderer: note events -> Standard MIDI File -> the FluidSynth CLI.

Needs the ``fluidsynth`` binary and a General-MIDI soundfont (Debian: ``apt-get install
fluidsynth fluid-soundfont-gm``; or point ``CONTAVSEP_SOUNDFONT`` at any ``.sf2``). Python
bindings are not needed: a MIDI file is written here and rendered offline by the CLI with its
own reverb and chorus off (the recording chain adds the room). When the binary or the soundfont
is missing, :func:`check_soundfont_renderer` raises :class:`RendererUnavailable` before anything
is written.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from contavsep.data.synthetic.instruments import Timbre
from contavsep.data.synthetic.score import CONGA_STROKES, NoteEvent
from contavsep.errors import ContavsepError

SOUNDFONT_ENV = "CONTAVSEP_SOUNDFONT"
DEFAULT_SOUNDFONTS = (
    "/usr/share/sounds/sf2/FluidR3_GM.sf2",
    "/usr/share/sounds/sf2/default-GM.sf2",
    "/usr/share/soundfonts/FluidR3_GM.sf2",
    "/usr/share/soundfonts/default.sf2",
)
DRUM_CHANNEL = 9
# General-MIDI programs (0-based) closest to each instrument; None = percussion channel.
GM_PROGRAMS: dict[str, int | None] = {
    "accordion": 21,
    "bagpipe": 109,
    "bassoon": 70,
    "clarinet": 71,
    "drum": None,
    "flute": 73,
    "piano": 0,
    "saxophone": 65,
    "tuba": 58,
    "violin": 40,
    "xylophone": 13,
    "acoustic_guitar": 25,
    "banjo": 105,
    "cello": 42,
    "electric_bass": 33,
    "erhu": 110,
    "guzheng": 107,
    "pipa": 106,
    "trumpet": 56,
    "ukulele": 24,
    "congas": None,
}
# Conga strokes -> General-MIDI percussion keys (mute high conga, open high conga, low conga).
CONGA_KEYS = {
    CONGA_STROKES["bass"]: 64,
    CONGA_STROKES["mute"]: 62,
    CONGA_STROKES["open_high"]: 63,
    CONGA_STROKES["open_low"]: 64,
    CONGA_STROKES["slap"]: 62,
}
TICKS_PER_QUARTER = 480
MICROSECONDS_PER_QUARTER = 500_000  # 120 bpm: one tick = 1/960 s


class RendererUnavailable(ContavsepError, RuntimeError):
    """The soundfont renderer cannot run here; the message says what to install."""


def find_soundfont() -> Path | None:
    """``$CONTAVSEP_SOUNDFONT`` if set, else the first General-MIDI soundfont found in standard places."""
    configured = os.environ.get(SOUNDFONT_ENV)
    if configured:
        return Path(configured) if Path(configured).is_file() else None
    for candidate in DEFAULT_SOUNDFONTS:
        if Path(candidate).is_file():
            return Path(candidate)
    return None


def check_soundfont_renderer() -> tuple[str, Path]:
    """The fluidsynth binary and soundfont to use, or :class:`RendererUnavailable` saying what is missing."""
    binary = shutil.which("fluidsynth")
    soundfont = find_soundfont()
    missing = []
    if binary is None:
        missing.append("the fluidsynth binary")
    if soundfont is None:
        where = os.environ.get(SOUNDFONT_ENV) or " or ".join(DEFAULT_SOUNDFONTS[:1])
        missing.append(f"a General-MIDI soundfont ({where})")
    if missing:
        raise RendererUnavailable(
            f"renderer 'soundfont' needs {' and '.join(missing)}: apt-get install fluidsynth fluid-soundfont-gm"
            f" (or set {SOUNDFONT_ENV}=/path/to/gm.sf2); the default renderer 'additive' needs nothing"
        )
    return binary, soundfont  # type: ignore[return-value]


def _vlq(value: int) -> bytes:
    """MIDI variable-length quantity."""
    out = [value & 0x7F]
    value >>= 7
    while value:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    return bytes(reversed(out))


def midi_bytes(events: list[NoteEvent], timbre: Timbre) -> bytes:
    """A format-0 Standard MIDI File playing ``events`` on the General-MIDI instrument of ``timbre``."""
    if timbre.name not in GM_PROGRAMS:
        raise ValueError(f"no General-MIDI program for instrument {timbre.name!r}")
    program = GM_PROGRAMS[timbre.name]
    channel = DRUM_CHANNEL if program is None else 0
    seconds_per_tick = MICROSECONDS_PER_QUARTER / 1e6 / TICKS_PER_QUARTER
    timed: list[tuple[int, int, bytes]] = []  # (tick, order: offs before ons, message)
    for e in events:
        key = CONGA_KEYS.get(int(round(e.pitch)), 64) if timbre.name == "congas" else int(round(e.pitch))
        key = int(np.clip(key, 0, 127))
        velocity = int(np.clip(round(e.velocity * 127), 1, 127))
        on = int(round(e.onset / seconds_per_tick))
        off = max(on + 1, int(round((e.onset + e.duration) / seconds_per_tick)))
        timed.append((on, 1, bytes([0x90 | channel, key, velocity])))
        timed.append((off, 0, bytes([0x80 | channel, key, 0])))
    timed.sort(key=lambda item: (item[0], item[1]))
    track = bytearray()
    track += _vlq(0) + b"\xff\x51\x03" + MICROSECONDS_PER_QUARTER.to_bytes(3, "big")
    if program is not None:
        track += _vlq(0) + bytes([0xC0 | channel, program])
    last = 0
    for tick, _, message in timed:
        track += _vlq(tick - last) + message
        last = tick
    track += _vlq(0) + b"\xff\x2f\x00"
    header = (
        b"MThd"
        + (6).to_bytes(4, "big")
        + (0).to_bytes(2, "big")
        + (1).to_bytes(2, "big")
        + TICKS_PER_QUARTER.to_bytes(2, "big")
    )
    return header + b"MTrk" + len(track).to_bytes(4, "big") + bytes(track)


def render_soundfont(
    events: list[NoteEvent], timbre: Timbre, num_samples: int, sample_rate: int, rng: np.random.Generator
) -> np.ndarray:
    """Render ``events`` through FluidSynth. Shape: :math:`(S,)` float64, ``S = num_samples``.

    ``rng`` is unused (the soundfont is deterministic); it keeps the renderer signature uniform.
    """
    import soundfile

    binary, soundfont = check_soundfont_renderer()
    with tempfile.TemporaryDirectory(prefix="contavsep-sf-") as tmp:
        mid, wav = Path(tmp) / "clip.mid", Path(tmp) / "clip.wav"
        mid.write_bytes(midi_bytes(events, timbre))
        cmd = [
            binary,
            "-ni",
            "-q",
            "-R",
            "0",
            "-C",
            "0",
            "-g",
            "0.5",
            "-r",
            str(sample_rate),
            "-T",
            "wav",
            "-F",
            str(wav),
            str(soundfont),
            str(mid),
        ]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if done.returncode != 0 or not wav.is_file():
            raise RendererUnavailable(
                f"fluidsynth failed ({done.returncode}): {(done.stderr or done.stdout).strip()[-300:]}"
            )
        audio, rate = soundfile.read(str(wav), dtype="float64", always_2d=True)
    if rate != sample_rate:
        raise RendererUnavailable(f"fluidsynth rendered at {rate} Hz instead of {sample_rate} Hz")
    mono = audio.mean(axis=1)
    out = np.zeros(num_samples)
    out[: min(num_samples, mono.shape[0])] = mono[:num_samples]
    return out
