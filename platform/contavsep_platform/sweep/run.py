"""The run of a sweep: ``run_sweep`` (see the package docstring), the search's Tune experiment,
its outcome, and the sweep's MLflow parent run."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from contavsep import storage
from contavsep.first_step import FIRST_STEPS_DIR
from contavsep.first_step import SHARED_KEY as FIRST_STEP_SHARED_KEY
from contavsep_platform.cluster_nodes import check_worker_fits
from contavsep_platform.comparison import pareto_front
from contavsep_platform.live_table import LiveTable
from contavsep_platform.ray_storage import ray_storage
from contavsep_platform.search import GroupedOptunaSearch
from contavsep_platform.spaces import SearchSpace, space_notes
from contavsep_platform.study import StudyJournal, journal_uri
from contavsep_platform.sweep.cluster_watch import ClusterWatch
from contavsep_platform.sweep.confirm import CONFIRM_DIR, ConfirmStage
from contavsep_platform.sweep.console import _console, _use_console
from contavsep_platform.sweep.error import SweepError
from contavsep_platform.sweep.names import _trial_dirname, _trial_name, check_sweep_name, default_sweep_name
from contavsep_platform.sweep.outcome import SweepOutcome, _rows, comparison_of, parent_summary
from contavsep_platform.sweep.ray_cluster import (
    PlacementGroupReaper,
    _cluster_capacity,
    _sigterm_as_interrupt,
    autoscaler_node_types,
    cluster_node_shapes,
    connect_ray,
    release_placement_groups,
)
from contavsep_platform.sweep.resume import SPACE_RECORD, check_resumed_space, space_record
from contavsep_platform.sweep.tables import ranking_markdown
from contavsep_platform.sweep.tune_factories import make_scheduler, make_searcher
from contavsep_platform.sweep_log import note_ray_logs, project_warnings_to
from contavsep_platform.trial import TrialContext, run_trial

log = logging.getLogger("contavsep.sweep")


def _git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=10,
        )
        return out.stdout.strip() if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _open_parent_run(
    space: SearchSpace, name: str, tracking_uri: str | None, manifest: Mapping[str, Any]
) -> tuple[Any, str | None]:
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
    from contavsep.data.format.manifest import read_manifest

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
            stack.enter_context(
                project_warnings_to(live.say if live else lambda line: print(line, file=console, flush=True))
            )
        started_ray = connect_ray(ray_address, dict(env or {}))
        if console is not None and started_ray:
            note_ray_logs(sys.stdout)  # sys.stdout is the log file here
        try:
            with _sigterm_as_interrupt():
                # Quiet, Tune still reports at its default verbosity: into the log, nothing lost.
                return _run(
                    space,
                    name,
                    storage_uri,
                    sweeps_uri,
                    resume,
                    tracking_uri,
                    s3,
                    manifest,
                    [*([live] if live else []), *callbacks],
                    max(verbose, 1),
                    started,
                )
        finally:
            if live is not None:
                live.close()
            if started_ray:
                import ray

                ray.shutdown()


def _run(
    space: SearchSpace,
    name: str,
    storage_uri: str,
    sweeps_uri: str,
    resume: bool,
    tracking_uri: str | None,
    s3: storage.S3Settings | None,
    manifest: Mapping[str, Any],
    callbacks: Sequence[Any],
    verbose: int,
    started: float,
) -> SweepOutcome:
    from ray import tune

    sweeps_path, filesystem = ray_storage(sweeps_uri, s3)
    sweep_path = f"{sweeps_path.rstrip('/')}/{name}"
    exists = tune.Tuner.can_restore(sweep_path, storage_filesystem=filesystem)
    sweep_uri = storage.join(sweeps_uri, name)
    if resume and not exists:
        raise SweepError(f"no sweep '{name}' to resume at {sweep_uri}; check --name (and the storage root)")
    if not resume and exists:
        raise SweepError(
            f"sweep '{name}' already exists at {sweep_uri}; continue it with --resume or pick another --name"
        )
    types = autoscaler_node_types()  # an autoscaling cluster's nodes to come
    cluster = _cluster_capacity(types)
    driver_resources = space.resources.driver_resources(cluster)
    max_concurrent = space.resources.concurrent_trials(cluster)  # refuses a trial the cluster cannot hold
    check_worker_fits(space.resources, cluster_node_shapes(types))  # ... and a worker no node can hold
    if resume and tracking_uri:
        # A previous session's final flush that MLflow missed (outage): send it before anything else.
        from contavsep_platform.tracking import send_all_pending

        send_all_pending(tracking_uri, sweep_uri, s3)

    # Every check passed: only now does the sweep get an MLflow run (a refused sweep leaves none).
    tracker, parent_run_id = _open_parent_run(space, name, tracking_uri, manifest)
    pending_uri = storage.join(
        sweep_uri, "mlflow-pending.json"
    )  # tracking.PENDING_FILE (mlflow is imported only with tracking)
    for note in space_notes(space):
        log.info("sweep %s: %s", name, note)
    full_space, space = space, space.stage("search")  # the search's trials (the stream cut under first_tasks)
    try:
        context = TrialContext(
            sweep_name=name,
            storage_uri=storage_uri,
            space=space,
            tracking_uri=tracking_uri,
            parent_run_id=parent_run_id,
        )
        trainable = tune.with_resources(tune.with_parameters(run_trial, context=context), driver_resources)
        log.info(
            "sweep %s: %d configurations x %d repeats, at most %d trials at once, storage %s",
            name,
            space.num_samples,
            space.repeats.count,
            max_concurrent,
            sweep_uri,
        )
        reaper = PlacementGroupReaper()  # on --resume Tune restores the one pickled with the sweep
        watch = ClusterWatch(started=time.monotonic() - (time.perf_counter() - started))
        callbacks = [*callbacks, watch]
        # The study persists next to Tune's state, named after the sweep (on --resume Tune restores
        # the pickled searcher, which reopens the same study from that journal).
        searcher = None if resume else make_searcher(space, StudyJournal(journal_uri(sweep_uri), name, s3))
        if resume:
            tuner = tune.Tuner.restore(
                sweep_path, trainable, resume_unfinished=True, resume_errored=True, storage_filesystem=filesystem
            )
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
            outcome.notes.append(
                "the search has errored trials: the confirmation stage waits for --resume to retry them"
                " (a choice made now could change with their results)"
            )
        elif full_space.confirms and not outcome.interrupted:
            stage = ConfirmStage(full_space, name, sweep_path, sweep_uri, filesystem, s3, tracking_uri, parent_run_id)
            outcome = stage.run(outcome, storage_uri, driver_resources, max_concurrent, callbacks, verbose, started)
        if any(point.workers for point in watch.history):  # an autoscaling or multi-node cluster
            series = ", ".join(f"{p.at_s:g} s: {p.workers}" for p in watch.history)
            outcome.notes.append(f"cluster: worker nodes over time ({series})")
        if tracker is not None:
            tracker.log_node_counts(watch.history)
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
            pareto_trials = [
                r.trial_id
                for r in outcome.trials
                if r.group in outcome.pareto and (not outcome.confirmed or r.stage == CONFIRM_DIR)
            ]
            sent = tracker.finish(
                parent_summary(outcome),
                ranking_markdown(outcome),
                pareto_trials,
                status="FAILED" if outcome.errored else "FINISHED",
                pending_uri=pending_uri,
                s3=s3,
            )
            if sent and tracking_uri and parent_run_id:
                from contavsep_platform.report import log_report

                log_report(tracking_uri, name, parent_run_id)
    return outcome


def _outcome(
    space: SearchSpace,
    name: str,
    sweep_uri: str,
    result_grid: Any,
    searcher: GroupedOptunaSearch | None,
    parent_run_id: str | None,
    max_concurrent: int,
    started: float,
) -> SweepOutcome:
    rows = _rows(result_grid, space, sweep_uri)
    groups = {r.group for r in rows}
    started_groups_incomplete = any(sum(r.group == g for r in rows) < space.repeats.count for g in groups)
    searcher_done = searcher is None or searcher.exhausted or len(searcher.groups) >= space.num_samples
    interrupted = (
        any(r.status in ("pending", "interrupted") for r in rows)
        or started_groups_incomplete
        or (len(rows) < space.num_trials and not searcher_done)
    )
    notes = []
    leftover = release_placement_groups()
    if leftover:
        notes.append(f"removed {leftover} placement group(s) that ended trials had left reserved")
    if searcher is not None and searcher.exhausted and len(searcher.groups) < space.num_samples:
        notes.append(
            f"the space holds {len(searcher.groups)} distinct configuration(s); each ran once per repeat"
            f" (num_samples {space.num_samples})"
        )
    shared = [r.metrics.get(FIRST_STEP_SHARED_KEY) for r in rows]
    if any(v == 1.0 for v in shared):
        trained = sum(1 for v in shared if v == 0.0)
        notes.append(
            f"shared first steps: {sum(1 for v in shared if v == 1.0)} trial(s) loaded step 0 instead of training it"
            f" ({trained} trained it; {storage.join(sweep_uri, FIRST_STEPS_DIR)})"
        )
    comparison = comparison_of(rows, space)
    objectives = tuple((o.key, o.mode) for o in space.objectives)
    pareto = (
        tuple(c.config_id for c in pareto_front(comparison.configurations, objectives)) if len(objectives) > 1 else ()
    )
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
