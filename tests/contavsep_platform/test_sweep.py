"""Sweeps: searcher and scheduler wiring, the outcome's ranking, resource arithmetic on a real Ray cluster
with logical GPUs, and a real sweep (Ray Tune + Train V2 + S3 + MLflow) from start to resume."""

from __future__ import annotations

import time
from dataclasses import replace

import optuna
import pytest

from contavsep_platform.pruning import GroupASHA
from contavsep_platform.search import configuration_id
from contavsep_platform.spaces import (
    STRATEGY_KEY,
    Resources,
    load_space,
    parse_space,
    shipped_spaces_dir,
)
from contavsep_platform.sweep import (
    SweepError,
    SweepOutcome,
    TrialRow,
    comparison_of,
    format_ranking,
    format_trials_table,
    make_scheduler,
    make_searcher,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)

SPACE = """\
name: unit
base: {preset: tiny, data.uri: "file:///tmp/none", data.num_steps: 3, data.classes_per_step: 2}
strategies:
  lwf:
    strategy.lambda_dist: {loguniform: [0.1, 3.0]}
  contavsep:
    strategy.lambda_dist: {loguniform: [0.1, 3.0]}
num_samples: 4
"""


def test_searcher_starts_from_the_points_to_evaluate_then_follows_the_space():
    space = parse_space(SPACE + "points_to_evaluate: paper_defaults\n", storage_uri="file:///tmp")
    searcher = make_searcher(space)
    first, second = searcher.suggest("t0"), searcher.suggest("t1")
    assert (first[STRATEGY_KEY], first["strategy.lambda_dist"]) == ("lwf", 0.3)
    assert (second[STRATEGY_KEY], second["strategy.lambda_dist"]) == ("contavsep", 0.3)
    third = searcher.suggest("t2")
    assert third[STRATEGY_KEY] in ("lwf", "contavsep") and 0.1 <= third["strategy.lambda_dist"] <= 3.0


def test_asha_judges_groups_from_the_second_step_and_lets_the_last_step_finish():
    space = parse_space(
        SPACE + "scheduler: {type: asha, grace_period: 2, reduction_factor: 3}\nrepeats: {seeds: 2}\n",
        storage_uri="file:///tmp",
    )
    asha = make_scheduler(space)
    assert isinstance(asha, GroupASHA) and (asha.rungs, asha.max_t, asha.group_size) == ([2], 3, 2)
    fifo = make_scheduler(replace(space, scheduler=replace(space.scheduler, type="fifo")))
    assert type(fifo).__name__ == "FIFOScheduler"


def test_the_outcome_ranks_complete_configurations_over_their_repeats():
    space = parse_space(SPACE + "repeats: {seeds: 2}\n", storage_uri="file:///tmp")

    def row(trial_id, strategy, status, sdr, lam, repeat):
        params = {STRATEGY_KEY: strategy, "strategy.lambda_dist": lam}
        # validation ranks the configurations as test does here (val = test + 1)
        return TrialRow(
            trial_id,
            strategy,
            status,
            3 if status == "complete" else 2,
            params,
            {"sdr": sdr, "sir": sdr + 1, "sar": sdr + 2, "forgetting/sdr": 1.5, "val/sdr": sdr + 1},
            group=configuration_id(space, params),
            repeat=repeat,
        )

    rows = [
        row("a", "lwf", "complete", 3.0, 0.2, "s0-o0"),
        row("b", "lwf", "complete", 5.0, 0.2, "s1-o0"),
        row("c", "lwf", "stopped", 9.0, 0.4, "s0-o0"),
        row("d", "lwf", "complete", 9.0, 0.4, "s1-o0"),
        row("e", "contavsep", "error", 8.0, 1.0, "s0-o0"),
    ]
    comparison = comparison_of(rows, space)
    assert [r.configuration.method for r in comparison.rows] == ["lwf (mem 1)"]  # c/d and e are incomplete groups
    best = comparison.rows[0]
    assert best.estimates["sdr"].mean == 4.0 and best.estimates["sdr"].n == 2
    assert dict(best.configuration.params) == {"strategy.lambda_dist": 0.2}
    outcome = SweepOutcome("s", "file:///x", "sdr", "max", rows, comparison, False, 1.0)
    text = format_ranking(outcome)
    assert "lwf (mem 1)" in text and "4.00 ± " in text and "strategy.lambda_dist=0.2" in text
    assert "s1-o0" in format_trials_table(outcome)


@pytest.fixture
def cli_environment(tmp_path):
    """An empty CONTAVSEP_HOME and no endpoint settings; the CLI exports the endpoints it
    resolved into os.environ, so the whole environment is restored afterwards."""
    import os

    saved = dict(os.environ)
    for name in (
        "CONTAVSEP_STORAGE",
        "MLFLOW_TRACKING_URI",
        "RAY_ADDRESS",
        "CONTAVSEP_S3_ENDPOINT",
        "CONTAVSEP_S3_ACCESS_KEY",
        "CONTAVSEP_S3_SECRET_KEY",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_S3",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
    ):
        os.environ.pop(name, None)
    os.environ["CONTAVSEP_HOME"] = str(tmp_path / "home")
    try:
        yield tmp_path
    finally:
        os.environ.clear()
        os.environ.update(saved)


def test_sweep_command_refuses_bad_input_before_anything_starts(cli_environment, capsys):
    from contavsep_platform.cli import main

    tmp_path = cli_environment
    smoke = str(shipped_spaces_dir() / "smoke.yaml")
    assert main(["sweep", smoke, "--set", "strategy.lamda_dist=0.2"]) == 2
    assert "did you mean 'strategy.lambda_dist'" in capsys.readouterr().err
    missing = f"file://{tmp_path}/no-dataset"
    assert main(["sweep", smoke, "--set", f"data.uri={missing}"]) == 2
    assert f"no dataset at {missing}" in capsys.readouterr().err
    assert main(["sweep", smoke, "--resume"]) == 2
    assert "--resume needs the --name" in capsys.readouterr().err
    assert main(["sweep", str(tmp_path / "nope.yaml")]) == 2
    assert main(["sweep", smoke, "--check", "--num-samples", "5"]) == 0
    out = capsys.readouterr().out
    assert "5 trials of 2 steps" in out and f"data.uri = 'file://{tmp_path}/home/storage/datasets/synth-default'" in out


# ----------------------------------------------------------------------------- real Ray


@pytest.mark.slow
def test_logical_gpus_half_a_gpu_per_trial_runs_four_trials_at_once():
    """2 logical GPUs, trials of 0.5 GPU: the arithmetic says 4, and Tune really runs 4 at once."""
    import ray
    from ray import tune
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    for attempt in range(3):  # Ray's raylet has a fixed 30 s to register; a loaded 2-core box can miss it
        try:
            cluster = Cluster(
                initialize_head=True, head_node_args={"num_cpus": 4, "num_gpus": 2, "include_dashboard": False}
            )
            break
        except Exception as exc:  # noqa: BLE001 - "The current node timed out during startup"
            if attempt == 2 or "timed out during startup" not in str(exc):
                raise
    try:
        ray.init(address=cluster.address, logging_level="WARNING", log_to_driver=False)
        res = Resources(workers=1, cpus=0.4, gpus=0.5, driver_cpus=0.1)
        concurrent = res.concurrent_trials(ray.cluster_resources())
        assert concurrent == 4

        @ray.remote(num_cpus=0)
        class Room:
            def __init__(self):
                self.inside = 0
                self.peak = 0

            def enter(self) -> None:
                self.inside += 1
                self.peak = max(self.peak, self.inside)

            def leave(self) -> None:
                self.inside -= 1

            def peak_seen(self) -> int:
                return self.peak

        room = Room.remote()

        def trial(config: dict) -> None:
            ray.get(room.enter.remote())
            deadline = time.monotonic() + 240
            while ray.get(room.peak_seen.remote()) < 4 and time.monotonic() < deadline:
                time.sleep(0.5)
            peak = ray.get(room.peak_seen.remote())
            ray.get(room.leave.remote())
            tune.report({"peak": peak})

        tuner = tune.Tuner(
            tune.with_resources(trial, {"cpu": res.trial_cpus, "gpu": res.trial_gpus}),
            param_space={"i": tune.grid_search([0, 1, 2, 3, 4, 5])},
            tune_config=tune.TuneConfig(max_concurrent_trials=concurrent),
            run_config=tune.RunConfig(storage_path="/tmp/contavsep-test-gpus", verbose=0),
        )
        results = tuner.fit()
        peaks = sorted(r.metrics["peak"] for r in results)
        assert peaks[-1] == 4  # four trials were inside at the same time, never more
        assert not results.errors
    finally:
        ray.shutdown()
        cluster.shutdown()


@pytest.mark.slow
def test_a_real_sweep_lands_results_checkpoints_and_mlflow_runs_and_resumes(services, s3_dataset):
    """smoke.yaml on local Ray with the local S3 and MLflow servers, then --resume of the
    finished sweep: nothing runs again, no placement group stays reserved."""
    import ray
    from mlflow import MlflowClient

    from contavsep import storage
    from contavsep_platform.settings import service_env
    from contavsep_platform.sweep import connect_ray, job_placement_groups, run_sweep
    from contavsep_platform.trial import trial_uri

    space = load_space(
        shipped_spaces_dir() / "smoke.yaml", storage_uri=services.storage_uri, overrides={"data.uri": s3_dataset}
    )
    env = service_env(services)
    started = connect_ray(None, env) if not ray.is_initialized() else False
    try:
        name = f"sweep-test-{int(time.time())}"
        kwargs = dict(
            storage_uri=services.storage_uri,
            name=name,
            tracking_uri=services.mlflow_tracking_uri,
            s3=services.s3,
            env=env,
            verbose=0,
        )
        outcome = run_sweep(space, **kwargs)
        assert not outcome.interrupted and len(outcome.trials) == space.num_samples == 2
        assert {r.status for r in outcome.trials} <= {"complete", "stopped"}
        complete = [r for r in outcome.trials if r.status == "complete"]
        assert complete, outcome.trials
        assert job_placement_groups() == []

        client = MlflowClient(services.mlflow_tracking_uri)
        parent = client.get_run(outcome.parent_run_id)
        assert parent.data.tags["contavsep.sweep"] == name and parent.info.status == "FINISHED"
        assert parent.data.tags["data_content_hash"]
        children = client.search_runs(
            [parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{outcome.parent_run_id}'"
        )
        assert sorted(c.info.run_name for c in children) == sorted(
            f"{r.strategy}-mem1-{r.trial_id}" for r in outcome.trials
        )
        # the dataset as an MLflow input of the parent and every trial; MLflow's system metrics per trial
        digest = parent.data.tags["data_content_hash"][:12]
        for run in [parent, *children]:
            assert [(d.dataset.name, d.dataset.digest) for d in run.inputs.dataset_inputs] == [
                ("synth-sweep-test", digest)
            ]
        assert all("system/cpu_utilization_percentage" in c.data.metrics for c in children)
        assert (
            client.get_experiment(parent.info.experiment_id).tags["mlflow.experimentKind"] == "custom_model_development"
        )

        for row in outcome.trials:
            # Tune got one result per incremental step (progress of the trial's Tune folder)
            assert row.steps >= 1 and row.metrics["num_steps"] == 2
            # a checkpoint per completed step on S3, where the trial's Train run keeps them
            ckpts = storage.list_dir(trial_uri(services.storage_uri, name, row.trial_id), services.s3)
            assert [c for c in ckpts if c.startswith("step=")] == [f"step={k}" for k in range(row.steps)]
            files = storage.list_dir(
                storage.join(trial_uri(services.storage_uri, name, row.trial_id), f"step={row.steps - 1}"), services.s3
            )
            assert "state.pt" in files and "config.yaml" in files
            # MLflow: per-step metric history with step=k, the sampled params, final artifacts
            child = next(c for c in children if c.data.tags["contavsep.trial"] == row.trial_id)
            history = client.get_metric_history(child.info.run_id, "sdr")
            assert [m.step for m in sorted(history, key=lambda m: m.step)] == list(range(row.steps))
            assert child.data.params["strategy.name"] == row.strategy and child.data.params["preset"] == "tiny"
            if row.status == "complete":
                assert child.data.metrics["final/sdr"] == pytest.approx(row.metrics["sdr"], abs=1e-6)
                artifacts = {a.path for a in client.list_artifacts(child.info.run_id)} | {
                    a.path for a in client.list_artifacts(child.info.run_id, "plots")
                }
                assert {"config.yaml", "plots/R_matrices.png", "plots/step_curves.png"} <= artifacts

        # The experiment (Tune state) is on S3 as well.
        assert any(n.startswith("tune-") for n in storage.list_dir(outcome.sweep_uri, services.s3))

        # Resume the finished sweep: Tune restores it and runs nothing again.
        before = {
            r.trial_id: storage.list_dir(trial_uri(services.storage_uri, name, r.trial_id), services.s3)
            for r in outcome.trials
        }
        again = run_sweep(space, resume=True, **kwargs)
        assert [(r.trial_id, r.status, r.steps) for r in again.trials] == [
            (r.trial_id, r.status, r.steps) for r in outcome.trials
        ]
        assert {
            r.trial_id: storage.list_dir(trial_uri(services.storage_uri, name, r.trial_id), services.s3)
            for r in again.trials
        } == before
        assert again.parent_run_id == outcome.parent_run_id
        assert job_placement_groups() == []

        # Neither a second sweep of the same name nor resuming an unknown one.
        with pytest.raises(SweepError, match="already exists"):
            run_sweep(space, **kwargs)
        with pytest.raises(SweepError, match="no sweep 'nope'"):
            run_sweep(space, **{**kwargs, "name": "nope"}, resume=True)
    finally:
        if started:
            ray.shutdown()


@pytest.mark.slow
def test_sigterm_stops_the_sweep_frees_its_placement_groups_and_resume_finishes_it(
    tmp_path, synth_dataset_factory, monkeypatch
):
    """SIGTERM (what `ray job stop` sends) during a local sweep: Tune stops, no placement group of
    the sweep stays reserved (ray.util.placement_group_table), and --resume completes the trials
    from their step checkpoints."""
    import os
    import signal
    import threading

    import ray

    from contavsep import storage
    from contavsep_platform.sweep import connect_ray, job_placement_groups, run_sweep

    monkeypatch.setenv("CONTAVSEP_HOME", str(tmp_path / "home"))
    data = synth_dataset_factory(classes=4, clips_per_class=(4, 1, 2), seconds=1.6)
    storage_uri = f"file://{tmp_path}/storage"
    space = load_space(
        shipped_spaces_dir() / "smoke.yaml",
        storage_uri=storage_uri,
        overrides={"data.uri": data, "train.iters_per_step": "30"},
    )
    sweep_dir = tmp_path / "storage" / "sweeps" / "stopped"
    started = connect_ray(None, {"CONTAVSEP_HOME": str(tmp_path / "home")}) if not ray.is_initialized() else False
    running = threading.Event()
    sent = threading.Event()

    def stop_after_first_checkpoint() -> None:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and not sent.is_set():
            if running.is_set() and any(p.name == "step=0" for p in sweep_dir.glob("*/step=0")):
                sent.set()
                os.kill(os.getpid(), signal.SIGTERM)
                return
            time.sleep(1)

    watcher = threading.Thread(target=stop_after_first_checkpoint, daemon=True)
    try:
        watcher.start()
        running.set()
        outcome = run_sweep(space, storage_uri=storage_uri, name="stopped", verbose=0)
        running.clear()
        assert sent.is_set() and outcome.interrupted
        assert {r.status for r in outcome.trials} & {"interrupted", "pending"}
        assert job_placement_groups() == []  # nothing of the stopped sweep holds resources
        from ray.util import placement_group_table

        assert all(pg["state"] == "REMOVED" for pg in placement_group_table().values())

        resumed = run_sweep(space, storage_uri=storage_uri, name="stopped", resume=True, verbose=0)
        assert not resumed.interrupted
        assert sorted(r.trial_id for r in resumed.trials) == sorted(r.trial_id for r in outcome.trials)
        assert all(r.status in ("complete", "stopped") for r in resumed.trials)
        for row in resumed.trials:
            checkpoints = [
                n for n in storage.list_dir(f"{storage_uri}/sweeps/stopped/{row.trial_id}") if n.startswith("step=")
            ]
            assert checkpoints == [f"step={k}" for k in range(row.steps)]
        assert job_placement_groups() == []
    finally:
        running.clear()
        sent.set()
        if started:
            ray.shutdown()


@pytest.mark.slow
def test_a_last_step_checkpoint_gives_back_the_result_tune_did_not_get(tmp_path, synth_dataset_factory):
    """A sweep stopped between writing the last step's checkpoint and Tune receiving its result
    resumes into that checkpoint: the trial re-reports the step's scores rebuilt from it."""
    from contavsep.checkpoint import load_checkpoint
    from contavsep.config import make_config
    from contavsep.data.format.reader import open_dataset
    from contavsep.engine import run_sequence
    from contavsep_platform.trial import restored_result, tune_metrics

    data = synth_dataset_factory(classes=4, clips_per_class=(4, 1, 2), seconds=1.6)
    cfg = make_config(
        "tiny",
        {
            "data.uri": data,
            "data.num_steps": 2,
            "data.classes_per_step": 2,
            "train.iters_per_step": 1,
            "train.batch_size": 2,
            "strategy.name": "finetune",
        },
    )
    reported = []

    class Keep:
        def report(self, result, save_checkpoint):
            reported.append(result)
            save_checkpoint(tmp_path / f"step={result.step}")

    run_sequence(cfg, open_dataset(data, cache_dir=tmp_path / "cache"), reporter=Keep())
    last = reported[-1]
    rebuilt = restored_result(load_checkpoint(tmp_path / f"step={last.step}"))
    assert (rebuilt.step, rebuilt.is_last) == (last.step, True) and rebuilt.summary == last.summary
    scores = {
        k: v
        for k, v in last.metrics.items()
        if not k.startswith(("loss/", "time/", "throughput/", "memory/")) and k != "step"
    }
    assert rebuilt.metrics == pytest.approx(scores)
    again = tune_metrics(rebuilt, 2, 0.0, 1.0)
    assert again["step"] == 2 and again["forgetting/sdr"] == pytest.approx(last.summary["forgetting"]["sdr"])


@pytest.mark.slow
def test_a_real_sweep_runs_each_configuration_once_per_seed_and_ranks_groups(
    tmp_path, synth_dataset_factory, monkeypatch
):
    """Repeats through real Ray trials: 3 distinct configurations (fine-tuning has nothing to
    search, LwF two λ values) x 2 seeds = 6 trials although num_samples asks for 5 configurations;
    ASHA judges group means at step 2 only; the ranking stands on complete groups of 2 runs."""
    import ray

    from contavsep_platform.sweep import connect_ray, run_sweep

    monkeypatch.setenv("CONTAVSEP_HOME", str(tmp_path / "home"))
    data = synth_dataset_factory(classes=6, clips_per_class=(4, 1, 2), seconds=1.6)
    storage_uri = f"file://{tmp_path}/storage"
    space = parse_space(
        f'name: repeats\nbase: {{preset: tiny, data.uri: "{data}", data.num_steps: 3, data.classes_per_step: 2,'
        " train.iters_per_step: 2, train.batch_size: 4, eval.windows_per_clip: 1, eval.pairs_per_clip: 1, eval.examples: 0}\n"
        "strategies:\n  finetune: {}\n  lwf:\n    strategy.lambda_dist: {choice: [0.3, 1.0]}\n"
        "num_samples: 5\nrepeats: {seeds: 2}\nsampler: {type: random, seed: 1}\n"
        "scheduler: {type: asha, grace_period: 2, reduction_factor: 2}\n"
        "resources: {workers: 1, cpus: 0.9, driver_cpus: 0.1}\n",
        storage_uri=storage_uri,
    )
    started = connect_ray(None, {"CONTAVSEP_HOME": str(tmp_path / "home")}) if not ray.is_initialized() else False
    try:
        outcome = run_sweep(space, storage_uri=storage_uri, name="repeats", verbose=0)
    finally:
        if started:
            ray.shutdown()
    assert not outcome.interrupted and len(outcome.trials) == 6
    groups: dict[str, list] = {}
    for row in outcome.trials:
        groups.setdefault(row.group, []).append(row)
    assert len(groups) == 3 and any("3 distinct configuration(s)" in n for n in outcome.notes)
    for rows in groups.values():
        assert sorted(r.repeat for r in rows) == ["s0-o0", "s1-o0"]
        assert len({tuple(sorted(r.params.items())) for r in rows}) == 1  # the same configuration on both seeds
        assert {r.status for r in rows} <= {"complete", "stopped"} and all(
            r.steps >= 2 for r in rows
        )  # never judged at step 1
    for ranked in outcome.comparison.rows:
        assert ranked.estimates["sdr"].n == 2 and ranked.configuration.complete
    assert {r.configuration.config_id for r in outcome.comparison.rows} == {
        g for g, rows in groups.items() if all(r.status == "complete" for r in rows)
    }
    # Shared first steps: fine-tuning and LwF train the same step 0 per seed, so the sweep keeps
    # one step-0 state per seed; trials that started after another of their seed had finished
    # loaded it (2 at a time: trials 3..6 start after some trial ended, so at least one did)
    states = sorted((tmp_path / "storage" / "sweeps" / "repeats" / "first-steps").glob("*.pt"))
    assert len(states) == 2
    shared = [r.metrics["first_step/shared"] for r in outcome.trials]
    assert set(shared) <= {0.0, 1.0} and shared.count(1.0) >= 1 and shared.count(0.0) >= 2
    assert any(n.startswith(f"shared first steps: {shared.count(1.0)} trial(s) loaded step 0") for n in outcome.notes)


def test_a_sweep_pickled_before_the_package_split_resumes_through_the_old_module_path():
    # A sweep started before issue 21 has a tuner.pkl naming its trial-name functions and its
    # placement-group callback as contavsep_platform.sweep.<name>; --resume unpickles them.
    # Protocol 2 writes each reference as text ("module\nname\n"): the old ones are today's
    # with the submodule dropped.
    import pickle
    import re

    from contavsep_platform.sweep.names import _trial_dirname, _trial_name
    from contavsep_platform.sweep.ray_cluster import PlacementGroupReaper

    def before_split(obj: object) -> bytes:
        today = pickle.dumps(obj, protocol=2)
        assert re.search(rb"contavsep_platform\.sweep\.\w+\n", today)
        return re.sub(rb"contavsep_platform\.sweep\.\w+\n", b"contavsep_platform.sweep\n", today)

    assert pickle.loads(before_split(_trial_name)) is _trial_name
    assert pickle.loads(before_split(_trial_dirname)) is _trial_dirname
    reaper = pickle.loads(before_split(PlacementGroupReaper(grace_s=2.0)))
    assert type(reaper) is PlacementGroupReaper
