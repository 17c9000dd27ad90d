"""A sweep: Ray Tune + Optuna over strategies and their hyperparameters, one trial per task sequence.

``run_sweep`` takes a validated :class:`~contavsep_platform.spaces.SearchSpace` and:

1. attaches to Ray (``ray_address``, or the job's cluster inside ``ray job submit``) or starts a
   local Ray in this process, with the service settings in the job's runtime env so every
   trial finds S3 and MLflow the way this process does;
2. checks the dataset and the sweep folder ``<storage>/sweeps/<name>/`` (a new sweep must not
   exist, ``resume`` needs it) before any trial starts;
3. checks that one trial fits the cluster, then (only then: a refused sweep leaves no run)
   opens the sweep's MLflow parent run (re-used on resume, after sending what an MLflow
   outage kept from the previous session's final flush) and hands its id to the trials;
4. runs a Tuner: :class:`~contavsep_platform.search.GroupedOptunaSearch` proposes configurations
   from the define-by-run space and runs each once per repeat, ASHA on group means
   (:mod:`contavsep_platform.pruning`) stops weak configurations at step boundaries from step 2
   on (``step`` is its time attribute), the driver of a
   trial holds ``resources.driver_cpus`` and ``max_concurrent_trials`` comes from the cluster's
   resources, so a small machine never deadlocks on drivers waiting for workers;
   ``resume`` restores it (``Tuner.restore``): finished trials are not run again; the Optuna
   study is kept in the sweep's folder (``optuna-journal.log``, :mod:`contavsep_platform.study`)
   and ``resume`` continues it;
5. on Ctrl-C or SIGTERM (``ray job stop``, within the grace period of :data:`JOB_STOP_GRACE_ENV`)
   stops the trials, removes what is left of their placement groups, ends the MLflow runs
   KILLED and says how to resume;
6. returns every trial's last result (an errored trial with its error and Tune's ``error.txt``)
   and the ranking of the configurations (mean ± 95 % CI over their repeats, paired
   differences; :mod:`contavsep_platform.comparison`), which also goes to the parent run (ended
   FINISHED, or FAILED when a trial errored; what MLflow does not take in time is kept in
   ``<sweep>/mlflow-pending.json``), followed by the report and its views (``report/``,
   :func:`~contavsep_platform.report.log_report`).

While it runs, the console shows the trials (:mod:`contavsep_platform.live_table`) and Ray's and
Tune's own output goes to the sweep's log file (:mod:`contavsep_platform.sweep_log`), unless
``verbose`` asks for Tune's output.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ray.tune import Callback

from contavsep import storage
from contavsep.first_step import FIRST_STEPS_DIR
from contavsep.first_step import SHARED_KEY as FIRST_STEP_SHARED_KEY
from contavsep_platform.comparison import (
    Comparison,
    Configuration,
    Estimate,
    RunRecord,
    compare,
    configurations_table,
    group_configurations,
    pareto_front,
    ranking_table,
    summary_lines,
)
from contavsep_platform.errors import UserError
from contavsep_platform.live_table import LiveTable
from contavsep_platform.pruning import GroupASHA
from contavsep_platform.ray_storage import ray_storage
from contavsep_platform.search import GroupedOptunaSearch, configuration_id
from contavsep_platform.settings import JOB_STOP_GRACE_ENV  # noqa: F401 - re-exported (README, tests)
from contavsep_platform.spaces import (
    CONFIRM_TRIAL_KEY,
    GROUP_KEY,
    REPEAT_KEY,
    STRATEGY_KEY,
    SearchSpace,
    fingerprint,
    fingerprint_differences,
    publish_key,
    space_notes,
)
from contavsep_platform.study import StudyJournal, journal_uri
from contavsep_platform.sweep_log import (
    noise_to_log,
    note_ray_logs,
    project_warnings_to,
    sweep_log_path,
)
from contavsep_platform.trial import (
    ENGINE_TIME_KEY,
    PLACEMENT_GROUP_KEY,
    STEP_KEY,
    TrialContext,
    run_trial,
)

log = logging.getLogger("contavsep.sweep")

# The Train V2 API (Tune driver + TorchTrainer) on every process of the job (Ray 2.60's default,
# stated so an older cluster default cannot switch trials to the V1 API).
TRAIN_V2_ENV = {"RAY_TRAIN_V2_ENABLED": "1"}
# `ray job stop`'s grace period: settings.JOB_STOP_GRACE_ENV (the head and every job carry it).
# A local Ray start can lose a race against its own agents on a busy machine (the raylet gives
# them a fixed 15 s); the next attempt finds the imports in the page cache.
LOCAL_RAY_ATTEMPTS = 3
FINAL_COLUMNS = ("sdr", "sir", "sar", "forgetting/sdr")


class SweepError(UserError):
    """A sweep cannot start or continue as asked; the message says what to do instead."""


# ----------------------------------------------------------------------------------------------
# search and early stopping


def make_searcher(space: SearchSpace, journal: StudyJournal | None = None) -> GroupedOptunaSearch:
    """The Optuna searcher of a space: configurations as groups of repeats, deduplicated; its
    study persists in ``journal`` (the sweep's ``optuna-journal.log``) when given."""
    return GroupedOptunaSearch(space, journal)


def make_scheduler(space: SearchSpace) -> Any:
    """FIFO, or ASHA on configuration-group means (rungs from ``grace_period >= 2`` steps)."""
    from ray.tune.schedulers import FIFOScheduler

    sch = space.scheduler
    if sch.type == "fifo":
        return FIFOScheduler()
    return GroupASHA(
        metric=space.metric_key,  # the validation value unless the space selects on test
        mode=space.mode,
        max_t=space.num_steps,
        grace_period=sch.grace_period,
        reduction_factor=sch.reduction_factor,
        group_size=space.repeats.count,
    )


# ----------------------------------------------------------------------------------------------
# Ray connection


def _job_env_keys() -> set[str]:
    """Env var names the surrounding ``ray job submit`` already sets (ray.init must not repeat them)."""
    raw = os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR")
    if not raw:
        return set()
    try:
        return set((json.loads(raw).get("runtime_env") or {}).get("env_vars") or {})
    except (ValueError, AttributeError):
        return set()


def connect_ray(address: str | None, env: Mapping[str, str]) -> bool:
    """Attach to the Ray cluster at ``address`` (RAY_ADDRESS, the `services up --ray` head, or the
    job's cluster inside ``ray job submit``), else start a private local Ray in this process.

    The private instance (``address="local"``) never joins a head that Ray's discovery file
    (``/tmp/ray/ray_current_cluster``) names, e.g. another user's ``ray start``; it does not
    write that file, lives in the state folder's temp dir when the socket paths allow it
    (:func:`~contavsep_platform.settings.private_ray_temp_dir`) and listens on 127.0.0.1 only.

    ``env`` (S3/MLflow settings: where the keys are, never the keys) becomes part of the job's
    runtime env, so trial drivers and Train workers on any node see it. Returns whether this
    process started Ray (and must stop it).
    """
    import ray

    from contavsep_platform.settings import default_state_dir, private_ray_temp_dir

    if ray.is_initialized():
        return False
    taken = _job_env_keys()
    env_vars = {k: v for k, v in {**env, **TRAIN_V2_ENV}.items() if k not in taken}
    kwargs: dict[str, Any] = {"runtime_env": {"env_vars": env_vars}, "logging_level": logging.WARNING}
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address and address != "local":
        ray.init(address=address, **kwargs)
        return False
    state_dir = default_state_dir(env if env.get("CONTAVSEP_HOME") else None)
    temp_dir = private_ray_temp_dir(state_dir)
    if temp_dir:
        Path(temp_dir).mkdir(parents=True, exist_ok=True, mode=0o700)
        kwargs["_temp_dir"] = temp_dir
    for attempt in range(1, LOCAL_RAY_ATTEMPTS + 1):
        try:
            # No dashboard: a local sweep does not need it (the tables below report progress).
            # Without it Ray's state API is down, so Train's placement-group cleaner actors
            # repeat a warning every second: worker output stays in Ray's session logs.
            with _single_machine():
                ray.init(address="local", include_dashboard=False, log_to_driver=False, **kwargs)
            return True
        except Exception as exc:  # Ray raises a bare Exception when its node does not come up
            ray.shutdown()
            if "timed out during startup" not in str(exc) or attempt == LOCAL_RAY_ATTEMPTS:
                raise
            log.warning("local Ray did not start (attempt %d of %d): %s; retrying", attempt, LOCAL_RAY_ATTEMPTS, exc)
    raise AssertionError("unreachable")


_SINGLE_MACHINE_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


@contextmanager
def _single_machine() -> Iterator[None]:
    """Ray's single-machine mode (its default on macOS and Windows) while a local Ray starts:
    the node IP stays 127.0.0.1, so its GCS, raylet, agents and workers listen on 127.0.0.1 only
    (otherwise on every interface) and no other machine's node can join. Ray reads the switch
    from the environment at import (this process imported Ray already) and its processes read
    it at start; both are restored afterwards."""
    from ray._private import ray_constants

    saved_env, saved_flag = os.environ.get(_SINGLE_MACHINE_ENV), ray_constants.ENABLE_RAY_CLUSTER
    os.environ[_SINGLE_MACHINE_ENV] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved_flag
        if saved_env is None:
            os.environ.pop(_SINGLE_MACHINE_ENV, None)
        else:
            os.environ[_SINGLE_MACHINE_ENV] = saved_env


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
    """One trial's outcome: its configuration group, repeat, sampled parameters and last values."""

    trial_id: str
    strategy: str
    status: str  # complete | stopped (by the scheduler) | interrupted (with the sweep) | error | pending (never started)
    steps: int
    params: dict[str, Any]  # strategy.name + sampled values (no repeat or bookkeeping keys)
    metrics: dict[str, float]
    engine_seconds: float | None = None
    group: str = ""  # configuration id (content hash of the resolved configuration without its repeat)
    repeat: str = ""  # e.g. s1-o0: seed 1 of the base, class order 0
    error: str = ""  # status error: the error's last line
    error_log: str = ""  # status error: Tune's error.txt of the trial (full traceback), as a storage URI
    stage: str = "search"  # search | confirm (a configuration chosen by the search, run on fresh seeds)

    def value(self, key: str) -> float | None:
        v = self.metrics.get(key)
        return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


@dataclass
class SweepOutcome:
    """What a sweep did: every trial, the ranking of its configurations, and how it ended."""

    name: str
    sweep_uri: str
    metric: str
    mode: str
    trials: list[TrialRow]
    comparison: Comparison
    interrupted: bool
    wall_seconds: float
    parent_run_id: str | None = None
    max_concurrent: int = 0
    notes: list[str] = field(default_factory=list)
    objectives: tuple[tuple[str, str], ...] = ()  # (metric, mode) of a multi-objective space
    pareto: tuple[str, ...] = ()  # configuration ids on the Pareto front (multi-objective spaces)
    search: Comparison | None = None  # the search's configurations (the published comparison is the confirmation's)
    confirmed: bool = False  # the ranking comes from a confirmation stage

    @property
    def selection(self) -> str:
        """What the ranking's configurations were chosen on, in words (every table shows it)."""
        return self.comparison.selection

    @property
    def errored(self) -> list[TrialRow]:
        """Trials that ended in an error (``--resume`` retries them from their last intact checkpoint)."""
        return [r for r in self.trials if r.status == "error"]


def _error_line(error: BaseException) -> str:
    """The last non-empty line of an error (Tune wraps the trial's exception in its own)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return (lines[-1] if lines else type(error).__name__)[:300]


def _rows(result_grid: Any, space: SearchSpace, sweep_uri: str = "", stage: str = "search") -> list[TrialRow]:
    repeat_keys = set(space.repeats.keys())
    rows = []
    for result in result_grid:
        metrics = {k: v for k, v in (result.metrics or {}).items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        config = dict(result.config or {})
        config = dict(config.get(CONFIRM_TRIAL_KEY) or config)  # a confirmation trial's config is one grid value
        params = {k: v for k, v in config.items() if k not in (GROUP_KEY, REPEAT_KEY) and k not in repeat_keys}
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
        folder = Path(result.path or "").name  # tune-<trial id> (see _trial_dirname)
        trial_id = str((result.metrics or {}).get("trial_id") or folder.removeprefix("tune-"))
        group = str(config.get(GROUP_KEY) or configuration_id(space, params))
        error = _error_line(result.error) if result.error is not None else ""
        error_log = storage.join(sweep_uri, folder, "error.txt") if result.error is not None and sweep_uri and folder else ""
        rows.append(TrialRow(trial_id, str(params.get(STRATEGY_KEY, "?")), status, steps, params, metrics,
                             metrics.get(ENGINE_TIME_KEY), group, str(config.get(REPEAT_KEY, "")), error, error_log, stage))
    return sorted(rows, key=lambda r: r.trial_id)


def comparison_of(rows: Sequence[TrialRow], space: SearchSpace, chosen_on: Mapping[str, Estimate] | None = None) -> Comparison:
    """Configurations over their repeats, each method's configuration chosen as the space says
    (by the validation objective; by test only under ``select_on: test``), ranked and published
    on the test value of the first objective (see comparison.py).

    ``chosen_on`` (a confirmation stage's rows): config id -> the search's validation estimate it
    was chosen on; every method then has its one confirmed configuration."""
    records = [
        RunRecord(
            run_id=r.trial_id,
            config_id=r.group,
            repeat=r.repeat or r.trial_id,
            strategy=r.strategy,
            memory=int(space.trial_config(r.params).memory.per_class) if r.strategy in space.strategies else 0,
            params={k: v for k, v in r.params.items() if k != STRATEGY_KEY},
            values={k: v for k in (*FINAL_COLUMNS, *published_keys(space), *(o.key for o in space.objectives))
                    if (v := r.value(k)) is not None},
            complete=r.status == "complete",
            factors=tuple(space.method_of(r.params).items()) if r.strategy in space.strategies else (),
        )
        for r in rows
    ]
    published = published_keys(space)
    columns = tuple(dict.fromkeys(["forgetting/sdr", *published[1:]]))
    if chosen_on is not None:
        # select_by names what chosen_on holds (a method with several confirmed configurations,
        # a multi-objective space's, keeps the one chosen on the search's validation runs)
        return compare(group_configurations(records), published[0], space.mode, columns, select_by=space.metric_key,
                       chosen_on=chosen_on, selection=space.selection_text(len({r.repeat for r in rows})))
    select_by = space.metric_key if space.selection == "val" else ""
    return compare(group_configurations(records), published[0], space.mode, columns, select_by=select_by,
                   selection=space.selection_text())


def published_keys(space: SearchSpace) -> tuple[str, ...]:
    """The result keys a table publishes: each objective's test value (split-free ones as they are)."""
    return tuple(dict.fromkeys(publish_key(o.metric) for o in space.objectives))


def parent_summary(outcome: SweepOutcome) -> list[dict[str, Any]]:
    """The ranking as JSON-friendly rows (the parent run's table and summary metrics)."""
    out = []
    for r in outcome.comparison.rows:
        c = r.configuration
        row: dict[str, Any] = {"rank": r.rank, "method": c.method, "strategy": c.strategy, "memory": c.memory,
                               "configuration": c.config_id, "params": dict(c.params), "factors": dict(c.factors)}
        row["selection"] = outcome.selection
        for metric, e in r.estimates.items():
            row[metric] = {"mean": e.mean, "ci95": [e.low, e.high], "n": e.n, "sd": e.sd}
        if r.chosen_on is not None:
            e = r.chosen_on
            row["chosen_on"] = {"metric": outcome.comparison.select_by, "mean": e.mean, "ci95": [e.low, e.high], "n": e.n, "sd": e.sd}
            row["gap"] = r.gap
        for name, d, other in (("vs_finetune", r.vs_reference, r.reference), ("vs_next", r.vs_next, r.next_method)):
            if d is not None:
                row[name] = {"other": other, "mean": d.mean, "ci95": [d.low, d.high], "n": d.n, "verdict": d.verdict(outcome.mode)}
        row["pareto"] = c.config_id in outcome.pareto
        out.append(row)
    return out


def _fmt(x: Any) -> str:
    """A metric: two decimals (dB)."""
    return "-" if x is None else f"{x:.2f}" if isinstance(x, float) else str(x)


def _fmt_param(x: Any) -> str:
    """A sampled parameter: four significant digits (λ values span decades)."""
    return f"{x:.4g}" if isinstance(x, float) else str(x)


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def format_trials_table(outcome: SweepOutcome) -> str:
    rows = [["trial", "configuration", "repeat", "strategy", "status", "steps", outcome.metric, "forgetting", "parameters"]]
    for r in sorted(outcome.trials, key=lambda r: (r.group, r.repeat, r.trial_id)):
        params = ", ".join(f"{k}={_fmt_param(v)}" for k, v in r.params.items() if k != STRATEGY_KEY)
        rows.append([r.trial_id, r.group, r.repeat or "-", r.strategy, r.status, str(r.steps), _fmt(r.value(outcome.metric)),
                     _fmt(r.value("forgetting/sdr")), params or "-"])
    return _table(rows)


def _params(params: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={_fmt_param(v)}" for k, v in params.items())


def format_ranking(outcome: SweepOutcome) -> str:
    """The ranking of methods (best complete configuration each) with CIs and paired differences."""
    header, rows = ranking_table(outcome.comparison, compact=True)
    lines = [_table([header, *rows])] if rows else []
    # the configurations' parameters under the table (it keeps to 120 columns without them)
    lines += [f"  {r.configuration.method}: {_params(r.configuration.params)}" for r in outcome.comparison.rows if r.configuration.params]
    lines += summary_lines(outcome.comparison)
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# the sweep


def _trial_name(trial: Any) -> str:
    return trial.trial_id


def _trial_dirname(trial: Any) -> str:
    # Tune's per-trial files sit next to the Train run of the same trial (named by the bare id).
    return f"tune-{trial.trial_id}"


def default_sweep_name(space: SearchSpace) -> str:
    return f"{space.name}-{time.strftime('%Y%m%d-%H%M%S')}"


_NAME_RE = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,99}")


def check_sweep_name(name: str) -> str:
    """Refuse a sweep name that is not one plain path segment (it names a storage folder, an
    MLflow tag and a report folder): letters, digits, '.', '_', '-', not starting with '.', at
    most 100 characters."""
    if not _NAME_RE.fullmatch(name):
        raise SweepError(f"sweep name {name!r} is not valid: use 1-100 letters, digits, '.', '_' or '-', not starting"
                         f" with '.' (it names a folder)")
    return name


def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent, capture_output=True, text=True, timeout=10)
        return out.stdout.strip() if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _open_parent_run(space: SearchSpace, name: str, tracking_uri: str | None, manifest: Mapping[str, Any]) -> tuple[Any, str | None]:
    if not tracking_uri:
        return None, None
    from contavsep_platform.tracking import SweepTracker, dataset_input

    tracker = SweepTracker(tracking_uri, space.experiment_name, name)
    tags = {
        "sweep": name,
        "space": space.name,
        "data_uri": str(space.base.get("data.uri", "")),
        "data_content_hash": str(manifest.get("content_hash", "")),
        "git_commit": _git_commit(),
        "contavsep.selection": space.selection_text(space.stage("confirm").repeats.count if space.confirms else None),
    }
    return tracker, tracker.start(space.source_text, tags, dataset_input(str(space.base["data.uri"]), manifest))


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
    verbose: int = 0,
    progress: bool = False,
) -> SweepOutcome:
    """Run (or with ``resume`` continue) the sweep ``name`` of ``space``; see the module docstring.

    ``s3`` is for this process (dataset check, Tune's storage); ``env`` (``settings.service_env``)
    goes to every Ray process of the sweep, whose trials resolve their endpoints from it.

    The console: with ``verbose=0`` Ray's and Tune's own output (Tune at its default verbosity)
    goes to the sweep's log file (:mod:`~contavsep_platform.sweep_log`, its path printed first)
    and ``progress`` shows the trials as a :class:`~contavsep_platform.live_table.LiveTable`;
    ``verbose >= 1`` is Tune's verbosity, with its tables and Ray's messages on the console.
    """
    from contavsep.data.manifest import read_manifest

    if resume and not name:
        raise SweepError("--resume needs the --name of the sweep to continue")
    name = check_sweep_name(name or default_sweep_name(space))
    started = time.perf_counter()
    manifest = read_manifest(str(space.base["data.uri"]), s3)  # a missing dataset fails here, not in every trial
    sweeps_uri = storage.join(storage_uri, "sweeps")
    if storage.parse_uri(storage_uri).scheme == "s3":
        storage.ensure_bucket(storage_uri, s3)
    if resume:  # before Ray starts: a refused resume costs a second and touches nothing
        check_resumed_space(storage.join(sweeps_uri, name), space, manifest, s3)
    with _console(name, verbose) as console, ExitStack() as stack:
        live = LiveTable(space, console) if progress and console is not None else None
        if console is not None:
            stack.enter_context(project_warnings_to(live.say if live else lambda line: print(line, file=console, flush=True)))
        started_ray = connect_ray(ray_address, dict(env or {}))
        if console is not None and started_ray:
            note_ray_logs(sys.stdout)  # sys.stdout is the log file here
        try:
            with _sigterm_as_interrupt():
                # Quiet, Tune still reports at its default verbosity: into the log, nothing lost.
                return _run(space, name, storage_uri, sweeps_uri, resume, tracking_uri, s3, manifest,
                            [*([live] if live else []), *callbacks], max(verbose, 1), started)
        finally:
            if live is not None:
                live.close()
            if started_ray:
                import ray

                ray.shutdown()


@contextmanager
def _console(name: str, verbose: int) -> Iterator[Any]:
    """Quiet (``verbose == 0``): Ray's and Tune's output to the sweep's log file for the block,
    which gets the console stream; verbose: everything stays on the console (``None``)."""
    if verbose:
        yield None
        return
    path = sweep_log_path(name)
    print(f"sweep {name}: Ray's and Tune's output go to {path} (--verbose shows them here)", flush=True)
    with noise_to_log(path) as console:
        yield console


# Next to Tune's state: the fingerprint of the space (and dataset) a sweep was started with.
SPACE_RECORD = "contavsep-space.json"


def space_record(space: SearchSpace, manifest: Mapping[str, Any]) -> dict[str, str]:
    """The fingerprint of a sweep's space and dataset content (stored as :data:`SPACE_RECORD`)."""
    return {**fingerprint(space), "data.content_hash": str(manifest.get("content_hash", ""))}


def check_resumed_space(sweep_uri: str, space: SearchSpace, manifest: Mapping[str, Any],
                        s3: storage.S3Settings | None) -> None:
    """Refuse to ``--resume`` a sweep with a space (or ``--set`` values, or dataset content) other
    than the one it was started with: Tune would run the rest of the old plan with the new
    settings and `report` would mix the two. Sweeps without a record are not checked."""
    record_uri = storage.join(sweep_uri, SPACE_RECORD)
    if not storage.exists(record_uri, s3):
        return
    stored = json.loads(storage.read_bytes(record_uri, s3))
    if "select_on" not in stored:
        raise SweepError(f"sweep {sweep_uri.rstrip('/').rsplit('/', 1)[-1]!r} was started before sweeps selected on validation"
                         f" sets (its trials have none, so its choice could only be made on test numbers); start a new --name")
    diff = fingerprint_differences(stored, space_record(space, manifest))
    if diff:
        more = f" (and {len(diff) - 3} more)" if len(diff) > 3 else ""
        raise SweepError(f"--resume with another space than sweep {sweep_uri.rstrip('/').rsplit('/', 1)[-1]!r} was"
                         f" started with: {'; '.join(diff[:3])}{more}; resume with the original space file and --set"
                         f" values, or start a new --name")


def _run(space: SearchSpace, name: str, storage_uri: str, sweeps_uri: str, resume: bool, tracking_uri: str | None,
         s3: storage.S3Settings | None, manifest: Mapping[str, Any], callbacks: Sequence[Any], verbose: int,
         started: float) -> SweepOutcome:
    from ray import tune

    sweeps_path, filesystem = ray_storage(sweeps_uri, s3)
    sweep_path = f"{sweeps_path.rstrip('/')}/{name}"
    exists = tune.Tuner.can_restore(sweep_path, storage_filesystem=filesystem)
    sweep_uri = storage.join(sweeps_uri, name)
    if resume and not exists:
        raise SweepError(f"no sweep '{name}' to resume at {sweep_uri}; check --name (and the storage root)")
    if not resume and exists:
        raise SweepError(f"sweep '{name}' already exists at {sweep_uri}; continue it with --resume or pick another --name")
    cluster = _cluster_capacity()
    driver_resources = space.resources.driver_resources(cluster)
    max_concurrent = space.resources.concurrent_trials(cluster)  # refuses a trial the cluster cannot hold
    if resume and tracking_uri:
        # A previous session's final flush that MLflow missed (outage): send it before anything else.
        from contavsep_platform.tracking import send_all_pending

        send_all_pending(tracking_uri, sweep_uri, s3)

    # Every check passed: only now does the sweep get an MLflow run (a refused sweep leaves none).
    tracker, parent_run_id = _open_parent_run(space, name, tracking_uri, manifest)
    pending_uri = storage.join(sweep_uri, "mlflow-pending.json")  # tracking.PENDING_FILE (mlflow is imported only with tracking)
    for note in space_notes(space):
        log.info("sweep %s: %s", name, note)
    full_space, space = space, space.stage("search")  # the search's trials (the stream cut under first_tasks)
    try:
        context = TrialContext(sweep_name=name, storage_uri=storage_uri, space=space, tracking_uri=tracking_uri, parent_run_id=parent_run_id)
        trainable = tune.with_resources(tune.with_parameters(run_trial, context=context), driver_resources)
        log.info("sweep %s: %d configurations x %d repeats, at most %d trials at once, storage %s", name, space.num_samples,
                 space.repeats.count, max_concurrent, sweep_uri)
        reaper = PlacementGroupReaper()  # on --resume Tune restores the one pickled with the sweep
        # The study persists next to Tune's state, named after the sweep (on --resume Tune restores
        # the pickled searcher, which reopens the same study from that journal).
        searcher = None if resume else make_searcher(space, StudyJournal(journal_uri(sweep_uri), name, s3))
        if resume:
            tuner = tune.Tuner.restore(sweep_path, trainable, resume_unfinished=True, resume_errored=True, storage_filesystem=filesystem)
            _use_console(tuner, verbose, callbacks)
        else:
            tuner = tune.Tuner(
                trainable,
                tune_config=tune.TuneConfig(
                    search_alg=searcher,
                    scheduler=make_scheduler(space),
                    num_samples=space.num_trials,
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
        if not resume:  # the space this sweep runs, for the check of a later --resume
            record = json.dumps(space_record(full_space, manifest), indent=1).encode()
            storage.write_bytes_atomic(storage.join(sweep_uri, SPACE_RECORD), record, s3)
        result_grid = tuner.fit()
        outcome = _outcome(space, name, sweep_uri, result_grid, searcher, parent_run_id, max_concurrent, started)
        if full_space.confirms and outcome.errored and not outcome.interrupted:
            outcome.notes.append("the search has errored trials: the confirmation stage waits for --resume to retry them"
                                 " (a choice made now could change with their results)")
        elif full_space.confirms and not outcome.interrupted:
            stage = ConfirmStage(full_space, name, sweep_path, sweep_uri, filesystem, s3, tracking_uri, parent_run_id)
            outcome = stage.run(outcome, storage_uri, driver_resources, max_concurrent, callbacks, verbose, started)
    except BaseException:
        # Ctrl-C / SIGTERM outside Tune's own handling, or a failure of the sweep itself: the
        # runs must not stay RUNNING (KILLED: --resume re-opens them).
        if tracker is not None:
            tracker.flush_timeout_s = min(tracker.flush_timeout_s, 10.0)
            tracker.finish([], status="KILLED", pending_uri=pending_uri, s3=s3)
        raise
    if tracker is not None:
        if outcome.interrupted:
            # Stopped (Ctrl-C, `ray job stop`): inside the job's grace period, so a short flush.
            tracker.flush_timeout_s = min(tracker.flush_timeout_s, 10.0)
            tracker.finish([], status="KILLED", pending_uri=pending_uri, s3=s3)
        else:
            # a confirmed front is the confirmation runs' (the search's runs of those groups chose it)
            pareto_trials = [r.trial_id for r in outcome.trials
                             if r.group in outcome.pareto and (not outcome.confirmed or r.stage == CONFIRM_DIR)]
            sent = tracker.finish(parent_summary(outcome), ranking_markdown(outcome), pareto_trials,
                                  status="FAILED" if outcome.errored else "FINISHED", pending_uri=pending_uri, s3=s3)
            if sent and tracking_uri and parent_run_id:
                from contavsep_platform.report import log_report

                log_report(tracking_uri, name, parent_run_id)
    return outcome


def _use_console(tuner: Any, verbose: int, callbacks: Sequence[Any]) -> None:
    """A restored Tuner runs with the RunConfig pickled with the sweep: this session's console
    (verbosity, and a live table in place of the silent copy read back) replaces that one's."""
    run_config = tuner._local_tuner.get_run_config()  # private in Ray 2.60; Tuner.restore takes no RunConfig
    run_config.verbose = verbose
    live = [cb for cb in callbacks if isinstance(cb, LiveTable)]
    run_config.callbacks = [*live, *(cb for cb in run_config.callbacks or [] if not isinstance(cb, LiveTable))]


def _outcome(space: SearchSpace, name: str, sweep_uri: str, result_grid: Any, searcher: GroupedOptunaSearch | None,
             parent_run_id: str | None, max_concurrent: int, started: float) -> SweepOutcome:
    rows = _rows(result_grid, space, sweep_uri)
    groups = {r.group for r in rows}
    started_groups_incomplete = any(sum(r.group == g for r in rows) < space.repeats.count for g in groups)
    searcher_done = searcher is None or searcher.exhausted or len(searcher.groups) >= space.num_samples
    interrupted = any(r.status in ("pending", "interrupted") for r in rows) or started_groups_incomplete or (
        len(rows) < space.num_trials and not searcher_done
    )
    notes = []
    leftover = release_placement_groups()
    if leftover:
        notes.append(f"removed {leftover} placement group(s) that ended trials had left reserved")
    if searcher is not None and searcher.exhausted and len(searcher.groups) < space.num_samples:
        notes.append(f"the space holds {len(searcher.groups)} distinct configuration(s); each ran once per repeat"
                     f" (num_samples {space.num_samples})")
    shared = [r.metrics.get(FIRST_STEP_SHARED_KEY) for r in rows]
    if any(v == 1.0 for v in shared):
        trained = sum(1 for v in shared if v == 0.0)
        notes.append(f"shared first steps: {sum(1 for v in shared if v == 1.0)} trial(s) loaded step 0 instead of training it"
                     f" ({trained} trained it; {storage.join(sweep_uri, FIRST_STEPS_DIR)})")
    comparison = comparison_of(rows, space)
    objectives = tuple((o.key, o.mode) for o in space.objectives)
    pareto = tuple(c.config_id for c in pareto_front(comparison.configurations, objectives)) if len(objectives) > 1 else ()
    return SweepOutcome(
        name=name,
        sweep_uri=sweep_uri,
        metric=comparison.metric,
        mode=space.mode,
        trials=rows,
        comparison=comparison,
        interrupted=interrupted,
        wall_seconds=time.perf_counter() - started,
        parent_run_id=parent_run_id,
        max_concurrent=max_concurrent,
        notes=notes,
        objectives=objectives if len(objectives) > 1 else (),
        pareto=pareto,
    )


# ----------------------------------------------------------------------------------------------
# the confirmation stage

CONFIRM_DIR = "confirm"  # <sweep>/confirm/: the confirmation stage's Tune experiment
CONFIRMATION_FILE = "confirmation.json"  # <sweep>/confirmation.json: the stored choice
CONFIRMATION_FORMAT = 1


def choose_configurations(space: SearchSpace, search: Comparison) -> list[Configuration]:
    """What the confirmation stage runs: the best complete configuration of each method by the
    space's selection metric (``search``'s rows); with several objectives also the Pareto set
    over the objectives as selected (best first by the first objective, at most
    ``confirm.max_pareto``), so the confirmed front and every method's row exist."""
    chosen = [row.configuration for row in search.rows]
    if len(space.objectives) > 1:
        objectives = [(o.key, o.mode) for o in space.objectives]
        front = pareto_front(search.configurations, objectives)
        first, mode = objectives[0]
        front.sort(key=lambda c: c.estimate(first).mean, reverse=mode == "max")
        ids = {c.config_id for c in chosen}
        chosen += [c for c in front[: space.confirm.max_pareto] if c.config_id not in ids]
    return chosen


def confirmation_plan(space: SearchSpace, outcome: SweepOutcome) -> dict[str, Any]:
    """The stored choice (:data:`CONFIRMATION_FILE`): the chosen configurations with their
    parameters and the estimate they were chosen on, and the fresh repeats they run on."""
    params_of = {r.group: r.params for r in outcome.trials}
    chosen = choose_configurations(space, outcome.comparison)
    if not chosen:
        raise SweepError(f"no configuration of the search completed all its runs with {space.metric} defined: nothing to"
                         f" confirm (see the trials' errors); start a new --name once that is fixed")
    confirm = space.stage("confirm")
    return {
        "format": CONFIRMATION_FORMAT,
        "selected_by": space.metric,
        "selection": space.selection_text(confirm.repeats.count),
        "repeats": {label: values for label, values in confirm.repeat_members().items()},
        "configurations": [
            {"group": c.config_id, "method": c.method, "params": params_of[c.config_id],
             "chosen_on": _estimate_doc(c.estimate(space.metric_key))}
            for c in chosen
        ],
    }


def _estimate_doc(e: Estimate) -> dict[str, Any]:
    return {"mean": e.mean, "low": e.low, "high": e.high, "n": e.n, "sd": e.sd, "values": list(e.values)}


def confirmation_trials(plan: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One Tune config per chosen configuration and fresh repeat (its group is the search's)."""
    return [{**c["params"], **values, GROUP_KEY: c["group"], REPEAT_KEY: label}
            for c in plan["configurations"] for label, values in plan["repeats"].items()]


def run_confirm_trial(config: dict[str, Any], context: TrialContext) -> None:
    """The confirmation stage's Tune trainable: one grid value holds the trial's parameters."""
    run_trial(config[CONFIRM_TRIAL_KEY], context)


@dataclass
class ConfirmStage:
    """The second stage of a sweep whose space has ``confirm``: the choice is stored first
    (:data:`CONFIRMATION_FILE`, never made again on ``--resume``), then its trials run as their
    own FIFO Tune experiment (``<sweep>/confirm/``, resumable like the search) whose MLflow runs
    nest under one ``confirm`` run; Optuna and ASHA never see them."""

    space: SearchSpace
    name: str
    sweep_path: str  # the search's Tune experiment (Ray's path form)
    sweep_uri: str
    filesystem: Any
    s3: storage.S3Settings | None
    tracking_uri: str | None
    parent_run_id: str | None

    def plan(self, outcome: SweepOutcome) -> dict[str, Any]:
        uri = storage.join(self.sweep_uri, CONFIRMATION_FILE)
        if storage.exists(uri, self.s3):
            return json.loads(storage.read_bytes(uri, self.s3))
        plan = confirmation_plan(self.space, outcome)
        storage.write_bytes_atomic(uri, json.dumps(plan, indent=1, default=str).encode(), self.s3)
        log.info("sweep %s: confirming %d configuration(s) on %d fresh repeat(s) each (%s)", self.name,
                 len(plan["configurations"]), len(plan["repeats"]), uri)
        return plan

    def run(self, search: SweepOutcome, storage_uri: str, driver_resources: dict[str, float], max_concurrent: int,
            callbacks: Sequence[Any], verbose: int, started: float) -> SweepOutcome:
        from ray import tune

        plan = self.plan(search)
        trials = confirmation_trials(plan)
        confirm = self.space.stage("confirm")
        stage_run = None
        if self.tracking_uri and self.parent_run_id:
            from contavsep_platform.tracking import open_stage_run

            # None when MLflow is out: the confirmation trials' runs then nest under the parent
            stage_run = open_stage_run(self.tracking_uri, self.parent_run_id, self.name, CONFIRM_DIR, plan["selection"])
        context = TrialContext(sweep_name=self.name, storage_uri=storage_uri, space=confirm, tracking_uri=self.tracking_uri,
                               parent_run_id=stage_run or self.parent_run_id, stage=CONFIRM_DIR)
        trainable = tune.with_resources(tune.with_parameters(run_confirm_trial, context=context), driver_resources)
        path = f"{self.sweep_path.rstrip('/')}/{CONFIRM_DIR}"
        if tune.Tuner.can_restore(path, storage_filesystem=self.filesystem):
            tuner = tune.Tuner.restore(path, trainable, resume_unfinished=True, resume_errored=True, storage_filesystem=self.filesystem)
            _use_console(tuner, verbose, callbacks)
        else:
            tuner = tune.Tuner(
                trainable,
                param_space={CONFIRM_TRIAL_KEY: tune.grid_search(trials)},
                tune_config=tune.TuneConfig(num_samples=1, max_concurrent_trials=max_concurrent,
                                            trial_name_creator=_trial_name, trial_dirname_creator=_trial_dirname),
                run_config=tune.RunConfig(name=CONFIRM_DIR, storage_path=self.sweep_path, storage_filesystem=self.filesystem,
                                          callbacks=[PlacementGroupReaper(), *callbacks], verbose=verbose),
            )
        rows = _rows(tuner.fit(), confirm, storage.join(self.sweep_uri, CONFIRM_DIR), stage=CONFIRM_DIR)
        release_placement_groups()
        interrupted = len(rows) < len(trials) or any(r.status in ("pending", "interrupted") for r in rows)
        chosen_on = {c["group"]: Estimate(**{**c["chosen_on"], "values": tuple(c["chosen_on"]["values"])})
                     for c in plan["configurations"]}
        comparison = comparison_of(rows, confirm, chosen_on)
        objectives = tuple(zip(published_keys(confirm), (o.mode for o in confirm.objectives)))
        pareto = tuple(c.config_id for c in pareto_front(comparison.configurations, objectives)) if len(objectives) > 1 else ()
        if self.tracking_uri and stage_run is not None:  # a stage run is only opened with tracking
            from contavsep_platform.tracking import end_stage_run

            end_stage_run(self.tracking_uri, stage_run, "KILLED" if interrupted else "FAILED" if any(
                r.status == "error" for r in rows) else "FINISHED")
        return replace(search, trials=[*search.trials, *rows], comparison=comparison, search=search.comparison,
                       confirmed=True, interrupted=interrupted, pareto=pareto,
                       objectives=objectives if len(objectives) > 1 else (), wall_seconds=time.perf_counter() - started)


def ranking_markdown(outcome: SweepOutcome) -> str:
    """The ranking and configurations tables as markdown (parent-run artifact)."""
    from contavsep_platform.artifacts import markdown_table

    parts = [f"# Sweep {outcome.name}: test {outcome.metric} ({outcome.mode})", "",
             f"**Selection: {outcome.selection}.**", "",
             "Means over each configuration's runs (seeds x class orders) with 95 % Student-t intervals;"
             " differences are paired by seed and class order. A difference whose interval contains 0 is within the noise.", ""]
    header, rows = ranking_table(outcome.comparison)
    if rows:
        title = "confirmed configuration per method" if outcome.confirmed else "one configuration per method"
        parts += [f"## Ranking ({title})", "", markdown_table(header, rows), ""]
        parts += [f"- {line}" for line in summary_lines(outcome.comparison)] + [""]
    header, rows = configurations_table(outcome.search or outcome.comparison)
    parts += ["## Configurations of the search" if outcome.confirmed else "## Configurations", "", markdown_table(header, rows), ""]
    if outcome.pareto:
        parts += [f"## Pareto front ({', '.join(f'{m} {d}' for m, d in outcome.objectives)})", "",
                  ", ".join(outcome.pareto), ""]
    return "\n".join(parts)


def error_lines(outcome: SweepOutcome) -> list[str]:
    """One line per errored trial: its id, how far it got, the error, where the full log is."""
    return [f"trial {r.trial_id} ({r.strategy}) failed after {r.steps} step(s): {r.error}; log: {r.error_log or outcome.sweep_uri}"
            for r in outcome.errored]


def print_outcome(outcome: SweepOutcome, out: Any = None, trials_table: bool = True) -> None:
    """The sweep's final console: the trials (unless ``trials_table`` is off: the demo's live
    table showed each already), the ranking, notes and how to resume."""
    out = out or sys.stdout
    configurations = len((outcome.search or outcome.comparison).configurations)
    stages = " (search and confirmation)" if outcome.confirmed else ""
    print(f"\nsweep {outcome.name}: {len(outcome.trials)} trials{stages} of {configurations} configuration(s)"
          f" in {outcome.wall_seconds:.0f} s (at most {outcome.max_concurrent} at once); results under {outcome.sweep_uri}", file=out)
    if trials_table:
        print(format_trials_table(outcome), file=out)
    chosen = f"; chosen on = the {outcome.comparison.select_by} it was chosen by, gap = test minus that" if any(
        r.chosen_on is not None for r in outcome.comparison.rows) else ""
    print(f"\nranking by final test {outcome.metric} ({outcome.mode}; mean ± 95% CI half-width over each method's runs;"
          f" Δ paired by seed and class order{chosen})\nselection: {outcome.selection}", file=out)
    print(format_ranking(outcome) or "no configuration completed all its runs", file=out)
    if outcome.objectives:
        header, rows = configurations_table(outcome.comparison)
        marked = [[*row, "yes" if row[0] in outcome.pareto else ""] for row in rows]
        print(f"\nconfigurations ({', '.join(f'{m} {d}' for m, d in outcome.objectives)}; Pareto = not dominated on the means):", file=out)
        print(_table([[*header, "Pareto"], *marked]), file=out)
    for note in outcome.notes:
        print(f"note: {note}", file=out)
    errored = outcome.errored
    if outcome.interrupted or errored:
        what = "was interrupted" if outcome.interrupted else "has errored trials"
        print(f"\nthe sweep {what}; continue it with: contavsep sweep SPACE.yaml --name {outcome.name} --resume"
              + (" (errored trials restart from their last intact step checkpoint)" if errored else ""), file=out)
