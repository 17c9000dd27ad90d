"""`contavsep sweep SPACE.yaml`: a Ray Tune + Optuna sweep over strategies and hyperparameters."""

from __future__ import annotations

import argparse
import os
import sys
from typing import TypedDict

EXIT_TRIAL_ERRORED = 1  # some trial ended in an error (named on stderr); --resume retries it
EXIT_INTERRUPTED = 130  # stopped (Ctrl-C, `ray job stop`) before every trial ended; --resume continues it
# Presets with the paper's model size: their GPU-hours are estimated from the measured GPU speed.
PAPER_SIZE_PRESETS = ("paper", "search")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sweep",
        help="run a search space: one Ray Train trial per task sequence, Optuna + ASHA, MLflow tracking",
        description="Run the sweep of a search space (search_spaces/*.yaml) on Ray: local Ray in this process, or the "
        "cluster of RAY_ADDRESS / `contavsep services up --ray` / `ray job submit`. Storage, MLflow and Ray come from "
        "the local services or CONTAVSEP_STORAGE, CONTAVSEP_S3_*, MLFLOW_TRACKING_URI, RAY_ADDRESS.",
    )
    p.add_argument("space", metavar="SPACE.yaml", help="search space file, e.g. search_spaces/smoke.yaml")
    p.add_argument("--name", default=None, help="sweep name (default: <space name>-<date>-<time>); needed by --resume")
    p.add_argument(
        "--num-samples",
        type=int,
        default=None,
        help="number of configurations (default: the space's num_samples); each runs once per repeat",
    )
    p.add_argument(
        "--resume", action="store_true", help="continue the interrupted sweep --name (finished trials are kept)"
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="fix a dotted config key for every trial, e.g. data.uri=s3://bucket/datasets/music21 (repeatable)",
    )
    p.add_argument(
        "--check",
        action="store_true",
        help="validate the space and print the trials' shared settings, what it selects on,"
        " its protocol and (paper-size spaces) the expected GPU-hours; run nothing",
    )
    add_console_flags(p)
    p.set_defaults(func=run)


def add_console_flags(p: argparse.ArgumentParser) -> None:
    """--quiet / --verbose: how much of the sweep the console shows (default: the live table)."""
    console = p.add_mutually_exclusive_group()
    console.add_argument(
        "--quiet",
        action="store_true",
        help="no progress while the sweep runs, only the final tables (Ray and Tune output goes to the sweep's log file)",
    )
    console.add_argument(
        "--verbose",
        action="store_true",
        help="Tune's own progress tables and Ray's messages on the console instead of the live table and the log file",
    )


class ConsoleKwargs(TypedDict):
    """The console keyword arguments of run_sweep (and of the demo's main)."""

    verbose: int
    progress: bool


def console_kwargs(args: argparse.Namespace) -> ConsoleKwargs:
    """run_sweep's console arguments for the flags of :func:`add_console_flags`."""
    return {"verbose": 1 if args.verbose else 0, "progress": not (args.quiet or args.verbose)}


def run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from contavsep.config import parse_overrides
    from contavsep_platform.errors import UserError
    from contavsep_platform.settings import resolve_endpoints, service_env
    from contavsep_platform.spaces import load_space, space_notes, validate_space

    endpoints = resolve_endpoints()
    space = load_space(args.space, storage_uri=endpoints.storage_uri, overrides=parse_overrides(args.overrides))
    if args.num_samples is not None:
        if args.num_samples < 1:
            raise UserError(f"--num-samples must be >= 1, got {args.num_samples}")
        if args.resume:
            raise UserError("--num-samples cannot change a sweep being resumed (Tune keeps its original plan)")
        space = validate_space(replace(space, num_samples=args.num_samples), args.space)
    if args.check:
        objectives = ", ".join(f"{o.metric} ({o.mode})" for o in space.objectives)
        print(
            f"space {space.name}: {len(space.strategies)} strategies, {space.num_samples} configurations x {space.repeats.count}"
            f" repeats ({space.repeats.seeds} seeds x {space.repeats.class_orders} class orders) = {space.num_trials} trials"
            f" of {space.num_steps} steps, objective {objectives}, scheduler {space.scheduler.type}, sampler {space.sampler.type}"
        )
        for key, value in space.base.items():
            print(f"  {key} = {value!r}")
        for name, params in space.strategies.items():
            print(f"  {name}: " + (", ".join(f"{k} ~ {d.describe()}" for k, d in params.items()) or "(no parameters)"))
        for note in space_notes(space):
            print(note)
        res = space.resources
        print(
            f"resources per trial: {res.workers} worker(s) x {res.cpus:g} CPU, {res.gpus:g} GPU each,"
            f" + {res.driver_cpus:g} driver CPU: {res.gpu_sharing()}"
        )
        from contavsep_platform.commands.config import MUSIC21, train_clips_per_class

        # budgets counted on MUSIC-21's training lists (what a paper-size space trains on)
        cfg = space.trial_config({"strategy.name": next(iter(space.strategies))})
        if cfg.preset in PAPER_SIZE_PRESETS:
            from contavsep_platform import gpu_hours

            for line in gpu_hours.describe(space, train_clips_per_class(MUSIC21, cfg)):
                print(line)
        if space.sampler.type == "grid":
            from contavsep_platform.first_step_plan import describe

            for line in describe(space, train_clips_per_class(MUSIC21, cfg)):
                print(line)
        return 0

    from contavsep_platform.settings import check_tracking_uri
    from contavsep_platform.sweep import error_lines, print_outcome, run_sweep

    if endpoints.mlflow_tracking_uri:  # before Ray starts, not when the parent run opens
        check_tracking_uri(endpoints.mlflow_tracking_uri, "MLFLOW_TRACKING_URI")

    env = service_env(endpoints)
    # This process reads datasets and writes Tune's state the way its trials will.
    for key in ("AWS_REQUEST_CHECKSUM_CALCULATION", "AWS_RESPONSE_CHECKSUM_VALIDATION"):
        if key in env:
            os.environ.setdefault(key, env[key])
    outcome = run_sweep(
        space,
        storage_uri=endpoints.storage_uri,
        name=args.name,
        resume=args.resume,
        tracking_uri=endpoints.mlflow_tracking_uri,
        ray_address=endpoints.ray_address,
        s3=endpoints.s3,
        env=env,
        **console_kwargs(args),
    )
    print_outcome(outcome)
    if endpoints.mlflow_tracking_uri:
        from contavsep_platform.tracking import (
            sweep_link_lines,  # imports mlflow: only where tracking is on
        )

        for line in sweep_link_lines(endpoints.mlflow_tracking_uri, outcome.name, outcome.parent_run_id):
            print(line)
    sys.stdout.flush()
    for line in error_lines(outcome):
        print(f"contavsep sweep: error: {line}", file=sys.stderr)
    # Exit statuses (docs/commands.md "Exit statuses and faults"): 1 = a trial errored, 130 = stopped, resumable.
    if outcome.errored:
        return EXIT_TRIAL_ERRORED
    return EXIT_INTERRUPTED if outcome.interrupted else 0
