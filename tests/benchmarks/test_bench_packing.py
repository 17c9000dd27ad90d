"""The packing benchmark's CPU smoke run (benchmarks/bench_packing.py --quick): trial processes
start together, each trains, and the aggregate and memory per trial come back for 1 and 2 trials."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import bench_packing

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_the_quick_packing_run_measures_one_and_two_trials_on_the_cpu(
    synth_dataset_factory, tmp_path, monkeypatch, capsys
):
    uri = synth_dataset_factory(classes=4, clips_per_class=(4, 2, 2), seconds=1.6, seed=11)
    monkeypatch.chdir(ROOT)  # the trial processes run `python -m benchmarks.bench_packing`
    out = tmp_path / "packing.json"
    bench_packing.main(
        [
            "--data",
            uri,
            "--quick",
            "--json",
            str(out),
            "--set",
            "data.classes_per_step=2",
            "--set",
            "data.num_steps=2",
            "--set",
            f"data.cache_dir={tmp_path / 'cache'}",
        ]
    )
    doc = json.loads(out.read_text())
    assert doc["preset"] == "tiny" and [r["trials"] for r in doc["rows"]] == [1, 2]
    for row in doc["rows"]:
        assert row["device"] == "cpu" and row["aggregate_mixtures_per_s"] > 0
        assert len(row["per_trial_mixtures_per_s"]) == len(row["memory_gib_per_trial"]) == row["trials"]
        assert all(m > 0.05 for m in row["memory_gib_per_trial"])  # a process that built a model and trained
        # the aggregate is over the shared window: never above the sum of the trials' own rates
        assert row["aggregate_mixtures_per_s"] <= sum(row["per_trial_mixtures_per_s"]) * 1.0001
    table = capsys.readouterr().out
    assert "vs 1 trial" in table and "1.00x" in table


def test_bad_trial_counts_are_refused_in_one_line():
    with pytest.raises(SystemExit, match="--trials must be numbers like 1,2,4"):
        bench_packing.main(["--data", "file:///nowhere", "--trials", "one"])
    with pytest.raises(SystemExit, match="numbers >= 1"):
        bench_packing.main(["--data", "file:///nowhere", "--trials", "0"])
