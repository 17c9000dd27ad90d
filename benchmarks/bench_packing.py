"""Several trials on one device: the aggregate training throughput of 1, 2, 4 plain trial processes.

    python -m benchmarks.bench_packing --data file:///abs/synth [--preset search] [--trials 1,2,4]
        [--iters 50] [--warmup 5] [--set train.compile=reduce-overhead] [--json OUT.json]
    python -m benchmarks.bench_packing --data URI --quick     # CPU smoke: tiny preset, 1 and 2 trials

Each trial is its own process running the engine's training loop (``bench_engine.Bench``: step 0
of fine-tuning, the engine's pipelined loop body), as Tune runs trials that share a GPU through
fractional GPU resources: no MPS, no device settings changed. The processes build their model,
warm up (compilation and CUDA graphs included), then wait at a start line; all are released at
once and each trains ``--iters`` iterations. The aggregate throughput is every process's
mixtures over the wall-clock window from the first start to the last finish, so a process that
ends early does not flatter it. Memory per trial is the process's peak reserved CUDA memory (its
peak RSS on a CPU). The table gives the aggregate against one trial alone: what packing buys a
sweep, the number `search_spaces/*.yaml` fractions (``resources.gpus``) should follow.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

QUICK = {"preset": "tiny", "trials": "1,2", "iters": 4, "warmup": 1}


def worker(args: argparse.Namespace) -> None:
    """One trial process: build, warm up, report ready, wait for the start line, train, report."""
    import torch

    from benchmarks.bench_engine import Bench, sync_device
    from contavsep.config import make_config, parse_overrides
    from contavsep.data.format.reader import open_dataset
    from contavsep.loss_log import LossLog

    overrides = parse_overrides(args.overrides)
    table = open_dataset(args.data, cache_dir=make_config(args.preset, overrides).data.cache_dir or None)
    bench = Bench(table, args.preset, overrides)
    bench.pipelined(1, args.warmup)  # compilation, CUDA graphs, allocator: before the start line
    run = Path(args.run_dir)
    (run / f"ready-{args.index}").touch()
    while not (run / "go").exists():  # the parent creates it once every process is ready
        time.sleep(0.01)
    losses = LossLog(bench.device)
    started = time.time()
    with bench.engine.batches(bench.sampler, args.iters) as produced:
        for i, clips in enumerate(produced):
            loss = bench._loss(clips)
            loss.backward()
            bench._optimize()
            losses.add(i, {"total": loss})
    losses.check("packing", f"0..{args.iters - 1}")
    sync_device(bench.device)
    ended = time.time()
    if bench.device.type == "cuda":
        memory = torch.cuda.max_memory_reserved(bench.device)
    else:
        memory = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    result = {
        "started": started,
        "ended": ended,
        "mixtures": args.iters * bench.batch,
        "memory_bytes": memory,
        "device": str(bench.device),
        "batch": bench.batch,
    }
    (run / f"result-{args.index}.json").write_text(json.dumps(result))


def measure(args: argparse.Namespace, trials: int) -> dict[str, Any]:
    """``trials`` worker processes on one device, released together; their aggregate."""
    with tempfile.TemporaryDirectory(prefix="packing-") as run_dir:
        run = Path(run_dir)
        base = [
            sys.executable,
            "-m",
            "benchmarks.bench_packing",
            "--worker",
            "--run-dir",
            run_dir,
            "--data",
            args.data,
            "--preset",
            args.preset,
            "--iters",
            str(args.iters),
            "--warmup",
            str(args.warmup),
        ]
        for pair in args.overrides:
            base += ["--set", pair]
        env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
        procs = [subprocess.Popen([*base, "--index", str(i)], env=env) for i in range(trials)]
        try:
            while len(list(run.glob("ready-*"))) < trials:
                failed = [p.returncode for p in procs if p.poll() not in (None, 0)]
                if failed:
                    raise SystemExit(f"bench_packing: a trial process failed before the start line (exit {failed[0]})")
                time.sleep(0.05)
            (run / "go").touch()
            codes = [p.wait() for p in procs]
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
        if any(codes):
            raise SystemExit(f"bench_packing: trial processes exited {codes}")
        results = [json.loads((run / f"result-{i}.json").read_text()) for i in range(trials)]
    window = max(r["ended"] for r in results) - min(r["started"] for r in results)
    mixtures = sum(r["mixtures"] for r in results)
    return {
        "trials": trials,
        "device": results[0]["device"],
        "batch": results[0]["batch"],
        "aggregate_mixtures_per_s": mixtures / window,
        "per_trial_mixtures_per_s": [r["mixtures"] / (r["ended"] - r["started"]) for r in results],
        "memory_gib_per_trial": [r["memory_bytes"] / 2**30 for r in results],
        "window_s": window,
    }


def table(rows: list[dict[str, Any]]) -> str:
    """The packing table: aggregate throughput and its ratio to one trial, memory per trial."""
    single = rows[0]["aggregate_mixtures_per_s"] if rows and rows[0]["trials"] == 1 else None
    lines = ["trials  aggregate mixtures/s  vs 1 trial  per trial mixtures/s (min-max)  memory per trial GiB (max)"]
    for r in rows:
        ratio = f"{r['aggregate_mixtures_per_s'] / single:.2f}x" if single else "-"
        per = r["per_trial_mixtures_per_s"]
        lines.append(
            f"{r['trials']:>6}  {r['aggregate_mixtures_per_s']:>20.1f}  {ratio:>10}  {min(per):>12.1f}-{max(per):<12.1f}"
            f"       {max(r['memory_gib_per_trial']):.2f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="dataset URI (file:///abs/path or s3://...)")
    p.add_argument("--preset", default="search")
    p.add_argument("--trials", default="1,2,4", help="comma-separated numbers of concurrent trials")
    p.add_argument("--iters", type=int, default=50, help="measured iterations per trial")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--json", default=None, help="also write the rows here")
    p.add_argument("--quick", action="store_true", help="CPU smoke: tiny preset, 1 and 2 trials, 4 iterations")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--run-dir", default=None, help=argparse.SUPPRESS)
    p.add_argument("--index", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker(args)
        return
    if args.quick:
        args.preset, args.trials, args.iters, args.warmup = (
            QUICK["preset"],
            QUICK["trials"],
            QUICK["iters"],
            QUICK["warmup"],
        )
    try:
        counts = [int(n) for n in args.trials.split(",")]
    except ValueError:
        raise SystemExit(f"bench_packing: --trials must be numbers like 1,2,4, got {args.trials!r}") from None
    if not counts or min(counts) < 1 or args.iters < 1:
        raise SystemExit("bench_packing: --trials needs numbers >= 1 and --iters >= 1")
    rows = [measure(args, n) for n in counts]
    print(f"preset {args.preset}, batch {rows[0]['batch']}, {args.iters} iterations per trial on {rows[0]['device']}")
    print(table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps({"preset": args.preset, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
