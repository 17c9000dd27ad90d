"""The runs as the comparison ranks them: one record per configuration and repeat, the searched keys,
how each method's configuration was chosen, and per-step estimates."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from contavsep_platform.comparison import Configuration, Estimate, RunRecord, t_interval
from contavsep_platform.report.labels import strategy_order
from contavsep_platform.report.records import NOT_HYPERPARAMETERS, REPEAT_KEYS, TrialRecord
from contavsep_platform.report.space_file import SpaceInfo
from contavsep_platform.spaces import SPLITS, selection_text
from contavsep_platform.tracking import CONFIG_TAG

# Config keys that identify a trial's group rather than being searched hyperparameters.
_GROUP_KEYS = ("strategy.name",)


def _param_value(text: str) -> object:
    """An MLflow param string back to the number it was (for display and sorting)."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def searched_keys(trials: Sequence[TrialRecord]) -> list[str]:
    """Config keys whose value differs between the given trials (the searched ones); repeat
    and bookkeeping keys are not searched."""
    keys = sorted({k for t in trials for k in t.params})
    return [
        k
        for k in keys
        if k not in _GROUP_KEYS
        and k not in NOT_HYPERPARAMETERS
        and k not in REPEAT_KEYS
        and len({t.params.get(k) for t in trials}) > 1
    ]


@dataclass(frozen=True)
class RunTable:
    """The sweep's runs as the comparison sees them."""

    records: tuple[RunRecord, ...]  # one per (configuration, repeat): what is ranked
    duplicates: Mapping[str, str]  # run id -> run id it repeats (same configuration and repeat; left out)


def _selection(
    space: SpaceInfo,
    key: str,
    configurations: Sequence[Configuration],
    search_trials: Sequence[TrialRecord],
    confirm_trials: Sequence[TrialRecord],
    trials: Sequence[TrialRecord],
) -> tuple[str, dict[str, Estimate] | None, str]:
    """``(select_by, chosen_on, selection)`` for :func:`compare`: how each method's configuration
    was chosen, read from the runs themselves. A confirmation stage chose on the search's runs
    (their ``key`` values, per configuration: tag ``contavsep.configuration``); without one, a
    method with one configuration made no choice; otherwise the choice is made here, on the
    validation value, or on test for a space that asked for it (or a sweep from before
    validation sets, which logged no validation values)."""
    if confirm_trials:
        by_group: dict[str, list[float]] = {}
        for t in search_trials:
            if t.complete and key in t.values:
                by_group.setdefault(t.tags.get(CONFIG_TAG, ""), []).append(t.values[key])
        group_of = {t.run_id: t.tags.get(CONFIG_TAG, "") for t in trials}
        chosen = {c.config_id: t_interval(by_group.get(group_of[c.runs[0].run_id], [])) for c in configurations}
        n = max((len(c.runs) for c in configurations), default=0)
        split = space.select_on if space.select_on in SPLITS else "val"
        return key, chosen, selection_text(split, first_tasks=space.first_tasks, confirmed_runs=n)
    per_method: dict[str, int] = {}
    for c in configurations:
        per_method[c.method] = per_method.get(c.method, 0) + 1
    if all(n == 1 for n in per_method.values()):
        return "", None, selection_text("none")
    logged = any(key in r.values for c in configurations for r in c.runs)
    if space.select_on == "val" and logged:
        return key, None, selection_text("val", first_tasks=space.first_tasks)
    legacy = "" if space.select_on == "test" else " (a sweep from before validation sets)"
    return "", None, selection_text("test", first_tasks=space.first_tasks) + legacy


def run_records(trials: Sequence[TrialRecord], factors: Sequence[str] = ()) -> RunTable:
    """RunRecords of the trials: strategies in the paper's order, configurations in order of
    first run. Two runs of one configuration on one repeat are the same experiment twice
    (an old sweep without repeats, a configuration proposed again): the first complete one
    counts, the others would only inflate n."""
    records: list[RunRecord] = []
    duplicates: dict[str, str] = {}
    kept: dict[tuple[str, str], int] = {}
    for name in strategy_order([t.strategy for t in trials]):
        group = [t for t in trials if t.strategy == name]
        keys = searched_keys(group)
        for t in group:
            record = RunRecord(
                run_id=t.run_id,
                config_id=t.config_id,
                repeat=t.repeat,
                strategy=name,
                memory=t.memory_per_class,
                params={k: _param_value(t.params[k]) for k in keys if k in t.params},
                values=t.values,
                complete=t.complete,
                factors=tuple((k, _param_value(t.params[k])) for k in factors if k in t.params),
            )
            slot = (t.config_id, t.repeat)
            if slot not in kept:
                kept[slot] = len(records)
                records.append(record)
            elif record.complete and not records[kept[slot]].complete:
                duplicates[records[kept[slot]].run_id] = record.run_id
                records[kept[slot]] = record
            else:
                duplicates[record.run_id] = records[kept[slot]].run_id
    return RunTable(tuple(records), duplicates)


def _default_mode(metric: str, objectives: Sequence[tuple[str, str]]) -> str:
    for name, mode in objectives:
        if name == metric:
            return mode
    return "min" if metric.startswith("forgetting/") else "max"


def step_estimates(histories: Sequence[Sequence[tuple[int, float]]]) -> list[tuple[int, Estimate]]:
    """Mean and t-interval of a per-step value over runs: ``[(step, estimate)]``, ascending; a
    step counts the runs that logged it."""
    by_step: dict[int, list[float]] = {}
    for history in histories:
        for step, value in history:
            if not math.isnan(value):
                by_step.setdefault(int(step), []).append(float(value))
    return [(step, t_interval(by_step[step])) for step in sorted(by_step)]


def _record_of(trial: TrialRecord) -> RunRecord:
    """A left-out duplicate run as a record (for the runs table only)."""
    return RunRecord(
        trial.run_id,
        trial.config_id,
        trial.repeat,
        trial.strategy,
        trial.memory_per_class,
        {},
        trial.values,
        trial.complete,
    )
