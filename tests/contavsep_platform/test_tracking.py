"""MLflow tracking against the real MLflow server of the local services (artifacts on S3): parent/child runs, params, per-step metric
histories, artifacts, restarts that continue their runs, and outages that lose nothing.

Outages are real network conditions: the trackers talk to the real server through a TCP gate
that can refuse connections (server down) or accept and never answer (server hung).
"""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile
import yaml
from mlflow import MlflowClient

from contavsep.config import flat, make_config, to_yaml
from contavsep.engine import Example, StepResult
from contavsep.metrics import ContinualResults
from contavsep_platform.errors import UserError
from contavsep_platform.tracking import (
    EXPERIMENT_KIND_TAG,
    MODEL_TRAINING_KIND,
    PARENT_TAG,
    SweepTracker,
    TrackingUnavailableError,
    TrialTracker,
    dataset_input,
    final_metrics,
    metric_key,
    short_http_requests,
    step_values,
)

LOGGER = "contavsep_platform.tracking"


# ---------------------------------------------------------------------------- helpers


class TcpGate:
    """A TCP forwarder on a fixed local port in front of a real server: ``open`` forwards,
    ``close`` refuses connections (and cuts live ones), ``hang`` accepts and never answers."""

    def __init__(self, target_port: int):
        self.target_port = target_port
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.uri = f"http://127.0.0.1:{self.port}"
        self._listener: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self.mode = "closed"

    def _serve(self, listener: socket.socket, mode: str) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            with self._lock:
                self._conns.append(client)
            if mode == "open":
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
                with self._lock:
                    self._conns.append(upstream)
                for a, b in ((client, upstream), (upstream, client)):
                    threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def _start(self, mode: str) -> None:
        self.close()
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(16)
        self._listener = listener
        self.mode = mode
        threading.Thread(target=self._serve, args=(listener, mode), daemon=True).start()

    def open(self) -> None:
        self._start("open")

    def hang(self) -> None:
        self._start("hang")

    def close(self) -> None:
        if self._listener is not None:
            try:
                self._listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._listener.close()
            self._listener = None
        with self._lock:
            for conn in self._conns:
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                conn.close()
            self._conns.clear()
        self.mode = "closed"


def _sine(freq: float, n: int, sr: int) -> np.ndarray:
    return (0.5 * np.sin(2 * np.pi * freq * np.arange(n) / sr)).astype(np.float32)


def make_step_results(num_steps: int = 2, seed: int = 0) -> list[StepResult]:
    """StepResults as the engine builds them: metrics from ContinualResults, examples at each step."""
    results = ContinualResults(num_steps)
    rng = np.random.default_rng(seed)
    out = []
    for step in range(num_steps):
        tasks = np.repeat(np.arange(step + 1), 4)
        sdr = 5.0 - 1.0 * (step - tasks) + rng.normal(0, 0.2, tasks.size)
        results.add(step, tasks, sdr, sdr + 6.0, sdr + 3.0, rng.normal(0, 0.1, tasks.size))
        row = results.step_summary(step)
        metrics = {k: float(v) for k, v in row.items() if isinstance(v, (int, float)) and v is not None and k != "step"}
        r = results.matrix("sdr")
        metrics.update({f"task_sdr/{j}": float(r[step, j]) for j in range(step + 1)})
        metrics.update({"loss/main": 0.5 / (step + 1), "loss/total": 0.7 / (step + 1), "step": float(step)})
        n, sr = 2048, 11025
        refs = np.stack([_sine(440, n, sr), _sine(880, n, sr)]) / 2
        examples = [
            Example(
                mixture=refs.sum(0),
                references=refs,
                estimates=refs * 0.8,
                class_names=("violin", "acoustic guitar"),
                sdr=(4.0, 3.5),
                sample_rate=sr,
            )
        ]
        out.append(StepResult(step, metrics, results.summary(step), examples, is_last=step + 1 == num_steps))
    return out


def artifact_paths(client: MlflowClient, run_id: str, path: str | None = None) -> list[str]:
    out: list[str] = []
    for item in client.list_artifacts(run_id, path):
        out += artifact_paths(client, run_id, item.path) if item.is_dir else [item.path]
    return sorted(out)


def history(client: MlflowClient, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


# ---------------------------------------------------------------------------- the server


@pytest.fixture(scope="module")
def mlflow_uri(services) -> str:
    """The session's real MLflow server (SQLite store, artifacts proxied to the local S3 server)."""
    assert services.mlflow_tracking_uri
    return services.mlflow_tracking_uri


@pytest.fixture
def gate(mlflow_uri: str):
    g = TcpGate(int(mlflow_uri.rsplit(":", 1)[1]))
    yield g
    g.close()


# ---------------------------------------------------------------------------- tests


def test_sweep_and_trial_land_in_mlflow(mlflow_uri, tmp_path, capsys):
    client = MlflowClient(mlflow_uri)
    sweep = SweepTracker(mlflow_uri, "track-test", "sweep-a")
    space = "strategies:\n  contavsep:\n    strategy.lambda_ins: {loguniform: [0.01, 1.0]}\n"
    parent = sweep.start(space, {"contavsep.data_hash": "abc123", "mlflow.source.git.commit": "deadbeef"})
    assert parent == sweep.parent_run_id and sweep.ui_url().endswith(f"/runs/{parent}?workflowType=machine_learning")

    cfg = make_config(
        "tiny",
        {"strategy.name": "contavsep", "strategy.lambda_ins": 0.25, "data.num_steps": 2, "data.classes_per_step": 2},
    )
    trial = TrialTracker(mlflow_uri, "track-test", parent, "trial_00000", flat(cfg))
    steps = make_step_results(2)
    for result in steps:
        trial.log_step(result)
    trial.log_final(steps[-1].summary, to_yaml(cfg))
    assert trial.pending == 0
    ranking = [
        {
            "rank": 1,
            "method": "contavsep (mem 1)",
            "strategy": "contavsep",
            "memory": 1,
            "configuration": "c0ffee00",
            "sdr": {"mean": 4.5, "ci95": [3.5, 5.5], "n": 3, "sd": 0.4},
            "vs_finetune": {"other": "finetune (mem 1)", "mean": 1.0, "ci95": [0.2, 1.8], "n": 3, "verdict": "better"},
        }
    ]
    sweep.finish(ranking, "# ranking\n", pareto_trials=["trial_00000"])
    assert "View run" not in capsys.readouterr().out  # MLflow's own link printing stays off the sweep's stdout

    run = client.get_run(trial.run_id)
    assert run.info.run_name == "contavsep-mem1-trial_00000" and run.info.status == "FINISHED"
    assert run.data.tags[PARENT_TAG] == parent and run.data.tags["contavsep.strategy"] == "contavsep"
    assert run.data.params == {k: str(v) for k, v in flat(cfg).items()}
    # per-step metrics, step = k
    assert history(client, trial.run_id, "sdr") == [(k, pytest.approx(s.metrics["sdr"])) for k, s in enumerate(steps)]
    assert [s for s, _ in history(client, trial.run_id, "task_sdr/1")] == [1]
    assert [s for s, _ in history(client, trial.run_id, "sdr_old")] == [1]
    assert [s for s, _ in history(client, trial.run_id, "loss/main")] == [0, 1]
    assert history(client, trial.run_id, "forgetting/sdr") == [
        (1, pytest.approx(steps[1].summary["forgetting"]["sdr"]))
    ]
    assert client.get_metric_history(trial.run_id, "step") == []  # the x axis is not a metric
    # final metrics
    summary = steps[-1].summary
    m = run.data.metrics
    assert m["final/sdr"] == pytest.approx(summary["final"]["sdr"])
    assert m["final/sar_old"] == pytest.approx(summary["final"]["sar_old"])
    assert m["final/forgetting_sdr"] == pytest.approx(summary["forgetting"]["sdr"])
    assert m["final/bwt_sir"] == pytest.approx(summary["bwt"]["sir"])
    assert m["final/avg_incremental_sdr"] == pytest.approx(summary["average_incremental"]["sdr"])
    assert [s for s, _ in history(client, trial.run_id, "final/sdr")] == [1]
    # artifacts
    example_dir = "examples/0_violin+acoustic_guitar"
    assert artifact_paths(client, trial.run_id) == sorted(
        [
            "config.yaml",
            "results/R.json",
            "results/summary.json",
            "plots/R_matrices.png",
            "plots/step_curves.png",
            f"{example_dir}/mixture.wav",
            f"{example_dir}/spectrograms.png",
            f"{example_dir}/0_violin_reference.wav",
            f"{example_dir}/0_violin_estimate.wav",
            f"{example_dir}/1_acoustic_guitar_reference.wav",
            f"{example_dir}/1_acoustic_guitar_estimate.wav",
        ]
    )
    local = Path(client.download_artifacts(trial.run_id, "", str(tmp_path)))
    assert json.loads((local / "results" / "R.json").read_text())["R"] == summary["R"]
    assert yaml.safe_load((local / "config.yaml").read_text())["strategy"]["lambda_ins"] == 0.25
    wave, sr = soundfile.read(local / example_dir / "0_violin_estimate.wav")
    assert sr == 11025 and wave.shape == (2048,)

    parent_run = client.get_run(parent)
    assert parent_run.info.status == "FINISHED" and parent_run.info.run_name == "sweep-a"
    assert (
        parent_run.data.tags["contavsep.sweep"] == "sweep-a" and parent_run.data.tags["contavsep.data_hash"] == "abc123"
    )
    assert artifact_paths(client, parent) == ["ranking.json", "ranking.md", "search_space.yaml"]
    # the ranking's estimates as parent-run metrics; the Pareto configuration's child run is tagged
    pm = parent_run.data.metrics
    assert (
        pm["summary/contavsep_mem1/sdr_mean"],
        pm["summary/contavsep_mem1/sdr_ci_low"],
        pm["summary/contavsep_mem1/sdr_n"],
    ) == (4.5, 3.5, 3)
    assert client.get_run(trial.run_id).data.tags["contavsep.pareto"] == "true"
    space_back = Path(client.download_artifacts(parent, "search_space.yaml", str(tmp_path / "p")))
    assert space_back.read_text() == space


def test_restart_and_resume_continue_their_runs(mlflow_uri, caplog):
    client = MlflowClient(mlflow_uri)
    sweep = SweepTracker(mlflow_uri, "track-test", "sweep-resume")
    parent = sweep.start("a: 1\n", {})
    steps = make_step_results(2, seed=1)
    params = {"strategy.name": "lwf", "strategy.lambda_dist": 0.3}
    first = TrialTracker(mlflow_uri, "track-test", parent, "trial_1", params)
    first.log_step(steps[0])
    stopped = TrialTracker(mlflow_uri, "track-test", parent, "trial_2", {"strategy.name": "ewc"})
    stopped.log_step(steps[0])
    # the process died; the trial restarts from its step-0 checkpoint, the sweep is resumed
    again = SweepTracker(mlflow_uri, "track-test", "sweep-resume")
    assert again.start("a: 1\n", {"resumed": "yes"}) == parent
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        restarted = TrialTracker(mlflow_uri, "track-test", parent, "trial_1", {**params, "strategy.lambda_dist": 0.5})
    assert restarted.run_id == first.run_id
    assert "keeps its first values of params strategy.lambda_dist" in caplog.text
    restarted.log_step(steps[1])
    restarted.log_final(steps[1].summary, "x: 1\n")
    again.finish([])

    runs = client.search_runs(
        [client.get_experiment_by_name("track-test").experiment_id], f"tags.`{PARENT_TAG}` = '{parent}'"
    )
    assert sorted(r.info.run_name for r in runs) == ["ewc-trial_2", "lwf-trial_1"]
    assert history(client, first.run_id, "sdr") == [
        (0, pytest.approx(steps[0].metrics["sdr"])),
        (1, pytest.approx(steps[1].metrics["sdr"])),
    ]
    assert client.get_run(first.run_id).data.params["strategy.lambda_dist"] == "0.3"
    assert client.get_run(first.run_id).info.status == "FINISHED"
    # a trial still RUNNING when the sweep ends was stopped (here: never finished)
    assert client.get_run(stopped.run_id).info.status == "KILLED"
    assert client.get_run(parent).data.tags["resumed"] == "yes"
    same_sweep = client.search_runs([runs[0].info.experiment_id], "tags.`contavsep.sweep` = 'sweep-resume'")
    assert sorted(r.data.tags["contavsep.role"] for r in same_sweep) == ["sweep", "trial", "trial"]  # one parent run


def test_outage_buffers_everything_and_sends_it_when_the_server_returns(mlflow_uri, gate, caplog):
    client = MlflowClient(mlflow_uri)
    sweep = SweepTracker(mlflow_uri, "track-test", "sweep-outage")
    parent = sweep.start("a: 1\n", {})
    steps = make_step_results(3, seed=2)
    caplog.set_level(logging.WARNING, logger=LOGGER)

    # the server is unreachable from the start: the run cannot even be created yet
    started = time.monotonic()
    trial = TrialTracker(
        gate.uri, "track-test", parent, "trial_outage", {"strategy.name": "finetune"}, http_timeout_s=2
    )
    trial.log_step(steps[0])
    trial.log_step(steps[1])
    assert time.monotonic() - started < 10  # refused connections fail fast
    assert trial.run_id is None and trial.pending == 3  # open the run, 2 x step metrics: nothing lost
    warnings = [r for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(warnings) == 1 and gate.uri in warnings[0].getMessage()  # one warning per outage
    stamp_before = int(time.time() * 1000)

    gate.open()
    trial.log_step(steps[2])
    assert trial.pending == 0 and trial.run_id is not None
    assert any("reachable again" in r.getMessage() for r in caplog.records)
    sdr = client.get_metric_history(trial.run_id, "sdr")
    assert sorted((m.step, m.value) for m in sdr) == [(k, pytest.approx(s.metrics["sdr"])) for k, s in enumerate(steps)]
    # buffered points keep the time they were measured, not the time they were sent
    assert all(m.timestamp < stamp_before for m in sdr if m.step < 2)
    assert client.get_run(trial.run_id).data.params == {"strategy.name": "finetune"}

    # the server goes away again just before the end, and comes back while log_final waits
    gate.close()
    threading.Timer(3.0, gate.open).start()
    trial.log_final(steps[2].summary, "x: 1\n")
    assert trial.pending == 0
    run = client.get_run(trial.run_id)
    assert run.info.status == "FINISHED" and "final/sdr" in run.data.metrics
    assert "results/R.json" in artifact_paths(client, trial.run_id)


def test_hung_server_costs_a_bounded_time_and_never_raises(mlflow_uri, gate, caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER)
    gate.hang()
    steps = make_step_results(2, seed=3)
    started = time.monotonic()
    trial = TrialTracker(
        gate.uri,
        "track-test",
        None,
        "trial_hung",
        {"strategy.name": "ewc"},
        http_timeout_s=1,
        max_retries=0,
        flush_timeout_s=1.0,
    )
    trial.log_step(steps[0])
    trial.log_final(steps[1].summary, "x: 1\n")
    elapsed = time.monotonic() - started
    # one request per call while the server is out (~1 s timeout each) plus log_final's bounded
    # wait: ~4 s, far from MLflow's default of 120 s x 7 retries per request (slack for busy CI)
    assert elapsed < 30, elapsed
    assert trial.pending > 0 and trial.run_id is None
    messages = [r.getMessage() for r in caplog.records]
    assert any("stayed unreachable" in m and "not logged" in m for m in messages)


def test_sweep_start_without_a_server_is_one_clear_error(gate):
    sweep = SweepTracker(gate.uri, "track-test", "sweep-nowhere", connect_timeout_s=1.0)
    with pytest.raises(TrackingUnavailableError, match="is unreachable") as info:
        sweep.start("a: 1\n", {})
    assert isinstance(info.value, UserError) and gate.uri in str(info.value)
    assert "contavsep services up" in str(info.value)


def test_disabled_tracking_does_nothing():
    sweep = SweepTracker(None, "track-test", "sweep-off")
    assert sweep.start("a: 1\n", {}) is None and not sweep.enabled and sweep.ui_url() is None
    trial = TrialTracker(None, "track-test", None, "t", {"a": 1})
    for result in make_step_results(1):
        trial.log_step(result)
    trial.log_final(make_step_results(1)[0].summary, "")
    sweep.finish([])
    assert trial.run_id is None and trial.pending == 0


def test_http_limits_are_scoped_and_respect_user_settings(monkeypatch):
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_TIMEOUT", raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "4")
    with short_http_requests(3, 0):
        with short_http_requests(3, 0):  # nested / concurrent users share the setting
            assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "3"
        assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "3"
        assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "4"  # the user's value wins
    assert "MLFLOW_HTTP_REQUEST_TIMEOUT" not in os.environ
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "4"


def test_final_metric_names_and_values():
    summary = make_step_results(2)[-1].summary
    m = final_metrics(summary)
    assert m["final/sdr"] == summary["final"]["sdr"]
    assert m["final/forgetting_sar"] == summary["forgetting"]["sar"]
    assert m["final/avg_incremental_sir"] == summary["average_incremental"]["sir"]
    assert m["final/skipped"] == 0.0 and "final/step" not in m
    assert all(isinstance(v, float) and math.isfinite(v) for v in m.values())
    one_step = make_step_results(1)[0].summary
    assert "final/forgetting_sdr" not in final_metrics(one_step)  # undefined after one step
    assert metric_key("task_sdr/0") == "task_sdr/0" and metric_key("loss(main)") == "loss_main_"


def test_mlflow_gets_every_value_tune_gets_with_a_step_under_the_same_name():
    # (issue 21: average_incremental/* reached Tune but not MLflow's per-step metrics)
    from contavsep_platform.trial import NUM_STEPS_KEY, STEP_KEY, tune_metrics

    for result in make_step_results(3):
        tune = tune_metrics(result, 3, 1.0, 2.0)
        tune_counters = {STEP_KEY, NUM_STEPS_KEY, "time/engine_s", "time/worker_s"}
        mlflow = step_values(result)
        assert set(tune) - tune_counters == set(mlflow)
        assert all(mlflow[k] == tune[k] for k in mlflow)
        if result.step >= 1:
            assert {"average_incremental/sdr", "forgetting/sdr", "bwt/sdr"} <= set(mlflow)


@pytest.mark.slow
def test_a_real_engine_run_is_tracked(mlflow_uri, synth_dataset_factory, tmp_path):
    """The engine's own StepResults (not hand-built ones) go through the tracker unchanged."""
    from contavsep.data.format.reader import open_dataset
    from contavsep.engine import run_sequence

    uri = synth_dataset_factory(classes=4, clips_per_class=(4, 2, 2), seconds=1.6, seed=11)
    cfg = make_config(
        "tiny",
        {
            "data.classes_per_step": 2,
            "data.num_steps": 2,
            "train.iters_per_step": 3,
            "train.batch_size": 4,
            "memory.per_class": 1,
            "strategy.name": "finetune",
            "data.uri": uri,
        },
    )
    trial = TrialTracker(mlflow_uri, "track-test", None, "trial_engine", flat(cfg))

    class Reporter:
        def report(self, result, save_checkpoint):
            trial.log_step(result)

    summary = run_sequence(cfg, open_dataset(uri, cache_dir=tmp_path / "cache"), reporter=Reporter())
    trial.log_final(summary, to_yaml(cfg))
    client = MlflowClient(mlflow_uri)
    run = client.get_run(trial.run_id)
    assert run.info.status == "FINISHED" and trial.pending == 0
    assert run.data.metrics["final/sdr"] == pytest.approx(summary["final"]["sdr"])
    assert [s for s, _ in history(client, trial.run_id, "task_sdr/1")] == [1]
    assert [s for s, _ in history(client, trial.run_id, "time/train_s")] == [0, 1]
    paths = artifact_paths(client, trial.run_id)
    assert {"config.yaml", "results/R.json", "plots/R_matrices.png", "plots/step_curves.png"} <= set(paths)
    assert sum(p.startswith("examples/") and p.endswith(".wav") for p in paths) == 2 * 5  # 2 examples x (mix + 2 x 2)


def test_a_final_flush_that_outlasts_the_wait_is_kept_in_storage_and_sent_later(
    mlflow_uri, gate, caplog, tmp_path, monkeypatch, capsys
):
    """MLflow goes away at the very end of a sweep for longer than the final flush waits: the
    parent's ranking, summary metrics and status and a trial's final results are written to the
    sweep's storage and sent by send_all_pending (what `--resume` and `report` call) once it is
    back, each metric point once; the outage costs one warning, no urllib3 retry lines."""
    from contavsep_platform import cli
    from contavsep_platform.tracking import PENDING_FILE, send_all_pending

    client = MlflowClient(mlflow_uri)
    sweep_uri = f"file://{tmp_path}/sweeps/sweep-spooled"
    steps = make_step_results(2, seed=4)
    gate.open()
    sweep = SweepTracker(gate.uri, "track-test", "sweep-spooled", flush_timeout_s=1.0)
    parent = sweep.start("a: 1\n", {})
    trial = TrialTracker(
        gate.uri,
        "track-test",
        parent,
        "trial_spooled",
        {"strategy.name": "finetune"},
        flush_timeout_s=1.0,
        pending_uri=f"{sweep_uri}/trial_spooled/{PENDING_FILE}",
    )
    for step in steps:
        trial.log_step(step)
    ranking = [
        {"rank": 1, "strategy": "finetune", "memory": 0, "sdr": {"mean": 4.0, "ci95": [3.0, 5.0], "n": 2, "sd": 0.5}}
    ]

    caplog.set_level(logging.INFO)
    gate.close()  # the server is down for the final flush
    trial.log_final(steps[-1].summary, "x: 1\n")
    assert sweep.finish(ranking, "# ranking\n", pending_uri=f"{sweep_uri}/{PENDING_FILE}") is False
    assert (tmp_path / "sweeps/sweep-spooled" / PENDING_FILE).is_file()
    assert (tmp_path / "sweeps/sweep-spooled/trial_spooled" / PENDING_FILE).is_file()
    assert client.get_run(parent).info.status == "RUNNING" and client.get_run(trial.run_id).info.status == "RUNNING"
    messages = [r.getMessage() for r in caplog.records]
    assert not [m for m in messages if m.startswith("Retrying (")], messages  # urllib3's per-request lines
    assert sum("is unreachable" in m for m in messages) == 2  # one per tracker (each has its own outbox)

    assert send_all_pending(gate.uri, sweep_uri, timeout_s=1.0) == (0, 2)  # still down: both kept
    gate.open()
    # `contavsep report` sends them before reading the sweep back
    monkeypatch.setenv("CONTAVSEP_STORAGE", f"file://{tmp_path}")
    assert (
        cli.main(
            [
                "report",
                "--sweep",
                "sweep-spooled",
                "--tracking-uri",
                gate.uri,
                "--out",
                str(tmp_path / "report"),
                "--quiet",
            ]
        )
        == 0
    )
    assert "sent 2 final flush(es) of sweep sweep-spooled" in capsys.readouterr().err
    assert send_all_pending(gate.uri, sweep_uri) == (0, 0)  # sent files are gone
    run = client.get_run(parent)
    assert run.info.status == "FINISHED"
    assert (
        run.data.metrics["summary/finetune_mem0/sdr_mean"] == 4.0
        and run.data.metrics["summary/finetune_mem0/sdr_n"] == 2
    )
    assert {"ranking.json", "ranking.md"} <= {a.path for a in client.list_artifacts(parent)}
    child = client.get_run(trial.run_id)
    assert child.info.status == "FINISHED" and "final/sdr" in child.data.metrics
    assert "plots/R_matrices.png" in artifact_paths(client, trial.run_id)
    assert len(client.get_metric_history(parent, "summary/finetune_mem0/sdr_mean")) == 1
    assert [m.step for m in client.get_metric_history(trial.run_id, "final/sdr")] == [1]


def test_model_training_experiment_named_trials_dataset_lineage_and_system_metrics(mlflow_uri):
    """What the MLflow UI needs to open on the comparison: a model-training experiment (also one
    a sweep reuses), child runs named by strategy, memory and trial, the dataset as an MLflow
    input of parent and children (once, also after a restart), MLflow's system metrics of a
    trial, and links to the sweep's runs table and parent run."""
    from contavsep_platform.tracking import sweep_link_lines

    client = MlflowClient(mlflow_uri)
    old = client.create_experiment("track-kind-old")  # made before this version, without a kind
    chosen = client.create_experiment("track-kind-genai", tags={EXPERIMENT_KIND_TAG: "genai_development"})
    manifest = {
        "content_hash": "c0ffee" * 10 + "abcd",
        "classes": ["a", "b", "c"],
        "totals": {"train": 12, "val": 3, "test": 6},
        "audio": {"sample_rate": 11025},
        "extractors": {
            "object": {"name": "synthetic-clip-prototype", "revision": "3"},
            "motion": {"name": "facebook/vjepa2", "revision": "main", "commit": "9a8b7c"},
        },
    }
    dataset = dataset_input("s3://bucket/datasets/synth-default/", manifest)

    for name in ("track-kind-new", "track-kind-old", "track-kind-genai"):
        sweep = SweepTracker(mlflow_uri, name, f"sweep-{name}")
        parent = sweep.start("a: 1\n", {}, dataset)
    assert client.get_experiment_by_name("track-kind-new").tags[EXPERIMENT_KIND_TAG] == MODEL_TRAINING_KIND
    assert client.get_experiment(old).tags[EXPERIMENT_KIND_TAG] == MODEL_TRAINING_KIND
    assert client.get_experiment(chosen).tags[EXPERIMENT_KIND_TAG] == "genai_development"  # a person's choice stays

    sweep = SweepTracker(mlflow_uri, "track-kind-new", "sweep-lineage")
    parent = sweep.start("a: 1\n", {}, dataset)
    params = {"strategy.name": "contavsep", "memory.per_class": 2, "strategy.lambda_ins": 0.1}
    trial = TrialTracker(
        mlflow_uri, "track-kind-new", parent, "41366ad1", params, dataset=dataset, system_metrics_interval_s=10.0
    )
    steps = make_step_results(2, seed=5)
    trial.log_step(steps[0])
    trial.close("FAILED")  # what a Train worker does when the step fails
    # the trial restarts (Train retry): the run is found by its trial tag, the dataset is not logged twice
    again = TrialTracker(
        mlflow_uri, "track-kind-new", parent, "41366ad1", params, dataset=dataset, system_metrics_interval_s=10.0
    )
    assert again.run_id == trial.run_id
    again.log_step(steps[1])
    again.log_final(steps[1].summary, "x: 1\n")
    sweep.finish([])
    assert again.pending == 0 and again._system is None and trial._system is None  # samplers stopped with their runs
    assert client.get_run(again.run_id).info.status == "FINISHED"

    run = client.get_run(again.run_id)
    assert run.info.run_name == "contavsep-mem2-41366ad1"
    assert run.data.tags["contavsep.sweep"] == "sweep-lineage" and run.data.tags["contavsep.trial"] == "41366ad1"
    for run_id in (parent, again.run_id):
        inputs = client.get_run(run_id).inputs.dataset_inputs
        assert len(inputs) == 1, inputs
        ds, tags = inputs[0].dataset, {t.key: t.value for t in inputs[0].tags}
        assert (ds.name, ds.digest, ds.source_type) == ("synth-default", manifest["content_hash"][:12], "s3")
        assert json.loads(ds.source) == {"uri": "s3://bucket/datasets/synth-default"}
        assert json.loads(ds.profile)["content_hash"] == manifest["content_hash"]
        assert tags == {
            "mlflow.data.context": "train",
            "contavsep.content_hash": manifest["content_hash"],
            "contavsep.extractor.object": "synthetic-clip-prototype@3",
            "contavsep.extractor.motion": "facebook/vjepa2@9a8b7c",
        }
    # MLflow's own system metrics (names of its system-metrics tab): one point per attempt at least,
    # their steps (seconds since the run started) never going back
    cpu = sorted(
        client.get_metric_history(again.run_id, "system/cpu_utilization_percentage"), key=lambda m: m.timestamp
    )
    assert len(cpu) >= 2 and all(0 <= m.value <= 100 for m in cpu)
    assert [m.step for m in cpu] == sorted(m.step for m in cpu)
    assert {"system/system_memory_usage_megabytes", "system/disk_usage_percentage"} <= set(run.data.metrics)

    experiment = run.info.experiment_id
    runs_line, parent_line = sweep_link_lines(mlflow_uri, "sweep-lineage", parent)
    assert runs_line.endswith(
        f"{mlflow_uri}/#/experiments/{experiment}/runs?workflowType=machine_learning"
        "&searchFilter=tags.%60contavsep.sweep%60%20%3D%20%27sweep-lineage%27"
        "&orderByKey=metrics.%60final%2Fsdr%60&orderByAsc=false"
    )
    assert parent_line.endswith(f"{mlflow_uri}/#/experiments/{experiment}/runs/{parent}?workflowType=machine_learning")
    assert sweep.link_lines() == [runs_line, parent_line]
    assert sweep_link_lines(None, "sweep-lineage", parent) == []
