"""Faults lose nothing and failures are loud, with real processes (local Ray, the session's MLflow
server with its SQL store, file:// storage).

One small sweep (1 trial, 2 steps, tiny preset) takes a real storage fault: once its ``step=0``
checkpoint is in the trial folder, the path of ``step=1`` is blocked by a file, so Ray Train's
upload of the second checkpoint fails after the step's metrics reached MLflow. With
``max_failures: 0`` the trial ends in an error: `contavsep sweep` must exit 1 and name the trial
and its error log. Before ``--resume`` the blocker becomes what a cut-off upload leaves (a
``step=1`` whose ``state.pt`` is truncated): the resumed trial must skip it, continue from the
intact ``step=0`` (not from scratch) and log each step once in MLflow.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest


def _space(tmp_path: Path, data: str, name: str, extra: str = "") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(
        f"name: {name}\n"
        f'base: {{preset: tiny, data.uri: "{data}", data.num_steps: 2, data.classes_per_step: 2, train.iters_per_step: 40,'
        " train.batch_size: 4, eval.batch_size: 8, eval.examples: 0, eval.windows_per_clip: 1, eval.pairs_per_clip: 1}\n"
        "strategies: {finetune: {}}\n"
        "num_samples: 1\nscheduler: {type: fifo}\nsampler: {type: random, seed: 0}\n"
        "max_failures: 0\n" + (extra or "resources: {workers: 1, cpus: 0.9, gpus: 0, driver_cpus: 0.1}\n")
    )
    return path


def _runs(client, experiment: str, sweep: str) -> list:
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    # children carry the sweep's tag too (the UI's runs-table filter): the parent is the sweep role
    parents = client.search_runs(
        [exp.experiment_id], f"tags.`contavsep.sweep` = '{sweep}' and tags.`contavsep.role` = 'sweep'"
    )
    children = [
        c
        for p in parents
        for c in client.search_runs([exp.experiment_id], f"tags.`mlflow.parentRunId` = '{p.info.run_id}'")
    ]
    return parents + children


@pytest.mark.slow
def test_an_errored_trial_fails_the_sweep_loudly_and_resumes_from_its_last_intact_checkpoint(
    services, ray_local, synth_dataset_factory, tmp_path, monkeypatch, capsys
):
    import json

    from mlflow import MlflowClient

    from contavsep.checkpoint import load_checkpoint
    from contavsep_platform.cli import main

    data = synth_dataset_factory(classes=4, clips_per_class=(4, 1, 2), seconds=1.6)
    monkeypatch.setenv("CONTAVSEP_STORAGE", f"file://{tmp_path}/storage")
    space = _space(tmp_path, data, "faults")
    name = f"faults-{int(time.time())}"
    sweep_dir = tmp_path / "storage" / "sweeps" / name
    blocked: list[Path] = []
    done = threading.Event()

    def block_the_second_checkpoint() -> None:
        while not done.is_set():
            for step0 in sweep_dir.glob("*/step=0"):
                if (step0 / "state.pt").is_file() and (step0 / "config.yaml").is_file():
                    blocker = step0.parent / "step=1"
                    blocker.write_text("not a checkpoint: the storage refuses this path")
                    blocked.append(blocker)
                    return
            time.sleep(0.1)

    watcher = threading.Thread(target=block_the_second_checkpoint, daemon=True)
    watcher.start()
    try:
        status = main(["sweep", str(space), "--name", name, "--quiet"])
    finally:
        done.set()
        watcher.join()
    captured = capsys.readouterr()
    assert blocked, f"the trial finished before its step=0 checkpoint was seen\n{captured.out[-2000:]}"
    trial_dir = blocked[0].parent
    trial_id = trial_dir.name

    # Loud failure: exit 1 (not 0, not 130), one line naming the trial and its error log.
    assert status == 1, captured.out[-3000:] + captured.err[-3000:]
    lines = [line for line in captured.err.splitlines() if f"trial {trial_id}" in line]
    assert len(lines) == 1 and "failed after 1 step(s)" in lines[0], captured.err[-3000:]
    error_log = lines[0].rsplit("log: ", 1)[1]
    assert error_log == f"file://{sweep_dir}/tune-{trial_id}/error.txt" and Path(error_log[len("file://") :]).is_file()
    assert f"--name {name} --resume" in captured.out
    client = MlflowClient(services.mlflow_tracking_uri)
    runs = _runs(client, "faults", name)
    assert len(runs) == 2 and all(r.info.status != "RUNNING" for r in runs)  # parent FAILED, child FAILED
    child = next(r for r in runs if r.data.tags.get("contavsep.role") == "trial")
    assert sorted(m.step for m in client.get_metric_history(child.info.run_id, "sdr")) == [
        0,
        1,
    ]  # step 1 logged, not checkpointed

    # What a fault during the upload of a checkpoint leaves, taken to the worst case: the
    # checkpoint being written is cut short (step=1 with a truncated state) and Ray Train has
    # no record of any checkpoint (its snapshot is written after an upload succeeds: had the fault
    # hit step 0's upload, there would be none), so only the trial folder says what is intact.
    step0_state = (trial_dir / "step=0" / "state.pt").read_bytes()
    (trial_dir / "checkpoint_manager_snapshot.json").unlink()
    blocked[0].unlink()
    (trial_dir / "step=1").mkdir()
    (trial_dir / "step=1" / "state.pt").write_bytes(step0_state[: len(step0_state) // 2])

    status = main(["sweep", str(space), "--name", name, "--resume", "--quiet"])
    captured = capsys.readouterr()
    assert status == 0, captured.out[-3000:] + captured.err[-3000:]
    assert f"{trial_id}" in captured.out and "complete" in captured.out
    # Continued from step=0: that checkpoint was not rewritten, step=1 is a real one now, and
    # Tune saw step 1 once (a restart from scratch would report it twice).
    assert (trial_dir / "step=0" / "state.pt").read_bytes() == step0_state
    assert load_checkpoint(trial_dir / "step=1").step == 1
    results = (sweep_dir / f"tune-{trial_id}" / "result.json").read_text().splitlines()
    assert [json.loads(line)["step"] for line in results] == [1, 2]
    # MLflow: each step once, the runs ended.
    runs = _runs(client, "faults", name)
    assert {r.info.status for r in runs} == {"FINISHED"} and len(runs) == 2
    for key in ("sdr", "sir"):
        assert sorted(m.step for m in client.get_metric_history(child.info.run_id, key)) == [0, 1], key


def test_a_refused_sweep_leaves_no_mlflow_run(
    services, ray_local, synth_dataset_factory, tmp_path, monkeypatch, capsys
):
    """Too many GPUs for the cluster: one error line, exit 2, and no parent run in MLflow."""
    from mlflow import MlflowClient

    from contavsep_platform.cli import main

    data = synth_dataset_factory(classes=4, clips_per_class=(4, 1, 2), seconds=1.6)
    monkeypatch.setenv("CONTAVSEP_STORAGE", f"file://{tmp_path}/storage")
    space = _space(tmp_path, data, "refused", "resources: {workers: 1, cpus: 0.9, gpus: 1, driver_cpus: 0.1}\n")
    name = f"refused-{int(time.time())}"
    assert main(["sweep", str(space), "--name", name, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "needs 1 GPU" in err and len(err.strip().splitlines()) == 1
    assert _runs(MlflowClient(services.mlflow_tracking_uri), "refused", name) == []


def test_a_failed_run_exits_1_with_one_line_and_its_traceback_in_a_file(synth_dataset_factory, tmp_path, capsys):
    """`contavsep run` whose checkpoint folder cannot be created (a file is in its way) fails at
    the first step checkpoint: exit 1, one line naming error.txt, no traceback on the terminal."""
    from contavsep_platform.cli import main

    data = synth_dataset_factory(classes=4, clips_per_class=(4, 1, 2), seconds=1.6)
    out = tmp_path / "out"
    out.mkdir()
    (out / "checkpoints").write_text("in the way")
    status = main(
        [
            "run",
            "--data",
            data,
            "--preset",
            "tiny",
            "--strategy",
            "finetune",
            "--out",
            str(out),
            "--quiet",
            "--set",
            "data.num_steps=2",
            "--set",
            "data.classes_per_step=2",
            "--set",
            "train.iters_per_step=1",
            "--set",
            "train.batch_size=2",
            "--set",
            "eval.examples=0",
        ]
    )
    err = capsys.readouterr().err
    assert status == 1, err
    assert (
        err.count("\n") == 1
        and err.startswith("contavsep run: error: the run failed: FileExistsError")
        and "Traceback" not in err
    )
    assert err.strip().endswith(f"log: {out / 'error.txt'}")
    assert "Traceback" in (out / "error.txt").read_text()
