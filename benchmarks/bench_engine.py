"""Where a training iteration's time goes, and how fast evaluation scores, at a preset on this machine.

    python -m benchmarks.bench_engine --data file:///abs/synth --preset paper --iters 20 [--set train.compile=default] [--eval]

For one step of fine-tuning, after a warm-up, two measurements:

- **breakdown** (phases run one after the other, the device synchronised after each): host
  batch preparation (crop and gather), transfer to the device, forward+backward (STFT front end,
  model, loss, backward), optimizer; their sum is what an unoverlapped loop would cost.
- **pipelined**: the engine's own loop body (producer thread preparing ``train.prefetch_batches``
  ahead, losses summed on the device, no host sync): seconds per iteration and mixtures/s.

MFU = the model's FLOPs of one iteration (forward+backward, counted by ``torch.utils.flop_counter``,
attention included on a CPU too (:func:`flop_counter`), with the U-Net decoder's upsample + 3x3
conv counted literally, whatever ``train.decoder_conv``
executes; the executed count is printed beside it) / seconds per iteration / the device's dense
bf16 peak (``--peak-tflops``, or known for H100/H200/A100; none on a CPU). ``--eval`` times the
evaluation of task 0's fixed test set (the preset's windows and pairs) with each metrics backend
and prints scored mixtures/s, and of its validation set (what every step adds since sweeps
select on validation; fast backend).
"""

from __future__ import annotations

import argparse
import os
import resource
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from contavsep.config import make_config, parse_overrides
from contavsep.data.format.reader import ClipTable, open_dataset
from contavsep.engine import Engine, make_optimizers
from contavsep.loss_log import LossLog

# Dense bf16 tensor-core peaks (FLOP/s), by a substring of torch.cuda.get_device_name().
BF16_PEAK = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "L4": 121e12, "A10": 125e12}


def device_peak(device: torch.device) -> float | None:
    """The dense bf16 peak of a CUDA device we know, else None."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    if "H100" in name and "PCIe" in name:
        return 756e12
    return next((peak for key, peak in BF16_PEAK.items() if key in name), None)


def sync_device(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def flop_counter() -> Any:
    """A ``FlopCounterMode`` that also counts attention on a CPU.

    torch's formulas cover the CUDA attention kernels (cuDNN, flash, efficient) but not
    ``_scaled_dot_product_flash_attention_for_cpu``, so a CPU count missed the transformer's
    attention (86.65 instead of the H100's 90.52 GFLOP per paper training mixture). The CPU op
    takes ``(query, key, value, ...)`` and its backward ``(grad_out, query, key, value, ...)``
    like the CUDA ones, so the same formulas apply.
    """
    from torch.utils.flop_counter import (
        FlopCounterMode,
        sdpa_backward_flop_count,
        sdpa_flop_count,
    )

    def forward(query: Any, key: Any, value: Any, *_: Any, **__: Any) -> int:  # shapes
        return sdpa_flop_count(query, key, value)

    def backward(grad_out: Any, query: Any, key: Any, value: Any, *_: Any, **__: Any) -> int:
        return sdpa_backward_flop_count(grad_out, query, key, value)

    aten = torch.ops.aten
    return FlopCounterMode(
        display=False,
        custom_mapping={
            aten._scaled_dot_product_flash_attention_for_cpu: forward,
            aten._scaled_dot_product_flash_attention_for_cpu_backward: backward,
        },
    )


class Bench:
    """One engine at step 0 with its sampler and optimizers, for timing training iterations."""

    def __init__(self, table: ClipTable, preset: str, overrides: dict[str, Any]):
        self.cfg = make_config(preset, {"strategy.name": "finetune", "memory.per_class": 0, **overrides})
        self.engine = Engine(self.cfg, table)
        self.engine.model.expand_classes(self.engine.scenario.num_seen(0))
        self.sampler = self.engine._sampler(0)
        self.optimizers, _ = make_optimizers(
            self.engine.model, self.cfg, self.engine.plan(0, self.sampler), fused=self.engine.speed.fused_optimizer
        )
        self.engine.model.train()
        self.device = self.engine.device
        self.batch = self.cfg.train.batch_size

    def _loss(self, clips: Any, forward: Callable | None = None) -> torch.Tensor:
        e = self.engine
        batch = e._to_step_batch(clips)
        with e.autocast:
            return e.main_loss((forward or e.train_forward)(e.model, batch), batch)

    def _optimize(self) -> None:
        for o in self.optimizers:
            o.step()
            o.zero_grad(set_to_none=True)

    def breakdown(self, iters: int, warmup: int) -> dict[str, float]:
        """Seconds per iteration of each phase, run in sequence with a device sync after each."""
        phases = dict.fromkeys(("prepare", "transfer", "forward_backward", "optimizer"), 0.0)
        for i in range(warmup + iters):
            t0 = time.perf_counter()
            clips = self.sampler.sample(self.batch, pcm=self.engine.pcm_batches)  # as Engine.batches
            if self.device.type == "cuda":
                clips = clips.pin_memory()
            t1 = time.perf_counter()
            clips = clips.to(self.device)
            sync_device(self.device)
            t2 = time.perf_counter()
            self._loss(clips).backward()
            sync_device(self.device)
            t3 = time.perf_counter()
            self._optimize()
            sync_device(self.device)
            t4 = time.perf_counter()
            if i >= warmup:
                for key, dt in zip(phases, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
                    phases[key] += dt / iters
        phases["sum"] = sum(phases.values())
        return phases

    def pipelined(self, iters: int, warmup: int) -> float:
        """Seconds per iteration of the engine's loop body: producer on, no host sync."""
        losses = LossLog(self.device)
        with self.engine.batches(self.sampler, warmup + iters) as produced:
            for i, clips in enumerate(produced):
                if i == warmup:
                    sync_device(self.device)
                    started = time.perf_counter()
                loss = self._loss(clips)
                loss.backward()
                self._optimize()
                losses.add(i, {"total": loss})
        losses.check("bench", f"0..{warmup + iters - 1}")
        sync_device(self.device)
        return (time.perf_counter() - started) / iters

    def flops(self, model_flops: bool = True) -> float:
        """FLOPs of one training iteration (forward + backward), counted on the eager model.

        ``model_flops``: count the decoder's "upsample, then 3x3 conv" literally (the model's
        FLOPs, the MFU numerator whatever ``train.decoder_conv`` executes); False: the FLOPs
        the configured implementation executes (the transposed decoder conv does 2.25x fewer).
        """
        from contavsep.models.unet import set_decoder_conv, set_encoder_conv

        clips = self.sampler.sample(self.batch).to(self.device)
        counter = flop_counter()
        if model_flops:  # the model as written (space_to_depth has the same FLOPs; subpixel a border more)
            set_decoder_conv(self.engine.model, "upsample")
            set_encoder_conv(self.engine.model, "strided")
        try:
            with counter:
                self._loss(clips, self.engine.forward).backward()
        finally:
            set_decoder_conv(self.engine.model, self.cfg.train.decoder_conv)
            set_encoder_conv(self.engine.model, self.cfg.train.encoder_conv)
        for o in self.optimizers:
            o.zero_grad(set_to_none=True)
        return float(counter.get_total_flops())


def measure(
    table: ClipTable, preset: str, iters: int, warmup: int, overrides: dict[str, Any], peak: float | None = None
) -> dict[str, Any]:
    """Breakdown, pipelined iteration time, mixtures/s, FLOPs and MFU of one configuration."""
    bench = Bench(table, preset, overrides)
    phases = bench.breakdown(iters, warmup)
    s_iter = bench.pipelined(iters, warmup)
    flops = bench.flops()
    executed = bench.flops(model_flops=False)
    peak = peak or device_peak(bench.device)
    return {
        "preset": preset,
        "batch": bench.batch,
        "device": str(bench.device),
        "threads": torch.get_num_threads(),
        **{f"{k}_s": v for k, v in phases.items()},
        "prepare_ms_per_mixture": 1e3 * phases["prepare"] / bench.batch,
        "iteration_s": s_iter,
        "mixtures_per_s": bench.batch / s_iter,
        "gflop_per_mixture": flops / bench.batch / 1e9,  # the model's (literal decoder)
        "executed_gflop_per_mixture": executed / bench.batch / 1e9,  # what train.decoder_conv runs
        "achieved_tflops": flops / s_iter / 1e12,
        "mfu": flops / s_iter / peak if peak else None,
        "executed_utilisation": executed / s_iter / peak if peak else None,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def measure_eval(
    table: ClipTable, preset: str, overrides: dict[str, Any], repeats: int = 1, split: str = "test"
) -> dict[str, Any]:
    """Evaluation of task 0's fixed test set (``split="val"``: its validation set, always scored
    with the fast backend): separation + scoring, scored mixtures/s.

    The first pass also scores the unprocessed mixtures (once per task in a real run); the
    following ``repeats`` passes are the steady state every later step pays.
    """
    cfg = make_config(preset, {"strategy.name": "finetune", "memory.per_class": 0, **overrides})
    engine = Engine(cfg, table)
    engine.model.expand_classes(engine.scenario.num_seen(0))
    mixtures = len(engine._evaluation_set(0, split))
    started = time.perf_counter()
    engine._evaluate(0, split)
    sync_device(engine.device)
    first = time.perf_counter() - started
    started = time.perf_counter()
    for _ in range(repeats):
        engine._evaluate(0, split)
    sync_device(engine.device)
    again = (time.perf_counter() - started) / repeats
    return {
        "backend": cfg.eval.backend if split == "test" else "fast",
        "device": str(engine.device),
        "eval_batch": cfg.eval.batch_size,
        "mixtures": mixtures,
        "first_s": first,
        "steady_s": again,
        "mixtures_per_s": mixtures / again,
    }


def measure_prepare(
    table: ClipTable, preset: str, overrides: dict[str, Any], batches: int = 10, rounds: int = 6
) -> dict[str, float]:
    """Host milliseconds per mixture to build a batch with float32 audio (CPU runs) and with int16
    PCM (CUDA runs), interleaved in rounds; the medians."""
    bench = Bench(table, preset, overrides)
    for pcm in (False, True):  # warm the memory-mapped cache
        bench.sampler.sample(bench.batch, pcm=pcm)
    times: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(rounds):
        for pcm in (False, True):
            started = time.perf_counter()
            for _ in range(batches):
                bench.sampler.sample(bench.batch, pcm=pcm)
            times[pcm].append(1e3 * (time.perf_counter() - started) / batches / bench.batch)
    return {
        "float32_ms_per_mixture": float(np.median(times[False])),
        "pcm_ms_per_mixture": float(np.median(times[True])),
    }


def print_breakdown(label: str, r: dict[str, Any]) -> None:
    ms = {k: 1e3 * r[f"{k}_s"] for k in ("prepare", "transfer", "forward_backward", "optimizer", "sum")}
    mfu = f"{100 * r['mfu']:.1f} %" if r["mfu"] is not None else "n/a (no known peak)"
    print(
        f"{label}: batch {r['batch']} on {r['device']}\n"
        f"  in sequence, ms/iter: prepare {ms['prepare']:.1f} ({r['prepare_ms_per_mixture']:.3f}/mixture)"
        f"  transfer {ms['transfer']:.1f}  forward+backward {ms['forward_backward']:.1f}  optimizer {ms['optimizer']:.1f}"
        f"  = {ms['sum']:.1f}\n"
        f"  pipelined (producer, no syncs): {1e3 * r['iteration_s']:.1f} ms/iter, {r['mixtures_per_s']:.1f} mixtures/s;"
        f" {r['gflop_per_mixture']:.1f} GFLOP/mixture ({r['executed_gflop_per_mixture']:.1f} executed),"
        f" {r['achieved_tflops']:.2f} TFLOP/s, MFU {mfu}",
        flush=True,
    )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True)
    p.add_argument("--preset", action="append", default=None, help="repeatable (default: tiny and small)")
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--peak-tflops", type=float, default=None, help="device peak for MFU (default: known GPUs)")
    p.add_argument(
        "--eval", action="store_true", help="also time the evaluation of task 0's test set (fast and mir_eval)"
    )
    p.add_argument("--set", dest="overrides", action="append", default=[])
    args = p.parse_args(argv)
    overrides = parse_overrides(args.overrides)
    print(f"torch threads: {torch.get_num_threads()}, load average {os.getloadavg()[0]:.2f}")
    for preset in args.preset or ["tiny", "small"]:
        table = open_dataset(args.data, cache_dir=make_config(preset, overrides).data.cache_dir or None)
        r = measure(table, preset, args.iters, args.warmup, overrides, args.peak_tflops and args.peak_tflops * 1e12)
        print_breakdown(preset, r)
        prep = measure_prepare(table, preset, overrides)
        print(
            f"  batch preparation, median ms/mixture: float32 audio {prep['float32_ms_per_mixture']:.3f},"
            f" int16 PCM (what a CUDA run builds) {prep['pcm_ms_per_mixture']:.3f}",
            flush=True,
        )
        if args.eval:
            for backend in ("fast", "mir_eval"):
                e = measure_eval(table, preset, {**overrides, "eval.backend": backend})
                print(
                    f"  eval ({backend} on {e['device']}, eval batch {e['eval_batch']}): {e['mixtures']} mixtures,"
                    f" first pass {e['first_s']:.1f} s, then {e['steady_s']:.1f} s = {e['mixtures_per_s']:.1f} scored mixtures/s",
                    flush=True,
                )
            v = measure_eval(table, preset, overrides, split="val")
            print(
                f"  validation (fast on {v['device']}): {v['mixtures']} mixtures, first pass {v['first_s']:.1f} s, then"
                f" {v['steady_s']:.1f} s = {v['mixtures_per_s']:.1f} scored mixtures/s",
                flush=True,
            )


if __name__ == "__main__":
    main()
