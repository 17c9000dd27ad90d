"""`contavsep demo` (`make demo`): the whole platform on one machine, end to end.

1. start the local services (S3-compatible server + MLflow; kept if already running);
2. build the synthetic benchmark on the local S3 server if it is not there yet
   (``<storage>/datasets/synth-default``, the same as ``contavsep data synth`` builds);
3. run ``search_spaces/demo.yaml`` on a local Ray: five methods (fine-tuning without and with
   one exemplar per class, LwF and ContAV-Sep with one exemplar, joint training) at the paper's
   hyperparameters, each on 2 seeds (tiny models); every trial is a Ray Train run that
   checkpoints each step to S3 and logs to MLflow;
4. print the ranking (mean ± 95 % CI over the seeds, differences paired by seed, "within noise"
   where the interval contains 0) and where to look: the report command, how to stop the
   services (they keep running so the runs can be browsed) and, last, the MLflow UI links to
   the sweep's runs table (trials by name, sorted by final SDR) and to its parent run.
"""

from __future__ import annotations

import sys
import time


def _say(line: str) -> None:
    print(f"[demo] {line}", flush=True)


def main(verbose: int = 0, progress: bool = True) -> int:
    """Run the demo; ``verbose``/``progress`` set the sweep's console (see ``run_sweep``)."""
    from contavsep import storage
    from contavsep.data.synthetic.synth import SynthConfig, build_synthetic, default_workers
    from contavsep_platform import services
    from contavsep_platform.settings import (
        default_state_dir,
        resolve_endpoints,
        service_env,
    )
    from contavsep_platform.spaces import load_space, shipped_spaces_dir
    from contavsep_platform.sweep import error_lines, print_outcome, run_sweep

    started = time.perf_counter()
    _say("starting the local services (S3-compatible storage, MLflow tracking server)")
    state_dir = default_state_dir()
    services.up(state_dir, echo=_say)
    # The demo is the local services' demo: their state file alone decides (this process's
    # environment may name what was there before they started, e.g. file:// storage).
    endpoints = resolve_endpoints({"CONTAVSEP_HOME": str(state_dir)})
    _say(f"storage {endpoints.storage_uri}  |  MLflow {endpoints.mlflow_tracking_uri or '(off)'}")

    space = load_space(shipped_spaces_dir() / "demo.yaml", storage_uri=endpoints.storage_uri)
    data_uri = str(space.base["data.uri"])
    if storage.parse_uri(endpoints.storage_uri).scheme == "s3":
        storage.ensure_bucket(endpoints.storage_uri, endpoints.s3)
    if storage.exists(storage.join(data_uri, "manifest.json"), endpoints.s3):
        _say(f"synthetic benchmark found at {data_uri}")
    else:
        cfg = SynthConfig()
        total = cfg.classes * sum(cfg.clips_per_class)
        _say(f"building the synthetic benchmark at {data_uri}: {cfg.classes} instruments, {total} clips (once)")
        t0 = time.perf_counter()
        step = max(1, total // 4)  # a few progress lines: the demo's console fits on one screen

        def built(done: int, total: int) -> None:
            if done % step == 0 or done == total:
                _say(f"  {done}/{total} clips")

        build_synthetic(data_uri, cfg, workers=default_workers(), settings=endpoints.s3, progress=built)
        _say(f"  built in {time.perf_counter() - t0:.0f} s")

    _say(
        f"sweep {space.name}: {', '.join(space.strategies)}; {space.num_samples} configurations x {space.repeats.count} seeds"
        f" = {space.num_trials} trials of {space.num_steps} incremental steps ({space.base['preset']} preset) on local Ray"
    )
    outcome = run_sweep(
        space,
        storage_uri=endpoints.storage_uri,
        tracking_uri=endpoints.mlflow_tracking_uri,
        ray_address=endpoints.ray_address,
        s3=endpoints.s3,
        env=service_env(endpoints),
        verbose=verbose,
        progress=progress,
    )
    # The live table showed every trial's last step and status: the demo's console keeps to the ranking.
    print_outcome(outcome, trials_table=not progress)
    wall = time.perf_counter() - started
    print()
    if outcome.errored:
        _say(
            f"FAILED after {wall / 60:.1f} min: {len(outcome.errored)} of {len(outcome.trials)} trials errored (named below)"
        )
    else:
        _say(f"done in {wall / 60:.1f} min")
    if endpoints.mlflow_tracking_uri:
        _say(f"report: contavsep report --sweep {outcome.name}")
    _say(f"checkpoints and Tune state: {outcome.sweep_uri}")
    _say("the services keep running for browsing; stop them with: contavsep services down")
    if endpoints.mlflow_tracking_uri:  # last: the links to open, sorted by final SDR, trials by name
        from contavsep_platform.tracking import sweep_link_lines

        for line in sweep_link_lines(endpoints.mlflow_tracking_uri, outcome.name, outcome.parent_run_id):
            _say(line)
    sys.stdout.flush()
    for line in error_lines(outcome):
        print(f"contavsep demo: error: {line}", file=sys.stderr)
    # the sweep's exit statuses (docs/commands.md "Exit statuses and faults"): a demo whose trials failed did not run
    if outcome.errored:
        return 1
    return 130 if outcome.interrupted else 0
