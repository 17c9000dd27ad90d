"""Benchmark of the SDR/SIR/SAR backends on the project's metric test signals.

``python -m benchmarks.bench_metrics`` times ``mir_eval`` (the reference) and ``fast``
(fast_bss_eval, torch float64) on two-source mixtures of paper-length clips (65535 samples at
11025 Hz) and prints the largest difference between the two, so the accuracy bar of
docs/architecture.md section 7 (fast may serve during search if within 0.05 dB of mir_eval) is
checked on the same signals that are timed.

The signals are :mod:`contavsep.testing`'s music-like sources and imperfect separations, the
ones the metric tests use.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch

from contavsep.testing import imperfect_estimates, synthetic_sources


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
