"""What a sweep did: its trials' rows (from Tune's results), the comparison of its
configurations, and the ranking as the parent run's JSON rows."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from contavsep import storage
from contavsep_platform.comparison import Comparison, Estimate, RunRecord, compare, group_configurations
from contavsep_platform.search import configuration_id
from contavsep_platform.spaces import (
    CONFIRM_TRIAL_KEY,
    GROUP_KEY,
    REPEAT_KEY,
    STRATEGY_KEY,
    SearchSpace,
    publish_key,
)
from contavsep_platform.trial import ENGINE_TIME_KEY, STEP_KEY

FINAL_COLUMNS = ("sdr", "sir", "sar", "forgetting/sdr")


@dataclass(frozen=True)
class TrialRow:
    """One trial's outcome: its configuration group, repeat, sampled parameters and last values."""

    trial_id: str
    strategy: str
    status: (
        str  # complete | stopped (by the scheduler) | interrupted (with the sweep) | error | pending (never started)
    )
    steps: int
    params: dict[str, Any]  # strategy.name + sampled values (no repeat or bookkeeping keys)
    metrics: dict[str, float]
    engine_seconds: float | None = None
    group: str = ""  # configuration id (content hash of the resolved configuration without its repeat)
    repeat: str = ""  # e.g. s1-o0: seed 1 of the base, class order 0
    error: str = ""  # status error: the error's last line
    error_log: str = ""  # status error: Tune's error.txt of the trial (full traceback), as a storage URI
    stage: str = "search"  # search | confirm (a configuration chosen by the search, run on fresh seeds)

    def value(self, key: str) -> float | None:
        v = self.metrics.get(key)
        return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


@dataclass
class SweepOutcome:
    """What a sweep did: every trial, the ranking of its configurations, and how it ended."""

    name: str
    sweep_uri: str
    metric: str
    mode: str
    trials: list[TrialRow]
    comparison: Comparison
    interrupted: bool
    wall_seconds: float
    parent_run_id: str | None = None
    max_concurrent: int = 0
    notes: list[str] = field(default_factory=list)
    objectives: tuple[tuple[str, str], ...] = ()  # (metric, mode) of a multi-objective space
    pareto: tuple[str, ...] = ()  # configuration ids on the Pareto front (multi-objective spaces)
    search: Comparison | None = None  # the search's configurations (the published comparison is the confirmation's)
    confirmed: bool = False  # the ranking comes from a confirmation stage

    @property
    def selection(self) -> str:
        """What the ranking's configurations were chosen on, in words (every table shows it)."""
        return self.comparison.selection

    @property
    def errored(self) -> list[TrialRow]:
        """Trials that ended in an error (``--resume`` retries them from their last intact checkpoint)."""
        return [r for r in self.trials if r.status == "error"]


def _error_line(error: BaseException) -> str:
    """The last non-empty line of an error (Tune wraps the trial's exception in its own)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return (lines[-1] if lines else type(error).__name__)[:300]


def _rows(result_grid: Any, space: SearchSpace, sweep_uri: str = "", stage: str = "search") -> list[TrialRow]:
    repeat_keys = set(space.repeats.keys())
    rows = []
    for result in result_grid:
        metrics = {
            k: v for k, v in (result.metrics or {}).items() if isinstance(v, (int, float)) and not isinstance(v, bool)
        }
        config = dict(result.config or {})
        config = dict(config.get(CONFIRM_TRIAL_KEY) or config)  # a confirmation trial's config is one grid value
        params = {k: v for k, v in config.items() if k not in (GROUP_KEY, REPEAT_KEY) and k not in repeat_keys}
        steps = int(metrics.get(STEP_KEY, 0) or 0)
        if result.error is not None:
            status = "error"
        elif steps >= space.num_steps:
            status = "complete"
        elif steps == 0:
            status = "pending"
        elif (result.metrics or {}).get("done"):
            status = "stopped"  # by the scheduler (Tune marks its last result done)
        else:
            status = "interrupted"  # the sweep stopped while the trial ran; --resume continues it
        folder = Path(result.path or "").name  # tune-<trial id> (see _trial_dirname)
        trial_id = str((result.metrics or {}).get("trial_id") or folder.removeprefix("tune-"))
        group = str(config.get(GROUP_KEY) or configuration_id(space, params))
        error = _error_line(result.error) if result.error is not None else ""
        error_log = (
            storage.join(sweep_uri, folder, "error.txt") if result.error is not None and sweep_uri and folder else ""
        )
        rows.append(
            TrialRow(
                trial_id,
                str(params.get(STRATEGY_KEY, "?")),
                status,
                steps,
                params,
                metrics,
                metrics.get(ENGINE_TIME_KEY),
                group,
                str(config.get(REPEAT_KEY, "")),
                error,
                error_log,
                stage,
            )
        )
    return sorted(rows, key=lambda r: r.trial_id)


def comparison_of(
    rows: Sequence[TrialRow], space: SearchSpace, chosen_on: Mapping[str, Estimate] | None = None
) -> Comparison:
    """Configurations over their repeats, each method's configuration chosen as the space says
    (by the validation objective; by test only under ``select_on: test``), ranked and published
    on the test value of the first objective (see comparison.py).

    ``chosen_on`` (a confirmation stage's rows): config id -> the search's validation estimate it
    was chosen on; every method then has its one confirmed configuration."""
    records = [
        RunRecord(
            run_id=r.trial_id,
            config_id=r.group,
            repeat=r.repeat or r.trial_id,
            strategy=r.strategy,
            memory=int(space.trial_config(r.params).memory.per_class) if r.strategy in space.strategies else 0,
            params={k: v for k, v in r.params.items() if k != STRATEGY_KEY},
            values={
                k: v
                for k in (*FINAL_COLUMNS, *published_keys(space), *(o.key for o in space.objectives))
                if (v := r.value(k)) is not None
            },
            complete=r.status == "complete",
            factors=tuple(space.method_of(r.params).items()) if r.strategy in space.strategies else (),
        )
        for r in rows
    ]
    published = published_keys(space)
    columns = tuple(dict.fromkeys(["forgetting/sdr", *published[1:]]))
    if chosen_on is not None:
        # select_by names what chosen_on holds (a method with several confirmed configurations,
        # a multi-objective space's, keeps the one chosen on the search's validation runs)
        return compare(
            group_configurations(records),
            published[0],
            space.mode,
            columns,
            select_by=space.metric_key,
            chosen_on=chosen_on,
            selection=space.selection_text(len({r.repeat for r in rows})),
        )
    select_by = space.metric_key if space.selection == "val" else ""
    return compare(
        group_configurations(records),
        published[0],
        space.mode,
        columns,
        select_by=select_by,
        selection=space.selection_text(),
    )


def published_keys(space: SearchSpace) -> tuple[str, ...]:
    """The result keys a table publishes: each objective's test value (split-free ones as they are)."""
    return tuple(dict.fromkeys(publish_key(o.metric) for o in space.objectives))


def parent_summary(outcome: SweepOutcome) -> list[dict[str, Any]]:
    """The ranking as JSON-friendly rows (the parent run's table and summary metrics)."""
    out = []
    for r in outcome.comparison.rows:
        c = r.configuration
        row: dict[str, Any] = {
            "rank": r.rank,
            "method": c.method,
            "strategy": c.strategy,
            "memory": c.memory,
            "configuration": c.config_id,
            "params": dict(c.params),
            "factors": dict(c.factors),
        }
        row["selection"] = outcome.selection
        for metric, e in r.estimates.items():
            row[metric] = {"mean": e.mean, "ci95": [e.low, e.high], "n": e.n, "sd": e.sd}
        if r.chosen_on is not None:
            e = r.chosen_on
            row["chosen_on"] = {
                "metric": outcome.comparison.select_by,
                "mean": e.mean,
                "ci95": [e.low, e.high],
                "n": e.n,
                "sd": e.sd,
            }
            row["gap"] = r.gap
        for name, d, other in (("vs_finetune", r.vs_reference, r.reference), ("vs_next", r.vs_next, r.next_method)):
            if d is not None:
                row[name] = {
                    "other": other,
                    "mean": d.mean,
                    "ci95": [d.low, d.high],
                    "n": d.n,
                    "verdict": d.verdict(outcome.mode),
                }
        row["pareto"] = c.config_id in outcome.pareto
        out.append(row)
    return out
