"""The incremental loop: step results, checkpoints, exact resume, selection, clear errors."""

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from contavsep.checkpoint import CheckpointError, load_checkpoint
from contavsep.config import LEGACY_STRATEGY_DEFAULTS, ConfigError, make_config
from contavsep.data.format.reader import open_dataset
from contavsep.data.synthetic.synth import SynthConfig, build_synthetic
from contavsep.engine import Engine, run_sequence
from contavsep.testing import TINY_SEQUENCE

SETTINGS = TINY_SEQUENCE


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("engine")
    uri = f"file://{root}/ds"
    build_synthetic(uri, SynthConfig(classes=4, clips_per_class=(4, 2, 2), seconds=1.6, seed=11))
    return uri, open_dataset(uri, cache_dir=root / "cache")


class Collect:
    def __init__(self, checkpoint_root: Path | None = None):
        self.results = []
        self.root = checkpoint_root

    def report(self, result, save_checkpoint):
        self.results.append(result)
        if self.root is not None:
            save_checkpoint(self.root / f"step={result.step}")


def _cfg(**extra):
    return make_config("tiny", {**SETTINGS, **extra})


@pytest.mark.slow
def test_reports_every_step_with_the_papers_numbers(dataset):
    _, table = dataset
    rep = Collect()
    summary = run_sequence(_cfg(**{"strategy.name": "finetune"}), table, reporter=rep)
    assert [r.step for r in rep.results] == [0, 1] and rep.results[-1].is_last
    m0, m1 = rep.results[0].metrics, rep.results[1].metrics
    for key in (
        "sdr",
        "sir",
        "sar",
        "sdr_new",
        "sdr_mix",
        "sdri",
        "task_sdr/0",
        "loss/main",
        "throughput/mixtures_per_s",
    ):
        assert np.isfinite(m0[key]), key
    assert "sdr_old" not in m0 and np.isfinite(m1["sdr_old"]) and np.isfinite(m1["task_sdr/1"])
    # task 0's set: 2 test clips x 2 classes x 2 windows, each paired once, 2 sources per mixture;
    # after step 1 task 0's set again plus task 1's set of the same size
    assert m0["sources"] == 16 and m1["sources"] == 32
    counts = np.array(summary["counts"])
    assert counts[1, 0] == counts[0, 0] == 16  # task 0's set: both sources are of task 0
    assert 8 <= counts[1, 1] < 16  # task 1's anchors, plus partners that happen to be of task 1
    r = np.array(summary["R"]["sdr"], dtype=float)
    assert r.shape == (2, 2) and np.isnan(r[0, 1]) and np.isfinite(r[1]).all()
    assert summary["final"]["sdr"] == pytest.approx(m1["sdr"])
    assert len(rep.results[0].examples) == 2 and rep.results[0].examples[0].estimates.shape[0] == 2
    # validation: the same values on the val sets, SDR alone by default (what selection reads)
    assert np.isfinite(m1["val/sdr"]) and np.isfinite(m1["val/task_sdr/0"]) and "val/sir" not in m1
    val = rep.results[-1].summary["val"]
    assert val["final"]["sdr"] == pytest.approx(m1["val/sdr"]) and val["final"]["sir"] is None


def test_a_model_that_does_not_change_forgets_exactly_nothing(dataset):
    """R[i][j] scores the same mixtures after every step: a Co-Separation model that is not
    trained between the engine's evaluations (a new class embedding never touches the old ones)
    has R[i][j] == R[j][j], so forgetting and BWT are exactly 0. (iQuery is no fixed model: its
    class queries attend to each other, so adding queries changes the old classes' masks.)"""
    _, table = dataset
    engine = Engine(_cfg(**{"strategy.name": "finetune", "memory.per_class": 0, "model.name": "coseparation"}), table)
    for step in range(engine.scenario.num_steps):
        engine.model.expand_classes(engine.scenario.num_seen(step))
        engine._evaluate(step)
    summary = engine.results.summary()
    for metric in ("sdr", "sir", "sar"):
        r = np.array(summary["R"][metric], dtype=float)
        assert r[1, 0] == r[0, 0], metric
        assert summary["forgetting"][metric] == 0.0 and summary["bwt"][metric] == 0.0


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["finetune", "ewc", "contavsep"])
def test_resume_from_a_step_checkpoint_reproduces_the_uninterrupted_run(dataset, tmp_path, strategy):
    _, table = dataset
    few_fisher_batches = {"strategy.fisher_batches": 2} if strategy == "ewc" else {}
    cfg = _cfg(**{"strategy.name": strategy, **few_fisher_batches})
    full = Collect(tmp_path / "full")
    final_full = run_sequence(cfg, table, reporter=full)

    # an interrupted run: only step 0 happened, then the process died
    first = Collect(tmp_path / "part")
    engine = Engine(cfg, table)
    first_result = engine.run_step(0)
    first.report(first_result, lambda d: engine.save(d, 0))
    state = load_checkpoint(tmp_path / "part" / "step=0")
    assert state.step == 0 and state.config == cfg and state.memory["per_class"] == 1
    assert len(state.optimizers) == 2 and len(state.schedulers) == 2

    resumed = Collect()
    final_resumed = run_sequence(cfg, table, reporter=resumed, resume_from=tmp_path / "part" / "step=0")
    assert [r.step for r in resumed.results] == [1]
    assert final_resumed["final"] == final_full["final"]
    assert final_resumed["R"] == final_full["R"]
    # and the weights after the last step are bit-identical
    uninterrupted = torch.load(tmp_path / "full" / "step=1" / "state.pt", weights_only=False)["model"]
    again = Engine(cfg, table)
    again.restore(load_checkpoint(tmp_path / "part" / "step=0"))
    again.run_step(1)
    for key, value in again.model.state_dict().items():
        assert torch.equal(value, uninterrupted[key]), key


@pytest.mark.slow
def test_resume_refuses_a_checkpoint_of_another_config(dataset, tmp_path):
    _, table = dataset
    cfg = _cfg(**{"strategy.name": "finetune", "data.num_steps": 2})
    engine = Engine(cfg, table)
    engine.run_step(0)
    engine.save(tmp_path / "step=0", 0)
    # The refusal names the keys that differ, in dotted form.
    with pytest.raises(CheckpointError, match="another config: strategy.name: 'finetune' -> 'lwf'; resume with"):
        run_sequence(_cfg(**{"strategy.name": "lwf"}), table, resume_from=tmp_path / "step=0")
    with pytest.raises(CheckpointError, match="not a contavsep checkpoint"):
        run_sequence(cfg, table, resume_from=tmp_path / "nothing-here")
    # A checkpoint written before eval.val_metrics existed scored SIR/SAR on validation too: under
    # today's default (SDR alone) that is a change of setting, named with its old value ...
    path = tmp_path / "step=0" / "state.pt"
    payload = torch.load(path, map_location="cpu", weights_only=False)
    del payload["config"]["eval.val_metrics"]
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="another config: eval.val_metrics: 'all' -> 'sdr'; resume with"):
        run_sequence(cfg, table, resume_from=tmp_path / "step=0")
    # ... and it resumes with the setting it was written with
    legacy = _cfg(**{"strategy.name": "finetune", "data.num_steps": 2, "eval.val_metrics": "all"})
    rep = Collect()
    run_sequence(legacy, table, reporter=rep, resume_from=tmp_path / "step=0")
    assert [r.step for r in rep.results] == [1] and np.isfinite(rep.results[-1].metrics["val/sir"])
    # A checkpoint written before each strategy declared its own keys holds every strategy's keys
    # (finetune's config then carried lambda_ewc, temperature, ...): the others' are dropped on
    # reading, and it resumes
    payload = torch.load(path, map_location="cpu", weights_only=False)
    payload["config"] = {**LEGACY_STRATEGY_DEFAULTS, **payload["config"]}
    torch.save(payload, path)
    assert load_checkpoint(tmp_path / "step=0").config == legacy
    rep = Collect()
    run_sequence(legacy, table, reporter=rep, resume_from=tmp_path / "step=0")
    assert [r.step for r in rep.results] == [1]
    # one whose strategy this version does not have is refused in one line that says so
    payload["config"]["strategy.name"] = "retired"
    torch.save(payload, path)
    with pytest.raises(
        CheckpointError, match=r"holds a config this version cannot run: strategy.name: unknown strategy 'retired'"
    ):
        run_sequence(legacy, table, resume_from=tmp_path / "step=0")


@pytest.mark.slow
def test_best_val_selection_keeps_the_best_validated_weights(dataset):
    _, table = dataset
    cfg = _cfg(**{"strategy.name": "finetune", "train.select": "best_val", "train.val_every": 1, "data.num_steps": 1})
    engine = Engine(cfg, table)
    seen = []
    original = engine._validate

    def spy(step):
        value = original(step)
        seen.append((value, {k: v.clone() for k, v in engine.model.state_dict().items()}))
        return value

    engine._validate = spy
    engine.run_step(0)
    assert len(seen) == 3
    best_state = max(seen, key=lambda x: x[0])[1]
    for key, value in engine.model.state_dict().items():
        assert torch.equal(value, best_state[key]), key


def test_dataset_and_config_mismatches_are_clear(dataset):
    _, table = dataset
    with pytest.raises(ConfigError, match="has 4 classes but"):
        Engine(_cfg(**{"data.num_steps": 3}), table)
    with pytest.raises(ConfigError, match="divisible by the 3 DDP workers"):
        from contavsep.engine import Distributed

        Engine(_cfg(), table, distributed=Distributed(rank=0, world_size=3))


@pytest.mark.slow
def test_cli_run_writes_results_json_and_checkpoints(dataset, tmp_path):
    uri, _ = dataset
    exe = Path(sys.executable).parent / "contavsep"
    args = [
        str(exe),
        "run",
        "--data",
        uri,
        "--preset",
        "tiny",
        "--strategy",
        "lwf",
        "--out",
        str(tmp_path / "out"),
        "--quiet",
    ]
    for k, v in {**SETTINGS, "data.cache_dir": str(tmp_path / "cache")}.items():
        args += ["--set", f"{k}={v}"]
    out = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert "final SDR" in out.stdout and "forgetting" in out.stdout
    doc = json.loads((tmp_path / "out" / "results.json").read_text())
    assert doc["complete"] and doc["config"]["strategy.name"] == "lwf" and len(doc["steps"]) == 2
    assert (tmp_path / "out" / "checkpoints" / "step=1" / "state.pt").is_file()
    bad = subprocess.run(
        [str(exe), "run", "--data", uri, "--preset", "tiny", "--strategy", "lwff", "--out", str(tmp_path / "x")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert bad.returncode == 2 and "did you mean 'lwf'" in bad.stderr and not (tmp_path / "x").exists()


@pytest.mark.slow
def test_batches_prepared_ahead_give_the_same_run_as_batches_drawn_on_demand(dataset):
    """train.prefetch_batches is speed only: EWC (which draws Fisher batches from the step's
    sampler after the loop) ends with bit-identical weights and metrics with the producer on or off."""
    _, table = dataset
    runs = []
    for depth in (0, 3):
        cfg = _cfg(**{"strategy.name": "ewc", "strategy.fisher_batches": 2, "train.prefetch_batches": depth})
        engine = Engine(cfg, table)
        results = [engine.run_step(step) for step in range(engine.scenario.num_steps)]
        runs.append((engine.model.state_dict(), [r.metrics for r in results]))
    (weights_a, metrics_a), (weights_b, metrics_b) = runs
    for key, value in weights_a.items():
        assert torch.equal(value, weights_b[key]), key
    drop = ("time/train_s", "time/eval_s", "time/val_s", "throughput/mixtures_per_s")
    assert [{k: v for k, v in m.items() if k not in drop} for m in metrics_a] == [
        {k: v for k, v in m.items() if k not in drop} for m in metrics_b
    ]


def test_a_non_finite_loss_names_the_step_iteration_and_term(dataset):
    """Losses are checked on the device and read every log interval (here 2 iterations), yet the
    error still names the exact iteration and the terms."""
    _, table = dataset
    engine = Engine(_cfg(**{"strategy.name": "finetune", "train.iters_per_step": 10, "data.num_steps": 1}), table)
    real, calls = engine.main_loss, []

    def diverging(out, batch):
        calls.append(None)
        loss = real(out, batch)
        return loss * torch.tensor(math.inf) if len(calls) == 5 else loss

    engine.main_loss = diverging
    with pytest.raises(
        FloatingPointError,
        match=r"step 0: non-finite loss at iteration 4 \(checked over iterations 4\.\.5\)"
        r".*main inf, total inf; non-finite: main, total; lower the learning rates",
    ):
        engine.run_step(0)
    assert len(calls) == 6  # raised at the check after iteration 5, not later


@pytest.mark.slow
def test_speed_options_train_the_same_model_up_to_rounding(dataset):
    """Fused Adam/AdamW and channels-last convolutions (both usable on a CPU) change only rounding:
    3 Adam steps at lr 1e-3 move a weight by up to 3e-3; the options differ by ~1e-4 (Adam
    normalises tiny gradient differences up), losses and SDR by < 1e-4."""
    _, table = dataset
    runs = []
    for options in ({}, {"train.fused_optimizer": True, "train.channels_last": True}):
        engine = Engine(_cfg(**{"strategy.name": "finetune", "data.num_steps": 1, **options}), table)
        result = engine.run_step(0)
        runs.append((engine.model.state_dict(), result.metrics))
    (weights_a, metrics_a), (weights_b, metrics_b) = runs
    for key, value in weights_a.items():
        torch.testing.assert_close(weights_b[key], value, rtol=0, atol=5e-4, msg=key)
    for key in ("loss/main", "sdr", "sir", "sar"):
        assert metrics_b[key] == pytest.approx(metrics_a[key], abs=1e-4), key


@pytest.mark.slow
def test_pcm_training_batches_train_exactly_as_float_batches(dataset):
    """The GPU data path (int16 PCM batches, converted in mix_sources) run on the CPU: a step of
    ContAV-Sep (memory, CrossSDC, the sampler's draws) gives the same weights and metrics."""
    _, table = dataset
    runs = []
    for pcm in (False, True):
        engine = Engine(_cfg(**{"strategy.name": "contavsep", "data.num_steps": 1, "memory.per_class": 1}), table)
        engine.pcm_batches = pcm
        result = engine.run_step(0)
        runs.append((engine.model.state_dict(), result.metrics))
    (weights_a, metrics_a), (weights_b, metrics_b) = runs
    for key, value in weights_a.items():
        assert torch.equal(weights_b[key], value), key
    timing = ("time/", "throughput/")
    results = [{k: v for k, v in m.items() if not k.startswith(timing)} for m in (metrics_a, metrics_b)]
    assert results[0] == results[1] and "sdr" in results[0] and "loss/ins" in results[0]


@pytest.mark.slow
def test_a_compiled_forward_compiles_twice_per_sequence_however_many_steps(tmp_path, monkeypatch):
    """train.compile: adding class queries changes one parameter dimension; the engine marks it
    dynamic, so step 0 compiles, step 1 compiles a graph with a symbolic class count, and later
    steps reuse it. (aot_eager backend: dynamo's tracing and guards, without a C++/Triton build.)"""
    from torch._dynamo.utils import counters

    uri = f"file://{tmp_path}/ds6"
    build_synthetic(uri, SynthConfig(classes=6, clips_per_class=(2, 2, 2), seconds=1.6, seed=5))
    table = open_dataset(uri, cache_dir=tmp_path / "cache")
    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda fn, mode=None: real_compile(fn, backend="aot_eager"))
    torch._dynamo.reset()
    cfg = _cfg(
        **{
            "strategy.name": "finetune",
            "data.num_steps": 3,
            "train.compile": "default",
            "memory.per_class": 0,
            "eval.windows_per_clip": 1,
        }
    )
    engine = Engine(cfg, table)
    new_graphs = []
    for step in range(engine.scenario.num_steps):
        before = counters["stats"]["unique_graphs"]
        result = engine.run_step(step)
        new_graphs.append(counters["stats"]["unique_graphs"] - before)
        assert np.isfinite(result.metrics["loss/main"])
    assert new_graphs == [1, 1, 0]
