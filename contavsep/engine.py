"""The incremental loop: one whole class-incremental task sequence, top to bottom.

    for step t in 0 .. T-1:
        add class queries for the step's new classes (old rows kept)
        budget: iterations and lr drops from the step's training pool (contavsep/budget.py)
        fresh optimizers (U-Net: Adam; transformer/heads: AdamW), step-decay schedulers
        strategy.before_task
        train: sample mixtures (new classes + memory) -> STFT/warp on the device -> model
               -> weighted L1 mask loss + the strategy's named terms -> backward -> step
               (step 0 is loaded instead when a trial of the same sweep already trained
               the same step 0: contavsep/first_step.py)
        strategy.after_task (Fisher, weight fusion, ...)
        memory: keep `memory.per_class` random clips of each new class
        evaluate the fixed test mixtures of tasks 0..t (each drawn once) -> R[t][*] for SDR/SIR/SAR
        validate the same way on fixed validation mixtures (val split) -> the val R matrices, which
               are what a sweep selects on (the test numbers are only ever reported)
        freeze a copy of the model as the next step's old model (eval mode, no grad)
        reporter.report(step metrics, a function that writes the step checkpoint)

The engine knows nothing of Ray or MLflow: the platform passes a reporter (which calls
``ray.train.report`` and logs to MLflow) and, for DDP, a :class:`Distributed` that wraps the
model and splits the batch across ranks. Resuming from the checkpoint of step k continues at
step k+1 and, on CPU, reproduces an uninterrupted run exactly: every step reseeds its own
generators from (train.seed, step, rank).
"""

from __future__ import annotations

import copy
import functools
import logging
import math
import random
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from contavsep import first_step
from contavsep.audio import SpectralFrontEnd, mix_sources
from contavsep.budget import StepPlan, plan_step
from contavsep.checkpoint import (
    CheckpointError,
    TrainingState,
    check_resumable,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from contavsep.config import CUDAGRAPH_MODES, Config, ConfigError
from contavsep.data.format.reader import ClipTable
from contavsep.data.sampling.batch_producer import BatchProducer
from contavsep.data.sampling.evaluation_set import EvaluationSet, evaluation_set
from contavsep.data.sampling.mixtures import MixtureBatch, TrainingSampler
from contavsep.loss_log import LossLog
from contavsep.losses import weighted_l1_mask_loss
from contavsep.memory import ExemplarMemory
from contavsep.metric_names import loss_name, val_name
from contavsep.metrics import ContinualResults, separation_scores
from contavsep.models.build import build_model
from contavsep.models.output import SeparatorOutput
from contavsep.models.separator import Separator
from contavsep.registry import STRATEGIES
from contavsep.scenario import Scenario, make_scenario
from contavsep.speed import resolve_speed
from contavsep.step_batch import StepBatch
from contavsep.strategies.base import StepContext, Strategy

log = logging.getLogger("contavsep.engine")


@dataclass(frozen=True)
class Example:
    """One separated test mixture, for artifacts (WAV + spectrogram)."""

    mixture: np.ndarray  # (S,) float32
    references: np.ndarray  # (N, S) float32, scaled sources
    estimates: np.ndarray  # (N, S) float32
    class_names: tuple[str, ...]
    sdr: tuple[float, ...]
    sample_rate: int


@dataclass(frozen=True)
class StepResult:
    """What the engine hands to the reporter after each incremental step."""

    step: int
    metrics: dict[str, float]  # flat, MLflow/Tune-ready: sdr, sdr_old, sdr_new, task_sdr/<j>, loss/<term>, ...
    # (test split, unprefixed); the same values on the validation sets as val/sdr, val/task_sdr/<j>, ...
    summary: dict[str, Any]  # ContinualResults.summary() as of this step (R matrices, forgetting, BWT, ...);
    # with validation, summary["val"] is the validation results' summary of the same form
    examples: list[Example] = field(default_factory=list)
    is_last: bool = False


class Reporter(Protocol):
    def report(self, result: StepResult, save_checkpoint: Callable[[Path], Path]) -> None:
        """Receive a step's results; call ``save_checkpoint(dir)`` to persist the step."""


@dataclass(frozen=True)
class Distributed:
    """DDP wiring given by the platform; the default is one process."""

    rank: int = 0
    world_size: int = 1
    wrap: Callable[[nn.Module], nn.Module] = lambda m: m  # e.g. DistributedDataParallel
    barrier: Callable[[], None] = lambda: None

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"train.device={name} but no CUDA device is available; use train.device=auto or cpu")
    return device


def _seed(*parts: int) -> int:
    """A 63-bit seed derived from integers (stable across runs and platforms)."""
    return int(np.random.SeedSequence([abs(p) for p in parts]).generate_state(2, np.uint64)[0] >> np.uint64(1))


def make_optimizers(
    model: Separator, cfg: Config, plan: StepPlan, fused: bool = False
) -> tuple[list[torch.optim.Optimizer], list[Any]]:
    """The paper's optimizers, recreated at every step: U-Net Adam, the rest AdamW; each with the
    plan's lr drops (schedulers step once per iteration). ``fused``: the resolved
    ``train.fused_optimizer`` (:class:`contavsep.speed.SpeedOptions`)."""
    t = cfg.train
    # fused: one kernel per group instead of a foreach chain (same update up to rounding)
    # (None leaves torch's own choice, as a call without the argument does)
    opts: list[torch.optim.Optimizer] = [
        torch.optim.Adam(model.unet_parameters(), lr=t.lr_unet, fused=fused or None),
        torch.optim.AdamW(
            model.head_parameters(), lr=t.lr_transformer, weight_decay=t.weight_decay, fused=fused or None
        ),
    ]
    drops = (plan.lr_drops_unet, plan.lr_drops_transformer)
    scheds = [
        torch.optim.lr_scheduler.MultiStepLR(o, milestones=list(d), gamma=t.lr_decay_gamma) for o, d in zip(opts, drops)
    ]
    return opts, scheds


class Engine:
    """Runs one task sequence for a resolved :class:`Config` on an opened dataset."""

    def __init__(
        self,
        cfg: Config,
        table: ClipTable,
        *,
        distributed: Distributed | None = None,
        first_steps: first_step.FirstStepStore | None = None,
    ):
        self.cfg = cfg
        self.first_steps = first_steps  # a sweep's shared step-0 states (None: every step trained here)
        self.first_step_shared: bool | None = None  # whether step 0 was loaded (None: not keyed, or resumed)
        self.table = table
        self.dist = distributed or Distributed()
        self.device = resolve_device(cfg.train.device)
        self.scenario: Scenario = make_scenario(table.classes, cfg.data)
        self.frontend = SpectralFrontEnd(cfg.audio).to(self.device)
        # training batches for a GPU carry int16 PCM: half the bytes to build, pin and copy, and
        # mix_sources converts them on the device (exactly); CPU batches are float32 as before
        self.pcm_batches = self.device.type == "cuda"
        if self.device.type == "cuda":
            # training shapes never change within a step: let cuDNN time its convolution
            # algorithms once and keep the fastest (CUDA runs are not bit-reproducible anyway)
            torch.backends.cudnn.benchmark = True
        self.autocast = (
            torch.autocast("cuda", dtype=torch.bfloat16)
            if self.device.type == "cuda" and cfg.train.amp
            else nullcontext()
        )
        if cfg.train.batch_size % self.dist.world_size:
            raise ConfigError(
                f"train.batch_size ({cfg.train.batch_size}) must be divisible by the {self.dist.world_size} DDP workers"
            )
        self.local_batch = cfg.train.batch_size // self.dist.world_size
        self._check_dataset()

        torch.manual_seed(_seed(cfg.train.seed, 0xC0FFEE))
        self.model = build_model(cfg, self.scenario.classes_per_step).to(self.device)
        # train.channels_last / fused_optimizer / compile as this device runs them ("auto": the
        # measured choice, contavsep/speed.py)
        t = cfg.train
        self.speed = resolve_speed(t.channels_last, t.fused_optimizer, t.compile, self.device, self.dist.world_size)
        log.info("speed options on %s: %s", self.device, self.speed.describe())
        if self.speed.channels_last:
            # 4-D weights (the U-Net's convolutions) channels-last; activations follow them
            # (torch's stubs omit Module.to's memory_format keyword, which it accepts)
            self.model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        # The training forward, compiled on request (see _expand_classes for the recompiles).
        self.train_forward: Callable[..., SeparatorOutput] = self.forward
        if self.speed.compile != "off":
            compiled = torch.compile(self.forward, mode=None if self.speed.compile == "default" else self.speed.compile)
            cudagraphs = self.speed.compile in CUDAGRAPH_MODES

            def train_forward(*args: Any) -> SeparatorOutput:
                if cudagraphs:
                    # One training forward per iteration: a new CUDA-graph step, so the replay
                    # may reuse the memory of the last iteration's outputs (which nothing reads
                    # any more) instead of keeping them alive or recording again.
                    torch.compiler.cudagraph_mark_step_begin()
                # dynamo keeps parameter shapes static unless told otherwise; the class-query
                # count is the one that changes (marked by _expand_classes)
                with torch._dynamo.config.patch(force_parameter_static_shapes=False):
                    return compiled(*args)

            self.train_forward = train_forward
        self.old_model: Separator | None = None
        self.strategy: Strategy = STRATEGIES.get(cfg.strategy.name).from_config(cfg.strategy)
        self.memory = ExemplarMemory(cfg.memory.per_class)
        self.results = ContinualResults(self.scenario.num_steps)
        self.next_step = 0
        self._last_optim: tuple[list, list] = ([], [])
        # validation: the same measurement on the val split (what sweeps select on); None when off
        self.val_results: ContinualResults | None = (
            ContinualResults(self.scenario.num_steps) if cfg.eval.validate else None
        )
        self._sets: dict[tuple[str, int], EvaluationSet] = {}  # (split, task) -> its fixed mixtures
        self._mix_sdr: dict[
            tuple[str, int], np.ndarray
        ] = {}  # (split, task) -> SDR of its unprocessed mixtures, (P, N)

    # ------------------------------------------------------------------ setup
    def _check_dataset(self) -> None:
        sr = self.table.sample_rate
        if sr != self.cfg.audio.sample_rate:
            raise ConfigError(
                f"dataset {self.table.uri} has audio at {sr} Hz but audio.sample_rate={self.cfg.audio.sample_rate}"
            )
        for split in ("train", "test", *(("val",) if self.cfg.eval.validate else ())):
            counts = self.table.rows_by_class(split)
            empty = [self.table.classes[c] for c in self.scenario.class_order if len(counts[c]) == 0]
            if empty:
                fix = (
                    "; set eval.validate=false to train without validation sets (a sweep cannot select then)"
                    if split == "val"
                    else ""
                )
                raise ConfigError(f"dataset {self.table.uri} has no {split} clips for classes {empty}{fix}")

    def restore(self, state: TrainingState) -> None:
        """Continue after the step a checkpoint completed (the model, memory and results of it)."""
        if state.step + 1 >= self.scenario.num_steps:
            log.info("checkpoint of step %d is the last step: nothing left to train", state.step)
        self.model.expand_classes(state.num_classes)
        self.model.load_state_dict(state.model)
        self.strategy.load_state_dict(state.strategy)
        self.memory.load_state_dict(state.memory)
        self.results = ContinualResults.from_state_dict(state.results)
        if self.val_results is not None:
            if state.val_results is None:
                raise CheckpointError(
                    "the checkpoint was written without validation results (before validation sets"
                    " existed, or with eval.validate=false); start a new run, or resume with"
                    " eval.validate=false"
                )
            self.val_results = ContinualResults.from_state_dict(state.val_results)
        set_rng_state(state.rng)
        self.old_model = self._frozen_copy(self.model)
        self.next_step = state.step + 1

    # ------------------------------------------------------------------ pieces
    @staticmethod
    def _frozen_copy(model: Separator) -> Separator:
        old = copy.deepcopy(model).eval()
        for p in old.parameters():
            p.requires_grad_(False)
        return old

    def _to_step_batch(self, clips: MixtureBatch) -> StepBatch:
        clips = clips.to(self.device)  # no-op for a producer's batch (already there)
        mix, scaled = mix_sources(clips.source_wavs)
        return StepBatch(clips=clips, spectra=self.frontend.prepare(mix, scaled))

    def _expand_classes(self, total: int) -> None:
        """Add the step's class queries; under train.compile, mark the grown dimension dynamic.

        Dynamo specialises on parameter shapes, so without the mark every step (every new
        query count) would compile the forward again; with it, the second step compiles one
        graph with a symbolic class count that every later step reuses: two compiles per
        sequence, whatever its number of steps.
        """
        before = {name: p.shape for name, p in self.model.named_parameters()}
        self.model.expand_classes(total)
        if self.speed.compile == "off":
            return
        for name, p in self.model.named_parameters():
            if name in before and p.shape != before[name]:
                for dim, (old, new) in enumerate(zip(before[name], p.shape)):
                    if old != new:
                        torch._dynamo.maybe_mark_dynamic(p, dim)

    @staticmethod
    def forward(model: nn.Module, batch: StepBatch, return_internals: bool = False) -> SeparatorOutput:
        c = batch.clips
        return model(
            batch.spectra.mix_input, c.labels, c.object_features, c.motion_features, return_internals=return_internals
        )

    @staticmethod
    def main_loss(out: SeparatorOutput, batch: StepBatch) -> torch.Tensor:
        return weighted_l1_mask_loss(out.masks, batch.spectra.target_masks, batch.spectra.weight)

    def batches(self, sampler: TrainingSampler, count: int) -> BatchProducer:
        """``count`` training batches of ``sampler`` on the device, prepared ahead (train.prefetch_batches)."""
        return BatchProducer(
            lambda: sampler.sample(self.local_batch, pcm=self.pcm_batches),
            count,
            device=self.device,
            depth=self.cfg.train.prefetch_batches,
        )

    def plan(self, step: int, sampler: TrainingSampler) -> StepPlan:
        """The step's budget, from the pool its sampler draws from."""
        memory = int(sampler.is_memory.sum())
        return plan_step(step, len(sampler.rows) - memory, memory, self.cfg)

    def _sampler(self, step: int) -> TrainingSampler:
        c = self.cfg
        memory_rows = self.memory.rows() if c.memory.per_class > 0 else []
        return TrainingSampler(
            self.table,
            self.scenario,
            self.strategy.train_class_ids(step, self.scenario),
            memory_rows,
            clip_samples=c.audio.clip_samples,
            different_classes=c.data.different_classes,
            oversample=c.memory.oversample,
            share=c.memory.share,
            seed=_seed(c.train.seed, step, self.dist.rank, 1),
        )

    # ------------------------------------------------------------------ the loop
    def run(self, reporter: Reporter | None = None) -> dict[str, Any]:
        """Train and evaluate every remaining step; returns the final summary (rank 0)."""
        for step in range(self.next_step, self.scenario.num_steps):
            result = self.run_step(step)
            self.next_step = step + 1
            if reporter is not None:
                reporter.report(result, functools.partial(self._save_step, step=step))
        return self.results.summary() if self.results.steps else {}

    def _save_step(self, directory: Path, step: int) -> Path:
        return self.save(directory, step)

    def run_step(self, step: int) -> StepResult:
        """One incremental step, top to bottom: grow the model for the step's classes, train (or
        load a shared step 0), let the strategy and the memory close the step, evaluate, report."""
        torch.manual_seed(_seed(self.cfg.train.seed, step, self.dist.rank, 2))
        self._expand_classes(self.scenario.num_seen(step))
        train_model = self.dist.wrap(self.model)  # re-wrapped each step: expanding adds parameters
        sampler = self._sampler(step)
        ctx = self._context(step, sampler)
        plan = self.plan(step, sampler)
        optimizers, schedulers = make_optimizers(self.model, self.cfg, plan, fused=self.speed.fused_optimizer)
        self.strategy.before_task(ctx)
        self._log_plan(step, sampler, plan)

        # Step 0 may already have been trained by a trial of the same sweep with the same step-0
        # keys (contavsep/first_step.py): then its end state is loaded instead of trained.
        first_key = self._first_step_key() if step == 0 else None
        started = time.perf_counter()
        shared = self.first_steps.load(first_key[0]) if first_key is not None and self.first_steps is not None else None
        if shared is not None:
            loss_means = self._load_first_step(shared, optimizers, schedulers, sampler)
            train_seconds = time.perf_counter() - started
            log.info(
                "  step 0 shared: loaded %s (trained once in %.1fs by another trial)", shared.key, shared.train_seconds
            )
        else:
            loss_means, train_seconds = self._train(step, ctx, train_model, sampler, plan, optimizers, schedulers)
            if first_key is not None:
                self._publish_first_step(first_key, loss_means, plan, train_seconds, optimizers, schedulers, sampler)
        if first_key is not None:
            self.first_step_shared = shared is not None

        self.strategy.after_task(ctx)
        self.memory.update(
            self.table.rows_by_class("train"),
            self.scenario.task_class_ids(step),
            random.Random(_seed(self.cfg.train.seed, step, 3)),
        )
        self._last_optim = (optimizers, schedulers)

        examples, seconds = self._evaluate_step(step)
        self.dist.barrier()
        self.old_model = self._frozen_copy(self.model)

        seconds["time/train_s"] = train_seconds
        if shared is None:
            seconds["throughput/mixtures_per_s"] = plan.mixtures / max(train_seconds, 1e-9)
        metrics, summary = self._step_results(step, loss_means, seconds)
        return StepResult(step, metrics, summary, examples, is_last=step + 1 == self.scenario.num_steps)

    def _context(self, step: int, sampler: TrainingSampler) -> StepContext:
        """What the strategy's hooks see during ``step``."""

        # on demand (depth 0): a strategy may stop early, and must leave the sampler where the
        # training thread would have
        def batches_of_step(n: int) -> Iterator[StepBatch]:
            produced = BatchProducer(
                lambda: sampler.sample(self.local_batch, pcm=self.pcm_batches), n, device=self.device, depth=0
            )
            return (self._to_step_batch(clips) for clips in produced)

        return StepContext(
            step=step,
            scenario=self.scenario,
            model=self.model,
            old_model=self.old_model,
            device=self.device,
            sample_batches=batches_of_step,
            forward=self.forward,
            main_loss=self.main_loss,
        )

    def _log_plan(self, step: int, sampler: TrainingSampler, plan: StepPlan) -> None:
        log.info(
            "step %d/%d: classes %s (memory: %d clips, %.0f%% of draws)",
            step + 1,
            self.scenario.num_steps,
            [self.table.classes[c] for c in self.scenario.task_class_ids(step)],
            len(self.memory),
            100 * sampler.memory_share,
        )
        log.info(
            "  budget: %d iterations x batch %d = %d mixtures (%s); lr drops after iterations %s (U-Net), %s (transformer)",
            plan.iterations,
            plan.batch_size,
            plan.mixtures,
            f"{plan.draws_per_epoch} draws per epoch" if plan.draws_per_epoch else "train.iters_per_step",
            list(plan.lr_drops_unet),
            list(plan.lr_drops_transformer),
        )

    def _evaluate_step(self, step: int) -> tuple[list[Example], dict[str, float]]:
        """Score the test sets (and the validation sets) of the tasks seen so far on the main
        rank; the examples and the seconds each took (``time/eval_s``, ``time/val_s``)."""
        started = time.perf_counter()
        examples = self._evaluate(step, "test") if self.dist.is_main else []
        seconds = {"time/eval_s": time.perf_counter() - started}
        started = time.perf_counter()
        if self.dist.is_main and self.val_results is not None:
            self._evaluate(step, "val")
        if self.val_results is not None:
            seconds["time/val_s"] = time.perf_counter() - started
        return examples, seconds

    def _step_results(
        self, step: int, loss_means: dict[str, float], seconds: dict[str, float]
    ) -> tuple[dict[str, float], dict[str, Any]]:
        """The step's flat metrics (scores, loss terms, times, memory; see
        :mod:`contavsep.metric_names`) and the results summary as of the step (main rank)."""
        metrics: dict[str, float] = {}
        summary: dict[str, Any] = {}
        if self.dist.is_main:
            metrics = step_metrics(self.results, step)
            summary = self.results.summary(step)
            if self.val_results is not None:
                metrics.update({val_name(k): v for k, v in step_metrics(self.val_results, step).items()})
                summary["val"] = self.val_results.summary(step)
        metrics.update({loss_name(k): v for k, v in loss_means.items()})
        metrics.update(
            {
                "step": float(step),
                "time/train_s": seconds["time/train_s"],
                "time/eval_s": seconds["time/eval_s"],
                "memory/clips": float(len(self.memory)),
            }
        )
        for key in ("time/val_s", "throughput/mixtures_per_s"):
            if key in seconds:
                metrics[key] = seconds[key]
        if self.first_step_shared is not None:  # a property of the sequence: in every step's metrics
            metrics[first_step.SHARED_KEY] = float(self.first_step_shared)
        if self.dist.is_main:
            log.info(
                "step %d: SDR %.2f (old %s, new %.2f) SIR %.2f SAR %.2f, val SDR %s  [train %.1fs, test %.1fs, val %.1fs]",
                step + 1,
                metrics["sdr"],
                f"{metrics['sdr_old']:.2f}" if "sdr_old" in metrics else "-",
                metrics.get("sdr_new", math.nan),
                metrics["sir"],
                metrics["sar"],
                f"{metrics[val_name('sdr')]:.2f}" if val_name("sdr") in metrics else "-",
                seconds["time/train_s"],
                seconds["time/eval_s"],
                seconds.get("time/val_s", 0.0),
            )
        return metrics, summary

    def _train(
        self,
        step: int,
        ctx: StepContext,
        train_model: nn.Module,
        sampler: TrainingSampler,
        plan: StepPlan,
        optimizers: list[torch.optim.Optimizer],
        schedulers: list[Any],
    ) -> tuple[dict[str, float], float]:
        """The step's iterations; returns the loss means by term and the seconds they took."""
        t = self.cfg.train
        best: tuple[float, dict[str, Any] | None] = (-math.inf, None)
        losses = LossLog(self.device)
        log_every = max(1, plan.iterations // 5)
        checked = 0  # iterations whose losses were checked to be finite
        self.model.train()
        started = time.perf_counter()
        internals = self.strategy.wants_internals(ctx)
        # No host sync in this loop (the device runs ahead): losses stay on the device, checked
        # and read every log_every iterations and at the end.
        with self.batches(sampler, plan.iterations) as produced:
            for it, clips in enumerate(produced):
                batch = self.strategy.transform_batch(self._to_step_batch(clips), ctx)
                with self.autocast:
                    out = self.train_forward(train_model, batch, internals)
                    main = self.main_loss(out, batch)
                    terms = self.strategy.loss_terms(batch, out, ctx)
                loss = main + sum(terms.values()) if terms else main
                for o in optimizers:
                    o.zero_grad(set_to_none=True)
                loss.backward()
                self.strategy.after_backward(ctx)
                if t.grad_clip > 0:
                    nn.utils.clip_grad_norm_(self.model.parameters(), t.grad_clip)
                for o in optimizers:
                    o.step()
                for s in schedulers:
                    s.step()
                losses.add(it, {"main": main, **terms, "total": loss})
                validate = t.select == "best_val" and ((it + 1) % plan.val_every == 0 or it + 1 == plan.iterations)
                if validate or (it + 1) % log_every == 0 or it + 1 == plan.iterations:
                    losses.check(f"step {step}", f"{checked}..{it}")
                    checked = it + 1
                if validate:
                    # The reference keeps the checkpoint with the best validation SDR over ALL seen
                    # classes, which peeks at old-class data a continual learner should not have.
                    val_sdr = self._validate(step)
                    if val_sdr > best[0]:
                        best = (val_sdr, copy.deepcopy(self.model.state_dict()))
                    self.model.train()
                if (it + 1) % log_every == 0:
                    log.info("  iter %d/%d  loss %.4f", it + 1, plan.iterations, losses.means(it + 1)["total"])
        train_seconds = time.perf_counter() - started
        if best[1] is not None:
            self.model.load_state_dict(best[1])
        return losses.means(plan.iterations), train_seconds

    # ------------------------------------------------------------------ shared first steps
    def _first_step_key(self) -> tuple[str, dict[str, Any]] | None:
        """(key, key fields) of this trial's step 0, or None when it is not shared."""
        if self.first_steps is None:
            return None
        return first_step.trial_key(self.cfg, str(self.table.manifest.get("content_hash", "")), self.dist.world_size)

    def _load_first_step(
        self,
        shared: first_step.FirstStepState,
        optimizers: list[torch.optim.Optimizer],
        schedulers: list[Any],
        sampler: TrainingSampler,
    ) -> dict[str, float]:
        """Put the model, optimizers, sampler and generators where step 0's iterations left them;
        returns the step's loss means as this strategy logs them."""
        self.model.load_state_dict(shared.model)
        for o, state in zip(optimizers, shared.optimizers, strict=True):
            o.load_state_dict(state)
        for sched, state in zip(schedulers, shared.schedulers, strict=True):
            sched.load_state_dict(state)
        sampler.load_state_dict(shared.sampler)
        set_rng_state(shared.rng)
        means = dict(shared.losses)
        means.update({name: 0.0 for name in type(self.strategy).first_step_zero_terms})
        return means

    def _publish_first_step(
        self,
        key: tuple[str, dict[str, Any]],
        loss_means: dict[str, float],
        plan: StepPlan,
        train_seconds: float,
        optimizers: list[torch.optim.Optimizer],
        schedulers: list[Any],
        sampler: TrainingSampler,
    ) -> None:
        """Offer this trial's step 0 to the sweep, after checking it was as plain as declared."""
        strategy = type(self.strategy)
        own_terms = {k: v for k, v in loss_means.items() if k not in first_step.SHARED_TERMS}
        if strategy.first_step == "plain":
            unexpected = {k: v for k, v in own_terms.items() if k not in strategy.first_step_zero_terms or v != 0.0}
            if unexpected:
                # a declaration that does not hold must not spread to other strategies' trials
                log.error(
                    "strategy %s declares a plain step 0 but logged %s: step 0 not shared", strategy.name, unexpected
                )
                return
            loss_means = {k: v for k, v in loss_means.items() if k in first_step.SHARED_TERMS}
        state = first_step.FirstStepState(
            key=key[0],
            fields=key[1],
            model=self.model.state_dict(),
            num_classes=self.model.num_classes,
            optimizers=[o.state_dict() for o in optimizers],
            schedulers=[sched.state_dict() for sched in schedulers],
            sampler=sampler.state_dict(),
            rng=rng_state(),
            losses=loss_means,
            iterations=plan.iterations,
            train_seconds=train_seconds,
        )
        assert self.first_steps is not None  # _first_step_key gave a key, so a store is set
        if self.first_steps.publish(state):
            log.info("  step 0 shared as %s (with every trial of the sweep with the same step-0 keys)", key[0])

    # ------------------------------------------------------------------ evaluation
    def _evaluation_set(self, task: int, split: str = "test") -> EvaluationSet:
        """Task ``task``'s fixed mixtures of ``split`` (test, or val with its own windows, partners
        and seed), drawn once and scored after every later step."""
        if (split, task) not in self._sets:
            e = self.cfg.eval
            windows, pairs, seed = (
                (e.windows_per_clip, e.pairs_per_clip, e.seed)
                if split == "test"
                else (e.val_windows_per_clip, e.val_pairs_per_clip, e.val_seed)
            )
            self._sets[split, task] = evaluation_set(
                self.table,
                self.scenario,
                task,
                clip_samples=self.cfg.audio.clip_samples,
                split=split,
                windows_per_clip=windows,
                pairs_per_clip=pairs,
                seed=seed,
            )
        return self._sets[split, task]

    @torch.no_grad()
    def _separate(
        self, mixtures: EvaluationSet
    ) -> Iterator[tuple[slice, MixtureBatch, torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Yield (index in the set, clips, mixture (B,S), scaled references (B,N,S), estimates (B,N,S)) per eval batch."""
        self.model.eval()
        size = self.cfg.eval.batch_size
        for i in range(0, len(mixtures), size):
            index = slice(i, min(i + size, len(mixtures)))
            clips = mixtures.batch(self.table, self.scenario, index, self.cfg.audio.clip_samples).to(self.device)
            mix, scaled = mix_sources(clips.source_wavs)
            mix_input, mix_spec = self.frontend.mixture_spectra(mix)
            with self.autocast:
                out = self.model(mix_input, clips.labels, clips.object_features, clips.motion_features)
            # scored on the well-conditioned part of the reconstruction, as the reference does
            length = self.frontend.reconstruction_length(mix.shape[-1])
            estimates = self.frontend.reconstruct(out.masks.float(), mix_spec, length)
            yield index, clips, mix[..., :length], scaled[..., :length], estimates

    def _evaluate(self, step: int, split: str = "test") -> list[Example]:
        """Score the fixed sets of ``split`` of tasks 0..step (``R[step][*]`` of the test results,
        or of the validation results); examples come from task 0's test set, so the same
        mixtures are heard after every step. Validation uses the fast backend (it matches
        mir_eval to ~1e-10 dB) and scores SDR alone unless ``eval.val_metrics=all`` (the val R
        matrices of sir and sar stay empty): it only ranks configurations, and stays a small
        share of a step."""
        e = self.cfg.eval
        results, backend = (self.results, e.backend) if split == "test" else (self.val_results, "fast")
        assert results is not None, "validation scored without validation results"
        examples: list[Example] = []
        for task in range(step + 1):
            mixtures = self._evaluation_set(task, split)
            known = self._mix_sdr.get((split, task))  # the mixture's own SDR does not depend on the model
            computed = []
            for index, clips, mix, refs, ests in self._separate(mixtures):
                scores = separation_scores(
                    refs,
                    ests,
                    backend,
                    mixture=mix,
                    sdr_mix=None if known is None else known[index],
                    sdr_only=split == "val" and e.val_metrics == "sdr",
                )
                computed.append(scores.sdr_mix)
                results.add_scores(step, scores, clips.tasks.cpu().numpy(), set_id=task)
                for b in range(min(len(clips), e.examples - len(examples)) if split == "test" else 0):
                    examples.append(
                        Example(
                            mixture=mix[b].float().cpu().numpy(),
                            references=refs[b].float().cpu().numpy(),
                            estimates=ests[b].float().cpu().numpy(),
                            class_names=tuple(self.table.classes[int(c)] for c in clips.class_ids[b]),
                            sdr=tuple(float(x) for x in scores.sdr[b]),
                            sample_rate=self.cfg.audio.sample_rate,
                        )
                    )
            if known is None:
                self._mix_sdr[split, task] = np.concatenate(computed)
        return examples

    def _validate(self, step: int) -> float:
        """Mean SDR of the current model on the fixed validation mixtures of all seen classes
        (fast backend, not recorded), for train.select=best_val."""
        sdrs = []
        for task in range(step + 1):
            for _, _, mix, refs, ests in self._separate(self._evaluation_set(task, "val")):
                sdrs.append(separation_scores(refs, ests, "fast", mixture=mix, sdr_only=True).sdr.ravel())
        values = np.concatenate(sdrs)
        return float(np.nanmean(values)) if np.isfinite(values).any() else -math.inf

    # ------------------------------------------------------------------ checkpoints
    def save(self, directory: str | Path, step: int) -> Path:
        optimizers, schedulers = self._last_optim
        state = TrainingState(
            step=step,
            config=self.cfg,
            model=self.model.state_dict(),
            num_classes=self.model.num_classes,
            optimizers=[o.state_dict() for o in optimizers],
            schedulers=[s.state_dict() for s in schedulers],
            strategy=self.strategy.state_dict(),
            memory=self.memory.state_dict(),
            results=self.results.state_dict(),
            val_results=None if self.val_results is None else self.val_results.state_dict(),
            rng=rng_state(),
            data_content_hash=str(self.table.manifest.get("content_hash", "")),
        )
        return save_checkpoint(state, directory)


def step_metrics(results: ContinualResults, step: int) -> dict[str, float]:
    """The flat per-step values of ``results`` after ``step``: the step summary's means
    (sdr, sdr_old, sdr_new, sir, ..., sources, skipped; undefined ones left out) and the SDR
    of every seen task (``task_sdr/<j>``)."""
    row = results.step_summary(step)
    metrics = {k: float(v) for k, v in row.items() if isinstance(v, (int, float)) and v is not None and k != "step"}
    r = results.matrix("sdr")
    for j in range(step + 1):
        metrics[f"task_sdr/{j}"] = float(r[step, j])
    return metrics


def run_sequence(
    cfg: Config,
    table: ClipTable,
    *,
    reporter: Reporter | None = None,
    resume_from: str | Path | None = None,
    distributed: Distributed | None = None,
    first_steps: first_step.FirstStepStore | None = None,
) -> dict[str, Any]:
    """Run (or resume) a whole task sequence; returns the final results summary.

    ``first_steps``: where a sweep's trials share step 0 (see :mod:`contavsep.first_step`).
    """
    engine = Engine(cfg, table, distributed=distributed, first_steps=first_steps)
    if resume_from is not None:
        state = load_checkpoint(resume_from)
        check_resumable(state, cfg, str(table.manifest.get("content_hash", "")), resume_from)
        engine.restore(state)
    return engine.run(reporter)
