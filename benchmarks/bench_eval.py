"""Benchmark of the continual measurement: its noise floor and its cost.

A model trained on task 0, then *fixed*, is evaluated after every step: whatever forgetting or
backward transfer it shows comes from the test set, not from the model (with per-task fixed
test sets it is exactly 0). Over several test-set seeds it prints that spurious forgetting, the
spread of ``R[0][0]`` (the test set's sampling noise), the scored sources per step and the
evaluation time::

    python -m benchmarks.bench_eval --data file:///abs/synth-default [--set eval.windows_per_clip=2 ...]

Co-Separation is the fixed model: iQuery's class queries attend to each other, so adding the
next step's queries changes its old masks even without training.
"""

from __future__ import annotations

import argparse
import statistics
import time

from contavsep.config import make_config, parse_overrides
from contavsep.data.format.reader import open_dataset
from contavsep.engine import Engine

SETTINGS = {
    "strategy.name": "finetune",
    "memory.per_class": 0,
    "model.name": "coseparation",
    "data.num_steps": 3,
    "data.classes_per_step": 2,
    "train.iters_per_step": 150,
    "train.batch_size": 8,
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="dataset URI (e.g. the default synthetic benchmark)")
    parser.add_argument("--seeds", type=int, default=5, help="test-set seeds (eval.seed) to repeat over")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    table = open_dataset(args.data)
    forgetting, bwt, r00, eval_s = [], [], [], []
    for seed in range(args.seeds):
        cfg = make_config("tiny", {**SETTINGS, **parse_overrides(args.overrides), "eval.seed": 1000 + seed})
        engine = Engine(cfg, table)
        engine.run_step(0)  # trains task 0 (and evaluates it), then the model stays fixed
        started = time.perf_counter()
        for step in range(1, engine.scenario.num_steps):
            engine.model.expand_classes(engine.scenario.num_seen(step))
            engine._evaluate(step)
        eval_s.append(time.perf_counter() - started)
        summary = engine.results.summary()
        forgetting.append(abs(summary["forgetting"]["sdr"]))
        bwt.append(abs(summary["bwt"]["sdr"]))
        r00.append(summary["R"]["sdr"][0][0])
        sources = [row["sources"] for row in summary["steps"]]
        print(
            f"test-set seed {seed}: forgetting {summary['forgetting']['sdr']:+.3f} dB, BWT {summary['bwt']['sdr']:+.3f} dB,"
            f" R[0][0] {r00[-1]:.3f} dB, sources per step {sources}, evaluation of steps 2..T {eval_s[-1]:.1f} s",
            flush=True,
        )
    print(
        f"fixed model over {args.seeds} test-set seeds: |forgetting| mean {statistics.mean(forgetting):.3f} max {max(forgetting):.3f} dB;"
        f" |BWT| mean {statistics.mean(bwt):.3f} dB; R[0][0] sd {statistics.stdev(r00) if len(r00) > 1 else 0.0:.3f} dB;"
        f" evaluation {statistics.mean(eval_s):.1f} s per sequence (steps 2..T)"
    )


if __name__ == "__main__":
    main()
