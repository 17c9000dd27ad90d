"""The one metric vocabulary (contavsep/metric_names.py): a value's step name and its final
MLflow name map both ways, for every value a sequence's summary holds."""

from __future__ import annotations

import numpy as np

from contavsep.metric_names import (
    SUMMARY_GROUPS,
    completed_steps,
    final_name,
    final_values,
    group_name,
    step_name_of_final,
    summary_values,
    val_name,
)
from contavsep.metrics import ContinualResults


def _summary(steps: int = 3) -> dict:
    """A real summary of ContinualResults over ``steps`` steps, with validation results."""
    rng = np.random.default_rng(0)
    results = {split: ContinualResults(steps) for split in ("test", "val")}
    for res in results.values():
        for step in range(steps):
            tasks = np.repeat(np.arange(step + 1), 4)
            sdr = 5.0 - 1.0 * (step - tasks) + rng.normal(0, 0.2, tasks.size)
            res.add(step, tasks, sdr, sdr + 6.0, sdr + 3.0, rng.normal(0, 0.1, tasks.size))
    summary = results["test"].summary()
    summary["val"] = results["val"].summary()
    return summary


def test_every_final_value_round_trips_between_its_step_name_and_its_final_name():
    values = final_values(_summary())
    assert {"sdr", "forgetting/sdr", "bwt/sar", "average_incremental/sir", "val/sdr", "val/forgetting/sdr"} <= set(
        values
    )
    for name in values:
        assert step_name_of_final(final_name(name)) == name, name
    # the spelling MLflow runs have been logged with since the first sweep
    assert final_name("forgetting/sdr") == "final/forgetting_sdr"
    assert final_name("average_incremental/sir") == "final/avg_incremental_sir"
    assert final_name("val/bwt/sdr") == "final/val/bwt_sdr" and final_name("sdr_old") == "final/sdr_old"
    assert step_name_of_final("memory/clips") == "memory/clips"


def test_the_summary_groups_are_one_vocabulary_in_steps_and_finals():
    summary = _summary()
    per_step = summary_values(summary)
    finals = final_values(summary)
    for group in SUMMARY_GROUPS:
        for score in ("sdr", "sir", "sar"):
            name = group_name(group, score)
            assert per_step[name] == finals[name] == summary[group][score]
            assert per_step[val_name(name)] == summary["val"][group][score]


def test_the_step_index_is_zero_based_and_tune_counts_completed_steps():
    assert [completed_steps(i) for i in range(3)] == [1, 2, 3]
