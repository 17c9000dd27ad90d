"""Per-trial Ray overhead of the smoke space: trial wall time minus engine time.

    python -m benchmarks.bench_trial [--data URI] [--trials N] [--out results.json]

Runs ``search_spaces/smoke.yaml`` (file:// storage in a temp folder, no MLflow, local Ray) and
measures, per trial:

- wall: from Tune starting the trial to Tune seeing it end (the driver actor, the Train
  controller and worker group, dataset open through the node cache, the engine, checkpoint
  uploads, teardown), taken by a Tune callback in this process;
- engine: seconds inside ``run_sequence`` in the Train worker (its last reported ``time/engine_s``);
- overhead = wall - engine.

Without ``--data`` a small synthetic dataset (4 classes) is built in the temp folder first.
``--direct`` also runs the first trial's config once in this process without Ray (the same
engine work, for comparison). Numbers depend on the machine's load: the note says what ran.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, TypedDict

from ray.tune import Callback


class TrialTiming(TypedDict):
    """One trial's times, seconds (a row of the printed table and of the JSON)."""

    trial: str
    strategy: str
    steps: int
    wall_s: float
    engine_s: float
    worker_s: float
    overhead_s: float


class TrialClock(Callback):
    """Wall-clock start and end of every trial, seen from the Tune controller."""

    def __init__(self) -> None:
        self.started: dict[str, float] = {}
        self.ended: dict[str, float] = {}

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.started.setdefault(trial.trial_id, time.time())

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.ended[trial.trial_id] = time.time()

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.ended[trial.trial_id] = time.time()


def _dataset(root: Path) -> str:
    from contavsep.data.synthetic.synth import SynthConfig, build_synthetic

    uri = f"file://{root}/datasets/synth-bench"
    build_synthetic(uri, SynthConfig(classes=4, clips_per_class=(4, 1, 2), seconds=1.6))
    return uri


def _direct_engine_seconds(space: Any, params: dict[str, Any]) -> float:
    """The same trial's engine run in this process, without Ray (no checkpoints)."""
    from contavsep.data.format.reader import open_dataset
    from contavsep.engine import run_sequence

    cfg = space.trial_config(params)
    table = open_dataset(cfg.data.uri)
    started = time.perf_counter()
    run_sequence(cfg, table)
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_trial", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data", default=None, help="dataset URI (default: build a small synthetic one in a temp folder)"
    )
    parser.add_argument("--trials", type=int, default=None, help="number of trials (default: the smoke space's)")
    parser.add_argument("--direct", action="store_true", help="also run the first config once without Ray")
    parser.add_argument("--out", default=None, help="write the measurements as JSON here")
    args = parser.parse_args(argv)

    from contavsep_platform.spaces import load_space, shipped_spaces_dir
    from contavsep_platform.sweep import connect_ray, print_outcome, run_sweep

    with tempfile.TemporaryDirectory(prefix="contavsep-bench-") as tmp:
        root = Path(tmp)
        os.environ.setdefault("CONTAVSEP_CACHE_DIR", str(root / "cache"))
        data = args.data or _dataset(root)
        storage_uri = f"file://{root}/storage"
        space = load_space(shipped_spaces_dir() / "smoke.yaml", storage_uri=storage_uri, overrides={"data.uri": data})
        if args.trials:
            from dataclasses import replace

            space = replace(space, num_samples=args.trials)
        t0 = time.perf_counter()
        connect_ray(None, {"CONTAVSEP_CACHE_DIR": os.environ["CONTAVSEP_CACHE_DIR"]})
        ray_start = time.perf_counter() - t0
        clock = TrialClock()
        t0 = time.perf_counter()
        outcome = run_sweep(space, storage_uri=storage_uri, name="bench", callbacks=[clock], verbose=0)
        sweep_wall = time.perf_counter() - t0
        print_outcome(outcome)

        rows: list[TrialTiming] = []
        for row in outcome.trials:
            wall = clock.ended.get(row.trial_id, 0.0) - clock.started.get(row.trial_id, 0.0)
            engine = row.engine_seconds or 0.0
            worker = float(row.metrics.get("time/worker_s", 0.0))
            rows.append(
                {
                    "trial": row.trial_id,
                    "strategy": row.strategy,
                    "steps": row.steps,
                    "wall_s": wall,
                    "engine_s": engine,
                    "worker_s": worker,
                    "overhead_s": wall - engine,
                }
            )
        direct = _direct_engine_seconds(space, outcome.trials[0].params) if args.direct and outcome.trials else None

    print("\nper-trial Ray overhead (smoke space): wall = Tune trial start..end, engine = run_sequence in the worker")
    print(
        f"{'trial':<10} {'strategy':<10} {'steps':>5} {'wall s':>8} {'engine s':>9} {'worker s':>9} {'overhead s':>11}"
    )
    for r in rows:
        print(
            f"{r['trial']:<10} {r['strategy']:<10} {r['steps']:>5} {r['wall_s']:>8.1f} {r['engine_s']:>9.1f} {r['worker_s']:>9.1f} {r['overhead_s']:>11.1f}"
        )
    overheads = [r["overhead_s"] for r in rows]
    summary = {
        "trials": rows,
        "ray_start_s": ray_start,
        "sweep_wall_s": sweep_wall,
        "max_concurrent": outcome.max_concurrent,
        "median_overhead_s": statistics.median(overheads) if overheads else None,
        "direct_engine_s": direct,
        "cpus": os.cpu_count(),
        "load_average_1min": os.getloadavg()[0],
    }
    print(
        f"median overhead {summary['median_overhead_s']:.1f} s per trial; local Ray start {ray_start:.1f} s;"
        f" sweep {sweep_wall:.1f} s with {outcome.max_concurrent} trial(s) at once; load average {summary['load_average_1min']:.1f}"
        + (f"; the first config without Ray: engine {direct:.1f} s" if direct is not None else "")
    )
    if args.out:
        Path(args.out).write_text(json.dumps(summary, indent=2))
    import ray

    ray.shutdown()
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
