"""All GPU checks of the engine in one run (issue 11): speed per option, evaluation, correctness.

    bash scripts/gpu_check.sh              # on the GPU machine (offline: wheels from .whl/), ~6-7 min on an H100
    bash scripts/gpu_check.sh --quick      # the same sections at tiny sizes, on a CPU (~20 s)
    bash scripts/gpu_mfu.sh                # --short: training MFU per option (eager, compiled, CUDA graphs,
                                           # the defaults, batch 64), eager-vs-graphs sequences, the kernel
                                           # profile; ~7.5 min on an H100
    bash scripts/gpu_mfu.sh --defaults     # the best options next to the defaults (train.*=auto); ~2 min
    bash scripts/gpu_mfu.sh --kernels      # kernel-level variants: per-level conv forms (eager), stride-1
                                           # encoder/decoder convs and SDPA backends with CUDA graphs; ~7 min
    python -m benchmarks.bench_gpu --combos "all+cudagraphs,defaults (auto)"   # exactly these combinations

Needs nothing but torch, numpy, pyarrow, filelock and fast_bss_eval (mir_eval optional): it builds
a small synthetic dataset itself (10 classes, 6.5 s clips; ``contavsep.data.synthetic.synth``). Sections, each
guarded (an error is printed and recorded, the next section runs), results written to
``OUT/gpu_summary.json`` after every section:

1. device and versions; the dataset;
2. training iteration at the paper preset, batch 32, bf16, per eager option combination
   (baseline, no prefetch, channels_last, fused Adam, both): breakdown + pipelined time,
   mixtures/s, MFU (:mod:`benchmarks.bench_engine`);
3. evaluation of one task's fixed test set (paper windows/pairs) with the fast backend on the
   device, at two eval batch sizes: scored mixtures/s;
4. correctness: a two-step ContAV-Sep sequence on the device gives finite losses and scores, and
   SDR/SIR/SAR of the same estimates agree between the device and the CPU (and mir_eval if
   installed);
5. extrapolation to the reference budget (5.76 M training mixtures + the 4-step evaluation);
6. (CUDA, or --compile-on-cpu) torch.compile combinations (all options; CUDA graphs with and
   without channels_last; compile alone), the extrapolation again, two-step ContAV-Sep and PLOP
   sequences eager vs CUDA graphs (same losses and SDRs within bf16 noise), and the graphs
   compiled per step while class queries are added.

``--kernels`` runs instead: each U-Net level's forward + backward per conv form (eager), a
two-step sequence with the stride-1 forms against the default forms, then the best options with
CUDA graphs next to each kernel-level variant (``KERNEL_COMBOS``).

Eager numbers come first because compiling takes minutes; ``--budget-s`` skips sections that
would start too late.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

# --kernels: the best options so far, then each kernel-level variant, most promising first
KERNEL_COMBOS = (
    "all+cudagraphs",
    "all+cudagraphs+s2d+subpixel",
    "all+cudagraphs+subpixel",
    "all+cudagraphs+s2d",
    "all+cudagraphs+sdpa=flash",
    "all+cudagraphs+sdpa=efficient",
)
REFERENCE_MIXTURES = 5.76e6  # training mixtures of the reference budget per sequence (issue 11)
PAPER_STEPS = 4  # evaluations: after step t the test sets of tasks 0..t


class Run:
    """Sections with a time budget; results kept in one JSON written after every section."""

    def __init__(self, out: Path, budget_s: float):
        self.out, self.budget_s, self.started = out, budget_s, time.perf_counter()
        self.summary: dict[str, Any] = {"errors": {}, "skipped": []}
        out.mkdir(parents=True, exist_ok=True)

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def section(self, name: str, fn: Any, *args: Any, need_s: float = 0.0) -> Any:
        if self.elapsed() + need_s > self.budget_s:
            print(f"== {name}: skipped ({self.elapsed():.0f} s used of {self.budget_s:.0f})", flush=True)
            self.summary["skipped"].append(name)
            self.write()
            return None
        print(f"== {name} (t={self.elapsed():.0f} s)", flush=True)
        try:
            result = fn(*args)
            self.summary[name] = result
            return result
        except Exception as exc:  # noqa: BLE001 - every section guards itself, the run goes on
            traceback.print_exc()
            self.summary["errors"][name] = f"{type(exc).__name__}: {exc}"
            return None
        finally:
            self.write()

    def write(self) -> None:
        self.summary["elapsed_s"] = self.elapsed()
        (self.out / "gpu_summary.json").write_text(json.dumps(self.summary, indent=2, default=str))


def environment() -> dict[str, Any]:
    info: dict[str, Any] = {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "numpy": np.__version__,
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "cuda": torch.cuda.is_available(),
    }
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info.update(
            device=torch.cuda.get_device_name(0),
            capability=f"{p.major}.{p.minor}",
            memory_gib=p.total_memory / 2**30,
            cuda_version=torch.version.cuda,
            cudnn=torch.backends.cudnn.version(),
        )
    from importlib import metadata

    for module in ("fast_bss_eval", "mir_eval", "pyarrow", "scipy"):
        try:
            __import__(module)
            info[module] = metadata.version(module.replace("_", "-"))
        except Exception as exc:  # noqa: BLE001
            info[module] = f"missing ({type(exc).__name__})"
    print(json.dumps(info, indent=2), flush=True)
    return info


def build_dataset(root: Path, quick: bool) -> str:
    from contavsep.data.synthetic.synth import SynthConfig, build_synthetic, default_workers

    uri = f"file://{root}/synth"
    if (root / "synth" / "manifest.json").exists():
        return uri
    cfg = SynthConfig(
        classes=10, clips_per_class=(3, 1, 1) if quick else (6, 5, 5), seconds=1.6 if quick else 6.5, seed=3
    )
    started = time.perf_counter()
    build_synthetic(uri, cfg, workers=max(1, min(8, (os.cpu_count() or 1))) if not quick else default_workers())
    print(
        f"synthetic dataset {uri}: {cfg.classes} classes x {cfg.clips_per_class} clips of {cfg.seconds} s"
        f" in {time.perf_counter() - started:.1f} s",
        flush=True,
    )
    return uri


def train_options(
    args: argparse.Namespace, table: Any, base: dict[str, Any], compiled: bool, run: Run, key: str
) -> dict[str, Any]:
    from benchmarks.bench_engine import measure, print_breakdown

    if compiled:  # "all" first: the combination most likely to become the default
        combos: list[tuple[str, dict[str, Any]]] = [
            ("all", {"train.channels_last": True, "train.fused_optimizer": True, "train.compile": "default"}),
            # CUDA graphs replay forward and backward without a launch per kernel: the H100 run
            # spent ~24 ms/iter on the host for ~12 ms of kernels (issue 11), i.e. launch-bound
            (
                "all+cudagraphs",
                {"train.channels_last": True, "train.fused_optimizer": True, "train.compile": "reduce-overhead"},
            ),
            # the same without channels_last: once launches stop hiding it, does the layout pay?
            ("fused+cudagraphs", {"train.fused_optimizer": True, "train.compile": "reduce-overhead"}),
            ("compile", {"train.compile": "default"}),
            # what a run gets without setting any key (contavsep/speed.py): must equal the best
            (
                "defaults (auto)",
                {"train.channels_last": "auto", "train.fused_optimizer": "auto", "train.compile": "auto"},
            ),
            # is the paper's batch too small to fill the GPU?
            (
                "all+cudagraphs@64",
                {
                    "train.channels_last": True,
                    "train.fused_optimizer": True,
                    "train.compile": "reduce-overhead",
                    "train.batch_size": 64,
                },
            ),
        ]
        # Kernel-level variants (``--kernels``) of the best options. The H100 profile with graphs
        # (~10.3 ms of compute kernels/iteration; 35 % MFU needs <= 8.4 ms) ran the transposed decoder
        # convs' forward and the encoder convs' input gradient as cuDNN's strided "indexed" dgrad
        # kernels, and SDPA (1,024 tokens, head dim 32) on cuDNN's flash kernels (0.95 ms). The
        # same function through stride-1 convs (train.encoder_conv / train.decoder_conv), and
        # the other SDPA backends, chosen for the whole measurement (``bench.sdpa``):
        graphs = {"train.channels_last": True, "train.fused_optimizer": True, "train.compile": "reduce-overhead"}
        combos += [
            ("all+cudagraphs+subpixel", {**graphs, "train.decoder_conv": "subpixel"}),
            ("all+cudagraphs+s2d", {**graphs, "train.encoder_conv": "space_to_depth"}),
            (
                "all+cudagraphs+s2d+subpixel",
                {**graphs, "train.encoder_conv": "space_to_depth", "train.decoder_conv": "subpixel"},
            ),
            ("all+cudagraphs+sdpa=flash", {**graphs, "bench.sdpa": "FLASH_ATTENTION"}),
            ("all+cudagraphs+sdpa=efficient", {**graphs, "bench.sdpa": "EFFICIENT_ATTENTION"}),
        ]
    else:
        combos = [
            ("baseline", {}),
            ("no_prefetch", {"train.prefetch_batches": 0}),
            ("channels_last", {"train.channels_last": True}),
            ("fused_adam", {"train.fused_optimizer": True}),
            ("channels_last+fused", {"train.channels_last": True, "train.fused_optimizer": True}),
        ]
    if args.combos:  # exactly these (compiled or not)
        every = dict(combos)
        unknown = [c for c in args.combos if c not in every]
        if unknown:
            raise ValueError(f"unknown combination(s) {unknown}; known: {', '.join(every)}")
        combos = [(c, every[c]) for c in args.combos]
    elif args.kernels:  # the kernel-level variants next to the best options, on the same machine
        combos = [c for c in combos if c[0] in KERNEL_COMBOS]
        combos.sort(key=lambda c: KERNEL_COMBOS.index(c[0]))
    elif args.short:  # the MFU check: the best eager options, compiled, CUDA graphs with and without
        # channels_last, and with the decoder's literal "upsample, then 3x3 conv" (train.decoder_conv=upsample)
        combos = [
            c
            for c in combos
            if c[0]
            in (
                "channels_last+fused",
                "all",
                "all+cudagraphs",
                "fused+cudagraphs",
                "defaults (auto)",
                "all+cudagraphs@64",
            )
        ]
        combos += [
            (f"{label}+upsample", {**extra, "train.decoder_conv": "upsample"})
            for label, extra in combos
            if label in ("all+cudagraphs",)
        ]
    results: dict[str, Any] = {}
    for label, extra in combos:
        if time.perf_counter() - args.started > args.train_budget_s:
            print(f"  {label}: skipped (train budget {args.train_budget_s:.0f} s used)", flush=True)
            continue
        try:
            compiles = extra.get("train.compile", "off") != "off"
            if compiles:
                torch._dynamo.reset()  # each combination compiles afresh (and stays under the recompile limit)
            started = time.perf_counter()
            # every speed key explicit (their defaults are "auto", i.e. all on with a GPU)
            off = {"train.channels_last": False, "train.fused_optimizer": False, "train.compile": "off"}
            overrides = {k: v for k, v in {**base, **off, **extra}.items() if not k.startswith("bench.")}
            with sdpa_backend(extra.get("bench.sdpa")):
                r = measure(table, args.preset, args.iters, args.warmup + (5 if compiles else 0), overrides)
            r["wall_s"] = time.perf_counter() - started
            print_breakdown(f"{label} [{r['wall_s']:.0f} s]", r)
            results[label] = r
        except Exception as exc:  # noqa: BLE001
            traceback.print_exc()
            results[label] = {"error": f"{type(exc).__name__}: {exc}"}
        finally:
            run.summary[key] = results  # on disk after every combination: a timeout keeps what was measured
            run.write()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
    ok = {k: v for k, v in results.items() if "mixtures_per_s" in v}
    if ok:
        best = max(ok, key=lambda k: ok[k]["mixtures_per_s"])
        results["best"] = best
        print(f"  best: {best} at {ok[best]['mixtures_per_s']:.1f} mixtures/s", flush=True)
    return results


def sdpa_backend(name: str | None) -> Any:
    """A context running every ``F.scaled_dot_product_attention`` on the named backend (None: torch's choice).

    Compiling under it bakes the backend into the graph (the choice is made while tracing).
    """
    import contextlib

    if name is None:
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel(getattr(SDPBackend, name))


def conv_forms(args: argparse.Namespace) -> dict[str, Any]:
    """Each U-Net level's forward + backward per computation form, at the paper's shapes (batch 32).

    Eager, bf16 weights and maps, channels_last, cuDNN autotuned (benchmark mode); the level's own
    module with its encoder/decoder form switched (same weights). Per level: ms for forward +
    backward (input and weight gradients) of each form, and the best. Eager timing includes the
    forms' pad / rearrangement copies as separate kernels (a compiled graph fuses them into the
    neighbouring elementwise kernels), so it is an upper bound for the stride-1 forms.
    """
    from benchmarks.bench_engine import sync_device
    from contavsep.config import make_config
    from contavsep.models.unet import DECODER_CONVS, ENCODER_CONVS, UNet, _Down, _Up

    cfg = make_config(args.preset)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    batch = 2 if args.quick else 32
    grid = (cfg.audio.warp_bins, 1 + cfg.audio.clip_samples // cfg.audio.hop)
    unet = UNet(cfg.model.unet_channels, cfg.model.unet_depth, cfg.model.mask_channels).to(device, dtype)
    # torch's Module.to overloads omit memory_format, which Module.to documents and accepts.
    unet = unet.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    inputs: dict[str, Tensor] = {}
    names = {id(m): f"down{i}" for i, m in enumerate(unet.down)} | {id(m): f"up{i}" for i, m in enumerate(unet.up)}
    hooks = [
        m.register_forward_pre_hook(lambda m, a: inputs.__setitem__(names[id(m)], a[0].detach()))
        for m in list(unet.down) + list(unet.up)
    ]
    with torch.no_grad():
        unet(torch.rand(batch, 1, *grid, device=device, dtype=dtype))
    for h in hooks:
        h.remove()
    reps, warm = (2, 1) if args.quick else (10, 3)

    def timed(block: _Down | _Up, x: Tensor) -> float:
        x = x.clone().requires_grad_(True)
        for i in range(warm + reps):
            if i == warm:
                sync_device(device)
                started = time.perf_counter()
            out = block(x)
            grads = torch.autograd.grad(out, (x, block.conv.weight), torch.ones_like(out))
            del out, grads
        sync_device(device)
        return 1e3 * (time.perf_counter() - started) / reps

    levels: dict[str, Any] = {}
    totals: dict[str, float] = {}
    for block in list(unet.down) + list(unet.up):
        assert isinstance(block, (_Down, _Up))  # a UNet's levels; ModuleList iterates as plain Module
        name = names[id(block)]
        x = inputs[name]
        forms = ENCODER_CONVS if isinstance(block, _Down) else DECODER_CONVS
        row: dict[str, Any] = {"input": list(x.shape)}
        for form in forms:
            if isinstance(block, _Up):
                block.decoder_conv, block.min_pixels = form, 0
            else:
                block.encoder_conv = form
            row[form] = timed(block, x)
            kind = "encoder" if isinstance(block, _Down) else "decoder"
            totals[f"{kind}:{form}"] = totals.get(f"{kind}:{form}", 0.0) + row[form]
        row["best"] = min(forms, key=lambda f: row[f])
        levels[name] = row
        print(
            f"  {name:6s} {str(tuple(x.shape)):24s} "
            + "  ".join(f"{f} {row[f]:7.3f}" for f in forms)
            + f"  ms fwd+bwd  best: {row['best']}",
            flush=True,
        )
    print(
        "  totals (ms fwd+bwd per iteration, all levels): " + ", ".join(f"{k} {v:.2f}" for k, v in totals.items()),
        flush=True,
    )
    return {"batch": batch, "dtype": str(dtype), "levels": levels, "totals_ms": totals}


def evaluation(args: argparse.Namespace, table: Any, base: dict[str, Any]) -> dict[str, Any]:
    from benchmarks.bench_engine import measure_eval

    out = {}
    for eval_batch in args.eval_batches:
        e = measure_eval(table, args.preset, {**base, "eval.backend": "fast", "eval.batch_size": eval_batch}, repeats=1)
        print(
            f"  fast backend on {e['device']}, eval batch {eval_batch}: {e['mixtures']} mixtures; first pass (with mixture SDR)"
            f" {e['first_s']:.2f} s, then {e['steady_s']:.2f} s = {e['mixtures_per_s']:.1f} scored mixtures/s",
            flush=True,
        )
        out[f"eval_batch_{eval_batch}"] = e
    return out


def correctness(args: argparse.Namespace, table: Any, base: dict[str, Any]) -> dict[str, Any]:
    from contavsep.config import make_config
    from contavsep.engine import Engine
    from contavsep.metrics import separation_scores

    cfg = make_config(
        args.preset,
        {
            **base,
            "strategy.name": "contavsep",
            "memory.per_class": 1,
            "train.iters_per_step": 6,
            "train.batch_size": 8,
            "eval.windows_per_clip": 1,
            "eval.pairs_per_clip": 1,
            "eval.backend": "fast",
        },
    )
    engine = Engine(cfg, table)
    steps = []
    for step in range(engine.scenario.num_steps):
        r = engine.run_step(step)
        engine.next_step = step + 1
        losses = {k: v for k, v in r.metrics.items() if k.startswith("loss/")}
        steps.append({"step": step, "sdr": r.metrics["sdr"], **losses})
        print(f"  step {step}: SDR {r.metrics['sdr']:.2f}, losses {losses}", flush=True)
    finite = all(np.isfinite(v) for s in steps for v in s.values())
    # Same estimates scored on the device and on the CPU (and by mir_eval when installed).
    _, _, mix, refs, ests = next(iter(engine._separate(engine._evaluation_set(0))))
    on_device = separation_scores(refs, ests, "fast", mixture=mix)
    on_cpu = separation_scores(refs.cpu(), ests.cpu(), "fast", mixture=mix.cpu())
    diff = {
        m: float(np.nanmax(np.abs(getattr(on_device, m) - getattr(on_cpu, m))))
        for m in ("sdr", "sir", "sar", "sdr_mix")
    }
    out: dict[str, Any] = {"steps": steps, "all_finite": bool(finite), "device_vs_cpu_max_abs_db": diff}
    try:
        reference = separation_scores(refs.cpu(), ests.cpu(), "mir_eval")
        out["device_vs_mir_eval_max_abs_db"] = {
            m: float(np.nanmax(np.abs(getattr(on_device, m) - getattr(reference, m)))) for m in ("sdr", "sir", "sar")
        }
    except ImportError as exc:
        out["mir_eval"] = f"not installed: {exc}"
    print(
        f"  all losses and scores finite: {finite}; device vs CPU max |diff| dB: {diff};"
        f" mir_eval: {out.get('device_vs_mir_eval_max_abs_db', out.get('mir_eval'))}",
        flush=True,
    )
    return out


def _sequence(
    args: argparse.Namespace, table: Any, base: dict[str, Any], strategy: str, extra: dict[str, Any], label: str
) -> dict[str, Any]:
    """A two-step sequence through the engine (8 iterations per step, batch 8): losses, SDR, seconds."""
    from contavsep.config import make_config
    from contavsep.engine import Engine

    torch._dynamo.reset()
    cfg = make_config(
        args.preset,
        {
            **base,
            "strategy.name": strategy,
            "memory.per_class": 1,
            "train.iters_per_step": 8,
            "train.batch_size": 8,
            "eval.windows_per_clip": 1,
            "eval.pairs_per_clip": 1,
            "eval.backend": "fast",
            "train.channels_last": True,
            "train.fused_optimizer": True,
            "train.compile": "off",
            **extra,
        },
    )
    started = time.perf_counter()
    engine = Engine(cfg, table)
    steps = []
    for step in range(engine.scenario.num_steps):
        r = engine.run_step(step)
        engine.next_step = step + 1
        steps.append({k: float(v) for k, v in r.metrics.items() if k.startswith("loss/") or k == "sdr"})
    seconds = time.perf_counter() - started
    print(
        f"  {strategy} {label}: {seconds:.0f} s; "
        + "; ".join(f"step {i}: " + ", ".join(f"{k} {v:.4f}" for k, v in s.items()) for i, s in enumerate(steps)),
        flush=True,
    )
    return {"steps": steps, "seconds": seconds}


def _agreement(runs: dict[str, Any], a: str, b: str) -> dict[str, Any]:
    x, y = runs[a]["steps"], runs[b]["steps"]
    finite = all(np.isfinite(v) for s in x + y for v in s.values())
    diff = max(abs(p[k] - q[k]) for p, q in zip(x, y) for k in p if k in q)
    return {"all_finite": bool(finite), "max_abs_diff": diff}


def engine_modes(args: argparse.Namespace, table: Any, base: dict[str, Any]) -> dict[str, Any]:
    """Whole sequences through the engine with CUDA graphs against eager, per strategy.

    Two steps (the second has an old model, distillation, and for PLOP the U-Net internals as
    graph outputs) of a few iterations, once eager and once with ``train.compile=reduce-overhead``,
    both channels_last + fused Adam, same seed: the losses and SDRs must be finite and agree
    within bf16 noise (CUDA graphs replay the same kernels; a replay that read an overwritten
    output would not). Also the seconds each sequence took (compiles included).
    """
    out: dict[str, Any] = {}
    for strategy in args.engine_strategies:
        runs = {
            mode: _sequence(args, table, base, strategy, {"train.compile": mode}, f"compile={mode}")
            for mode in ("off", "reduce-overhead")
        }
        out[strategy] = {**runs, **_agreement(runs, "off", "reduce-overhead")}
        print(
            f"  {strategy}: all finite {out[strategy]['all_finite']}; max |eager - cudagraphs| over losses and SDR:"
            f" {out[strategy]['max_abs_diff']:.4f}",
            flush=True,
        )
    return out


def kernel_forms_engine(args: argparse.Namespace, table: Any, base: dict[str, Any]) -> dict[str, Any]:
    """A two-step ContAV-Sep sequence (eager) with the U-Net's stride-1 conv forms against the default forms.

    The forms compute the same function (float64 tests on the CPU); on the device the losses and
    SDR must agree within bf16 noise, as eager and CUDA graphs do (``engine_modes``).
    """
    forms = {"train.encoder_conv": "space_to_depth", "train.decoder_conv": "subpixel"}
    runs = {
        "strided+transposed": _sequence(args, table, base, "contavsep", {}, "strided+transposed"),
        "s2d+subpixel": _sequence(args, table, base, "contavsep", forms, "s2d+subpixel"),
    }
    out = {**runs, **_agreement(runs, "strided+transposed", "s2d+subpixel")}
    print(
        f"  all finite {out['all_finite']}; max |default forms - stride-1 forms| over losses and SDR: {out['max_abs_diff']:.4f}",
        flush=True,
    )
    return out


def recompiles(args: argparse.Namespace, table: Any, base: dict[str, Any]) -> dict[str, Any]:
    """Graphs compiled per step while the class queries grow (tiny model: compile cost, not speed)."""
    from torch._dynamo.utils import counters

    from contavsep.config import make_config
    from contavsep.engine import Engine

    cfg = make_config(
        "tiny",
        {
            **base,
            "strategy.name": "finetune",
            "memory.per_class": 0,
            "train.iters_per_step": 3,
            "data.num_steps": 3,
            "data.classes_per_step": 3,
            "train.compile": "default",
            "eval.windows_per_clip": 1,
            "eval.pairs_per_clip": 1,
        },
    )
    torch._dynamo.reset()
    engine = Engine(cfg, table)
    per_step = []
    for step in range(engine.scenario.num_steps):
        before = counters["stats"]["unique_graphs"]
        started = time.perf_counter()
        engine.run_step(step)
        engine.next_step = step + 1
        per_step.append(
            {
                "step": step,
                "classes": engine.model.num_classes,
                "new_graphs": counters["stats"]["unique_graphs"] - before,
                "seconds": time.perf_counter() - started,
            }
        )
        print(f"  step {step}: {per_step[-1]}", flush=True)
    return {"per_step": per_step}


def extrapolate(summary: dict[str, Any]) -> dict[str, Any]:
    ev = summary.get("eval") or {}
    train = {
        k: v
        for part in ("train", "train_compiled")
        for k, v in (summary.get(part) or {}).items()
        if isinstance(v, dict) and "mixtures_per_s" in v and "@" not in k
    }  # @: another batch than the paper's
    best = max(train, key=lambda k: train[k]["mixtures_per_s"]) if train else None
    if best is None:
        raise RuntimeError("no training measurement to extrapolate from")
    mps = train[best]["mixtures_per_s"]
    evals = [v for v in ev.values() if isinstance(v, dict) and "steady_s" in v]
    e = min(evals, key=lambda v: v["steady_s"]) if evals else None
    train_h = REFERENCE_MIXTURES / mps / 3600
    out: dict[str, Any] = {
        "best_option": best,
        "mixtures_per_s": mps,
        "train_h": train_h,
        "mfu": train[best].get("mfu"),
    }
    if e is not None:
        # after step t: the sets of tasks 0..t (a new task's first pass also scores its mixtures)
        task_sets = sum(range(1, PAPER_STEPS + 1))
        eval_s = task_sets * e["steady_s"] + PAPER_STEPS * max(0.0, e["first_s"] - e["steady_s"])
        out.update(
            eval_h=eval_s / 3600,
            last_step_eval_s=PAPER_STEPS * e["steady_s"] + max(0.0, e["first_s"] - e["steady_s"]),
            eval_mixtures_per_set=e["mixtures"],
        )
    out["total_h"] = train_h + out.get("eval_h", 0.0)
    print(
        f"  reference budget ({REFERENCE_MIXTURES / 1e6:.2f} M mixtures) with '{best}' at {mps:.0f} mixtures/s:"
        f" training {train_h:.2f} h, evaluation {out.get('eval_h', float('nan')):.3f} h"
        f" (last step's evaluation {out.get('last_step_eval_s', float('nan')):.1f} s), total {out['total_h']:.2f} h",
        flush=True,
    )
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=os.environ.get("OUT", "/tmp/contavsep-gpu-check"))
    p.add_argument("--work", default="/tmp/contavsep-gpu-work", help="synthetic dataset and cache")
    p.add_argument(
        "--quick", action="store_true", help="tiny preset, few iterations (a CPU smoke run of every section)"
    )
    p.add_argument("--compile-on-cpu", action="store_true", help="also time torch.compile without CUDA (slow)")
    p.add_argument(
        "--short",
        action="store_true",
        help="training MFU only: baseline, channels_last+fused, compiled with both, the last two also with"
        " train.decoder_conv=upsample (no eval/correctness/recompiles)",
    )
    p.add_argument(
        "--kernels",
        action="store_true",
        help="kernel-level variants: each U-Net level per conv form (eager), then the best options with"
        " stride-1 encoder/decoder convs and each SDPA backend, compiled with CUDA graphs",
    )
    p.add_argument(
        "--combos",
        default="",
        help="comma-separated compiled combinations to time (e.g. 'all+cudagraphs,defaults (auto)');"
        " no eager options, no sequences",
    )
    p.add_argument("--budget-s", type=float, default=380.0, help="sections starting after this are skipped")
    p.add_argument(
        "--train-budget-s", type=float, default=280.0, help="option combinations starting after this are skipped"
    )
    args = p.parse_args(argv)
    args.combos = [c.strip() for c in args.combos.split(",") if c.strip()]
    args.preset = "tiny" if args.quick else "paper"
    args.iters, args.warmup = (2, 1) if args.quick else (20, 5)
    args.eval_batches = (4,) if args.quick else (8, 32)
    args.engine_strategies = ("contavsep", "plop")
    cuda = torch.cuda.is_available()
    run = Run(Path(args.out), args.budget_s)
    args.started = run.started
    work = Path(args.work)
    base: dict[str, Any] = {
        "data.num_steps": 2,
        "data.cache_dir": str(work / "cache"),
        "train.device": "cuda" if cuda else "cpu",
    }
    if not args.quick:
        base["train.batch_size"] = 32  # the paper's batch, bf16 autocast (train.amp, on by default on CUDA)
    if cuda:
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest convolutions

    run.section("environment", environment)
    uri = run.section("dataset", build_dataset, work, args.quick)
    if uri is None:
        return
    from contavsep.data.format.reader import open_dataset

    table = open_dataset(uri, cache_dir=work / "cache")
    if args.kernels:  # seconds: which conv form is fastest per level, and that the forms train alike, before compiling
        run.section("conv_forms", conv_forms, args)
        run.section("kernel_forms_engine", kernel_forms_engine, args, table, base)
    # eager numbers, evaluation and correctness first: compiling takes minutes and may not fit
    if not (args.combos or args.kernels):
        run.section("train", train_options, args, table, base, False, run, "train")
    if not (args.short or args.combos or args.kernels):
        run.section("eval", evaluation, args, table, base, need_s=20)
        run.section("correctness", correctness, args, table, base, need_s=30)
        run.section("extrapolation_eager", extrapolate, run.summary)
    if cuda or args.compile_on_cpu:
        run.section("train_compiled", train_options, args, table, base, True, run, "train_compiled", need_s=90)
        run.section("extrapolation", extrapolate, run.summary)
        if not (args.combos or args.kernels):
            run.section("engine_modes", engine_modes, args, table, base, need_s=100)
        if not (args.short or args.combos or args.kernels):
            run.section("recompiles", recompiles, args, table, base, need_s=60)
    print(
        f"== done in {run.elapsed():.0f} s; errors: {run.summary['errors'] or 'none'}; skipped: {run.summary['skipped'] or 'none'}",
        flush=True,
    )
    print(f"summary: {Path(args.out) / 'gpu_summary.json'}", flush=True)


if __name__ == "__main__":
    main()
