"""Training throughput of the incremental loop: mixtures per second at a preset on this machine.

    python -m contavsep.bench_engine --data file:///abs/synth --preset tiny --iters 30

Runs one step of fine-tuning (sampling, STFT/warp, forward, backward, optimizer) after a short
warm-up and prints mixtures/s and seconds per iteration; evaluation is not included.
"""

from __future__ import annotations

import argparse
import resource
import time

import torch

from contavsep.config import make_config, parse_overrides
from contavsep.data.reader import open_dataset
from contavsep.engine import Engine, make_optimizers


def measure(data: str, preset: str, iters: int, warmup: int, overrides: dict[str, str]) -> dict[str, float]:
    cfg = make_config(preset, {"strategy.name": "finetune", "memory.per_class": 0, **overrides})
    engine = Engine(cfg, open_dataset(data, cache_dir=cfg.data.cache_dir or None))
    engine.model.expand_classes(engine.scenario.num_seen(0))
    sampler = engine._sampler(0)
    opts, _ = make_optimizers(engine.model, cfg, engine.plan(0, sampler))
    engine.model.train()

    def one() -> None:
        batch = engine._to_step_batch(sampler.sample(cfg.train.batch_size))
        with engine.autocast:
            loss = engine.main_loss(engine.forward(engine.model, batch), batch)
        for o in opts:
            o.zero_grad(set_to_none=True)
        loss.backward()
        for o in opts:
            o.step()

    for _ in range(warmup):
        one()
    started = time.perf_counter()
    for _ in range(iters):
        one()
    seconds = time.perf_counter() - started
    return {
        "mixtures_per_s": iters * cfg.train.batch_size / seconds,
        "s_per_iter": seconds / iters,
        "batch": cfg.train.batch_size,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True)
    p.add_argument("--preset", action="append", default=None, help="repeatable (default: tiny and small)")
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--set", dest="overrides", action="append", default=[])
    args = p.parse_args()
    print(f"torch threads: {torch.get_num_threads()}")
    for preset in args.preset or ["tiny", "small"]:
        r = measure(args.data, preset, args.iters, args.warmup, parse_overrides(args.overrides))
        print(f"{preset:6s} batch {r['batch']:3d}: {r['mixtures_per_s']:7.1f} mixtures/s  ({r['s_per_iter']:.3f} s/iter, peak RSS {r['peak_rss_mib']:.0f} MiB)")


if __name__ == "__main__":
    main()
