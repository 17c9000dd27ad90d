"""The sweep report, read back from a real MLflow server that the trackers wrote to.

The logged sweep: four configurations x three seeds whose final values are chosen by hand, one
configuration stopped after its first run's first step, one run logged twice (the same
configuration and seed: counted once) and one run restarted mid-way. The expected numbers below
are computed here from those values with the t quantile, independently of comparison.py.
"""

from __future__ import annotations

import math
import socket
import time

import matplotlib.image
import pytest
from mlflow import MlflowClient
from mlflow.entities import Metric
from scipy import stats

from contavsep.engine import StepResult
from contavsep.metrics import ContinualResults
from contavsep_platform import cli
from contavsep_platform.errors import UserError
from contavsep_platform.report import (
    SweepRecord,
    TrialRecord,
    build_report,
    comparison_name,
    load_sweep,
    run_records,
    space_info,
    step_history,
    write_report,
)
from contavsep_platform.tracking import SweepTracker, TrialTracker

EXPERIMENT = "report-test"
SWEEP = "report-sweep"
SPACE_YAML = """\
name: report-test
strategies:
  finetune: {}
  lwf: {}
  contavsep: {strategy.lambda_ins: {choice: [0.1, 0.5, 0.9]}}
objectives:
  - {metric: sdr, mode: max}
  - {metric: forgetting/sdr, mode: min}
repeats: {seeds: 3, class_orders: 1}
"""


def _results(sdr0: float, sdr1_old: float, sdr1_new: float) -> list[StepResult]:
    """Two steps whose all-seen SDR is exactly known (every source of a task scores the same):
    final SDR = (old + new) / 2, SIR = SDR + 5, SAR = SDR + 2, forgetting = sdr0 - old."""
    results = ContinualResults(2)
    results.add(0, [0, 0], [sdr0] * 2, [sdr0 + 5] * 2, [sdr0 + 2] * 2)
    results.add(
        1,
        [0, 0, 1, 1],
        [sdr1_old] * 2 + [sdr1_new] * 2,
        [sdr1_old + 5] * 2 + [sdr1_new + 5] * 2,
        [sdr1_old + 2] * 2 + [sdr1_new + 2] * 2,
    )
    out = []
    for step in range(2):
        row = results.step_summary(step)
        metrics = {k: float(v) for k, v in row.items() if isinstance(v, (int, float)) and v is not None and k != "step"}
        out.append(StepResult(step, metrics, results.summary(step), [], is_last=step == 1))
    return out


# Per configuration: strategy, model, memory/class, lambda_ins, step-0 SDR, step-1 new-class SDR,
# and per seed 0, 1, 2 the step-1 old-class SDR (None: no such run).
CONFIGS = {
    "ft": ("finetune", "iquery", 0, 0.1, 6.0, 5.0, (1.0, 2.0, 3.0)),  # final SDR 3.0 3.5 4.0, forgetting 5 4 3
    "cv1": ("contavsep", "iquery", 1, 0.1, 6.0, 5.0, (5.0, 3.0, 7.0)),  # final 5.0 4.0 6.0, forgetting 1 3 -1
    "cv5": ("contavsep", "iquery", 1, 0.5, 6.0, 5.0, (3.0, 1.0, 5.0)),  # final 4.0 3.0 5.0, forgetting 3 5 1
    "lwf": ("lwf", "coseparation", 0, 0.1, 1.5, 4.0, (0.0, 1.0, 1.8)),  # final 2.0 2.5 2.9, forgetting 1.5 .5 -.3
}
FINAL_SDR = {"ft": [3.0, 3.5, 4.0], "cv1": [5.0, 4.0, 6.0], "cv5": [4.0, 3.0, 5.0], "lwf": [2.0, 2.5, 2.9]}
FORGETTING = {"ft": [5.0, 4.0, 3.0], "cv1": [1.0, 3.0, -1.0], "cv5": [3.0, 5.0, 1.0], "lwf": [1.5, 0.5, -0.3]}


def _params(
    strategy: str, model: str, memory: int, lambda_ins: float, seed: int, device: str = "cpu"
) -> dict[str, object]:
    return {
        "strategy.name": strategy,
        "model.name": model,
        "memory.per_class": memory,
        "strategy.lambda_ins": lambda_ins,
        "train.lr_unet": 0.001,
        "train.seed": seed,
        "data.seed": 0,
        "data.shuffle_classes": False,
        "data.uri": "s3://contavsep/datasets/synth",
        "train.device": device,
    }


def _ci(values: list[float]) -> tuple[float, float]:
    """Mean and 95 % t-interval half-width, by hand."""
    n = len(values)
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return mean, stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n)


def _text(values: list[float]) -> str:
    mean, half = _ci(values)
    return f"{mean:.2f} ± {half:.2f}"


def _cell(values: list[float]) -> str:
    return f"{_text(values)} ({len(values)})"


def _diff(a: list[float], b: list[float]) -> list[float]:
    return [x - y for x, y in zip(a, b)]


@pytest.fixture(scope="module")
def mlflow_uri(services) -> str:
    """The session's real MLflow server (SQLite store, artifacts proxied to the local S3 server)."""
    assert services.mlflow_tracking_uri
    return services.mlflow_tracking_uri


def _log(uri: str, parent: str, name: str, params: dict[str, object], steps: list[StepResult]) -> TrialTracker:
    trial = TrialTracker(uri, EXPERIMENT, parent, name, params)
    for step in steps:
        trial.log_step(step)
    trial.log_final(steps[-1].summary, "preset: tiny\n")
    return trial


@pytest.fixture(scope="module")
def logged_sweep(mlflow_uri: str) -> str:
    """The sweep of CONFIGS, logged through the trackers as trials would log it."""
    sweep = SweepTracker(mlflow_uri, EXPERIMENT, SWEEP)
    parent = sweep.start(SPACE_YAML, {"contavsep.data_hash": "feedc0de"})
    for key, (strategy, model, memory, lam, s0, new, olds) in CONFIGS.items():
        for seed, old in enumerate(olds):
            # the device differs between runs of one configuration: bookkeeping, not a hyperparameter
            params = _params(strategy, model, memory, lam, seed, device="cuda" if seed == 2 else "cpu")
            name = f"t_{key}_s{seed}"
            if name == "t_ft_s1":
                # died after logging step 1 with other numbers, restarted from the step-0 checkpoint;
                # the trackers log a step once, so the first attempt's point is written the way
                # runs logged before that look (the report must still read them right)
                died_at = int(time.time() * 1000)
                trial = TrialTracker(mlflow_uri, EXPERIMENT, parent, name, params)
                trial.log_step(_results(s0, old, new)[0])
                _log(mlflow_uri, parent, name, params, _results(s0, old, new)[1:])
                MlflowClient(mlflow_uri).log_batch(trial.run_id, metrics=[Metric("sdr", -5.0, died_at, 1)])
                continue
            _log(mlflow_uri, parent, name, params, _results(s0, old, new))
    # the same configuration and seed as t_ft_s0 once more (it must not count twice)
    _log(mlflow_uri, parent, "t_ft_s0_again", _params("finetune", "iquery", 0, 0.1, 0), _results(6.0, 15.0, 5.0))
    # ASHA stopped this configuration after its first run's first step: the worker is gone
    TrialTracker(mlflow_uri, EXPERIMENT, parent, "t_cv9_s0", _params("contavsep", "iquery", 1, 0.9, 0)).log_step(
        _results(9.0, 0.0, 0.0)[0]
    )
    sweep.finish([])
    return mlflow_uri


def test_runs_become_configurations_and_repeats(logged_sweep):
    sweep = load_sweep(logged_sweep, SWEEP)
    assert len(sweep.trials) == 14 and sweep.status == "FINISHED" and sweep.tags["contavsep.data_hash"] == "feedc0de"
    assert sweep.space_text == SPACE_YAML
    # bare names in a space are measured on validation (the split a sweep selects on)
    assert space_info(sweep.space_text).objectives == (("val/sdr", "max"), ("val/forgetting/sdr", "min"))
    stopped = next(t for t in sweep.trials if t.name == "t_cv9_s0")
    assert stopped.status == "KILLED" and not stopped.complete and stopped.metrics["sdr"] == 9.0
    table = run_records(sweep.trials)
    by_name = {t.run_id: t.name for t in sweep.trials}
    assert sorted(by_name[r] for r in table.duplicates) == ["t_ft_s0_again"]  # one run per configuration and seed
    records = {by_name[r.run_id]: r for r in table.records}
    # seeds (and the device) differ within a configuration, the searched lambda between them
    assert len({records[f"t_cv1_s{s}"].config_id for s in range(3)}) == 1
    assert records["t_cv1_s0"].config_id != records["t_cv5_s0"].config_id
    assert [records[f"t_cv1_s{s}"].repeat for s in range(3)] == ["seed0-order0", "seed1-order0", "seed2-order0"]
    assert records["t_cv5_s2"].params == {"strategy.lambda_ins": 0.5}  # searched values only
    assert records["t_ft_s1"].params == {}
    cv = records["t_cv1_s2"]
    assert cv.complete and cv.memory == 1 and cv.strategy == "contavsep"
    assert cv.values["sdr"] == pytest.approx(6.0) and cv.values["sir"] == pytest.approx(11.0)
    assert cv.values["forgetting/sdr"] == pytest.approx(-1.0) and cv.values["bwt/sdr"] == pytest.approx(1.0)
    assert cv.values["average_incremental/sdr"] == pytest.approx(6.0)
    assert not records["t_cv9_s0"].complete and "sdr" not in records["t_cv9_s0"].values


def test_step_history_keeps_the_latest_value_of_a_restarted_step(logged_sweep):
    from mlflow import MlflowClient

    sweep = load_sweep(logged_sweep, SWEEP, experiment=EXPERIMENT)
    restarted = next(t for t in sweep.trials if t.name == "t_ft_s1")
    client = MlflowClient(logged_sweep)
    assert len(client.get_metric_history(restarted.run_id, "sdr")) == 3  # step 1 logged twice
    assert step_history(client, restarted.run_id) == [(0, 6.0), (1, 3.5)]


def _row(lines: list[str], start: str) -> list[str]:
    matches = [line for line in lines if line.startswith(start)]
    assert len(matches) == 1, (start, matches)
    return [cell.strip() for cell in matches[0].strip("|").split("|")]


def test_report_ranks_methods_with_intervals_and_paired_differences(logged_sweep, tmp_path):
    report = write_report(logged_sweep, SWEEP, tmp_path / "out")
    assert sorted(p.name for p in report.files) == [
        "final_scores.png",
        "importance.png",
        "parallel_coordinates.png",
        "pareto.png",
        "r_matrices.png",
        "report.html",
        "report.md",
        "step_sdr.png",
    ]
    for path in report.files:
        if path.suffix == ".png":
            assert matplotlib.image.imread(path).shape[0] > 200
    text = (tmp_path / "out" / "report.md").read_text()
    assert text == report.markdown
    lines = text.splitlines()
    assert "14 runs: 13 complete, 1 stopped early, failed or running." in text
    assert (
        "5 configurations with 1 to 3 repeat(s) (seed x class order) each: 4 completed all their runs, 1 did not (not ranked)."
        in text
    )
    assert "The space asks for 3 seed(s) x 1 class order(s) per configuration." in text
    assert "1 run(s) repeat another run's configuration and repeat and are not counted." in text
    assert "`contavsep.data_hash`: feedc0de" in text and "mlflow.runName" not in text
    # these runs logged no validation values and a method has two configurations: the choice was
    # made on the test numbers shown, and the report says so
    assert "Selection: selected on test (optimistic) (a sweep from before validation sets)." in text

    # ranking: best configuration per method (contavsep: lambda 0.1, not 0.5), n = 3 each
    top = _row(lines, "| 1 | contavsep (mem 1) |")
    assert top[2] == "3"
    assert top[3:8] == [
        _text(FINAL_SDR["cv1"]),
        _text([v + 5 for v in FINAL_SDR["cv1"]]),
        _text([v + 2 for v in FINAL_SDR["cv1"]]),
        _text(FORGETTING["cv1"]),
        _text([-v for v in FORGETTING["cv1"]]),
    ]
    assert top[3] == "5.00 ± 2.48"  # sd 1 over 3 runs: t(0.975, 2) = 4.303, / sqrt(3)
    mean, half = _ci(_diff(FINAL_SDR["cv1"], FINAL_SDR["ft"]))  # 2.0, 0.5, 2.0
    pairs = ", ".join(f"{d:+.2f}" for d in _diff(FINAL_SDR["cv1"], FINAL_SDR["ft"]))
    paired = (
        f"{mean:+.2f} [{mean - half:+.2f}, {mean + half:+.2f}] within noise (pairs {pairs}) (finetune (mem 0); 3 pairs)"
    )
    assert paired == "+1.50 [-0.65, +3.65] within noise (pairs +2.00, +0.50, +2.00) (finetune (mem 0); 3 pairs)"
    assert top[8] == paired and top[9] == paired  # fine-tuning is also the runner-up
    assert top[10] == "strategy.lambda_ins=0.1"
    second = _row(lines, "| 2 | finetune (mem 0) |")
    assert second[3] == _text(FINAL_SDR["ft"]) == "3.50 ± 1.24"  # t_ft_s0_again (final 10) is not counted
    assert second[8] == "-"  # fine-tuning has no fine-tuning without memory to be compared with
    mean, half = _ci(_diff(FINAL_SDR["ft"], FINAL_SDR["lwf"]))  # 1.0, 1.0, 1.1: a clear gap
    assert (
        second[9]
        == f"{mean:+.2f} [{mean - half:+.2f}, {mean + half:+.2f}] better (pairs +1.00, +1.00, +1.10) (lwf (mem 0); 3 pairs)"
    )
    third = _row(lines, "| 3 | lwf (mem 0) |")
    assert third[8].endswith("worse (pairs -1.00, -1.00, -1.10) (finetune (mem 0); 3 pairs)") and third[9] == "-"
    assert (
        "- contavsep (mem 1) is not distinguishable from the runner-up finetune (mem 0):"
        " Δsdr +1.50 [-0.65, +3.65] within noise (pairs +2.00, +0.50, +2.00) over 3 paired run(s)"
    ) in lines
    assert any("interval contains 0 is within the noise" in line for line in lines)

    # Table 1 style: column groups separator x memory, the best configuration of each cell
    header = next(line for line in lines if line.startswith("| method | iQuery"))
    assert header == (
        "| method | iQuery w/o memory SDR | SIR | SAR | iQuery w/ memory SDR | SIR | SAR |"
        " Co-Separation w/o memory SDR | SIR | SAR |"
    )
    cv = FINAL_SDR["cv1"]
    assert _row(lines, "| ContAV-Sep |") == [
        "ContAV-Sep",
        "-",
        "-",
        "-",
        _cell(cv),
        _cell([v + 5 for v in cv]),
        _cell([v + 2 for v in cv]),
        "-",
        "-",
        "-",
    ]
    assert _row(lines, "| LwF |")[7] == _cell(FINAL_SDR["lwf"]) == "2.47 ± 1.12 (3)"

    # configurations: the stopped one is listed with 0 of 1 runs complete, not ranked
    stopped = next(line for line in lines if "| contavsep (mem 1) | 0/1 |" in line)
    assert "strategy.lambda_ins=0.9" in stopped

    # per-step SDR of the best configurations: mean ± CI (n) per step
    assert _row(lines, "| contavsep (mem 1) | 6.00") == ["contavsep (mem 1)", "6.00 ± 0.00 (3)", _cell(cv)]
    assert _row(lines, "| finetune (mem 0) | 6.00") == ["finetune (mem 0)", "6.00 ± 0.00 (3)", _cell(FINAL_SDR["ft"])]

    # Pareto front on (sdr max, forgetting/sdr min): contavsep lambda 0.1 (best SDR) and LwF
    # (least forgetting); fine-tuning and lambda 0.5 are dominated by lambda 0.1
    section = text[text.index("## Pareto front (sdr max, forgetting/sdr min)") : text.index("## All runs")]
    front = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| configuration")]
    assert [line.split(" | ")[1] for line in front] == ["contavsep (mem 1)", "lwf (mem 0)"]
    assert front[0].endswith(f"| {_cell(cv)} | {_cell(FORGETTING['cv1'])} | strategy.lambda_ins=0.1 |")
    assert front[1].endswith(f"| {_cell(FINAL_SDR['lwf'])} | {_cell(FORGETTING['lwf'])} | - |")
    assert "![Pareto front](pareto.png)" in section

    # the views: importance across strategies (strategy and memory size; no strategy searched two
    # keys, which the page says), the parallel coordinates and each strategy's best run's R matrix
    # (read back from results/R.json)
    views = text[text.index("## Views of the search") : text.index("## All runs")]
    importance = [line for line in views.splitlines() if line.startswith("  - all strategies")]
    assert [line.split(":")[0] for line in importance] == [
        "  - all strategies, sdr",
        "  - all strategies, forgetting/sdr",
        "  - all strategies",
    ]
    assert (
        importance[0].startswith("  - all strategies, sdr: strategy explains") and "memory.per_class" in importance[0]
    )
    # every contavsep configuration has memory 1, the others 0: memory adds nothing the strategy does not say
    assert importance[2] == (
        "  - all strategies: memory.per_class follows from strategy in these configurations (one"
        " memory.per_class per strategy): their shares are not separable"
    )
    page = (tmp_path / "out" / "report.html").read_text()
    assert "contavsep: 1 searched key(s) vary (strategy.lambda_ins)" in page and "finetune: 0 searched key(s)" in page
    assert f"  - best final sdr: contavsep (mem 1) with strategy.lambda_ins=0.1 ({_text(cv)})" in views
    # task 1 after step 1 (6.0, 6.0, 1.5) and after step 2: the seed-2 runs are each strategy's best
    assert [line for line in views.splitlines() if "task 1" in line] == [
        "  - finetune: task 1 6.00 dB after step 1, 3.00 dB after the last step (-3.00)",
        "  - lwf: task 1 1.50 dB after step 1, 1.80 dB after the last step (+0.30)",
        "  - contavsep: task 1 6.00 dB after step 1, 7.00 dB after the last step (+1.00)",
    ]
    assert all(
        f'data-file="{name}"' in page
        for name in ("parallel_coordinates.png", "step_sdr.png", "pareto.png", "r_matrices.png")
    )
    assert 'class="missing"' not in page and "t_cv1_s2 (contavsep (mem 1), sdr 6.00)" in page

    # every run, the duplicate marked as not counted
    run = _row(lines, "| t_cv9_s0 |")
    assert run[1] == "search" and run[3:] == ["seed0-order0", "ContAV-Sep (mem 1)", "KILLED", "1", "-", "-"]
    again = _row(lines, "| t_ft_s0_again |")
    assert again[5] == "complete (repeats t_ft_s0; not counted)" and again[7] == "10.00"
    assert _row(lines, "| t_ft_s1 |")[5:] == ["complete", "2", "3.50", "4.00"]


def test_report_metric_and_mode(logged_sweep, tmp_path):
    sweep = load_sweep(logged_sweep, SWEEP)
    client_histories: dict = {}
    # ranking by forgetting (lower is better, the default for forgetting): LwF first
    report = build_report(sweep, client_histories, tmp_path / "f", metric="final/forgetting_sdr")
    lines = report.markdown.splitlines()
    assert "Ranking by the final `forgetting/sdr` (min)." in report.markdown
    assert _row(lines, "| 1 | lwf (mem 0) |")[3] == _text(FORGETTING["lwf"])
    with pytest.raises(UserError, match="did you mean 'sdr'"):
        build_report(sweep, {}, tmp_path / "typo", metric="sdrr")


def test_report_command(logged_sweep, tmp_path, capsys, monkeypatch):
    out = tmp_path / "cli"
    assert cli.main(["report", "--sweep", SWEEP, "--tracking-uri", logged_sweep, "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert f"report: {out / 'report.md'}" in printed and "| method |" not in printed
    assert (out / "step_sdr.png").is_file() and (out / "pareto.png").is_file()

    assert cli.main(["report", "--sweep", "report-swep", "--tracking-uri", logged_sweep]) == 2
    err = capsys.readouterr().err
    assert "did you mean 'report-sweep'" in err and err.count("\n") == 1

    assert (
        cli.main(["report", "--sweep", SWEEP, "--tracking-uri", logged_sweep, "--metric", "sdrr", "--out", str(out)])
        == 2
    )
    err = capsys.readouterr().err
    assert "logged 'sdrr' (did you mean 'sdr'?)" in err and err.count("\n") == 1

    # without --tracking-uri: the local services (state file), or MLFLOW_TRACKING_URI
    assert cli.main(["report", "--sweep", SWEEP, "--out", str(tmp_path / "state")]) == 0
    assert "| 1 | contavsep (mem 1) | 3 |" in capsys.readouterr().out
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
    stopped = TrialRecord(
        run_id="r1", name="t1", status="KILLED", params={"strategy.name": "ewc"}, metrics={"sdr": 3.0}
    )
    for trials in ((), (stopped,)):
        sweep = SweepRecord(
            name="empty",
            tracking_uri="http://127.0.0.1:1",
            experiment_id="1",
            parent_run_id="p",
            status="RUNNING",
            tags={},
            trials=trials,
            space_text=SPACE_YAML,
        )
        report = build_report(sweep, {"r1": [(0, 3.0)]}, tmp_path / str(len(trials)))
        assert [p.name for p in report.files] == ["report.md", "report.html"]  # nothing to plot
        assert report.markdown.count("Not drawn:") == 5  # every view says why it is missing
        assert "- no configuration completed all its runs: nothing to rank" in report.markdown
        assert "No configuration completed all its runs." in report.markdown
    lines = report.markdown.splitlines()
    assert _row(lines, "| t1 |")[3:] == ["seed0-order0", "EWC (mem 0)", "KILLED", "1", "-", "-"]
    assert "| ewc (mem 0) | 0/1 |" in report.markdown


def test_repeat_labels_and_configuration_ids():
    def trial(**params: str) -> TrialRecord:
        return TrialRecord("r", "t", "FINISHED", {"strategy.name": "lwf", "strategy.lambda_old": "0.5", **params}, {})

    # class order k > 0 shuffles with data.seed = k; order 0 is the dataset's own order
    assert trial(**{"train.seed": "3", "data.seed": "2", "data.shuffle_classes": "True"}).repeat == "seed3-order2"
    assert trial(**{"train.seed": "1", "data.seed": "0", "data.shuffle_classes": "False"}).repeat == "seed1-order0"
    same = trial(**{"train.seed": "3", "data.seed": "2", "data.shuffle_classes": "True", "data.uri": "file:///a"})
    assert same.config_id == trial(**{"train.seed": "0", "train.device": "cuda"}).config_id
    assert same.config_id != trial(**{"strategy.lambda_old": "0.6"}).config_id
    assert comparison_name("final/forgetting_sdr") == "forgetting/sdr"
    assert comparison_name("final/avg_incremental_sir") == "average_incremental/sir"
    assert comparison_name("final/sdr_old") == "sdr_old" and comparison_name("memory/clips") == "memory/clips"
    assert space_info("metric: sir\nmode: max\n").objectives == (("val/sir", "max"),)
    assert space_info("metric: sir\nselect_on: test\n").objectives == (("test/sir", "max"),)
    assert (
        comparison_name("final/val/forgetting_sdr") == "val/forgetting/sdr"
        and comparison_name("final/val/sdr") == "val/sdr"
    )
    assert space_info("objectives: [\n").problem.startswith("search_space.yaml is not valid YAML")


def test_a_run_logged_before_strategies_carried_only_their_own_keys_is_the_same_configuration():
    # A sweep resumed across issue 21 holds runs whose params have every strategy's keys next to
    # runs with their strategy's alone: both are one configuration, one group of repeats.
    from contavsep.config import LEGACY_STRATEGY_DEFAULTS, flat, make_config
    from contavsep_platform.report.records import own_params

    def record(params: dict[str, str]) -> TrialRecord:
        return TrialRecord(run_id="r", name="t", status="FINISHED", params=own_params(params), metrics={})

    today = {k: str(v) for k, v in flat(make_config("tiny", {"strategy.name": "lwf"})).items()}
    before = {**{k: str(v) for k, v in LEGACY_STRATEGY_DEFAULTS.items()}, **today}
    assert "strategy.lambda_ewc" in before and "strategy.lambda_ewc" not in today
    assert record(before).config_id == record(today).config_id
    assert record({**before, "strategy.lambda_dist": "0.9"}).config_id != record(today).config_id
    # a strategy this version does not know keeps its params as logged
    unknown = {"strategy.name": "retired", "strategy.lambda_ewc": "5"}
    assert own_params(unknown) == unknown
