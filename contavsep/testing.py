"""Test signals shared by the tests and the benchmarks: music-like sources and imperfect separations.

The signals (:func:`synthetic_sources`) are music-like rather than white noise: two harmonic
tones with vibrato, note envelopes and some breath noise, of different pitch ranges. Imperfect
separations (:func:`imperfect_estimates`) add leakage of the other source, a short smearing
filter and noise, so all three of SDR, SIR and SAR are finite and in a realistic range.
``tests/`` checks the metric backends on them and ``benchmarks/bench_metrics.py`` times them.

:data:`TINY_SEQUENCE` is the smallest whole task sequence the engine tests run (with the
``tiny`` preset on a 4-class synthetic dataset).
"""

from __future__ import annotations

import numpy as np
import torch

# Dotted overrides of a whole sequence in seconds: 2 steps of 2 classes, 3 iterations of 4
# mixtures each, 1 exemplar per class, 2 test windows per clip.
TINY_SEQUENCE = {
    "data.classes_per_step": 2,
    "data.num_steps": 2,
    "train.iters_per_step": 3,
    "train.batch_size": 4,
    "memory.per_class": 1,
    "eval.windows_per_clip": 2,
    "eval.pairs_per_clip": 1,
}


def _harmonic_tone(rng: np.random.Generator, samples: int, sample_rate: int, f0: float, noise: float) -> np.ndarray:
    t = np.arange(samples) / sample_rate
    vibrato_rate, vibrato_depth = rng.uniform(4.0, 6.5), rng.uniform(0.005, 0.02)
    # Instantaneous frequency ratio -> phase by cumulative sum (vibrato as a frequency modulation).
    freq_ratio = 1.0 + vibrato_depth * np.sin(2 * np.pi * vibrato_rate * t + rng.uniform(0, 2 * np.pi))
    phase = 2 * np.pi * np.cumsum(freq_ratio) / sample_rate
    wav = np.zeros(samples)
    nyquist_margin = 0.45 * sample_rate
    for k in range(1, 40):
        if k * f0 * (1 + vibrato_depth) > nyquist_margin:
            break
        wav += rng.uniform(0.5, 1.0) / k**1.5 * np.sin(k * f0 * phase + rng.uniform(0, 2 * np.pi))
    # Note envelopes: a new note (attack 20 ms, exponential decay) every 0.3-0.8 s.
    envelope = np.zeros(samples)
    start = 0
    while start < samples:
        length = int(rng.uniform(0.3, 0.8) * sample_rate)
        n = np.arange(min(length, samples - start))
        attack = np.minimum(1.0, n / (0.02 * sample_rate))
        envelope[start : start + n.size] = attack * np.exp(-n / (rng.uniform(0.2, 0.6) * sample_rate))
        start += length
    wav = wav * (0.2 + 0.8 * envelope)
    if noise > 0:
        # Breath/bow noise: white noise smoothed by a short moving average (low-pass).
        white = rng.standard_normal(samples + 7)
        wav += noise * np.convolve(white, np.ones(8) / 8, mode="valid")[:samples] * (0.2 + 0.8 * envelope)
    return wav / np.max(np.abs(wav)) * rng.uniform(0.3, 0.9)


def synthetic_sources(batch: int, samples: int = 65535, sample_rate: int = 11025, seed: int = 0) -> torch.Tensor:
    """Two music-like sources per item: a low harmonic voice and a higher, noisier one.

    Shape:
        - output: :math:`(batch, 2, samples)` float32, peak amplitude in [0.3, 0.9]
    """
    rng = np.random.default_rng(seed)
    items = []
    for _ in range(batch):
        low_f0 = rng.uniform(110.0, 220.0)
        # Pitch ratio between 2 and 5/2, away from both: the two voices share few partials (like
        # two instruments playing different notes), so an ideal mask can separate them.
        high_f0 = low_f0 * rng.uniform(2.15, 2.35)
        items.append(
            np.stack(
                (
                    _harmonic_tone(rng, samples, sample_rate, low_f0, noise=0.02),
                    _harmonic_tone(rng, samples, sample_rate, high_f0, noise=0.1),
                )
            )
        )
    return torch.from_numpy(np.stack(items)).float()


def imperfect_estimates(
    references: torch.Tensor, leakage: float = 0.1, noise: float = 0.01, seed: int = 0
) -> torch.Tensor:
    """Plausible separator outputs: a smeared copy of each reference plus leakage and noise.

    Each estimate is the reference through a short random filter (tolerated by the 512-tap
    distortion filter of BSS Eval, so it mostly costs nothing), plus ``leakage`` times the
    other sources (interference, SIR) plus white noise of relative level ``noise`` (artifacts,
    SAR).

    Shape:
        - references: :math:`(B, N, S)`
        - output: :math:`(B, N, S)`, same dtype
    """
    gen = torch.Generator().manual_seed(seed)
    refs = references.double()
    batch, n_src, samples = refs.shape
    taps = torch.zeros(batch, n_src, 8, dtype=torch.float64)
    taps[..., 0] = 1.0
    taps[..., 1:] = 0.1 * torch.randn(batch, n_src, 7, generator=gen, dtype=torch.float64)
    smeared = torch.stack(
        [
            torch.stack(
                [torch.from_numpy(np.convolve(refs[b, n].numpy(), taps[b, n].numpy())[:samples]) for n in range(n_src)]
            )
            for b in range(batch)
        ]
    )
    others = refs.sum(dim=1, keepdim=True) - refs
    scale = refs.abs().amax(dim=-1, keepdim=True)
    white = torch.randn(batch, n_src, samples, generator=gen, dtype=torch.float64)
    return (smeared + leakage * others + noise * scale * white).to(references.dtype)
