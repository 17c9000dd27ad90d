"""The sweep report, read back from a real MLflow server that the trackers wrote to."""

from __future__ import annotations

import socket

import matplotlib.image
import pytest

from contavsep.engine import StepResult
from contavsep.metrics import ContinualResults
from contavsep_platform import cli
from contavsep_platform.report import best_per_strategy, load_sweep, searched_keys, step_history, write_report
from contavsep_platform.tracking import SweepTracker, TrialTracker

EXPERIMENT = "report-test"
SWEEP = "report-sweep"


def _results(sdr0: float, sdr1_old: float, sdr1_new: float) -> list[StepResult]:
    """Two steps whose all-seen SDR is exactly known (every source of a task scores the same)."""
    results = ContinualResults(2)
    results.add(0, [0, 0], [sdr0] * 2, [sdr0 + 5] * 2, [sdr0 + 2] * 2)
    results.add(1, [0, 0, 1, 1], [sdr1_old] * 2 + [sdr1_new] * 2, [sdr1_old + 5] * 2 + [sdr1_new + 5] * 2,
                [sdr1_old + 2] * 2 + [sdr1_new + 2] * 2)
    out = []
    for step in range(2):
        row = results.step_summary(step)
        metrics = {k: float(v) for k, v in row.items() if isinstance(v, (int, float)) and v is not None and k != "step"}
        out.append(StepResult(step, metrics, results.summary(step), [], is_last=step == 1))
    return out


# name, strategy, model, memory/class, lambda_ins, (step-0 SDR, step-1 old SDR, step-1 new SDR), complete
TRIALS = [
    ("t_ft_a", "finetune", "iquery", 0, 0.1, (6.0, 1.0, 5.0), True),  # final 3.0
    ("t_ft_b", "finetune", "iquery", 0, 0.1, (6.0, 2.0, 5.0), True),  # final 3.5 (after a restart)
    ("t_cv_a", "contavsep", "iquery", 1, 0.1, (6.0, 5.0, 5.0), True),  # final 5.0
    ("t_cv_b", "contavsep", "iquery", 1, 0.5, (6.0, 3.0, 5.0), True),  # final 4.0
    ("t_cv_stop", "contavsep", "iquery", 1, 0.9, (9.0, 0.0, 0.0), False),  # stopped after step 0 (SDR 9)
    ("t_cv_nomem", "contavsep", "iquery", 0, 0.1, (6.0, 3.4, 5.0), True),  # final 4.2
    ("t_lwf", "lwf", "coseparation", 0, 0.1, (5.0, 0.0, 4.0), True),  # final 2.0
]


def _params(strategy: str, model: str, memory: int, lambda_ins: float) -> dict[str, object]:
    return {"strategy.name": strategy, "model.name": model, "memory.per_class": memory, "strategy.lambda_ins": lambda_ins,
            "train.lr_unet": 0.001, "data.uri": "s3://contavsep/datasets/synth"}


@pytest.fixture(scope="module")
def mlflow_uri(services) -> str:
    """The session's real MLflow server (SQLite store, artifacts proxied to the local S3 server)."""
    assert services.mlflow_tracking_uri
    return services.mlflow_tracking_uri


@pytest.fixture(scope="module")
def logged_sweep(mlflow_uri: str) -> str:
    """The sweep of TRIALS, logged through the trackers as trials would log it."""
    sweep = SweepTracker(mlflow_uri, EXPERIMENT, SWEEP)
    parent = sweep.start("strategies: {}\n", {"contavsep.data_hash": "feedc0de"})
    for name, strategy, model, memory, lam, (s0, s1_old, s1_new), complete in TRIALS:
        steps = _results(s0, s1_old, s1_new)
        trial = TrialTracker(mlflow_uri, EXPERIMENT, parent, name, _params(strategy, model, memory, lam))
        trial.log_step(steps[0])
        if not complete:
            continue  # ASHA stopped it: the worker is gone, nothing more is logged
        if name == "t_ft_b":
            # died after logging step 1 with other numbers, restarted from the step-0 checkpoint
            trial.log_step(_results(s0, -5.0, -5.0)[1])
            trial = TrialTracker(mlflow_uri, EXPERIMENT, parent, name, _params(strategy, model, memory, lam))
        trial.log_step(steps[1])
        trial.log_final(steps[1].summary, "preset: tiny\n")
    sweep.finish([])
    return mlflow_uri


def test_best_trial_per_strategy_ignores_incomplete_trials(logged_sweep):
    sweep = load_sweep(logged_sweep, SWEEP)
    assert sorted(t.name for t in sweep.trials) == sorted(t[0] for t in TRIALS)
    assert sweep.status == "FINISHED" and sweep.tags["contavsep.data_hash"] == "feedc0de"
    stopped = next(t for t in sweep.trials if t.name == "t_cv_stop")
    assert stopped.status == "KILLED" and not stopped.complete and stopped.metrics["sdr"] == 9.0
    best = best_per_strategy(sweep.trials)
    assert list(best) == ["finetune", "lwf", "contavsep"]  # the paper's order
    assert {k: t.name for k, t in best.items()} == {"finetune": "t_ft_b", "lwf": "t_lwf", "contavsep": "t_cv_a"}
    assert best["finetune"].final("sdr") == pytest.approx(3.5)
    assert best["contavsep"].final("forgetting_sdr") == pytest.approx(1.0)
    worst = best_per_strategy(sweep.trials, "final/sdr", "min")
    assert worst["contavsep"].name == "t_cv_b"
    contavsep = [t for t in sweep.trials if t.strategy == "contavsep"]
    assert searched_keys(contavsep) == ["memory.per_class", "strategy.lambda_ins"]  # data.uri is not a hyperparameter


def test_step_history_keeps_the_latest_value_of_a_restarted_step(logged_sweep):
    from mlflow import MlflowClient

    sweep = load_sweep(logged_sweep, SWEEP, experiment=EXPERIMENT)
    restarted = next(t for t in sweep.trials if t.name == "t_ft_b")
    client = MlflowClient(logged_sweep)
    assert len(client.get_metric_history(restarted.run_id, "sdr")) == 3  # step 1 logged twice
    assert step_history(client, restarted.run_id) == [(0, 6.0), (1, 3.5)]


def test_report_tables_and_plots(logged_sweep, tmp_path):
    report = write_report(logged_sweep, SWEEP, tmp_path / "out")
    names = sorted(p.name for p in report.files)
    assert names == ["final_scores.png", "report.md", "step_sdr.png"]
    for path in report.files[1:]:
        assert matplotlib.image.imread(path).shape[0] > 200
    text = (tmp_path / "out" / "report.md").read_text()
    assert text == report.markdown
    lines = text.splitlines()
    assert "7 trials: 6 complete, 1 stopped early, failed or running." in text
    assert "`contavsep.data_hash`: feedc0de" in text and "mlflow.runName" not in text
    best_rows = [line for line in lines if line.startswith("| Fine-tuning | t_ft_b") or line.startswith("| ContAV-Sep | t_cv_a")]
    assert len(best_rows) == 2
    assert best_rows[1].split(" | ")[2:10] == ["iQuery", "1", "5.00", "10.00", "7.00", "1.00", "-1.00", "5.50"]
    assert "memory.per_class=1, strategy.lambda_ins=0.1" in best_rows[1]
    # Table 1 style: column groups separator x memory, best trial per cell
    header = next(line for line in lines if line.startswith("| method |"))
    assert header == ("| method | iQuery w/o memory SDR | SIR | SAR | iQuery w/ memory SDR | SIR | SAR |"
                      " Co-Separation w/o memory SDR | SIR | SAR |")
    row = next(line for line in lines if line.startswith("| ContAV-Sep | 4.20"))
    assert row == "| ContAV-Sep | 4.20 | 9.20 | 6.20 | 5.00 | 10.00 | 7.00 | - | - | - |"
    assert "| Fine-tuning | 3.50 | 8.50 | 5.50 | - | - | - | - | - | - |" in lines
    # per-step SDR of the best trials (Fig. 3 data)
    assert "| ContAV-Sep | 6.00 | 5.00 |" in lines and "| LwF | 5.00 | 2.00 |" in lines
    stopped = next(line for line in lines if line.startswith("| t_cv_stop |"))
    assert stopped == "| t_cv_stop | ContAV-Sep | KILLED | 1 | - | - | memory.per_class=1, strategy.lambda_ins=0.9 |"


def test_report_command(logged_sweep, tmp_path, capsys, monkeypatch):
    out = tmp_path / "cli"
    assert cli.main(["report", "--sweep", SWEEP, "--tracking-uri", logged_sweep, "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert f"report: {out / 'report.md'}" in printed and "| method |" not in printed
    assert (out / "step_sdr.png").is_file()

    assert cli.main(["report", "--sweep", "report-swep", "--tracking-uri", logged_sweep]) == 2
    err = capsys.readouterr().err
    assert "did you mean 'report-sweep'" in err and err.count("\n") == 1

    # without --tracking-uri: the local services (state file), or MLFLOW_TRACKING_URI
    assert cli.main(["report", "--sweep", SWEEP, "--out", str(tmp_path / "state")]) == 0
    assert "| ContAV-Sep | t_cv_a" in capsys.readouterr().out
    monkeypatch.setenv("CONTAVSEP_HOME", str(tmp_path / "no-services"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", logged_sweep)
    assert cli.main(["report", "--sweep", SWEEP, "--out", str(tmp_path / "env"), "--quiet"]) == 0
    capsys.readouterr()

    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert cli.main(["report", "--sweep", SWEEP]) == 2
    assert "no MLflow tracking server configured" in capsys.readouterr().err

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    assert cli.main(["report", "--sweep", SWEEP, "--tracking-uri", f"http://127.0.0.1:{closed}"]) == 2
    err = capsys.readouterr().err
    assert "is unreachable" in err and err.count("\n") == 1 and "Traceback" not in err


def test_report_of_a_sweep_without_complete_trials(tmp_path):
    from contavsep_platform.report import SweepRecord, TrialRecord, build_report

    stopped = TrialRecord(run_id="r1", name="t1", status="KILLED", params={"strategy.name": "ewc"}, metrics={"sdr": 3.0})
    for trials in ((), (stopped,)):
        sweep = SweepRecord(name="empty", tracking_uri="http://127.0.0.1:1", experiment_id="1", parent_run_id="p",
                            status="RUNNING", tags={}, trials=trials)
        report = build_report(sweep, {"r1": [(0, 3.0)]}, tmp_path / str(len(trials)))
        assert [p.name for p in report.files] == ["report.md"]  # nothing to plot
        assert "No trial finished its whole task sequence yet." in report.markdown
        assert "No complete trials." in report.markdown
    assert "| t1 | EWC | KILLED | 1 | - | - | - |" in report.markdown
