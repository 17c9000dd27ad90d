"""The synthetic benchmark: an offline stand-in for MUSIC-21 with the same forgetting problem.

Classes are the MUSIC-21 instruments in the paper's order (``instruments.py``), each with its
own timbre and kind of music; every clip has its own random music (``score.py``), player and
instrument variation (``instruments.vary``), room and level (``recording.py``), rendered by
additive synthesis (``additive.py``, needs nothing installed) or a General-MIDI soundfont
(``soundfont.py``). Visual features are SIMULATED (``visual_sim.py``): object features are class
prototypes plus clip and frame noise, motion features are each clip's own energy/onset envelope
through a fixed random projection plus a class component and noise.

Why it shows catastrophic forgetting: each class occupies its own region of timbre space
(harmonic envelopes, formants, noise, attack/decay, register, rhythm), so the masks a separator
learns for new classes overwrite what it needs for old ones; and pairs overlap in frequency and
time with per-clip variation, so separation is not trivial.

Default size, 20 classes x (24 train, 5 val, 5 test) clips of 6.5 s: val/test match the
paper's MUSIC-21 split (5 + 5 videos per class); 24 training clips per class give varied
random-crop mixtures while the whole dataset costs about 50 CPU-seconds to build (under a minute
on 2 idle cores; see ``python -m benchmarks.bench_data``); 6.5 s (71662 samples) >= 65535 lets the
paper preset crop full-size clips.

Deterministic: each clip is drawn from its own generator seeded by (seed, class, split, index),
so the content, and the manifest's content hash, depend only on the config.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np

from contavsep import storage
from contavsep.config import ConfigError
from contavsep.data.format.schema import SPLITS, ClipRecord
from contavsep.data.format.writer import DatasetWriter
from contavsep.data.synthetic.additive import render_additive
from contavsep.data.synthetic.instruments import (
    SYNTH_CLASS_ORDER,
    TIMBRES,
    synthetic_classes,
    vary,
)
from contavsep.data.synthetic.recording import record
from contavsep.data.synthetic.score import compose
from contavsep.data.synthetic.soundfont import check_soundfont_renderer, render_soundfont
from contavsep.data.synthetic.visual_sim import (
    MOTION_DIM,
    MOTION_TOKENS,
    OBJECT_DIM,
    motion_features,
    object_features,
)

# Bump when the generator changes what a given config produces (recorded in the manifest).
SYNTH_REVISION = 1
RENDERERS = ("additive", "soundfont")
MIN_PAPER_SAMPLES = 65535  # audio.clip_samples of the paper preset


@dataclass(frozen=True)
class SynthConfig:
    classes: int = 20  # number of instruments, in the paper's MUSIC-21 order (max 21 with congas)
    clips_per_class: tuple[int, int, int] = (24, 5, 5)  # clips per class in train, val, test
    seconds: float = 6.5  # clip length; >= 65535 / 11025 = 5.94 s for the paper preset
    seed: int = 0  # seed of all random content
    renderer: str = "additive"  # additive (no dependencies) | soundfont (fluidsynth + GM soundfont)
    sample_rate: int = 11025  # Hz (the paper's rate)
    object_frames: int = 3  # simulated object features per clip (frames)

    def __post_init__(self) -> None:
        if not 1 <= self.classes <= len(SYNTH_CLASS_ORDER):
            raise ConfigError(
                f"--classes {self.classes}: the synthetic benchmark has {len(SYNTH_CLASS_ORDER)} instruments"
                f" (the MUSIC-21 set: {', '.join(SYNTH_CLASS_ORDER)}); ask for 1 to {len(SYNTH_CLASS_ORDER)}"
            )
        counts = tuple(self.clips_per_class)
        object.__setattr__(self, "clips_per_class", counts)  # lists (JSON, YAML) become the tuple the field promises
        if len(counts) != 3 or any(not isinstance(c, int) or c < 0 for c in counts) or counts[0] < 1:
            raise ConfigError(
                f"clips per class must be three integers train,val,test with train >= 1 (e.g. 24,5,5), got {self.clips_per_class!r}"
            )
        if not 0.5 <= self.seconds <= 60:
            raise ConfigError(f"--seconds must be between 0.5 and 60, got {self.seconds}")
        if self.renderer not in RENDERERS:
            raise ConfigError(f"--renderer must be one of {', '.join(RENDERERS)}, got {self.renderer!r}")
        if not 8000 <= self.sample_rate <= 48000:
            raise ConfigError(f"sample_rate must be between 8000 and 48000 Hz, got {self.sample_rate}")
        if self.object_frames < 1:
            raise ConfigError(f"object_frames must be >= 1, got {self.object_frames}")

    @property
    def num_samples(self) -> int:
        return int(round(self.seconds * self.sample_rate))


def _stable_id(name: str) -> int:
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "little")


def synth_clip(class_name: str, split: str, index: int, cfg: SynthConfig) -> ClipRecord:
    """One deterministic synthetic clip (depends only on ``cfg``, the class, split and index)."""
    rng = np.random.default_rng([cfg.seed, _stable_id(class_name), SPLITS.index(split), index])
    timbre = vary(TIMBRES[class_name], rng)
    events = compose(timbre, cfg.seconds, rng)
    render = render_soundfont if cfg.renderer == "soundfont" else render_additive
    wave = render(events, timbre, cfg.num_samples, cfg.sample_rate, rng)
    audio = record(wave, cfg.sample_rate, rng)
    return ClipRecord(
        clip_id=f"{class_name}-{split}-{index:04d}",
        class_name=class_name,
        split=split,
        audio=audio,
        sample_rate=cfg.sample_rate,
        object_features=object_features(class_name, cfg.object_frames, rng),
        motion_features=motion_features(audio.astype(np.float64) / 32768.0, cfg.sample_rate, class_name, rng),
        source=f"synthetic:{cfg.renderer}:seed={cfg.seed}:rev={SYNTH_REVISION}",
    )


def _clip_job(job: tuple[str, str, int, SynthConfig]) -> ClipRecord:
    return synth_clip(*job)


def build_synthetic(
    uri: str,
    cfg: SynthConfig = SynthConfig(),
    *,
    overwrite: bool = False,
    workers: int = 1,
    settings: storage.S3Settings | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Build the synthetic dataset at ``uri`` and return its manifest.

    ``workers`` > 1 renders clips in that many processes (same output: clips are independent).
    ``progress(done, total)`` is called after each clip. Nothing is committed unless every clip
    was written (the manifest comes last).
    """
    classes = synthetic_classes(cfg.classes)
    if cfg.renderer == "soundfont":
        check_soundfont_renderer()  # fail before anything is written
    jobs = [
        (c, split, i, cfg) for c in classes for split, count in zip(SPLITS, cfg.clips_per_class) for i in range(count)
    ]
    extractors = {
        "object": {
            "name": "synthetic-clip-prototype",
            "revision": str(SYNTH_REVISION),
            "pretrained": False,
            "simulated": True,
            "note": "class prototype + clip offset + frame noise, unit norm (no video)",
        },
        "motion": {
            "name": "synthetic-onset-envelope-projection",
            "revision": str(SYNTH_REVISION),
            "pretrained": False,
            "simulated": True,
            "note": "clip energy/onset envelope over 8 segments, fixed random projection"
            " + class component + noise (no video)",
        },
    }
    audio = {
        "sample_rate": cfg.sample_rate,
        "dtype": "int16",
        "channels": 1,
        "clip_seconds": cfg.seconds,
        "clip_samples": cfg.num_samples,
    }
    description = (
        f"synthetic MUSIC-21 stand-in: {cfg.classes} instruments, {cfg.renderer} renderer, seed {cfg.seed};"
        f" visual features are simulated"
    )
    # Starting a process costs about a second of imports: only worth it for enough clips each.
    workers = max(1, min(workers, len(jobs) // 32))
    with DatasetWriter(
        uri,
        classes,
        audio=audio,
        extractors=extractors,
        description=description,
        overwrite=overwrite,
        object_dim=OBJECT_DIM,
        motion_tokens=MOTION_TOKENS,
        motion_dim=MOTION_DIM,
        settings=settings,
    ) as writer:
        if workers > 1:
            import multiprocessing

            # spawn, not fork: the parent may hold pyarrow/S3 threads that a fork would copy mid-flight
            with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
                for done, clip in enumerate(pool.map(_clip_job, jobs, chunksize=4), start=1):
                    writer.add(clip)
                    if progress:
                        progress(done, len(jobs))
        else:
            for done, job in enumerate(jobs, start=1):
                writer.add(_clip_job(job))
                if progress:
                    progress(done, len(jobs))
        return writer.commit(extra={"synthetic": {**dataclasses.asdict(cfg), "revision": SYNTH_REVISION}})


def default_workers() -> int:
    """Processes for a build: the CPUs this process may use, at most 4."""
    try:
        return max(1, min(4, len(os.sched_getaffinity(0))))
    except AttributeError:  # not on Linux
        return max(1, min(4, os.cpu_count() or 1))
