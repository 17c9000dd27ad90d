"""Benchmark of the SDR/SIR/SAR backends, and the project's own metric test signals.

``python -m contavsep.bench_metrics`` times ``mir_eval`` (the reference) and ``fast``
(fast_bss_eval, torch float64) on two-source mixtures of paper-length clips (65535 samples at
11025 Hz) and prints the largest difference between the two, so the accuracy bar of
ARCHITECTURE.md section 7 (fast may serve during search if within 0.05 dB of mir_eval) is
checked on the same signals that are timed.

The signals (:func:`synthetic_sources`) are music-like rather than white noise: two harmonic
tones with vibrato, note envelopes and some breath noise, of different pitch ranges. Imperfect
separations (:func:`imperfect_estimates`) add leakage of the other source, a short smearing
filter and noise, so all three of SDR, SIR and SAR are finite and in a realistic range.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch


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
            torch.stack([torch.from_numpy(np.convolve(refs[b, n].numpy(), taps[b, n].numpy())[:samples]) for n in range(n_src)])
            for b in range(batch)
        ]
    )
    others = refs.sum(dim=1, keepdim=True) - refs
    scale = refs.abs().amax(dim=-1, keepdim=True)
    white = torch.randn(batch, n_src, samples, generator=gen, dtype=torch.float64)
    return (smeared + leakage * others + noise * scale * white).to(references.dtype)


def main(argv: list[str] | None = None) -> int:
    from contavsep.metrics import separation_scores

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=4, help="mixtures per timed call")
    parser.add_argument("--samples", type=int, default=65535, help="samples per source")
    parser.add_argument("--repeats", type=int, default=2, help="timed calls per backend")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    args = parser.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)

    refs = synthetic_sources(args.batch, args.samples, seed=1).double()
    ests = imperfect_estimates(refs, leakage=0.3, noise=0.05, seed=2)
    mixture = refs.sum(dim=1)
    print(
        f"{args.batch} two-source mixtures x {args.samples} samples, {args.repeats} timed calls per backend, "
        f"torch threads={torch.get_num_threads()}"
    )
    results = {}
    for backend in ("mir_eval", "fast"):
        separation_scores(refs[:1], ests[:1], backend=backend)  # warm-up: imports, allocator
        start = time.perf_counter()
        for _ in range(args.repeats):
            separation_scores(refs, ests, backend=backend)
        per_mixture = (time.perf_counter() - start) / (args.repeats * args.batch)
        start = time.perf_counter()
        results[backend] = separation_scores(refs, ests, backend=backend, mixture=mixture)
        with_mixture = (time.perf_counter() - start) / args.batch
        print(
            f"  {backend:>8}: {1000 * per_mixture:8.1f} ms per mixture (SDR/SIR/SAR of 2 sources); "
            f"{1000 * with_mixture:8.1f} ms with the mixture's SDR too"
        )
    ref, fast = results["mir_eval"], results["fast"]
    worst = max(
        float(np.nanmax(np.abs(getattr(ref, name) - getattr(fast, name)))) for name in ("sdr", "sir", "sar", "sdr_mix")
    )
    print(
        f"  mean SDR {np.nanmean(ref.sdr):.2f} dB, SIR {np.nanmean(ref.sir):.2f} dB, SAR {np.nanmean(ref.sar):.2f} dB, "
        f"mixture SDR {np.nanmean(ref.sdr_mix):.2f} dB"
    )
    print(f"  max |fast - mir_eval| over SDR/SIR/SAR/mixture SDR: {worst:.1e} dB")
    return 0 if math.isfinite(worst) else 1


if __name__ == "__main__":
    raise SystemExit(main())
