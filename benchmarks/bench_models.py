"""Forward + backward time and peak memory of the separators on this machine.

    python -m benchmarks.bench_models                      # tiny x 8 and paper x 2, both models
    python -m benchmarks.bench_models --case iquery:tiny:8 --iters 10

Every case runs in a fresh interpreter so that its peak RSS is its own (``ru_maxrss`` only ever
grows within a process). A case is one training step without the optimizer: random inputs of the
preset's grid with ``--sources`` sources per mixture, ``forward`` in train mode, the mean mask as
loss, ``backward``. Reported: median and minimum over ``--iters`` timed steps after ``--warmup``
untimed ones, peak RSS of the case's process, and RSS right after building the model.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass

DEFAULT_CASES = ("iquery:tiny:8", "coseparation:tiny:8", "iquery:paper:2", "coseparation:paper:2")


@dataclass(frozen=True)
class CaseResult:
    """Timing and memory of one ``model:preset:batch`` case (seconds, MiB)."""

    case: str
    sources: int
    threads: int
    parameters: int
    median_s: float
    min_s: float
    iters: int
    rss_after_build_mib: float
    peak_rss_mib: float


def _rss_mib(kind: str) -> float:
    if kind == "peak":
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports KiB
    with open("/proc/self/statm") as fh:
        pages = int(fh.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def run_case(case: str, sources: int, iters: int, warmup: int, threads: int) -> CaseResult:
    """Time ``iters`` forward+backward steps of one case in this process."""
    import torch

    from contavsep.config import make_config
    from contavsep.models.build import build_model

    name, preset, batch = _parse_case(case)
    if threads > 0:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    cfg = make_config(preset, {"model.name": name})
    model = build_model(cfg, cfg.data.classes_per_step).train()
    rss_build = _rss_mib("current")
    m = cfg.model
    frames = 1 + cfg.audio.clip_samples // cfg.audio.hop
    mix = torch.rand(batch, 1, cfg.audio.warp_bins, frames)
    ids = torch.randint(0, cfg.data.classes_per_step, (batch, sources))
    objects = torch.randn(batch, sources, m.object_dim)
    motion = torch.randn(batch, sources, m.motion_tokens, m.motion_dim)
    times: list[float] = []
    for i in range(warmup + iters):
        model.zero_grad(set_to_none=True)
        start = time.perf_counter()
        out = model(mix, ids, objects, motion)
        out.masks.mean().backward()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return CaseResult(
        case=case,
        sources=sources,
        threads=torch.get_num_threads(),
        parameters=sum(p.numel() for p in model.parameters()),
        median_s=statistics.median(times),
        min_s=min(times),
        iters=iters,
        rss_after_build_mib=rss_build,
        peak_rss_mib=_rss_mib("peak"),
    )


def _parse_case(case: str) -> tuple[str, str, int]:
    parts = case.split(":")
    if len(parts) != 3 or not parts[2].isdigit() or int(parts[2]) < 1:
        raise SystemExit(f"bad case '{case}': expected model:preset:batch, e.g. iquery:tiny:8")
    return parts[0], parts[1], int(parts[2])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_models", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--case", action="append", help="model:preset:batch (repeatable); default: " + " ".join(DEFAULT_CASES)
    )
    parser.add_argument("--sources", type=int, default=2, help="sources per mixture (N)")
    parser.add_argument("--iters", type=int, default=5, help="timed steps per case")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps before timing")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    parser.add_argument("--json", action="store_true", help="print one JSON object per case")
    parser.add_argument("--in-process", action="store_true", help=argparse.SUPPRESS)  # child mode
    args = parser.parse_args(argv)
    if args.iters < 1 or args.warmup < 0 or args.sources < 1:
        raise SystemExit("--iters and --sources must be >= 1, --warmup >= 0")
    cases = args.case or list(DEFAULT_CASES)
    for case in cases:
        _parse_case(case)

    if args.in_process:
        for case in cases:
            print(json.dumps(asdict(run_case(case, args.sources, args.iters, args.warmup, args.threads))), flush=True)
        return 0

    if not args.json:
        print(
            f"{'case':<24}{'N':>3}{'thr':>5}{'params':>12}{'median s':>10}{'min s':>9}{'RSS built MiB':>15}{'peak RSS MiB':>14}"
        )
    for case in cases:
        cmd = [sys.executable, "-m", "benchmarks.bench_models", "--in-process", "--case", case,
               "--sources", str(args.sources), "--iters", str(args.iters), "--warmup", str(args.warmup),
               "--threads", str(args.threads)]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            print(f"{case}: failed\n{proc.stderr.strip()}", file=sys.stderr)
            return 1
        result = CaseResult(**json.loads(proc.stdout.strip().splitlines()[-1]))
        if args.json:
            print(json.dumps(asdict(result)), flush=True)
        else:
            print(
                f"{result.case:<24}{result.sources:>3}{result.threads:>5}{result.parameters:>12,}"
                f"{result.median_s:>10.3f}{result.min_s:>9.3f}{result.rss_after_build_mib:>15.0f}{result.peak_rss_mib:>14.0f}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
