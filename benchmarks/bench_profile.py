"""Which kernels a training iteration spends its device time in, and how throughput scales with the batch.

    python -m benchmarks.bench_profile --data file:///abs/synth --preset paper [--set train.compile=default]

``bench_engine`` says how long an iteration takes; this says why. Three measurements of one
fine-tuning iteration at step 0, after a warm-up:

- **phases**: device time of the front end (mix, STFT, log-frequency warp, targets), the
  separator's forward, the loss, backward and the optimizer, from CUDA events around each
  (``torch.cuda.Event`` pairs read once at the end: no sync between phases).
- **kernels**: ``torch.profiler`` over a few pipelined iterations; the operators with the most
  device time, and their shares grouped by kind (convolution, matrix products, elementwise,
  normalisation, resampling, FFT, copies), so "13 % MFU" becomes "x % of the time in kernels
  that do no tensor-core work".
- **batch scaling**: pipelined mixtures/s and MFU at several batch sizes: if throughput grows
  with the batch, the iteration is latency/launch bound at the paper's batch, not compute bound.

On a CPU the phases and scaling still print (wall clock); the kernel table needs CUDA.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from typing import Any

import torch

from benchmarks.bench_engine import Bench, device_peak
from contavsep.config import parse_overrides
from contavsep.data.format.reader import open_dataset

# Operator-name fragments -> kind, first match wins (aten names as the profiler reports them).
KINDS = (
    ("convolution", ("conv", "cudnn")),
    ("matmul", ("mm", "matmul", "linear", "addmm", "bmm", "baddbmm", "gemm", "scaled_dot_product", "attention")),
    ("normalisation", ("norm", "batch_norm", "layer_norm")),
    ("resampling", ("grid_sampler", "upsample", "interpolate", "max_pool", "avg_pool", "max_unpool")),
    ("fft", ("fft", "stft")),
    ("copy", ("copy_", "to_copy", "contiguous", "clone", "cat", "stack", "index", "gather", "scatter")),
    ("optimizer", ("adam", "foreach", "_fused")),
)


# Inductor's generated kernels other than its conv/matmul templates (``triton_tem_``): pointwise,
# reduction, persistent reduction, foreach, split-scan, combo (Triton) and C++ on a CPU. Their
# names list the aten ops whose pointwise and reduction parts they fused
# ("triton_poi_fused_add_convolution_backward_leaky_relu_backward_..."); the convolutions and
# matrix products themselves stay cuDNN / cuBLAS calls.
INDUCTOR_FUSED = (
    "triton_poi_",
    "triton_red_",
    "triton_per_",
    "triton_for_",
    "triton_spl_",
    "triton_unk_",
    "cpp_fused_",
)
TENSOR_CORE_KINDS = ("convolution", "matmul")


def kind_of(name: str) -> str:
    low = name.lower()
    fused = low.startswith(INDUCTOR_FUSED)  # never a convolution / matrix product, whatever it fused
    if fused:  # classify by the fused ops' names ("triton_poi_fused_" would read as the fused optimizer)
        low = low.partition("fused")[2] or low
    for kind, fragments in KINDS:
        if fused and kind in TENSOR_CORE_KINDS:
            continue
        if any(f in low for f in fragments):
            return kind
    return "elementwise/other"


def phases(bench: Bench, iters: int, warmup: int) -> dict[str, float]:
    """Milliseconds per iteration of front end / forward / loss / backward / optimizer (device time on CUDA)."""
    e = bench.engine
    cuda = bench.device.type == "cuda"
    names = ("frontend", "forward", "loss", "backward", "optimizer")
    totals = dict.fromkeys(names, 0.0)
    clips_all = [bench.sampler.sample(bench.batch).to(bench.device) for _ in range(2)]
    marks: list[Any] = []

    def mark() -> None:
        if cuda:
            ev = torch.cuda.Event(enable_timing=True)
            ev.record()
            marks.append(ev)
        else:
            marks.append(time.perf_counter())

    for i in range(warmup + iters):
        clips = clips_all[i % 2]
        marks.clear()

        mark()
        batch = e._to_step_batch(clips)
        mark()
        with e.autocast:
            out = e.train_forward(e.model, batch)
            mark()
            loss = e.main_loss(out, batch)
        mark()
        loss.backward()
        mark()
        bench._optimize()
        mark()
        if i >= warmup:
            if cuda:
                torch.cuda.synchronize(bench.device)
                spans = [a.elapsed_time(b) for a, b in zip(marks, marks[1:])]
            else:
                spans = [(b - a) * 1e3 for a, b in zip(marks, marks[1:])]
            for name, ms in zip(names, spans):
                totals[name] += ms / iters
    totals["sum"] = sum(totals[n] for n in names)
    return totals


@dataclass(frozen=True)
class DeviceRows:
    """The profiler's averaged events per iteration, split by what they are.

    Each row is ``(name, device microseconds per iteration, calls per iteration)``.
    ``ops``: operators (aten ops, Inductor kernel launches) with their self device time;
    ``kernels``: the device kernels themselves, the batch's host-to-device copies excluded;
    ``transfers``: those copies (on the producer's copy stream, overlapping the compute of the
    pipelined iteration); ``annotations``: ``record_function`` ranges the profiler also draws on
    the device timeline (``Optimizer.step#Adam.step``): spans around kernels already counted,
    never added to a total.
    """

    ops: list[tuple[str, float, int]]
    kernels: list[tuple[str, float, int]]
    transfers: list[tuple[str, float, int]]
    annotations: list[tuple[str, float, int]]


def device_rows(events: Any, iters: int) -> DeviceRows:
    """Split ``prof.key_averages()`` into :class:`DeviceRows` (rows sorted by time, largest first)."""
    from torch.autograd import DeviceType

    rows: dict[str, list[tuple[str, float, int]]] = {"ops": [], "kernels": [], "transfers": [], "annotations": []}
    for evt in events:
        device_us = float(getattr(evt, "self_device_time_total", 0.0) or getattr(evt, "self_cuda_time_total", 0.0))
        if device_us <= 0:
            continue
        row = (evt.key, device_us / iters, evt.count // max(iters, 1))
        if getattr(evt, "is_user_annotation", False):
            rows["annotations"].append(row)
        elif getattr(evt, "device_type", DeviceType.CPU) == DeviceType.CPU:
            rows["ops"].append(row)
        elif evt.key.startswith("Memcpy HtoD"):
            rows["transfers"].append(row)
        else:
            rows["kernels"].append(row)
    for part in rows.values():
        part.sort(key=lambda r: -r[1])
    return DeviceRows(**rows)


def kernel_sources(events: Any, iters: int, depth: int = 3) -> list[tuple[str, str, float, int]]:
    """Device time per (kernel, the operators that launched it), largest first.

    ``events``: ``prof.events()``, the un-averaged events; each operator carries the kernels it
    launched (``.kernels``). The launching chain is the operator and up to ``depth - 1`` of its
    parents, innermost first (``aten::copy_ < aten::clone < aten::convolution_backward``), so a
    copy kernel says which operation asked for it. Rows: ``(kernel, chain, us per iteration,
    calls per iteration)``.
    """
    totals: dict[tuple[str, str], list[float]] = {}
    for evt in events:
        launched = getattr(evt, "kernels", None) or []
        if not launched:
            continue
        chain: list[str] = []
        node = evt
        while node is not None and len(chain) < depth:
            chain.append(node.name)
            node = getattr(node, "cpu_parent", None)
        for k in launched:
            acc = totals.setdefault((k.name, " < ".join(chain)), [0.0, 0])
            acc[0] += k.duration
            acc[1] += 1
    rows = [(name, chain, us / iters, int(n) // max(iters, 1)) for (name, chain), (us, n) in totals.items()]
    return sorted(rows, key=lambda r: -r[2])


def kernels(bench: Bench, iters: int, top: int) -> dict[str, Any]:
    """Device time by operator, by kernel and by kind over ``iters`` pipelined iterations (none on a CPU).

    The profiler reports every kernel twice: as the device event itself and as the self device
    time of the operator (aten op, or Inductor's kernel launch) that launched it. Totals and kinds
    come from the operators (their names say what they do), the kernel total from the kernels;
    device time launched outside any operator shows as "unattributed". The batch's host-to-device
    copy runs on the producer's copy stream, beside the compute: it is reported, not added.
    """
    from torch.profiler import ProfilerActivity, profile

    cuda = bench.device.type == "cuda"
    bench.pipelined(2, 1)  # warm
    with profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])) as prof:
        bench.pipelined(iters, 0)
        if cuda:
            torch.cuda.synchronize(bench.device)
    rows = device_rows(prof.key_averages(), iters)
    ops, kernel_rows = rows.ops, rows.kernels
    transfer = sum(r[1] for r in rows.transfers)
    by_kind: dict[str, float] = {}
    for name, us, _ in ops:
        by_kind[kind_of(name)] = by_kind.get(kind_of(name), 0.0) + us
    # the transfer's operator is the batch's non_blocking ``aten::copy_``: its device time is the transfer
    moved = min(transfer, by_kind.get("copy", 0.0))
    if moved:
        by_kind["copy"] -= moved
    kernel_total = sum(r[1] for r in kernel_rows)
    op_total = sum(r[1] for r in ops) - moved
    total = max(kernel_total, op_total) or 1.0
    if kernel_total > op_total:
        by_kind["unattributed"] = kernel_total - op_total
    print(
        f"  device time per iteration: {total / 1e3:.2f} ms in {sum(r[2] for r in kernel_rows)} kernels"
        f" ({op_total / 1e3:.2f} ms under {sum(r[2] for r in ops)} operator calls); besides: host-to-device copies"
        f" {transfer / 1e3:.2f} ms (copy stream, overlapped)"
    )
    for kind, us in sorted(by_kind.items(), key=lambda kv: -kv[1]):
        print(f"    {kind:20s} {us / 1e3:8.2f} ms  {100 * us / total:5.1f} %")
    for title, part in (("operators", ops), ("kernels", kernel_rows)):
        print(f"  top {top} {title} (self device time, ms/iter, calls/iter):")
        for name, us, calls in part[:top]:
            print(f"    {us / 1e3:8.3f}  {calls:5d}  {name[:110]}")
    sources = kernel_sources(prof.events(), iters)
    print(f"  top {top} kernels by launching operators (ms/iter, calls/iter, kernel <- operator < parents):")
    for name, chain, us, calls in sources[:top]:
        print(f"    {us / 1e3:8.3f}  {calls:5d}  {name[:70]}  <-  {chain[:120]}")
    return {
        "device_ms": total / 1e3,
        "operator_ms": op_total / 1e3,
        "kernel_ms": kernel_total / 1e3,
        "transfer_ms": transfer / 1e3,
        "by_kind_ms": {k: v / 1e3 for k, v in by_kind.items()},
        "annotations_ms": {n: us / 1e3 for n, us, _ in rows.annotations},
        "top": [{"op": n, "ms": us / 1e3, "calls": c} for n, us, c in ops[:top]],
        "top_kernels": [{"kernel": n, "ms": us / 1e3, "calls": c} for n, us, c in kernel_rows[:top]],
        "kernel_sources": [
            {"kernel": n, "launched_by": chain, "ms": us / 1e3, "calls": c} for n, chain, us, c in sources[:top]
        ],
    }


def scaling(
    table: Any, preset: str, overrides: dict[str, Any], batches: list[int], iters: int, warmup: int
) -> dict[str, Any]:
    """Pipelined mixtures/s and MFU per batch size."""
    out: dict[str, Any] = {}
    for b in batches:
        try:
            bench = Bench(table, preset, {**overrides, "train.batch_size": b})
            s_iter = bench.pipelined(iters, warmup)
            flops = bench.flops()
            peak = device_peak(bench.device)
            mfu = flops / s_iter / peak if peak else None
            out[str(b)] = {"ms_per_iter": s_iter * 1e3, "mixtures_per_s": b / s_iter, "mfu": mfu}
            mfu_text = f", MFU {100 * mfu:.1f} %" if mfu is not None else ""
            print(f"  batch {b:4d}: {s_iter * 1e3:8.1f} ms/iter, {b / s_iter:8.1f} mixtures/s{mfu_text}", flush=True)
            del bench
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except torch.OutOfMemoryError as exc:
            out[str(b)] = {"error": f"out of memory: {exc}"[:200]}
            print(f"  batch {b:4d}: out of memory", flush=True)
            break
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="dataset URI")
    p.add_argument("--preset", default="paper")
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--top", type=int, default=25)
    p.add_argument(
        "--batches", default="32,64,128", help="comma-separated batch sizes for the scaling table ('' = none)"
    )
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override (repeatable)")
    p.add_argument("--scaling-only", action="store_true", help="only the batch-scaling table (no phases, no kernels)")
    p.add_argument("--json", default="", help="write the numbers here")
    args = p.parse_args(argv)
    overrides = parse_overrides(args.set)
    table = open_dataset(args.data, cache_dir=overrides.get("data.cache_dir"))
    if torch.cuda.is_available():
        torch.backends.cudnn.benchmark = True
    result: dict[str, Any] = {"overrides": {k: str(v) for k, v in overrides.items()}}
    if not args.scaling_only:
        bench = Bench(table, args.preset, overrides)
        print(f"== phases ({args.preset}, batch {bench.batch}, {bench.device})", flush=True)
        result["phases_ms"] = phases(bench, args.iters, args.warmup)
        print("  " + "  ".join(f"{k} {v:.2f}" for k, v in result["phases_ms"].items()) + "  (ms/iter)", flush=True)
        if bench.device.type == "cuda":
            print("== kernels", flush=True)
            result["kernels"] = kernels(bench, max(2, args.iters // 2), args.top)
        del bench
    sizes = [int(b) for b in args.batches.split(",") if b.strip()]
    if sizes:  # each size builds (and under train.compile compiles) a new engine
        print("== batch scaling", flush=True)
        result["scaling"] = scaling(table, args.preset, overrides, sizes, args.iters, args.warmup)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
