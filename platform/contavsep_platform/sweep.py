"""A sweep: Ray Tune + Optuna over strategies and their hyperparameters, one trial per task sequence.

``run_sweep`` takes a validated :class:`~contavsep_platform.spaces.SearchSpace` and:

1. attaches to Ray (``ray_address``, or the job's cluster inside ``ray job submit``) or starts a
   local Ray in this process, with the service settings in the job's runtime env so every
   trial finds S3 and MLflow the way this process does;
2. checks the dataset and the sweep folder ``<storage>/sweeps/<name>/`` (a new sweep must not
   exist, ``resume`` needs it) before any trial starts;
3. opens the sweep's MLflow parent run (re-used on resume) and hands its id to the trials;
4. runs a Tuner: :class:`PrunedAwareOptunaSearch` proposes configs from the define-by-run space,
   ASHA stops weak trials at step boundaries (``step`` is its time attribute), the driver of a
   trial holds ``resources.driver_cpus`` and ``max_concurrent_trials`` comes from the cluster's
   resources, so a small machine never deadlocks on drivers waiting for workers;
   ``resume`` restores it (``Tuner.restore``): finished trials are not run again;
5. on Ctrl-C or SIGTERM (``ray job stop``) stops the trials, removes what is left of their
   placement groups and says how to resume;
6. returns every trial's last result and the best trial per strategy (final SDR/SIR/SAR and
   forgetting), which also goes to the parent run.
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ray.tune import Callback
from ray.tune.search.optuna import OptunaSearch

from contavsep import storage
from contavsep_platform.spaces import STRATEGY_KEY, DefineByRun, SearchSpace, make_sampler
from contavsep_platform.trial import ENGINE_TIME_KEY, PLACEMENT_GROUP_KEY, STEP_KEY, TrialContext, ray_storage, run_trial

log = logging.getLogger("contavsep.sweep")

# The Train V2 API (Tune driver + TorchTrainer) on every process of the job (Ray 2.60's default,
# stated so an older cluster default cannot switch trials to the V1 API).
TRAIN_V2_ENV = {"RAY_TRAIN_V2_ENABLED": "1"}
# A local Ray start can lose a race against its own agents on a busy machine (the raylet gives
# them a fixed 15 s); the next attempt finds the imports in the page cache.
LOCAL_RAY_ATTEMPTS = 3
FINAL_COLUMNS = ("sdr", "sir", "sar", "forgetting/sdr")


class SweepError(Exception):
    """A sweep cannot start or continue as asked; the message says what to do instead."""


# ----------------------------------------------------------------------------------------------
# Optuna: a trial stopped early is pruned, not complete


def reached_last_step(result: Mapping[str, Any] | None, num_steps: int) -> bool:
    """Whether a Tune result is the one of the last incremental step."""
    return bool(result) and float(result.get(STEP_KEY, 0) or 0) >= num_steps


class PrunedAwareOptunaSearch(OptunaSearch):
    """Ray's OptunaSearch, except that a trial which ended before the last incremental step
    (stopped by ASHA, or by the user) reaches Optuna as PRUNED.

    Ray's class tells Optuna COMPLETE with the last intermediate value, so an SDR over the first
    classes only would compete with final SDRs over all classes, which are not comparable
    (early steps score higher: fewer classes, no forgetting yet).
    """

    def __init__(self, *args: Any, num_steps: int, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.num_steps = num_steps

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if error or not result or reached_last_step(result, self.num_steps) or trial_id not in self._ot_trials:
            super().on_trial_complete(trial_id, result=result, error=error)
            return
        if trial_id in self._completed_trials:
            return
        from optuna.trial import TrialState

        self._ot_study.tell(self._ot_trials[trial_id], state=TrialState.PRUNED)
        self._completed_trials.add(trial_id)


def make_searcher(space: SearchSpace) -> Any:
    """The Optuna searcher of a space: define-by-run, starting points, the space's sampler."""
    return PrunedAwareOptunaSearch(
        space=DefineByRun(space),
        metric=space.metric,
        mode=space.mode,
        points_to_evaluate=[dict(p) for p in space.points_to_evaluate] or None,
        sampler=make_sampler(space),
        num_steps=space.num_steps,
    )


def make_scheduler(space: SearchSpace) -> Any:
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    sch = space.scheduler
    if sch.type == "fifo":
        return FIFOScheduler()
    return ASHAScheduler(
        time_attr=STEP_KEY,
        metric=space.metric,
        mode=space.mode,
        max_t=space.num_steps,
        grace_period=sch.grace_period,
        reduction_factor=sch.reduction_factor,
        brackets=sch.brackets,
        # A trial at its last step finishes by itself: stopping it there would kill its Train
        # run while it shuts down (and leave its placement group behind).
        stop_last_trials=False,
    )


# ----------------------------------------------------------------------------------------------
# Ray connection


def _job_env_keys() -> set[str]:
    """Env var names the surrounding ``ray job submit`` already sets (ray.init must not repeat them)."""
    raw = os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR")
    if not raw:
        return set()
    try:
        return set(((json.loads(raw).get("runtime_env") or {}).get("env_vars") or {}))
    except (ValueError, AttributeError):
        return set()


def connect_ray(address: str | None, env: Mapping[str, str]) -> bool:
    """Attach to Ray at ``address`` (or the job's cluster), else start a local Ray here.

    ``env`` (S3/MLflow settings) becomes part of the job's runtime env, so trial drivers and
    Train workers on any node see it. Returns whether this process started Ray (and must stop it).
    """
    import ray

    if ray.is_initialized():
        return False
    taken = _job_env_keys()
    env_vars = {k: v for k, v in {**env, **TRAIN_V2_ENV}.items() if k not in taken}
    kwargs: dict[str, Any] = {"runtime_env": {"env_vars": env_vars}, "logging_level": logging.WARNING}
    if address or os.environ.get("RAY_ADDRESS"):
        ray.init(address=address or None, **kwargs)
        return False
    for attempt in range(1, LOCAL_RAY_ATTEMPTS + 1):
        try:
            # No dashboard: a local sweep does not need it (the tables below report progress).
            # Without it Ray's state API is down, so Train's placement-group cleaner actors
            # repeat a warning every second: worker output stays in Ray's session logs.
            ray.init(include_dashboard=False, log_to_driver=False, **kwargs)
            return True
        except Exception as exc:  # Ray raises a bare Exception when its node does not come up
            ray.shutdown()
            if "timed out during startup" not in str(exc) or attempt == LOCAL_RAY_ATTEMPTS:
                raise
            log.warning("local Ray did not start (attempt %d of %d): %s; retrying", attempt, LOCAL_RAY_ATTEMPTS, exc)
    raise AssertionError("unreachable")


class PlacementGroupReaper(Callback):
    """Frees the Ray Train placement group of every trial that has ended.

    When Tune ends a trial (ASHA stops it, or it finished), it ends the trial's driver; the Train
    controller it owns dies with it, but the workers' placement group belongs to the job (the
    sweep) and, unless the controller removed it in time, stays reserved until the sweep ends:
    after a few trials a small cluster has no CPUs left and the next trials wait forever
    (measured here: a stopped trial always, a finished one sometimes). Train's own cleaner
    actor needs Ray's state API, i.e. a dashboard, which a local sweep does not start. Each
    trial reports its group's id; once the trial has ended and ``grace_s`` has passed (its
    driver and controller are gone, so nothing restarts the workers), the group is removed if
    it is still there.
    """

    def __init__(self, grace_s: float = 5.0):
        self.grace_s = grace_s
        self._group_of: dict[str, str] = {}
        self._ended_at: dict[str, float] = {}
        self.removed: list[str] = []

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles callbacks with the sweep (for --resume): monotonic times and the groups of
        # a previous Ray session mean nothing in the next one.
        return {"grace_s": self.grace_s, "_group_of": {}, "_ended_at": {}, "removed": []}

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        group = result.get(PLACEMENT_GROUP_KEY)
        if group:
            self._group_of[trial.trial_id] = str(group)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._ended_at[trial.trial_id] = time.monotonic()

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._ended_at[trial.trial_id] = time.monotonic()

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        self.reap(self.grace_s)

    def reap(self, grace_s: float) -> None:
        now = time.monotonic()
        for trial_id, ended in list(self._ended_at.items()):
            if now - ended < grace_s:
                continue
            del self._ended_at[trial_id]
            group = self._group_of.pop(trial_id, None)
            if group and _remove_placement_group(group):
                self.removed.append(group)
                log.info("removed the placement group %s of stopped trial %s", group, trial_id)


def _remove_placement_group(group_id: str) -> bool:
    """Remove a placement group unless it is gone already; returns whether it was removed."""
    from ray._raylet import PlacementGroupID
    from ray.util import placement_group_table
    from ray.util.placement_group import PlacementGroup, remove_placement_group

    group = PlacementGroup(PlacementGroupID.from_hex(group_id))
    if placement_group_table(group).get("state") in (None, "REMOVED"):
        return False
    remove_placement_group(group)
    return True


def job_placement_groups() -> list[dict[str, Any]]:
    """Placement groups of this Ray job that still hold (or wait for) resources."""
    import ray
    from ray.util import placement_group_table

    job = ray.get_runtime_context().get_job_id()
    # A placement group id ends with the id of the job that created it (its actors included).
    return [pg for pg in placement_group_table().values() if pg["placement_group_id"].endswith(job) and pg["state"] != "REMOVED"]


def release_placement_groups() -> int:
    """Remove this job's leftover placement groups once no trial runs any more (after the
    sweep, e.g. an interrupted one); returns how many were removed."""
    return sum(_remove_placement_group(pg["placement_group_id"]) for pg in job_placement_groups())


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """``ray job stop`` sends SIGTERM: treat it like Ctrl-C, which Tune turns into a clean stop
    (trials stopped, experiment state saved for ``--resume``)."""
    if threading.current_thread() is not threading.main_thread():  # signals go to the main thread only
        yield
        return
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: signal.raise_signal(signal.SIGINT))
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# ----------------------------------------------------------------------------------------------
# results


@dataclass(frozen=True)
class TrialRow:
    """One trial's outcome: its sampled parameters and last reported values."""

    trial_id: str
    strategy: str
    status: str  # complete | stopped (by ASHA) | interrupted (with the sweep) | error | pending (never started)
    steps: int
    params: dict[str, Any]
    metrics: dict[str, float]
    engine_seconds: float | None = None

    def value(self, key: str) -> float | None:
        v = self.metrics.get(key)
        return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


@dataclass
class SweepOutcome:
    """What a sweep did: every trial, the best complete trial per strategy, and how it ended."""

    name: str
    sweep_uri: str
    metric: str
    mode: str
    trials: list[TrialRow]
    best: list[dict[str, Any]]
    interrupted: bool
    wall_seconds: float
    parent_run_id: str | None = None
    max_concurrent: int = 0
    notes: list[str] = field(default_factory=list)


def _rows(result_grid: Any, space: SearchSpace) -> list[TrialRow]:
    rows = []
    for result in result_grid:
        metrics = {k: v for k, v in (result.metrics or {}).items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        params = {k: v for k, v in (result.config or {}).items()}
        steps = int(metrics.get(STEP_KEY, 0) or 0)
        if result.error is not None:
            status = "error"
        elif steps >= space.num_steps:
            status = "complete"
        elif steps == 0:
            status = "pending"
        elif (result.metrics or {}).get("done"):
            status = "stopped"  # by the scheduler (Tune marks its last result done)
        else:
            status = "interrupted"  # the sweep stopped while the trial ran; --resume continues it
        trial_id = str((result.metrics or {}).get("trial_id") or Path(result.path or "").name)
        rows.append(TrialRow(trial_id, str(params.get(STRATEGY_KEY, "?")), status, steps, params, metrics, metrics.get(ENGINE_TIME_KEY)))
    return sorted(rows, key=lambda r: r.trial_id)


def best_per_strategy(rows: Sequence[TrialRow], space: SearchSpace) -> list[dict[str, Any]]:
    """The best complete trial of each strategy by the space's metric (one dict per strategy)."""
    best: list[dict[str, Any]] = []
    sign = 1.0 if space.mode == "max" else -1.0
    for strategy in space.strategies:
        done = [r for r in rows if r.strategy == strategy and r.status == "complete" and r.value(space.metric) is not None]
        counts = {s: sum(1 for r in rows if r.strategy == strategy and r.status == s) for s in ("complete", "stopped", "error")}
        entry: dict[str, Any] = {"strategy": strategy, "trials": sum(1 for r in rows if r.strategy == strategy), **{f"n_{k}": v for k, v in counts.items()}}
        if done:
            top = max(done, key=lambda r: sign * r.value(space.metric))
            entry.update(
                trial_id=top.trial_id,
                params={k: v for k, v in top.params.items() if k != STRATEGY_KEY},
                **{k: top.value(k) for k in FINAL_COLUMNS},
                bwt_sdr=top.value("bwt/sdr"),
                average_incremental_sdr=top.value("average_incremental/sdr"),
            )
        best.append(entry)
    return best


def _fmt(x: Any) -> str:
    """A metric: two decimals (dB)."""
    return "-" if x is None else f"{x:.2f}" if isinstance(x, float) else str(x)


def _fmt_param(x: Any) -> str:
    """A sampled parameter: four significant digits (λ values span decades)."""
    return f"{x:.4g}" if isinstance(x, float) else str(x)


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def format_best_table(outcome: SweepOutcome) -> str:
    """The final table: best complete trial per strategy with final SDR/SIR/SAR and forgetting."""
    rows = [["strategy", "best trial", "SDR", "SIR", "SAR", "forgetting", "trials (done/stopped/err)", "parameters"]]
    for b in outcome.best:
        params = ", ".join(f"{k}={_fmt_param(v)}" for k, v in (b.get("params") or {}).items())
        rows.append([
            b["strategy"], b.get("trial_id", "-"), _fmt(b.get("sdr")), _fmt(b.get("sir")), _fmt(b.get("sar")),
            _fmt(b.get("forgetting/sdr")), f"{b['trials']} ({b['n_complete']}/{b['n_stopped']}/{b['n_error']})", params or "-",
        ])
    return _table(rows)


def format_trials_table(outcome: SweepOutcome) -> str:
    rows = [["trial", "strategy", "status", "steps", outcome.metric, "forgetting", "parameters"]]
    for r in outcome.trials:
        params = ", ".join(f"{k}={_fmt_param(v)}" for k, v in r.params.items() if k != STRATEGY_KEY)
        rows.append([r.trial_id, r.strategy, r.status, str(r.steps), _fmt(r.value(outcome.metric)), _fmt(r.value("forgetting/sdr")), params or "-"])
    return _table(rows)


# ----------------------------------------------------------------------------------------------
# the sweep


def _trial_name(trial: Any) -> str:
    return trial.trial_id


def _trial_dirname(trial: Any) -> str:
    # Tune's per-trial files sit next to the Train run of the same trial (named by the bare id).
    return f"tune-{trial.trial_id}"


def default_sweep_name(space: SearchSpace) -> str:
    return f"{space.name}-{time.strftime('%Y%m%d-%H%M%S')}"


def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent, capture_output=True, text=True, timeout=10)
        return out.stdout.strip() if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _open_parent_run(space: SearchSpace, name: str, tracking_uri: str | None, manifest: Mapping[str, Any]) -> tuple[Any, str | None]:
    if not tracking_uri:
        return None, None
    from contavsep_platform.tracking import SweepTracker

    tracker = SweepTracker(tracking_uri, space.experiment_name, name)
    tags = {
        "sweep": name,
        "space": space.name,
        "data_uri": str(space.base.get("data.uri", "")),
        "data_content_hash": str(manifest.get("content_hash", "")),
        "git_commit": _git_commit(),
    }
    return tracker, tracker.start(space.source_text, tags)


def _cluster_capacity() -> dict[str, float]:
    """The resources trials can count on: an autoscaling cluster's configured maximum (its GPU
    workers may be at 0 nodes right now), else what the cluster has now."""
    import ray

    now = {k: float(v) for k, v in ray.cluster_resources().items()}
    try:  # private in Ray 2.60; Ray Train uses the same call for its own resource pre-check
        from ray._private.state import state

        maximum = state.get_max_resources_from_cluster_config()
    except Exception:  # noqa: BLE001 - an older/newer Ray without it: what the cluster has now
        maximum = None
    if not maximum:
        return now
    return {k: max(float(maximum.get(k, 0.0)), now.get(k, 0.0)) for k in set(maximum) | set(now)}


def run_sweep(
    space: SearchSpace,
    *,
    storage_uri: str,
    name: str | None = None,
    resume: bool = False,
    tracking_uri: str | None = None,
    ray_address: str | None = None,
    s3: storage.S3Settings | None = None,
    env: Mapping[str, str] | None = None,
    callbacks: Sequence[Any] = (),
    verbose: int = 1,
) -> SweepOutcome:
    """Run (or with ``resume`` continue) the sweep ``name`` of ``space``; see the module docstring.

    ``s3`` is for this process (dataset check, Tune's storage); ``env`` (``settings.service_env``)
    goes to every Ray process of the sweep, whose trials resolve their endpoints from it.
    """
    from contavsep.data.manifest import read_manifest

    if resume and not name:
        raise SweepError("--resume needs the --name of the sweep to continue")
    name = name or default_sweep_name(space)
    started = time.perf_counter()
    manifest = read_manifest(str(space.base["data.uri"]), s3)  # a missing dataset fails here, not in every trial
    sweeps_uri = storage.join(storage_uri, "sweeps")
    if storage.parse_uri(storage_uri).scheme == "s3":
        storage.ensure_bucket(storage_uri, s3)
    started_ray = connect_ray(ray_address, dict(env or {}))
    try:
        return _run(space, name, storage_uri, sweeps_uri, resume, tracking_uri, s3, manifest, callbacks, verbose, started)
    finally:
        if started_ray:
            import ray

            ray.shutdown()


def _run(space: SearchSpace, name: str, storage_uri: str, sweeps_uri: str, resume: bool, tracking_uri: str | None,
         s3: storage.S3Settings | None, manifest: Mapping[str, Any], callbacks: Sequence[Any], verbose: int,
         started: float) -> SweepOutcome:
    import ray
    from ray import tune

    sweeps_path, filesystem = ray_storage(sweeps_uri, s3)
    sweep_path = f"{sweeps_path.rstrip('/')}/{name}"
    exists = tune.Tuner.can_restore(sweep_path, storage_filesystem=filesystem)
    sweep_uri = storage.join(sweeps_uri, name)
    if resume and not exists:
        raise SweepError(f"no sweep '{name}' to resume at {sweep_uri}; check --name (and the storage root)")
    if not resume and exists:
        raise SweepError(f"sweep '{name}' already exists at {sweep_uri}; continue it with --resume or pick another --name")

    tracker, parent_run_id = _open_parent_run(space, name, tracking_uri, manifest)
    context = TrialContext(sweep_name=name, storage_uri=storage_uri, space=space, tracking_uri=tracking_uri, parent_run_id=parent_run_id)
    cluster = _cluster_capacity()
    trainable = tune.with_resources(tune.with_parameters(run_trial, context=context), space.resources.driver_resources(cluster))
    max_concurrent = space.resources.concurrent_trials(cluster)
    log.info("sweep %s: %d trials, at most %d at once, storage %s", name, space.num_samples, max_concurrent, sweep_uri)
    reaper = PlacementGroupReaper()  # on --resume Tune restores the one pickled with the sweep
    if resume:
        tuner = tune.Tuner.restore(sweep_path, trainable, resume_unfinished=True, resume_errored=True, storage_filesystem=filesystem)
    else:
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(
                search_alg=make_searcher(space),
                scheduler=make_scheduler(space),
                num_samples=space.num_samples,
                max_concurrent_trials=max_concurrent,
                trial_name_creator=_trial_name,
                trial_dirname_creator=_trial_dirname,
            ),
            run_config=tune.RunConfig(
                name=name,
                storage_path=sweeps_path,
                storage_filesystem=filesystem,
                callbacks=[reaper, *callbacks],
                verbose=verbose,
            ),
        )
    with _sigterm_as_interrupt():
        result_grid = tuner.fit()
    rows = _rows(result_grid, space)
    interrupted = any(r.status in ("pending", "interrupted") for r in rows) or len(rows) < space.num_samples
    notes = []
    leftover = release_placement_groups()
    if leftover:
        notes.append(f"removed {leftover} placement group(s) that ended trials had left reserved")
    outcome = SweepOutcome(
        name=name,
        sweep_uri=sweep_uri,
        metric=space.metric,
        mode=space.mode,
        trials=rows,
        best=best_per_strategy(rows, space),
        interrupted=interrupted,
        wall_seconds=time.perf_counter() - started,
        parent_run_id=parent_run_id,
        max_concurrent=max_concurrent,
        notes=notes,
    )
    if tracker is not None and not interrupted:
        tracker.finish(outcome.best)
    return outcome


def print_outcome(outcome: SweepOutcome, out: Any = None) -> None:
    out = out or sys.stdout
    print(f"\nsweep {outcome.name}: {len(outcome.trials)} trials in {outcome.wall_seconds:.0f} s"
          f" (at most {outcome.max_concurrent} at once); results under {outcome.sweep_uri}", file=out)
    print(format_trials_table(outcome), file=out)
    print(f"\nbest trial per strategy ({outcome.metric}, {outcome.mode}; complete trials only):", file=out)
    print(format_best_table(outcome), file=out)
    for note in outcome.notes:
        print(f"note: {note}", file=out)
    if outcome.interrupted:
        print(f"\nthe sweep was interrupted; continue it with: contavsep sweep SPACE.yaml --name {outcome.name} --resume", file=out)


