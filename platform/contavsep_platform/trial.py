"""One sweep trial = one whole incremental task sequence, run by Ray Train V2 inside Ray Tune.

Two functions, the Train V2 + Tune pattern:

- :func:`run_trial` is the Tune trainable: a small driver (it holds a fraction of a CPU) that
  builds a ``TorchTrainer`` from the space's resources and calls ``fit()``. The Train run is
  named after the Tune trial id and stored under ``<storage>/sweeps/<sweep>/``, so a restarted
  trial (``--resume``, or a Tune retry) finds its Train run and its checkpoints again.
- :func:`train_worker` runs on every Train worker: it opens the dataset through the node-local
  cache, resumes from the last step checkpoint if Train hands one over, and runs the engine with
  a :class:`TrainReporter`. DDP (``resources.workers > 1``) wraps the model in
  ``DistributedDataParallel`` and splits every batch across the ranks (the engine does the split).

Per incremental step the reporter logs to MLflow (rank 0, through the tracking module), writes the
step checkpoint and calls ``ray.train.report`` with the step's metrics; ``TuneReportCallback``
forwards rank 0's metrics to Tune, where ASHA may stop the trial at that step boundary. In
those results ``step`` counts completed incremental steps (1..T, ASHA's time attribute) while
MLflow keeps the engine's 0-based ``step=k``.
"""

from __future__ import annotations

import logging
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from contavsep import storage
from contavsep.config import Config, flat, to_yaml
from contavsep.engine import Distributed, StepResult
from contavsep.first_step import FIRST_STEPS_DIR, FirstStepStore
from contavsep.metric_names import completed_steps, summary_values, val_name
from contavsep_platform.ray_storage import ray_storage
from contavsep_platform.spaces import GROUP_KEY, SearchSpace

log = logging.getLogger("contavsep.trial")

STEP_KEY = "step"  # completed incremental steps in Tune results (1..T): ASHA's time attribute
NUM_STEPS_KEY = "num_steps"
ENGINE_TIME_KEY = "time/engine_s"  # seconds inside the engine in this worker process (this attempt)
WORKER_TIME_KEY = "time/worker_s"  # seconds since the worker function started (this attempt)
WORKERS_KEY = "workers"  # Train workers (DDP ranks) of the trial
# The placement group of the trial's Train workers (hex id): the sweep removes it once Tune has
# stopped the trial (see sweep.ray_cluster.PlacementGroupReaper).
PLACEMENT_GROUP_KEY = "placement_group"


@dataclass(frozen=True)
class TrialContext:
    """What every trial of a sweep shares (handed to the Tune trainable with ``tune.with_parameters``)."""

    sweep_name: str
    storage_uri: str  # storage root: file:///abs/path or s3://bucket[/prefix]
    space: SearchSpace
    tracking_uri: str | None = None  # MLflow; None = no tracking
    parent_run_id: str | None = None  # the sweep's MLflow parent run (a confirmation trial's: the stage's run)
    stage: str = "search"  # search | confirm (tagged on the trial's MLflow run)

    @property
    def sweep_uri(self) -> str:
        """``<storage>/sweeps/<sweep>``: Tune's experiment folder and every trial's Train runs."""
        return storage.join(self.storage_uri, "sweeps", self.sweep_name)


def trial_uri(storage_uri: str, sweep_name: str, trial_id: str) -> str:
    """``<storage>/sweeps/<sweep>/<trial id>``: where a trial's step checkpoints (``step=<k>``) land."""
    return storage.join(storage_uri, "sweeps", sweep_name, trial_id)


def s3_settings() -> storage.S3Settings | None:
    """This process's S3 settings, resolved like every command (explicit env, else the local
    services' state file), so trial processes reach the sweep's storage the sweep's way."""
    from contavsep_platform.settings import resolve_endpoints

    return resolve_endpoints().s3


def tune_metrics(result: StepResult, num_steps: int, engine_seconds: float, worker_seconds: float) -> dict[str, Any]:
    """The Tune/Train result of one step: the engine's metrics, summary values, step counters."""
    metrics = {k: float(v) for k, v in result.metrics.items()}
    metrics.update(summary_values(result.summary))
    metrics[STEP_KEY] = float(completed_steps(result.step))
    metrics[NUM_STEPS_KEY] = float(num_steps)
    metrics[ENGINE_TIME_KEY] = engine_seconds
    metrics[WORKER_TIME_KEY] = worker_seconds
    return metrics


class TrainReporter:
    """The engine's reporter inside a Train worker: MLflow (rank 0), checkpoint, ``ray.train.report``."""

    def __init__(
        self,
        cfg: Config,
        num_steps: int,
        rank: int,
        world_size: int,
        tracker: Any | None,
        metric: str,
        worker_started: float,
    ):
        self.cfg = cfg
        self.num_steps = num_steps
        self.rank = rank
        self.world_size = world_size
        self.tracker = tracker
        self.metric = metric
        self.worker_started = worker_started
        self.engine_started = time.perf_counter()

    def report_restored_final(self, result: StepResult) -> None:
        """Tell Tune (and MLflow) the final result of a trial whose last step was checkpointed
        but never reached Tune (the sweep stopped between the two): nothing is left to train."""
        import ray.train

        if self.rank != 0:
            ray.train.report({})
            return
        if self.tracker is not None:
            self.tracker.log_final(result.summary, to_yaml(self.cfg))  # re-opened by name: ends it FINISHED
        metrics = tune_metrics(result, self.num_steps, 0.0, time.perf_counter() - self.worker_started)
        metrics[WORKERS_KEY] = float(self.world_size)
        ray.train.report(metrics)

    def report(self, result: StepResult, save_checkpoint: Callable[[Path], Path]) -> None:
        import ray
        import ray.train

        name = f"step={result.step}"
        if self.rank != 0:
            ray.train.report({}, checkpoint=None)  # every rank joins the report barrier; rank 0's metrics count
            return
        now = time.perf_counter()
        metrics = tune_metrics(result, self.num_steps, now - self.engine_started, now - self.worker_started)
        metrics[WORKERS_KEY] = float(self.world_size)
        if self.metric not in metrics:
            # Undefined (every test source silent): NaN keeps the result valid for Tune and ranks last.
            metrics[self.metric] = float("nan")
        group = ray.util.get_current_placement_group()
        if group is not None:
            metrics[PLACEMENT_GROUP_KEY] = group.id.hex()
        # MLflow first: if ASHA stops the trial after this report, the step is already tracked.
        if self.tracker is not None:
            self.tracker.log_step(result)
            if result.is_last:
                self.tracker.log_final(result.summary, to_yaml(self.cfg))
        with tempfile.TemporaryDirectory(prefix="contavsep-ckpt-") as tmp:
            directory = save_checkpoint(Path(tmp) / name)
            ray.train.report(
                metrics, checkpoint=ray.train.Checkpoint.from_directory(str(directory)), checkpoint_dir_name=name
            )
        log.info(
            "trial step %d/%d reported (%s %.3f)",
            completed_steps(result.step),
            self.num_steps,
            self.metric,
            metrics[self.metric],
        )


def _distributed(rank: int, world_size: int) -> Distributed:
    """The engine's DDP wiring for a Train worker group (process group set up by TorchTrainer)."""
    if world_size == 1:
        return Distributed()
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    def wrap(module: torch.nn.Module) -> torch.nn.Module:
        device = next(module.parameters()).device
        # Only the queried class rows of the query embedding get gradients in a batch: the rest
        # are unused parameters, which DDP must be told about.
        return DistributedDataParallel(
            module, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=True
        )

    return Distributed(rank=rank, world_size=world_size, wrap=wrap, barrier=dist.barrier)


def restored_result(state: Any) -> StepResult:
    """The StepResult of the step a checkpoint completed, rebuilt from its results (scores only:
    the training losses and timings of that step are not in a checkpoint)."""
    from contavsep.engine import step_metrics
    from contavsep.metrics import ContinualResults

    results = ContinualResults.from_state_dict(state.results)
    metrics, summary = step_metrics(results, state.step), results.summary(state.step)
    if state.val_results is not None:
        val = ContinualResults.from_state_dict(state.val_results)
        metrics.update({val_name(k): v for k, v in step_metrics(val, state.step).items()})
        summary["val"] = val.summary(state.step)
    return StepResult(state.step, metrics, summary, [], is_last=state.step + 1 == results.num_steps)


def _tracker(context: TrialContext, trial_id: str, cfg: Config, manifest: dict[str, Any], group: str) -> Any | None:
    if not context.tracking_uri:
        return None
    # imports mlflow: only where tracking is on
    from contavsep_platform.tracking import (
        CONFIG_TAG,
        PENDING_FILE,
        STAGE_TAG,
        SYSTEM_METRICS_INTERVAL_S,
        TrialTracker,
        dataset_input,
    )

    pending = storage.join(trial_uri(context.storage_uri, context.sweep_name, trial_id), PENDING_FILE)
    return TrialTracker(
        context.tracking_uri,
        context.space.experiment_name,
        context.parent_run_id,
        trial_id,
        flat(cfg),
        pending_uri=pending,
        s3=s3_settings(),
        dataset=dataset_input(cfg.data.uri, manifest),
        system_metrics_interval_s=SYSTEM_METRICS_INTERVAL_S,
        tags={STAGE_TAG: context.stage, **({CONFIG_TAG: group} if group else {})},
    )


def _step_index(name: str) -> int | None:
    """k of a ``step=<k>`` checkpoint folder name, else None."""
    prefix, _, k = name.partition("=")
    return int(k) if prefix == "step" and k.isdigit() else None


def latest_intact_checkpoint(
    uri: str, into: Path, settings: storage.S3Settings | None = None
) -> tuple[str, Path, Any] | None:
    """The newest step checkpoint under a trial folder that loads, copied into ``into``:
    ``(its uri, local folder, TrainingState)``, or None when the trial has none.

    Ray Train restores a restarted run from the checkpoints it registered, but a fault between
    a checkpoint's upload and its registration (S3 down during the report: Train does not retry
    that) leaves an intact ``step=k`` that Train does not know, and an interrupted upload leaves
    a ``step=k`` whose ``state.pt`` is cut short. So the folder itself is the truth: newest
    first, a checkpoint counts when its state loads and names its own step. An unreachable
    storage raises (no silent restart from an older step).
    """
    from contavsep.checkpoint import load_checkpoint

    step_of = {n: k for n in storage.list_dir(uri, settings) if (k := _step_index(n)) is not None}
    names = sorted(step_of, key=step_of.__getitem__, reverse=True)
    for name in names:
        source = storage.join(uri, name)
        local = into / name
        local.mkdir(parents=True, exist_ok=True)
        try:
            for rel in storage.list_dir(source, settings, recursive=True):
                (local / rel).parent.mkdir(parents=True, exist_ok=True)
                (local / rel).write_bytes(storage.read_bytes(storage.join(source, rel), settings))
            state = load_checkpoint(local)
            if state.step != _step_index(name):
                raise ValueError(f"it holds step {state.step}")
            return source, local, state
        except storage.StorageError:
            raise
        except Exception as exc:  # noqa: BLE001 - torch.load of a cut file raises anything from EOFError to RuntimeError
            log.warning(
                "checkpoint %s is not intact (%s); trying the one before", source, " ".join(str(exc).split())[:200]
            )
    return None


def train_worker(loop_config: dict[str, Any]) -> None:
    """Ray Train worker: one task sequence of the trial's config, resumed from Train's checkpoint."""
    import ray.train

    from contavsep.checkpoint import check_resumable
    from contavsep.data.format.reader import node_cache_dir, open_dataset
    from contavsep.engine import run_sequence

    started = time.perf_counter()
    context: TrialContext = loop_config["context"]
    trial_id: str = loop_config["trial_id"]
    train_ctx = ray.train.get_context()
    rank, world_size = train_ctx.get_world_rank(), train_ctx.get_world_size()
    logging.basicConfig(
        level=logging.INFO,
        format=f"%(asctime)s [{trial_id} r{rank}] %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    cfg = context.space.trial_config(loop_config["params"])
    node = ray.get_runtime_context().get_node_id()
    table = open_dataset(cfg.data.uri, cache_dir=node_cache_dir(cfg.data.cache_dir, node), settings=s3_settings())
    log.info(
        "dataset %s: %s %s on node %s",
        cfg.data.uri,
        "downloaded into" if table.built else "found in",
        table.path,
        node,
    )
    group = str(loop_config["params"].get(GROUP_KEY) or "")
    tracker = _tracker(context, trial_id, cfg, table.manifest, group) if rank == 0 else None
    if tracker is not None:
        tracker.log_placement(node, downloaded=table.built)
    reporter = TrainReporter(cfg, context.space.num_steps, rank, world_size, tracker, context.space.metric_key, started)
    try:
        with tempfile.TemporaryDirectory(prefix="contavsep-resume-") as tmp:
            resume_from = None
            # Train's own checkpoint (a restart within the trial) or one it never registered
            # (a Tune restart after an upload fault): the trial folder's newest intact one.
            found = latest_intact_checkpoint(
                trial_uri(context.storage_uri, context.sweep_name, trial_id), Path(tmp), s3_settings()
            )
            if found is not None:
                source, resume_from, state = found
                known = ray.train.get_checkpoint()
                log.info(
                    "trial %s resumes from %s (step %d of %d; Ray Train's latest: %s)",
                    trial_id,
                    source,
                    state.step + 1,
                    context.space.num_steps,
                    known.path if known is not None else "none",
                )
                if state.step + 1 >= context.space.num_steps:
                    check_resumable(state, cfg, str(table.manifest.get("content_hash", "")), source)
                    reporter.report_restored_final(restored_result(state))
                    return
            run_sequence(
                cfg,
                table,
                reporter=reporter,
                resume_from=resume_from,
                distributed=_distributed(rank, world_size),
                first_steps=FirstStepStore(storage.join(context.sweep_uri, FIRST_STEPS_DIR), s3_settings()),
            )
    except Exception:
        if tracker is not None:  # a Train restart re-opens the run (RUNNING again) by its name
            tracker.close("FAILED")
        raise


def scaling_config(space: SearchSpace) -> Any:
    """Ray Train's ScalingConfig of a space's resources (CPU or GPU workers, fractions allowed)."""
    import ray.train

    res = space.resources
    per_worker: dict[str, float] = {"CPU": res.cpus}
    if res.gpus > 0:
        per_worker["GPU"] = res.gpus
    return ray.train.ScalingConfig(num_workers=res.workers, use_gpu=res.gpus > 0, resources_per_worker=per_worker)


def process_group_backend(space: SearchSpace, params: Mapping[str, Any]) -> str:
    """The trial's torch.distributed backend: nccl where its workers train on GPUs, gloo on CPUs.

    Ray Train would pick nccl whenever the trial holds GPUs (``use_gpu``), also for one worker,
    and nccl fails on a CPU: a trial that holds logical GPUs but trains with ``train.device:
    cpu`` (a GPU node's CPU, a test cluster of logical GPUs) needs gloo."""
    if space.resources.gpus <= 0:
        return "gloo"
    device = space.trial_config(params).train.device
    return "gloo" if device == "cpu" else "nccl"


def run_trial(config: dict[str, Any], context: TrialContext) -> None:
    """The Tune trainable (driver): build the trial's TorchTrainer and run it to the end."""
    import ray.train
    import ray.tune
    from ray.train.torch import TorchConfig, TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    trial_id = ray.tune.get_context().get_trial_id()
    storage_path, filesystem = ray_storage(context.sweep_uri)
    trainer = TorchTrainer(
        train_worker,
        train_loop_config={"params": dict(config), "trial_id": trial_id, "context": context},
        torch_config=TorchConfig(backend=process_group_backend(context.space, config)),
        scaling_config=scaling_config(context.space),
        run_config=ray.train.RunConfig(
            name=trial_id,  # stable across restarts: Train finds the run and its checkpoints again
            storage_path=storage_path,
            storage_filesystem=filesystem,
            failure_config=ray.train.FailureConfig(max_failures=context.space.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=None),  # one per step: all kept
            # mypy sees ray.train's v1 RunConfig (Tune callbacks); trials run v2 (sweep.TRAIN_V2_ENV), which takes this.
            callbacks=[TuneReportCallback()],  # type: ignore[list-item]
        ),
    )
    trainer.fit()
